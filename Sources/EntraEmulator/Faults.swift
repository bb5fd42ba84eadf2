import Foundation

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

/// A small, seedable PRNG (SplitMix64) so fault and delay choices are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
