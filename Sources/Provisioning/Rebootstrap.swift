import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
#if canImport(Glibc)
import Glibc
#endif

/// The privileged, audited recovery path for an app past its cliff or whose agent lost its store:
/// a new bootstrap certificate by read-merge-PATCH-verify and a new bundle.
public struct Rebootstrap: Sendable {
    public let provisioner: Provisioner
    public let auditLogPath: String

    public init(provisioner: Provisioner, auditLogPath: String) {
        self.provisioner = provisioner
        self.auditLogPath = auditLogPath
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
        try AuditLog.append(record, to: auditLogPath)
        try SecureFiles.ensurePrivateDirectory((bundlePath as NSString).deletingLastPathComponent)
        try SecureFiles.writeAtomically(try bundle.encoded(), to: bundlePath)
        do { try await provisioner.registerBootstrap(bundle) } catch {
            try? SecureFiles.shred(bundlePath)
            record["phase"] = "failed"
            record["error"] = .string(Redaction.scrub("\(error)"))
            record["time"] = .string(UTCTime.iso(provisioner.graph.correctedNow))
            try? AuditLog.append(record, to: auditLogPath)
            throw error
        }
        record["phase"] = "completed"
        record["time"] = .string(UTCTime.iso(provisioner.graph.correctedNow))
        try AuditLog.append(record, to: auditLogPath)
        return bundle
    }
}

/// An append-only JSON-lines audit trail (fsynced; 0600).
public enum AuditLog {
    public static func append(_ record: [String: JSONValue], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SecureFileError.io(path: path, operation: "open", errno: errno) }
        defer { close(fd) }
        let bytes = JSONValue.object(record).serialized() + [UInt8(ascii: "\n")]
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, bytes.count) }
        guard n == bytes.count, fsync(fd) == 0 else { throw SecureFileError.io(path: path, operation: "write", errno: errno) }
    }
}
