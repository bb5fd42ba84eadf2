import _CryptoExtras
import Crypto
import Foundation
import SwiftASN1

/// The RSA key sizes KeyRoll generates. Entra accepts RSA keys of 2048 bits or more.
public enum RSAKeySize: Int, Sendable, CaseIterable, Codable {
    case bits2048 = 2048
    case bits3072 = 3072
    case bits4096 = 4096

    /// Validates a user-supplied size.
    public init(bits: Int) throws {
        guard let size = RSAKeySize(rawValue: bits) else {
            if bits < 2048 { throw EntraCryptoError.keyTooSmall(bits: bits) }
            throw EntraCryptoError.unsupportedKeySize(bits: bits)
        }
        self = size
    }
}

/// An RSA private key used to sign client assertions and proofs. Never serialized except through
/// ``pkcs8PEM`` / ``pkcs8DER`` for storage on the owner's host.
public struct RSAPrivateKey: Sendable {
    let key: _RSA.Signing.PrivateKey

    init(_ key: _RSA.Signing.PrivateKey) { self.key = key }

    /// Generates a fresh key. This is CPU-heavy (tens to hundreds of milliseconds, with a long tail
    /// for 4096 bits): call it off latency-sensitive threads.
    public static func generate(size: RSAKeySize = .bits2048) throws -> RSAPrivateKey {
        RSAPrivateKey(try _RSA.Signing.PrivateKey(keySize: .init(bitCount: size.rawValue)))
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`), or an encrypted
    /// PKCS#8 (`ENCRYPTED PRIVATE KEY`) when `passphrase` is given. Refuses EC and other key types
    /// and RSA keys under 2048 bits with a typed error.
    public init(pem: String, passphrase: String? = nil) throws {
        let doc = try PEMBlock.single(in: pem, accepting: ["PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "EC PRIVATE KEY"])
        switch doc.label {
        case "EC PRIVATE KEY":
            throw EntraCryptoError.unsupportedKeyType("EC")
        case "ENCRYPTED PRIVATE KEY":
            guard let passphrase else {
                throw EntraCryptoError.malformedKey("the key is encrypted; supply its passphrase")
            }
            do {
                let k = try _RSA.Signing.PrivateKey(encryptedPEMRepresentation: pem.trimmingCharacters(in: .whitespacesAndNewlines),
                                                    passphraseCallback: { (set: ([UInt8]) -> Void) in set(Array(passphrase.utf8)) })
                try self.init(checked: k)
            } catch let e as EntraCryptoError { throw e } catch {
                throw EntraCryptoError.malformedKey("cannot decrypt the key (wrong passphrase or unsupported encryption)")
            }
        default:
            try self.init(der: doc.der)
        }
    }

    /// Reads a DER private key (PKCS#8 or PKCS#1).
    public init(der: [UInt8]) throws {
        if let k = try? _RSA.Signing.PrivateKey(unsafeDERRepresentation: der) {
            try self.init(checked: k)
            return
        }
        if let type = nonRSAKeyType(privateKeyDER: der) { throw EntraCryptoError.unsupportedKeyType(type) }
        throw EntraCryptoError.malformedKey("not a PKCS#8 or PKCS#1 RSA private key")
    }

    private init(checked k: _RSA.Signing.PrivateKey) throws {
        guard k.keySizeInBits >= 2048 else { throw EntraCryptoError.keyTooSmall(bits: k.keySizeInBits) }
        self.key = k
    }

    public var bits: Int { key.keySizeInBits }
    public var publicKey: RSAPublicKey { RSAPublicKey(key.publicKey) }
    /// PKCS#8 `BEGIN PRIVATE KEY` PEM, with a trailing newline.
    public var pkcs8PEM: String { key.pkcs8PEMRepresentation + "\n" }
    public var pkcs8DER: [UInt8] { Array(key.pkcs8DERRepresentation) }

    /// Signs `message` (the JWS signing input) with the padding and digest `algorithm` prescribes.
    public func sign<D: DataProtocol>(_ message: D, algorithm: JWSAlgorithm) throws -> [UInt8] {
        let padding: _RSA.Signing.Padding = algorithm.usesPSS ? .PSS : .insecurePKCS1v1_5
        let sig: _RSA.Signing.RSASignature
        switch algorithm.digest {
        case .sha256: sig = try key.signature(for: SHA256.hash(data: message), padding: padding)
        case .sha384: sig = try key.signature(for: SHA384.hash(data: message), padding: padding)
        case .sha512: sig = try key.signature(for: SHA512.hash(data: message), padding: padding)
        }
        return Array(sig.rawRepresentation)
    }
}

/// An RSA public key, read from a certificate or derived from a private key.
public struct RSAPublicKey: Sendable {
    let key: _RSA.Signing.PublicKey

    init(_ key: _RSA.Signing.PublicKey) { self.key = key }

    /// Reads a SubjectPublicKeyInfo DER. RSA keys of any size ≥ 1024 are read so callers can report
    /// the size; use ``bits`` to enforce policy.
    /// An RSA public key from its modulus and public exponent (big-endian), as a PKCS#11 token
    /// reports them (`CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`).
    public init(modulus: [UInt8], exponent: [UInt8]) throws {
        do { self.key = try _RSA.Signing.PublicKey(n: modulus, e: exponent) } catch {
            throw EntraCryptoError.malformedKey("not an RSA public key (modulus of \(modulus.count) bytes, exponent of \(exponent.count) bytes)")
        }
    }

    public init(spkiDER: [UInt8]) throws {
        if let k = try? _RSA.Signing.PublicKey(unsafeDERRepresentation: spkiDER) {
            self.key = k
            return
        }
        throw EntraCryptoError.unsupportedKeyType(nonRSAKeyType(spkiDER: spkiDER) ?? "non-RSA")
    }

    public var bits: Int { key.keySizeInBits }
    public var spkiDER: [UInt8] { Array(key.derRepresentation) }

    /// JWK modulus and exponent (big-endian, no leading zeros).
    public func jwkComponents() -> (n: [UInt8], e: [UInt8]) {
        guard let p = try? key.getKeyPrimitives() else { return ([], []) }
        return (Array(p.modulus.drop(while: { $0 == 0 })), Array(p.publicExponent.drop(while: { $0 == 0 })))
    }

    public func isValidSignature<D: DataProtocol>(_ signature: [UInt8], for message: D, algorithm: JWSAlgorithm) -> Bool {
        let padding: _RSA.Signing.Padding = algorithm.usesPSS ? .PSS : .insecurePKCS1v1_5
        let sig = _RSA.Signing.RSASignature(rawRepresentation: signature)
        switch algorithm.digest {
        case .sha256: return key.isValidSignature(sig, for: SHA256.hash(data: message), padding: padding)
        case .sha384: return key.isValidSignature(sig, for: SHA384.hash(data: message), padding: padding)
        case .sha512: return key.isValidSignature(sig, for: SHA512.hash(data: message), padding: padding)
        }
    }
}

/// Names the key type of a non-RSA private key (PKCS#8 or SEC1), if it is one we recognise.
func nonRSAKeyType(privateKeyDER der: [UInt8]) -> String? {
    if (try? P256.Signing.PrivateKey(derRepresentation: der)) != nil { return "EC" }
    if (try? P384.Signing.PrivateKey(derRepresentation: der)) != nil { return "EC" }
    if (try? P521.Signing.PrivateKey(derRepresentation: der)) != nil { return "EC" }
    if let oid = algorithmOID(pkcs8: der) { return keyTypeName(oid: oid) }
    return nil
}

func nonRSAKeyType(spkiDER der: [UInt8]) -> String? {
    guard let node = try? DER.parse(der), case .constructed(let children) = node.content else { return nil }
    var it = children.makeIterator()
    guard let alg = it.next(), case .constructed(let algChildren) = alg.content,
          let oidNode = algChildren.first(where: { _ in true }), let oid = try? ASN1ObjectIdentifier(derEncoded: oidNode) else { return nil }
    return keyTypeName(oid: oid)
}

private func algorithmOID(pkcs8 der: [UInt8]) -> ASN1ObjectIdentifier? {
    guard let node = try? DER.parse(der), case .constructed(let children) = node.content else { return nil }
    var it = children.makeIterator()
    _ = it.next()  // version
    guard let alg = it.next(), case .constructed(let algChildren) = alg.content,
          let oidNode = algChildren.first(where: { _ in true }) else { return nil }
    return try? ASN1ObjectIdentifier(derEncoded: oidNode)
}

private func keyTypeName(oid: ASN1ObjectIdentifier) -> String {
    switch oid.description {
    case "1.2.840.10045.2.1": return "EC"
    case "1.3.101.112": return "Ed25519"
    case "1.3.101.113": return "Ed448"
    case "1.2.840.10040.4.1": return "DSA"
    case "1.2.840.113549.1.1.1", "1.2.840.113549.1.1.10": return "RSA"
    default: return "unknown (\(oid.description))"
    }
}
