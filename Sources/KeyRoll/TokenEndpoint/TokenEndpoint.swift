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
    let refusalLog = RefusalLog()
    let clock: any WallClock

    public init(rollers: [Roller], metrics: MetricsRegistry, clock: any WallClock = SystemClock(), logger: Logger = Logger(label: "keyroll.token-endpoint")) {
        self.rollers = rollers
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        metrics.describe("keyroll_token_endpoint_requests_total", "counter", "Requests to the managed-identity endpoint, by identity, resource and HTTP status.")
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
        if !given.isEmpty, matched == nil {
            result = .failure(.wrongSecret)
        } else {
            switch IdentityTokenRequest.parse(method: method, query: query, headers: headers) {
            case .failure(let e):
                result = .failure(e)
            case .success(let request):
                switch owner(of: request, matched: matched) {
                case .failure(let e):
                    if let (roller, _) = matched { appId = roller.identity.appId }
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
            if refusalLog.admit(status: status, now: clock.now()) {
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

    /// The served identity whose secret is `given` (compared in constant time with every one).
    func secretOwner(_ given: String) -> (Roller, TokenEndpointSettings)? {
        let bytes = Array(given.utf8)
        var match: (Roller, TokenEndpointSettings)?
        for roller in rollers {
            guard let settings = try? roller.store.tokenEndpointSettings(), let secret = try? roller.store.tokenEndpointSecret() else { continue }
            if Self.constantTimeEqual(bytes, Array(secret.utf8)), match == nil { match = (roller, settings) }
        }
        return match
    }

    /// The identity whose secret the request carries (`matched`: ``secretOwner(_:)`` of that
    /// secret, already looked up), checked against its selector.
    func owner(of request: IdentityTokenRequest, matched: (Roller, TokenEndpointSettings)?) -> Result<(Roller, TokenEndpointSettings), TokenEndpointError> {
        guard let (roller, settings) = matched else { return .failure(.wrongSecret) }
        let id = roller.identity
        switch request.selector {
        case nil:
            break
        case .clientID(let c) where c.lowercased() == id.appId.lowercased():
            break
        case .objectID(let o) where o.lowercased() == id.applicationObjectId.lowercased():
            break
        case .clientID:
            // one answer whether or not the agent serves that client id: a secret tells nothing about other identities
            return .failure(.badRequest("This secret belongs to \(id.appId) and gets only its tokens. Set AZURE_CLIENT_ID to \(id.appId) (or leave client_id out)."))
        case .objectID:
            return .failure(.badRequest("That object_id is not the identity of this secret (\(id.appId)); leave it out or select by client_id=\(id.appId)."))
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

/// Refusals are logged at most ``perMinute`` times a minute per HTTP status, so a flood of bad
/// requests cannot fill the journal (journald drops a unit's lines past its own rate limit, the
/// agent's roll and cliff messages with them); the lines held back are counted in the next one.
final class RefusalLog: @unchecked Sendable {
    static let perMinute = RefusalLogLimit.perMinute
    private let lock = NSLock()
    private var minute: Int64 = 0
    private var counts: [Int: Int] = [:]

    /// Whether a refusal with `status` at `now` may be logged.
    func admit(status: Int, now: Date) -> Bool {
        lock.withLock {
            let m = Int64(now.timeIntervalSince1970 / 60)
            if m != minute { minute = m; counts = [:] }
            counts[status, default: 0] += 1
            return counts[status]! <= Self.perMinute
        }
    }
}

/// How many refusals a minute, per HTTP status, the token endpoint logs.
public enum RefusalLogLimit {
    public static let perMinute = 10
}
