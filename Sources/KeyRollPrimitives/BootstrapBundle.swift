import Foundation

/// What the provisioner hands an app: where to sign in, which application object it is, and a
/// short-lived bootstrap certificate with its private key. A JSON file, mode 0600, format
/// `keyroll-bootstrap/1` (docs/bootstrap-bundle.md).
public struct BootstrapBundle: Codable, Sendable, Equatable {
    public static let formatV1 = "keyroll-bootstrap/1"

    public var format: String
    public var tenantId: String
    public var authorityHost: String
    public var graphBaseURL: String
    /// The application's **object id** (`iss` of proofs, Graph URL).
    public var applicationObjectId: String
    /// The application (client) id (`client_id`, assertion `iss`/`sub`).
    public var appId: String
    public var displayName: String?
    /// Which replica of the app this bundle starts (nil: the app runs on one host). Its agent
    /// marks every certificate it makes with this name (``CredentialName``).
    public var replica: ReplicaName?
    public var bootstrap: Credential
    public var createdAt: Date
    public var createdBy: String?
    /// The longest lifetime, in seconds, Entra accepts for this app's certificates (its app
    /// management policy's `asymmetricKeyLifetime`, as the provisioner read it when it adopted the
    /// app). Optional: absent, the agent's own roll policy alone decides. The agent makes every
    /// certificate, backdate included, fit inside it.
    public var maximumCertificateValidity: TimeInterval?

    public struct Credential: Codable, Sendable, Equatable {
        /// Graph's keyId of the bootstrap certificate, when the provisioner knows it.
        public var keyId: String?
        public var certificatePEM: String
        public var privateKeyPEM: String

        public init(keyId: String?, certificatePEM: String, privateKeyPEM: String) {
            self.keyId = keyId
            self.certificatePEM = certificatePEM
            self.privateKeyPEM = privateKeyPEM
        }
    }

    public init(tenantId: String, authorityHost: String, graphBaseURL: String, applicationObjectId: String, appId: String,
                displayName: String?, replica: ReplicaName? = nil, bootstrap: Credential, createdAt: Date, createdBy: String?,
                maximumCertificateValidity: TimeInterval? = nil) {
        self.format = Self.formatV1
        self.tenantId = tenantId
        self.authorityHost = authorityHost
        self.graphBaseURL = graphBaseURL
        self.applicationObjectId = applicationObjectId
        self.appId = appId
        self.displayName = displayName
        self.replica = replica
        self.bootstrap = bootstrap
        self.createdAt = createdAt
        self.createdBy = createdBy
        self.maximumCertificateValidity = maximumCertificateValidity
    }

    public func encoded() throws -> [UInt8] {
        Array(try JSONEncoder.readable().encode(self))
    }

    public enum BundleError: Error, CustomStringConvertible, Equatable {
        case unreadable(String)
        case unsupportedFormat(String)

        public var description: String {
            switch self {
            case .unreadable(let why): return "The bootstrap bundle cannot be read: \(why). Ask the provisioner for a new one (keyroll rebootstrap)."
            case .unsupportedFormat(let f): return "Unsupported bootstrap bundle format '\(f)': this KeyRoll reads \(BootstrapBundle.formatV1). Upgrade KeyRoll or re-issue the bundle."
            }
        }
    }

    public static func decode(_ bytes: [UInt8]) throws -> BootstrapBundle {
        if let probe = try? JSONDecoder().decode([String: JSONValue].self, from: Data(bytes)), let f = probe["format"]?.stringValue, f != formatV1 {
            throw BundleError.unsupportedFormat(f)
        }
        do { return try JSONDecoder.utcDates().decode(BootstrapBundle.self, from: Data(bytes)) } catch {
            throw BundleError.unreadable("not a \(formatV1) JSON document (\(String(describing: error).prefix(160)))")
        }
    }
}
