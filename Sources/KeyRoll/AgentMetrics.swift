import Foundation

/// A small thread-safe Prometheus registry (text exposition format 0.0.4).
public final class MetricsRegistry: @unchecked Sendable {
    private let lock = NSLock()
    private var gauges: [String: [String: Double]] = [:]
    private var counters: [String: [String: Double]] = [:]
    private var help: [String: (String, String)] = [:]

    public init() {}

    public func describe(_ name: String, _ type: String, _ text: String) { lock.withLock { help[name] = (type, text) } }

    /// The metric families described so far (exported once they have a value).
    public var describedFamilies: Set<String> { lock.withLock { Set(help.keys) } }

    public func set(_ name: String, _ labels: [String: String] = [:], _ value: Double) {
        lock.withLock { gauges[name, default: [:]][Self.render(labels)] = value }
    }

    public func increment(_ name: String, _ labels: [String: String] = [:], by v: Double = 1) {
        lock.withLock { counters[name, default: [:]][Self.render(labels), default: 0] += v }
    }

    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        lock.withLock { gauges[name]?[Self.render(labels)] ?? counters[name]?[Self.render(labels)] }
    }

    public func remove(_ name: String, _ labels: [String: String]) { lock.withLock { gauges[name]?[Self.render(labels)] = nil } }

    public func exposition() -> String {
        lock.withLock {
            var out = ""
            for (name, series) in (gauges.merging(counters) { a, b in a.merging(b) { $1 } }).sorted(by: { $0.key < $1.key }) {
                if let (type, text) = help[name] { out += "# HELP \(name) \(text)\n# TYPE \(name) \(type)\n" }
                for (labels, v) in series.sorted(by: { $0.key < $1.key }) {
                    let value = v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
                    out += "\(name)\(labels) \(value)\n"
                }
            }
            return out
        }
    }

    static func render(_ labels: [String: String]) -> String {
        guard !labels.isEmpty else { return "" }
        let esc = { (s: String) in s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n") }
        return "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(esc($0.value))\"" }.joined(separator: ",") + "}"
    }
}

extension MetricsRegistry {
    /// Registers the agent's metric families.
    public static func agent() -> MetricsRegistry {
        let m = MetricsRegistry()
        m.describe("keyroll_certificate_not_after_seconds", "gauge", "NotAfter (unix time) of each certificate the agent holds.")
        m.describe("keyroll_next_roll_timestamp_seconds", "gauge", "When the next roll is planned (unix time).")
        m.describe("keyroll_time_to_cliff_seconds", "gauge", "Seconds until no certificate the agent holds is valid: after that self-service rolling is impossible.")
        m.describe("keyroll_alarm", "gauge", "1 for the identity's current alarm level (ok, warning, critical, pastCliff).")
        m.describe("keyroll_rolls_total", "counter", "Rolls finished, by outcome.")
        m.describe("keyroll_roll_failures_total", "counter", "Roll attempts that failed (the agent keeps its key and retries with backoff).")
        m.describe("keyroll_roll_consecutive_failures", "gauge", "Roll attempts failed in a row since the last success (0 when the last attempt succeeded).")
        m.describe("keyroll_last_token_success_timestamp_seconds", "gauge", "Last successful token request per certificate (unix time): during a roll's verification, and at every registration check (≤ 10 minutes) between rolls.")
        m.describe("keyroll_token_errors_total", "counter", "Token endpoint errors by AADSTS code.")
        m.describe("keyroll_graph_errors_total", "counter", "Graph errors by code.")
        m.describe("keyroll_clock_offset_seconds", "gauge", "Entra's clock minus this machine's, learned from Date headers.")
        m.describe("keyroll_roll_phase", "gauge", "1 while a roll is at this phase.")
        m.describe("keyroll_roll_phase_since_timestamp_seconds", "gauge", "When the roll in progress entered its current phase (unix time; 0 when idle).")
        m.describe("keyroll_reload_hook_failures_total", "counter", "Reload hook runs that failed (the old key stays registered meanwhile).")
        m.describe("keyroll_keygens_total", "counter", "RSA key pairs generated.")
        m.describe("keyroll_keygen_cpu_seconds_total", "counter", "CPU seconds spent generating RSA key pairs (thread CPU time).")
        m.describe("keyroll_active_key_registered", "gauge", "1 when the last registration check saw the active key registered, 0 when Entra refuses it and it could not be registered again.")
        m.describe("keyroll_registration_checks_total", "counter", "Registration checks between rolls (every ≤ 10 minutes).")
        m.describe("keyroll_registration_check_failures_total", "counter", "Registration checks that could not decide (Entra unreachable or throttling).")
        m.describe("keyroll_repairs_total", "counter", "Re-registrations of a dropped key, by kind (dropped_before_switch, active_dropped, no_prover).")
        m.describe("keyroll_removed_again_total", "counter", "Keys this agent had removed that came back (a stale write) and were removed again.")
        m.describe("keyroll_unremovable_keys_total", "counter", "Removed keys still registered under a keyId the agent cannot see (no self-read).")
        m.describe("keyroll_retained_keys", "gauge", "Removed keys whose private key is kept to undo a stale write.")
        m.describe("keyroll_add_key_refused_total", "counter", "addKey refusals no retry can change (the roll ended), by code.")
        m.describe("keyroll_removal_refused_total", "counter", "Removals the removal guard refused (the registration stays, with an alarm).")
        return m
    }
}
