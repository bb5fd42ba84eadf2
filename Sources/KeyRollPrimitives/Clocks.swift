import Foundation

/// A source of wall-clock time, injected everywhere time matters.
///
/// Pure logic never reads a clock (every function takes `now`); this protocol is how the client,
/// the agent and the emulator are given one, so a test or the demo can drive all of them from one
/// virtual clock.
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

/// Waits. Real code sleeps; virtual-clock runs advance the clock instead.
public protocol Sleeper: Sendable {
    func sleep(seconds: Double) async throws
}

/// Sleeps for real, suspending the task (never blocking a thread).
public struct TaskSleeper: Sleeper {
    public init() {}
    public func sleep(seconds: Double) async throws {
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
    }
}

/// For virtual-clock runs (tests, the demo): "sleeping" advances the clock instantly.
public struct ClockAdvancingSleeper: Sleeper {
    public let clock: ManualClock
    public init(clock: ManualClock) { self.clock = clock }
    public func sleep(seconds: Double) async throws {
        try Task.checkCancellation()
        clock.advance(by: max(0, seconds))
        await Task.yield()
    }
}
