import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging
import Synchronization

/// A faithful local Microsoft Entra ID: the v2.0 token endpoint (client credentials with
/// certificate assertions or secrets), discovery and JWKS, the Graph v1.0 application and
/// service-principal endpoints including `addKey`/`removeKey` with exact proof validation, and the
/// beta sign-in log and credential-usage reports.
///
/// It serves in-process (``handle(_:)``, used by tests and `keyroll-lab demo`) or over HTTP/HTTPS
/// (``EmulatorServer``). All validity checks use ``clock``, so a test can move time freely.
public final class EntraEmulator: Sendable {
    public let store: DirectoryStore
    public let clock: ManualClock?
    let wallClock: any WallClock
    let logger: Logger
    let state: Mutex<MutableState>
    /// The key that signs minted access tokens, and its certificate (published in JWKS).
    let signing: SigningCredential

    struct MutableState {
        var settings: EmulatorSettings
        var faults: [FaultRule] = []
        var faultCursor: [Int: Int] = [:]
        var rng: SplitMix64
        var writeLog: [String: [Date]] = [:]
        var selectLog: [String: [Date]] = [:]
        var tokenLog: [String: [Date]] = [:]
        var auditLog: [String: [Date]] = [:]
        var requestLog: [RequestLogEntry] = []
        var metrics: [String: Int] = [:]
        var controlSecret: String?
    }

    /// - Parameters:
    ///   - store: the directory (in-memory by default).
    ///   - clock: a virtual clock; when nil the emulator uses the system clock and the control API
    ///     cannot move time.
    public init(store: DirectoryStore? = nil, clock: ManualClock? = nil, settings: EmulatorSettings = .init(),
                logger: Logger = Logger(label: "keyroll.emulator")) throws {
        self.store = try store ?? DirectoryStore()
        self.clock = clock
        self.wallClock = clock ?? SystemClock()
        self.logger = logger
        self.state = Mutex(MutableState(settings: settings, rng: SplitMix64(seed: settings.seed)))
        let now = (clock ?? SystemClock() as any WallClock).now()
        let keyDER = try self.store.metaOrInsert("token-signing-key") { try RSAPrivateKey.generate().pkcs8DER }
        let key = try RSAPrivateKey(der: keyDER)
        let certDER = try self.store.metaOrInsert("token-signing-cert") {
            try CertificateIssuer.selfSigned(key: key, subject: .init(commonName: "KeyRoll Entra Emulator token signing"),
                                             notBefore: now.addingTimeInterval(-86_400), notAfter: now.addingTimeInterval(20 * 365 * 86_400)).der
        }
        self.signing = try SigningCredential(privateKey: key, certificate: try X509Certificate(der: certDER))
    }

    public var now: Date { wallClock.now() }

    /// When set, every control-API request (`/_emulator/…`) must carry `Authorization: Bearer
    /// <secret>`; `keyroll-lab emulator --allow-remote` sets it. Compared in constant time.
    public var controlSecret: String? {
        get { state.withLock { $0.controlSecret } }
        set { state.withLock { $0.controlSecret = newValue } }
    }

    func controlAllowed(_ request: EmulatorRequest) -> Bool {
        guard let secret = controlSecret else { return true }
        let given = Array((request.headers["authorization"] ?? "").utf8), expected = Array("Bearer \(secret)".utf8)
        guard given.count == expected.count else { return false }
        return zip(given, expected).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    public var settings: EmulatorSettings {
        get { state.withLock { $0.settings } }
        set { state.withLock { $0.settings = newValue; $0.rng = SplitMix64(seed: newValue.seed) } }
    }

    /// Replaces the fault rules (an empty list switches faults off).
    public func setFaults(_ rules: [FaultRule]) { state.withLock { $0.faults = rules; $0.faultCursor = [:] } }

    /// Handles one request. Never throws: every failure is an Entra- or Graph-shaped error response.
    public func handle(_ request: EmulatorRequest) async -> EmulatorResponse {
        let started = DispatchTime.now()
        let requestID = UUID().uuidString.lowercased()
        var response: EmulatorResponse
        if let fault = pickFault(method: request.method, path: request.path) {
            switch fault {
            case .latency(let s):
                try? await Task.sleep(nanoseconds: UInt64(max(0, min(s, 60)) * 1e9))
                response = route(request, requestID: requestID)
            case .drop:
                response = EmulatorResponse(status: 0)
                response.dropConnection = true
            case .dropResponse:
                response = route(request, requestID: requestID)
                response.dropConnection = true
            case .status(let code, let retryAfter):
                response = faultResponse(request, status: code, retryAfter: retryAfter, requestID: requestID)
            }
        } else {
            response = route(request, requestID: requestID)
        }
        if response.status >= 400, response.body.isEmpty, !response.dropConnection {
            response = enveloped(response, request, requestID: requestID)
        }
        response.headers.append(("request-id", requestID))
        response.headers.append(("client-request-id", request.headers["client-request-id"] ?? requestID))
        response.headers.append(("Date", WireTime.httpDate(now)))
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e6
        record(request, response, elapsedMs: elapsed, requestID: requestID)
        return response
    }

    /// Last line of defence for the rule "every error has its service's envelope": an error that
    /// reached here without a body gets the Graph envelope under `/v1.0` and the Entra one elsewhere.
    /// Such an error is a bug in the route that produced it, so it is logged with the route.
    private func enveloped(_ r: EmulatorResponse, _ request: EmulatorRequest, requestID: String) -> EmulatorResponse {
        logger.warning("a route answered an error without a body; the emulator added its service's envelope",
                       metadata: ["method": "\(request.method)", "path": "\(request.path.split(separator: "?").first ?? "")",
                                  "status": "\(r.status)", "request-id": "\(requestID)"])
        var out: EmulatorResponse
        if request.path.lowercased().hasPrefix("/v1.0") || request.path.lowercased().hasPrefix("/beta") {
            out = GraphError(r.status, r.status >= 500 ? "generalException" : "BadRequest", r.status >= 500 ? "An internal error occurred." : "The request is not valid.")
                .response(now: now, requestID: requestID, clientRequestID: request.headers["client-request-id"])
        } else {
            out = TokenError(r.status >= 500 ? "temporarily_unavailable" : "invalid_request", r.status >= 500 ? 90033 : 90014,
                             r.status >= 500 ? "A transient error has occurred. Please try again." : "The request is not valid.")
                .response(now: now, correlationID: requestID)
            out.status = r.status
        }
        out.headers = r.headers.filter { $0.0.lowercased() != "content-type" && $0.0.lowercased() != "content-length" } + out.headers
        return out
    }

    /// Bodies above this are refused before parsing (Entra and Graph refuse them too).
    public static let maximumBodySize = 4 * 1024 * 1024

    private func route(_ request: EmulatorRequest, requestID: String) -> EmulatorResponse {
        if request.body.count > Self.maximumBodySize {
            if request.path.lowercased().contains("/oauth2/") {
                return TokenError("invalid_request", 90023, "The request body is too large.").response(now: now, correlationID: requestID)
            }
            return GraphError(413, "Request_EntityTooLarge", "The request body is too large.")
                .response(now: now, requestID: requestID, clientRequestID: request.headers["client-request-id"])
        }
        let segments = request.pathSegments
        guard let first = segments.first else { return .text(200, "KeyRoll Entra emulator\n") }
        switch first.lowercased() {
        case "v1.0", "beta":
            return GraphRoutes(emulator: self, request: request, requestID: requestID).respond()
        case "_emulator":
            guard controlAllowed(request) else {
                return .json(401, .object(["error": .object(["code": "Unauthorized",
                                                             "message": "The control API needs Authorization: Bearer <the token in the state folder's control-token file>."])]))
            }
            return ControlRoutes(emulator: self, request: request).respond()
        case "healthz", "readyz":
            let ok = (try? store.integrityCheck()) == "ok"
            return .json(ok ? 200 : 503, .object(["status": .string(ok ? "ok" : "store integrity check failed")]))
        case "metrics":
            return .text(200, metricsText(), contentType: "text/plain; version=0.0.4")
        case "metadata", "subscriptions", "tenants":
            return AzureCLISupport(emulator: self, request: request).respond()
        default:
            return TokenRoutes(emulator: self, request: request).respond()
        }
    }

    // MARK: request log and metrics

    public struct RequestLogEntry: Sendable, Equatable {
        public var time: Date
        public var method: String
        /// The path only: query strings can carry filters with identifiers, never secrets, but are
        /// left out so that nothing a client sends is echoed into logs.
        public var path: String
        public var status: Int
        public var requestID: String
        public var clientRequestID: String?
        public var milliseconds: Double
    }

    /// The most recent requests, oldest first (at most 10,000 are kept).
    public func requestLog() -> [RequestLogEntry] { state.withLock { $0.requestLog } }

    private func record(_ request: EmulatorRequest, _ response: EmulatorResponse, elapsedMs: Double, requestID: String) {
        let family = Self.routeFamily(request)
        let entry = RequestLogEntry(time: now, method: request.method, path: request.path, status: response.status,
                                    requestID: requestID, clientRequestID: request.headers["client-request-id"], milliseconds: elapsedMs)
        state.withLock { s in
            s.requestLog.append(entry)
            if s.requestLog.count > 10_000 { s.requestLog.removeFirst(s.requestLog.count - 10_000) }
            s.metrics["emulator_requests_total{route=\"\(family)\",status=\"\(response.status)\"}", default: 0] += 1
        }
        logger.debug("request", metadata: ["method": "\(request.method)", "path": "\(request.path)", "status": "\(response.status)",
                                           "request_id": "\(requestID)", "ms": "\(Int(elapsedMs))"])
    }

    /// Requests served so far per route family (token, applications, addKey, …), any status.
    public func requestCounts() -> [String: Int] {
        let m = state.withLock { $0.metrics }
        var out: [String: Int] = [:]
        for (k, v) in m where k.hasPrefix("emulator_requests_total{route=\"") {
            let family = k.dropFirst("emulator_requests_total{route=\"".count).prefix { $0 != "\"" }
            out[String(family), default: 0] += v
        }
        return out
    }

    func bump(_ metric: String, by n: Int = 1) { state.withLock { $0.metrics[metric, default: 0] += n } }

    static func routeFamily(_ r: EmulatorRequest) -> String {
        let p = r.path.lowercased()
        if p.contains("/oauth2/") { return "token" }
        if p.hasSuffix("addkey") { return "addKey" }
        if p.hasSuffix("removekey") { return "removeKey" }
        if p.hasPrefix("/beta/auditlogs") || p.hasPrefix("/v1.0/auditlogs") { return "signIns" }
        if p.hasPrefix("/beta/reports") { return "reports" }
        if p.hasPrefix("/v1.0/applications") { return "applications" }
        if p.hasPrefix("/v1.0/serviceprincipals") { return "servicePrincipals" }
        if p.hasPrefix("/v1.0/policies") { return "policies" }
        if p.hasPrefix("/_emulator") { return "control" }
        if p.contains("discovery") || p.contains("well-known") { return "discovery" }
        return "other"
    }

    /// Prometheus text exposition of the emulator's counters.
    public func metricsText() -> String {
        let m = state.withLock { $0.metrics }
        var lines = ["# HELP emulator_requests_total Requests served, by route family and status.", "# TYPE emulator_requests_total counter"]
        lines += m.keys.filter { $0.hasPrefix("emulator_requests_total") }.sorted().map { "\($0) \(m[$0]!)" }
        for (name, help) in [("emulator_tokens_issued_total", "Access tokens minted."),
                             ("emulator_token_failures_total", "Token requests refused."),
                             ("emulator_keys_added_total", "keyCredentials added through addKey."),
                             ("emulator_keys_removed_total", "keyCredentials removed through removeKey."),
                             ("emulator_proof_failures_total", "addKey/removeKey proofs refused."),
                             ("emulator_graph_throttled_total", "Graph requests answered 429.")] {
            lines += ["# HELP \(name) \(help)", "# TYPE \(name) counter", "\(name) \(m[String(name.dropFirst("emulator_".count))] ?? 0)"]
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

func formatSeconds(_ s: Double) -> String {
    s == s.rounded() ? String(Int(s)) : String(format: "%.3f", s)
}
