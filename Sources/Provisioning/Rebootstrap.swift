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

    public struct Refused: Error, CustomStringConvertible {
        public let description: String
    }

    /// - Parameters:
    ///   - application: the app (by `Application.id`/`appId`).
    ///   - force: issue even though the app still has a valid certificate (its agent could roll).
    public func run(application app: Application, bundlePath: String, validity: TimeInterval = 2 * 86_400, force: Bool, reason: String,
                    operator who: String) async throws -> BootstrapBundle {
        let now = provisioner.graph.correctedNow
        let keys = try await provisioner.graph.keyCredentials(objectID: app.id)
        let valid = keys.filter { $0.isValidCertificate(at: now) }
        if !valid.isEmpty && !force {
            let latest = valid.compactMap(\.endDateTime).max().map { UTCTime.iso($0) } ?? "?"
            throw Refused(description: "\(app.displayName ?? app.appId) still has \(valid.count) valid certificate(s) (until \(latest)); its agent can roll by itself. Use --force to issue a bootstrap anyway.")
        }
        // Intent first (who, why, which key), then the bundle, then the privileged write, then the
        // outcome: a run that dies midway leaves an audit trail that says so.
        let bundle = try await provisioner.prepareBootstrap(application: app, validity: validity)
        let thumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        var record: [String: JSONValue] = [
            "time": .string(UTCTime.iso(now)), "action": "rebootstrap", "phase": "intent", "operator": .string(who),
            "provisionerClientId": .string(provisioner.graph.tokens.clientID), "app": .string(app.displayName ?? ""), "appId": .string(app.appId),
            "objectId": .string(app.id), "keyId": .string(bundle.bootstrap.keyId ?? ""), "thumbprint": .string(thumb),
            "forced": .bool(force), "validCertificatesBefore": .int(Int64(valid.count)), "reason": .string(reason), "bundle": .string(bundlePath),
        ]
        try AuditLog.append(record, to: auditLogPath, hook: hook)
        try SecureFiles.ensurePrivateDirectory((bundlePath as NSString).deletingLastPathComponent)
        try SecureFiles.writeAtomically(try bundle.encoded(), to: bundlePath, hook: hook)
        do { try await provisioner.registerBootstrap(bundle) } catch {
            try? SecureFiles.shred(bundlePath)
            record["phase"] = "failed"
            record["error"] = .string(Redaction.scrub("\(error)"))
            record["time"] = .string(UTCTime.iso(provisioner.graph.correctedNow))
            try? AuditLog.append(record, to: auditLogPath, hook: hook)
            throw error
        }
        record["phase"] = "completed"
        record["time"] = .string(UTCTime.iso(provisioner.graph.correctedNow))
        try AuditLog.append(record, to: auditLogPath, hook: hook)
        return bundle
    }
}

/// The re-bootstrap audit trail: one JSON object per line, in a ``JSONLinesFile``.
public enum AuditLog {
    public static func append(_ record: [String: JSONValue], to path: String, hook: SideEffectHook = .none) throws {
        try JSONLinesFile.append(JSONValue.object(record).serialized(), to: path, hook: hook)
    }
}
