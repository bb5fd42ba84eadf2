import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Logging
import Testing
import TestSupport

/// Counts requests on the way to the emulator.
final class CountingTransport: HTTPTransport, @unchecked Sendable {
    let inner: any HTTPTransport
    private let lock = NSLock()
    private var log: [String] = []
    init(_ inner: any HTTPTransport) { self.inner = inner }
    func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        lock.withLock { log.append("\(request.method) \(Redaction.url(request.url))") }
        return try await inner.send(request, timeout: timeout)
    }
    var requests: [String] { lock.withLock { log } }
    func count(_ fragment: String) -> Int { requests.filter { $0.contains(fragment) }.count }
}

struct ClientWorld {
    let rig: EmulatorRig
    let reg: EntraEmulator.Registration
    let cred: SigningCredential
    let transport: CountingTransport
    let tokens: TokenProvider
    let graph: GraphClient
    let endpoints: EntraEndpoints

    init(settings: EmulatorSettings = .selfReading, roles: Set<GraphRole> = [], clientClock: ManualClock? = nil) throws {
        rig = try EmulatorRig(settings: settings)
        cred = try rig.credential("client", days: 30)
        reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "client", roles: roles, certificates: [cred.certificate])
        transport = CountingTransport(InProcessTransport(emulator: rig.emulator, baseURL: rig.base))
        endpoints = EntraEndpoints(authorityHost: rig.base, tenant: rig.tenant.id, graphBaseURL: rig.base + "/v1.0")
        let clock = clientClock ?? rig.clock
        let sleeper = ClockAdvancingSleeper(clock: rig.clock)
        tokens = TokenProvider(endpoints: endpoints, clientID: reg.appId, transport: transport, clock: clock, sleeper: sleeper)
        graph = GraphClient(endpoints: endpoints, tokens: tokens, auth: .certificate(cred), transport: transport, clock: clock, sleeper: sleeper)
    }
}

@Suite struct ClientTests {
    @Test func tokenCacheAndSingleFlight() async throws {
        let w = try ClientWorld()
        async let a = w.tokens.token(credential: .certificate(w.cred))
        async let b = w.tokens.token(credential: .certificate(w.cred))
        async let c = w.tokens.token(credential: .certificate(w.cred))
        let (ta, tb, tc) = try await (a, b, c)
        #expect(ta.value == tb.value && tb.value == tc.value)
        #expect(w.transport.count("/oauth2/") == 1, "concurrent callers share one request")
        _ = try await w.tokens.token(credential: .certificate(w.cred))
        #expect(w.transport.count("/oauth2/") == 1, "served from cache")
        // 5 minutes before expiry it refreshes
        w.rig.clock.advance(by: 3599 - 299)
        _ = try await w.tokens.token(credential: .certificate(w.cred))
        #expect(w.transport.count("/oauth2/") == 2)
        // RS256 style is a different cache entry and works too
        _ = try await w.tokens.token(credential: .certificate(w.cred, style: .rs256))
        #expect(w.transport.count("/oauth2/") == 3)
    }

    @Test func aProbeAlwaysAsksAndKeepsWhatItGets() async throws {
        let w = try ClientWorld()
        let cached = try await w.tokens.token(credential: .certificate(w.cred))
        let probed = try await w.tokens.probe(credential: .certificate(w.cred))
        #expect(w.transport.count("/oauth2/") == 2, "a probe is never answered from the cache")
        #expect(probed.value != cached.value)
        let next = try await w.tokens.token(credential: .certificate(w.cred))
        #expect(next.value == probed.value && w.transport.count("/oauth2/") == 2, "the probe's token serves later calls")
    }

    /// One application's typo (a resource Entra does not know) costs Entra one request per
    /// `refusalCacheSeconds`, however often it asks; a roll's verification (a probe), another
    /// credential and another scope always reach Entra.
    @Test func permanentRefusalsAreRepeatedBrieflyWithoutAskingEntra() async throws {
        let w = try ClientWorld()
        let unknown = "not-a-resource/.default"  // no scheme: Entra answers invalid_scope (400)
        let badRequest: EntraError.Kind? = .badRequest
        func refusal(_ credential: ClientCredential, _ scope: String? = nil) async -> EntraError.Kind? {
            do {
                _ = try await w.tokens.tokenServingCached(credential: credential, scope: scope ?? unknown, refreshAhead: 900, minimumLifetime: 600)
                return nil
            } catch {
                return (error as? EntraError)?.kind ?? .protocolViolation
            }
        }
        func requests() -> Int { w.transport.count("/oauth2/") }
        for _ in 0..<50 { #expect(await refusal(.certificate(w.cred)) == badRequest) }
        #expect(requests() == 1, "50 identical requests within 30 s cost Entra one request")
        await #expect(throws: EntraError.self) { try await w.tokens.probe(credential: .certificate(w.cred), scope: unknown) }
        #expect(requests() == 2, "a roll's verification is never answered from the refusal cache")
        #expect(await refusal(.certificate(w.cred, style: .rs256)) == badRequest)
        #expect(requests() == 3, "another credential asks Entra itself")
        #expect(await refusal(.certificate(w.cred), "https://graph.microsoft.com/.default") == nil)
        #expect(requests() == 4)
        w.rig.clock.advance(by: 29)
        #expect(await refusal(.certificate(w.cred)) == badRequest)
        #expect(requests() == 4, "still remembered after 29 s")
        w.rig.clock.advance(by: 2)
        #expect(await refusal(.certificate(w.cred)) == badRequest)
        #expect(requests() == 5, "after 31 s the request reaches Entra again")
    }

    /// The refusal cache holds at most `maximumRefusals` entries, evicting the oldest; a transient
    /// failure is never remembered.
    @Test func theRefusalCacheIsBoundedAndSkipsTransientFailures() async throws {
        let w = try ClientWorld()
        func refused(_ scope: String) async -> Bool {
            (try? await w.tokens.tokenServingCached(credential: .certificate(w.cred), scope: scope, refreshAhead: 900, minimumLifetime: 600)) == nil
        }
        func requests() -> Int { w.transport.count("/oauth2/") }
        let n = TokenProvider.maximumRefusals
        for i in 0...n {
            #expect(await refused("unknown-\(i)/.default"))
            w.rig.clock.advance(by: 0.05)
        }
        let asked = requests()
        #expect(asked == n + 1)
        #expect(await refused("unknown-\(n)/.default"))
        #expect(requests() == asked, "the newest refusal is remembered")
        #expect(await refused("unknown-0/.default"))
        #expect(requests() == asked + 1, "the oldest was evicted")
        // Entra down (503): every request asks again
        w.rig.emulator.setFaults([FaultRule(route: "token", action: .status(503, retryAfter: nil))])
        #expect(await refused("https://vault.azure.net/.default"))
        let afterOne = requests()
        #expect(await refused("https://vault.azure.net/.default"))
        #expect(requests() > afterOne, "a transient failure is not remembered")
        w.rig.emulator.setFaults([])
    }

    @Test func switchingCredentialNeverServesTheOldToken() async throws {
        let w = try ClientWorld()
        let old = try await w.tokens.token(credential: .certificate(w.cred))
        let next = try w.rig.credential("next", days: 365)
        _ = try await w.graph.addKey(objectID: w.reg.objectID, certificate: next.certificate, prover: w.cred)
        let fresh = try await w.tokens.token(credential: .certificate(next))
        #expect(fresh.value != old.value)
        #expect(fresh.credentialIdentity != old.credentialIdentity)
        let log = try w.rig.emulator.store.signIns(appId: w.reg.appId)
        #expect(log.last?.thumbprint == next.certificate.sha1Thumbprint.hex, "the new token was minted with the new key")
    }

    @Test func typedErrorsClassifyWithoutStringMatching() async throws {
        var s = EmulatorSettings.selfReading
        s.propagationDelayMin = 60
        s.propagationDelayMax = 60
        let w = try ClientWorld(settings: s)
        let stranger = try w.rig.credential("stranger")
        await #expect(throws: EntraError.self) { try await w.tokens.probe(credential: .certificate(stranger)) }
        do { _ = try await w.tokens.probe(credential: .certificate(stranger)) } catch let e as EntraError {
            #expect(e.kind == .credentialNotYetActive)
            #expect(e.aadstsCodes == [700027])
            #expect(e.httpStatus == 401)
            #expect(e.clientRequestID != nil)
        }
        do { _ = try await w.graph.application(id: UUID().uuidString) } catch let e as EntraError {
            #expect(e.kind == .forbidden || e.kind == .notFound)
        }
        // a role-less app cannot create applications
        do { _ = try await w.graph.createApplication(displayName: "x"); Issue.record("should fail") } catch let e as EntraError {
            #expect(e.kind == .forbidden)
            #expect(e.graphCode == "Authorization_RequestDenied")
        }
        // bad proof → credentialInvalid
        let next = try w.rig.credential("next")
        do { _ = try await w.graph.addKey(objectID: w.reg.objectID, certificate: next.certificate, prover: stranger); Issue.record("should fail") } catch let e as EntraError {
            #expect(e.kind == .credentialInvalid)
            #expect(e.graphCode == "Authentication_MissingOrMalformed")
            #expect(!e.description.contains("eyJ"), "no JWT in the error")
        }
    }

    @Test func retriesThrottlingAndTransientFailures() async throws {
        let w = try ClientWorld()
        let started = w.rig.clock.now()
        w.rig.emulator.setFaults([
            FaultRule(route: "GET /v1.0/applications", action: .status(429, retryAfter: 2.5), sequence: [true, true]),
            FaultRule(route: "token", action: .status(503, retryAfter: nil), sequence: [true]),
        ])
        let app = try await w.graph.application(id: w.reg.objectID)
        #expect(app.appId == w.reg.appId)
        #expect(w.transport.count("/oauth2/") == 2, "503 on the token endpoint retried")
        #expect(w.transport.count("GET https://login.emulator.test/v1.0/applications") == 3)
        #expect(w.rig.clock.now().timeIntervalSince(started) >= 5, "waited Retry-After (decimal) twice on the virtual clock")
        // a dropped connection is retried as transient
        w.rig.emulator.setFaults([FaultRule(route: "GET /v1.0/applications", action: .drop, sequence: [true])])
        _ = try await w.graph.application(id: w.reg.objectID)
        // a permanent 503 gives up with a transient error after maxAttempts
        w.rig.emulator.setFaults([FaultRule(route: "GET /v1.0/applications", action: .status(503, retryAfter: 0.1))])
        do { _ = try await w.graph.application(id: w.reg.objectID); Issue.record("should fail") } catch let e as EntraError {
            #expect(e.kind == .transient)
            #expect(e.httpStatus == 503)
        }
        w.rig.emulator.setFaults([])
    }

    @Test func aLostAddKeyResponseIsNotRepeated() async throws {
        let w = try ClientWorld()
        let next = try w.rig.credential("next", days: 365)
        // addKey is processed, then the connection drops before the answer
        w.rig.emulator.setFaults([FaultRule(route: "POST /addKey", action: .dropResponse, sequence: [true])])
        let kc = try await w.graph.addKey(objectID: w.reg.objectID, certificate: next.certificate, prover: w.cred)
        #expect(kc.matches(next.certificate))
        let stored = try w.rig.emulator.keyCredentials(appId: w.reg.appId)
        #expect(stored.filter { $0.key == next.certificate.der }.count == 1, "registered exactly once")
        #expect(w.transport.count("/addKey") == 1, "the retry found the key instead of re-sending")
        // removeKey whose answer is lost: the retry sees "No credentials found" and accepts it
        w.rig.emulator.setFaults([FaultRule(route: "POST /removeKey", action: .dropResponse, sequence: [true])])
        try await w.graph.removeKey(objectID: w.reg.objectID, keyId: kc.keyId, prover: w.cred)
        #expect(try w.rig.emulator.keyCredentials(appId: w.reg.appId).count == 1)
        w.rig.emulator.setFaults([])
    }

    @Test func aLostCreateResponseIsFoundByItsMarker() async throws {
        let w = try ClientWorld(roles: [.applicationReadWriteAll])
        w.rig.emulator.setFaults([FaultRule(route: "POST /v1.0/applications", action: .dropResponse, sequence: [true])])
        let app = try await w.graph.createApplication(displayName: "svc", marker: "keyroll:id:svc-1")
        #expect(app.displayName == "svc")
        var count = 0
        for try await _ in w.graph.applications(filter: "displayName eq 'svc'") { count += 1 }
        #expect(count == 1, "no duplicate")
        w.rig.emulator.setFaults([])
    }

    @Test(arguments: [600.0, -600.0])
    func clockSkewIsLearnedAndCorrected(skew: Double) async throws {
        let clientClock = ManualClock(EmulatorRig.start.addingTimeInterval(skew))
        let w = try ClientWorld(clientClock: clientClock)
        _ = try await w.tokens.token(credential: .certificate(w.cred))
        #expect(abs(w.tokens.offset.seconds + skew) < 2, "learned offset \(w.tokens.offset.seconds)")
        // proofs use corrected time too
        let next = try w.rig.credential("next", days: 365)
        _ = try await w.graph.addKey(objectID: w.reg.objectID, certificate: next.certificate, prover: w.cred)
    }

    @Test func bearerExpiryMidRunIsRefreshed() async throws {
        // the client's clock lags, so it believes its cached token is still fresh; Graph says 401
        let clientClock = ManualClock(EmulatorRig.start)
        let w = try ClientWorld(clientClock: clientClock)
        _ = try await w.graph.application(id: w.reg.objectID)
        w.rig.clock.advance(by: 3700)
        _ = try await w.graph.application(id: w.reg.objectID)
        #expect(w.transport.count("/oauth2/") == 2)
    }

    @Test func pagingOverMoreThanAThousandApplications() async throws {
        let w = try ClientWorld(roles: [.applicationReadAll])
        for i in 0..<1050 { try w.rig.emulator.register(tenantID: w.rig.tenant.id, displayName: "bulk-\(i)") }
        var names: [String] = []
        for try await app in w.graph.applications(filter: "startswith(displayName,'bulk-')", select: ["id", "appId", "displayName"], pageSize: 999) {
            names.append(app.displayName ?? "")
        }
        #expect(names.count == 1050)
        #expect(Set(names).count == 1050)
        #expect(w.transport.count("/v1.0/applications") == 2, "two pages")
    }

    @Test func redactionScrubsSecrets() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.c2lnbmF0dXJl"
        let text = "failed: client_assertion=\(jwt)&client_secret=hunter2 Authorization: Bearer abc.def.ghi -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----"
        let s = Redaction.scrub(text)
        for secret in [jwt, "hunter2", "abc.def.ghi", "MIIE"] { #expect(!s.contains(secret), "\(secret) leaked: \(s)") }
        let e = EntraError(kind: .badRequest, operation: "x", message: "proof \(jwt)")
        #expect(!e.description.contains(jwt))
    }

    @Test func retryPolicyHonoursRetryAfterAndCapsIt() {
        let p = RetryPolicy()
        #expect(p.delay(attempt: 1, retryAfter: 2.128, random: 0.5) == 2.128)
        #expect(p.delay(attempt: 1, retryAfter: 10_000, random: 0.5) == p.maxRetryAfter)
        #expect(p.delay(attempt: 3, retryAfter: nil, random: 1) == 2.0)
        #expect(p.delay(attempt: 30, retryAfter: nil, random: 1) == p.maxDelay)
        #expect(p.delay(attempt: 3, retryAfter: nil, random: 0) == 0)
    }
}

/// Answers every request with one fixed token answer.
struct FixedTokenAnswer: HTTPTransport {
    let body: String
    func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        HTTPResponseMessage(status: 200, headers: [("Content-Type", "application/json")], body: Array(body.utf8))
    }
}

@Suite struct TokenAnswerTests {
    /// A broken proxy or server answering a non-finite or absurd `expires_in` is an error with a
    /// clear message, never a crash (a NaN or infinite lifetime used to trap in a conversion).
    @Test(arguments: [#""nan""#, #""inf""#, "1e300", "-5", #""-inf""#, "86401"])
    func anAbsurdExpiresInIsAProtocolViolation(_ expiresIn: String) async throws {
        let endpoints = EntraEndpoints(authorityHost: "https://login.example.test", tenant: "contoso.example", graphBaseURL: "https://graph.example.test/v1.0")
        let transport = FixedTokenAnswer(body: #"{"token_type":"Bearer","access_token":"abc","expires_in":\#(expiresIn)}"#)
        let tokens = TokenProvider(endpoints: endpoints, clientID: UUID().uuidString.lowercased(), transport: transport, clock: ManualClock(Date(timeIntervalSince1970: 1_800_000_000)))
        do {
            _ = try await tokens.token(credential: .secret("s3cr3t-value"))
            Issue.record("expires_in \(expiresIn) was accepted")
        } catch let e as EntraError {
            #expect(e.kind == .protocolViolation && e.message.contains("expires_in"), "\(e)")
        }
    }

    @Test func anOrdinaryExpiresInIsAccepted() async throws {
        let endpoints = EntraEndpoints(authorityHost: "https://login.example.test", tenant: "contoso.example", graphBaseURL: "https://graph.example.test/v1.0")
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let tokens = TokenProvider(endpoints: endpoints, clientID: UUID().uuidString.lowercased(),
                                   transport: FixedTokenAnswer(body: #"{"token_type":"Bearer","access_token":"abc","expires_in":"3599"}"#), clock: ManualClock(now))
        #expect(try await tokens.token(credential: .secret("s3cr3t-value")).expiresOn == now.addingTimeInterval(3599))
    }
}
