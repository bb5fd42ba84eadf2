/// How long to wait before trying again: the one backoff formula of KeyRoll. The wait doubles
/// with each attempt from `base` and never exceeds `cap`; with full jitter it is a uniformly random
/// fraction of that, so many clients that failed together do not come back together.
///
/// Used by the token provider and the Graph client (through their retry policy, with full jitter),
/// by the roller while it waits for Entra to propagate a key, by the agent after a failed roll, and by the
/// lean agent's supervisor after a failed pass. It imports nothing, so that the supervisor, which links
/// neither Foundation nor the agent, uses this same formula.
public struct Backoff: Sendable, Equatable {
    public enum Jitter: Sendable, Equatable {
        /// The full delay, every time.
        case none
        /// A random fraction of the delay (AWS's "full jitter").
        case full
    }

    /// The first delay, in seconds.
    public var base: Double
    /// No delay is longer, in seconds.
    public var cap: Double
    public var jitter: Jitter

    public init(base: Double, cap: Double, jitter: Jitter = .none) {
        self.base = base
        self.cap = cap
        self.jitter = jitter
    }

    /// The delay before attempt `attempt + 1` (`attempt` counts from 1): `min(cap, base · 2^(attempt−1))`,
    /// times `random` (in 0…1) with full jitter.
    public func delay(attempt: Int, random: Double = 1) -> Double {
        let exponent = min(max(attempt, 1) - 1, 62)
        let full = min(cap, base * Double(sign: .plus, exponent: exponent, significand: 1))
        switch jitter {
        case .none: return full
        case .full: return full * min(1, max(0, random))
        }
    }
}
