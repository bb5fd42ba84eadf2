import EntraCrypto
import Foundation
import Testing
import TestSupport

/// Bad inputs give typed errors, never a crash.
@Suite struct BadInputTests {
    let cred = Fixtures.credential

    @Test func truncatedPEM() throws {
        let pem = cred.certificate.pem
        let truncated = String(pem.prefix(pem.count / 2))
        #expect(throws: EntraCryptoError.self) { try X509Certificate(pem: truncated) }
        let keyPEM = try cred.privateKey.pkcs8PEM
        #expect(throws: EntraCryptoError.self) { try RSAPrivateKey(pem: String(keyPEM.prefix(200))) }
        #expect(throws: EntraCryptoError.malformedPEM("no '-----BEGIN' line found")) { try X509Certificate(pem: "hello") }
    }

    @Test func wrongPEMLabel() {
        #expect(throws: EntraCryptoError.unexpectedPEMLabel(found: "PRIVATE KEY", expected: ["CERTIFICATE"])) {
            try X509Certificate(pem: cred.privateKey.pkcs8PEM)
        }
        #expect(throws: EntraCryptoError.self) { try RSAPrivateKey(pem: cred.certificate.pem) }
    }

    @Test func ecKeysAreRefused() throws {
        let dir = try Tools.temporaryDirectory()
        try Tools.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", dir + "/ec.pem"])
        try Tools.run(["openssl", "pkcs8", "-topk8", "-nocrypt", "-in", dir + "/ec.pem", "-out", dir + "/ec8.pem"])
        try Tools.run(["openssl", "req", "-x509", "-key", dir + "/ec.pem", "-subj", "/CN=ec", "-days", "1", "-out", dir + "/ecc.pem"])
        let sec1 = try String(contentsOfFile: dir + "/ec.pem", encoding: .utf8)
        let pkcs8 = try String(contentsOfFile: dir + "/ec8.pem", encoding: .utf8)
        #expect(throws: EntraCryptoError.unsupportedKeyType("EC")) { try RSAPrivateKey(pem: sec1) }
        #expect(throws: EntraCryptoError.unsupportedKeyType("EC")) { try RSAPrivateKey(pem: pkcs8) }
        let ecCert = try X509Certificate(pem: try String(contentsOfFile: dir + "/ecc.pem", encoding: .utf8))
        #expect(throws: EntraCryptoError.unsupportedKeyType("EC")) { try ecCert.rsaPublicKey() }
        try Tools.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", dir + "/ed.pem"])
        #expect(throws: EntraCryptoError.unsupportedKeyType("Ed25519")) {
            try RSAPrivateKey(pem: try String(contentsOfFile: dir + "/ed.pem", encoding: .utf8))
        }
    }

    @Test func rsa1024IsRefusedEverywhere() throws {
        let dir = try Tools.temporaryDirectory()
        try Tools.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024", "-out", dir + "/k.pem"])
        try Tools.run(["openssl", "req", "-x509", "-key", dir + "/k.pem", "-subj", "/CN=weak", "-days", "1", "-out", dir + "/c.pem"])
        let keyPEM = try String(contentsOfFile: dir + "/k.pem", encoding: .utf8)
        #expect(throws: EntraCryptoError.keyTooSmall(bits: 1024)) { try RSAPrivateKey(pem: keyPEM) }
        let certPEM = try String(contentsOfFile: dir + "/c.pem", encoding: .utf8)
        #expect(throws: EntraCryptoError.keyTooSmall(bits: 1024)) { try X509Certificate(pem: certPEM) }
        let der = try PEMBlock.all(in: certPEM)[0].der
        #expect(X509Certificate.inspectRSAKeyBits(der: der) == 1024)
        try Tools.run(["openssl", "pkey", "-in", dir + "/k.pem", "-pubout", "-out", dir + "/pub.pem"])
        let pub = try RSAPublicKey(spkiDER: try PEMBlock.all(in: try String(contentsOfFile: dir + "/pub.pem", encoding: .utf8))[0].der)
        #expect(pub.bits == 1024)
        // a JWS "signed" by a weak key is refused before the signature is even checked
        let jws = try CompactJWS(parsing: try CompactJWS.sign(header: [:], claims: ["a": 1], algorithm: .rs256, key: cred.privateKey))
        #expect(throws: EntraCryptoError.keyTooSmall(bits: 1024)) { try jws.verify(with: pub, allowing: [.rs256]) }
    }

    @Test func garbageDERNeverCrashes() {
        for bytes: [UInt8] in [[], [0x30], [0x30, 0x82, 0xFF, 0xFF], Array(repeating: 0xFF, count: 300), Array(cred.certificate.der.prefix(100))] {
            #expect(throws: EntraCryptoError.self) { try X509Certificate(der: bytes) }
            #expect(throws: EntraCryptoError.self) { try RSAPrivateKey(der: bytes) }
        }
    }
}
