import EntraCrypto
import Foundation
import KeyRollPrimitives

/// `microsoft.graph.keyCredential`, as Graph returns it.
public struct KeyCredential: Sendable, Codable, Equatable {
    public var keyId: String
    /// Base64 of the SHA-1 thumbprint (Graph's default), as an `Edm.Binary` string.
    public var customKeyIdentifier: String?
    public var displayName: String?
    public var startDateTime: Date?
    public var endDateTime: Date?
    public var type: String?
    public var usage: String?
    /// Base64 DER; only on single-object `$select=keyCredentials`, otherwise null.
    public var key: String?

    public init(keyId: String, customKeyIdentifier: String? = nil, displayName: String? = nil, startDateTime: Date? = nil,
                endDateTime: Date? = nil, type: String? = nil, usage: String? = nil, key: String? = nil) {
        self.keyId = keyId
        self.customKeyIdentifier = customKeyIdentifier
        self.displayName = displayName
        self.startDateTime = startDateTime
        self.endDateTime = endDateTime
        self.type = type
        self.usage = usage
        self.key = key
    }

    /// True when this entry is `certificate`: by its DER when Graph returned `key`, else by the
    /// base64-decoded `customKeyIdentifier` against the certificate's SHA-1 thumbprint.
    public func matches(_ certificate: X509Certificate) -> Bool {
        if let k = key, let der = Base64.decode(k) { return der == certificate.der }
        guard let c = customKeyIdentifier, let bytes = Base64.decode(c) else { return false }
        return bytes == certificate.sha1Thumbprint.bytes
    }

    /// Whether this is the certificate with SHA-1 thumbprint `hex` (by `customKeyIdentifier`): how
    /// a key is found in Graph once its certificate file is gone.
    public func matches(thumbprint hex: String) -> Bool {
        guard let c = customKeyIdentifier, let bytes = Base64.decode(c) else { return false }
        let digits = Array("0123456789ABCDEF")
        return String(bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 15)]] }) == hex.uppercased()
    }

    /// A certificate credential Entra would accept at `date`.
    public func isValidCertificate(at date: Date) -> Bool {
        type == "AsymmetricX509Cert" && usage == "Verify" && (startDateTime ?? .distantPast) <= date && date <= (endDateTime ?? .distantPast)
    }
}

public struct PasswordCredential: Sendable, Codable, Equatable {
    public var keyId: String
    public var displayName: String?
    public var startDateTime: Date?
    public var endDateTime: Date?
    public var hint: String?
}

/// `microsoft.graph.application` (the properties KeyRoll uses).
public struct Application: Sendable, Codable, Equatable {
    public var id: String
    public var appId: String
    public var displayName: String?
    public var signInAudience: String?
    public var createdDateTime: Date?
    public var keyCredentials: [KeyCredential]?
    public var passwordCredentials: [PasswordCredential]?
    public var tags: [String]?
    public var notes: String?

    public init(id: String, appId: String, displayName: String? = nil, signInAudience: String? = nil, createdDateTime: Date? = nil,
                keyCredentials: [KeyCredential]? = nil, passwordCredentials: [PasswordCredential]? = nil, tags: [String]? = nil, notes: String? = nil) {
        self.id = id
        self.appId = appId
        self.displayName = displayName
        self.signInAudience = signInAudience
        self.createdDateTime = createdDateTime
        self.keyCredentials = keyCredentials
        self.passwordCredentials = passwordCredentials
        self.tags = tags
        self.notes = notes
    }
}

/// `microsoft.graph.servicePrincipal` (the properties KeyRoll uses).
public struct ServicePrincipal: Sendable, Codable, Equatable {
    public var id: String
    public var appId: String
    public var displayName: String?
}

/// Graph's JSON dates: ISO 8601 with or without a fraction (up to 7 digits) and offset.
enum GraphDates {
    static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.dateEncodingStrategy = .utcISO8601
        return e
    }

    static var decoder: JSONDecoder { .utcDates() }
}
