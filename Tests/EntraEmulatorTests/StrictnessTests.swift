import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// Where the emulator used to be more lenient than Entra/Graph: each case checked from outside,
/// through the emulator's HTTP surface (in-process, or over real HTTPS for the concurrency case).
@Suite struct StrictnessTests {
    func world(_ settings: EmulatorSettings = .init()) async throws -> GraphWorld { try await GraphWorld(settings, bootDays: 30) }

    /// Graph's error envelope: code, message, innerError with date, request-id, client-request-id.
    func assertGraphEnvelope(_ r: EmulatorResponse, _ context: String) {
        let e = r.json?["error"]
        #expect(e?["code"]?.stringValue?.isEmpty == false && e?["message"]?.stringValue != nil, "\(context): \(r.status) \(String(decoding: r.body, as: UTF8.self).prefix(300))")
        let inner = e?["innerError"]
        #expect(inner?["date"]?.stringValue != nil && inner?["request-id"]?.stringValue != nil && inner?["client-request-id"]?.stringValue != nil, "\(context): no innerError")
    }

    @Test(arguments: [true, false])
    func aRoleLessAppReadsItselfOnlyWhenAllowedAndListsNothing(selfRead: Bool) async throws {
        var settings = EmulatorSettings()
        settings.allowSelfRead = selfRead
        let w = try await world(settings)
        for path in ["/v1.0/applications", "/v1.0/applications?$filter=displayName%20eq%20'app-1'", "/v1.0/applications?$filter=startswith(displayName,'a')",
                     "/v1.0/servicePrincipals", "/v1.0/servicePrincipals?$filter=appId%20eq%20'\(w.app.appId)'"] {
            let r = await w.rig.graph("GET", path, token: w.appToken)
            #expect(r.status == 403 && r.json?["error"]?["code"] == "Authorization_RequestDenied", "\(path): \(r.status)")
            assertGraphEnvelope(r, path)
        }
        // its own object: only with allowSelfRead (off by default: Entra likely refuses it)
        #expect(await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)?$select=keyCredentials", token: w.appToken).status == (selfRead ? 200 : 403), "its own object")
        #expect(await w.rig.graph("GET", "/v1.0/applications(appId='\(w.app.appId)')", token: w.appToken).status == (selfRead ? 200 : 403))
        #expect(await w.rig.graph("GET", "/v1.0/applications/\(w.admin.objectID)", token: w.appToken).status == 403, "not another app")
        #expect(await w.rig.graph("GET", "/v1.0/applications", token: w.adminToken).status == 200)
    }

    @Test func everyErrorCarriesTheEnvelopeWhateverTheInput() async throws {
        let w = try await world()
        let add = "/v1.0/applications/\(w.app.objectID)/addKey"
        let bodies: [[UInt8]] = [[], Array("[]".utf8), Array("\"x\"".utf8), Array("{".utf8), [0xFF, 0xFE, 0x00], Array("null".utf8),
                                 Array(String(repeating: "[", count: 5000).utf8), Array(#"{"keyCredential": {}}"#.utf8),
                                 Array(#"{"keyCredential": {"key": "!!!", "type": "AsymmetricX509Cert", "usage": "Verify"}, "proof": "a.b.c"}"#.utf8)]
        for (i, body) in bodies.enumerated() {
            for path in [add, "/v1.0/applications/\(w.app.objectID)/removeKey", "/v1.0/applications", "/v1.0/applications/\(w.app.objectID)"] {
                for method in ["POST", "PATCH"] {
                    let r = await w.rig.request(method, path, headers: ["authorization": "Bearer \(w.adminToken)", "content-type": "application/json"], body: body)
                    if r.status >= 400 { assertGraphEnvelope(r, "\(method) \(path) body #\(i)") }
                }
            }
        }
        for path in ["/v1.0/nope", "/v1.0/applications/\(UUID().uuidString)", "/v1.0/applications/x/y/z"] {
            let r = await w.rig.graph("DELETE", path, token: w.adminToken)
            #expect(r.status >= 400)
            assertGraphEnvelope(r, path)
        }
    }

    @Test(arguments: [
        #"{"keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": "AAAA"}, "passwordCredential": null, "proof": 42}"#,
        #"{"keyCredential": "AAAA", "passwordCredential": null, "proof": "a.b.c"}"#,
        #"{"keyCredential": [{"type": "AsymmetricX509Cert"}], "passwordCredential": null, "proof": "a.b.c"}"#,
        #"{"keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": "AAAA"}, "passwordCredential": null, "proof": "a.b.c", "extra": 1}"#,
    ])
    func aBodyOfTheWrongTypesIsABadRequestNotAnAuthenticationError(_ body: String) async throws {
        let w = try await world()
        let r = await w.rig.request("POST", "/v1.0/applications/\(w.app.objectID)/addKey",
                                    headers: ["authorization": "Bearer \(w.appToken)", "content-type": "application/json"], body: Array(body.utf8))
        #expect(r.status == 400 && r.json?["error"]?["code"] == "BadRequest", "\(r.status) \(String(decoding: r.body, as: UTF8.self).prefix(300))")
        let remove = await w.rig.request("POST", "/v1.0/applications/\(w.app.objectID)/removeKey",
                                         headers: ["authorization": "Bearer \(w.appToken)", "content-type": "application/json"],
                                         body: Array(#"{"keyId": 7, "proof": "a.b.c"}"#.utf8))
        #expect(remove.status == 400 && remove.json?["error"]?["code"] == "BadRequest")
    }

    @Test func propertyNamesComeBackInGraphsCasing() async throws {
        let w = try await world()
        let r = await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)?$select=KEYCREDENTIALS,DisplayName", token: w.adminToken)
        #expect(r.json?["@odata.context"]?.stringValue?.hasSuffix("$metadata#applications(keyCredentials,displayName)/$entity") == true, "\(r.json?["@odata.context"] ?? .null)")
        #expect(r.json?["keyCredentials"] != nil && r.json?["displayName"] == "app-1")
        let list = await w.rig.graph("GET", "/v1.0/applications?$select=ID,appid", token: w.adminToken)
        #expect(list.json?["@odata.context"]?.stringValue?.hasSuffix("$metadata#applications(id,appId)") == true)
        let unknown = await w.rig.graph("GET", "/v1.0/applications?$select=colour", token: w.adminToken)
        #expect(unknown.status == 400)
        assertGraphEnvelope(unknown, "unknown $select")
        #expect(await w.rig.graph("PATCH", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken, json: ["DisplayName": "renamed", "NOTES": "n"]).status == 204)
        let after = try #require(await w.rig.graph("GET", "/v1.0/applications/\(w.app.objectID)", token: w.adminToken).json)
        #expect(after["displayName"] == "renamed" && after["notes"] == "n" && after["DisplayName"] == nil && after["NOTES"] == nil)
    }

    @Test func servicePrincipalKeysChangeInOneTransactionWithLimitsAndThrottling() async throws {
        var s = EmulatorSettings()
        s.maxCredentialItems = 9
        let w = try await world(s)
        let spID = w.app.servicePrincipalID
        let spCred = try w.rig.credential("sp", days: 30)
        // the provisioner gives the SP its first key (a proof needs an existing valid key: use PATCH-free path via addKey on an SP with none?)
        try w.rig.emulator.setServicePrincipalKeys(spID: spID, certificates: [spCred.certificate])
        let certs = try (0..<8).map { try w.rig.credential("k\($0)", days: 30) }
        let statuses = await withTaskGroup(of: Int.self) { group in
            for c in certs {
                group.addTask {
                    let body = (try? w.rig.addKeyBody(c.certificate, signer: spCred, objectID: spID)) ?? .null
                    return await w.rig.graph("POST", "/v1.0/servicePrincipals/\(spID)/addKey", token: w.adminToken, json: body).status
                }
            }
            return await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(statuses)")
        let keys = try w.rig.emulator.servicePrincipalKeys(spID: spID)
        #expect(keys.count == 9, "no concurrent addKey lost another's key: \(keys.count)")
        let tenth = try w.rig.credential("k-over", days: 30)
        let over = await w.rig.graph("POST", "/v1.0/servicePrincipals/\(spID)/addKey", token: w.adminToken,
                                     json: try w.rig.addKeyBody(tenth.certificate, signer: spCred, objectID: spID))
        #expect(over.status == 400 && over.json?["error"]?["code"] == "Directory_ResourceSizeExceeded")
        // throttled like every write
        var t = w.rig.emulator.settings
        t.throttling.enabled = true
        t.throttling.writesPerWindow = 1
        w.rig.emulator.settings = t
        let ids = keys.map(\.keyId)
        var throttled = false
        for id in ids.prefix(3) {
            let body: JSONValue = .object(["keyId": .string(id), "proof": .string(try ProofOfPossession.make(objectID: spID, credential: spCred, now: w.rig.clock.now()))])
            if await w.rig.graph("POST", "/v1.0/servicePrincipals/\(spID)/removeKey", token: w.adminToken, json: body).status == 429 { throttled = true }
        }
        #expect(throttled)
    }

    @Test func aRepeatedTokenParameterIsRefused() async throws {
        let w = try await world()
        let a = try ClientAssertion.make(clientID: w.app.appId, tokenEndpoint: w.rig.tokenEndpoint, credential: w.boot, now: w.rig.clock.now())
        let r = await w.rig.tokenResponse(clientID: w.app.appId, assertion: a, extra: [("client_assertion", "a.b.c")])
        #expect(r.status == 400 && r.json?["error"] == "invalid_request" && r.json?["error_codes"] == .array([.int(9000411)]),
                "\(String(decoding: r.body, as: UTF8.self).prefix(300))")
    }

    @Test func parallelWritersOverHTTPSLoseAndDuplicateNothing() async throws {
        let server = try await ServedEmulator.start(https: true)
        let transport = try AsyncHTTPTransport(additionalCAPEM: server.tls!.ca.certificate.pem)
        let boot = try SigningCredential.generate(subject: .init(commonName: "boot"), notBefore: Date().addingTimeInterval(-300), notAfter: Date().addingTimeInterval(86_400))
        let app = try server.emulator.register(tenantID: server.provisioner.tenantID, displayName: "replicated", certificates: [boot.certificate])
        let endpoints = EntraEndpoints(authorityHost: server.baseURL, tenant: server.provisioner.tenantID, graphBaseURL: server.baseURL + "/v1.0")
        let graph = GraphClient(endpoints: endpoints, tokens: TokenProvider(endpoints: endpoints, clientID: app.appId, transport: transport),
                                auth: .certificate(boot), transport: transport)
        let replicas = try (0..<8).map { _ in
            try SigningCredential.generate(subject: .init(commonName: "replica"), notBefore: Date().addingTimeInterval(-300), notAfter: Date().addingTimeInterval(30 * 86_400))
        }
        let added = try await withThrowingTaskGroup(of: String.self) { group in
            for r in replicas { group.addTask { try await graph.addKey(objectID: app.objectID, certificate: r.certificate, prover: boot).keyId } }
            return try await group.reduce(into: [String]()) { $0.append($1) }
        }
        var stored = try server.emulator.keyCredentials(appId: app.appId)
        #expect(stored.count == 9 && Set(stored.map(\.keyId)).isSuperset(of: added), "\(stored.count) keys after 8 concurrent addKeys")
        #expect(Set(stored.map(\.sha1.hex)).count == 9, "no duplicates")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in added.prefix(4) { group.addTask { try await graph.removeKey(objectID: app.objectID, keyId: id, prover: boot) } }
            try await group.waitForAll()
        }
        stored = try server.emulator.keyCredentials(appId: app.appId)
        #expect(Set(stored.map(\.keyId)) == Set(added.dropFirst(4)).union(stored.filter { $0.sha1 == boot.certificate.sha1Thumbprint }.map(\.keyId)))
        #expect(stored.count == 5)
        try await transport.shutdown()
        await server.stop()
    }
}

/// A host without a system trust store (a minimal container or chroot): without a CA the transport
/// refuses at once with what to install; with one, that CA alone is trusted and requests succeed.
@Suite struct TrustStoreTests {
    @Test func withoutSystemRootsTheTransportNamesTheFixOrTrustsTheGivenCA() async throws {
        let missing = ["/nonexistent/keyroll-test/ca-certificates.crt", "/nonexistent/keyroll-test/certs"]
        do {
            _ = try AsyncHTTPTransport(systemTrustStores: missing)
            Issue.record("a transport without any trust root was made")
        } catch let e as AsyncHTTPTransport.NoTrustRoots {
            #expect(e.description.contains("ca-certificates") && e.description.contains("KEYROLL_CA_FILE"), "\(e)")
        }
        let server = try await ServedEmulator.start(https: true)
        let transport = try AsyncHTTPTransport(additionalCAPEM: server.tls!.ca.certificate.pem, systemTrustStores: missing)
        let response = try await transport.send(HTTPRequestMessage(method: "GET", url: server.baseURL + "/\(server.provisioner.tenantID)/v2.0/.well-known/openid-configuration"), timeout: 10)
        #expect(response.status == 200, "the emulator answered \(response.status) through a transport trusting its CA alone")
        try await transport.shutdown()
        await server.stop()
        // a CA file that holds no certificate (here: only a key) is refused by name, not left to fail every handshake
        let keyOnly = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        #expect(throws: AsyncHTTPTransport.NoTrustRoots.self) { _ = try AsyncHTTPTransport(additionalCAPEM: keyOnly, systemTrustStores: missing) }
    }

    /// What counts as a system store: a bundle file with content, or a folder with a hashed certificate
    /// name. An empty /etc/ssl/certs (Debian's openssl package makes one) or an empty bundle does not.
    @Test func anEmptyFolderOrFileIsNoTrustStore() throws {
        let dir = try Tools.temporaryDirectory("keyroll-truststore")
        try FileManager.default.createDirectory(atPath: dir + "/certs", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/empty.crt", contents: Data())
        FileManager.default.createFile(atPath: dir + "/bundle.crt", contents: Data("-----BEGIN CERTIFICATE-----\n".utf8))
        #expect(!AsyncHTTPTransport.holdsTrustRoots(dir + "/certs"))
        #expect(!AsyncHTTPTransport.holdsTrustRoots(dir + "/empty.crt"))
        #expect(!AsyncHTTPTransport.holdsTrustRoots(dir + "/absent"))
        #expect(AsyncHTTPTransport.holdsTrustRoots(dir + "/bundle.crt"))
        FileManager.default.createFile(atPath: dir + "/certs/README", contents: Data("x".utf8))
        #expect(!AsyncHTTPTransport.holdsTrustRoots(dir + "/certs"))
        FileManager.default.createFile(atPath: dir + "/certs/5ad8a5d6.0", contents: Data("x".utf8))
        #expect(AsyncHTTPTransport.holdsTrustRoots(dir + "/certs"))
        #expect(throws: AsyncHTTPTransport.NoTrustRoots.self) { _ = try AsyncHTTPTransport(systemTrustStores: [dir + "/empty.crt", dir + "/absent"]) }
    }
}
