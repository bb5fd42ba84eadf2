import Foundation
import KeyRollPrimitives

/// What one pass of the lean agent (`keyroll agent --lean`) hands the next: the state the resident
/// agent keeps in memory between turns. Losing it costs nothing but timing — a lost carry means the
/// next pass checks every registration at once and counts failures from zero — so it holds no
/// decision about a credential (those are the journal's).
public struct PassCarry: Codable, Equatable, Sendable {
    /// Roll failures in a row, per identity (the backoff).
    public var failures: [String: Int] = [:]
    /// When each identity's next registration check is due, on the boot-time clock of ``bootID``.
    public var watchDueBootSeconds: [String: Double] = [:]
    public var bootID: String?
    /// Counters (which only grow, so Prometheus sees no reset between passes) and the gauges a pass
    /// sets only when an event happens (a sign-in, a registration check).
    public var series: [MetricsRegistry.Series] = []
    /// Stores a pass could not open (a lock held elsewhere), with how many passes in a row: the
    /// backoff of their retries.
    public var unopened: [String: Int] = [:]

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        failures = try c.decodeIfPresent([String: Int].self, forKey: .failures) ?? [:]
        watchDueBootSeconds = try c.decodeIfPresent([String: Double].self, forKey: .watchDueBootSeconds) ?? [:]
        bootID = try c.decodeIfPresent(String.self, forKey: .bootID)
        series = try c.decodeIfPresent([MetricsRegistry.Series].self, forKey: .series) ?? []
        unopened = try c.decodeIfPresent([String: Int].self, forKey: .unopened) ?? [:]
    }

    /// Gauges set by events rather than recomputed from the journal at every start.
    static let carriedGauges: Set<String> = ["keyroll_last_token_success_timestamp_seconds", "keyroll_active_key_registered", "keyroll_clock_offset_seconds"]
}

extension AgentDaemon {
    /// One pass of the lean agent: every identity, concurrently, turns as the resident loop would
    /// (reconcile, roll if due, check the registration if due) until it has nothing due now.
    /// Returns the carry for the next pass and the seconds until the soonest next turn (1 s … 1 h).
    ///
    /// `keepingUnseen`: some configured store could not be opened this pass; the carried counters
    /// and failure counts of identities that did not run are handed on (and exported) unchanged,
    /// rather than dropped as of an identity no longer configured.
    public func runPass(carry: PassCarry, keepingUnseen: Bool = false) async -> (carry: PassCarry, wakeIn: Double) {
        seed(from: carry, keepingUnseen: keepingUnseen)
        let turns = await withTaskGroup(of: (String, Int, Double).self) { group in
            for r in rollers {
                let start = carry.failures[key(r)] ?? 0
                group.addTask {
                    var failures = start
                    var wait = 0.0
                    // a roll returns 0 (turn again: the next turn finds it not due); four bound a pass
                    for _ in 0..<4 {
                        guard let w = await self.iterate(r, failures: &failures) else { break }
                        wait = w
                        if w > 0 { break }
                    }
                    return (self.key(r), failures, max(1, wait))
                }
            }
            var all: [(String, Int, Double)] = []
            for await t in group { all.append(t) }
            return all
        }
        var next = PassCarry()
        next.bootID = monotonic.bootID()
        let sinceBoot = monotonic.secondsSinceBoot(), now = monotonic.monotonicSeconds()
        for (k, f, _) in turns where f > 0 { next.failures[k] = f }
        if keepingUnseen {
            let ran = Set(turns.map(\.0))
            for (k, f) in carry.failures where !ran.contains(k) { next.failures[k] = f }
        }
        for (k, due) in watchSchedule() { next.watchDueBootSeconds[k] = sinceBoot + (due - now) }
        if let metrics = rollers.first?.metrics {
            next.series = metrics.series(counters: true) + metrics.series(counters: false).filter { PassCarry.carriedGauges.contains($0.name) }
        }
        return (next, min(3600, turns.map(\.2).min() ?? 3600))
    }

    /// Loads what the last pass left: its counters and event gauges (for certificates still held),
    /// failure counts, and registration-check times of this same boot (one due more than an hour
    /// ahead is of another clock: due now).
    private func seed(from carry: PassCarry, keepingUnseen: Bool) {
        if let metrics = rollers.first?.metrics {
            let held = Set(rollers.flatMap { r in r.journal.credentials.filter { !$0.isRetained }.map { r.identity.appId + "/" + $0.thumbprint } })
            let apps = Set(rollers.map(\.identity.appId))
            // series of identities no longer configured end with them
            for s in carry.series where keepingUnseen || (s.labels["app_id"].map(apps.contains) ?? true) {
                if PassCarry.carriedGauges.contains(s.name) {
                    if let t = s.labels["thumbprint"], !held.contains((s.labels["app_id"] ?? "") + "/" + t) { continue }
                    metrics.set(s.name, s.labels, s.value)
                } else {
                    metrics.increment(s.name, s.labels, by: s.value)
                }
            }
        }
        guard let boot = carry.bootID, boot == monotonic.bootID() else { return }
        let sinceBoot = monotonic.secondsSinceBoot(), now = monotonic.monotonicSeconds()
        var schedule: [String: Double] = [:]
        for (k, due) in carry.watchDueBootSeconds {
            let remaining = due - sinceBoot
            if remaining > 0, remaining <= 3600 { schedule[k] = now + remaining }
        }
        setWatchSchedule(schedule)
    }
}

extension MetricsRegistry {
    /// One series and its value.
    public struct Series: Codable, Equatable, Sendable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
        public init(name: String, labels: [String: String], value: Double) {
            self.name = name
            self.labels = labels
            self.value = value
        }
    }
}
