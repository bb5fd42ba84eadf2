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
    let sleeper: any Sleeper
    let logger: Logger
    /// How often each identity proves, between rolls, that its active key still signs in (a fresh
    /// token; `keyroll_last_token_success_timestamp_seconds`). The alert fires after twice this.
    let signInCheckInterval: TimeInterval
    private let lock = NSLock()
    private var reconciled: Set<String> = []
    private var lastError: [String: String] = [:]
    private var lastSignInCheck: [String: Date] = [:]

    public init(rollers: [Roller], clock: any WallClock = SystemClock(), sleeper: any Sleeper = TaskSleeper(),
                logger: Logger = Logger(label: "keyroll.agent"), signInCheckInterval: TimeInterval = 6 * 3600) {
        self.rollers = rollers
        self.clock = clock
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
            do {
                if !isReconciled(r) {
                    try await r.reconcile()
                    lock.withLock { _ = reconciled.insert(r.identity.appId) }
                }
                let outcome = try await r.rollIfDue()
                lock.withLock { lastError[r.identity.appId] = nil }
                failures = 0
                r.metrics.set("keyroll_roll_consecutive_failures", ["app_id": r.identity.appId], 0)
                await checkSignInIfDue(r)
                let status = r.identityStatus()
                if status.alarm >= .warning, let advice = status.advice {
                    logger.warning("\(advice)", metadata: ["app_id": "\(r.identity.appId)", "alarm": "\(status.alarm.rawValue)",
                                                           "time_to_cliff_s": "\(Int(status.timeToCliff ?? 0))"])
                }
                if case .rolled = outcome { MemoryRelease.returnFreedMemory() }
                if case .notDue(let next) = outcome {
                    // Wake when due, and at least hourly to refresh alarms and metrics.
                    try await sleeper.sleep(seconds: min(3600, max(1, next.timeIntervalSince(clock.now()))))
                }
            } catch is CancellationError {
                return
            } catch {
                failures += 1
                lock.withLock { lastError[r.identity.appId] = "\(error)" }
                r.metrics.increment("keyroll_roll_failures_total", ["app_id": r.identity.appId])
                r.metrics.set("keyroll_roll_consecutive_failures", ["app_id": r.identity.appId], Double(failures))
                let delay = Self.failureBackoff.delay(attempt: failures)
                logger.error("roll failed; will retry", metadata: ["app_id": "\(r.identity.appId)", "error": "\(error)", "retry_in_s": "\(Int(delay))"])
                r.refreshMetrics()
                do { try await sleeper.sleep(seconds: delay) } catch { return }
            }
        }
    }

    /// Between rolls, every `signInCheckInterval`: a fresh token with the active key. A failure is
    /// logged and counted (it is what the NoRecentSignIn alert is about); it never stops the loop.
    private func checkSignInIfDue(_ r: Roller) async {
        let now = clock.now()
        if let last = lock.withLock({ lastSignInCheck[r.identity.appId] }), now.timeIntervalSince(last) < signInCheckInterval { return }
        do {
            try await r.checkSignIn()
            lock.withLock { lastSignInCheck[r.identity.appId] = now }
        } catch is CancellationError {
        } catch {
            logger.error("the active key did not get a token; the next check is within the hour", metadata: ["app_id": "\(r.identity.appId)", "error": "\(error)"])
        }
    }

    private func isReconciled(_ r: Roller) -> Bool { lock.withLock { reconciled.contains(r.identity.appId) } }

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
enum MemoryRelease {
    /// glibc's `malloc_trim`, looked up at run time (other C libraries do not have it).
    private static let trim: (@convention(c) (Int) -> Int32)? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return nil }
        return unsafeBitCast(symbol, to: (@convention(c) (Int) -> Int32).self)
        #else
        return nil
        #endif
    }()

    static func returnFreedMemory() { _ = trim?(0) }
}
