import EntraCrypto
import Foundation
import KeyRollPrimitives
import PropertyBased
import Testing
import TestSupport

@Suite struct JWSTests {
    let cred = Fixtures.credential
    let endpoint = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"

    @Test func swiftSignedTokensVerifyInPython() throws {
        let assertionPS = try ClientAssertion.make(clientID: "app-1", tokenEndpoint: endpoint, credential: cred, now: Fixtures.now)
        let assertionRS = try ClientAssertion.make(clientID: "app-1", tokenEndpoint: endpoint, credential: cred, now: Fixtures.now,
                                                   style: .rs256, includeX5C: true)
        let proof = try ProofOfPossession.make(objectID: "obj-1", credential: cred, now: Fixtures.now)
        let dir = try Tools.temporaryDirectory()
        try Tools.write(cred.certificate.pem, to: dir + "/cert.pem")
        try Tools.write(cred.privateKey.pkcs8PEM, to: dir + "/key.pem")
        try Tools.write(cred.combinedPEM, to: dir + "/combined.pem")
        let tokens = JSONValue.object(["ps": .string(assertionPS), "rs": .string(assertionRS), "proof": .string(proof)])
        try Data(tokens.serialized()).write(to: URL(fileURLWithPath: dir + "/tokens.json"))
        let r = try Tools.python("crypto_check.py", ["verify", dir])
        for name in ["ps", "rs", "proof"] {
            #expect(r["tokens"]?[name]?["cryptography"] == true, "\(name) does not verify in Python cryptography")
            #expect(r["tokens"]?[name]?["pyjwt"] == true, "\(name) does not verify in PyJWT")
            #expect(r["tokens"]?[name]?["padded"] == false)
        }
        // Claims and headers exactly as the protocol prescribes.
        let ps = r["tokens"]?["ps"]
        #expect(ps?["header"]?["alg"] == "PS256")
        #expect(ps?["header"]?["typ"] == "JWT")
        #expect(ps?["header"]?["x5t#S256"] == .string(cred.certificate.sha256Thumbprint.base64URL))
        #expect(ps?["header"]?["x5t"] == nil)
        let now = Int64(Fixtures.now.timeIntervalSince1970)
        #expect(ps?["claims"]?["aud"] == .string(endpoint))
        #expect(ps?["claims"]?["iss"] == "app-1")
        #expect(ps?["claims"]?["sub"] == "app-1")
        #expect(ps?["claims"]?["nbf"] == .int(now))
        #expect(ps?["claims"]?["iat"] == .int(now))
        #expect(ps?["claims"]?["exp"] == .int(now + 600))
        if let jti = ps?["claims"]?["jti"]?.stringValue { #expect(UUID(uuidString: jti) != nil) } else { Issue.record("no jti") }
        let rs = r["tokens"]?["rs"]
        #expect(rs?["header"]?["alg"] == "RS256")
        #expect(rs?["header"]?["x5t"] == .string(cred.certificate.sha1Thumbprint.base64URL))
        #expect(rs?["header"]?["x5c"] == .array([.string(Base64.encode(cred.certificate.der))]))
        let pr = r["tokens"]?["proof"]
        #expect(pr?["header"]?["alg"] == "RS256")
        #expect(pr?["header"]?["kid"] == .string(cred.certificate.sha1Thumbprint.hex))
        #expect(pr?["header"]?["x5t"] == .string(cred.certificate.sha1Thumbprint.base64URL))
        #expect(pr?["claims"]?["aud"] == "00000002-0000-0000-c000-000000000000")
        #expect(pr?["claims"]?["iss"] == "obj-1")
        #expect(pr?["claims"]?["exp"] == .int(now + 600))
    }

    @Test func pythonSignedTokensVerifyInSwift() throws {
        let dir = try Tools.temporaryDirectory()
        let r = try Tools.python("crypto_check.py", ["sign", dir])
        let cert = try X509Certificate(pem: try String(contentsOfFile: dir + "/py_cert.pem", encoding: .utf8))
        let key = try cert.rsaPublicKey()
        guard case .object(let tokens)? = r["tokens"] else { Issue.record("no tokens"); return }
        #expect(tokens.count >= 3)
        if r["pyjwt"] == true { #expect(tokens.count == 5) }
        for (name, token) in tokens {
            let jws = try CompactJWS(parsing: token.stringValue!, encoding: .lenient)
            try jws.verify(with: key, allowing: [.rs256, .ps256])
            #expect(jws.claims.string("iss") == "client", "\(name)")
            #expect(jws.claims.date("exp") != nil, "\(name): exp must read as a date")
            // the wrong algorithm for this key is refused
            let other: Set<JWSAlgorithm> = jws.algorithm == .rs256 ? [.ps256] : [.rs256]
            #expect(throws: EntraCryptoError.algorithmNotAllowed(jws.algorithm.rawValue)) { try jws.verify(with: key, allowing: other) }
            // and a token signed by another key never verifies
            #expect(throws: EntraCryptoError.invalidSignature) { try jws.verify(with: cred.certificate.rsaPublicKey(), allowing: [.rs256, .ps256]) }
        }
        // padded segments are tolerated leniently but refused strictly (Graph proofs)
        let padded = tokens["aio_ps256_padded"]!.stringValue!
        #expect(padded.contains("="))
        #expect(throws: EntraCryptoError.self) { try CompactJWS(parsing: padded, encoding: .strict) }
        // float and string NumericDates read as dates
        let msal = try CompactJWS(parsing: tokens["msal_rs256"]!.stringValue!)
        if case .double = msal.claims["exp"] {} else { Issue.record("MSAL-style exp should be a float") }
        let net = try CompactJWS(parsing: tokens["msalnet_ps256_string_dates"]!.stringValue!)
        #expect(net.claims.date("nbf") != nil)
        if case .string = net.claims["nbf"] {} else { Issue.record("MSAL.NET-style nbf should be a string") }
    }

    @Test func tamperedTokensFail() throws {
        let token = try ClientAssertion.make(clientID: "a", tokenEndpoint: endpoint, credential: cred, now: Fixtures.now)
        let key = try cred.certificate.rsaPublicKey()
        var parts = token.split(separator: ".").map(String.init)
        // change a claim, keep the signature
        var claims = try JSONValue.parse(Base64URL.decodeStrict(parts[1])!).objectValue!
        claims["iss"] = "attacker"
        parts[1] = Base64URL.encode(JSONValue.object(claims).serialized())
        #expect(throws: EntraCryptoError.invalidSignature) { try CompactJWS(parsing: parts.joined(separator: ".")).verify(with: key, allowing: [.ps256]) }
        // flip a signature byte
        var sig = Base64URL.decodeStrict(token.split(separator: ".")[2])!
        sig[10] ^= 0x01
        let bad = token.split(separator: ".")[0...1].joined(separator: ".") + "." + Base64URL.encode(sig)
        #expect(throws: EntraCryptoError.invalidSignature) { try CompactJWS(parsing: bad).verify(with: key, allowing: [.ps256]) }
    }

    @Test func malformedTokensGiveTypedErrors() throws {
        let key = try cred.certificate.rsaPublicKey()
        let h = Base64URL.encode(Array(#"{"alg":"none","typ":"JWT"}"#.utf8))
        let p = Base64URL.encode(Array(#"{"iss":"x"}"#.utf8))
        #expect(throws: EntraCryptoError.unsupportedAlgorithm("none")) { try CompactJWS(parsing: h + "." + p + ".") }
        #expect(throws: EntraCryptoError.unsupportedAlgorithm("none")) { try CompactJWS(parsing: h + "." + p + ".AAAA") }
        let hs = Base64URL.encode(Array(#"{"alg":"HS256"}"#.utf8))
        #expect(throws: EntraCryptoError.unsupportedAlgorithm("HS256")) { try CompactJWS(parsing: hs + "." + p + ".AAAA") }
        let es = Base64URL.encode(Array(#"{"alg":"ES256"}"#.utf8))
        #expect(throws: EntraCryptoError.unsupportedAlgorithm("ES256")) { try CompactJWS(parsing: es + "." + p + ".AAAA") }
        let good = try ProofOfPossession.make(objectID: "o", credential: cred, now: Fixtures.now)
        #expect(throws: EntraCryptoError.malformedJWS("expected 3 dot-separated segments, found 4")) { try CompactJWS(parsing: good + ".AAAA") }
        #expect(throws: EntraCryptoError.malformedJWS("expected 3 dot-separated segments, found 2")) { try CompactJWS(parsing: "a.b") }
        #expect(throws: EntraCryptoError.malformedJWS("expected 3 dot-separated segments, found 1")) { try CompactJWS(parsing: "") }
        #expect(throws: EntraCryptoError.malformedJWS("the header segment is not valid base64url")) { try CompactJWS(parsing: "!!!." + p + ".AAAA") }
        #expect(throws: EntraCryptoError.malformedJWS("the header is not valid JSON")) { try CompactJWS(parsing: Base64URL.encode(Array("{".utf8)) + "." + p + ".AAAA") }
        #expect(throws: EntraCryptoError.malformedJWS("the header is not a JSON object")) { try CompactJWS(parsing: Base64URL.encode(Array("[1]".utf8)) + "." + p + ".AAAA") }
        let rsh = Base64URL.encode(Array(#"{"alg":"RS256"}"#.utf8))
        #expect(throws: EntraCryptoError.malformedJWS("the payload is not a JSON object")) { try CompactJWS(parsing: rsh + "." + Base64URL.encode(Array("42".utf8)) + ".AAAA") }
        #expect(throws: EntraCryptoError.malformedJWS("the header has no 'alg' string")) { try CompactJWS(parsing: Base64URL.encode(Array(#"{"alg":5}"#.utf8)) + "." + p + ".AAAA") }
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: EntraCryptoError.self) { try CompactJWS(parsing: rsh + "." + Base64URL.encode(Array(#"{"a":\#(deep)}"#.utf8)) + ".AAAA") }
        let huge = String(repeating: "A", count: 20_000)
        #expect(throws: EntraCryptoError.self) { try CompactJWS(parsing: rsh + "." + huge + ".AAAA") }
        // alg/key mismatch: a PS256 proof-style token checked by a verifier that only allows RS256
        let ps = try CompactJWS(parsing: try ClientAssertion.make(clientID: "a", tokenEndpoint: endpoint, credential: cred, now: Fixtures.now))
        #expect(throws: EntraCryptoError.algorithmNotAllowed("PS256")) { try ps.verify(with: key, allowing: [.rs256]) }
        // a header claiming RS256 over a PSS signature does not verify (alg is bound to the padding)
        var parts = (try ClientAssertion.make(clientID: "a", tokenEndpoint: endpoint, credential: cred, now: Fixtures.now)).split(separator: ".").map(String.init)
        var header = try JSONValue.parse(Base64URL.decodeStrict(parts[0])!).objectValue!
        header["alg"] = "RS256"
        parts[0] = Base64URL.encode(JSONValue.object(header).serialized())
        #expect(throws: EntraCryptoError.invalidSignature) { try CompactJWS(parsing: parts.joined(separator: ".")).verify(with: key, allowing: [.rs256, .ps256]) }
    }

    @Test func proofLifetimeIsCapped() throws {
        #expect(throws: EntraCryptoError.self) { try ProofOfPossession.make(objectID: "o", credential: cred, now: Fixtures.now, lifetime: 601) }
        #expect(throws: EntraCryptoError.self) { try ProofOfPossession.make(objectID: "o", credential: cred, now: Fixtures.now, lifetime: 0) }
        let ok = try CompactJWS(parsing: try ProofOfPossession.make(objectID: "o", credential: cred, now: Fixtures.now, lifetime: 120), encoding: .strict)
        #expect(ok.claims.date("exp")!.timeIntervalSince(ok.claims.date("nbf")!) == 120)
    }

    @Test func base64Variants() {
        let bytes: [UInt8] = [0xFB, 0xFF, 0xBF, 0x00, 0x01]
        #expect(Base64URL.encode(bytes) == "-_-_AAE")
        #expect(Base64URL.decodeStrict("-_-_AAE") == bytes)
        #expect(Base64URL.decodeStrict("-_-_AAE=") == nil)
        #expect(Base64URL.decodeStrict("+/+/AAE") == nil)
        #expect(Base64URL.decodeLenient("+/+/AAE=") == bytes)
        #expect(Base64URL.decodeLenient("-_-_\nAAE") == bytes)
        #expect(Base64URL.decodeLenient("-_-_A") == nil)
        #expect(Base64URL.decodeLenient("AA=A") == nil)
        #expect(Base64.decode("+/+/\nAAE=") == bytes)
    }

    /// Property: sign → verify holds for any claims, and any single-byte change to the token breaks it.
    @Test func signVerifyAndSingleByteMutation() async throws {
        let key = try cred.certificate.rsaPublicKey()
        let privateKey = try cred.privateKey
        await propertyCheck(count: 60, input: Gen.letterOrNumber.string(of: 0...40), Gen.int(in: 0...10_000), Gen.int(in: 1...255)) { text, position, delta in
            for alg in [JWSAlgorithm.rs256, .ps256] {
                let token = try! CompactJWS.sign(header: ["typ": "JWT"], claims: ["sub": .string(text)], algorithm: alg, key: privateKey)
                let parsed = try! CompactJWS(parsing: token)
                #expect((try? parsed.verify(with: key, allowing: [alg])) != nil)
                #expect(parsed.claims.string("sub") == text)
                var bytes = Array(token.utf8)
                let i = position % bytes.count
                bytes[i] = bytes[i] &+ UInt8(delta)
                let mutated = String(decoding: bytes, as: UTF8.self)
                let verified = (try? CompactJWS(parsing: mutated, encoding: .strict).verify(with: key, allowing: [alg])) != nil
                #expect(!verified, "mutation at \(i) of \(alg) still verified")
            }
        }
    }
}
