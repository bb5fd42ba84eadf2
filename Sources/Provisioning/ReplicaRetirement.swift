import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Scale in: removes every key of one replica from its application, through the provisioner's
/// privileged, audited path (a replica's own agent could remove its keys, but its host is usually
/// gone). Only keys whose `displayName` carries that replica's marker are touched, chosen again
/// from a fresh read before every PATCH attempt, so a sibling's key is never removed.
///
/// Refused without `force`:
/// - when the replica still looks live (not `stale` in the audit): stop its agent first, or it
///   would find itself without a key;
/// - when no other valid certificate would remain: the app would be past its cliff.
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
                    staleAfterFraction: Double = AuditRules.defaultStaleAfterFraction) async throws -> [String] {
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
        if !force, let row, row.condition != .stale {
            throw Refused(description: "replica \(replica) of \(name) is \(row.condition.rawValue), not stale: it rolled \(row.lastRolledAt.map(UTCTime.iso) ?? "never (bootstrap)") and its agent may still run. Stop its agent (and its host's use of the key) first, then retire it with --force.")
        }
        let othersValid = keys.filter { !belongs($0) && $0.isValidCertificate(at: now) }
        if !force, othersValid.isEmpty {
            throw Refused(description: "replica \(replica) holds the only valid certificate of \(name); retiring it would leave the app past its cliff. Use --force if the app is being decommissioned.")
        }
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: [
            "action": "retire-replica", "operator": .string(who),
            "provisionerClientId": .string(graph.tokens.clientID), "app": .string(name), "appId": .string(app.appId), "objectId": .string(app.id),
            "replica": .string(replica.rawValue), "keyIds": .array(mine.map { .string($0.keyId) }), "forced": .bool(force), "reason": .string(reason),
            "condition": .string(row?.condition.rawValue ?? "?"),
        ])
        try trail.intent()
        let removed: [KeyCredential]
        do { removed = try await provisioner.removeKeyCredentials(objectID: app.id, where: belongs) } catch {
            trail.failed(error)
            throw error
        }
        trail.set("keyIds", .array(removed.map { .string($0.keyId) }))
        try trail.completed()
        return removed.map(\.keyId)
    }
}
