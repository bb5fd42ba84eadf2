import EntraCrypto
import Foundation
import KeyRollPrimitives
import Testing
import TestSupport

@Suite struct CertificateTests {
    let cred = Fixtures.credential

    @Test func opensslParsesCertificateAndAgreesOnThumbprints() throws {
        let dir = try Tools.temporaryDirectory()
        try Tools.write(cred.certificate.pem, to: dir + "/cert.pem")
        let text = try Tools.run(["openssl", "x509", "-in", dir + "/cert.pem", "-noout", "-text"])
        #expect(text.status == 0, "openssl could not parse the certificate: \(text.stderr)")
        #expect(text.stdout.contains("Version: 3"))
        #expect(text.stdout.contains("sha256WithRSAEncryption"))
        #expect(text.stdout.contains("CA:FALSE"))
        #expect(text.stdout.contains("Digital Signature"))
        #expect(text.stdout.contains("X509v3 Subject Key Identifier"))
        #expect(text.stdout.contains("CN = keyroll-test") || text.stdout.contains("CN=keyroll-test"))
        #expect(text.stdout.contains("Public-Key: (2048 bit)"))
        for (flag, ours) in [("-sha1", cred.certificate.sha1Thumbprint.hex), ("-sha256", cred.certificate.sha256Thumbprint.hex)] {
            let fp = try Tools.run(["openssl", "x509", "-in", dir + "/cert.pem", "-noout", "-fingerprint", flag])
            let theirs = fp.stdout.split(separator: "=", maxSplits: 1).last.map { $0.replacingOccurrences(of: ":", with: "").trimmingCharacters(in: .whitespacesAndNewlines) }
            #expect(theirs == ours)
        }
        let verify = try Tools.run(["openssl", "verify", "-attime", String(Int(Fixtures.now.timeIntervalSince1970)), "-CAfile", dir + "/cert.pem", dir + "/cert.pem"])
        #expect(verify.stdout.contains("OK"))
    }

    @Test func pythonCryptographyAgreesOnEverything() throws {
        let dir = try Tools.temporaryDirectory()
        try Tools.write(cred.certificate.pem, to: dir + "/cert.pem")
        try Tools.write(cred.privateKey.pkcs8PEM, to: dir + "/key.pem")
        try Tools.write(cred.combinedPEM, to: dir + "/combined.pem")
        let r = try Tools.python("crypto_check.py", ["verify", dir])
        #expect(r["sha1"] == .string(cred.certificate.sha1Thumbprint.hex))
        #expect(r["sha256"] == .string(cred.certificate.sha256Thumbprint.hex))
        #expect(r["x5t"] == .string(cred.certificate.sha1Thumbprint.base64URL))
        #expect(r["x5t#S256"] == .string(cred.certificate.sha256Thumbprint.base64URL))
        #expect(r["subject"] == "CN=keyroll-test,OU=Platform,O=Contoso")
        #expect(r["not_before"] == .int(Int64(Fixtures.now.timeIntervalSince1970) - 300))
        #expect(r["not_after"] == .int(Int64(Fixtures.now.timeIntervalSince1970) + 2 * 86_400))
        #expect(r["version"] == "v3")
        #expect(r["signature_hash"] == "sha256")
        #expect(r["basic_constraints_ca"] == false)
        #expect(r["key_usage_digital_signature"] == true)
        #expect(r["key_usage_key_cert_sign"] == false)
        #expect(r["ski_matches_key"] == true)
        #expect(r["self_signature_ok"] == true)
        #expect(r["key.pem_matches_cert"] == true)
        #expect(r["combined.pem_matches_cert"] == true)
        #expect(r["combined.pem_has_cert"] == true)
        if case .int(let bits)? = r["serial_bits"] { #expect(bits > 64) } else { Issue.record("no serial") }
    }

    @Test func customKeyIdentifierIsBase64OfSHA1() {
        let t = cred.certificate.sha1Thumbprint
        #expect(Base64.decode(t.base64) == t.bytes)
        #expect(t.bytes.count == 20)
        #expect(Thumbprint(hex: t.hex.lowercased(), algorithm: .sha1) == t)
        #expect(Thumbprint(hex: "XYZ", algorithm: .sha1) == nil)
    }

    @Test func pemRoundTripsEveryForm() throws {
        let certBack = try X509Certificate(pem: cred.certificate.pem)
        #expect(certBack.der == cred.certificate.der)
        #expect(try X509Certificate(der: cred.certificate.der).pem == cred.certificate.pem)
        let keyBack = try RSAPrivateKey(pem: cred.privateKey.pkcs8PEM)
        #expect(try keyBack.pkcs8DER == cred.privateKey.pkcs8DER)
        #expect(try RSAPrivateKey(der: cred.privateKey.pkcs8DER).pkcs8PEM == cred.privateKey.pkcs8PEM)
        let combined = try SigningCredential(combinedPEM: cred.combinedPEM)
        #expect(combined.certificate == cred.certificate)
        // cert first, key second is also accepted
        let reversed = try SigningCredential(combinedPEM: cred.certificate.pem + cred.privateKey.pkcs8PEM)
        #expect(reversed.certificate == cred.certificate)
    }

    @Test func readsOpenSSLKeysInPKCS1AndEncryptedPKCS8() throws {
        let dir = try Tools.temporaryDirectory()
        try Tools.write(cred.privateKey.pkcs8PEM, to: dir + "/k8.pem")
        try Tools.run(["openssl", "rsa", "-in", dir + "/k8.pem", "-traditional", "-out", dir + "/k1.pem"])
        let pkcs1 = try String(contentsOfFile: dir + "/k1.pem", encoding: .utf8)
        #expect(pkcs1.contains("BEGIN RSA PRIVATE KEY"))
        #expect(try RSAPrivateKey(pem: pkcs1).pkcs8DER == cred.privateKey.pkcs8DER)
        try Tools.run(["openssl", "pkcs8", "-topk8", "-in", dir + "/k8.pem", "-v2", "aes-256-cbc", "-passout", "pass:s3cret", "-out", dir + "/enc.pem"])
        let enc = try String(contentsOfFile: dir + "/enc.pem", encoding: .utf8)
        #expect(try RSAPrivateKey(pem: enc, passphrase: "s3cret").pkcs8DER == cred.privateKey.pkcs8DER)
        #expect(throws: EntraCryptoError.self) { try RSAPrivateKey(pem: enc, passphrase: "wrong") }
        #expect(throws: EntraCryptoError.malformedKey("the key is encrypted; supply its passphrase")) { try RSAPrivateKey(pem: enc) }
    }

    @Test func pkcs12RoundTripAndOpenSSLInterop() throws {
        let dir = try Tools.temporaryDirectory()
        let p12 = try cred.pkcs12(passphrase: "pw")
        try Data(p12).write(to: URL(fileURLWithPath: dir + "/a.p12"))
        let info = try Tools.run(["openssl", "pkcs12", "-in", dir + "/a.p12", "-passin", "pass:pw", "-nokeys", "-clcerts"])
        #expect(info.status == 0)
        #expect(try X509Certificate(pem: String(info.stdout[info.stdout.range(of: "-----BEGIN")!.lowerBound...])).der == cred.certificate.der)
        // A .pfx made by openssl reads back.
        try Tools.write(cred.privateKey.pkcs8PEM, to: dir + "/k.pem")
        try Tools.write(cred.certificate.pem, to: dir + "/c.pem")
        let made = try Tools.run(["openssl", "pkcs12", "-export", "-inkey", dir + "/k.pem", "-in", dir + "/c.pem", "-passout", "pass:pw", "-out", dir + "/b.pfx"])
        #expect(made.status == 0)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/b.pfx")))
        #expect(try SigningCredential(pkcs12: bytes, passphrase: "pw").certificate == cred.certificate)
        #expect(throws: EntraCryptoError.self) { try SigningCredential(pkcs12: bytes, passphrase: "nope") }
        // the error tells how to convert instead
        do { _ = try SigningCredential(pkcs12: [1, 2, 3], passphrase: "x") } catch {
            #expect(String(describing: error).contains("openssl pkcs12"))
        }
    }

    @Test(arguments: [RSAKeySize.bits3072])
    func generatesLargerKeys(size: RSAKeySize) throws {
        let key = try RSAPrivateKey.generate(size: size)
        #expect(key.bits == size.rawValue)
    }

    @Test func keySizePolicy() throws {
        #expect(throws: EntraCryptoError.keyTooSmall(bits: 1024)) { try RSAKeySize(bits: 1024) }
        #expect(throws: EntraCryptoError.unsupportedKeySize(bits: 2500)) { try RSAKeySize(bits: 2500) }
        #expect(try RSAKeySize(bits: 4096) == .bits4096)
    }

    @Test func certificateValidityWindow() throws {
        let c = cred.certificate
        #expect(c.isValid(at: Fixtures.now))
        #expect(!c.isValid(at: Fixtures.now.addingTimeInterval(3 * 86_400)))
        #expect(!c.isValid(at: Fixtures.now.addingTimeInterval(-3600)))
        #expect(throws: EntraCryptoError.self) {
            try CertificateIssuer.selfSigned(key: cred.privateKey, subject: .init(commonName: "x"), notBefore: Fixtures.now, notAfter: Fixtures.now)
        }
    }

    @Test func mismatchedKeyAndCertificateAreRefused() {
        #expect(throws: EntraCryptoError.self) {
            try SigningCredential(privateKey: Fixtures.otherCredential.privateKey, certificate: cred.certificate)
        }
    }

    @Test func tlsProfilesSatisfyOpenSSLVerify() throws {
        let caKey = try cred.privateKey
        let ca = try CertificateIssuer.selfSigned(key: caKey, subject: .init(commonName: "KeyRoll Emulator CA"),
                                                  notBefore: Fixtures.now, notAfter: Fixtures.now.addingTimeInterval(86_400), profile: .certificateAuthority)
        let leafKey = try Fixtures.otherCredential.privateKey
        let leaf = try CertificateIssuer.issue(publicKey: leafKey.publicKey, subject: .init(commonName: "localhost"),
                                               notBefore: Fixtures.now, notAfter: Fixtures.now.addingTimeInterval(86_400),
                                               profile: .tlsServer(dnsNames: ["localhost"], ipAddresses: [[127, 0, 0, 1]]),
                                               issuerKey: caKey, issuer: ca)
        let dir = try Tools.temporaryDirectory()
        try Tools.write(ca.pem, to: dir + "/ca.pem")
        try Tools.write(leaf.pem, to: dir + "/leaf.pem")
        let r = try Tools.run(["openssl", "verify", "-attime", String(Int(Fixtures.now.timeIntervalSince1970) + 60), "-x509_strict",
                               "-purpose", "sslserver", "-CAfile", dir + "/ca.pem", dir + "/leaf.pem"])
        #expect(r.stdout.contains("OK"), "\(r.stdout) \(r.stderr)")
        let text = try Tools.run(["openssl", "x509", "-in", dir + "/leaf.pem", "-noout", "-text"]).stdout
        #expect(text.contains("IP Address:127.0.0.1"))
        #expect(text.contains("DNS:localhost"))
        #expect(text.contains("TLS Web Server Authentication"))
        #expect(text.contains("Authority Key Identifier"))
    }
}
