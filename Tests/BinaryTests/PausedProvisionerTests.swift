import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// Real processes on the real clock: a provisioner scaling out is stopped (SIGSTOP) with its
/// whole-list PATCH built and about to be sent, while three replicas' agents roll their bootstraps
/// away; it is resumed long after their settle has passed. Its PATCH then brings the three
/// bootstraps back and drops the three new keys: every replica's published key stops working at
/// once. The agents' registration watch must see it and repair it, with the retained bootstraps,
/// leaving no replica locked out and no bootstrap registered.
@Suite(.serialized) struct PausedProvisionerTests {
    typealias Lab = ReplicaCrashTests.Lab

    /// A running `keyroll` process.
    final class Running: @unchecked Sendable {
        let process = Process()
        let log: String
        init(_ args: [String], env: [String: String], log: String) throws {
            self.log = log
            FileManager.default.createFile(atPath: log, contents: nil)
            process.executableURL = URL(fileURLWithPath: Binaries.keyroll)
            process.arguments = args
            process.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
            let out = FileHandle(forWritingAtPath: log)
            process.standardOutput = out
            process.standardError = out
            try process.run()
        }
        /// The end of what it wrote to stderr.
        var errors: String { String(((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").suffix(1500)) }
        var pid: Int32 { process.processIdentifier }
        /// Whether the process is stopped (state `T` in /proc).
        var isStopped: Bool {
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(close, offsetBy: 2)] == "T"
        }
        func stop() {
            if process.isRunning { process.terminate() }
            process.waitUntilExit()
        }
    }

    /// Polls `condition` every 100 ms for at most `seconds` of real time.
    static func wait(_ seconds: Double, _ what: String, _ condition: () throws -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(seconds)
        while ContinuousClock.now < deadline {
            if (try? condition()) == true { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("timed out after \(seconds) s waiting for \(what)")
    }

    @Test func aProvisionerPausedBetweenItsReadAndItsPatchLocksNoReplicaOut() async throws {
        try Binaries.require()
        let lab = try await Lab.start()
        defer { Task { await lab.server.stop() } }
        #expect(try await lab.provision(replicas: 3).status == 0)
        for r in 1...3 { try await lab.importReplica(r) }
        let bootstraps = try (1...3).map { try lab.store($0).journal().active }
        let appId = try lab.appId
        let stale: [JSONValue] = try lab.server.emulator.keyCredentials(appId: appId).map { k in
            .object(["keyId": .string(k.keyId), "type": .string(k.type), "usage": .string(k.usage), "key": .string(Base64.encode(k.key)),
                     "displayName": .string(k.displayName ?? "")])
        }
        // the scale-out reads the list {B1, B2, B3}, builds {B1, B2, B3, B4} and stops right before
        // sending it (send patch#2; patch#1 is its lease on the app)
        try Tools.write("apps:\n  - name: web\n    replicas: 4\n", to: lab.dir + "/web4.yaml")
        let provisioner = try Running(["provision", lab.dir + "/web4.yaml"], env: lab.env.merging(["KEYROLL_TEST_STOP_AT": "send patch#2"]) { $1 },
                                      log: lab.dir + "/provision.err")
        defer { provisioner.stop() }
        try await Self.wait(60, "the provisioner to stop before its PATCH") { provisioner.isStopped || !provisioner.process.isRunning }
        #expect(provisioner.isStopped, "\(provisioner.errors)")
        let stoppedAt = ContinuousClock.now
        // three agents roll their bootstraps away meanwhile (settle 2 s, checks every ≤ 3 s)
        let agents = try (1...3).map { r in
            try Running(["agent", "--store", lab.store(r).path, "--policy-file", lab.dir + "/policy.json", "--metrics-port=-1"], env: lab.env,
                        log: lab.dir + "/agent-r\(r).err")
        }
        defer { for a in agents { a.stop() } }
        try await Self.wait(120, "every replica to finish its bootstrap roll") {
            try (1...3).allSatisfy { r in let j = try lab.store(r).journal(); return j.roll == nil && j.active != bootstraps[r - 1] }
        }
        let rolled = try (1...3).map { try lab.store($0).journal().active }
        #expect(ContinuousClock.now - stoppedAt > .seconds(2), "the provisioner stayed stopped longer than the settle")
        // resume it: its stale PATCH lands
        kill(provisioner.pid, SIGCONT)
        provisioner.process.waitUntilExit()
        #expect(provisioner.process.terminationStatus == 0, "\(provisioner.errors)")
        let afterPatch = Set(try lab.server.emulator.keyCredentials(appId: appId).map(\.sha1.hex))
        // Either its PATCH re-read the list (the pause broke its connection, and every attempt reads
        // again) or it landed stale, bringing the bootstraps back and dropping the new keys. Either
        // way, once the agents' checks have run, nobody is locked out and no bootstrap is left.
        let landedStale = Set(bootstraps).isSubset(of: afterPatch)
        print("the paused provisioner's PATCH \(landedStale ? "landed on the stale list" : "was built again from a fresh read")")
        try await assertRepaired(lab, appId: appId, rolled: rolled, bootstraps: bootstraps, agents: agents, "after the paused provisioner")

        // A write Graph applies late, landed deterministically: the whole list as it was before the
        // rolls (the three bootstraps), long after the settle. Every published key stops working.
        let staleList = stale
        let clients = LabClients(emulator: lab.server.emulator, base: lab.server.baseURL, tenantID: lab.server.provisioner.tenantID)
        let late = clients.provisioner(as: lab.server.provisioner.appId, lab.server.provisionerCredential)
        try await late.graph.updateApplication(id: try lab.store(1).identity().applicationObjectId, ["keyCredentials": .array(staleList)])
        let dropped = Set(try lab.server.emulator.keyCredentials(appId: appId).map(\.sha1.hex))
        #expect(dropped == Set(bootstraps), "the late write replaced every key with the bootstraps: \(dropped)")
        try await assertRepaired(lab, appId: appId, rolled: rolled, bootstraps: bootstraps, agents: agents, "after a late write")
        for r in 1...3 {
            let j = try lab.store(r).journal()
            #expect(j.history.contains { $0.outcome.hasPrefix("repaired") }, "r\(r) repaired: \(j.history.map(\.outcome))")
        }
    }

    /// Within 60 s of real time: every replica's own key is registered and signs in, and no
    /// bootstrap is left in Graph.
    func assertRepaired(_ lab: Lab, appId: String, rolled: [String], bootstraps: [String], agents: [Running], _ context: String) async throws {
        let check = LockoutCheck(emulator: lab.server.emulator, base: lab.server.baseURL)
        try await Self.wait(60, "every replica to be repaired (\(context))") {
            let keys = Set(try lab.server.emulator.keyCredentials(appId: appId).map(\.sha1.hex))
            return Set(rolled).isSubset(of: keys) && keys.isDisjoint(with: bootstraps)
        }
        for r in 1...3 {
            let wrong = await check.violations(lab.store(r), appId: appId, signIn: true)
            #expect(wrong.isEmpty, "\(context): r\(r): \(wrong); \(agents[r - 1].errors)")
            #expect(try lab.store(r).journal().active == rolled[r - 1], "\(context): r\(r) kept its own key")
        }
    }
}
