import KeyRoll
import MetricsTestKit
import Testing

/// The agent's metrics go through swift-metrics: to swift-prometheus's registry by default (the
/// `/metrics` text), or to any backend an embedder passes; the series bound holds for both.
@Suite struct MetricsRegistryTests {
    @Test func theDefaultBackendServesPrometheusTextWithHelpAndTypes() {
        let m = MetricsRegistry.agent()
        m.increment("keyroll_rolls_total", ["app_id": "a", "outcome": "rolled"])
        m.increment("keyroll_rolls_total", ["outcome": "rolled", "app_id": "a"], by: 2)
        m.set("keyroll_time_to_cliff_seconds", ["app_id": "a"], 3600)
        let text = m.exposition()
        #expect(text.contains("# HELP keyroll_rolls_total Rolls finished, by outcome."))
        #expect(text.contains("# TYPE keyroll_rolls_total counter"))
        #expect(text.contains("# TYPE keyroll_time_to_cliff_seconds gauge"))
        // one series whatever the order the labels were given in, labels sorted
        let rolls = text.split(separator: "\n").filter { $0.hasPrefix("keyroll_rolls_total{") }
        #expect(rolls.count == 1)
        #expect(rolls.first?.hasPrefix("keyroll_rolls_total{app_id=\"a\",outcome=\"rolled\"} 3") == true, "\(rolls)")
        #expect(m.value("keyroll_rolls_total", ["app_id": "a", "outcome": "rolled"]) == 3)
        // a removed gauge series leaves the text
        m.remove("keyroll_time_to_cliff_seconds", ["app_id": "a"])
        #expect(!m.exposition().contains("keyroll_time_to_cliff_seconds{"))
        #expect(m.value("keyroll_time_to_cliff_seconds", ["app_id": "a"]) == nil)
    }

    @Test func aFamilyHoldsABoundedNumberOfSeriesAndFoldsTheRestIntoOther() {
        let m = MetricsRegistry()
        m.describe("x_total", "counter", "X.", fromRequests: true)
        let n = MetricsRegistry.maximumSeriesPerFamily
        for i in 0..<(n + 300) { m.increment("x_total", ["resource": "r\(i)", "status": "400"]) }
        let series = m.exposition().split(separator: "\n").filter { $0.hasPrefix("x_total{") }
        #expect(series.count == n + 1, "\(series.count) series")
        #expect(m.value("x_total", ["resource": "other", "status": "other"]) == 300)
        // an admitted series keeps counting under its own labels
        m.increment("x_total", ["resource": "r0", "status": "400"])
        #expect(m.value("x_total", ["resource": "r0", "status": "400"]) == 2)
        // label values are cut
        m.set("y", ["v": String(repeating: "z", count: 5000)], 1)
        #expect(m.exposition().split(separator: "\n").first { $0.hasPrefix("y{") }.map { $0.count < 300 } == true)
    }

    /// The agent's own families (one series per identity and alarm level) are never folded: at a
    /// few hundred identities, folding `keyroll_alarm` would hide an app past its cliff in `other`.
    @Test func familiesOfTheAgentsOwnIdentitiesAreNeverFolded() {
        let m = MetricsRegistry()
        m.describe("keyroll_alarm", "gauge", "Alarm level.")
        let identities = MetricsRegistry.maximumSeriesPerFamily / 5 + 50
        for i in 0..<identities {
            for level in ["ok", "warning", "critical", "pastCliff", "unknown"] { m.set("keyroll_alarm", ["app_id": "app-\(i)", "level": level], level == "ok" ? 1 : 0) }
        }
        m.set("keyroll_alarm", ["app_id": "app-\(identities - 1)", "level": "pastCliff"], 1)
        #expect(m.value("keyroll_alarm", ["app_id": "app-\(identities - 1)", "level": "pastCliff"]) == 1)
        #expect(m.exposition().contains("keyroll_alarm{app_id=\"app-\(identities - 1)\",level=\"pastCliff\"} 1"))
        #expect(m.value("keyroll_alarm", ["app_id": "other", "level": "other"]) == nil)
        // a counter only grows; a gauge holds a finite value
        m.increment("keyroll_rolls_total", ["app_id": "a"], by: 2)
        m.increment("keyroll_rolls_total", ["app_id": "a"], by: -5)
        m.increment("keyroll_rolls_total", ["app_id": "a"], by: .nan)
        m.set("keyroll_time_to_cliff_seconds", ["app_id": "a"], 7)
        m.set("keyroll_time_to_cliff_seconds", ["app_id": "a"], .infinity)
        #expect(m.value("keyroll_rolls_total", ["app_id": "a"]) == 2)
        #expect(m.value("keyroll_time_to_cliff_seconds", ["app_id": "a"]) == 7)
    }

    @Test func anEmbeddersBackendReceivesEveryValue() throws {
        let backend = TestMetrics()
        let m = MetricsRegistry(factory: backend)
        m.increment("keyroll_keygens_total", ["app_id": "a"])
        m.increment("keyroll_keygens_total", ["app_id": "a"])
        m.set("keyroll_alarm", ["app_id": "a", "level": "ok"], 1)
        #expect(try backend.expectCounter("keyroll_keygens_total", [("app_id", "a")]).totalValue == 2)
        #expect(try backend.expectGauge("keyroll_alarm", [("app_id", "a"), ("level", "ok")]).lastValue == 1)
        #expect(m.exposition().isEmpty)
        #expect(m.prometheus == nil)
    }

    /// swift-prometheus stops the process when a family is registered with a second help text:
    /// a family's text is the one it had when its first series was made.
    @Test func describingAFamilyAgainAfterItsFirstSeriesCannotCrash() {
        let m = MetricsRegistry()
        m.describe("z_total", "counter", "First.")
        m.increment("z_total", ["k": "1"])
        m.describe("z_total", "counter", "Second.")
        m.increment("z_total", ["k": "2"])
        #expect(m.exposition().contains("# HELP z_total First."))
    }
}
