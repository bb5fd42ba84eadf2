import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

@Suite struct ReplicaNamingTests {
    @Test func replicaNamesAreShortPlainAndOrdered() throws {
        for ok in ["r1", "r250", "web-3", "a"] { #expect(throws: Never.self) { try ReplicaName(ok) } }
        for bad in ["", "R1", "1r", "r 1", "r1@x", "../r1", String(repeating: "r", count: 17), "r\u{0}"] {
            #expect(throws: ReplicaName.Invalid.self, "\(bad.debugDescription)") { try ReplicaName(bad) }
        }
        let names = try ["r10", "web", "r2", "r1"].map(ReplicaName.init).sorted().map(\.rawValue)
        #expect(names == ["r1", "r2", "r10", "web"], "numbered replicas sort by number")
        #expect(ReplicaName.numbered(3).rawValue == "r3" && ReplicaName.numbered(3).number == 3)
        #expect(try ReplicaName("r03").number == nil, "r03 is a name, not the number 3")
    }

    @Test func credentialNamesCarryTheReplicaWhereGraphShowsThem() throws {
        let r2 = try ReplicaName("r2")
        #expect(CredentialName.bootstrapCN(replica: r2) == "keyroll-bootstrap@r2")
        #expect(CredentialName.bootstrapCN(replica: nil) == "keyroll-bootstrap")
        #expect(CredentialName.parse(displayName: "CN=keyroll-bootstrap@r2") == .init(isKeyRoll: true, isBootstrap: true, replica: r2))
        #expect(CredentialName.parse(displayName: "CN=keyroll-bootstrap") == .init(isKeyRoll: true, isBootstrap: true, replica: nil))
        #expect(CredentialName.parse(displayName: "CN=keyroll-bootstrap").isBootstrap)
        let own = CredentialName.parse(displayName: "CN=keyroll-6f1c2d3e-0000-4000-8000-000000000001@r2")
        #expect(own.isKeyRoll && !own.isBootstrap && own.replica == r2)
        #expect(CredentialName.parse(displayName: "CN=keyroll-6f1c2d3e-0000-4000-8000-000000000001").replica == nil)
        #expect(CredentialName.parse(displayName: "CN=someone-else@r2") == .init(isKeyRoll: false, isBootstrap: false, replica: nil),
                "a foreign key's @suffix is not a KeyRoll replica marker")
        #expect(CredentialName.parse(displayName: "CN=keyroll-x@NOT VALID").replica == nil)
        #expect(CredentialName.parse(displayName: nil).isKeyRoll == false)
    }
}

@Suite struct ReplicaManifestTests {
    @Test func replicasParseFromYAMLAndCSVWithOneBundlePerReplica() throws {
        let y = try Manifest.parseYAML("""
            apps:
              - name: web
                replicas: 3
              - name: api
            """, baseDir: "/m")
        #expect(y.apps[0].replicas == 3 && y.apps[1].replicas == nil)
        #expect(y.apps[0].replicaNames.map(\.rawValue) == ["r1", "r2", "r3"])
        #expect(y.apps[0].bundlePath(for: .numbered(2)) == "/m/bundles/web.r2.json")
        #expect(y.apps[1].bundlePath(for: nil) == "/m/bundles/api.json")
        let c = try Manifest.parseCSV("name,replicas\nweb,4\napi,\n", baseDir: "/m")
        #expect(c.apps[0].replicas == 4 && c.apps[1].replicas == nil)
    }

    @Test func capacityIsTheKeyCredentialLimitOverTwo() throws {
        #expect(ReplicaCapacity().maximumReplicas == 250)
        #expect(throws: Never.self) { try Manifest.parseYAML("apps: [{name: web, replicas: 250}]", baseDir: "") }
        do {
            _ = try Manifest.parseYAML("apps: [{name: web, replicas: 251}]", baseDir: "")
            Issue.record("251 replicas were accepted")
        } catch let e as Manifest.ManifestError {
            #expect(e.description.contains("at most 250") && e.description.contains("several app registrations"), "\(e)")
        }
        let small = "defaults: {keyCredentialLimit: 6}\napps: [{name: web, replicas: %d}]"
        #expect(throws: Never.self) { try Manifest.parseYAML(String(format: small, 3), baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML(String(format: small, 4), baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("apps: [{name: web, replicas: 0}]", baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("apps: [{name: web, replicas: three}]", baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("defaults: {keyCredentialLimit: 5000}\napps: [{name: web}]", baseDir: "") }
        // web.r1.json would collide with an app named web.r1
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("apps: [{name: web, replicas: 2}, {name: web.r1}]", baseDir: "") }
    }
}

@Suite struct ReplicaAuditRuleTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let day: TimeInterval = 86_400

    func key(_ name: String, startDaysAgo: Double, lifetimeDays: Double) -> KeyCredential {
        KeyCredential(keyId: UUID().uuidString.lowercased(), displayName: name, startDateTime: now.addingTimeInterval(-startDaysAgo * day),
                      endDateTime: now.addingTimeInterval((lifetimeDays - startDaysAgo) * day), type: "AsymmetricX509Cert", usage: "Verify")
    }

    func app(_ keys: [KeyCredential]) -> Application {
        Application(id: UUID().uuidString.lowercased(), appId: "6f1c2d3e-0000-4000-8000-000000000001", displayName: "web", keyCredentials: keys,
                    tags: [Provisioner.managedTag])
    }

    @Test func eachReplicaIsClassifiedOnItsOwn() {
        let a = app([
            key("CN=keyroll-x@r1", startDaysAgo: 100, lifetimeDays: 365),       // healthy
            key("CN=keyroll-bootstrap@r2", startDaysAgo: 0.5, lifetimeDays: 2),  // bootstrap not rolled
            key("CN=keyroll-x@r3", startDaysAgo: 340, lifetimeDays: 365),       // overdue: it should have rolled at ~243 days
            key("CN=keyroll-x@r4", startDaysAgo: 20, lifetimeDays: 30),         // within its window, but ends in 10 days
            key("CN=keyroll-x@r5", startDaysAgo: 400, lifetimeDays: 365),       // all expired
        ])
        let audit = AuditRules.classify(a, now: now, expiringWithin: 14 * day)
        let byName = Dictionary(uniqueKeysWithValues: audit.replicas.map { ($0.replica.rawValue, $0) })
        #expect(byName["r1"]?.condition == .healthy)
        #expect(byName["r2"]?.condition == .bootstrapNotRolled)
        #expect(byName["r3"]?.condition == .stale)
        #expect(byName["r4"]?.condition == .expiringSoon)
        #expect(byName["r5"]?.condition == .stale)
        #expect(byName["r3"]?.retireCommand?.hasPrefix("keyroll retire --app \(a.appId) --replica r3 --reason") == true)
        #expect(byName["r1"]?.retireCommand == nil)
        #expect(audit.replicas.map(\.replica.rawValue) == ["r1", "r2", "r3", "r4", "r5"])
        #expect(audit.conditions.contains(.bootstrapNotRolled) && audit.conditions.contains(.expiringSoon))
    }

    @Test func anAppIsHealthyWhenEveryLiveReplicaIsAndAStaleOneIsReported() {
        let a = app([key("CN=keyroll-x@r1", startDaysAgo: 100, lifetimeDays: 365), key("CN=keyroll-x@r2", startDaysAgo: 10, lifetimeDays: 365),
                     key("CN=keyroll-x@r3", startDaysAgo: 355, lifetimeDays: 365)])  // r3 stopped rolling and expires in 10 days
        let audit = AuditRules.classify(a, now: now, expiringWithin: 30 * day)
        #expect(audit.worst == .healthy, "the stale replica's expiring key does not make the app unhealthy: \(audit.conditions)")
        #expect(audit.staleReplicas.map(\.replica.rawValue) == ["r3"])
        let fleet = FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: [audit])
        #expect(fleet.exitCode == 1, "a stale replica still needs an operator")
        let table = AuditReport.table(fleet)
        #expect(table.contains("└ replica r3") && table.contains("keyroll retire --app \(a.appId) --replica r3"))
        let html = AuditReport.html(fleet)
        #expect(html.contains(#"[["r1","healthy"],["r2","healthy"],["r3","stale"]]"#), "the report's data groups the replicas under their app")
        #expect(html.contains("id=\"count-stale-replicas\">1<") && html.contains("stale-replica"), "the stale replica is counted and listed at risk")
        // replica_condition, then key_store (where the agent said it keeps the key) close each row
        let rows = AuditReport.csv(fleet).split(separator: "\n").dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        #expect(rows.allSatisfy { ["healthy", "stale"].contains($0[$0.count - 2]) && $0.last == "file" }, "\(rows)")
    }

    @Test func aSingleHostAppHasNoReplicaRows() {
        let a = app([key("CN=keyroll-x", startDaysAgo: 10, lifetimeDays: 365)])
        #expect(AuditRules.classify(a, now: now, expiringWithin: day).replicas.isEmpty)
    }
}

@Suite struct ReplicaProvisioningTests {
    func manifest(_ c: Central, replicas: Int) -> Manifest {
        Manifest(apps: [.init(name: "web", bundlePath: "\(c.dir)/bundles/web.json", replicas: replicas)])
    }

    func run(_ c: Central, _ m: Manifest) async throws -> ProvisionRun.Outcome? {
        let report = try await ProvisionRun(provisioner: c.provisioner, manifest: m, log: try ProvisionLog(path: c.dir + "/provision.log")).execute()
        #expect(report.failures.isEmpty, "\(report.failures)")
        return report.outcomes["web"]
    }

    @Test func replicasGetOneBundleEachAndScaleOutLeavesSiblingsAlone() async throws {
        let c = try Central()
        guard case .replicas(let appId, true, let issued, [], [])? = try await run(c, manifest(c, replicas: 3)) else { Issue.record("expected a create"); return }
        #expect(issued.map(\.rawValue) == ["r1", "r2", "r3"])
        let keys = try c.rig.emulator.keyCredentials(appId: appId)
        #expect(keys.compactMap(\.displayName).sorted() == ["CN=keyroll-bootstrap@r1", "CN=keyroll-bootstrap@r2", "CN=keyroll-bootstrap@r3"])
        var thumbprints = Set<String>()
        for r in issued {
            let path = "\(c.dir)/bundles/web.\(r).json"
            let mode = try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! Int
            #expect(mode == 0o600)
            let bundle = try BootstrapBundle.decode(Array(try Data(contentsOf: URL(fileURLWithPath: path))))
            #expect(bundle.replica == r && bundle.appId == appId)
            let cert = try bundle.signingCredential().certificate
            #expect(cert.subject == "CN=keyroll-bootstrap@\(r)")
            thumbprints.insert(cert.sha1Thumbprint.hex)
        }
        #expect(thumbprints.count == 3, "each replica has its own key pair")
        #expect(Set(keys.map(\.sha1.hex)) == thumbprints)

        // the same manifest again: nothing to do
        guard case .replicas(_, false, [], let kept, [])? = try await run(c, manifest(c, replicas: 3)) else { Issue.record("expected no change"); return }
        #expect(kept.count == 3)
        // scale out: only r4 is issued; r1–r3's keys are untouched
        guard case .replicas(_, false, let more, _, [])? = try await run(c, manifest(c, replicas: 4)) else { Issue.record("expected a scale out"); return }
        #expect(more.map(\.rawValue) == ["r4"])
        let after = try c.rig.emulator.keyCredentials(appId: appId)
        #expect(after.count == 4)
        for k in keys { #expect(after.contains(k), "\(k.displayName ?? k.keyId) changed") }
        // scale the manifest down: r4 is reported, never removed by provision
        guard case .replicas(_, false, [], _, let beyond)? = try await run(c, manifest(c, replicas: 3)) else { Issue.record("expected a report"); return }
        #expect(beyond.map(\.rawValue) == ["r4"])
        #expect(try c.rig.emulator.keyCredentials(appId: appId).count == 4)
    }

    /// Two privileged runs on one app at once (two operators: one scales out from its own log, one
    /// re-bootstraps r1): they never interleave their whole-list PATCHes. One holds the app's lease;
    /// the other is refused with a message naming the other run, or waits its turn — and every
    /// bundle either run wrote holds a key Graph lists (no run drops the other's new key).
    @Test func twoPrivilegedRunsAtOnceNeverDropEachOthersKeys() async throws {
        let c = try Central()
        guard case .replicas(let appId, _, _, _, _)? = try await run(c, manifest(c, replicas: 3)) else { Issue.record("no outcome"); return }
        let app = try #require(try await c.provisioner.graph.application(appId: appId))
        var refusals = 0, rounds = 0
        for round in 0..<6 {
            rounds += 1
            let scaleOut = Manifest(apps: [.init(name: "web", bundlePath: "\(c.dir)/bundles-\(round)/web.json", replicas: 4 + round)])
            func attempt<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
                do { return .success(try await body()) } catch { return .failure(error) }
            }
            async let a: Result<ProvisionRun.Report, any Error> = attempt {
                try await ProvisionRun(provisioner: c.provisioner, manifest: scaleOut, log: try ProvisionLog(path: c.dir + "/other-\(round).log")).execute()
            }
            async let b: Result<BootstrapBundle, any Error> = attempt {
                try await Rebootstrap(provisioner: c.provisioner, auditLogPath: c.dir + "/audit.log")
                    .run(application: app, bundlePath: c.dir + "/r1-\(round).json", replica: .numbered(1), force: true, reason: "drill", operator: "ops")
            }
            let (ra, rb) = await (a, b)
            let keys = try c.rig.emulator.keyCredentials(appId: appId)
            for case .failure(let e) in [ra.map { _ in () }, rb.map { _ in () }] {
                #expect("\(e)".contains("another privileged KeyRoll run"), "a run failed for another reason: \(e)")
                refusals += 1
            }
            if case .success(let report) = ra {
                for (_, failure) in report.failures { #expect(failure.contains("another privileged KeyRoll run"), "\(failure)"); refusals += 1 }
            }
            // every bundle written in this round holds a registered key
            for path in (try FileManager.default.subpathsOfDirectory(atPath: c.dir)).filter({ $0.hasSuffix(".json") && ($0.contains("bundles-\(round)/") || $0 == "r1-\(round).json") }) {
                let bundle = try BootstrapBundle.decode(Array(try Data(contentsOf: URL(fileURLWithPath: c.dir + "/" + path))))
                let cert = try bundle.signingCredential().certificate
                #expect(keys.contains { $0.sha1 == cert.sha1Thumbprint }, "round \(round): \(path) holds a key Graph does not list")
            }
        }
        print("two privileged runs at once: \(rounds) rounds, \(refusals) refused by the lease")
        // no lease is left behind
        let tags = try await c.provisioner.graph.application(id: app.id, select: ["id", "appId", "tags"]).tags ?? []
        #expect(!tags.contains { $0.hasPrefix(AppLease.prefix) }, "\(tags)")
    }

    @Test func retireRemovesOnlyTheReplicasKeysAndIsAudited() async throws {
        let c = try Central()
        guard case .replicas(let appId, _, _, _, _)? = try await run(c, manifest(c, replicas: 3)) else { Issue.record("no outcome"); return }
        let app = try #require(try await c.provisioner.graph.application(appId: appId))
        let audit = c.dir + "/audit.log"
        let retire = ReplicaRetirement(provisioner: c.provisioner, auditLogPath: audit)
        // a fresh replica is not stale: refused without --force, nothing written to Entra
        await #expect(throws: ReplicaRetirement.Refused.self) {
            try await retire.run(application: app, replica: .numbered(2), force: false, reason: "test", operator: "t")
        }
        await #expect(throws: ReplicaRetirement.Refused.self) {
            try await retire.run(application: app, replica: .numbered(9), force: true, reason: "test", operator: "t")
        }
        #expect(try c.rig.emulator.keyCredentials(appId: appId).count == 3)
        let removed = try await retire.run(application: app, replica: .numbered(2), force: true, reason: "host gone", operator: "ops")
        let left = try c.rig.emulator.keyCredentials(appId: appId)
        #expect(removed.count == 1)
        #expect(left.compactMap(\.displayName).sorted() == ["CN=keyroll-bootstrap@r1", "CN=keyroll-bootstrap@r3"])
        let lines = String(decoding: try Data(contentsOf: URL(fileURLWithPath: audit)), as: UTF8.self).split(separator: "\n")
        let phases = lines.compactMap { try? JSONValue.parse(Array($0.utf8))["phase"]?.stringValue }
        #expect(phases == ["intent", "completed"])
        #expect(lines.allSatisfy { $0.contains("\"replica\":\"r2\"") && $0.contains("\"operator\":\"ops\"") })
        // after the bootstraps expire, the last replicas hold no valid key: retiring one is refused as the app's last
        c.rig.clock.advance(by: 3 * 86_400)
        await #expect(throws: ReplicaRetirement.Refused.self) {
            try await retire.run(application: app, replica: .numbered(1), force: false, reason: "test", operator: "t")
        }
    }
}

@Suite struct ReplicaProvisioningCrashTests {
    func run(_ c: Central, replicas: Int, points: FaultPoints?) async throws -> ProvisionRun.Report {
        let hook = points.map { p in SideEffectHook { try p.reach($0) } } ?? .none
        let manifest = Manifest(apps: [.init(name: "web", bundlePath: "\(c.dir)/bundles/web.json", replicas: replicas)])
        return try await ProvisionRun(provisioner: c.provisioner, manifest: manifest, log: try ProvisionLog(path: c.dir + "/provision.log", hook: hook), hook: hook).execute()
    }

    /// A replicated create, and a scale out, failing at every file-system step of the log and the
    /// bundles (a full disk there; a crash stops at the same step): the next run finishes the job,
    /// and Entra holds exactly one bootstrap per replica, the one in that replica's bundle — no
    /// orphan whose private key died with the run, no replica issued twice.
    @Test(arguments: [false, true])
    func aReplicatedRunFailingAtEveryFileStepIsFinishedByTheNext(scaleOut: Bool) async throws {
        let reference = FaultPoints()
        let ref = try Central()
        if scaleOut { _ = try await run(ref, replicas: 2, points: nil) }
        #expect(try await run(ref, replicas: 3, points: reference).failures.isEmpty)
        let points = reference.seen
        #expect(points.contains { $0.hasPrefix("rename web.r") } && points.contains { $0.hasPrefix("write provision.log") }, "\(points)")
        let slice = CISlice.rotating(2, fullWhen: "KEYROLL_CRASH_POINTS")
        let chosen = points.indices.filter(slice.includes)
        print("replicated run (scale out: \(scaleOut)) fails at \(chosen.count) of \(points.count) file steps"
              + slice.note(ran: chosen.count, of: points.count, variable: "KEYROLL_CRASH_POINTS"))
        for point in chosen.map({ points[$0] }) {
            let c = try Central()
            if scaleOut { _ = try await run(c, replicas: 2, points: nil) }
            let faulty = FaultPoints()
            faulty.target = point
            var failed = false
            do { failed = !(try await run(c, replicas: 3, points: faulty)).failures.isEmpty } catch { failed = true }  // e.g. the log cannot be opened
            #expect(failed, "\(point): the fault did not stop the run")
            let again = try await run(c, replicas: 3, points: nil)
            #expect(again.failures.isEmpty, "\(point): the next run failed: \(again.failures)")
            guard case .replicas(let appId, _, _, _, _)? = again.outcomes["web"] else { Issue.record("\(point): no outcome"); continue }
            let keys = try c.rig.emulator.keyCredentials(appId: appId)
            #expect(keys.count == 3, "\(point): \(keys.compactMap(\.displayName))")
            for r in 1...3 {
                let bundle = try BootstrapBundle.decode(try SecureFiles.read("\(c.dir)/bundles/web.r\(r).json"))
                let der = try bundle.signingCredential().certificate.der
                let mine = keys.filter { $0.displayName == "CN=keyroll-bootstrap@r\(r)" }
                #expect(mine.count == 1 && mine.first?.key == der, "\(point): r\(r)'s registered key is not the one in its bundle")
            }
        }
    }
}

@Suite struct ReplicaRetirementFaultTests {
    /// Scale in never acts unrecorded: a retirement failing at any file-system call of its audit
    /// trail before the PATCH removes nothing from Entra; one failing after it has its intent on
    /// record. (The trail's completion is the last write: failing there leaves the intent.)
    @Test func aRetirementFailingAtEachAuditWriteNeverActsUnrecorded() async throws {
        func fresh() async throws -> (Central, Application) {
            let c = try Central()
            let manifest = Manifest(apps: [.init(name: "web", bundlePath: "\(c.dir)/bundles/web.json", replicas: 3)])
            let report = try await ProvisionRun(provisioner: c.provisioner, manifest: manifest, log: try ProvisionLog(path: c.dir + "/provision.log")).execute()
            guard case .replicas(let appId, _, _, _, _)? = report.outcomes["web"] else { throw ToolError("provisioning failed: \(report.failures)") }
            return (c, try #require(try await c.provisioner.graph.application(appId: appId)))
        }
        let (ref, refApp) = try await fresh()
        let reference = FaultPoints()
        try await ReplicaRetirement(provisioner: ref.provisioner, auditLogPath: ref.dir + "/audit.log", hook: SideEffectHook { try reference.reach($0) })
            .run(application: refApp, replica: .numbered(3), force: true, reason: "reference", operator: "tester")
        let points = reference.seen
        #expect(points.first == "create audit.log#1" && points.count > 4, "\(points)")
        for point in points {
            let (c, app) = try await fresh()
            let faulty = FaultPoints()
            faulty.target = point
            var failed = false
            do {
                try await ReplicaRetirement(provisioner: c.provisioner, auditLogPath: c.dir + "/audit.log", hook: SideEffectHook { try faulty.reach($0) })
                    .run(application: app, replica: .numbered(3), force: true, reason: "fault", operator: "tester")
            } catch { failed = true }
            #expect(failed, "\(point): the fault did not stop the retirement")
            let keys = try c.rig.emulator.keyCredentials(appId: app.appId)
            let intents = JSONLinesFile.lines(at: c.dir + "/audit.log").compactMap { try? JSONValue.parse(Array($0)) }.filter { $0["phase"] == "intent" }
            if keys.count < 3 {
                #expect(intents.count == 1, "\(point): r3's key was removed without an intent on record")
                #expect(keys.compactMap(\.displayName).sorted() == ["CN=keyroll-bootstrap@r1", "CN=keyroll-bootstrap@r2"], "\(point): a sibling's key was touched")
            } else {
                #expect(keys.count == 3, "\(point)")
            }
        }
    }
}
