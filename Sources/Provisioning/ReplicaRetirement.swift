import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Scale in: removes every key of one replica from its application, through the provisioner's
/// privileged, audited path (a replica's own agent could remove its keys, but its host is usually
/// gone). Only keys whose `displayName` carries that replica's marker are touched, chosen again
/// from a fresh read before every PATCH attempt, so a sibling's key is never removed.
///
/// Refused without `force`, on evidence, never on key age:
/// - when any key of the replica signed in within `signedInWithin` (default 24 h), as Graph's
///   service-principal sign-in log shows (an agent signs in at every registration check, every
///   ≤ 10 minutes, so a live replica always has recent sign-ins): stop its agent first;
/// - when the sign-in log cannot be read (the provisioner lacks `AuditLog.Read.All`, the tenant has
///   no log): there is no evidence the replica is gone;
/// - when no other valid certificate would remain: the app would be past its cliff.
///
/// It removes exactly the keyIds it decided on. If a new key with the replica's marker appears in
/// a fresh read before the PATCH (the replica came back), the retirement stops.
public struct ReplicaRetirement: Sendable {
    public let provisioner: Provisioner
    public let auditLogPath: String
    public let hook: SideEffectHook

    public init(provisioner: Provisioner, auditLogPath: String, hook: SideEffectHook = .none) {
        self.provisioner = provisioner
        self.auditLogPath = auditLogPath
        self.hook = hook
    }

    public typealias Refused = PrivilegedActionRefused

    /// Returns the keyIds removed.
    @discardableResult
    public func run(application app: Application, replica: ReplicaName, force: Bool, reason: String, operator who: String,
                    staleAfterFraction: Double = AuditRules.defaultStaleAfterFraction, signedInWithin: TimeInterval = 24 * 3600) async throws -> [String] {
        if AppLease.current?.objectId != app.id {
            return try await provisioner.withLease(objectId: app.id, name: app.displayName ?? app.appId) {
                try await run(application: app, replica: replica, force: force, reason: reason, operator: who, staleAfterFraction: staleAfterFraction, signedInWithin: signedInWithin)
            }
        }
        let graph = provisioner.graph
        let now = graph.correctedNow
        let keys = try await graph.keyCredentials(objectID: app.id)
        let belongs: @Sendable (KeyCredential) -> Bool = { k in
            let m = CredentialName.parse(displayName: k.displayName)
            return m.isKeyRoll && m.replica == replica
        }
        let name = app.displayName ?? app.appId
        let mine = keys.filter(belongs)
        guard !mine.isEmpty else {
            let others = Set(keys.compactMap { CredentialName.parse(displayName: $0.displayName).replica }).sorted().map(\.rawValue)
            throw Refused(description: "\(name) holds no key of replica \(replica) (replicas with keys: \(others.isEmpty ? "none" : others.joined(separator: ", "))). Nothing to retire.")
        }
        var probe = app
        probe.keyCredentials = keys
        let row = AuditRules.replicaAudits(probe, now: now, expiringWithin: 0, staleAfterFraction: staleAfterFraction).first { $0.replica == replica }
        let decided = Set(mine.map(\.keyId))
        var evidence = "not checked (--force)"
        if !force {
            let since = now.addingTimeInterval(-signedInWithin)
            let signIns: [ServicePrincipalSignIn]
            do { signIns = try await graph.servicePrincipalSignIns(appId: app.appId, since: since) } catch let e as EntraError {
                throw Refused(description: "cannot read the sign-in log of \(name) (\(e.graphCode ?? e.kind.rawValue)), so nothing shows that replica \(replica) is gone. Grant the provisioner AuditLog.Read.All (the log needs Entra ID P1/P2), or stop its agent and retire it with --force.")
            }
            // any attempt with its keys, accepted or not, shows a host still running it
            let live = signIns.filter { s in
                s.servicePrincipalCredentialKeyId.map(decided.contains) ?? false
                    || s.servicePrincipalCredentialThumbprint.map { t in mine.contains { $0.matches(thumbprint: t.uppercased()) } } ?? false
            }
            if signIns.isEmpty {
                throw Refused(description: "Graph's sign-in log shows no sign-in of \(name) at all since \(UTCTime.iso(since)), so it cannot tell whether replica \(replica) is gone (the log shows sign-ins minutes to hours late, and only with an Entra ID P1/P2 licence). Stop its agent and retire it with --force if you know its host is gone.")
            }
            if let last = live.max(by: { $0.createdDateTime < $1.createdDateTime }) {
                throw Refused(description: "replica \(replica) of \(name) is live: its key \(last.servicePrincipalCredentialKeyId ?? "?") signed in at \(UTCTime.iso(last.createdDateTime)) (\(live.count) sign-ins since \(UTCTime.iso(since))). Stop its agent (and its host's use of the key), wait until it has not signed in for \(Int(signedInWithin / 3600)) h, then retire it; --force skips this check.")
            }
            evidence = "no sign-in with its keys since \(UTCTime.iso(since)) (\(signIns.count) sign-ins of the app read)"
        }
        let othersValid = keys.filter { !belongs($0) && $0.isValidCertificate(at: now) }
        if !force, othersValid.isEmpty {
            throw Refused(description: "replica \(replica) holds the only valid certificate of \(name); retiring it would leave the app past its cliff. Use --force if the app is being decommissioned.")
        }
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: [
            "action": "retire-replica", "operator": .string(who),
            "provisionerClientId": .string(graph.tokens.clientID), "app": .string(name), "appId": .string(app.appId), "objectId": .string(app.id),
            "replica": .string(replica.rawValue), "keyIds": .array(mine.map { .string($0.keyId) }), "forced": .bool(force), "reason": .string(reason),
            "condition": .string(row?.condition.rawValue ?? "?"), "evidence": .string(evidence),
        ])
        try trail.intent()
        let removed: [KeyCredential]
        do {
            // exactly the keys decided on; a new key of this replica in a fresh read means it is back
            let basis = try await graph.updateKeyCredentials(id: app.id, precondition: provisioner.leaseCheck(app.id)) { current in
                if let back = current.first(where: { belongs($0) && !decided.contains($0.keyId) }) {
                    throw Refused(description: "a new key of replica \(replica) (\(back.keyId)) appeared after the decision to retire it: the replica is alive. Nothing was removed.")
                }
                return current.filter { !decided.contains($0.keyId) }.map(Provisioner.patchEntry)
            }
            removed = basis.filter { decided.contains($0.keyId) }
            AppLease.current?.ledger.remove(removed.map(\.keyId))
        } catch {
            trail.failed(error)
            throw error
        }
        trail.set("keyIds", .array(removed.map { .string($0.keyId) }))
        try trail.completed()
        return removed.map(\.keyId)
    }
}
