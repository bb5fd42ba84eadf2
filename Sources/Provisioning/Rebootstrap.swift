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
        // Intent first (who, why, which key), then the bundle, then the privileged write, then the
        // outcome: a run that dies midway leaves an audit trail that says so.
        let bundle = try await provisioner.prepareBootstrap(application: app, validity: validity, replica: replica)
        let thumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let graph = provisioner.graph
        var trail = AuditTrail(path: auditLogPath, hook: hook, now: { graph.correctedNow }, record: [
            "action": "rebootstrap", "operator": .string(who),
            "provisionerClientId": .string(provisioner.graph.tokens.clientID), "app": .string(app.displayName ?? ""), "appId": .string(app.appId),
            "objectId": .string(app.id), "keyId": .string(bundle.bootstrap.keyId ?? ""), "thumbprint": .string(thumb),
            "forced": .bool(force), "validCertificatesBefore": .int(Int64(valid.count)), "reason": .string(reason), "bundle": .string(bundlePath),
        ])
        if let replica { trail.set("replica", .string(replica.rawValue)) }
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

/// The re-bootstrap audit trail: one JSON object per line, in a ``JSONLinesFile``.
public enum AuditLog {
    public static func append(_ record: [String: JSONValue], to path: String, hook: SideEffectHook = .none) throws {
        try JSONLinesFile.append(JSONValue.object(record).serialized(), to: path, hook: hook)
    }
}
