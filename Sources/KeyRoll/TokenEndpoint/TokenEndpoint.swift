import EntraClient
import EntraCrypto
import Foundation
import Synchronization
import KeyRollPrimitives
import Logging

/// The agent's managed-identity endpoint: serves each identity whose store enables it (see
/// ``TokenEndpointSettings``) the tokens its application would otherwise get by holding the key.
///
/// Rules it keeps:
/// - the secret header selects the identity, compared in constant time; a selector (`client_id`,
///   `object_id`) must name that same identity, so one app's secret never yields another's tokens;
/// - after `rotate-secret` an identity's previous secret is accepted too until its overlap ends
///   (``CredentialStore/rotateTokenEndpointSecret(overlap:now:)``); each such request is counted
///   and logged (at most once a minute per identity), so the application still to restart is named;
/// - tokens come from the identity's active credential: the one the journal says is proven, so a
///   roll in progress never makes the endpoint fail, and a switch just means the next token is
///   fetched with the new key;
/// - tokens are cached per identity and resource, refreshed once they have less than
///   ``refreshAhead`` left, and never served with less than ``minimumLifetime`` left;
/// - no token, assertion or secret is ever logged.
public final class TokenEndpoint: Sendable {
    /// A token is never handed out with less than this left (the SDKs count less than 5 minutes as expired).
    public static let minimumLifetime: TimeInterval = 600
    /// A cached token is replaced once it has less than this left.
    public static let refreshAhead: TimeInterval = 900

    let rollers: [Roller]
    let metrics: MetricsRegistry
    let logger: Logger
    /// Resource label values seen per identity (``resourceLabel``).
    let labels = Mutex<[String: Set<String>]>([:])
    /// Refusal log lines admitted per status and minute.
    let refusalLog = MinuteLimit<Int>(perMinute: RefusalLogLimit.perMinute)
    /// "Previous secret in use" log lines admitted per identity and minute.
    let previousSecretLog = MinuteLimit<String>(perMinute: 1)
    let clock: any WallClock

    public init(rollers: [Roller], metrics: MetricsRegistry, clock: any WallClock = SystemClock(), logger: Logger = Logger(label: "keyroll.token-endpoint")) {
        self.rollers = rollers
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        metrics.describe("keyroll_token_endpoint_requests_total", "counter", "Requests to the managed-identity endpoint, by identity, resource and HTTP status.",
                         fromRequests: true)
        metrics.describe("keyroll_token_endpoint_previous_secret_requests_total", "counter",
                         "Requests authenticated with an identity's previous (rotated-out) secret during the overlap: its application still has to be restarted.")
    }

    /// The identities the endpoint serves now (their stores enable it).
    public var servedRollers: [Roller] { rollers.filter { (try? $0.store.tokenEndpointSettings()) != nil } }

    /// Answers one request: the status and the JSON body.
    public func respond(method: String, query: [(String, String)], headers: [(String, String)]) async -> (status: Int, body: [UInt8]) {
        let correlationID = UUID().uuidString.lowercased()
        var appId = "-", resource = "-"
        let result: Result<[UInt8], TokenEndpointError>
        // The secret first: a request without a matching one is refused before anything it says is
        // parsed, counted or logged (its text bounds no metric and costs no scan).
        // The stores' secrets are read once per request (one match, used for every decision below).
        let secrets = headers.filter { $0.0.lowercased() == IdentityTokenRequest.secretHeader }.map(\.1)
        let given = secrets.count == 1 ? secrets[0] : ""
        let matched = given.isEmpty ? nil : secretOwner(given)
        if let m = matched, let until = m.previousUntil { notePreviousSecret(m.roller, acceptedUntil: until) }
        if !given.isEmpty, matched == nil {
            result = .failure(.wrongSecret)
        } else {
            switch IdentityTokenRequest.parse(method: method, query: query, headers: headers) {
            case .failure(let e):
                result = .failure(e)
            case .success(let request):
                switch owner(of: request, matched: matched) {
                case .failure(let e):
                    if let m = matched { appId = m.roller.identity.appId }
                    result = .failure(e)
                case .success(let (roller, settings)):
                    appId = roller.identity.appId
                    resource = resourceLabel(request.resource, appId: appId, settings: settings)
                    result = await token(request, roller: roller, settings: settings)
                }
            }
        }
        let status: Int
        let body: [UInt8]
        switch result {
        case .success(let b): (status, body) = (200, b)
        case .failure(let e): (status, body) = (e.status, e.body(correlationID: correlationID))
        }
        // the resource label is bounded (resourceLabel): at most `maximumResourceLabels` values per
        // identity, the rest "other"; a request with no matching secret has none at all
        metrics.increment("keyroll_token_endpoint_requests_total", ["app_id": appId, "resource": resource, "status": "\(status)"])
        if case .failure(let e) = result {
            if refusalLog.admit(status, now: clock.now()) {
                logger.warning("token request refused", metadata: ["app_id": "\(appId)", "resource": "\(resource)", "status": "\(status)",
                                                                    "reason": "\(e.message.prefix(300))", "correlation_id": "\(correlationID)"])
            }
        } else {
            logger.info("token served", metadata: ["app_id": "\(appId)", "resource": "\(resource)"])
        }
        return (status, body)
    }

    /// At most this many distinct `resource` label values per identity; later ones count as `other`.
    public static let maximumResourceLabels = 20

    /// The `resource` label of an authenticated request: an allow-listed resource as it is, else
    /// one of the first ``maximumResourceLabels`` resources this identity asked for, else `other`.
    func resourceLabel(_ resource: String, appId: String, settings: TokenEndpointSettings) -> String {
        if settings.allowedResources != nil { return settings.allows(resource) ? String(resource.prefix(200)) : "other" }
        return labels.withLock { seen in
            let value = String(resource.prefix(200))
            if seen[appId, default: []].contains(value) { return value }
            guard seen[appId, default: []].count < Self.maximumResourceLabels else { return "other" }
            seen[appId, default: []].insert(value)
            return value
        }
    }

    /// A served identity whose secret a request carries.
    struct SecretMatch {
        let roller: Roller
        let settings: TokenEndpointSettings
        /// Set when the request carries the identity's previous secret: until when it is accepted.
        let previousUntil: Date?
    }

    /// The served identity whose secret is `given`: its current one, or its previous one until that
    /// one's overlap ends (on the injected clock). Compared in constant time with every one.
    func secretOwner(_ given: String) -> SecretMatch? {
        let bytes = Array(given.utf8)
        let now = clock.now()
        var match: SecretMatch?
        for roller in rollers {
            guard let settings = try? roller.store.tokenEndpointSettings(), let secret = try? roller.store.tokenEndpointSecret() else { continue }
            let previous = (try? roller.store.tokenEndpointPreviousSecret()).flatMap { $0.isAccepted(at: now) ? $0 : nil }
            let isCurrent = Self.constantTimeEqual(bytes, Array(secret.utf8))
            let isPrevious = previous.map { Self.constantTimeEqual(bytes, Array($0.secret.utf8)) } ?? false
            if isCurrent || isPrevious, match == nil {
                match = SecretMatch(roller: roller, settings: settings, previousUntil: isCurrent ? nil : previous?.acceptedUntil)
            }
        }
        return match
    }

    /// Counts a request made with an identity's previous secret, and logs it at most once a minute
    /// per identity: its application has to be restarted with the new environment file before the
    /// overlap ends.
    func notePreviousSecret(_ roller: Roller, acceptedUntil: Date) {
        let appId = roller.identity.appId
        metrics.increment("keyroll_token_endpoint_previous_secret_requests_total", ["app_id": appId])
        if previousSecretLog.admit(appId, now: clock.now()) {
            logger.warning("an application still uses the previous token-endpoint secret; restart it with \(roller.store.tokenEndpointEnvironmentPath)",
                           metadata: ["app_id": "\(appId)", "accepted_until": "\(UTCTime.iso(acceptedUntil))"])
        }
    }

    /// The identity whose secret the request carries (`matched`: ``secretOwner(_:)`` of that
    /// secret, already looked up), checked against its selector and allow-list. An `object_id` is
    /// checked once Entra's token is in hand (``objectIDRefusal(_:token:identity:)``).
    func owner(of request: IdentityTokenRequest, matched: SecretMatch?) -> Result<(Roller, TokenEndpointSettings), TokenEndpointError> {
        guard let m = matched else { return .failure(.wrongSecret) }
        let (roller, settings) = (m.roller, m.settings)
        let id = roller.identity
        switch request.selector {
        case nil, .objectID:
            break
        case .clientID(let c) where c.lowercased() == id.appId.lowercased():
            break
        case .clientID:
            // one answer whether or not the agent serves that client id: a secret tells nothing about other identities
            return .failure(.badRequest("This secret belongs to \(id.appId) and gets only its tokens. Set AZURE_CLIENT_ID to \(id.appId) (or leave client_id out)."))
        case .resourceID:
            return .failure(.badRequest("KeyRoll identities are app registrations and have no Azure resource id; select by client_id=\(id.appId) or leave the selector out."))
        }
        guard settings.allows(request.resource) else {
            return .failure(.badRequest("\(request.resource.prefix(100)) is not among the resources \(id.appId) may get tokens for here (\((settings.allowedResources ?? []).joined(separator: ", "))). "
                                        + "Add it with keyroll token-endpoint enable --allow-resource."))
        }
        return .success((roller, settings))
    }

    func token(_ request: IdentityTokenRequest, roller: Roller, settings: TokenEndpointSettings) async -> Result<[UInt8], TokenEndpointError> {
        let appId = roller.identity.appId
        let token: AccessToken
        do {
            token = try await roller.accessToken(scope: request.scope, refreshAhead: Self.refreshAhead, servingCachedAbove: Self.minimumLifetime)
        } catch let e as EntraError {
            let j = roller.journal
            let keyAge = j.credential(j.active).map { clock.now().timeIntervalSince($0.notBefore) }
            return .failure(Self.classify(e, appId: appId, resource: request.resource, keyAge: keyAge))
        } catch {
            return .failure(.init(status: 500, code: "server_error", message: "The agent could not get a token for \(appId): \(error)"))
        }
        if case .objectID(let objectID) = request.selector, let refusal = Self.objectIDRefusal(objectID, token: token, identity: roller.identity) {
            return .failure(refusal)
        }
        let left = token.expiresOn.timeIntervalSince(clock.now())
        guard left >= Self.minimumLifetime else {
            return .failure(.init(status: 503, code: "temporarily_unavailable",
                                  message: "Entra issued \(appId) a token with only \(Int(left)) s left; the agent serves none with less than \(Int(Self.minimumLifetime)) s. Try again shortly."))
        }
        return .success(JSONValue.object([
            "access_token": .string(token.value),
            "expires_on": .string(String(Int64(token.expiresOn.timeIntervalSince1970.rounded(.down)))),
            "resource": .string(request.resource),
            "token_type": "Bearer",
            "client_id": .string(appId),
        ]).serialized())
    }

    /// Why `objectID` (the request's `object_id`/`principal_id`) does not name the identity `token`
    /// was issued to; nil when it does.
    ///
    /// As in App Service and IMDS, it is the service principal's object id (the portal's "Object
    /// (principal) ID"). The agent reads it from the `oid` claim Entra puts in every app-only token,
    /// so checking it needs no Graph permission and no earlier token. The application's object id
    /// is accepted too (a KeyRoll extension: it names the same identity).
    static func objectIDRefusal(_ objectID: String, token: AccessToken, identity: CredentialStore.Identity) -> TokenEndpointError? {
        let given = objectID.lowercased()
        guard given != identity.applicationObjectId.lowercased() else { return nil }
        guard let principal = (try? CompactJWS(parsing: token.value, maximumLength: 64 * 1024))?.claims.string("oid") else {
            return .badRequest("The agent cannot check object_id for \(identity.appId): Entra's token carries no oid claim. Select by client_id=\(identity.appId) or leave the selector out.")
        }
        guard given != principal.lowercased() else { return nil }
        return .badRequest("object_id \(objectID.prefix(64)) is not the identity of this secret: the service principal of \(identity.appId) has object id \(principal). "
                           + "Set object_id to that, leave it out, or select by client_id=\(identity.appId).")
    }

    /// A key older than this that Entra says it does not know (AADSTS700027) is gone, not still
    /// propagating (Entra propagates a new key in seconds to minutes).
    static let propagationAllowance: TimeInterval = 3600

    /// What Entra's refusal means to the application. `keyAge` is how long ago the active
    /// certificate became valid.
    static func classify(_ e: EntraError, appId: String, resource: String, keyAge: TimeInterval?) -> TokenEndpointError {
        var kind = e.kind
        if kind == .credentialNotYetActive, let age = keyAge, age > propagationAllowance { kind = .credentialInvalid }
        switch kind {
        case .throttled, .transient, .clockSkew, .credentialNotYetActive:
            return .init(status: 503, code: "temporarily_unavailable", message: "Entra is not answering for \(appId) right now (\(e.kind.rawValue)); try again shortly.")
        case .credentialInvalid, .notFound, .unauthorized, .forbidden:
            return .init(status: 403, code: "unauthorized_client",
                         message: "Entra refuses app \(appId)'s certificate (\(e.message)). Its key may be gone from Entra: run `keyroll status` on the agent's host; "
                            + "if the app is past its cliff, re-bootstrap it through the provisioner (keyroll rebootstrap).")
        case .badRequest:
            return .badRequest("Entra refused a token for \(resource.prefix(100)) (\(e.message.prefix(300))). Check the resource: it must be an API Entra knows, e.g. https://graph.microsoft.com or api://<app>.")
        case .sizeExceeded, .protocolViolation:
            return .init(status: 500, code: "server_error", message: "The agent could not get a token for \(appId): \(e.message)")
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

extension Roller {
    /// A token for `scope`, signed in with the active credential: the one the journal records as
    /// proven (during a roll, the old key until the new one has been verified and switched to).
    ///
    /// A roll that finishes between reading the journal and reading the key destroys the key just
    /// read about; the journal then names its successor, so the read is made once more.
    /// With `servingCachedAbove`, a cached token with more than that left is served while a refresh
    /// runs in the background (``TokenProvider/tokenServingCached(credential:scope:refreshAhead:minimumLifetime:)``).
    public func accessToken(scope: String, refreshAhead: TimeInterval, servingCachedAbove: TimeInterval? = nil) async throws -> AccessToken {
        let active: SigningCredential
        do { active = try credential(journal.active) } catch { active = try credential(journal.active) }
        if let floor = servingCachedAbove {
            return try await tokens.tokenServingCached(credential: .certificate(active), scope: scope, refreshAhead: refreshAhead, minimumLifetime: floor)
        }
        return try await tokens.token(credential: .certificate(active), scope: scope, refreshAhead: refreshAhead)
    }
}

/// Admits at most ``perMinute`` log lines a minute per key (a refusal's HTTP status, an identity),
/// so a flood of requests cannot fill the journal (journald drops a unit's lines past its own rate
/// limit, the agent's roll and cliff messages with them). The metrics still count every request.
final class MinuteLimit<Key: Hashable>: @unchecked Sendable {
    let perMinute: Int
    private let lock = NSLock()
    private var minute: Int64 = 0
    private var counts: [Key: Int] = [:]

    init(perMinute: Int) { self.perMinute = perMinute }

    /// Whether a line for `key` at `now` may be logged.
    func admit(_ key: Key, now: Date) -> Bool {
        lock.withLock {
            let m = Int64(now.timeIntervalSince1970 / 60)
            if m != minute { minute = m; counts = [:] }
            counts[key, default: 0] += 1
            return counts[key]! <= perMinute
        }
    }
}

/// How many refusals a minute, per HTTP status, the token endpoint logs.
public enum RefusalLogLimit {
    public static let perMinute = 10
}
