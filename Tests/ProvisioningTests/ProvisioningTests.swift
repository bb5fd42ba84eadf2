import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

struct Central {
    let rig: EmulatorRig
    let provisioner: Provisioner
    let cred: SigningCredential
    let dir: String

    init(settings: EmulatorSettings = .init()) throws {
        rig = try EmulatorRig(settings: settings)
        cred = try rig.credential("provisioner", days: 3650)
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "provisioner", roles: [.applicationReadWriteAll], certificates: [cred.certificate])
        provisioner = LabClients(emulator: rig.emulator, base: rig.base, tenantID: rig.tenant.id).provisioner(as: reg.appId, cred, retry: RetryPolicy(maxAttempts: 30))
        dir = try Tools.temporaryDirectory("keyroll-prov")
    }

    func manifest(_ n: Int, prefix: String = "svc") -> Manifest {
        Manifest(apps: (0..<n).map { .init(name: "\(prefix)-\($0)", tags: ["env:test"], notes: nil, owners: [], bundlePath: "\(dir)/bundles/\(prefix)-\($0).json") },
                 bootstrapValidity: 2 * 86_400)
    }
}

@Suite struct ManifestTests {
    @Test func yamlAndCSV() throws {
        let y = try Manifest.parseYAML("""
            defaults:
              bundleDir: out
              tags: [team:platform]
            apps:
              - name: orders-api
                tags: [env:prod]
                notes: on-call team-a
                owners: [ops@contoso.com]
              - name: billing
                bundle: secure/billing.json
            """, baseDir: "/m")
        #expect(y.apps.map(\.name) == ["orders-api", "billing"])
        #expect(y.apps[0].tags == ["team:platform", "env:prod"])
        #expect(y.apps[0].bundlePath == "/m/out/orders-api.json")
        #expect(y.apps[1].bundlePath == "/m/out/secure/billing.json", "an explicit bundle stays inside the bundle folder")
        #expect(y.apps[0].owners == ["ops@contoso.com"])
        let c = try Manifest.parseCSV("name,tags,notes,bundle\norders-api,env:prod;tier:1,\"says \"\"hi\"\", ok\",\nbilling,,,b.json\n", baseDir: "/m")
        #expect(c.apps.count == 2)
        #expect(c.apps[0].tags == ["env:prod", "tier:1"])
        #expect(c.apps[0].notes == "says \"hi\", ok")
        #expect(c.apps[1].bundlePath == "/m/bundles/b.json")
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("apps: [{name: a}, {name: a}]", baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseYAML("nothing: here", baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseCSV("tags\nx\n", baseDir: "") }
        #expect(throws: Manifest.ManifestError.self) { try Manifest.parseCSV("name\n\"open\n", baseDir: "") }
    }
}

@Suite struct ProvisioningRunTests {
    /// A thousand apps in the full run (`KEYROLL_FULL=1`), 250 in CI; the write budget scales with
    /// the fleet so that the scheduler backs off several times either way.
    static var fleetSize: Int { CISlice.isFullRun() ? 1000 : 250 }

    @Test func aFleetUnderThrottlingWithoutFailuresOrDuplicates() async throws {
        let n = Self.fleetSize
        var s = EmulatorSettings()
        s.throttling.enabled = true
        s.throttling.writesPerWindow = n * 3 / 5  // forces the scheduler to back off several times
        let c = try Central(settings: s)
        let run = ProvisionRun(provisioner: c.provisioner, manifest: c.manifest(n), log: try ProvisionLog(path: c.dir + "/run.log"),
                               limit: AdaptiveLimit(start: 16, maximum: 32))
        let report = try await run.execute()
        #expect(report.failures.isEmpty, "\(report.failures.prefix(3))")
        #expect(report.outcomes.count == n)
        #expect(report.throttleEvents > 0, "the budget was hit and honoured")
        let apps = try c.rig.emulator.store.counts()
        #expect(apps["application"] == n + 1, "\(n) + the provisioner, no duplicates")
        #expect(apps["service_principal"] == n + 1)
        // every bundle holds the key of a certificate registered on its app
        for i in stride(from: 0, to: n, by: 23) {
            let b = try BootstrapBundle.decode(try SecureFiles.read(c.dir + "/bundles/svc-\(i).json"))
            let keys = try c.rig.emulator.keyCredentials(appId: b.appId)
            let der = try b.signingCredential().certificate.der
            #expect(keys.count == 1 && keys[0].key == der && keys[0].keyId == b.bootstrap.keyId)
        }
        // a second run changes nothing
        let again = try await ProvisionRun(provisioner: c.provisioner, manifest: c.manifest(n), log: try ProvisionLog(path: c.dir + "/run.log")).execute()
        #expect(again.outcomes.count == n)
        #expect(again.outcomes.values.allSatisfy { if case .alreadyProvisioned = $0 { return true }; return false })
        #expect(try c.rig.emulator.store.counts()["application"] == n + 1)
        print("provisioned \(n) apps under throttling, \(report.throttleEvents) back-offs" + (n < 1000 ? " (KEYROLL_FULL=1 provisions 1,000)" : ""))
    }

    @Test func planCountsWrites() async throws {
        let c = try Central()
        _ = try await c.provisioner.provision(name: "svc-0")  // exists already, not in this run's log
        let p = try await ProvisionRun(provisioner: c.provisioner, manifest: c.manifest(5), log: try ProvisionLog(path: c.dir + "/plan.log")).plan()
        #expect(p.toCreate.count == 4 && p.toBootstrap == ["svc-0"])
        #expect(p.writes == 10)
        #expect(try c.rig.emulator.store.counts()["application"] == 2, "plan changed nothing")
    }

    @Test func existingAppsAreLeftToTheirAgents() async throws {
        let c = try Central()
        let r = try await c.provisioner.provision(name: "svc-0")
        let store = CredentialStore(path: c.dir + "/agent")
        try Roller.importBundle(r.bundle, into: store, now: c.rig.clock.now())
        let roller = try Roller(store: store, transport: InProcessTransport(emulator: c.rig.emulator, baseURL: c.rig.base), clock: c.rig.clock,
                                sleeper: ClockAdvancingSleeper(clock: c.rig.clock))
        _ = try await roller.rollIfDue()
        let run = ProvisionRun(provisioner: c.provisioner, manifest: c.manifest(1), log: try ProvisionLog(path: c.dir + "/x.log"))
        let report = try await run.execute()
        guard case .agentOwnsIt = report.outcomes["svc-0"] else { Issue.record("\(String(describing: report.outcomes["svc-0"]))"); return }
        #expect(try c.rig.emulator.keyCredentials(appId: r.application.appId).count == 1, "nothing added to an app its agent rolls")
    }
}

@Suite struct AuditTests {
    @Test func findsEveryPlantedCondition() async throws {
        let c = try Central()
        let now = c.rig.clock.now()
        func app(_ name: String) async throws -> (Provisioner.Result, EntraEmulator.Registration?) { (try await c.provisioner.provision(name: name), nil) }
        // healthy: rolled by its agent
        let healthy = try await c.provisioner.provision(name: "healthy")
        let store = CredentialStore(path: c.dir + "/healthy")
        try Roller.importBundle(healthy.bundle, into: store, now: now)
        _ = try await Roller(store: store, transport: InProcessTransport(emulator: c.rig.emulator, baseURL: c.rig.base), clock: c.rig.clock,
                             sleeper: ClockAdvancingSleeper(clock: c.rig.clock)).rollIfDue()
        // bootstrap not rolled
        _ = try await c.provisioner.provision(name: "fresh")
        // drift: a foreign certificate next to the bootstrap (as an attacker or a human would add it)
        let drifted = try await c.provisioner.provision(name: "drifted")
        let foreign = try c.rig.credential("backdoor", days: 300)
        try await c.provisioner.mergeKeyCredential(objectID: drifted.application.id, certificate: foreign.certificate, keyId: UUID().uuidString.lowercased(), displayName: "CN=backdoor")
        // expiring soon: a KeyRoll-made certificate with 10 days left
        let expiring = try await c.provisioner.provision(name: "expiring")
        let short = try SigningCredential.generate(subject: .init(commonName: "keyroll-x"), notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(10 * 86_400))
        try await c.provisioner.mergeKeyCredential(objectID: expiring.application.id, certificate: short.certificate, keyId: UUID().uuidString.lowercased(), displayName: "CN=keyroll-x")
        try await c.provisioner.removeKeyCredential(objectID: expiring.application.id, keyId: expiring.bundle.bootstrap.keyId!)
        // past the cliff: provisioned, never rolled, 3 days later
        _ = try await c.provisioner.provision(name: "fallen")
        // leftovers: a healthy app with an expired extra cert — planted with a back-dated certificate
        let leftover = try await c.provisioner.provision(name: "leftover")
        let old = try SigningCredential.generate(subject: .init(commonName: "keyroll-old"), notBefore: now.addingTimeInterval(-400 * 86_400), notAfter: now.addingTimeInterval(2.5 * 86_400))
        try await c.provisioner.mergeKeyCredential(objectID: leftover.application.id, certificate: old.certificate, keyId: UUID().uuidString.lowercased(), displayName: "CN=keyroll-old")
        let good = try SigningCredential.generate(subject: .init(commonName: "keyroll-good"), notBefore: now, notAfter: now.addingTimeInterval(300 * 86_400))
        try await c.provisioner.mergeKeyCredential(objectID: leftover.application.id, certificate: good.certificate, keyId: UUID().uuidString.lowercased(), displayName: "CN=keyroll-good")
        try await c.provisioner.removeKeyCredential(objectID: leftover.application.id, keyId: leftover.bundle.bootstrap.keyId!)
        // an app KeyRoll does not manage
        try c.rig.emulator.register(tenantID: c.rig.tenant.id, displayName: "legacy", certificates: [try c.rig.credential("legacy", days: 90).certificate])

        c.rig.clock.advance(by: 3 * 86_400)  // bootstraps expire: "fresh"/"drifted" were re-keyed below
        let audit = try await Auditor(graph: c.provisioner.graph).scan(now: c.rig.clock.now(), expiringWithinDays: 30)
        func worst(_ n: String) -> AppCondition? { audit.apps.first { $0.name == n }?.worst }
        #expect(worst("healthy") == .healthy)
        #expect(worst("fallen") == .pastCliff)
        #expect(worst("fresh") == .pastCliff, "an unrolled bootstrap past its 2 days is past the cliff")
        #expect(worst("drifted") == .drift)
        #expect(worst("expiring") == .expiringSoon)
        #expect(worst("leftover") == .leftovers)
        #expect(worst("legacy") == .unmanaged)
        #expect(audit.exitCode == 4)
        // before the bootstraps expire, an unrolled one is reported as such
        let early = AuditRules.classify(Application(id: "o", appId: "a", displayName: "b", keyCredentials: [
            KeyCredential(keyId: "k", displayName: "CN=keyroll-bootstrap", startDateTime: now, endDateTime: now.addingTimeInterval(86_400), type: "AsymmetricX509Cert", usage: "Verify")],
            tags: [Provisioner.managedTag]), now: now, expiringWithin: 30 * 86_400)
        #expect(early.conditions.contains(AppCondition.bootstrapNotRolled))
        // renderers
        let csv = AuditReport.csv(audit)
        #expect(csv.contains("drift") && csv.split(separator: "\n").count > audit.apps.count)
        let json = try JSONValue.parse(Array(AuditReport.json(audit).utf8), maxDepth: 16)
        #expect(json["apps"]?.arrayValue?.count == audit.apps.count)
        let html = AuditReport.html(audit)
        let dir = try Tools.temporaryDirectory()
        try Tools.write(html, to: dir + "/report.html")
        let check = try await Tools.run([Tools.python, "-c", """
            import sys, html.parser
            class P(html.parser.HTMLParser):
                def __init__(s): super().__init__(); s.stack=[]; s.rects=0; s.svg=0; s.errors=[]
                def handle_starttag(s, t, a):
                    if t == 'rect': s.rects += 1
                    if t == 'svg': s.svg += 1
                    if t not in ('meta','rect','line','br','i','input','img'): s.stack.append(t)
                def handle_endtag(s, t):
                    if t in ('rect','line','i'): return
                    if not s.stack or s.stack[-1] != t: s.errors.append(t)
                    else: s.stack.pop()
            p = P(); p.feed(open(sys.argv[1]).read())
            print(p.svg, p.rects, len(p.errors), len(p.stack))
            """, dir + "/report.html"])
        let nums = check.stdout.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        // one SVG (the cliff histogram: 2 red buckets + 13 weeks), balanced tags; the rest is drawn by the page's script
        #expect(nums.count == 4 && nums[0] == 1 && nums[1] == 15 && nums[2] == 0 && nums[3] == 0, "html structure: \(check.stdout) \(check.stderr)")
        #expect(html.contains("data-apps=\"\(audit.apps.count)\""))
        #expect(!html.contains("http://") || html.contains("http://www.w3.org/2000/svg"), "no external resources")
    }

    @Test func rebootstrapBringsAFallenAppBack() async throws {
        let c = try Central()
        let r = try await c.provisioner.provision(name: "fallen")
        let auditLog = c.dir + "/audit.log"
        let reboot = Rebootstrap(provisioner: c.provisioner, auditLogPath: auditLog)
        // still valid: refused unless forced
        await #expect(throws: Rebootstrap.Refused.self) {
            _ = try await reboot.run(application: r.application, bundlePath: c.dir + "/b1.json", force: false, reason: "test", operator: "tester")
        }
        c.rig.clock.advance(by: 3 * 86_400)  // past the cliff
        let bundle = try await reboot.run(application: r.application, bundlePath: c.dir + "/b2.json", force: false, reason: "store lost", operator: "tester")
        let line = try String(contentsOfFile: auditLog, encoding: .utf8)
        let lines = line.split(separator: "\n")
        #expect(lines.count == 2, "one intent, one completion: \(lines)")
        let intent = try JSONValue.parse(Array(lines.first!.utf8))
        #expect(intent["phase"] == "intent")
        let rec = try JSONValue.parse(Array(lines.last!.utf8))
        #expect(rec["phase"] == "completed" && rec["keyId"] == intent["keyId"])
        #expect(rec["appId"]?.stringValue == r.application.appId)
        #expect(rec["operator"] == "tester" && rec["reason"] == "store lost" && rec["forced"] == false)
        #expect(rec["thumbprint"]?.stringValue == (try bundle.signingCredential().certificate.sha1Thumbprint.hex))
        #expect((try FileManager.default.attributesOfItem(atPath: auditLog)[.posixPermissions] as! Int) == 0o600)
        // the agent can roll again from the new bundle
        let store = CredentialStore(path: c.dir + "/store")
        try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(c.dir + "/b2.json")), into: store, now: c.rig.clock.now())
        let roller = try Roller(store: store, transport: InProcessTransport(emulator: c.rig.emulator, baseURL: c.rig.base), clock: c.rig.clock,
                                sleeper: ClockAdvancingSleeper(clock: c.rig.clock))
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("no roll"); return }
        let keys = try c.rig.emulator.keyCredentials(appId: r.application.appId)
        #expect(keys.filter { $0.isUsableCertificate(at: c.rig.clock.now()) }.count == 1)
        // forced issue on a healthy app works and is recorded as forced
        _ = try await reboot.run(application: r.application, bundlePath: c.dir + "/b3.json", force: true, reason: "drill", operator: "tester")
        #expect(try String(contentsOfFile: auditLog, encoding: .utf8).contains(#""forced":true"#))
        // the intent is on record before the privileged write: a refused PATCH leaves intent + failed, and no bundle
        // (the first PATCH is the run's lease tag on the app; the second, the keyCredentials write, is refused)
        c.rig.emulator.setFaults([FaultRule(route: "PATCH /v1.0/applications", action: .status(403, retryAfter: nil), sequence: [false, true])])
        await #expect(throws: EntraError.self) {
            _ = try await reboot.run(application: r.application, bundlePath: c.dir + "/b4.json", force: true, reason: "refused", operator: "tester")
        }
        let tail = try String(contentsOfFile: auditLog, encoding: .utf8).split(separator: "\n").suffix(2).map { try JSONValue.parse(Array($0.utf8)) }
        #expect(tail.map { $0["phase"]?.stringValue } == ["intent", "failed"] && tail[0]["reason"] == "refused")
        #expect(!FileManager.default.fileExists(atPath: c.dir + "/b4.json"))
    }

    /// The privileged write happens only after its intent is durable: a re-bootstrap that fails at
    /// any file-system call before the PATCH (the audit intent, the bundle) changes nothing in
    /// Entra; one that fails after it has an intent on record and a bundle that works.
    @Test func rebootstrapFailingAtEachFileWriteNeverActsUnrecorded() async throws {
        let c = try Central()
        let r = try await c.provisioner.provision(name: "audited")
        c.rig.clock.advance(by: 3 * 86_400)  // past the cliff
        let reference = FaultPoints()
        _ = try await Rebootstrap(provisioner: c.provisioner, auditLogPath: c.dir + "/ref-audit.log", hook: SideEffectHook { try reference.reach($0) })
            .run(application: r.application, bundlePath: c.dir + "/ref.json", force: true, reason: "reference", operator: "tester")
        let points = reference.seen
        #expect(points.first == "create ref-audit.log#1" && points.contains("fsync ref.json#1"), "\(points)")
        for (i, point) in points.enumerated() {
            let faulty = FaultPoints()
            faulty.target = point.replacingOccurrences(of: "ref-audit.log", with: "audit-\(i).log").replacingOccurrences(of: "ref.json", with: "b-\(i).json")
            let before = try c.rig.emulator.keyCredentials(appId: r.application.appId).count
            let reboot = Rebootstrap(provisioner: c.provisioner, auditLogPath: c.dir + "/audit-\(i).log", hook: SideEffectHook { try faulty.reach($0) })
            let succeeded: Bool
            do {
                _ = try await reboot.run(application: r.application, bundlePath: c.dir + "/b-\(i).json", force: true, reason: "fault", operator: "tester")
                succeeded = true
            } catch { succeeded = false }
            #expect(!succeeded, "\(point): the fault did not stop the run")
            let after = try c.rig.emulator.keyCredentials(appId: r.application.appId).count
            let intents = JSONLinesFile.lines(at: c.dir + "/audit-\(i).log").compactMap { try? JSONValue.parse(Array($0)) }.filter { $0["phase"] == "intent" }
            if after > before {
                #expect(intents.count == 1, "\(point): a key was added without an intent on record")
                let bundle = try BootstrapBundle.decode(try SecureFiles.read(c.dir + "/b-\(i).json"))
                #expect(try c.rig.emulator.keyCredentials(appId: r.application.appId).contains { $0.key == (try bundle.signingCredential().certificate.der) },
                        "\(point): the bundle's certificate is the registered one")
            } else {
                #expect(after == before, "\(point)")
            }
        }
    }
}
