import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// Typed Microsoft Graph calls for app registrations, authenticated as one app-only identity.
///
/// Every call carries a fresh `client-request-id`, retries throttling and transient failures, and
/// never blindly re-sends a write that may have succeeded: a retried `addKey` first checks whether
/// the certificate is already registered, a retried create looks for the object it may have made,
/// a retried `removeKey` accepts that the key is already gone.
public struct GraphClient: Sendable {
    public let endpoints: EntraEndpoints
    public let tokens: TokenProvider
    /// The credential whose token authenticates Graph calls (proofs are signed separately).
    public private(set) var auth: ClientCredential
    let transport: any HTTPTransport
    let clock: any WallClock
    public let sleeper: any Sleeper
    let retry: RetryPolicy
    let logger: Logger
    /// Measures how old a request body built from a read is when it is about to be sent. The
    /// machine's continuous clock, always (also in virtual-clock runs): it counts time the process
    /// was stopped or the machine suspended, which is exactly the age that matters.
    var monotonic: any MonotonicClock = SystemMonotonicClock()
    /// A body made from a read (a whole-list PATCH of keyCredentials) older than this when it is
    /// about to be sent is thrown away and made again from a new read: a process paused between its
    /// read and its send (SIGSTOP, a suspended laptop or VM) must not send a list that is stale.
    public var maximumBasisAge: Double = 5
    /// Told about every 429 (with its Retry-After): bulk schedulers slow down on it.
    private(set) var onThrottle: (@Sendable (Double?) -> Void)?

    public init(endpoints: EntraEndpoints, tokens: TokenProvider, auth: ClientCredential, transport: any HTTPTransport,
                clock: any WallClock = SystemClock(), sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(),
                logger: Logger = Logger(label: "keyroll.client.graph"), onThrottle: (@Sendable (Double?) -> Void)? = nil) {
        self.endpoints = endpoints
        self.tokens = tokens
        self.auth = auth
        self.transport = transport
        self.clock = clock
        self.sleeper = sleeper
        self.retry = retry
        self.logger = logger
        self.onThrottle = onThrottle
    }

    /// A client that signs in as `clientID` with `credential` through its own token provider: the
    /// one way KeyRoll's tools, the lab and the tests wire a Graph client.
    public static func signingIn(as clientID: String, with credential: ClientCredential, endpoints: EntraEndpoints, transport: any HTTPTransport,
                                 clock: any WallClock = SystemClock(), sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(),
                                 logger: Logger = Logger(label: "keyroll.client.graph")) -> GraphClient {
        let tokens = TokenProvider(endpoints: endpoints, clientID: clientID, transport: transport, clock: clock, sleeper: sleeper, retry: retry, logger: logger)
        return GraphClient(endpoints: endpoints, tokens: tokens, auth: credential, transport: transport, clock: clock, sleeper: sleeper, retry: retry, logger: logger)
    }

    /// The same client authenticating with another credential.
    public func authenticated(with credential: ClientCredential) -> GraphClient {
        var copy = self
        copy.auth = credential
        return copy
    }

    /// The same client reporting 429s to `observer`.
    public func observingThrottling(_ observer: @escaping @Sendable (Double?) -> Void) -> GraphClient {
        var copy = self
        copy.onThrottle = observer
        return copy
    }

    /// Now, corrected by the offset learned from Entra's `Date` headers.
    public var correctedNow: Date { clock.now().addingTimeInterval(tokens.offset.seconds) }

    // MARK: applications

    /// The application's key credentials with their certificates (`$select=keyCredentials` on a single
    /// object returns `key`). Counts against Graph's 150/min per-tenant budget for this query.
    public func keyCredentials(objectID: String) async throws -> [KeyCredential] {
        struct Keys: Decodable { var keyCredentials: [KeyCredential]? }
        let keys: Keys = try decode(try await call("getKeyCredentials", "GET", "/applications/\(objectID)?$select=id,keyCredentials"))
        return keys.keyCredentials ?? []
    }

    public func application(id: String, select: [String]? = nil) async throws -> Application {
        try decode(try await call("getApplication", "GET", "/applications/\(id)" + selectQuery(select)))
    }

    public func application(appId: String, select: [String]? = nil) async throws -> Application {
        try decode(try await call("getApplication", "GET", "/applications(appId=\(Self.encodeQuery(OData.quote(appId))))" + selectQuery(select)))
    }

    /// All applications matching `filter` (OData), following `@odata.nextLink`.
    public func applications(filter: String? = nil, select: [String]? = nil, pageSize: Int = 100) -> AsyncThrowingStream<Application, Error> {
        var items: [(String, String)] = [("$top", String(pageSize))]
        if let filter { items.append(("$filter", filter)) }
        if let select { items.append(("$select", select.joined(separator: ","))) }
        let first = "/applications?" + items.map { "\($0.0)=\(Self.encodeQuery($0.1))" }.joined(separator: "&")
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    var next: String? = first
                    while let path = next {
                        let page = try await call("listApplications", "GET", path)
                        for item in page["value"]?.arrayValue ?? [] { continuation.yield(try decode(item)) }
                        next = page["@odata.nextLink"]?.stringValue
                        if let link = next, !SecureURL.sameOrigin(link, self.endpoints.graphBaseURL) {
                            throw EntraError(kind: .protocolViolation, operation: "listApplications",
                                             message: "Graph's @odata.nextLink points to another origin (\(Redaction.url(link))); refusing to send the bearer token there")
                        }
                    }
                    continuation.finish()
                } catch { continuation.finish(throwing: error) }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// Creates an application. With `marker` (a unique tag), a retry after an ambiguous failure
    /// first looks for an application carrying that tag, so the create happens at most once.
    public func createApplication(displayName: String, tags: [String] = [], keyCredentials: [JSONValue] = [], marker: String? = nil,
                                  notes: String? = nil) async throws -> Application {
        var body: [String: JSONValue] = ["displayName": .string(displayName), "signInAudience": "AzureADMyOrg"]
        if let notes { body["notes"] = .string(notes) }
        let allTags = tags + (marker.map { [$0] } ?? [])
        if !allTags.isEmpty { body["tags"] = .array(allTags.map(JSONValue.string)) }
        if !keyCredentials.isEmpty { body["keyCredentials"] = .array(keyCredentials) }
        var recover: (@Sendable () async throws -> JSONValue?)? = nil
        if let m = marker {
            recover = { () async throws -> JSONValue? in
                for try await app in self.applications(filter: OData.hasTag(m)) { return try JSONValue.parse(GraphDates.encoder.encode(app)) }
                return nil
            }
        }
        return try decode(try await call("createApplication", "POST", "/applications", body: .object(body), recover: recover))
    }

    /// PATCH (replaces each property sent; `keyCredentials` replaces the whole list).
    public func updateApplication(id: String, _ patch: [String: JSONValue]) async throws {
        _ = try await call("updateApplication", "PATCH", "/applications/\(id)", body: .object(patch), idempotent: true)
    }

    /// PATCH of the application's whole `keyCredentials` list, recomputed by `merge` from a fresh
    /// read before every attempt. A PATCH replaces the list, so one that re-sent a list read before
    /// a throttling wait would drop every key added meanwhile (an agent's addKey); reading again
    /// each time narrows that window to one round trip. Returns the list the PATCH was built on.
    @discardableResult
    /// `precondition` runs before each attempt's read (inside the body's age bound): a privileged
    /// run checks there that it still holds the application's lease.
    public func updateKeyCredentials(id: String, precondition: (@Sendable () async throws -> Void)? = nil,
                                     merge: @escaping @Sendable ([KeyCredential]) throws -> [JSONValue]) async throws -> [KeyCredential] {
        final class Basis: @unchecked Sendable { var keys: [KeyCredential] = [] }
        let basis = Basis()
        _ = try await call("updateApplication", "PATCH", "/applications/\(id)", idempotent: true, freshBody: {
            try await precondition?()
            let current = try await self.keyCredentials(objectID: id)
            basis.keys = current
            return .object(["keyCredentials": .array(try merge(current))])
        })
        return basis.keys
    }

    public func deleteApplication(id: String) async throws {
        do { _ = try await call("deleteApplication", "DELETE", "/applications/\(id)", idempotent: true) } catch let e as EntraError where e.kind == .notFound {}
    }

    /// `addKey`: registers `certificate` on application `objectID`, with a proof signed by `prover`
    /// (a currently valid certificate already registered on it). Each attempt carries a proof
    /// minted for it, so long Retry-After waits can never send an expired one.
    /// `displayName`, when given, is what Graph shows for the key (KeyRoll's replica marker lives
    /// there, see `CredentialName`); without it Entra names the key after the certificate.
    public func addKey(objectID: String, certificate: X509Certificate, displayName: String? = nil, prover: SigningCredential) async throws -> KeyCredential {
        let recover: @Sendable () async throws -> JSONValue? = {
            // An app that may not read itself (403) cannot look: the retry may register the
            // certificate a second time, which costs room, never a key.
            let found: KeyCredential?
            do { found = try await self.findKey(objectID: objectID, certificate: certificate) } catch let e as EntraError where e.kind == .forbidden { return nil }
            guard let found else { return nil }
            return try JSONValue.parse(GraphDates.encoder.encode(found))
        }
        var key: [String: JSONValue] = ["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(certificate.der))]
        if let displayName { key["displayName"] = .string(displayName) }
        let keyCredential = JSONValue.object(key)
        return try decode(try await call("addKey", "POST", "/applications/\(objectID)/addKey", recover: recover) {
            .object([
                "keyCredential": keyCredential,
                "passwordCredential": .null,
                "proof": .string(try ProofOfPossession.make(objectID: objectID, credential: prover, now: self.correctedNow)),
            ])
        })
    }

    /// `removeKey` with a proof signed by `prover` (fresh for each attempt). Removal is idempotent:
    /// Graph's "No credentials found to be removed" means the key is already gone — after a lost
    /// answer, a crash, or a run that removed it before — which is the outcome asked for.
    public func removeKey(objectID: String, keyId: String, prover: SigningCredential) async throws {
        do {
            _ = try await call("removeKey", "POST", "/applications/\(objectID)/removeKey", recover: { nil }) {
                .object(["keyId": .string(keyId), "proof": .string(try ProofOfPossession.make(objectID: objectID, credential: prover, now: self.correctedNow))])
            }
        } catch let e as EntraError where e.kind == .badRequest && e.message.contains("No credentials found") {
            logger.info("removeKey: the key is already gone", metadata: ["keyId": "\(keyId)"])
        }
    }

    /// The registered key credential for `certificate`, if Graph shows one.
    public func findKey(objectID: String, certificate: X509Certificate) async throws -> KeyCredential? {
        try await keyCredentials(objectID: objectID).first { $0.matches(certificate) }
    }

    // MARK: service principals

    public func createServicePrincipal(appId: String) async throws -> ServicePrincipal {
        let recover: @Sendable () async throws -> JSONValue? = {
            guard let sp = try await self.servicePrincipal(appId: appId) else { return nil }
            return try JSONValue.parse(GraphDates.encoder.encode(sp))
        }
        do {
            return try decode(try await call("createServicePrincipal", "POST", "/servicePrincipals", body: .object(["appId": .string(appId)]), recover: recover))
        } catch let e as EntraError where e.httpStatus == 409 {
            guard let sp = try await servicePrincipal(appId: appId) else { throw e }
            return sp
        }
    }

    public func servicePrincipal(appId: String) async throws -> ServicePrincipal? {
        do { return try decode(try await call("getServicePrincipal", "GET", "/servicePrincipals(appId=\(Self.encodeQuery(OData.quote(appId))))")) } catch let e as EntraError where e.kind == .notFound {
            return nil
        }
    }

    public func deleteServicePrincipal(id: String) async throws {
        do { _ = try await call("deleteServicePrincipal", "DELETE", "/servicePrincipals/\(id)", idempotent: true) } catch let e as EntraError where e.kind == .notFound {}
    }

    // MARK: transport with retries

    /// Sends one Graph call. `idempotent` calls are simply retried; for other writes an ambiguous
    /// failure (no answer, 5xx) first runs `recover`, whose non-nil result is taken as the answer.
    func call(_ operation: String, _ method: String, _ path: String, body: JSONValue? = nil, idempotent: Bool? = nil,
              recover: (@Sendable () async throws -> JSONValue?)? = nil) async throws -> JSONValue {
        try await call(operation, method, path, idempotent: idempotent, recover: recover, freshBody: body.map { b in { b } })
    }

    /// `call` with a body made anew for each attempt (proofs expire).
    func call(_ operation: String, _ method: String, _ path: String, idempotent: Bool? = nil,
              recover: (@Sendable () async throws -> JSONValue?)? = nil, freshBody: (() async throws -> JSONValue)?) async throws -> JSONValue {
        let isIdempotent = idempotent ?? (method == "GET")
        let url = path.hasPrefix("http") ? path : endpoints.graphBaseURL + path
        var attempt = 0
        var reauthenticated = false
        var mayHaveSucceeded = false
        var staleBases = 0
        while true {
            attempt += 1
            if mayHaveSucceeded, !isIdempotent, let recover, let found = try await recover() {
                logger.info("recovered the result of an earlier attempt", metadata: ["operation": "\(operation)"])
                return found
            }
            let token = try await tokens.token(credential: auth)
            let clientRequestID = UUID().uuidString.lowercased()
            var headers: [(String, String)] = [("Authorization", "Bearer \(token.value)"), ("Accept", "application/json"),
                                               ("client-request-id", clientRequestID), ("return-client-request-id", "true")]
            let bodyStarted = monotonic.monotonicSeconds()
            let body = try await freshBody?()
            if body != nil { headers.append(("Content-Type", "application/json")) }
            let request = HTTPRequestMessage(method: method, url: url, headers: headers, body: body?.serialized() ?? [])
            // The last moment before the send: a body whose making began too long ago (the process
            // was paused after its read) is made again. The age counts from before the read.
            if freshBody != nil, monotonic.monotonicSeconds() - bodyStarted > maximumBasisAge {
                staleBases += 1
                logger.warning("the request body is older than \(maximumBasisAge) s (was the process paused?); reading again before sending it",
                               metadata: ["operation": "\(operation)", "age_s": "\(Int(monotonic.monotonicSeconds() - bodyStarted))"])
                attempt -= 1
                guard staleBases < 20 else {
                    throw EntraError(kind: .transient, operation: operation, message: "could not build a body and send it within \(maximumBasisAge) s in 20 tries; nothing was sent")
                }
                continue
            }
            let error: EntraError
            do {
                let response = try await transport.send(request, timeout: retry.requestTimeout)
                tokens.offset.observe(dateHeader: response.header("Date"), localNow: clock.now())
                if (200..<300).contains(response.status) {
                    if response.body.isEmpty { return .null }
                    guard let json = try? JSONValue.parse(response.body, maxDepth: 64) else {
                        throw EntraError(kind: .protocolViolation, operation: operation, httpStatus: response.status, message: "response is not JSON",
                                         clientRequestID: clientRequestID)
                    }
                    return json
                }
                error = EntraError.fromGraph(operation: operation, response: response, clientRequestID: clientRequestID)
                if response.status >= 500 { mayHaveSucceeded = true }
            } catch let e as EntraError {
                throw e
            } catch let e as TransportError {
                error = EntraError(kind: .transient, operation: operation, message: e.description, clientRequestID: clientRequestID)
                mayHaveSucceeded = true
            }
            if error.kind == .unauthorized, !reauthenticated {
                reauthenticated = true
                await tokens.invalidate()
                continue
            }
            if error.kind == .throttled { onThrottle?(error.retryAfter) }
            try await retry.pause(after: error, attempt: attempt, sleeper: sleeper, logger: logger, "graph call", metadata: ["operation": "\(operation)"])
        }
    }

    func decode<T: Decodable>(_ json: JSONValue) throws -> T {
        do { return try GraphDates.decoder.decode(T.self, from: Data(json.serialized())) } catch {
            throw EntraError(kind: .protocolViolation, operation: "decode", message: "cannot read \(T.self) from Graph's answer: \(error)")
        }
    }

    func selectQuery(_ select: [String]?) -> String {
        guard let select, !select.isEmpty else { return "" }
        return "?$select=" + select.joined(separator: ",")
    }

    static func encodeQuery(_ s: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~'(),:$")
        return s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s
    }
}
