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
    /// Its virtual boot (``MonotonicClock/bootID()``): rollers sharing the clock share the boot.
    fileprivate let boot = "virtual-" + UUID().uuidString

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
    /// Names the boot ``secondsSinceBoot()`` counts from, so a reading can be told to be of another
    /// boot; nil when it cannot be read.
    func bootID() -> String?
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
        // CLOCK_MONOTONIC if BOOTTIME were refused: it stops while suspended, so still a lower bound
        guard clock_gettime(CLOCK_BOOTTIME, &t) == 0 || clock_gettime(CLOCK_MONOTONIC, &t) == 0 else { return 0 }
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }
    /// `KEYROLL_BOOT_ID` (the packaged unit sets it to systemd's `%b`: its sandbox hides
    /// /proc/sys), else the kernel's `/proc/sys/kernel/random/boot_id`, in one form
    /// (``canonicalBootID(_:)``): an agent under the unit and `keyroll roll` run by hand agree.
    public func bootID() -> String? { Self.boot }
    private static let boot: String? = {
        if let passed = canonicalBootID(ProcessInfo.processInfo.environment["KEYROLL_BOOT_ID"] ?? "") { return passed }
        guard let data = FileManager.default.contents(atPath: "/proc/sys/kernel/random/boot_id") else { return nil }
        return canonicalBootID(String(decoding: data.prefix(128), as: UTF8.self))
    }()

    /// A boot id as 32 lower-case hex digits: systemd's `%b` has no dashes, the kernel's
    /// `boot_id` is a dashed UUID. Nil for anything else (an empty or mangled value is unknown).
    public static func canonicalBootID(_ text: String) -> String? {
        let id = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased().filter { $0 != "-" }
        return id.count == 32 && id.allSatisfy(\.isHexDigit) ? id : nil
    }
}

/// Virtual runs: the virtual clock is the only time there is, so it is the monotonic one too.
extension ManualClock: MonotonicClock {
    public func monotonicSeconds() -> Double { now().timeIntervalSince1970 }
    public func secondsSinceBoot() -> Double { now().timeIntervalSince1970 }
    /// One virtual boot per clock: rollers sharing a clock share a boot.
    public func bootID() -> String? { boot }
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
/// reload hook) has run: the *shorter* of the wall-clock reading and the machine's boot-time clock
/// (``MonotonicClock/secondsSinceBoot()``), read when the window began and now.
///
/// The wall clock can be stepped forward (NTP correcting a clock that was behind, a VM resumed from
/// a snapshot), which alone would end a window at once; the boot-time clock cannot be stepped and
/// counts suspended time, so within one boot its difference is the real time, across restarts too.
/// Taking the shorter, a window ends only when both agree that it has. After a reboot the boot-time
/// readings cannot be compared, and the wall clock alone decides: a window then still ends on a host
/// that reboots more often than it lasts (a reboot and a forward step together could shorten it).
public enum WindowElapsed {
    /// - Parameters:
    ///   - wallSince: when the window began, as journaled on the wall clock.
    ///   - bootSince: the boot-time reading when it began.
    ///   - sameBoot: whether both readings are of the same boot (nil: unknown; then a reading that
    ///     went back tells a reboot, and one that did not counts as the same boot, which can only
    ///     make the window longer).
    public static func seconds(wallSince: Date, wallNow: Date, bootSince: Double, bootNow: Double, sameBoot: Bool?) -> TimeInterval {
        let wall = wallNow.timeIntervalSince(wallSince)
        guard sameBoot != false, bootNow >= bootSince else { return max(0, wall) }
        return max(0, min(wall, bootNow - bootSince))
    }

    /// Whether two boot ids name the same boot: nil when either is unknown.
    public static func sameBoot(_ a: String?, _ b: String?) -> Bool? {
        guard let a, let b else { return nil }
        return a == b
    }

    /// Whether a reading (`stampSeconds` of boot `stampID`) is of a boot before this one: the ids
    /// differ, or, with either unknown, the boot-time clock went back.
    public static func isAnotherBoot(stampID: String?, stampSeconds: Double, nowID: String?, nowSeconds: Double) -> Bool {
        sameBoot(stampID, nowID).map { !$0 } ?? (nowSeconds < stampSeconds)
    }
}
