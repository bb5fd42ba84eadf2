import EntraClient
import Foundation
import KeyRollPrimitives

/// Removes an application's client secrets on evidence (``SecretRetirementRules``), through the
/// provisioner's privileged, audited path. A removed secret cannot be brought back: Graph makes
/// every secret's text itself, so a new one is a different secret that every holder must be given.
///
/// `plan` reads the app and the evidence and decides per secret; it writes nothing. `apply` holds
/// the app's lease and, inside it, reads the app and the evidence again immediately before acting,
/// so a secret used since the plan is refused. Per secret decided on, it records the intent, calls
/// `removePassword` for exactly that keyId, reads the app to verify the secret is gone, and records
/// the outcome. It never removes anything but the secrets decided on, and never a certificate.
///
/// A lost answer is settled by reading: `removePassword` failing while a fresh read shows the
/// secret gone is completed. A run that died between its intent and its outcome leaves the intent
/// open: the next `apply` on the app records the outcome from what Graph shows (gone: completed;
/// still there: failed, and decided again).
public struct SecretRetirement: Sendable {
    public let provisioner: Provisioner
    public let auditLogPath: String
    public let hook: SideEffectHook
    public var windowDays: Int
    /// Days the tenant's sign-in log keeps (30 with Entra ID P1/P2).
    public var retentionDays: Double
    /// Reads after `removePassword` until Graph no longer lists the secret (reads are eventually consistent).
    public var verifyReads = 5
    public var verifyDelay: Double = 2

    public init(provisioner: Provisioner, auditLogPath: String, hook: SideEffectHook = .none,
                windowDays: Int = SecretRetirementRules.defaultWindowDays, retentionDays: Double = 30) {
        self.provisioner = provisioner
        self.auditLogPath = auditLogPath
        self.hook = hook
        self.windowDays = windowDays
        self.retentionDays = retentionDays
    }

    public typealias Refused = PrivilegedActionRefused

    public struct Plan: Sendable {
        public var application: Application
        public var decisions: [SecretDecision]
        /// Why the credential report (the second source) could not be read, if it could not.
        public var reportFailure: UnknownReason?
    }

    public enum Outcome: Sendable, Equatable {
        /// Removed now (`note`: how a lost answer was settled).
        case removed(SecretEvidence, note: String?)
        case refused(SecretDecision)
        /// An earlier run's open intent, settled from what Graph shows: the secret is gone.
        case settled(keyId: String)
    }

    static let select = ["id", "appId", "displayName", "signInAudience", "tags", "keyCredentials", "passwordCredentials"]

    /// The decision for each client secret of the app (or only `secretKeyId`), from a fresh read.
    public func plan(application app: Application, secretKeyId: String? = nil, acknowledgeDelegated: Bool = false) async throws -> Plan {
        let graph = provisioner.graph
        let fresh = try await graph.application(id: app.id, select: Self.select)
        let now = graph.correctedNow
        let secrets = try chosen(fresh, secretKeyId)
        guard !secrets.isEmpty else { return Plan(application: fresh, decisions: [], reportFailure: nil) }
        let since = now.addingTimeInterval(-Double(max(1, windowDays)) * EvidenceRules.day)
        var signIns: LogRead<ServicePrincipalSignIn>
        do { signIns = .read(try await graph.servicePrincipalSignIns(appId: fresh.appId, since: since, until: now)) } catch {
            signIns = .unreadable(EvidenceCollector.reason(for: error))
        }
        var delegated: LogRead<DelegatedSignIn>
        do { delegated = .read(try await graph.delegatedSignIns(appId: fresh.appId, since: since, until: now)) } catch {
            delegated = .unreadable(EvidenceCollector.reason(for: error))
        }
        var report: [AppCredentialSignInActivity] = []
        var reportFailure: UnknownReason?
        do { report = try await graph.appCredentialSignInActivities(appId: fresh.appId) } catch { reportFailure = EvidenceCollector.reason(for: error) }
        let decisions = secrets.map {
            SecretRetirementRules.decide(secret: $0, app: fresh, signIns: signIns, delegated: delegated, report: report, now: now, windowDays: windowDays,
                                         retentionDays: retentionDays, acknowledgeDelegated: acknowledgeDelegated)
        }
        return Plan(application: fresh, decisions: decisions, reportFailure: reportFailure)
    }

    func chosen(_ app: Application, _ keyId: String?) throws -> [PasswordCredential] {
        let all = app.passwordCredentials ?? []
        guard let keyId else { return all }
        let match = all.filter { $0.keyId.lowercased() == keyId.lowercased() }
        if match.isEmpty {
            let listed = all.map(\.keyId)
            throw Refused(description: "\(app.displayName ?? app.appId) has no client secret \(keyId) (its secrets: \(listed.isEmpty ? "none" : listed.joined(separator: ", "))). Name one of them with --secret, or leave --secret out to consider every secret.")
        }
        return match
    }

    /// Decides again inside the app's lease and removes the secrets the evidence allows.
    public func apply(application app: Application, secretKeyId: String? = nil, acknowledgeDelegated: Bool = false, reason: String,
                      operator who: String) async throws -> [Outcome] {
        try await provisioner.withLease(objectId: app.id, name: app.displayName ?? app.appId) {
            let graph = provisioner.graph
            let current = try await graph.application(id: app.id, select: Self.select)
            var outcomes = try settleOpenIntents(current)
            if let k = secretKeyId, outcomes.contains(.settled(keyId: k.lowercased())) { return outcomes }
            let plan = try await self.plan(application: current, secretKeyId: secretKeyId, acknowledgeDelegated: acknowledgeDelegated)
            for decision in plan.decisions {
                guard case .retire(let evidence) = decision else { outcomes.append(.refused(decision)); continue }
                outcomes.append(try await remove(plan.application, evidence, reason: reason, operator: who))
            }
            return outcomes
        }
    }

    /// Records the intent, removes exactly `evidence.keyId`, verifies, records the outcome.
    func remove(_ app: Application, _ evidence: SecretEvidence, reason: String, operator who: String) async throws -> Outcome {
        let graph = provisioner.graph
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: [
            "action": "retire-secret", "operator": .string(who), "provisionerClientId": .string(graph.tokens.clientID),
            "app": .string(evidence.app), "appId": .string(app.appId), "objectId": .string(app.id), "keyId": .string(evidence.keyId.lowercased()),
            "secretDisplayName": evidence.displayName.map(JSONValue.string) ?? .null, "reason": .string(reason),
            "evidence": Self.record(evidence),
        ])
        try trail.intent()
        var note: String?
        do {
            try await provisioner.leaseCheck(app.id)?()
            do { try await graph.removePassword(objectID: app.id, keyId: evidence.keyId) } catch {
                // the write may have landed and its answer been lost: what Graph lists decides
                guard try await !isListed(app.id, evidence.keyId) else { throw error }
                note = "removePassword failed (\(Redaction.scrub("\(error)"))), but Graph no longer lists the secret"
            }
            var listed = try await isListed(app.id, evidence.keyId)
            var reads = 1
            while listed, reads < verifyReads {
                try await graph.sleeper.sleep(seconds: verifyDelay)
                listed = try await isListed(app.id, evidence.keyId)
                reads += 1
            }
            if listed {
                throw EntraError(kind: .protocolViolation, operation: "removePassword",
                                 message: "Graph still lists secret \(evidence.keyId) after removePassword (\(reads) reads); run the command again to settle it")
            }
        } catch {
            trail.failed(error)
            throw error
        }
        if let note { trail.set("note", .string(note)) }
        try trail.completed()
        return .removed(evidence, note: note)
    }

    func isListed(_ objectId: String, _ keyId: String) async throws -> Bool {
        let app = try await provisioner.graph.application(id: objectId, select: ["id", "appId", "passwordCredentials"])
        return (app.passwordCredentials ?? []).contains { $0.keyId.lowercased() == keyId.lowercased() }
    }

    /// Intents of earlier runs on this app with no outcome after them, settled from what Graph
    /// lists now: a secret gone is completed; one still there failed (it is decided again).
    func settleOpenIntents(_ app: Application) throws -> [Outcome] {
        var last: [String: [String: JSONValue]] = [:]
        for line in JSONLinesFile.lines(at: auditLogPath) {
            guard let record = (try? JSONValue.parse(Array(line)))?.objectValue, record["action"] == "retire-secret",
                  record["objectId"]?.stringValue == app.id, let keyId = record["keyId"]?.stringValue?.lowercased() else { continue }
            last[keyId] = record
        }
        let listed = Set((app.passwordCredentials ?? []).map { $0.keyId.lowercased() })
        var outcomes: [Outcome] = []
        for (keyId, record) in last.sorted(by: { $0.key < $1.key }) where record["phase"] == "intent" {
            var r = record
            r["phase"] = nil
            r["time"] = nil
            r["settledBy"] = .string("a later run: the run that recorded this intent stopped before recording its outcome")
            var trail = AuditTrail(path: auditLogPath, hook: hook, now: { [graph = provisioner.graph] in graph.correctedNow }, record: r)
            if listed.contains(keyId) {
                trail.failed(PrivilegedActionRefused(description: "the secret is still registered: the earlier run did not remove it"))
            } else {
                try trail.completed()
                outcomes.append(.settled(keyId: keyId))
            }
        }
        return outcomes
    }

    static func record(_ e: SecretEvidence) -> JSONValue {
        func date(_ d: Date?) -> JSONValue { d.map { .string(UTCTime.iso($0)) } ?? .null }
        return .object([
            "windowDays": .int(Int64(e.windowDays)), "retentionDays": .double(e.retentionDays), "windowStart": date(e.windowStart),
            "lastSecretUse": date(e.lastSecretUse), "lastSecretUseSource": .string(e.lastSecretUseSource.rawValue),
            "secretSignInsInWindow": .int(Int64(e.secretSignInsInWindow)), "keyRollKeyIds": .array(e.keyRollKeyIds.map(JSONValue.string)),
            "keyRollDaysCovered": .int(Int64(e.keyRollDaysCovered)), "keyRollDaysUnbroken": .int(Int64(e.keyRollDaysUnbroken)),
            "lastKeyRollSignIn": date(e.lastKeyRollSignIn), "delegatedSignIns": .int(Int64(e.delegatedSignIns)),
            "lastDelegatedSignIn": date(e.lastDelegatedSignIn), "delegatedAcknowledged": .bool(e.delegatedAcknowledged),
        ])
    }
}
