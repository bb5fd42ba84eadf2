import Foundation

/// A source of wall-clock time, injected everywhere time matters.
///
/// EntraCrypto itself never reads a clock (every function takes `now`); the protocol lives here so that
/// the client, the agent and the emulator share one definition and a test or the demo can drive all
/// of them from one virtual clock.
public protocol WallClock: Sendable {
    func now() -> Date
}

/// The machine's clock.
public struct SystemClock: WallClock {
    public init() {}
    public func now() -> Date { Date() }
}
