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

/// A clock that moves only when told: the emulator's virtual clock, and the one tests and the demo
/// use to run years of certificate lifetimes in seconds.
public final class ManualClock: WallClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    public init(_ start: Date) { current = start }

    public func now() -> Date { lock.withLock { current } }

    public func set(_ date: Date) { lock.withLock { current = date } }

    @discardableResult
    public func advance(by seconds: TimeInterval) -> Date {
        lock.withLock {
            current = current.addingTimeInterval(seconds)
            return current
        }
    }
}
