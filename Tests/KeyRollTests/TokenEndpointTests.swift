import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Logging
import Testing
import TestSupport

/// The agent's managed-identity endpoint, in-process against the emulator on the virtual clock:
/// the protocol's rules, one identity per secret, the token cache and its lifetimes, a roll in the
/// middle of a stream of requests, Entra refusing the app, metrics, and logs without tokens.
@Suite struct TokenEndpointTests {
    struct World {
        let fleet: Fleet
        let a: (store: CredentialStore, roller: Roller, appId: String)
        let b: (store: CredentialStore, roller: Roller, appId: String)
        let endpoint: TokenEndpoint
        let metrics: MetricsRegistry
        let logs: CapturedLogs

        init(allowA: [String]? = nil) async throws {
            let fleet = try await Fleet()
            func identity(_ name: String, _ allow: [String]?) async throws -> (store: CredentialStore, roller: Roller, appId: String) {
                let (store, bundle) = try await fleet.agentStore(name)
                try store.enableTokenEndpoint(TokenEndpointSettings(allowedResources: allow))
                return (store, try fleet.roller(store), bundle.appId)
            }
            let a = try await identity("mi-a", allowA)
            let b = try await identity("mi-b", nil)
            let metrics = MetricsRegistry()
            let logs = CapturedLogs()
            var logger = Logger(label: "test.token-endpoint") { _ in logs }
            logger.logLevel = .debug
            self.fleet = fleet
            self.a = a
            self.b = b
            self.metrics = metrics
            self.logs = logs
            self.endpoint = TokenEndpoint(rollers: [a.roller, b.roller], metrics: metrics, clock: fleet.rig.clock, logger: logger)
        }

        func ask(_ secret: String?, resource: String? = "https://graph.microsoft.com", extra: [(String, String)] = [],
                 apiVersion: String? = "2019-08-01", method: String = "GET") async -> (status: Int, json: JSONValue?) {
            var query: [(String, String)] = []
            if let apiVersion { query.append(("api-version", apiVersion)) }
            if let resource { query.append(("resource", resource)) }
            query += extra
            let headers: [(String, String)] = (secret.map { [("X-IDENTITY-HEADER", $0)] } ?? []) + [("Metadata", "true")]
            let (status, body) = await endpoint.respond(method: method, query: query, headers: headers)
            return (status, try? JSONValue.parse(body))
        }

        func claims(_ json: JSONValue?) throws -> [String: JSONValue] {
            let token = try #require(json?["access_token"]?.stringValue)
            return try CompactJWS(parsing: token, encoding: .lenient).claims.values
        }
    }

    @Test func servesEachIdentityItsOwnTokensInTheAppServiceShape() async throws {
        let w = try await World()
        let secretA = try w.a.store.tokenEndpointSecret(), secretB = try w.b.store.tokenEndpointSecret()
        #expect(secretA != secretB, "each identity has its own secret")
        for (secret, appId) in [(secretA, w.a.appId), (secretB, w.b.appId)] {
            for resource in ["https://graph.microsoft.com", "https://management.azure.com/", "https://vault.azure.net", "api://orders-api"] {
                let r = await w.ask(secret, resource: resource)
                #expect(r.status == 200, "\(resource): \(r.status) \(String(describing: r.json))")
                #expect(try w.claims(r.json)["appid"] == .string(appId))
                #expect(r.json?["resource"] == .string(resource), "resource is echoed exactly")
                #expect(r.json?["token_type"] == "Bearer" && r.json?["client_id"] == .string(appId))
                let expiresOn = try #require(r.json?["expires_on"]?.stringValue)
                let epoch = try #require(Int64(expiresOn), "expires_on is integer epoch seconds as a string: \(expiresOn)")
                #expect(Double(epoch) - w.fleet.rig.clock.now().timeIntervalSince1970 >= TokenEndpoint.minimumLifetime)
            }
            // selecting itself by client id (as DefaultAzureCredential does) or object id is fine
            #expect(await w.ask(secret, extra: [("client_id", appId.uppercased())]).status == 200)
        }
        #expect(await w.ask(secretA, extra: [("object_id", try w.a.store.identity().applicationObjectId)]).status == 200)
    }

    @Test func refusalsHaveTheStatusesTheSDKsExpectAndAJSONBody() async throws {
        let w = try await World(allowA: ["https://graph.microsoft.com"])
        let secretA = try w.a.store.tokenEndpointSecret()
        let cases: [(String, (status: Int, json: JSONValue?), Int)] = [
            ("no header", await w.ask(nil), 401),
            ("empty header", await w.ask(""), 401),
            ("wrong header", await w.ask(String(repeating: "x", count: secretA.count)), 401),
            ("another identity's client_id", await w.ask(secretA, extra: [("client_id", w.b.appId)]), 400),
            ("an unknown client_id", await w.ask(secretA, extra: [("client_id", UUID().uuidString)]), 400),
            ("a wrong header with junk parameters", await w.ask("wrong", resource: nil, apiVersion: "x"), 401),
            ("two selectors", await w.ask(secretA, extra: [("client_id", w.a.appId), ("object_id", "x")]), 400),
            ("a resource id", await w.ask(secretA, extra: [("mi_res_id", "/subscriptions/x")]), 400),
            ("a resource off the allow-list", await w.ask(secretA, resource: "https://vault.azure.net"), 400),
            ("no resource", await w.ask(secretA, resource: nil), 400),
            ("no api-version", await w.ask(secretA, apiVersion: nil), 400),
            ("an old api-version", await w.ask(secretA, apiVersion: "2017-09-01"), 400),
            ("POST", await w.ask(secretA, method: "POST"), 400),
        ]
        for (what, r, status) in cases {
            #expect(r.status == status, "\(what): \(r.status)")
            #expect(r.json?["statusCode"] == .int(Int64(status)) && r.json?["error"]?.stringValue != nil
                    && (r.json?["message"]?.stringValue ?? "").count > 20 && r.json?["correlationId"]?.stringValue != nil, "\(what): \(String(describing: r.json))")
            #expect(r.json?["access_token"] == nil, "\(what)")
        }
        // the allow-list ignores one trailing slash
        #expect(await w.ask(secretA, resource: "https://graph.microsoft.com/").status == 200)
    }

    @Test func tokensAreCachedRefreshedAheadAndNeverServedNearlyExpired() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        func tokenRequests() -> Int { w.fleet.rig.emulator.requestCounts()["token", default: 0] }
        let first = await w.ask(secret)
        let before = tokenRequests()
        for _ in 0..<20 { #expect(await w.ask(secret).json?["access_token"] == first.json?["access_token"]) }
        #expect(tokenRequests() == before, "served from the cache")
        // 47 minutes on, the cached token has under 15 minutes left (but more than 10): it is still
        // served at once while one background refresh replaces it
        w.fleet.rig.clock.advance(by: 47 * 60)
        let stale = await w.ask(secret)
        #expect(stale.status == 200 && stale.json?["access_token"] == first.json?["access_token"], "served from the cache during the refresh")
        var later = stale
        for _ in 0..<200 where later.json?["access_token"] == first.json?["access_token"] {
            await Task.yield()
            later = await w.ask(secret)
        }
        #expect(later.status == 200 && later.json?["access_token"] != first.json?["access_token"], "the background refresh replaced it")
        #expect(tokenRequests() == before + 1, "one refresh, however many requests came meanwhile")
        let left = Double(Int64(later.json?["expires_on"]?.stringValue ?? "") ?? 0) - w.fleet.rig.clock.now().timeIntervalSince1970
        #expect(left >= TokenEndpoint.minimumLifetime)
        // Entra down while the cached token has 12 minutes left: still served, quickly; at 9 minutes left: a 503
        w.fleet.rig.clock.advance(by: 3599 - 12 * 60)  // the refreshed token now has 12 minutes left
        w.fleet.rig.emulator.setFaults([FaultRule(route: "token", action: .status(503, retryAfter: nil), probability: 1)])
        let during = await w.ask(secret)
        #expect(during.status == 200 && during.json?["access_token"] == later.json?["access_token"], "\(during.status)")
        w.fleet.rig.clock.advance(by: 3 * 60)
        #expect(await w.ask(secret).status == 503)
        w.fleet.rig.emulator.setFaults([])
        // Entra issuing short tokens: none is served with under 10 minutes
        var s = w.fleet.rig.emulator.settings
        s.tokenLifetime = 300
        w.fleet.rig.emulator.settings = s
        let short = await w.ask(secret, resource: "api://short-lived")
        #expect(short.status == 503, "\(short.status) \(String(describing: short.json))")
    }

    @Test func aRollInTheMiddleOfAStreamOfRequestsCausesNoError() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        let boot = w.a.roller.journal.active
        // requests for ever-new resources (each one reaches Entra) while the roll runs its steps
        let roll = Task { try await w.a.roller.roll() }
        var statuses: [Int] = []
        var i = 0
        while !roll.isCancelled, i < 400 {
            statuses.append(await w.ask(secret, resource: "api://stream-\(i)").status)
            i += 1
            await Task.yield()
            if i > 40, w.a.roller.journal.roll == nil, w.a.roller.journal.active != boot { break }
        }
        let outcome = try await roll.value
        guard case .rolled = outcome else { Issue.record("no roll: \(outcome)"); return }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(Dictionary(grouping: statuses, by: { $0 }).mapValues(\.count))")
        // after the roll the bootstrap is gone from Entra; new tokens come from the new key
        let after = await w.ask(secret, resource: "api://after-the-roll")
        #expect(after.status == 200)
        let last = try #require(try w.fleet.rig.emulator.store.signIns(appId: w.a.appId).last)
        #expect(last.result == "success" && last.thumbprint == w.a.roller.journal.active && last.thumbprint != boot)
        // and the signIns during the stream used only keys the journal had proven
        let used = Set(try w.fleet.rig.emulator.store.signIns(appId: w.a.appId).filter { $0.result == "success" }.compactMap(\.thumbprint))
        #expect(used.isSubset(of: [boot, w.a.roller.journal.active]), "\(used)")
    }

    @Test func whenEntraRefusesTheAppTheBodySaysSoPlainly() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        // the app's key is gone from Entra (an operator removed it)
        try await w.fleet.provisioner.graph.updateApplication(id: try w.a.store.identity().applicationObjectId, ["keyCredentials": .array([])])
        // a young key may still be propagating: Entra's "key not found" is transient then
        let young = await w.ask(secret, resource: "api://while-the-key-is-young")
        #expect(young.status == 503, "\(young.status) \(String(describing: young.json))")
        // an hour on, the same answer means the key is gone
        w.fleet.rig.clock.advance(by: 2 * 3600)
        let r = await w.ask(secret, resource: "api://after-the-key-is-gone")
        #expect(r.status == 403, "\(r.status) \(String(describing: r.json))")
        let message = r.json?["message"]?.stringValue ?? ""
        #expect(message.contains("refuses") && message.contains(w.a.appId) && message.contains("keyroll rebootstrap"), "\(message)")
    }

    @Test func metricsCountRequestsAndLogsCarryNoTokenOrSecret() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        let ok = await w.ask(secret)
        _ = await w.ask("nope")
        _ = await w.ask(secret, extra: [("client_id", w.b.appId)])
        let text = w.metrics.exposition()
        #expect(text.contains(#"keyroll_token_endpoint_requests_total{app_id="\#(w.a.appId)",resource="https://graph.microsoft.com",status="200"} 1"#), "\(text)")
        #expect(text.contains(#"status="401"} 1"#) && text.contains(#"status="400"} 1"#), "\(text)")
        let token = try #require(ok.json?["access_token"]?.stringValue)
        let lines = w.logs.lines
        #expect(lines.count >= 3)
        for line in lines {
            #expect(!line.contains(token) && !line.contains(secret) && !line.contains(String(token.prefix(40))), "a log line leaks: \(line.prefix(200))")
        }
    }

    /// A hostile neighbour without a secret cannot grow `/metrics` or the log: 2,000 wrong-secret
    /// requests with distinct, long resources (and an 80 KiB api-version) add one series, and log
    /// at most the rate limit. An authenticated app without an allow-list gets at most 20 resource
    /// label values, the rest `other`.
    @Test func aFloodOfBadRequestsLeavesMetricsAndLogsBounded() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        _ = await w.ask(secret)
        let seriesBefore = w.metrics.exposition().split(separator: "\n").filter { $0.hasPrefix("keyroll_token_endpoint_requests_total{") }.count
        for i in 0..<2000 {
            let r = await w.ask("wrong-\(i)", resource: "https://evil.example/\(i)/" + String(repeating: "a", count: 150),
                                apiVersion: i == 0 ? String(repeating: "eyJ", count: 27_000) : "2019-08-01")
            #expect(r.status == 401)
        }
        let text = w.metrics.exposition()
        let series = text.split(separator: "\n").filter { $0.hasPrefix("keyroll_token_endpoint_requests_total{") }
        #expect(series.count == seriesBefore + 1, "\(series.count - seriesBefore) new series: \(series.suffix(3))")
        #expect(text.contains(#"keyroll_token_endpoint_requests_total{app_id="-",resource="-",status="401"} 2000"#), "\(series)")
        #expect(!text.contains("evil.example"))
        let refusals = w.logs.lines.filter { $0.contains("token request refused") }
        #expect(refusals.count <= RefusalLogLimit.perMinute, "\(refusals.count) refusal lines logged")
        #expect(!w.logs.lines.contains { $0.contains("evil.example") || $0.contains("eyJeyJ") }, "a wrong secret's request text reached the log")
        // an authenticated identity without an allow-list: bounded resource labels
        for i in 0..<30 { _ = await w.ask(secret, resource: "api://keyroll-stream-\(i)") }
        let labelled = Set(w.metrics.exposition().split(separator: "\n").filter { $0.contains("app_id=\"\(w.a.appId)\"") && $0.hasPrefix("keyroll_token_endpoint_requests_total{") }
            .compactMap { $0.split(separator: ",").first { $0.hasPrefix("resource=") } })
        #expect(labelled.count <= TokenEndpoint.maximumResourceLabels + 1 && labelled.contains(#"resource="other""#), "\(labelled.count) resource labels")
    }

    /// 100 simultaneous requests for a token nobody has yet cause exactly one token request to Entra.
    @Test func simultaneousUncachedRequestsCauseOneRequestToEntra() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        let before = w.fleet.rig.emulator.requestCounts()["token", default: 0]
        let statuses = await withTaskGroup(of: Int.self) { group in
            for _ in 0..<100 { group.addTask { await w.ask(secret, resource: "api://keyroll-concurrent").status } }
            return await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(statuses.allSatisfy { $0 == 200 }, "\(Set(statuses))")
        #expect(w.fleet.rig.emulator.requestCounts()["token", default: 0] - before == 1)
    }

    /// The environment file keeps the endpoint's own host away from any proxy, in both spellings.
    @Test func theEnvironmentFileBypassesProxiesForTheRealHost() throws {
        #expect(CredentialStore.noProxyHosts(for: "http://[::1]:42356/msi/token") == ["::1", "[::1]", "127.0.0.1", "localhost"])
        #expect(CredentialStore.noProxyHosts(for: "http://127.0.0.2:42356/msi/token") == ["127.0.0.2", "127.0.0.1", "localhost"])
        #expect(CredentialStore.noProxyHosts(for: "http://127.0.0.1:42356/msi/token") == ["127.0.0.1", "localhost"])
    }

    @Test func enablingRotatingAndDisablingTheSecret() async throws {
        let w = try await World()
        let old = try w.a.store.tokenEndpointSecret()
        #expect(try SecureFiles.readSecret(w.a.store.tokenEndpointSecretPath).count > 32, "the secret file is private (readSecret checks 0600 and owner)")
        try w.a.store.writeTokenEndpointEnvironment(endpointURL: "http://127.0.0.1:42356/msi/token")
        let env = try String(contentsOfFile: w.a.store.tokenEndpointEnvironmentPath, encoding: .utf8)
        #expect(env == "IDENTITY_ENDPOINT=http://127.0.0.1:42356/msi/token\nIDENTITY_HEADER=\(old)\nAZURE_CLIENT_ID=\(w.a.appId)\nNO_PROXY=127.0.0.1,localhost\nno_proxy=127.0.0.1,localhost\n")
        #expect((try FileManager.default.attributesOfItem(atPath: w.a.store.tokenEndpointEnvironmentPath)[.posixPermissions] as? Int) == 0o600)
        let new = try w.a.store.rotateTokenEndpointSecret(overlap: 0, now: w.fleet.rig.clock.now()).secret
        #expect(new != old)
        #expect(await w.ask(old).status == 401, "without an overlap the old secret stops working at once")
        #expect(await w.ask(new).status == 200)
        // disabling destroys the previous secret too
        let newest = try w.a.store.rotateTokenEndpointSecret(overlap: 3600, now: w.fleet.rig.clock.now()).secret
        #expect(FileManager.default.fileExists(atPath: w.a.store.tokenEndpointPreviousSecretPath))
        try w.a.store.disableTokenEndpoint()
        #expect(await w.ask(new).status == 401)
        #expect(await w.ask(newest).status == 401)
        for file in [w.a.store.tokenEndpointSecretPath, w.a.store.tokenEndpointPreviousSecretPath, w.a.store.tokenEndpointEnvironmentPath] {
            #expect(!FileManager.default.fileExists(atPath: file), "\(file)")
        }
        #expect(w.endpoint.servedRollers.map(\.identity.appId) == [w.b.appId])
    }

    @Test func requestParsingIsPure() {
        func parse(_ q: [(String, String)], _ h: [(String, String)] = [("x-identity-header", "s")]) -> Result<IdentityTokenRequest, TokenEndpointError> {
            IdentityTokenRequest.parse(method: "GET", query: q, headers: h)
        }
        let base = [("api-version", "2019-08-01"), ("resource", "https://management.azure.com/")]
        guard case .success(let r) = parse(base + [("unknown", "ignored"), ("clientid", "C")]) else { Issue.record("refused"); return }
        #expect(r.scope == "https://management.azure.com//.default" && r.selector == .clientID("C") && r.secret == "s")
        #expect(parse(base, []) == .failure(.missingSecret), "no header: 401 before anything else")
        #expect(parse([], []) == .failure(.missingSecret))
        if case .failure(let e) = parse(base + [("resource", "x")]) { #expect(e.status == 400) } else { Issue.record("two resources accepted") }
        if case .failure(let e) = parse(base, [("X-Identity-Header", "a"), ("x-identity-header", "b")]) { #expect(e.status == 400) } else { Issue.record("two secrets accepted") }
        // selectors are mutually exclusive, and none is repeated (same spelling or another)
        for selectors in [[("principal_id", "p"), ("msi_res_id", "r")], [("client_id", "a"), ("object_id", "o")], [("client_id", "a"), ("client_id", "b")],
                          [("object_id", "o"), ("principal_id", "p")], [("client_id", "a"), ("clientid", "a")]] {
            if case .failure(let e) = parse(base + selectors) {
                #expect(e.status == 400 && e.code == "invalid_request" && e.message.contains("mutually exclusive"), "\(selectors): \(e)")
            } else {
                Issue.record("\(selectors) accepted")
            }
        }
    }

    /// `object_id`/`principal_id` is the service principal's object id, as in App Service and IMDS,
    /// checked against the `oid` of Entra's token: so it works on the first request, before the agent
    /// has any token. The application's object id is accepted too (a KeyRoll extension); any other
    /// is a 400 that names the right one.
    @Test func objectIDNamesTheServicePrincipal() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        func principal(_ appId: String) throws -> String {
            try #require(try w.fleet.rig.emulator.store.servicePrincipal(tenantID: w.fleet.rig.tenant.id, appId: appId)).id
        }
        let sp = try principal(w.a.appId)
        let application = try w.a.store.identity().applicationObjectId
        #expect(sp.lowercased() != application.lowercased())
        let first = await w.ask(secret, resource: "api://keyroll-object-id", extra: [("object_id", sp)])
        #expect(first.status == 200, "\(first.status) \(String(describing: first.json))")
        #expect(try w.claims(first.json)["oid"] == .string(sp))
        #expect(await w.ask(secret, extra: [("principal_id", sp.uppercased())]).status == 200)
        #expect(await w.ask(secret, extra: [("object_id", application)]).status == 200, "the application's object id (a KeyRoll extension)")
        let other = try principal(w.b.appId)
        for wrong in [other, UUID().uuidString] {
            let r = await w.ask(secret, extra: [("object_id", wrong)])
            #expect(r.status == 400 && r.json?["access_token"] == nil, "\(r.status)")
            let message = r.json?["message"]?.stringValue ?? ""
            #expect(message.contains(sp) && message.contains("client_id=\(w.a.appId)"), "\(message)")
        }
    }

    /// A user-assigned identity's Azure resource id selects nothing here: every spelling is a 400
    /// with exactly the body of every other refusal, saying to select by client_id.
    @Test func aResourceIDSelectorIsRefusedInTheAppServiceShape() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        let appServiceKeys: Set<String> = ["statusCode", "message", "error", "error_description", "correlationId"]
        for name in ["mi_res_id", "msi_res_id", "resource_id"] {
            let r = await w.ask(secret, extra: [(name, "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/u")])
            #expect(r.status == 400, "\(name)")
            #expect(Set((r.json?.objectValue ?? [:]).keys) == appServiceKeys, "\(name): \(String(describing: r.json))")
            #expect(r.json?["statusCode"] == .int(400) && r.json?["error"] == "invalid_request", "\(name)")
            let message = r.json?["message"]?.stringValue ?? ""
            #expect(message.contains("no Azure resource id") && message.contains("client_id=\(w.a.appId)") && r.json?["error_description"]?.stringValue == message, "\(message)")
        }
    }

    /// An application asking again and again for a resource Entra does not know costs Entra one
    /// request per refusal-cache period, not one per request.
    @Test func entraRefusalsAreNotRepeatedToEntra() async throws {
        let w = try await World()
        let secret = try w.a.store.tokenEndpointSecret()
        let before = w.fleet.rig.emulator.requestCounts()["token", default: 0]
        for _ in 0..<50 { #expect(await w.ask(secret, resource: "not-a-resource").status == 400) }
        #expect(w.fleet.rig.emulator.requestCounts()["token", default: 0] - before == 1)
    }

    /// After a rotation the previous secret is accepted until its overlap ends (on the agent's
    /// clock), compared in constant time like the current one, counted, and logged at most once a
    /// minute; then refused. Both secret files are 0600.
    @Test func thePreviousSecretIsAcceptedUntilTheOverlapEnds() async throws {
        let w = try await World()
        let clock = w.fleet.rig.clock
        let old = try w.a.store.tokenEndpointSecret()
        let rotated = try w.a.store.rotateTokenEndpointSecret(overlap: 3600, now: clock.now())
        let until = try #require(rotated.previousAcceptedUntil)
        #expect(until.timeIntervalSince(clock.now()) > 3599 && until.timeIntervalSince(clock.now()) <= 3600)
        #expect(try w.a.store.tokenEndpointPreviousSecret() == PreviousTokenEndpointSecret(secret: old, acceptedUntil: until))
        for file in [w.a.store.tokenEndpointSecretPath, w.a.store.tokenEndpointPreviousSecretPath] {
            #expect((try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) == 0o600, "\(file)")
        }
        for _ in 0..<5 { #expect(await w.ask(old).status == 200) }
        #expect(await w.ask(rotated.secret).status == 200)
        #expect(w.metrics.value("keyroll_token_endpoint_previous_secret_requests_total", ["app_id": w.a.appId]) == 5)
        let warnings = w.logs.lines.filter { $0.contains("still uses the previous token-endpoint secret") }
        #expect(warnings.count == 1 && warnings[0].contains(w.a.store.tokenEndpointEnvironmentPath), "\(warnings)")
        // near misses of the previous secret match nothing
        var flipped = Array(old.utf8)
        flipped[flipped.count - 1] ^= 1
        #expect(await w.ask(String(decoding: flipped, as: UTF8.self)).status == 401)
        #expect(await w.ask(String(old.dropLast())).status == 401)
        #expect(await w.ask(old + "x").status == 401)
        // accepted until the overlap ends, then refused; the new secret goes on working
        clock.advance(by: until.timeIntervalSince(clock.now()) - 1)
        #expect(await w.ask(old).status == 200, "a second before the overlap ends")
        clock.advance(by: 1)
        #expect(await w.ask(old).status == 401, "refused once the overlap ends")
        #expect(await w.ask(rotated.secret).status == 200)
    }

    /// Rotating again keeps only the newest previous secret; an overlap of 0 (a leaked secret)
    /// leaves none, so only the new secret works from then on.
    @Test func rotatingAgainKeepsOnlyTheNewestPreviousSecret() async throws {
        let w = try await World()
        let now = w.fleet.rig.clock.now()
        let first = try w.a.store.tokenEndpointSecret(), secretB = try w.b.store.tokenEndpointSecret()
        let second = try w.a.store.rotateTokenEndpointSecret(overlap: 3600, now: now).secret
        let third = try w.a.store.rotateTokenEndpointSecret(overlap: 3600, now: now).secret
        #expect(try w.a.store.tokenEndpointPreviousSecret()?.secret == second)
        #expect(await w.ask(first).status == 401, "only the newest previous secret is kept")
        #expect(await w.ask(second).status == 200)
        #expect(await w.ask(third).status == 200)
        let fourth = try w.a.store.rotateTokenEndpointSecret(overlap: 0, now: now)
        #expect(fourth.previousAcceptedUntil == nil)
        #expect(!FileManager.default.fileExists(atPath: w.a.store.tokenEndpointPreviousSecretPath))
        #expect(await w.ask(second).status == 401)
        #expect(await w.ask(third).status == 401)
        #expect(await w.ask(fourth.secret).status == 200)
        #expect(await w.ask(secretB).status == 200, "another identity's secret is untouched")
    }
}

/// Log lines, rendered as a JSON handler would print them (message and metadata).
final class CapturedLogs: LogHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var stored: [String] = []
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    var lines: [String] { lock.withLock { stored } }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        let all = self.metadata.merging(metadata ?? [:]) { $1 }
        lock.withLock { stored.append("\(level) \(message) \(all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))") }
    }
}
