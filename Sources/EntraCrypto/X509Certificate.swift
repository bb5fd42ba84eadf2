import _CryptoExtras
import Foundation
import SwiftASN1
import X509

/// A parsed X.509 certificate together with the identifiers Entra uses for it.
public struct X509Certificate: Sendable, Hashable {
    /// The exact DER bytes: every thumbprint and Graph's `key` field derive from these.
    public let der: [UInt8]
    public let certificate: Certificate

    /// Parses DER. A certificate whose RSA key is under 2048 bits is refused with
    /// ``EntraCryptoError/keyTooSmall(bits:)`` (use ``inspectRSAKeyBits(der:)`` to read its size anyway).
    public init(der: [UInt8]) throws {
        do { self.certificate = try Certificate(derEncoded: der) } catch {
            if let bits = Self.inspectRSAKeyBits(der: der), bits < 2048 { throw EntraCryptoError.keyTooSmall(bits: bits) }
            throw EntraCryptoError.malformedCertificate(Self.reason(for: error, der: der))
        }
        self.der = der
    }

    public init(certificate: Certificate) throws {
        var ser = DER.Serializer()
        try ser.serialize(certificate)
        self.der = ser.serializedBytes
        self.certificate = certificate
    }

    /// Reads a single `BEGIN CERTIFICATE` PEM block.
    public init(pem: String) throws {
        let block = try PEMBlock.single(in: pem, accepting: ["CERTIFICATE"])
        try self.init(der: block.der)
    }

    /// `BEGIN CERTIFICATE` PEM, with a trailing newline.
    public var pem: String { PEMBlock(label: "CERTIFICATE", der: der).pem }
    public var sha1Thumbprint: Thumbprint { .sha1(of: der) }
    public var sha256Thumbprint: Thumbprint { .sha256(of: der) }
    public var notBefore: Date { certificate.notValidBefore }
    public var notAfter: Date { certificate.notValidAfter }
    /// RFC 4514 form, e.g. `CN=app-1,O=Contoso`.
    public var subject: String { certificate.subject.description }

    /// True when `date` lies within NotBefore…NotAfter (inclusive).
    public func isValid(at date: Date) -> Bool { notBefore <= date && date <= notAfter }

    /// The certificate's RSA public key, whatever its size (check ``RSAPublicKey/bits``).
    /// Throws ``EntraCryptoError/unsupportedKeyType(_:)`` for EC and other keys.
    public func rsaPublicKey() throws -> RSAPublicKey {
        guard let spki = Self.subjectPublicKeyInfo(der: der) else { throw EntraCryptoError.malformedCertificate("no SubjectPublicKeyInfo") }
        return try RSAPublicKey(spkiDER: spki)
    }

    /// The RSA modulus size of a certificate's key, read without validating anything else; nil when
    /// the DER is not a certificate with an RSA key. Lets a verifier report *why* a weak certificate
    /// is refused (Entra: AADSTS50032).
    public static func inspectRSAKeyBits(der: [UInt8]) -> Int? {
        guard let spki = subjectPublicKeyInfo(der: der) else { return nil }
        return (try? RSAPublicKey(spkiDER: spki))?.bits
    }

    /// The encoded SubjectPublicKeyInfo of a certificate: the 7th field of TBSCertificate (6th when
    /// the optional explicit version is absent).
    static func subjectPublicKeyInfo(der: [UInt8]) -> [UInt8]? {
        guard let root = try? DER.parse(der), case .constructed(let top) = root.content,
              let tbs = top.first(where: { _ in true }), case .constructed(let fields) = tbs.content else { return nil }
        var list = Array(fields)
        if let first = list.first, first.identifier.tagClass == .contextSpecific { list.removeFirst() }
        guard list.count > 5 else { return nil }
        return Array(list[5].encodedBytes)
    }

    /// Best-effort explanation of why swift-certificates refused `der`.
    private static func reason(for error: Error, der: [UInt8]) -> String {
        if der.isEmpty { return "empty input" }
        if (try? DER.parse(der)) == nil { return "not valid DER" }
        return "not an X.509 v3 certificate this library can read (\(String(describing: error).prefix(120)))"
    }
}

/// What a new certificate is for; each profile fixes the extensions Entra, OpenSSL and TLS stacks expect.
public enum CertificateProfile: Sendable {
    /// A self-signed client credential for Entra: CA:FALSE, keyUsage digitalSignature, SKI.
    case clientCredential
    /// A self-signed root for a local TLS trust chain: CA:TRUE (critical), keyCertSign + cRLSign, SKI.
    case certificateAuthority
    /// A TLS server leaf issued by a CA: CA:FALSE, digitalSignature + keyEncipherment, EKU serverAuth,
    /// SAN with the given DNS names and IPv4/IPv6 addresses, SKI and AKI.
    case tlsServer(dnsNames: [String], ipAddresses: [[UInt8]])
}

/// The subject of a new certificate: CN and optional O / OU.
public struct CertificateSubject: Sendable, Equatable {
    public var commonName: String
    public var organization: String?
    public var organizationalUnit: String?

    public init(commonName: String, organization: String? = nil, organizationalUnit: String? = nil) {
        self.commonName = commonName
        self.organization = organization
        self.organizationalUnit = organizationalUnit
    }

    var distinguishedName: DistinguishedName {
        get throws {
            let cn = commonName, o = organization, ou = organizationalUnit
            return try DistinguishedName {
                if let o { OrganizationName(o) }
                if let ou { OrganizationalUnitName(ou) }
                CommonName(cn)
            }
        }
    }
}

/// Issues X.509 v3 certificates signed with SHA256WithRSA.
public enum CertificateIssuer {
    /// A self-signed certificate for `key`, valid from `notBefore` to `notAfter` (the caller's clock),
    /// with a random 20-byte serial.
    public static func selfSigned(key: any RSASigner, subject: CertificateSubject, notBefore: Date, notAfter: Date,
                                  profile: CertificateProfile = .clientCredential) throws -> X509Certificate {
        try issue(publicKey: key.publicKey, subject: subject, notBefore: notBefore, notAfter: notAfter,
                  profile: profile, issuerKey: key, issuer: nil)
    }

    /// A certificate for `publicKey` signed by `issuerKey`, whose certificate is `issuer`.
    public static func issue(publicKey: RSAPublicKey, subject: CertificateSubject, notBefore: Date, notAfter: Date,
                             profile: CertificateProfile, issuerKey: any RSASigner, issuer: X509Certificate?) throws -> X509Certificate {
        guard notBefore < notAfter else { throw EntraCryptoError.invalidParameter("notBefore must be earlier than notAfter") }
        guard !subject.commonName.isEmpty else { throw EntraCryptoError.invalidParameter("the subject common name is empty") }
        let certPublicKey = Certificate.PublicKey(publicKey.key)
        let subjectName = try subject.distinguishedName
        let issuerName = issuer?.certificate.subject ?? subjectName
        let ski = SubjectKeyIdentifier(hash: certPublicKey)
        let issuerSKI = issuer.flatMap { try? $0.certificate.extensions.subjectKeyIdentifier }?.keyIdentifier
            ?? SubjectKeyIdentifier(hash: Certificate.PublicKey(issuerKey.publicKey.key)).keyIdentifier
        let extensions: Certificate.Extensions
        switch profile {
        case .clientCredential:
            extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                ski
            }
        case .certificateAuthority:
            extensions = try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                ski
            }
        case .tlsServer(let dnsNames, let ips):
            let names = dnsNames.map { GeneralName.dnsName($0) } + ips.map { GeneralName.ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
            extensions = try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames(names)
                ski
                AuthorityKeyIdentifier(keyIdentifier: issuerSKI)
            }
        }
        let cert = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: certPublicKey,
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: issuerName, subject: subjectName,
            signatureAlgorithm: .sha256WithRSAEncryption, extensions: extensions,
            issuerPrivateKey: (issuerKey as? RSAPrivateKey).map { Certificate.PrivateKey($0.key) } ?? Certificate.PrivateKey(CertificateSigningKey(issuerKey)))
        return try X509Certificate(certificate: cert)
    }
}
