import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

@Suite struct TokenEndpointTests {
    func setup() async throws -> (EmulatorRig, EntraEmulator.Registration, SigningCredential) {
        let rig = try EmulatorRig()
        let cred = try rig.credential()
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "app", certificates: [cred.certificate])
        return (rig, reg, cred)
    }

    func code(_ r: EmulatorResponse) -> Int? {
        if case .array(let a)? = r.json?["error_codes"], case .int(let c)? = a.first { return Int(c) }
        return nil
    }

    @Test func issuesV1AppOnlyTokenWithTheDocumentedShape() async throws {
        let (rig, reg, cred) = try await setup()
        for style in ClientAssertion.Style.allCases {
            let a = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: rig.tokenEndpoint, credential: cred, now: rig.clock.now(), style: style)
            let r = await rig.tokenResponse(clientID: reg.appId, assertion: a, extra: [("client_info", "1")])
            #expect(r.status == 200)
            #expect(r.header("Cache-Control") == "no-store, no-cache")
            let body = try #require(r.json)
            #expect(body["token_type"] == "Bearer")
            #expect(body["expires_in"] == .int(3599))
            #expect(body["ext_expires_in"] == .int(3599))
            #expect(body["scope"] == nil)
            let at = try CompactJWS(parsing: body["access_token"]!.stringValue!, encoding: .strict)
            #expect(at.algorithm == .rs256)
            #expect(at.claims["aud"] == "https://graph.microsoft.com")
            #expect(at.claims.string("iss") == "https://sts.windows.net/\(rig.tenant.id)/")
            #expect(at.claims.string("appid") == reg.appId)
            #expect(at.claims["appidacr"] == "2")
            #expect(at.claims.string("oid") == reg.servicePrincipalID)
            #expect(at.claims.string("sub") == reg.servicePrincipalID)
            #expect(at.claims.string("tid") == rig.tenant.id)
            #expect(at.claims["idtyp"] == "app")
            #expect(at.claims["ver"] == "1.0")
            #expect(at.claims["roles"] == nil, "roles only when granted")
            // JWKS publishes the key that verifies it
            let jwks = await rig.request("GET", "/\(rig.tenant.id)/discovery/v2.0/keys")
            let x5c = try #require(jwks.json?["keys"]?.arrayValue?.first?["x5c"]?.arrayValue?.first?.stringValue)
            try at.verify(with: try X509Certificate(der: Base64.decode(x5c)!).rsaPublicKey(), allowing: [.rs256])
        }
        let log = try rig.emulator.store.signIns(appId: reg.appId)
        #expect(log.count == 2)
        #expect(log.allSatisfy { $0.result == "success" && $0.thumbprint == cred.certificate.sha1Thumbprint.hex })
    }

    @Test func rolesAppearWhenGranted() async throws {
        let (rig, reg, cred) = try await setup()
        try rig.emulator.grant([.applicationReadWriteAll], toAppId: reg.appId)
        let at = try CompactJWS(parsing: try await rig.token(clientID: reg.appId, credential: cred))
        #expect(at.claims["roles"] == .array(["Application.ReadWrite.All"]))
    }

    @Test func acceptsTheRealClientVariants() async throws {
        let (rig, reg, cred) = try await setup()
        let now = Int(rig.clock.now().timeIntervalSince1970)
        let x5t = Base64.encode(cred.certificate.sha1Thumbprint.bytes).replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        // MSAL Python: RS256, padded x5t, float exp/iat, no nbf, domain tenant in the URL but GUID aud
        let msal = try CompactJWS.sign(header: ["typ": "JWT", "x5t": .string(x5t)],
                                       claims: ["aud": .string(rig.tokenEndpoint), "iss": .string(reg.appId), "sub": .string(reg.appId),
                                                "exp": .double(Double(now) + 600.889), "iat": .double(Double(now) + 0.889), "jti": "j1"],
                                       algorithm: .rs256, key: cred.signer)
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: msal, tenantSegment: "contoso.onmicrosoft.com").status == 200)
        // the same assertion again (MSAL reuses it for 9 minutes): accepted by default
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: msal).status == 200)
        // MSAL.NET: string dates, x5c as a string
        let net = try CompactJWS.sign(header: ["typ": "JWT", "x5t#S256": .string(cred.certificate.sha256Thumbprint.base64URL),
                                               "x5c": .string(Base64.encode(cred.certificate.der))],
                                      claims: ["aud": .string(rig.tokenEndpoint), "iss": .string(reg.appId), "sub": .string(reg.appId),
                                               "nbf": .string(String(now)), "exp": .string(String(now + 600)), "jti": "j2"],
                                      algorithm: .ps256, key: cred.signer)
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: net).status == 200)
        // azure-identity aio: padded segments signed as padded text, 30-minute lifetime
        let header = Data(JSONValue.object(["typ": "JWT", "alg": "PS256", "x5t#S256": .string(cred.certificate.sha256Thumbprint.base64URL)]).serialized()).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        let payload = Data(JSONValue.object(["aud": .string(rig.tokenEndpoint), "iss": .string(reg.appId), "sub": .string(reg.appId), "jti": "j3",
                                             "nbf": .int(Int64(now)), "exp": .int(Int64(now + 1800))]).serialized()).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        let input = header + "." + payload
        let sig = try cred.privateKey.sign(Array(input.utf8), algorithm: .ps256)
        let padded = input + "." + Data(sig).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        #expect(padded.contains("="))
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: padded).status == 200)
        // issuer-form aud and the v1 token endpoint as aud
        for aud in ["\(rig.base)/\(rig.tenant.id)/v2.0", "\(rig.base)/contoso.onmicrosoft.com/oauth2/token"] {
            let t = try CompactJWS.sign(header: ["x5t": .string(cred.certificate.sha1Thumbprint.base64URL)],
                                        claims: ["aud": .string(aud), "iss": .string(reg.appId), "sub": .string(reg.appId), "exp": .int(Int64(now + 600))],
                                        algorithm: .rs256, key: cred.signer)
            #expect(await rig.tokenResponse(clientID: reg.appId, assertion: t).status == 200, "aud \(aud)")
        }
    }

    @Test func errorsHaveEntrasEnvelopeAndCodes() async throws {
        let (rig, reg, cred) = try await setup()
        let now = rig.clock.now()
        let stranger = try rig.credential("stranger")
        func assertion(_ c: SigningCredential = cred, aud: String? = nil, iss: String? = nil, at: Date? = nil, lifetime: TimeInterval = 600) throws -> String {
            try ClientAssertion.make(clientID: iss ?? reg.appId, tokenEndpoint: aud ?? rig.tokenEndpoint, credential: c, now: at ?? now, lifetime: lifetime)
        }
        let cases: [(String, EmulatorResponse, Int, Int, String)] = [
            ("unregistered cert", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(stranger)), 401, 700027, "invalid_client"),
            ("expired assertion", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(at: now.addingTimeInterval(-3600))), 401, 700024, "invalid_client"),
            ("wrong audience", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(aud: "https://login.microsoftonline.com/x/oauth2/v2.0/token")), 401, 700023, "invalid_client"),
            ("unknown app", await rig.tokenResponse(clientID: UUID().uuidString, assertion: try assertion()), 400, 700016, "unauthorized_client"),
            ("no credential", await rig.tokenResponse(clientID: reg.appId), 401, 7000218, "invalid_client"),
            ("garbage JWT", await rig.tokenResponse(clientID: reg.appId, assertion: "not.a.jwt"), 401, 50027, "invalid_client"),
            ("user scope", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(), scope: "User.Read.All"), 400, 1002012, "invalid_scope"),
            ("unknown tenant", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(), tenantSegment: "nope.onmicrosoft.com"), 400, 90002, "invalid_request"),
            ("iss mismatch", await rig.tokenResponse(clientID: reg.appId, assertion: try assertion(iss: UUID().uuidString)), 401, 50048, "invalid_client"),
        ]
        for (name, r, status, aadsts, error) in cases {
            #expect(r.status == status, "\(name)")
            #expect(code(r) == aadsts, "\(name): \(String(decoding: r.body, as: UTF8.self))")
            let j = try #require(r.json)
            #expect(j["error"]?.stringValue == error, "\(name)")
            let d = j["error_description"]?.stringValue ?? ""
            #expect(d.hasPrefix("AADSTS\(aadsts): "), "\(name)")
            #expect(d.contains("\r\nTrace ID: ") && d.contains("\r\nCorrelation ID: ") && d.contains("\r\nTimestamp: "), "\(name)")
            #expect(j["timestamp"]?.stringValue?.count == 20, "\(name): yyyy-MM-dd HH:mm:ssZ")
            for k in ["trace_id", "correlation_id", "error_uri"] { #expect(j[k]?.stringValue != nil, "\(name) \(k)") }
            #expect(r.header("Content-Type")?.hasPrefix("application/json") == true)
        }
        // 700027 names the thumbprint that was not found
        #expect(cases[0].1.json?["error_description"]?.stringValue?.contains(stranger.certificate.sha256Thumbprint.hex) == true)
        // a tampered signature with a registered key → 700027 "did not match"
        var parts = try assertion().split(separator: ".").map(String.init)
        parts[2] = String(parts[2].reversed())
        let bad = await rig.tokenResponse(clientID: reg.appId, assertion: parts.joined(separator: "."))
        #expect(code(bad) == 700027)
        #expect(bad.json?["error_description"]?.stringValue?.contains("did not match") == true)
        // GET on the token endpoint
        #expect(code(await rig.request("GET", "/\(rig.tenant.id)/oauth2/v2.0/token")) == 900561)
        // every failure is in the sign-in log with its code
        let failures = try rig.emulator.store.signIns(appId: reg.appId).filter { $0.result == "failure" }
        #expect(Set(failures.compactMap(\.errorCode)).isSuperset(of: [700027, 700024, 700023, 7000218]))
    }

    @Test func propagationDelayGives700027ThenSuccess() async throws {
        var settings = EmulatorSettings.selfReading  // the app reads its own keys below
        settings.propagationDelayMin = 120
        settings.propagationDelayMax = 120
        let rig = try EmulatorRig(settings: settings)
        let boot = try rig.credential("boot")
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "app", certificates: [boot.certificate])
        let token = try await rig.token(clientID: reg.appId, credential: boot)
        let next = try rig.credential("next", days: 365)
        let r = await rig.graph("POST", "/v1.0/applications/\(reg.objectID)/addKey", token: token,
                                json: try rig.addKeyBody(next.certificate, signer: boot, objectID: reg.objectID))
        #expect(r.status == 200)
        // Graph shows it at once …
        let app = await rig.graph("GET", "/v1.0/applications/\(reg.objectID)", token: token)
        #expect(app.json?["keyCredentials"]?.arrayValue?.count == 2)
        // … the token endpoint refuses it until the delay has passed
        let early = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: rig.tokenEndpoint, credential: next, now: rig.clock.now())
        #expect(code(await rig.tokenResponse(clientID: reg.appId, assertion: early)) == 700027)
        rig.clock.advance(by: 121)
        _ = try await rig.token(clientID: reg.appId, credential: next)
    }

    @Test func expiredCertificateGives1000502AndWeakKey50032() async throws {
        let rig = try EmulatorRig()
        let cred = try rig.credential(days: 1)
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "app", certificates: [cred.certificate])
        rig.clock.advance(by: 2 * 86_400)
        let a = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: rig.tokenEndpoint, credential: cred, now: rig.clock.now())
        #expect(code(await rig.tokenResponse(clientID: reg.appId, assertion: a)) == 1000502)
        // 1024-bit certificate registered by a privileged PATCH: refused at the token endpoint with 50032
        let dir = try Tools.temporaryDirectory()
        try await Tools.run(["openssl", "req", "-x509", "-newkey", "rsa:1024", "-nodes", "-keyout", dir + "/k.pem", "-subj", "/CN=weak", "-days", "3650", "-out", dir + "/c.pem"])
        let der = try PEMBlock.all(in: try String(contentsOfFile: dir + "/c.pem", encoding: .utf8))[0].der
        let admin = try rig.credential("admin", days: 10)
        let adminReg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "admin", roles: [.applicationReadWriteAll], certificates: [admin.certificate])
        let token = try await rig.token(clientID: adminReg.appId, credential: admin)
        let patch = await rig.graph("PATCH", "/v1.0/applications/\(reg.objectID)", token: token, json: .object([
            "keyCredentials": .array([.object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(der))])]),
        ]))
        #expect(patch.status == 204)
        // sign with the weak key through openssl, as no Swift API will
        let sha1 = Base64URL.encode(Thumbprint.sha1(of: der).bytes)
        let header = Base64URL.encode(JSONValue.object(["alg": "RS256", "x5t": .string(sha1)]).serialized())
        let payload = Base64URL.encode(JSONValue.object(["aud": .string(rig.tokenEndpoint), "iss": .string(reg.appId), "sub": .string(reg.appId),
                                                         "exp": NumericDate.value(rig.clock.now().addingTimeInterval(600))]).serialized())
        try Tools.write(header + "." + payload, to: dir + "/input")
        try await Tools.run(["openssl", "dgst", "-sha256", "-sign", dir + "/k.pem", "-out", dir + "/sig", dir + "/input"])
        let sig = Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/sig")))
        let weak = await rig.tokenResponse(clientID: reg.appId, assertion: header + "." + payload + "." + Base64URL.encode(sig))
        #expect(code(weak) == 50032)
    }

    @Test func strictReplayIsASetting() async throws {
        var settings = EmulatorSettings()
        settings.strictReplay = true
        let rig = try EmulatorRig(settings: settings)
        let cred = try rig.credential()
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "app", certificates: [cred.certificate])
        let a = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: rig.tokenEndpoint, credential: cred, now: rig.clock.now())
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: a).status == 200)
        #expect(await rig.tokenResponse(clientID: reg.appId, assertion: a).status == 401)
    }

    @Test func clientSecretWorksForTheProvisioner() async throws {
        let rig = try EmulatorRig()
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "prov", roles: [.applicationReadWriteAll], secret: "s3cr3t-value")
        #expect(await rig.tokenResponse(clientID: reg.appId, secret: "s3cr3t-value").status == 200)
        let wrong = await rig.tokenResponse(clientID: reg.appId, secret: "nope")
        #expect(code(wrong) == 7000215)
        #expect(!String(decoding: wrong.body, as: UTF8.self).contains("nope"))
    }

    @Test func discoveryDocumentsPointAtThisHost() async throws {
        let rig = try EmulatorRig()
        let d = await rig.request("GET", "/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration")
        #expect(d.status == 200)
        #expect(d.json?["token_endpoint"]?.stringValue == "\(rig.base)/\(rig.tenant.id)/oauth2/v2.0/token")
        #expect(d.json?["issuer"]?.stringValue == "\(rig.base)/\(rig.tenant.id)/v2.0")
        #expect(d.json?["authorization_endpoint"]?.stringValue != nil)
        let v1 = await rig.request("GET", "/\(rig.tenant.id)/.well-known/openid-configuration")
        #expect(v1.json?["token_endpoint"]?.stringValue == "\(rig.base)/\(rig.tenant.id)/oauth2/token")
        let inst = await rig.request("GET", "/common/discovery/instance?api-version=1.1&authorization_endpoint=https://login.emulator.test/\(rig.tenant.id)/oauth2/v2.0/authorize")
        #expect(inst.json?["tenant_discovery_endpoint"]?.stringValue == "\(rig.base)/\(rig.tenant.id)/v2.0/.well-known/openid-configuration")
        #expect(await rig.request("GET", "/nope.example/v2.0/.well-known/openid-configuration").status == 400)
    }
}
