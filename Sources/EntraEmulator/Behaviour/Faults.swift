import EntraCrypto
import Foundation
import KeyRollPrimitives

/// An injected fault: what to do to requests matching a route.
public struct FaultRule: Sendable, Codable, Equatable {
    public enum Action: Sendable, Codable, Equatable {
        /// Answer with this status (500, 503, 504 …) in the matching service's error shape.
        case status(Int, retryAfter: Double?)
        /// Delay the answer by this many real seconds, then serve normally.
        case latency(Double)
        /// Close the connection without answering (the request is not processed).
        case drop
        /// Process the request, then close the connection without answering: the write happened,
        /// the client cannot know it (the case that makes blind retries of writes dangerous).
        case dropResponse
    }

    /// Matches `METHOD path-prefix` (e.g. `POST /v1.0/applications`), `*` for any method; a path
    /// containing `/addKey` matches any addKey route. `token` is short for every token endpoint.
    public var route: String
    public var action: Action
    /// Chance that a matching request is hit (0…1), used when `sequence` is empty.
    public var probability: Double
    /// Scripted outcomes for successive matching requests (true = fault); after it runs out, no faults.
    public var sequence: [Bool]

    public init(route: String, action: Action, probability: Double = 1, sequence: [Bool] = []) {
        self.route = route
        self.action = action
        self.probability = probability
        self.sequence = sequence
    }

    func matches(method: String, path: String) -> Bool {
        if route == "token" { return path.lowercased().contains("/oauth2/") }
        let parts = route.split(separator: " ", maxSplits: 1).map(String.init)
        let (m, p) = parts.count == 2 ? (parts[0], parts[1]) : ("*", parts[0])
        guard m == "*" || m.uppercased() == method else { return false }
        if p.contains("/addKey") || p.contains("/removeKey") {
            let action = p.contains("/addKey") ? "addkey" : "removekey"
            return path.lowercased().hasSuffix(action)
        }
        return path.lowercased().hasPrefix(p.lowercased())
    }
}

/// Faults as a layer in front of the routes: ``handle(_:)`` asks for one before routing.
extension EntraEmulator {
    // MARK: faults

    func pickFault(method: String, path: String) -> FaultRule.Action? {
        state.withLock { s in
            for (i, rule) in s.faults.enumerated() where rule.matches(method: method, path: path) {
                if !rule.sequence.isEmpty {
                    let pos = s.faultCursor[i, default: 0]
                    s.faultCursor[i] = pos + 1
                    if pos < rule.sequence.count, rule.sequence[pos] { return rule.action }
                    continue
                }
                if Double(s.rng.next() % 1_000_000) / 1_000_000 < rule.probability { return rule.action }
            }
            return nil
        }
    }

    func faultResponse(_ request: EmulatorRequest, status: Int, retryAfter: Double?, requestID: String) -> EmulatorResponse {
        var headers: [(String, String)] = []
        if let retryAfter { headers.append(("Retry-After", formatSeconds(retryAfter))) }
        if request.path.lowercased().contains("/oauth2/") {
            var r = EmulatorResponse.json(status, .object([
                "error": "temporarily_unavailable",
                "error_description": .string("AADSTS90033: A transient error has occurred. Please try again.\r\nTrace ID: \(requestID)\r\nCorrelation ID: \(requestID)\r\nTimestamp: \(WireTime.tokenTimestamp(now))"),
                "error_codes": .array([90033]), "timestamp": .string(WireTime.tokenTimestamp(now)),
                "trace_id": .string(requestID), "correlation_id": .string(requestID),
            ]))
            r.headers += headers
            return r
        }
        let code = status == 503 ? "serviceNotAvailable" : status == 504 ? "gatewayTimeout" : status == 429 ? "TooManyRequests" : "generalException"
        return GraphError(status, code, "Injected fault (\(status)).", headers: headers)
            .response(now: now, requestID: requestID, clientRequestID: request.headers["client-request-id"])
    }
}
