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

/// Monotonic time for in-process waits (the settle, verification windows, the reload hook's
/// grace): it never jumps when the wall clock is stepped, and it counts time the machine spent
/// suspended, so a pause cannot make a wait look shorter than it was.
public protocol MonotonicClock: Sendable {
    /// Seconds since an arbitrary fixed point of this process.
    func monotonicSeconds() -> Double
    /// The machine's boot-time clock (`CLOCK_BOOTTIME`): the same for every process, never stepped,
    /// counting time suspended, and back at 0 after each boot. So a later reading minus an earlier
    /// one — across restarts, and across reboots when the later is the larger — is never more than
    /// the real time between them; after a reboot that made it smaller, the later reading alone is
    /// still a lower bound. Windows kept across restarts are measured on it (``WindowElapsed``).
    func secondsSinceBoot() -> Double
}

/// The machine's monotonic clock: Swift's `ContinuousClock` (CLOCK_BOOTTIME on Linux), which keeps
/// counting while the machine is suspended.
public struct SystemMonotonicClock: MonotonicClock {
    private static let origin = ContinuousClock.now
    public init() {}
    public func monotonicSeconds() -> Double {
        let d = ContinuousClock.now - Self.origin
        return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
    }
    public func secondsSinceBoot() -> Double {
        var t = timespec()
        guard clock_gettime(CLOCK_BOOTTIME, &t) == 0 else { return 0 }  // 0: the smallest lower bound
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
}

/// Virtual runs: the virtual clock is the only time there is, so it is the monotonic one too.
extension ManualClock: MonotonicClock {
    public func monotonicSeconds() -> Double { now().timeIntervalSince1970 }
    public func secondsSinceBoot() -> Double { now().timeIntervalSince1970 }
}

/// Waits. Real code sleeps; virtual-clock runs advance the clock instead.
public protocol Sleeper: Sendable {
    func sleep(seconds: Double) async throws
}

/// Sleeps for real, suspending the task (never blocking a thread), on the continuous clock: a
/// wall-clock step neither shortens nor lengthens the wait, and suspended time counts.
public struct TaskSleeper: Sleeper {
    public init() {}
    public func sleep(seconds: Double) async throws {
        let s = seconds.isFinite ? min(max(0, seconds), 10 * 365 * 86_400) : 0
        try await Task.sleep(for: .nanoseconds(Int64(s * 1_000_000_000)), clock: .continuous)
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

/// How long a window that guards a destructive step (releasing a retained key, giving up on a
/// reload hook) has run: the *shorter* of the wall-clock reading and a lower bound of the real time
/// taken from the machine's boot-time clock (``MonotonicClock/secondsSinceBoot()``).
///
/// The wall clock can be stepped forward (NTP correcting a clock that was behind, a VM resumed from
/// a snapshot), which alone would end a window at once; the boot-time clock cannot be stepped, and
/// its difference never exceeds the real time, across restarts and reboots. Taking the shorter, a
/// window ends only when both agree that it has: a step can delay it, never hasten it.
public enum WindowElapsed {
    /// What to do when the machine rebooted since the window began (the boot-time clock went back).
    public enum AfterReboot: Sendable {
        /// Count only this boot's uptime: a lower bound of the real time (a window that only delays,
        /// such as keeping a retained key).
        case uptime
        /// Trust the wall clock alone (a window that must end some day, such as the reload hook's
        /// grace, which would otherwise keep a roll open on a host that reboots daily).
        case wallClock
    }

    /// - Parameters:
    ///   - wallSince: when the window began, as journaled on the wall clock.
    ///   - bootSince: the boot-time reading when it began (nil: not stamped; give `bootNow`'s
    ///     reading when this process first saw the window instead).
    public static func seconds(wallSince: Date, wallNow: Date, bootSince: Double, bootNow: Double, afterReboot: AfterReboot) -> TimeInterval {
        let wall = wallNow.timeIntervalSince(wallSince)
        let real: Double
        if bootNow >= bootSince {
            real = bootNow - bootSince
        } else {
            switch afterReboot {
            case .uptime: real = bootNow
            case .wallClock: real = wall
            }
        }
        return max(0, min(wall, real))
    }
}
