import Foundation
import SwiftASN1
import X509

/// Something that signs with an RSA private key it need not reveal: a key in memory
/// (``RSAPrivateKey``) or a key inside a hardware token that never leaves it (PKCS#11).
///
/// Everything KeyRoll signs goes through this one requirement: the self-signed certificate, client
/// assertions (RS256 and PS256), and the proofs of possession for addKey and removeKey.
public protocol RSASigner: Sendable {
    /// The public half, from which certificates and thumbprints are made.
    var publicKey: RSAPublicKey { get }
    /// The signature over `message` (the exact bytes, not a digest) with the padding and digest
    /// `algorithm` prescribes: PKCS#1 v1.5 for RS*, PSS with MGF1 and a salt as long as the digest for PS*.
    func signature(for message: [UInt8], algorithm: JWSAlgorithm) throws -> [UInt8]
    /// Where the private key lives, for status and logs: `file` for a key in memory.
    var keyStoreKind: KeyStoreKind { get }
}

/// Where a private key lives.
public enum KeyStoreKind: String, Sendable, Codable, CaseIterable {
    /// A PKCS#8 file (0600) on the host, read into memory to sign.
    case file
    /// A key generated inside a PKCS#11 token (an HSM, a TPM), non-extractable; the token signs.
    case pkcs11
}

extension RSAPrivateKey: RSASigner {
    public func signature(for message: [UInt8], algorithm: JWSAlgorithm) throws -> [UInt8] { try sign(message, algorithm: algorithm) }
    public var keyStoreKind: KeyStoreKind { .file }
}

/// An ``RSASigner`` as swift-certificates' custom private key, so a token's key can sign a
/// certificate. It cannot be serialized: the key never leaves its token.
struct CertificateSigningKey: CustomPrivateKey {
    let signer: any RSASigner
    let spki: [UInt8]

    init(_ signer: any RSASigner) {
        self.signer = signer
        self.spki = signer.publicKey.spkiDER
    }

    static func == (a: CertificateSigningKey, b: CertificateSigningKey) -> Bool { a.spki == b.spki }
    func hash(into hasher: inout Hasher) { hasher.combine(spki) }

    var publicKey: Certificate.PublicKey { Certificate.PublicKey(signer.publicKey.key) }
    var defaultSignatureAlgorithm: Certificate.SignatureAlgorithm { .sha256WithRSAEncryption }
    var supportedSignatureAlgorithms: [Certificate.SignatureAlgorithm] { [.sha256WithRSAEncryption] }

    func signSynchronously(bytes: some DataProtocol, signatureAlgorithm: Certificate.SignatureAlgorithm) throws -> Certificate.Signature {
        guard signatureAlgorithm == .sha256WithRSAEncryption else {
            throw EntraCryptoError.invalidParameter("a token key signs certificates with SHA256WithRSA only, not \(signatureAlgorithm)")
        }
        let sig = try signer.signature(for: Array(bytes), algorithm: .rs256)
        return try Certificate.Signature(signatureAlgorithm: .sha256WithRSAEncryption, signatureBytes: ASN1BitString(bytes: ArraySlice(sig)))
    }

    static var defaultPEMDiscriminator: String { "PRIVATE KEY" }
    func serialize(into coder: inout DER.Serializer) throws {
        throw EntraCryptoError.invalidParameter("a key held in a token cannot be serialized")
    }
}
