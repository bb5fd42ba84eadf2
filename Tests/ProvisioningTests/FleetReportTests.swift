import EntraClient
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

@Suite struct FleetReportRuleTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func app(_ name: String, _ worst: AppCondition, cliffDays: Double?, managed: Bool = true) -> AppAudit {
        AppAudit(name: name, appId: "6f1c2d3e-0000-4000-8000-\(String(format: "%012d", abs(name.hashValue) % 1_000_000))", objectId: "o", managed: managed,
                 credentials: [], conditions: [worst], cliff: cliffDays.map { now.addingTimeInterval($0 * 86_400) }, replicas: [])
    }

    @Test func atRiskIsOrderedByTimeToTheCliffWithTheFixForEach() {
        let a = FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: [
            app("ok", .healthy, cliffDays: 200), app("soon", .expiringSoon, cliffDays: 9), app("gone", .pastCliff, cliffDays: nil),
            app("boot", .bootstrapNotRolled, cliffDays: 1.5), app("later", .expiringSoon, cliffDays: 20), app("foreign", .unmanaged, cliffDays: nil, managed: false),
        ])
        let rows = FleetReport.atRisk(a)
        #expect(rows.map(\.name) == ["gone", "boot", "soon", "later"])
        #expect(rows[0].fix.hasPrefix("keyroll rebootstrap --app ") && rows[1].fix.contains("keyroll roll --store /var/lib/keyroll/stores/boot"))
        #expect(rows[2].fix.contains("keyroll status --store"))
    }

    @Test func theHistogramCountsWeeksAndTheRedBucketsApart() {
        let a = FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: [
            app("a", .healthy, cliffDays: 0.5), app("b", .healthy, cliffDays: 6.99), app("c", .healthy, cliffDays: 7), app("d", .healthy, cliffDays: 89),
            app("e", .healthy, cliffDays: 91), app("f", .pastCliff, cliffDays: nil), app("g", .bootstrapNotRolled, cliffDays: 1), app("h", .unmanaged, cliffDays: 3, managed: false),
        ])
        let h = FleetReport.histogram(a)
        #expect(h.weeks[0] == 2 && h.weeks[1] == 1 && h.weeks[12] == 1 && h.weeks.reduce(0, +) == 4)
        #expect(h.pastCliff == 1 && h.bootstrapNotRolled == 1 && h.later == 1)
    }

    @Test func noNameCanBreakOutOfThePage() {
        let evil = app("</script><script>alert(1)</script>", .pastCliff, cliffDays: nil)
        let html = FleetReport.html(FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: [evil]))
        #expect(!html.contains("<script>alert(1)"), "the name is escaped in the table and in the data")
        #expect(html.components(separatedBy: "</script>").count == 3, "only the page's own two script elements close")
    }
}

/// The report as people see it: rendered by headless Chromium at 100 and at 10,000 apps (seeded
/// by the emulator), loaded in under 2 s, holding the numbers the audit computed.
@Suite(.serialized) struct FleetReportBrowserTests {
    static func chromium() throws -> String {
        for path in ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"] where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw ToolError("headless Chromium is not installed: apt-get install chromium (scripts/test does)")
    }

    static func flags(_ dir: String) -> [String] {
        ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--user-data-dir=" + dir + "/profile"]
    }

    static func browse(_ html: String, dir: String, screenshot: String? = nil) async throws -> (dom: String, seconds: Double) {
        let file = dir + "/report.html"
        try Tools.write(html, to: file)
        let flags = Self.flags(dir)
        let started = Date()
        let dump = try await Tools.run([try chromium()] + flags + ["--dump-dom", "file://" + file])
        let seconds = Date().timeIntervalSince(started)
        #expect(dump.status == 0, "\(dump.stderr.suffix(800))")
        if let screenshot {
            // the top of the page, and the table searched for "stale" (apps with a stale replica) with the first match's timeline
            for (path, url) in [(screenshot + ".png", "file://" + file), (screenshot + "-table.png", "file://" + file + "#q=stale")] {
                let shot = try await Tools.run([try chromium()] + flags + ["--window-size=1400,1800", "--hide-scrollbars", "--screenshot=" + path, url])
                #expect(shot.status == 0 && FileManager.default.fileExists(atPath: path), "\(shot.stderr.suffix(800))")
            }
        }
        return (dump.stdout, seconds)
    }

    static func attribute(_ name: String, in dom: String) -> Int? {
        guard let r = dom.range(of: name + "=\"") else { return nil }
        return Int(dom[r.upperBound...].prefix { $0.isNumber })
    }

    static func count(_ id: String, in dom: String) -> Int? {
        guard let r = dom.range(of: "id=\"\(id)\">") else { return nil }
        return Int(dom[r.upperBound...].prefix { $0.isNumber })
    }

    @Test(arguments: [100, 10_000])
    func theFleetReportLoadsFastAndHoldsTheNumbers(apps: Int) async throws {
        let c = try Central()
        let made = try c.rig.emulator.seedFleet(tenantID: c.rig.tenant.id, count: apps, seed: 7)
        let scanStarted = Date()
        let audit = try await Auditor(graph: c.provisioner.graph).scan(now: c.rig.clock.now(), expiringWithinDays: 30, managedOnly: true)
        let scanSeconds = Date().timeIntervalSince(scanStarted)
        #expect(audit.apps.count == apps)
        let counts = audit.counts
        #expect(counts[.pastCliff, default: 0] == made.pastCliff && counts[.drift, default: 0] == made.drift)
        #expect(counts[.bootstrapNotRolled, default: 0] == made.bootstrapNotRolled && audit.staleReplicas == made.staleReplicas)
        #expect(counts[.healthy, default: 0] + counts[.expiringSoon, default: 0] == made.healthy + made.replicated + made.expiringSoon)
        let renderStarted = Date()
        let html = AuditReport.html(audit)
        let renderSeconds = Date().timeIntervalSince(renderStarted)
        let dir = try Tools.temporaryDirectory("keyroll-report")
        let shots = ProcessInfo.processInfo.environment["KEYROLL_SCREENSHOT_DIR"] ?? dir
        let (dom, seconds) = try await Self.browse(html, dir: dir, screenshot: shots + "/fleet-report-\(apps)")
        // what the page computed in the browser
        let loaded = try #require(Self.attribute("data-loaded-ms", in: dom), "the page's script did not finish: \(dom.prefix(400))")
        let rendered = try #require(Self.attribute("data-rendered-ms", in: dom))
        #expect(loaded < 2000, "the page took \(loaded) ms to load and render")
        #expect(Self.attribute("data-apps", in: dom) == apps)
        #expect(Self.attribute("data-at-risk", in: dom) == FleetReport.atRisk(audit).count)
        for c in AppCondition.allCases where c != .unmanaged {
            #expect(Self.count("count-\(c.rawValue)", in: dom) == counts[c, default: 0], "\(c.rawValue) card")
        }
        #expect(Self.count("count-stale-replicas", in: dom) == made.staleReplicas)
        let h = FleetReport.histogram(audit)
        let bars = dom.components(separatedBy: "data-count=\"").dropFirst().compactMap { Int($0.prefix { $0.isNumber }) }
        #expect(bars == [h.pastCliff, h.bootstrapNotRolled] + h.weeks, "the histogram's bars")
        let appsTable = try #require(dom.components(separatedBy: "<table id=\"apps\">").last?.components(separatedBy: "</table>").first)
        let tableRows = appsTable.components(separatedBy: "<tr class=\"app ").count - 1
        let replicaRows = appsTable.components(separatedBy: "<tr class=\"replica ").count - 1
        let replicasOnPage = audit.apps.sorted { ($0.cliff ?? .distantPast) < ($1.cliff ?? .distantPast) }.prefix(100).reduce(0) { $0 + $1.replicas.count }
        #expect(replicaRows > 0 || replicasOnPage == 0, "replicas are grouped under their app: \(replicaRows) rows")
        #expect(tableRows == min(100, apps), "the first page of the table: \(tableRows) rows")
        #expect(dom.contains("id=\"found\">\(apps) of \(apps)<") && dom.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"900\""), "the table's count and the first app's timeline")
        // sorted by time to the cliff: the first row is past it; a search finds exactly the apps with a stale replica
        let firstRow = appsTable.components(separatedBy: "<tr class=\"app ").dropFirst().first ?? ""
        #expect(firstRow.hasPrefix("past-cliff") || made.pastCliff == 0, "the table starts at the closest cliff: \(firstRow.prefix(120))")
        let searched = try await Tools.run([try Self.chromium()] + Self.flags(dir) + ["--dump-dom", "file://" + dir + "/report.html#q=stale"])
        #expect(searched.stdout.contains("id=\"found\">\(made.staleReplicas) of \(apps)<"), "searching 'stale' finds the \(made.staleReplicas) apps with a stale replica")
        print(String(format: "fleet report, %d apps: audit scan %.2f s, HTML %.2f s (%d KiB), Chromium %.2f s (page loaded in %d ms, script %d ms)",
                     apps, scanSeconds, renderSeconds, html.utf8.count / 1024, seconds, loaded, rendered))
    }
}
