import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Entra's rules for a client assertion (RFC 7523 with Entra's certificate rules): which key it
/// names, whether that key may sign in now, the signature, audience, issuer and subject, its time
/// window and replay. The order of the checks is documented in docs/emulator.md.
struct AssertionValidator {
    let settings: EmulatorSettings
    let store: DirectoryStore
    /// Scheme and host the client called: the audience must name this host.
    let baseURL: String

    struct AssertionFailure: Error {
        var error: TokenError
        var keyId: String? = nil
        var thumbprint: String? = nil
    }

    /// The certificate-assertion pipeline: parse → algorithm → key lookup by thumbprint among the
    /// application's propagated `AsymmetricX509Cert`/`Verify` credentials → credential validity →
    /// key size → signature → audience → issuer/subject → time window → replay.
    func validate(_ text: String, app: StoredApplication, tenant: Tenant, tenantSegment: String, clientID: String,
                  now: Date) -> Result<StoredKeyCredential, AssertionFailure> {
        func fail(_ e: TokenError, _ k: StoredKeyCredential? = nil, thumb: String? = nil) -> Result<StoredKeyCredential, AssertionFailure> {
            .failure(AssertionFailure(error: e, keyId: k?.keyId, thumbprint: k?.sha1.hex ?? thumb))
        }
        let jws: CompactJWS
        do { jws = try CompactJWS(parsing: text, encoding: .lenient) } catch EntraCryptoError.unsupportedAlgorithm(let alg) {
            return fail(.unsupportedAlgorithm(alg))
        } catch { return fail(.invalidJWT("Unable to parse the client assertion: \(error)")) }
        // Thumbprint header: x5t#S256 (SHA-256) first, then x5t (SHA-1), then kid as hex SHA-1.
        var wanted: Thumbprint?
        if let s = jws.headerString("x5t#S256") {
            guard let b = Base64URL.decodeLenient(s), b.count == 32 else { return fail(.invalidJWT("The x5t#S256 header is not a SHA-256 thumbprint.")) }
            wanted = Thumbprint(algorithm: .sha256, bytes: b)
        } else if let s = jws.headerString("x5t") {
            guard let b = Base64URL.decodeLenient(s), b.count == 20 else { return fail(.invalidJWT("The x5t header is not a SHA-1 thumbprint.")) }
            wanted = Thumbprint(algorithm: .sha1, bytes: b)
        } else if let kid = jws.headerString("kid") {
            wanted = Thumbprint(hex: kid, algorithm: .sha1)
        }
        guard let wanted else { return fail(.invalidJWT("No certificate thumbprint specified in token header.")) }
        let candidates = app.keyCredentials.filter { $0.type == "AsymmetricX509Cert" && $0.usage == "Verify" && $0.activeAt <= now }
        guard let cred = candidates.first(where: { (wanted.algorithm == .sha1 ? $0.sha1 : $0.sha256) == wanted }) else {
            return fail(.keyNotFound(thumbprint: wanted.hex, appId: app.appId), thumb: wanted.hex)
        }
        let cert = try? X509Certificate(der: cred.key)
        guard cred.startDateTime <= now, now <= cred.endDateTime, cert.map({ $0.isValid(at: now) }) ?? true else {
            return fail(.certificateOutsideValidity(), cred)
        }
        if let bits = X509Certificate.inspectRSAKeyBits(der: cred.key), bits < 2048 { return fail(.weakKey(bits), cred) }
        guard let publicKey = try? cert?.rsaPublicKey() else { return fail(.unsupportedAlgorithm(jws.algorithm.rawValue), cred) }
        do { try jws.verify(with: publicKey, allowing: Set(JWSAlgorithm.allCases)) } catch {
            return fail(.signatureMismatch(thumbprint: cred.sha1.hex, start: cred.startDateTime, end: cred.endDateTime), cred)
        }
        // aud: the token endpoint actually called (either spelling of the tenant), the v1 endpoint,
        // or the issuer form, on this host.
        let base = baseURL.lowercased()
        let names = Set([tenant.id, tenant.domain.lowercased(), tenantSegment.lowercased()])
        let accepted = Set(names.flatMap { ["\(base)/\($0)/oauth2/v2.0/token", "\(base)/\($0)/oauth2/token", "\(base)/\($0)/v2.0"] })
        guard jws.claims.audiences.contains(where: { accepted.contains($0.lowercased()) }) else { return fail(.audienceMismatch, cred) }
        guard jws.claims.string("iss")?.lowercased() == clientID else { return fail(.issuerMismatch, cred) }
        guard jws.claims.string("sub")?.lowercased() == clientID else { return fail(.subjectMismatch, cred) }
        let leeway = settings.clockSkewLeeway
        let nbf = jws.claims.date("nbf"), exp = jws.claims.date("exp")
        guard let exp, now <= exp.addingTimeInterval(leeway), (nbf ?? .distantPast) <= now.addingTimeInterval(leeway) else {
            return fail(.expired(now: now, from: nbf, to: exp), cred)
        }
        if settings.strictReplay, let jti = jws.claims.string("jti") {
            if (try? store.recordJTI(jti, expires: exp.addingTimeInterval(leeway), now: now)) == false { return fail(.replay, cred) }
        }
        return .success(cred)
    }
}
