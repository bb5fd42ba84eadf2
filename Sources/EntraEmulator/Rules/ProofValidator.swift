import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Checks the proof-of-possession JWT of `addKey` / `removeKey` exactly as Graph documents it.
/// Every failure is the same 401 `Authentication_MissingOrMalformed` "Access Token missing or
/// malformed." that Graph returns, whatever the cause.
struct ProofValidator {
    let now: Date
    let settings: EmulatorSettings

    /// - Parameters:
    ///   - proof: the `proof` body field.
    ///   - objectID: the object id of the application (or service principal) being changed; the
    ///     proof's `iss` must equal it.
    ///   - credentials: the object's key credentials; the proof must be signed by one that is a
    ///     currently valid `AsymmetricX509Cert` / `Verify` certificate.
    func validate(_ proof: JSONValue?, objectID: String, credentials: [StoredKeyCredential]) throws {
        guard case .string(let text)? = proof, !text.isEmpty else { throw GraphError.malformedProof }
        // Graph: "padding character '=' must not be included in the JWT header and payload".
        guard let jws = try? CompactJWS(parsing: text, encoding: .strict) else { throw GraphError.malformedProof }
        guard jws.algorithm == .rs256 else { throw GraphError.malformedProof }  // only RS256 is evidenced (UNCONFIRMED)
        guard jws.claims.audiences == [ProofOfPossession.audience] else { throw GraphError.malformedProof }
        guard jws.claims.string("iss")?.lowercased() == objectID.lowercased() else { throw GraphError.malformedProof }
        let leeway = settings.clockSkewLeeway
        guard let nbf = jws.claims.date("nbf"), let exp = jws.claims.date("exp"),
              nbf <= now.addingTimeInterval(leeway), now <= exp.addingTimeInterval(leeway) else { throw GraphError.malformedProof }
        if settings.strictProofLifetime, exp.timeIntervalSince(nbf) > ProofOfPossession.maximumLifetime { throw GraphError.malformedProof }
        // The signer: matched by x5t / x5t#S256 / kid, else any currently valid certificate.
        let valid = credentials.filter { $0.isUsableCertificate(at: now) }
        var candidates = valid
        if let x5t = jws.headerString("x5t").flatMap({ Base64URL.decodeLenient($0) }) {
            candidates = valid.filter { $0.sha1.bytes == x5t }
        } else if let s256 = jws.headerString("x5t#S256").flatMap({ Base64URL.decodeLenient($0) }) {
            candidates = valid.filter { $0.sha256.bytes == s256 }
        } else if let kid = jws.headerString("kid").flatMap({ Thumbprint(hex: $0, algorithm: .sha1) }) {
            candidates = valid.filter { $0.sha1 == kid }
        }
        for cred in candidates {
            guard let cert = try? X509Certificate(der: cred.key), cert.isValid(at: now), let key = try? cert.rsaPublicKey() else { continue }
            if (try? jws.verify(with: key, allowing: [.rs256])) != nil { return }
        }
        throw GraphError.malformedProof
    }
}
