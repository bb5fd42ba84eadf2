import Foundation
import NIOCore
import NIOSSL

/// A private key together with the certificate registered for it in Entra: what an app signs
/// client assertions and proofs with. The key is a ``RSASigner``: in memory (a file store), or in
/// a token that signs and never reveals it.
public struct SigningCredential: Sendable {
    /// What signs: everything KeyRoll signs with this credential goes through it.
    public let signer: any RSASigner
    public let certificate: X509Certificate

    /// The private key, when it is one KeyRoll holds in memory (a file store); nil for a key that
    /// lives in a token and cannot be exported.
    public var exportableKey: RSAPrivateKey? { signer as? RSAPrivateKey }

    /// The private key held in memory. Only for credentials KeyRoll made in software (the
    /// provisioner's bootstrap, `keyroll cert`); a token's key has none.
    public var privateKey: RSAPrivateKey {
        get throws {
            guard let key = exportableKey else {
                throw EntraCryptoError.invalidParameter("the private key of \(certificate.sha1Thumbprint.hex) lives in a token and cannot be exported")
            }
            return key
        }
    }

    /// Pairs `privateKey` with `certificate`, refusing a certificate that belongs to another key.
    public init(privateKey: RSAPrivateKey, certificate: X509Certificate) throws {
        try self.init(signer: privateKey, certificate: certificate)
    }

    /// Pairs `signer` with `certificate`, refusing a certificate that belongs to another key.
    public init(signer: any RSASigner, certificate: X509Certificate) throws {
        let certKey = try certificate.rsaPublicKey()
        guard certKey.spkiDER == signer.publicKey.spkiDER else {
            throw EntraCryptoError.invalidParameter("the certificate (\(certificate.sha1Thumbprint.hex)) does not belong to the private key")
        }
        self.signer = signer
        self.certificate = certificate
    }

    /// Generates a key and a self-signed client certificate for it.
    public static func generate(size: RSAKeySize = .bits2048, subject: CertificateSubject,
                                notBefore: Date, notAfter: Date) throws -> SigningCredential {
        let key = try RSAPrivateKey.generate(size: size)
        let cert = try CertificateIssuer.selfSigned(key: key, subject: subject, notBefore: notBefore, notAfter: notAfter)
        return try SigningCredential(privateKey: key, certificate: cert)
    }

    /// The combined PEM that azure-identity's `CertificateCredential`, MSAL and the Azure CLI read:
    /// a PKCS#8 `PRIVATE KEY` block followed by the `CERTIFICATE` block. A token's key has none.
    public var combinedPEM: String { get throws { try privateKey.pkcs8PEM + certificate.pem } }

    /// Reads a combined PEM (key and certificate in either order; extra chain certificates are
    /// ignored; the leaf is the one matching the key).
    public init(combinedPEM text: String, passphrase: String? = nil) throws {
        let blocks = try PEMBlock.all(in: text)
        let keyLabels = ["PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"]
        guard let keyBlock = blocks.first(where: { keyLabels.contains($0.label) }) else {
            throw EntraCryptoError.malformedPEM("no private key block (BEGIN PRIVATE KEY or BEGIN RSA PRIVATE KEY) found")
        }
        let certBlocks = blocks.filter { $0.label == "CERTIFICATE" }
        guard !certBlocks.isEmpty else { throw EntraCryptoError.malformedPEM("no BEGIN CERTIFICATE block found") }
        for other in blocks where !keyLabels.contains(other.label) && other.label != "CERTIFICATE" {
            throw EntraCryptoError.unexpectedPEMLabel(found: other.label, expected: keyLabels + ["CERTIFICATE"])
        }
        let key = try RSAPrivateKey(pem: keyBlock.pem, passphrase: passphrase)
        let spki = key.publicKey.spkiDER
        for block in certBlocks {
            let cert = try X509Certificate(der: block.der)
            if (try? cert.rsaPublicKey().spkiDER) == spki {
                try self.init(privateKey: key, certificate: cert)
                return
            }
        }
        throw EntraCryptoError.invalidParameter("none of the certificates in the PEM belongs to its private key")
    }

    /// Reads a PKCS#12 (.pfx / .p12) bundle through BoringSSL.
    public init(pkcs12 bytes: [UInt8], passphrase: String) throws {
        let bundle: NIOSSLPKCS12Bundle
        do { bundle = try NIOSSLPKCS12Bundle(buffer: bytes, passphrase: Array(passphrase.utf8)) } catch {
            throw EntraCryptoError.pkcs12("wrong passphrase or not a PKCS#12 file")
        }
        guard let leaf = bundle.certificateChain.first else { throw EntraCryptoError.pkcs12("it holds no certificate") }
        let key: RSAPrivateKey
        do {
            key = try RSAPrivateKey(der: bundle.privateKey.derBytes)
        } catch let e as EntraCryptoError { throw e } catch { throw EntraCryptoError.pkcs12("its private key cannot be read") }
        let certDER: [UInt8]
        do { certDER = try leaf.toDERBytes() } catch { throw EntraCryptoError.pkcs12("its certificate cannot be read") }
        try self.init(privateKey: key, certificate: try X509Certificate(der: certDER))
    }

    /// Serializes key and certificate as PKCS#12 (PBES2 / AES-256-CBC, BoringSSL defaults).
    public func pkcs12(passphrase: String) throws -> [UInt8] {
        do {
            let cert = try NIOSSLCertificate(bytes: certificate.der, format: .der)
            let key = try NIOSSLPrivateKey(bytes: try privateKey.pkcs8DER, format: .der)
            return try NIOSSLPKCS12Bundle(certificateChain: [cert], privateKey: key).serialize(passphrase: Array(passphrase.utf8))
        } catch { throw EntraCryptoError.pkcs12("cannot serialize: \(error)") }
    }
}
