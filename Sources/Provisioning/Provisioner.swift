import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// The central, privileged side: creates app registrations with a short-lived bootstrap
/// certificate and hands each app its bundle. It keeps no private key after the bundle is written.
///
/// Writes to `keyCredentials` go through read → merge → PATCH → verify, never a blind PATCH (a
/// PATCH replaces the whole list and has locked real users out).
public struct Provisioner: Sendable {
    public let graph: GraphClient
    public let clock: any WallClock
    public let logger: Logger
    /// How long a privileged run's lease on an application lasts (``AppLease``).
    public var leaseDuration: TimeInterval = 900
    /// How long a run waits after writing its lease before reading it back.
    public var leaseConfirmDelay: Double = 2
    /// How long after its PATCHes a privileged run reads the keys again (``withLease``).
    public var recheckDelay: Double = 5
    /// Tag on every application KeyRoll provisions.
    public static let managedTag = "keyroll:managed"

    public init(graph: GraphClient, clock: any WallClock = SystemClock(), logger: Logger = Logger(label: "keyroll.provisioner")) {
        self.graph = graph
        self.clock = clock
        self.logger = logger
    }

    /// The stable marker that makes provisioning idempotent: one tag per app name.
    public static func marker(for name: String) -> String { "keyroll:app:" + name }

    public struct Result: Sendable {
        public var application: Application
        public var bundle: BootstrapBundle
        /// False when the application already existed (a re-run).
        public var created: Bool
    }

    /// Creates (or finds) the application `name` and its service principal, registers a fresh
    /// bootstrap certificate valid for `bootstrapValidity`, and returns the bundle for the app.
    public func provision(name: String, tags: [String] = [], notes: String? = nil, bootstrapValidity: TimeInterval = 2 * 86_400,
                          keySize: RSAKeySize = .bits2048) async throws -> Result {
        let marker = Self.marker(for: name)
        var existing: Application?
        for try await app in graph.applications(filter: OData.hasTag(marker), select: ["id", "appId", "displayName", "tags"]) {
            existing = app
            break
        }
        let app: Application
        if let existing { app = existing } else {
            app = try await graph.createApplication(displayName: name, tags: [Self.managedTag] + tags, marker: marker)
        }
        _ = try await graph.createServicePrincipal(appId: app.appId)
        let bundle = try await issueBootstrap(application: app, validity: bootstrapValidity, keySize: keySize)
        return Result(application: app, bundle: bundle, created: existing == nil)
    }

    /// Registers a new bootstrap certificate on `application` by read-merge-PATCH-verify and
    /// returns the bundle. Existing certificates stay registered.
    public func issueBootstrap(application: Application, validity: TimeInterval, keySize: RSAKeySize = .bits2048) async throws -> BootstrapBundle {
        let bundle = try await prepareBootstrap(application: application, validity: validity, keySize: keySize)
        try await registerBootstrap(bundle)
        return bundle
    }

    /// A new bootstrap key, certificate and keyId for `application`, not yet registered: a caller
    /// that must record its intent (the audited re-bootstrap) does so before `registerBootstrap`.
    public func prepareBootstrap(application: Application, validity: TimeInterval, replica: ReplicaName? = nil,
                                 keySize: RSAKeySize = .bits2048) async throws -> BootstrapBundle {
        let now = graph.correctedNow
        let size = keySize
        let cred = try await Background.run { try Self.bootstrapCredential(replica: replica, now: now, validity: validity, size: size) }
        let e = graph.endpoints
        return try BootstrapBundle(tenantId: e.tenant, authorityHost: e.authorityHost, graphBaseURL: e.graphBaseURL,
                               applicationObjectId: application.id, appId: application.appId, displayName: application.displayName, replica: replica,
                               credential: cred, keyId: UUID().uuidString.lowercased(), createdAt: now, createdBy: nil)
    }

    /// Registers a prepared bootstrap certificate on its application (read-merge-PATCH-verify).
    public func registerBootstrap(_ bundle: BootstrapBundle) async throws {
        try await mergeKeyCredential(objectID: bundle.applicationObjectId, certificate: try bundle.signingCredential().certificate,
                                     keyId: bundle.bootstrap.keyId ?? "", displayName: Self.bootstrapDisplayName(replica: bundle.replica))
    }

    /// A keyCredential to add by a merge PATCH: the certificate, its keyId and the name Graph shows.
    public struct NewKey: Sendable {
        public var certificate: X509Certificate
        public var keyId: String
        public var displayName: String
        public init(certificate: X509Certificate, keyId: String, displayName: String) {
            self.certificate = certificate
            self.keyId = keyId
            self.displayName = displayName
        }

        var entry: JSONValue {
            .object(["keyId": .string(keyId), "type": "AsymmetricX509Cert", "usage": "Verify",
                     "key": .string(Base64.encode(certificate.der)), "displayName": .string(displayName)])
        }
    }

    public func mergeKeyCredential(objectID: String, certificate: X509Certificate, keyId: String, displayName: String) async throws {
        try await mergeKeyCredentials(objectID: objectID, adding: [NewKey(certificate: certificate, keyId: keyId, displayName: displayName)])
    }

    /// Read → merge → PATCH → verify, the read made again before every attempt (see
    /// ``GraphClient/updateKeyCredentials(id:merge:)``). Existing entries are re-sent with their
    /// `key`, so nothing is dropped; afterwards every key the PATCH was built on and every new one
    /// must be present. All of `adding` go in one write.
    public func mergeKeyCredentials(objectID: String, adding: [NewKey]) async throws {
        let before = try await graph.updateKeyCredentials(id: objectID, precondition: leaseCheck(objectID)) { current in
            // a retry after a lost answer finds its own entries already there: send the list as it is
            current.map(Self.patchEntry) + adding.filter { n in !current.contains { $0.keyId == n.keyId } }.map(\.entry)
        }
        let after = try await graph.keyCredentials(objectID: objectID)
        let afterIds = Set(after.map(\.keyId))
        // A key of `before` missing now was removed by its own agent since (a sibling finishing a
        // roll): the PATCH sent it, so it cannot have dropped it. Worth a note, not a failure.
        let gone = before.map(\.keyId).filter { !afterIds.contains($0) }
        if !gone.isEmpty { logger.info("keys removed since the PATCH was built (an agent's removeKey)", metadata: ["keyIds": "\(gone)"]) }
        AppLease.current.map { if $0.objectId == objectID { $0.ledger.add(adding) } }
        let missing = adding.filter { n in !after.contains { $0.keyId == n.keyId && $0.matches(n.certificate) } }.map(\.keyId)
        guard missing.isEmpty else {
            throw EntraError(kind: .protocolViolation, operation: "mergeKeyCredential",
                             message: "after the PATCH, Graph does not show the expected key credentials (missing: \(missing.joined(separator: ", ")))")
        }
    }

}
