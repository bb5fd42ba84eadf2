import EntraCrypto
import Foundation
import KeyRollPrimitives
import Testing
import TestSupport

/// CI runs the benchmarks only as a smoke test with tiny N: the figures are not asserted (machines
/// differ), only that every benchmark runs, reports a value and a same-run bound.
@Suite struct BenchSmokeTests {
    @Test
    func benchmarksRunAndReportBounds() throws {
        try Binaries.require()
        for argv in [["bench", "rolls", "--apps", "4", "--json"], ["bench", "crypto", "--seconds", "0.3", "--keys", "1", "--json"]] {
            let r = try Tools.run([Binaries.lab] + argv)
            #expect(r.status == 0, "\(argv): \(r.stderr.suffix(500))")
            let lines = r.stdout.split(separator: "\n").filter { $0.hasPrefix("{") }
            #expect(!lines.isEmpty, "\(argv) printed no figures")
            for line in lines {
                let j = try JSONValue.parse(Array(line.utf8))
                let v: Double
                switch j["value"] {
                case .double(let d)?: v = d
                case .int(let i)?: v = Double(i)
                default: Issue.record("value: \(line)"); continue
                }
                #expect(v > 0, "\(line)")
                #expect(j["bound"] != nil && j["boundName"]?.stringValue != nil, "no bound: \(line)")
            }
        }
    }
}
