import Foundation
import KeyRollPrimitives

/// Builds the proof-of-possession JWT that Graph's `addKey` / `removeKey` require: proof that the
/// caller holds the private key of one of the object's currently valid registered certificates.
public enum ProofOfPossession {
    /// The legacy Azure AD Graph application id, which Graph requires as the proof's `aud`.
    public static let audience = "00000002-0000-0000-c000-000000000000"
    /// Graph documents a 10-minute proof lifetime; longer proofs are refused by this builder.
    public static let maximumLifetime: TimeInterval = 600

    /// - Parameters:
    ///   - objectID: the **object id** of the application (or service principal), not its appId.
    ///   - credential: a currently valid certificate registered on that object, with its key.
    ///   - now: the caller's (skew-corrected) clock; `nbf` = `iat` = now, `exp` = now + lifetime.
    public static func make(objectID: String, credential: SigningCredential, now: Date,
                            lifetime: TimeInterval = maximumLifetime) throws -> String {
        guard lifetime > 0, lifetime <= maximumLifetime else {
            throw EntraCryptoError.invalidParameter("proof lifetime must be between 1 and \(Int(maximumLifetime)) seconds, not \(Int(lifetime))")
        }
        let header: [String: JSONValue] = [
            "typ": "JWT",
            "x5t": .string(credential.certificate.sha1Thumbprint.base64URL),
            "kid": .string(credential.certificate.sha1Thumbprint.hex),
        ]
        let claims: [String: JSONValue] = [
            "aud": .string(audience),
            "iss": .string(objectID),
            "nbf": NumericDate.value(now),
            "iat": NumericDate.value(now),
            "exp": NumericDate.value(now.addingTimeInterval(lifetime)),
        ]
        return try CompactJWS.sign(header: header, claims: claims, algorithm: .rs256, key: credential.signer)
    }
}
