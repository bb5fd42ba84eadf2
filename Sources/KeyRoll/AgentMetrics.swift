import CoreMetrics
import Foundation
import Prometheus

/// The agent's metrics, emitted through swift-metrics.
///
/// Every value goes to a `CoreMetrics.MetricsFactory`: by default a swift-prometheus
/// `PrometheusCollectorRegistry`, whose text format ``exposition()`` serves `/metrics`; an
/// embedder passes its own factory (StatsD, OpenTelemetry, …) to ``init(factory:)`` and the agent
/// reports there instead.
///
/// Rules it keeps, whatever the backend:
/// - a family whose labels come from requests (described with `fromRequests: true`) has at most
///   ``maximumSeriesPerFamily`` label sets; a later label set is counted in the family's one
///   overflow series, whose every label value is `other` (a flood of requests cannot grow the
///   registry: the token endpoint bounds its own labels earlier, this is the floor). Families
///   labelled by the agent's own identities and states are never folded: folding `keyroll_alarm`
///   at a few hundred identities would hide an app past its cliff;
/// - a counter only grows (a negative or non-finite increment is dropped), and a gauge holds a
///   finite value;
/// - label values are cut to ``maximumLabelLength`` characters;
/// - a family's help text is fixed by its first series (swift-prometheus requires one text per name).
///
/// ``value(_:_:)`` reads back the last value of a series (the tests and the demo use it; any
/// backend).
public final class MetricsRegistry: @unchecked Sendable {
    /// Label sets per metric family; the rest fold into one `other` series.
    public static let maximumSeriesPerFamily = 500
    /// Longest label value kept.
    public static let maximumLabelLength = 200

    /// The Prometheus registry behind the default factory (nil with an embedder's factory).
    public let prometheus: PrometheusCollectorRegistry?
    private let factory: any MetricsFactory
    private let help: HelpTexts
    private let lock = NSLock()
    private var counters: [String: [LabelSet: CoreMetrics.FloatingPointCounter]] = [:]
    private var gauges: [String: [LabelSet: CoreMetrics.Gauge]] = [:]
    private var values: [String: [LabelSet: Double]] = [:]
    private var fromRequests: Set<String> = []

    /// Metrics kept in a swift-prometheus registry, served by ``exposition()``.
    public convenience init() {
        let registry = PrometheusCollectorRegistry()
        let help = HelpTexts()
        self.init(factory: HelpfulPrometheusFactory(registry: registry, help: help), prometheus: registry, help: help)
    }

    /// Metrics sent to `factory` (any swift-metrics backend).
    public convenience init(factory: any MetricsFactory) {
        self.init(factory: factory, prometheus: nil, help: HelpTexts())
    }

    private init(factory: any MetricsFactory, prometheus: PrometheusCollectorRegistry?, help: HelpTexts) {
        self.factory = factory
        self.prometheus = prometheus
        self.help = help
    }

    /// Describes a family (its help text; `type` documents intent: counter or gauge). A family
    /// whose label values come from requests (`fromRequests`) is bounded to
    /// ``maximumSeriesPerFamily`` series.
    public func describe(_ name: String, _ type: String, _ text: String, fromRequests: Bool = false) {
        help.describe(name, text)
        if fromRequests { lock.withLock { _ = self.fromRequests.insert(name) } }
    }

    /// The metric families described so far (exported once they have a value).
    public var describedFamilies: Set<String> { help.described }

    public func set(_ name: String, _ labels: [String: String] = [:], _ value: Double) {
        guard value.isFinite else { return }
        lock.withLock {
            let key = admitted(name, labels)
            let gauge = gauges[name, default: [:]][key] ?? CoreMetrics.Gauge(label: name, dimensions: key.dimensions, factory: factory)
            gauges[name, default: [:]][key] = gauge
            gauge.record(value)
            values[name, default: [:]][key] = value
        }
    }

    public func increment(_ name: String, _ labels: [String: String] = [:], by v: Double = 1) {
        guard v.isFinite, v >= 0 else { return }
        lock.withLock {
            let key = admitted(name, labels)
            let counter = counters[name, default: [:]][key] ?? CoreMetrics.FloatingPointCounter(label: name, dimensions: key.dimensions, factory: factory)
            counters[name, default: [:]][key] = counter
            counter.increment(by: v)
            values[name, default: [:]][key, default: 0] += v
        }
    }

    /// The last value of a series (a gauge's value, a counter's total).
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        lock.withLock { values[name]?[LabelSet(labels)] }
    }

    /// Every counter series (`counters`) or every gauge series, with its value.
    public func series(counters: Bool) -> [Series] {
        lock.withLock {
            var out: [Series] = []
            for (name, byLabels) in values {
                for (key, value) in byLabels where (self.counters[name]?[key] != nil) == counters {
                    out.append(Series(name: name, labels: Dictionary(key.dimensions, uniquingKeysWith: { a, _ in a }), value: value))
                }
            }
            return out.sorted { ($0.name, $0.labels.description) < ($1.name, $1.labels.description) }
        }
    }

    /// Removes a gauge series (e.g. a certificate the agent no longer holds).
    public func remove(_ name: String, _ labels: [String: String]) {
        lock.withLock {
            let key = LabelSet(labels)
            gauges[name]?.removeValue(forKey: key)?.destroy()
            values[name]?[key] = nil
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of the default registry; empty with an
    /// embedder's factory.
    public func exposition() -> String { prometheus?.emitToString() ?? "" }

    /// The label set a series is kept under: its own while the family has room (or is not
    /// request-derived), else the family's overflow series. Called with the lock held.
    private func admitted(_ name: String, _ labels: [String: String]) -> LabelSet {
        let key = LabelSet(labels)
        guard fromRequests.contains(name) else { return key }
        let known = (counters[name]?.count ?? 0) + (gauges[name]?.count ?? 0)
        if counters[name]?[key] != nil || gauges[name]?[key] != nil || known < Self.maximumSeriesPerFamily { return key }
        return LabelSet(labels.mapValues { _ in "other" })
    }

    /// A series' labels: sorted by name, values cut to ``maximumLabelLength``.
    struct LabelSet: Hashable {
        let dimensions: [(String, String)]
        init(_ labels: [String: String]) {
            dimensions = labels.sorted { $0.key < $1.key }.map { ($0.key, String($0.value.prefix(MetricsRegistry.maximumLabelLength))) }
        }
        static func == (a: LabelSet, b: LabelSet) -> Bool { a.dimensions.elementsEqual(b.dimensions) { $0 == $1 } }
        func hash(into h: inout Hasher) { for (k, v) in dimensions { h.combine(k); h.combine(v) } }
    }
}

/// Help texts by family, each fixed once a series of it exists (swift-prometheus stops the
/// process when one name is registered with two texts).
final class HelpTexts: @unchecked Sendable {
    private let lock = NSLock()
    private var texts: [String: String] = [:]
    private var fixed: [String: String] = [:]

    func describe(_ name: String, _ text: String) { lock.withLock { texts[name] = text } }
    var described: Set<String> { lock.withLock { Set(texts.keys) } }

    /// The text a new series of `name` is registered with: the one its family was first given.
    func text(for name: String) -> String {
        lock.withLock {
            if let f = fixed[name] { return f }
            let t = texts[name] ?? ""
            fixed[name] = t
            return t
        }
    }
}

/// swift-prometheus's factory with `# HELP` texts (its own registers every family without one).
struct HelpfulPrometheusFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let help: HelpTexts

    /// The family's name with its fixed help text (an empty unit adds no suffix).
    func descriptor(_ name: String) -> MetricNameDescriptor { MetricNameDescriptor(metricName: name, unitName: "", helpText: help.text(for: name)) }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }
    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        aggregate
            ? registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: [0.01, 0.1, 1, 10, 100])
            : registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }
    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: [.milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)])
    }
    func destroyCounter(_ handler: any CounterHandler) { (handler as? Prometheus.Counter).map(registry.unregisterCounter) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { (handler as? Prometheus.Counter).map(registry.unregisterCounter) }
    func destroyRecorder(_ handler: any RecorderHandler) {
        if let g = handler as? Prometheus.Gauge { registry.unregisterGauge(g) } else if let h = handler as? ValueHistogram { registry.unregisterValueHistogram(h) }
    }
    func destroyMeter(_ handler: any MeterHandler) { (handler as? Prometheus.Gauge).map(registry.unregisterGauge) }
    func destroyTimer(_ handler: any TimerHandler) { (handler as? DurationHistogram).map(registry.unregisterDurationHistogram) }
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
        m.describe("keyroll_token_endpoint_connections_closed_total", "counter", "Token-endpoint connections the agent closed to stay within its bounds, by reason (too_many, head_timeout).")
        return m
    }
}
