/// KeyRoll's one seedable pseudo-random generator (SplitMix64, Steele et al. 2014): the
/// emulator's faults and delays, the demo's and the lab's simulated fleets, and the fuzz tests'
/// mutations all draw from it, so a seed reproduces a run exactly. Not for secrets: keys and
/// tokens come from the system's generator.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniformly distributed number in `0..<1`.
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
