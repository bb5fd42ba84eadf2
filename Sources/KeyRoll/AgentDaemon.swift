import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Runs many identities: each reconciles at start, then sleeps until its next roll is due (timers,
/// no polling), rolls, and on failure backs off (1 min doubling to 1 h) while it keeps trying.
public final class AgentDaemon: @unchecked Sendable {
    /// Waits after a failed roll: 1, 2, 4 … minutes, at most an hour.
    static let failureBackoff = Backoff(base: 60, cap: 3600)
    public let rollers: [Roller]
    let clock: any WallClock
    /// Schedules the registration checks: a wall-clock step back cannot put them off.
    let monotonic: any MonotonicClock
    let sleeper: any Sleeper
    let logger: Logger
    /// An upper bound on each identity's `registrationCheckInterval`: how often it proves, between
    /// rolls, that its active key still signs in (a fresh token;
    /// `keyroll_last_token_success_timestamp_seconds`).
    let signInCheckInterval: TimeInterval
    private let lock = NSLock()
    private var reconciled: Set<String> = []
    private var lastError: [String: String] = [:]
    /// When each identity's next registration check is due, on the monotonic clock.
    private var nextWatch: [String: Double] = [:]

    public init(rollers: [Roller], clock: any WallClock = SystemClock(), sleeper: any Sleeper = TaskSleeper(),
                logger: Logger = Logger(label: "keyroll.agent"), signInCheckInterval: TimeInterval = 600, monotonic: (any MonotonicClock)? = nil) {
        self.rollers = rollers
        self.clock = clock
        // a virtual clock is the monotonic clock of a virtual run; a real one uses the machine's
        self.monotonic = monotonic ?? (clock as? ManualClock) ?? SystemMonotonicClock()
        self.sleeper = sleeper
        self.logger = logger
        self.signInCheckInterval = signInCheckInterval
    }

    /// Until cancelled.
    public func run() async {
        await withTaskGroup(of: Void.self) { group in
            for r in rollers { group.addTask { await self.loop(r) } }
        }
    }

    private func loop(_ r: Roller) async {
        var failures = 0
        while !Task.isCancelled {
            guard let wait = await iterate(r, failures: &failures) else { return }
            guard wait > 0 else { continue }
            do { try await sleeper.sleep(seconds: wait) } catch { return }
        }
    }

    /// One turn of an identity's loop: reconcile (once), roll if due, check the registration if due.
    /// Returns the seconds to wait before the next turn (0: at once, after a roll), nil when cancelled.
    func iterate(_ r: Roller, failures: inout Int) async -> Double? {
        do {
            if !isReconciled(r) {
                try await r.reconcile()
                lock.withLock { _ = reconciled.insert(key(r)) }
            }
            let outcome = try await r.rollIfDue()
            lock.withLock { lastError[key(r)] = nil }
            failures = 0
            r.metrics.set("keyroll_roll_consecutive_failures", ["app_id": r.identity.appId], 0)
            await watchIfDue(r)
            let status = r.identityStatus()
            if status.alarm >= .warning, let advice = status.advice {
                logger.warning("\(advice)", metadata: ["app_id": "\(r.identity.appId)", "alarm": "\(status.alarm.rawValue)",
                                                       "time_to_cliff_s": "\(Int(status.timeToCliff ?? 0))"])
            }
            switch outcome {
            case .notDue(let next):
                // Wake when the roll (wall clock) or the next registration check (monotonic) is due.
                let watchIn = (lock.withLock { nextWatch[key(r)] } ?? 0) - monotonic.monotonicSeconds()
                return min(3600, max(1, min(next.timeIntervalSince(clock.now()), watchIn)))
            default:
                if case .rolled = outcome { MemoryRelease.returnFreedMemory() }
                return 0
            }
        } catch is CancellationError {
            return nil
        } catch {
            failures += 1
            lock.withLock { lastError[key(r)] = "\(error)" }
            r.metrics.increment("keyroll_roll_failures_total", ["app_id": r.identity.appId])
            r.metrics.set("keyroll_roll_consecutive_failures", ["app_id": r.identity.appId], Double(failures))
            let delay = Self.failureBackoff.delay(attempt: failures)
            logger.error("roll failed; will retry", metadata: ["app_id": "\(r.identity.appId)", "error": "\(error)", "retry_in_s": "\(Int(delay))"])
            r.refreshMetrics()
            return delay
        }
    }

    /// Between rolls, the registration watch (``Roller/watchRegistration()``): every
    /// `registrationCheckInterval` at most, each wait drawn between half and all of it so a fleet's
    /// checks spread out. It proves the active key still signs in (a fresh token), repairs a key a
    /// stale write dropped, and removes keys that came back. A failure is logged and counted; it
    /// never stops the loop, and the next check comes at the same pace.
    private func watchIfDue(_ r: Roller) async {
        let now = monotonic.monotonicSeconds()
        if let due = lock.withLock({ nextWatch[key(r)] }), now < due { return }
        let interval = min(r.policy.registrationCheckInterval, signInCheckInterval)
        lock.withLock { nextWatch[key(r)] = now + interval * Double.random(in: 0.5...1) }
        do {
            let report = try await r.watchRegistration()
            if !report.removedAgain.isEmpty || report.repaired {
                logger.warning("registration check repaired the identity", metadata: ["app_id": "\(r.identity.appId)", "repaired": "\(report.repaired)",
                                                                                     "removed_again": "\(report.removedAgain.joined(separator: ","))"])
            }
        } catch is CancellationError {
        } catch {
            r.metrics.increment("keyroll_registration_check_failures_total", ["app_id": r.identity.appId])
            logger.error("registration check failed; the next one is within \(Int(interval)) s", metadata: ["app_id": "\(r.identity.appId)", "error": "\(error)"])
        }
    }

    /// When each identity's next registration check is due (monotonic clock), for a lean pass's carry.
    func watchSchedule() -> [String: Double] { lock.withLock { nextWatch } }
    func setWatchSchedule(_ s: [String: Double]) { lock.withLock { nextWatch = s } }

    /// Identities are keyed by app and replica: two replicas of one app in one agent keep apart.
    func key(_ r: Roller) -> String { r.identity.appId + (r.identity.replica.map { "@" + $0.rawValue } ?? "") }

    private func isReconciled(_ r: Roller) -> Bool { lock.withLock { reconciled.contains(key(r)) } }

    /// Ready once every identity has reconciled its journal with Entra.
    public var isReady: Bool { lock.withLock { reconciled.count == rollers.count } }

    /// Healthy unless an identity is critical or past the cliff.
    public func health() -> (healthy: Bool, identities: [IdentityStatus], errors: [String: String]) {
        let statuses = rollers.map { $0.identityStatus() }
        return (statuses.allSatisfy { $0.alarm < .critical }, statuses, lock.withLock { lastError })
    }
}

/// A roll allocates a few hundred kilobytes (key generation, TLS, JSON) that the allocator keeps
/// after it is freed; an agent then sleeps for months. Handing the freed pages back to the system
/// keeps an idle agent's private memory at what it holds, not at its busiest moment.
public enum MemoryRelease {
    /// A C library function looked up at run time: glibc has `malloc_trim` and `mallopt`, other C
    /// libraries may not, and then the call is skipped.
    private static func glibc<F>(_ name: String, as type: F.Type) -> F? {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }
        return unsafeBitCast(symbol, to: type)
        #else
        return nil
        #endif
    }

    private static let trim = glibc("malloc_trim", as: (@convention(c) (Int) -> Int32).self)
    private static let mallopt = glibc("mallopt", as: (@convention(c) (Int32, Int32) -> Int32).self)

    static func returnFreedMemory() { _ = trim?(0) }

    /// Caps glibc's malloc arenas (`M_ARENA_MAX`, glibc's malloc.h: -8). glibc gives each thread that
    /// allocates an arena of its own, up to 8 per core; an agent's few threads share `count`.
    public static func limitArenas(to count: Int32) { _ = mallopt?(-8, count) }
}
