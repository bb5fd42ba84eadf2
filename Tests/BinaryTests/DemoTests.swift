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
        // the app on three hosts: each replica rolled on its own, one more joined, one was retired
        for replica in ["web-frontend r1", "web-frontend r3", "web-frontend r4"] {
            let row = try #require(summary.split(separator: "\n").first { $0.hasPrefix(replica) }, "\(replica) missing")
            #expect(row.split(separator: " ", omittingEmptySubsequences: true)[4] == "never", "\(row)")
        }
        #expect(r.stdout.contains("scale out → replica r4") && r.stdout.contains("the 3 keys of r1–r3 untouched"))
        #expect(r.stdout.contains("scale in  → replica r2 retired"))
        #expect(r.stdout.contains("web-frontend: 3 replicas in Entra"))
        for replica in ["r1", "r3", "r4"] { #expect(r.stdout.contains("replica \(replica)   healthy"), "\(replica) is not healthy") }
        // the same seed gives the same timeline (jitter, delays and faults are seeded)
        let again = try Tools.run([Binaries.lab, "demo", "--apps", "3", "--years", "2", "--seed", "11"])
        func timeline(_ s: String) -> [Substring] { s.split(separator: "\n").filter { $0.contains("→") }.map { $0.split(separator: "→")[0] } }
        #expect(timeline(again.stdout) == timeline(r.stdout))
    }

    /// The brownfield scenario: a legacy app moves to KeyRoll and its secret is removed only after
    /// the evidence window; the app that keeps using its secret keeps it; rolls stay inside the
    /// tenant's 90-day policy.
    @Test
    func brownfieldDemoRetiresASecretOnlyOnEvidence() throws {
        try Binaries.require()
        let r = try Tools.run([Binaries.lab, "demo", "--scenario", "brownfield"])
        #expect(r.status == 0, "\(r.stdout.suffix(3000)) \(r.stderr.suffix(1000))")
        for line in ["✔ legacy-orders' secret was removed 14 days after the app moved to KeyRoll", "✔ legacy-reports still uses its secret, so it was never removed.",
                     "✔ No app was ever without a registered, valid, proven key.", "secret retirement: intent → completed"] {
            #expect(r.stdout.contains(line), "missing: \(line)")
        }
        // refused first, with the date the evidence would suffice; removed once it did
        let timeline = r.stdout.split(separator: "\n")
        let refused = try #require(timeline.firstIndex { $0.contains("legacy-orders") && $0.contains("refused") && $0.contains("evidence would suffice on") })
        let removed = try #require(timeline.firstIndex { $0.contains("legacy-orders") && $0.contains("secrets retire --apply: removed") })
        #expect(refused < removed)
        #expect(!timeline.contains { $0.contains("legacy-reports") && $0.contains("secrets retire --apply") })
        #expect(timeline.contains { $0.contains("rolled (inside the policy)") }, "a roll after adoption")
    }

    /// One identity's keys live in a SoftHSM2 token through three simulated years: the same
    /// lockout summary, every rolled key generated and used in the token, none left in a file.
    @Test
    func demoWithSoftHSMKeepsEveryRolledKeyInTheToken() throws {
        try Binaries.require()
        let r = try Tools.run([Binaries.lab, "demo", "--apps", "2", "--years", "3", "--replicas", "0", "--key-store", "softhsm2"])
        #expect(r.status == 0, "\(r.stdout.suffix(3000)) \(r.stderr.suffix(1000))")
        #expect(r.stdout.contains("orders-api: its agent generates every key inside a SoftHSM2 token"))
        #expect(r.stdout.contains("✔ No app was ever without a registered, valid, proven key."))
        #expect(r.stdout.contains("✔ orders-api never held a key"))
        #expect(r.stdout.contains("it holds one key pair now (the active key), and no private key exists anywhere in the agent's store"), "\(r.stdout.suffix(1500))")
        let rolls = r.stdout.split(separator: "\n").filter { $0.contains("orders-api") && ($0.contains("rolled") || $0.contains("bootstrap retired")) }
        #expect(rolls.count >= 4, "bootstrap and about 4 rolls in 3 years: \(rolls.count)")
    }
}
