import EntraCrypto
import EntraEmulator
import Foundation
import Testing
import TestSupport

/// A big tenant answers lookups from indexes: the same answers as a scan, and query plans that
/// search an index rather than scan the table (timings are the benchmark's job: `keyroll-lab bench tenant`).
@Suite struct TenantScaleTests {
    @Test func filteredLookupsUseIndexesAndAgreeWithAScan() async throws {
        let w = try await GraphWorld()
        let tenant = w.rig.tenant.id
        try w.rig.emulator.seedApplications(tenantID: tenant, count: 8000, prefix: "svc-")
        try w.rig.emulator.seedApplications(tenantID: tenant, count: 30, prefix: "team-a-", tags: ["team:a", "env:prod"])
        let all = try w.rig.emulator.applications(tenantID: tenant)
        #expect(all.count == 8000 + 30 + 2)

        func list(_ query: String) async throws -> [String] {
            var names: [String] = []
            var next: String? = "/v1.0/applications?" + query
            while let path = next {
                let r = await w.rig.graph("GET", path.replacingOccurrences(of: w.rig.base, with: ""), token: w.adminToken)
                #expect(r.status == 200, "\(path): \(r.status) \(String(decoding: r.body, as: UTF8.self).prefix(200))")
                names += (r.json?["value"]?.arrayValue ?? []).compactMap { $0["displayName"]?.stringValue }
                next = r.json?["@odata.nextLink"]?.stringValue
            }
            return names
        }
        let byName = try await list("$filter=displayName%20eq%20'svc-4321'")
        #expect(byName == ["svc-4321"])
        let prefixed = try await list("$filter=startswith(displayName,'svc-799')&$top=3")
        #expect(prefixed == all.map(\.displayName).filter { $0.lowercased().hasPrefix("svc-799") }, "paged in creation order")
        #expect(prefixed.count == 11)
        let tagged = try await list("$filter=tags/any(t:t%20eq%20'team:a')&$top=7")
        #expect(tagged == (0..<30).map { "team-a-\($0)" })
        let both = try await list("$filter=tags/any(t:t%20eq%20'env:prod')%20and%20startswith(displayName,'team-a-2')")
        #expect(both == ["team-a-2"] + (20..<30).map { "team-a-\($0)" })
        let one = all.first { $0.displayName == "svc-17" }!
        #expect(try await list("$filter=appId%20eq%20'\(one.appId)'") == ["svc-17"])
        let counted = await w.rig.graph("GET", "/v1.0/applications?$count=true&$top=5", token: w.adminToken)
        #expect(counted.json?["@odata.count"] == .int(8032))

        // the plans of the very statements the store runs: every lookup searches an index; none
        // scans the application table (each names the index it must search by: walking the
        // tenant's (tenant_id, seq) index is a scan too)
        let expected: [(String, [String])] = [
            ("displayName eq 'x'", ["application_seq", "application_name (tenant_id=? AND display_name=?)"]),
            ("startswith(displayName,'svc')", ["application_seq", "application_name (tenant_id=? AND display_name>? AND display_name<?)"]),
            ("tags/any(t:t eq 'team:a')", ["application_seq", "PRIMARY KEY (tenant_id=? AND tag=?)"]),
            ("appId eq 'x'", ["application_seq", "(app_id=?)"]),
            ("id eq 'x'", ["application_seq", "(id=?)"]),
        ]
        for (filter, indexes) in expected {
            let plans = try w.rig.emulator.applicationLookupPlans(tenantID: tenant, filter: filter)
            #expect(plans.count == indexes.count, "\(filter): \(plans)")
            for ((sql, plan), index) in zip(plans, indexes) {
                #expect(plan.contains(index) && !plan.contains("SCAN application"), "\(filter): \(sql)\nexpected a search by \(index), got:\n\(plan)")
            }
        }
    }
}
