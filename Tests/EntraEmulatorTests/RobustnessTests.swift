import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

@Suite struct RobustnessTests {
    /// Form bodies decode as clients encode them; a broken escape is kept, never a crash.
    @Test func formBodiesDecodeLikeTheWebDoes() {
        let pairs = FormEncoding.decode("a=1+2&b=%41%2b%2F&c&d=&e=%&f=%4&g=%zz&h=caf%C3%A9&=x")
        #expect(pairs.map(\.name) == ["a", "b", "c", "d", "e", "f", "g", "h", ""])
        #expect(pairs.map(\.value) == ["1 2", "A+/", "", "", "%", "%4", "%zz", "café", "x"])
        let assertion = "eyJhbGciOiJQUzI1NiJ9.e30.c2ln+/="
        #expect(FormEncoding.decode(FormEncoding.encode([("client_assertion", assertion)])).first?.value == assertion)
    }

    @Test func stateIsIdenticalAfterRestart() async throws {
        let dir = try Tools.temporaryDirectory()
        let path = dir + "/directory.sqlite"
        let clock = ManualClock(EmulatorRig.start)
        var snapshot: (apps: String, jwks: String, token: String, appId: String)
        do {
            let emulator = try EntraEmulator(store: try DirectoryStore(path: path), clock: clock)
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            let transport = InProcessTransport(emulator: emulator)
            let endpoints = EntraEndpoints(authorityHost: transport.baseURL, tenant: reg.tenantID, graphBaseURL: transport.baseURL + "/v1.0")
            let tokens = TokenProvider(endpoints: endpoints, clientID: reg.appId, transport: transport, clock: clock)
            let graph = GraphClient(endpoints: endpoints, tokens: tokens, auth: .certificate(cred), transport: transport, clock: clock)
            for i in 0..<5 { _ = try await graph.createApplication(displayName: "persist-\(i)", tags: ["t\(i)"]) }
            let next = try SigningCredential.generate(subject: .init(commonName: "n"), notBefore: clock.now(), notAfter: clock.now().addingTimeInterval(86_400))
            _ = try await graph.addKey(objectID: reg.objectID, certificate: next.certificate, prover: cred)
            let token = try await tokens.token(credential: .certificate(cred)).value
            let apps = await emulator.handle(EmulatorRequest(method: "GET", target: "/v1.0/applications?$select=id,appId,displayName,tags,keyCredentials",
                                                             headers: ["authorization": "Bearer \(token)"], baseURL: transport.baseURL))
            let jwks = await emulator.handle(EmulatorRequest(method: "GET", target: "/\(reg.tenantID)/discovery/v2.0/keys", baseURL: transport.baseURL))
            snapshot = (String(decoding: apps.body, as: UTF8.self), String(decoding: jwks.body, as: UTF8.self), token, reg.appId)
        }
        // a new emulator process on the same file
        let reopened = try EntraEmulator(store: try DirectoryStore(path: path), clock: clock)
        let apps = await reopened.handle(EmulatorRequest(method: "GET", target: "/v1.0/applications?$select=id,appId,displayName,tags,keyCredentials",
                                                         headers: ["authorization": "Bearer \(snapshot.token)"], baseURL: "https://login.emulator.test"))
        #expect(apps.status == 200, "a token minted before the restart still validates")
        #expect(String(decoding: apps.body, as: UTF8.self) == snapshot.apps)
        let jwks = await reopened.handle(EmulatorRequest(method: "GET", target: "/\(EntraEmulator.devTenantID)/discovery/v2.0/keys", baseURL: "https://login.emulator.test"))
        #expect(String(decoding: jwks.body, as: UTF8.self) == snapshot.jwks)
        #expect(try reopened.store.integrityCheck() == "ok")
        #expect(try reopened.store.signIns(appId: snapshot.appId).count == 1)
    }

    @Test func concurrentWritesNeverCorruptTheStore() async throws {
        let rig = try EmulatorRig()
        let admin = try rig.credential("admin", days: 30)
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "admin", roles: [.applicationReadWriteAll], certificates: [admin.certificate])
        let token = try await rig.token(clientID: reg.appId, credential: admin)
        let target = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "target")
        let certs = try (0..<20).map { _ in try rig.credential("c", days: 30).certificate }
        await withTaskGroup(of: Void.self) { g in
            for i in 0..<100 {
                g.addTask {
                    switch i % 4 {
                    case 0: _ = await rig.graph("POST", "/v1.0/applications", token: token, json: ["displayName": .string("c-\(i)")])
                    case 1: _ = await rig.graph("PATCH", "/v1.0/applications/\(target.objectID)", token: token, json: ["keyCredentials": [
                        .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(certs[i % 20].der))])]])
                    case 2: _ = await rig.graph("GET", "/v1.0/applications?$top=5", token: token)
                    default: _ = await rig.graph("DELETE", "/v1.0/applications/\(UUID().uuidString)", token: token)
                    }
                }
            }
        }
        #expect(try rig.emulator.store.integrityCheck() == "ok")
        let counts = try rig.emulator.store.counts()
        #expect(counts["application"] == 2 + 25)
        #expect(try rig.emulator.keyCredentials(appId: target.appId).count == 1, "each PATCH replaced the list atomically")
    }

    /// Thousands of mutated requests: every answer is well formed in its service's error shape,
    /// nothing crashes, and the emulator still serves correctly afterwards.
    @Test func fuzzedRequestsGetWellFormedAnswers() async throws {
        let rig = try EmulatorRig()
        let cred = try rig.credential("fuzz")
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "fuzz", roles: [.applicationReadWriteAll], certificates: [cred.certificate])
        let token = try await rig.token(clientID: reg.appId, credential: cred)
        let assertion = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: rig.tokenEndpoint, credential: cred, now: rig.clock.now())
        let addKey = try rig.addKeyBody(cred.certificate, signer: cred, objectID: reg.objectID).serialized()
        let form = Array(FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", reg.appId), ("scope", "https://graph.microsoft.com/.default"),
                                               ("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", assertion)]).utf8)
        let seeds: [(String, String, [UInt8])] = [
            ("POST", "/\(rig.tenant.id)/oauth2/v2.0/token", form),
            ("POST", "/v1.0/applications/\(reg.objectID)/addKey", addKey),
            ("PATCH", "/v1.0/applications/\(reg.objectID)", Array(#"{"displayName":"x","keyCredentials":[]}"#.utf8)),
            ("POST", "/v1.0/applications", Array(#"{"displayName":"fuzzed","tags":["a"]}"#.utf8)),
            ("GET", "/v1.0/applications?$filter=startswith(displayName,'f')&$top=3&$select=id", []),
            ("POST", "/v1.0/servicePrincipals", Array(#"{"appId":"\#(reg.appId)"}"#.utf8)),
            ("GET", "/\(rig.tenant.id)/v2.0/.well-known/openid-configuration", []),
        ]
        var rng = SystemRandomNumberGenerator()
        let methods = ["GET", "POST", "PATCH", "DELETE", "PUT", "OPTIONS", "HEAD", "TRACE"]
        var statuses: [Int: Int] = [:]
        for i in 0..<2000 {
            var (method, path, body) = seeds[i % seeds.count]
            switch Int.random(in: 0..<10, using: &rng) {
            case 0: method = methods.randomElement(using: &rng)!
            case 1: path += String(repeating: "/x", count: Int.random(in: 1...3, using: &rng))
            case 2: path = String(path.shuffled(using: &rng))
            case 3: body = Array(String(repeating: "[", count: 5000).utf8)
            case 4: body = (0..<Int.random(in: 0...2000, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 5: body = Array(repeating: UInt8(ascii: "a"), count: 5 * 1024 * 1024)
            default:
                for _ in 0..<Int.random(in: 1...8, using: &rng) where !body.isEmpty {
                    body[Int.random(in: 0..<body.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let headers = i % 3 == 0 ? ["authorization": "Bearer \(token)"] : (i % 3 == 1 ? ["authorization": "Bearer " + String(token.shuffled())] : [:])
            let r = await rig.request(method, path, headers: headers, body: body)
            statuses[r.status, default: 0] += 1
            #expect((200...599).contains(r.status), "status \(r.status) for \(method) \(path)")
            if r.status >= 400 {
                let j = r.json
                if path.contains("/oauth2/") && r.status != 404 {
                    #expect(j?["error"]?.stringValue != nil && j?["error_codes"] != nil, "token error shape for \(method) \(path): \(String(decoding: r.body.prefix(200), as: UTF8.self))")
                } else if path.hasPrefix("/v1.0") {
                    #expect(j?["error"]?["code"]?.stringValue != nil && j?["error"]?["message"]?.stringValue != nil, "graph error shape for \(method) \(path)")
                } else {
                    #expect(j != nil, "JSON error body for \(method) \(path)")
                }
            }
        }
        #expect(statuses.keys.contains { $0 >= 400 } && statuses.keys.contains { $0 < 300 })
        #expect(try rig.emulator.store.integrityCheck() == "ok")
        // still serves correctly (the fuzzer may have deleted or re-keyed its own app: valid requests)
        let fresh = try rig.credential("after")
        let after = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "after", roles: [.applicationReadAll], certificates: [fresh.certificate])
        let t2 = try await rig.token(clientID: after.appId, credential: fresh)
        #expect(await rig.graph("GET", "/v1.0/applications/\(after.objectID)", token: t2).status == 200)
    }

    @Test func fuzzOverHTTPKeepsTheServerUp() async throws {
        let server = try await ServedEmulator.start(https: false)
        let transport = try AsyncHTTPTransport()
        var rng = SystemRandomNumberGenerator()
        for i in 0..<300 {
            let path = ["/v1.0/applications", "/\(server.provisioner.tenantID)/oauth2/v2.0/token", "/_emulator/clock", "/nope", "/v1.0/%ZZ", "/v1.0/applications('x"][i % 6]
            let body = (0..<Int.random(in: 0...512, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let r = try await transport.send(HTTPRequestMessage(method: ["GET", "POST", "PATCH"][i % 3], url: server.baseURL + path,
                                                                headers: [("Content-Type", i % 2 == 0 ? "application/json" : "application/x-www-form-urlencoded")], body: body), timeout: 10)
            #expect((200...599).contains(r.status))
        }
        let health = try await transport.send(HTTPRequestMessage(method: "GET", url: server.baseURL + "/healthz"), timeout: 5)
        #expect(health.status == 200)
        try await transport.shutdown()
        await server.stop()
    }
}

@Suite struct DateRoundTripTests {
    /// A key registered at a fractional instant is usable at that same instant (regression: dates
    /// stored through the 1970 epoch came back up to one ulp later, failing about half the time).
    @Test func keysAreActiveAtTheInstantTheyWereAdded() async throws {
        let clock = ManualClock(Date(timeIntervalSinceReferenceDate: 786_000_000))
        let emulator = try EntraEmulator(clock: clock)
        let tenant = try emulator.createTenant(domain: "t.example")
        let cred = try SigningCredential.generate(subject: .init(commonName: "rt"), notBefore: clock.now().addingTimeInterval(-86_400),
                                                  notAfter: clock.now().addingTimeInterval(86_400 * 30))
        var failures = 0
        for i in 0..<200 {
            clock.set(Date(timeIntervalSinceReferenceDate: 786_000_000 + Double(i) * 0.123_456_789 + 0.000_000_1 * Double(i * i)))
            let reg = try emulator.register(tenantID: tenant.id, displayName: "a\(i)", certificates: [cred.certificate])
            if try emulator.keyCredentials(appId: reg.appId).first?.activeAt != clock.now() { failures += 1 }
        }
        #expect(failures == 0, "\(failures) of 200 keys came back with a different activation instant")
    }
}
