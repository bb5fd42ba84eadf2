import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives

/// The privileged, audited recovery path for an app past its cliff or whose agent lost its store:
/// a new bootstrap certificate by read-merge-PATCH-verify and a new bundle.
public struct Rebootstrap: Sendable {
    public let provisioner: Provisioner
    public let auditLogPath: String
    /// Passed before every file-system call on the audit trail and the bundle (see ``SideEffect``).
    public let hook: SideEffectHook

    public init(provisioner: Provisioner, auditLogPath: String, hook: SideEffectHook = .none) {
        self.provisioner = provisioner
        self.auditLogPath = auditLogPath
        self.hook = hook
    }

    public typealias Refused = PrivilegedActionRefused

    /// - Parameters:
    ///   - application: the app (by `Application.id`/`appId`).
    ///   - force: issue even though the app still has a valid certificate (its agent could roll).
    ///   - replica: for an app on several hosts, the replica whose host needs a new start; the
    ///     check for valid certificates then looks at that replica's keys only.
    public func run(application app: Application, bundlePath: String, validity: TimeInterval = 2 * 86_400, replica: ReplicaName? = nil, force: Bool,
                    reason: String, operator who: String) async throws -> BootstrapBundle {
        if AppLease.current?.objectId != app.id {
            return try await provisioner.withLease(objectId: app.id, name: app.displayName ?? app.appId) {
                try await run(application: app, bundlePath: bundlePath, validity: validity, replica: replica, force: force, reason: reason, operator: who)
            }
        }
        let now = provisioner.graph.correctedNow
        let keys = try await provisioner.graph.keyCredentials(objectID: app.id)
        let replicas = Set(keys.compactMap { k -> ReplicaName? in let m = CredentialName.parse(displayName: k.displayName); return m.isKeyRoll ? m.replica : nil })
        if replica == nil, !replicas.isEmpty {
            throw Refused(description: "\(app.displayName ?? app.appId) runs on several hosts (replicas \(replicas.sorted().map(\.rawValue).joined(separator: ", "))); name the one whose host needs a new start: --replica rN. An unmarked bootstrap would belong to no replica.")
        }
        let valid = keys.filter { $0.isValidCertificate(at: now) && (replica == nil || CredentialName.parse(displayName: $0.displayName).replica == replica) }
        if !valid.isEmpty && !force {
            let latest = valid.compactMap(\.endDateTime).max().map { UTCTime.iso($0) } ?? "?"
            throw Refused(description: "\(app.displayName ?? app.appId)\(replica.map { " replica \($0)" } ?? "") still has \(valid.count) valid certificate(s) (until \(latest)); its agent can roll by itself. Use --force to issue a bootstrap anyway.")
        }
        // The app's management policy may cap certificate lifetimes (an adopted app's usually does):
        // the new bootstrap and every certificate its agent makes stay inside it, or the agent's
        // first roll would be refused and the bootstrap run out. Best effort: without
        // Policy.Read.All the cap is unknown, and the recovery is not withheld for it.
        let cap = await certificateCap(app)
        let bootstrapValidity = cap.map { min(validity, $0 - 360) } ?? validity
        guard bootstrapValidity >= 3600 else {
            throw Refused(description: "\(app.displayName ?? app.appId)'s management policy limits certificates to \(Int(cap ?? 0)) s, too short for a bootstrap; raise the policy's asymmetricKeyLifetime.")
        }
        // Intent first (who, why, which key), then the bundle, then the privileged write, then the
        // outcome: a run that dies midway leaves an audit trail that says so.
        var bundle = try await provisioner.prepareBootstrap(application: app, validity: bootstrapValidity, replica: replica)
        bundle.maximumCertificateValidity = cap
        let thumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let graph = provisioner.graph
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: [
            "action": "rebootstrap", "operator": .string(who),
            "provisionerClientId": .string(provisioner.graph.tokens.clientID), "app": .string(app.displayName ?? ""), "appId": .string(app.appId),
            "objectId": .string(app.id), "keyId": .string(bundle.bootstrap.keyId ?? ""), "thumbprint": .string(thumb),
            "forced": .bool(force), "validCertificatesBefore": .int(Int64(valid.count)), "reason": .string(reason), "bundle": .string(bundlePath),
        ])
        if let replica { trail.set("replica", .string(replica.rawValue)) }
        if let cap { trail.set("maximumCertificateValiditySeconds", .int(Int64(cap.rounded(.down)))) }
        // a bundle folder others can read is refused before anything is recorded or written
        try SecureFiles.ensurePrivateDirectory((bundlePath as NSString).deletingLastPathComponent)
        try trail.intent()
        try SecureFiles.writeAtomically(try bundle.encoded(), to: bundlePath, hook: hook)
        do { try await provisioner.registerBootstrap(bundle) } catch {
            try? SecureFiles.shred(bundlePath)
            trail.failed(error)
            throw error
        }
        try trail.completed()
        return bundle
    }
}

extension Rebootstrap {
    /// The app's certificate lifetime limit from its management policy, or nil when it has none or
    /// it cannot be read.
    func certificateCap(_ app: Application) async -> TimeInterval? {
        let graph = provisioner.graph
        guard let full = try? await graph.application(id: app.id, select: ["id", "appId", "displayName", "createdDateTime"]),
              let limits = try? await graph.credentialLimits(for: full) else { return nil }
        return limits.maxCertificateLifetime
    }
}

/// The re-bootstrap audit trail: one JSON object per line, in a ``JSONLinesFile``.
public enum AuditLog {
    public static func append(_ record: [String: JSONValue], to path: String, hook: SideEffectHook = .none) throws {
        try JSONLinesFile.append(JSONValue.object(record).serialized(), to: path, hook: hook)
    }
}
