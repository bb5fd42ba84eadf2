import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// An app-only access token. Treated as opaque; only its lifetime is used.
public struct AccessToken: Sendable {
    public let value: String
    public let expiresOn: Date
    /// The SHA-256 thumbprint (or secret hash) of the credential that obtained it.
    public let credentialIdentity: String
}

/// Acquires client-credentials tokens with a certificate assertion or a secret, caches them per
/// (authority, tenant, client, credential, scope), refreshes 5 minutes before expiry, and shares one
/// request among concurrent callers.
///
/// For the managed-identity endpoint (``tokenServingCached(credential:scope:refreshAhead:minimumLifetime:)``)
/// it also remembers Entra's permanent refusals (``EntraError/isPermanentRefusal``: an unknown
/// resource, a refused credential) per credential and scope for ``refusalCacheSeconds``, and
/// answers identical requests with the same error without asking Entra, so one application's typo
/// cannot spend the tenant's throttling budget. At most ``maximumRefusals`` are kept. A success for
/// that credential and scope forgets the refusal; another credential (a roll switched keys) has its
/// own entries. ``token(credential:scope:refreshAhead:)`` and ``probe(credential:scope:)`` (Graph
/// calls, a roll's verification) never answer from it: they always ask Entra.
public actor TokenProvider {
    let endpoints: EntraEndpoints
    public nonisolated let clientID: String
    let transport: any HTTPTransport
    let clock: any WallClock
    let sleeper: any Sleeper
    let retry: RetryPolicy
    public nonisolated let offset: ClockOffset
    let logger: Logger
    var cache: [String: AccessToken] = [:]
    var inFlight: [String: Task<AccessToken, Error>] = [:]
    /// Entra's permanent refusals per cache key, each with the time until which it is repeated.
    var refusals: [String: (error: EntraError, until: Date)] = [:]
    /// How long a permanent refusal is repeated without asking Entra (0: never).
    public nonisolated let refusalCacheSeconds: TimeInterval

    public static let refreshMargin: TimeInterval = 300
    /// The default of ``refusalCacheSeconds``.
    public static let defaultRefusalCacheSeconds: TimeInterval = 30
    /// At most this many refusals are remembered; the oldest goes first.
    public static let maximumRefusals = 256

    public init(endpoints: EntraEndpoints, clientID: String, transport: any HTTPTransport, clock: any WallClock = SystemClock(),
                sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(), offset: ClockOffset = ClockOffset(),
                refusalCacheSeconds: TimeInterval = TokenProvider.defaultRefusalCacheSeconds,
                logger: Logger = Logger(label: "keyroll.client.token")) {
        self.endpoints = endpoints
        self.refusalCacheSeconds = refusalCacheSeconds
        self.clientID = clientID.lowercased()
        self.transport = transport
        self.clock = clock
        self.sleeper = sleeper
        self.retry = retry
        self.offset = offset
        self.logger = logger
    }

    /// A token for `credential` and `scope` (default: Graph), from cache when it has more than
    /// `refreshAhead` left (at least 5 minutes).
    public func token(credential: ClientCredential, scope: String? = nil, refreshAhead: TimeInterval = TokenProvider.refreshMargin) async throws -> AccessToken {
        let scope = scope ?? endpoints.graphScope
        let key = cacheKey(credential, scope)
        if let cached = cache[key], cached.expiresOn.timeIntervalSince(clock.now()) > max(Self.refreshMargin, refreshAhead) { return cached }
        if let task = inFlight[key] { return try await Self.value(of: task) }
        let task = Task { try await self.fetch(credential: credential, scope: scope) }
        inFlight[key] = task
        defer { inFlight[key] = nil }
        let token = try await Self.value(of: task)
        keep(token, key)
        return token
    }

    /// A shared request's result, given up when the caller is cancelled: the request is cancelled
    /// too (an agent shutting down must not wait for Entra's retries to run out).
    private static func value(of task: Task<AccessToken, Error>) async throws -> AccessToken {
        try await withTaskCancellationHandler { try await task.value } onCancel: { task.cancel() }
    }

    /// Stale-while-revalidate, for callers that must answer at once (the managed-identity endpoint):
    /// a cached token with more than `refreshAhead` left is returned as ``token(credential:scope:refreshAhead:)``
    /// does; one with less, but more than `minimumLifetime`, is *still returned at once* while a single
    /// background refresh replaces it (an Entra outage then costs callers nothing until the cached
    /// token runs low). Only when nothing usable is cached does the caller wait for Entra. Concurrent
    /// callers share one request to Entra per key either way. A permanent refusal is repeated for
    /// ``refusalCacheSeconds`` without asking Entra again.
    public func tokenServingCached(credential: ClientCredential, scope: String? = nil, refreshAhead: TimeInterval,
                                   minimumLifetime: TimeInterval) async throws -> AccessToken {
        let scope = scope ?? endpoints.graphScope
        let key = cacheKey(credential, scope)
        if let cached = cache[key] {
            let left = cached.expiresOn.timeIntervalSince(clock.now())
            if left > max(Self.refreshMargin, refreshAhead) { return cached }
            if left > minimumLifetime {
                if inFlight[key] == nil {
                    let task = Task { try await self.fetch(credential: credential, scope: scope) }
                    inFlight[key] = task
                    Task { await self.finishRefresh(key, task) }
                }
                return cached
            }
        }
        if let refusal = refusals[key], refusal.until > clock.now() { throw refusal.error }
        do {
            return try await token(credential: credential, scope: scope, refreshAhead: refreshAhead)
        } catch let e as EntraError where e.isPermanentRefusal {
            remember(e, key)
            throw e
        }
    }

    /// Stores a background refresh's token (a failure keeps the cached one) and clears it.
    private func finishRefresh(_ key: String, _ task: Task<AccessToken, Error>) async {
        if let token = try? await task.value { keep(token, key) }
        if inFlight[key] == task { inFlight[key] = nil }
    }

    /// At most this many tokens are cached (one identity's provider: one per credential and
    /// resource); past it, expired ones go first, then the one expiring soonest.
    public static let maximumCachedTokens = 256

    /// Caches a token Entra issued; any refusal remembered for the same key is obsolete.
    private func keep(_ token: AccessToken, _ key: String) {
        if cache[key] == nil, cache.count >= Self.maximumCachedTokens {
            let now = clock.now()
            cache = cache.filter { $0.value.expiresOn > now }
            if cache.count >= Self.maximumCachedTokens, let soonest = cache.min(by: { $0.value.expiresOn < $1.value.expiresOn })?.key { cache[soonest] = nil }
        }
        cache[key] = token
        refusals[key] = nil
    }

    /// Remembers a permanent refusal for ``refusalCacheSeconds``: expired entries go first, then,
    /// past ``maximumRefusals``, the oldest.
    private func remember(_ error: EntraError, _ key: String) {
        guard refusalCacheSeconds > 0 else { return }
        let now = clock.now()
        refusals = refusals.filter { $0.value.until > now }
        if refusals[key] == nil, refusals.count >= Self.maximumRefusals, let oldest = refusals.min(by: { $0.value.until < $1.value.until })?.key {
            refusals[oldest] = nil
        }
        refusals[key] = (error, now.addingTimeInterval(refusalCacheSeconds))
    }

    /// Forgets cached tokens (e.g. after Graph answered 401).
    public func invalidate() { cache.removeAll() }

    /// One token request that is never answered from the cache (nor from a remembered refusal):
    /// used to *prove* a credential works now. The token it obtains is real, so it is kept for later
    /// calls with the same credential.
    public func probe(credential: ClientCredential, scope: String? = nil) async throws -> AccessToken {
        let scope = scope ?? endpoints.graphScope
        let token = try await fetch(credential: credential, scope: scope, maxAttempts: 1)
        keep(token, cacheKey(credential, scope))
        return token
    }

    private func cacheKey(_ credential: ClientCredential, _ scope: String) -> String {
        [endpoints.authorityHost, endpoints.tenant, clientID, credential.cacheIdentity, scope].joined(separator: "|")
    }

    private func fetch(credential: ClientCredential, scope: String, maxAttempts: Int? = nil) async throws -> AccessToken {
        var attempt = 0
        var correctedForSkew = false
        while true {
            attempt += 1
            let clientRequestID = UUID().uuidString.lowercased()
            let now = clock.now().addingTimeInterval(offset.seconds)
            var form: [(String, String)] = [("client_id", clientID), ("grant_type", "client_credentials"), ("scope", scope)]
            switch credential {
            case .certificate(let c, let style):
                let assertion = try ClientAssertion.make(clientID: clientID, tokenEndpoint: endpoints.tokenEndpoint, credential: c, now: now, style: style)
                form += [("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", assertion)]
            case .secret(let s):
                form.append(("client_secret", s))
            }
            let request = HTTPRequestMessage(method: "POST", url: endpoints.tokenEndpoint, headers: [
                ("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json"),
                ("client-request-id", clientRequestID), ("x-client-sku", "KeyRoll.Swift"), ("return-client-request-id", "true"),
            ], body: Array(Self.formEncode(form).utf8))
            let error: EntraError
            do {
                let response = try await transport.send(request, timeout: retry.requestTimeout)
                offset.observe(dateHeader: response.header("Date"), localNow: clock.now())
                if response.status == 200 {
                    guard let json = try? JSONValue.parse(response.body, maxDepth: 16), let value = json["access_token"]?.stringValue else {
                        throw EntraError(kind: .protocolViolation, operation: "token", httpStatus: 200, message: "token response has no access_token",
                                         clientRequestID: clientRequestID)
                    }
                    let given: Double?
                    switch json["expires_in"] {
                    case .int(let i): given = Double(i)
                    case .string(let s): given = Double(s)
                    case .double(let d): given = d
                    default: given = 600
                    }
                    // Entra answers 3599 (up to a day with CAE); anything else is a broken answer,
                    // never a reason to crash (a non-finite number trapped in conversions later)
                    guard let expiresIn = given, expiresIn.isFinite, expiresIn >= 0, expiresIn <= 86_400 else {
                        throw EntraError(kind: .protocolViolation, operation: "token", httpStatus: response.status,
                                         message: "the token answer's expires_in is not a number of seconds from 0 to 86400", clientRequestID: clientRequestID)
                    }
                    return AccessToken(value: value, expiresOn: clock.now().addingTimeInterval(expiresIn), credentialIdentity: credential.cacheIdentity)
                }
                error = EntraError.fromToken(status: response.status, body: response.body, response: response, clientRequestID: clientRequestID)
            } catch let e as EntraError {
                throw e
            } catch let e as TransportError {
                error = EntraError(kind: .transient, operation: "token", message: e.description, clientRequestID: clientRequestID)
            }
            if error.kind == .clockSkew, !correctedForSkew {
                correctedForSkew = true
                let off = offset.seconds
                logger.warning("token request refused as outside its time window (AADSTS700024); this machine's clock is \(Int(off)) s off Entra's; retrying once with corrected time",
                               metadata: ["client_request_id": "\(clientRequestID)"])
                continue
            }
            try await retry.pause(after: error, attempt: attempt, maxAttempts: maxAttempts, sleeper: sleeper, logger: logger, "token request")
        }
    }

    static func formEncode(_ pairs: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return pairs.map { ($0.0.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.0) + "=" + ($0.1.addingPercentEncoding(withAllowedCharacters: allowed) ?? $0.1) }
            .joined(separator: "&")
    }
}
