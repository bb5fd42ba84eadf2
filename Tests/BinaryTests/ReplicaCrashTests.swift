import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

/// One app on several hosts, driven through the real `keyroll` binary: provisioned from a manifest
/// with `replicas:`, each replica imported into its own store and rolled by its own process.
@Suite(.serialized) struct ReplicaCrashTests {
    struct Lab {
        let server: ServedEmulator
        let dir: String
        var env: [String: String] {
            ["AZURE_TENANT_ID": server.provisioner.tenantID, "AZURE_CLIENT_ID": server.provisioner.appId,
             "AZURE_CLIENT_CERTIFICATE_PATH": server.stateDir + "/provisioner.pem", "AZURE_AUTHORITY_HOST": server.baseURL,
             "KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json",
             "KEYROLL_TEST_CRASH_AFTER": "", "KEYROLL_TEST_CRASH_AT": "", "KEYROLL_TEST_SIDE_EFFECT_LOG": ""]
        }

        static func start() async throws -> Lab {
            let lab = Lab(server: try await ServedEmulator.start(https: true), dir: try Tools.temporaryDirectory("keyroll-replicas"))
            // a short settle: these processes run on the real clock
            try Tools.write(#"{"settleSeconds": 2, "registrationCheckSeconds": 3}"#, to: lab.dir + "/policy.json")
            return lab
        }

        func keyroll(_ args: [String], env more: [String: String] = [:]) async throws -> Tools.Result {
            try await Tools.run([Binaries.keyroll] + args, environment: env.merging(more) { $1 })
        }

        func provision(replicas: Int) async throws -> Tools.Result {
            try Tools.write("apps:\n  - name: web\n    replicas: \(replicas)\n", to: dir + "/web.yaml")
            return try await keyroll(["provision", dir + "/web.yaml"])
        }

        func store(_ r: Int) -> CredentialStore { CredentialStore(path: dir + "/web-r\(r)") }

        func importReplica(_ r: Int) async throws {
            let result = try await keyroll(["import", "--bundle", dir + "/bundles/web.r\(r).json", "--store", store(r).path])
            #expect(result.status == 0, "import r\(r): \(result.stderr.suffix(600))")
        }

        func roll(_ r: Int, crashAfter: String = "") async throws -> Tools.Result {
            try await keyroll(["roll", "--store", store(r).path, "--policy-file", dir + "/policy.json"], env: ["KEYROLL_TEST_CRASH_AFTER": crashAfter])
        }

        var appId: String { get throws { try store(1).identity().appId } }

        /// Every replica can sign in with its published key, and Graph holds exactly one key per
        /// replica: its own active one, under its own marker.
        func assertConverged(_ replicas: [Int], _ context: String) async throws {
            let appId = try appId
            let keys = try server.emulator.keyCredentials(appId: appId)
            var expected = Set<String>()
            for r in replicas {
                let j = try store(r).journal()
                #expect(j.roll == nil && j.credentials.allSatisfy { $0.thumbprint == j.active || $0.isRetained }, "\(context): r\(r) journal \(j.credentials.map(\.thumbprint)) rolling \(j.roll?.phase.rawValue ?? "-")")
                expected.insert(j.active)
                let k = keys.first { $0.sha1.hex == j.active }
                #expect(k?.displayName?.hasSuffix("@r\(r)") == true, "\(context): r\(r)'s key is named \(k?.displayName ?? "-")")
                let wrong = await LockoutCheck(emulator: server.emulator, base: server.baseURL).violations(store(r), appId: appId, signIn: true)
                #expect(wrong.isEmpty, "\(context): r\(r): \(wrong)")
            }
            #expect(Set(keys.map(\.sha1.hex)) == expected && keys.count == replicas.count, "\(context): Graph holds \(keys.map { $0.displayName ?? "-" })")
        }
    }

    /// One replica is SIGKILLed during its roll while its sibling rolls at the same moment: the
    /// sibling finishes untouched, the killed one can still sign in, and once restarted both
    /// converge (one key each, nothing of the other's removed, nothing registered twice).
    @Test(arguments: ["added", "verified", "switched"])
    func aReplicaKilledMidRollWhileItsSiblingRollsBothConverge(phase: String) async throws {
        try Binaries.require()
        let lab = try await Lab.start()
        defer { Task { await lab.server.stop() } }
        let p = try await lab.provision(replicas: 2)
        #expect(p.status == 0, "\(p.stdout) \(p.stderr.suffix(800))")
        for r in [1, 2] { try await lab.importReplica(r) }
        for r in [1, 2] { #expect(try await lab.roll(r).status == 0, "bootstrap roll r\(r)") }
        try await lab.assertConverged([1, 2], "after the bootstrap rolls")
        async let killed = lab.roll(1, crashAfter: phase)
        async let sibling = lab.roll(2)
        let (k, s) = try await (killed, sibling)
        #expect(k.status == 9, "r1 should die by SIGKILL after \(phase), got \(k.status): \(k.stderr.suffix(500))")
        #expect(s.status == 0, "r2 rolled beside it: \(s.stderr.suffix(800))")
        let appId = try lab.appId
        for r in [1, 2] {
            let wrong = await LockoutCheck(emulator: lab.server.emulator, base: lab.server.baseURL).violations(lab.store(r), appId: appId, signIn: true)
            #expect(wrong.isEmpty, "after the kill at \(phase): r\(r): \(wrong)")
        }
        #expect(try lab.store(1).journal().roll?.phase.rawValue == phase)
        let resumed = try await lab.roll(1)
        #expect(resumed.status == 0, "r1 resumes: \(resumed.stderr.suffix(800))")
        try await lab.assertConverged([1, 2], "after r1 resumed from \(phase)")
    }

    /// The README's walkthrough, command by command: provision 2 replicas, roll them, scale out to
    /// 3, audit (one row per replica), retire the third, audit again.
    @Test func scaleOutAuditAndRetireThroughTheCommandLine() async throws {
        try Binaries.require()
        let lab = try await Lab.start()
        defer { Task { await lab.server.stop() } }
        #expect(try await lab.provision(replicas: 2).status == 0)
        for r in [1, 2] {
            try await lab.importReplica(r)
            #expect(try await lab.roll(r).status == 0)
        }
        let before = try lab.server.emulator.keyCredentials(appId: try lab.appId)
        let out = try await lab.provision(replicas: 3)
        #expect(out.status == 0 && out.stdout.contains("replicas issued [r3], kept [r1, r2]") && out.stdout.contains("web.r3.json"), "\(out.stdout)")
        let after = try lab.server.emulator.keyCredentials(appId: try lab.appId)
        #expect(before.allSatisfy(after.contains) && after.count == 3, "scale out left r1 and r2 alone: \(before) → \(after)")
        let audit = try await lab.keyroll(["audit", "--managed-only"])
        #expect(audit.status == 2, "r3 still holds its bootstrap: exit 2 (\(audit.status))")
        for line in ["└ replica r1", "└ replica r2", "└ replica r3"] { #expect(audit.stdout.contains(line), "\(audit.stdout)") }
        #expect(audit.stdout.contains("bootstrap-not-rolled") && audit.stdout.contains("3 replicas, 0 stale"), "\(audit.stdout)")
        // liveness is evidence: r1's key signed in (its rolls), so retiring it is refused without --force
        let refused = try await lab.keyroll(["retire", "--app", "web", "--replica", "r1", "--reason", "scale in", "--audit-log", lab.dir + "/audit.log"])
        #expect(refused.status != 0 && refused.stderr.contains("is live") && refused.stderr.contains("signed in at"), "a live replica needs --force: \(refused.stderr)")
        let retired = try await lab.keyroll(["retire", "--app", "web", "--replica", "r3", "--reason", "scale in", "--force", "--audit-log", lab.dir + "/audit.log"])
        #expect(retired.status == 0 && retired.stdout.contains("removed 1 key"), "\(retired.stdout) \(retired.stderr)")
        let again = try await lab.keyroll(["audit", "--managed-only"])
        #expect(again.status == 0 && again.stdout.contains("2 replicas, 0 stale") && !again.stdout.contains("replica r3"), "\(again.stdout)")
        try await lab.assertConverged([1, 2], "after retiring r3")
        let trail = try String(contentsOfFile: lab.dir + "/audit.log", encoding: .utf8)
        #expect(trail.contains("\"action\":\"retire-replica\"") && trail.contains("\"phase\":\"completed\""), "\(trail)")
    }
}
