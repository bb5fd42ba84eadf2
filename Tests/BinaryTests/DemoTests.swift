import Foundation
import Testing
import TestSupport

@Suite struct DemoTests {
    @Test
    func demoRollsEveryAppWithoutLockout() throws {
        try Binaries.require()
        let r = try Tools.run([Binaries.lab, "demo", "--apps", "3", "--years", "2", "--seed", "11"])
        #expect(r.status == 0, "\(r.stdout.suffix(2000)) \(r.stderr.suffix(1000))")
        #expect(r.stdout.contains("✔ No app was ever without a registered, valid, proven key."))
        let rollLines = r.stdout.split(separator: "\n").filter { $0.contains("rolled") || $0.contains("bootstrap retired") }
        #expect(rollLines.count >= 3 * 3, "bootstrap + about 3 rolls in 2 years per app: \(rollLines.count)")
        #expect(r.stdout.contains("bootstrap retired"))
        // every app ends with exactly one key in Entra
        let summary = r.stdout.components(separatedBy: "Summary after")[1]
        for app in ["orders-api", "billing-worker", "search-indexer"] {
            let row = try #require(summary.split(separator: "\n").first { $0.hasPrefix(app) })
            let cols = row.split(separator: " ", omittingEmptySubsequences: true)
            #expect(cols[3] == "never", "\(row)")
            #expect(cols[6] == "1", "\(row)")
        }
        // the same seed gives the same timeline (jitter, delays and faults are seeded)
        let again = try Tools.run([Binaries.lab, "demo", "--apps", "3", "--years", "2", "--seed", "11"])
        func timeline(_ s: String) -> [Substring] { s.split(separator: "\n").filter { $0.contains("→") }.map { $0.split(separator: "→")[0] } }
        #expect(timeline(again.stdout) == timeline(r.stdout))
    }
}
