import Foundation
import KeyRollPrimitives

/// Builds the signed JWT an app presents at the v2.0 token endpoint instead of a secret
/// (`client_assertion`, type `urn:ietf:params:oauth:client-assertion-type:jwt-bearer`).
public enum ClientAssertion {
    public static let assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    public static let defaultLifetime: TimeInterval = 600

    /// Which algorithm and thumbprint header to use.
    public enum Style: String, Sendable, Codable, CaseIterable {
        /// PS256 with `x5t#S256`: Entra's current documented format (MSAL.NET, msal-go).
        case ps256
        /// RS256 with `x5t` (SHA-1): the legacy format, for tenants or proxies that need it.
        case rs256
    }

    /// - Parameters:
    ///   - clientID: the application (client) id; becomes `iss` and `sub`.
    ///   - tokenEndpoint: the exact token-endpoint URL the assertion will be POSTed to (`aud`).
    ///   - now: the caller's (skew-corrected) clock; `nbf` = `iat` = now, `exp` = now + lifetime.
    ///   - includeX5C: also send the certificate as `x5c` (only Microsoft-internal SNI apps need it).
    public static func make(clientID: String, tokenEndpoint: String, credential: SigningCredential, now: Date,
                            style: Style = .ps256, includeX5C: Bool = false,
                            lifetime: TimeInterval = defaultLifetime, jti: UUID = UUID()) throws -> String {
        guard lifetime > 0 else { throw EntraCryptoError.invalidParameter("assertion lifetime must be positive") }
        var header: [String: JSONValue] = ["typ": "JWT"]
        switch style {
        case .ps256: header["x5t#S256"] = .string(credential.certificate.sha256Thumbprint.base64URL)
        case .rs256: header["x5t"] = .string(credential.certificate.sha1Thumbprint.base64URL)
        }
        if includeX5C { header["x5c"] = .array([.string(Base64.encode(credential.certificate.der))]) }
        let claims: [String: JSONValue] = [
            "aud": .string(tokenEndpoint),
            "iss": .string(clientID),
            "sub": .string(clientID),
            "jti": .string(jti.uuidString.lowercased()),
            "nbf": NumericDate.value(now),
            "iat": NumericDate.value(now),
            "exp": NumericDate.value(now.addingTimeInterval(lifetime)),
        ]
        return try CompactJWS.sign(header: header, claims: claims, algorithm: style == .ps256 ? .ps256 : .rs256,
                                   key: credential.signer)
    }
}
