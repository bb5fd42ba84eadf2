import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// `keyroll agent --lean` as users run it: the process becomes `keyroll-supervisor`, every pass runs
/// as a child `keyroll agent`, and what a pass leaves (metrics, health, the carry) is served and
/// handed on. Real processes, a served HTTPS emulator, the real clock.
@Suite(.serialized) struct LeanAgentTests {
    static let supervisor = Tools.packageRoot + "/.build/debug/keyroll-supervisor"

    /// A running lean agent whose log goes to a file the test reads.
    final class Agent {
        let process = Process()
        let logPath: String

        init(_ rig: CrashTests.Rig, _ store: CredentialStore, extra: [String] = [], env more: [String: String] = [:]) throws {
            logPath = try Tools.temporaryDirectory("keyroll-lean-log") + "/agent.log"
            FileManager.default.createFile(atPath: logPath, contents: nil)
            process.executableURL = URL(fileURLWithPath: Binaries.keyroll)
            process.arguments = ["agent", "--lean", "--store", store.path, "--metrics-port", "0", "--pass-retry", "1"] + extra
            var env = ProcessInfo.processInfo.environment
            for k in ["KEYROLL_TEST_CRASH_AT", "KEYROLL_TEST_CRASH_AFTER", "KEYROLL_TEST_SIDE_EFFECT_LOG", "KEYROLL_TEST_STOP_AT", "KEYROLL_TEST_HOOK_ONCE"] { env[k] = nil }
            env["KEYROLL_CA_FILE"] = rig.server.stateDir + "/ca.pem"
            env["KEYROLL_LOG_FORMAT"] = "json"
            process.environment = env.merging(more) { $1 }
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle(forWritingAtPath: logPath)
            try process.run()
        }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        /// Waits (up to `seconds`) until `condition` holds of the log.
        func waitFor(_ what: String, seconds: Double = 120, _ condition: (String) -> Bool) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if condition(log) { return }
                guard process.isRunning else { break }
                usleep(100_000)
            }
            throw ToolError("\(what) did not happen; agent log:\n\(log.suffix(3000))")
        }

        func count(_ needle: String) -> Int { log.components(separatedBy: needle).count - 1 }

        var port: Int? {
            guard let r = log.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) else { return nil }
            return Int(log[r].split(separator: ":").last!)
        }

        var stateDirectory: String? {
            guard let r = log.range(of: #""state":"[^"]+""#, options: .regularExpression) else { return nil }
            return String(log[r].dropFirst(9).dropLast())
        }

        func get(_ path: String) async throws -> (status: String, body: String) { try await ServedProcess.get(port: try #require(port), path) }

        func stop() -> Int32? { ServedProcess.stop(process) }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    static func mode(_ path: String) -> Int? { (try? FileManager.default.attributesOfItem(atPath: path))?[.posixPermissions] as? Int }

    /// A series' value in a Prometheus exposition.
    static func value(_ exposition: String, _ series: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1))
        }
        return nil
    }

    @Test
    func theLeanAgentRollsInPassesAndServesWhatTheyLeave() async throws {
        try Binaries.require()
        #expect(FileManager.default.isExecutableFile(atPath: Self.supervisor), "swift build builds keyroll-supervisor")
        let rig = try await CrashTests.Rig.start()
        let (store, bundle) = try await rig.newStore("lean")
        let bootstrap = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let agent = try Agent(rig, store)
        // the first pass rolls the bootstrap; the next ones (every ≤ 5 s: the real-time policy's
        // registration check) check the sign-in
        try agent.waitFor("two passes") { $0.components(separatedBy: "pass finished").count - 1 >= 2 }
        try rig.assertConverged(store, bundle.appId, bootstrap: bootstrap, "after the lean agent's first passes")
        await rig.assertUsable(store, bundle.appId, "after the lean agent's first passes")

        // the long-lived process is the supervisor, not keyroll
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(agent.process.processIdentifier)/exe")
        #expect(exe.hasSuffix("/keyroll-supervisor"), "the agent's process runs \(exe)")
        // started by descriptor (fexecve), it names itself: not the descriptor's number in ps and the journal
        let comm = try String(contentsOfFile: "/proc/\(agent.process.processIdentifier)/comm", encoding: .utf8)
        #expect(comm == "keyroll-supervi\n", "the process is named \(comm)")

        let first = try await agent.get("/metrics")
        #expect(first.status == "200")
        #expect(first.body.contains(#"keyroll_rolls_total{app_id="\#(bundle.appId)",outcome="rolled"} 1"#), "\(first.body)")
        #expect(!first.body.contains(bootstrap), "the retired bootstrap certificate is no longer exported")
        let ok = try #require(Self.value(first.body, #"keyroll_agent_passes_total{outcome="ok"}"#), "\(first.body)")
        let checks = try #require(Self.value(first.body, #"keyroll_registration_checks_total{app_id="\#(bundle.appId)"}"#), "\(first.body)")
        #expect(ok >= 2)
        // counters go on from pass to pass: two more passes, more checks than any one pass makes
        let passes = agent.count("pass finished")
        try agent.waitFor("two more passes") { $0.components(separatedBy: "pass finished").count - 1 >= passes + 2 }
        let later = try await agent.get("/metrics").body
        let laterChecks = try #require(Self.value(later, #"keyroll_registration_checks_total{app_id="\#(bundle.appId)"}"#))
        #expect(laterChecks >= checks + 2, "registration checks \(checks) → \(laterChecks): a pass's counters start from the last pass's")
        #expect(later.contains(#"keyroll_rolls_total{app_id="\#(bundle.appId)",outcome="rolled"} 1"#), "no second roll, and the first still counted")
        #expect(Self.value(later, "keyroll_agent_consecutive_pass_failures") == 0)

        // a damaged carry costs timing only: the next pass starts from nothing and ends well
        try "{not json".write(toFile: try #require(agent.stateDirectory) + "/carry.json", atomically: true, encoding: .utf8)
        let before = agent.count("pass finished")
        try agent.waitFor("a pass after the carry was damaged") { $0.components(separatedBy: "pass finished").count - 1 > before }
        let health = try await agent.get("/healthz")
        #expect(health.status == "200", "\(health)")
        #expect(health.body.contains(bundle.appId))
        #expect(try await agent.get("/readyz").status == "200")
        #expect(try await agent.get("/nope").status == "404")

        let state = try #require(agent.stateDirectory, "no state folder in the log")
        #expect(Self.mode(state) == 0o700)
        for name in ["metrics.http", "healthz.http", "readyz.http", "carry.json", "next-pass"] {
            #expect(Self.mode(state + "/" + name) == 0o600, "\(name)")
        }
        #expect(!agent.log.contains("BEGIN PRIVATE KEY") && !agent.log.contains("eyJ"), "secret material in logs")

        #expect(agent.stop() == 0, "a graceful stop")
        #expect(!FileManager.default.fileExists(atPath: state), "the supervisor removes its folder when it stops")
        await rig.server.stop()
    }

    /// A pass SIGKILLed in the middle of the roll (just before the answer to addKey is journaled):
    /// the supervisor counts it failed, and the next pass resumes the roll from the journal.
    @Test
    func aPassKilledMidRollIsResumedByTheNext() async throws {
        try await assertInterruptedPassIsResumed("lean-crash", hook: "KEYROLL_TEST_CRASH_AT", interruption: "killed by signal 9",
                                                 outcome: "failed", healthyAfter: true)
    }

    /// A pass that stops making progress (SIGSTOP in the middle of the roll: a paused process) does
    /// not hold the agent: past --pass-deadline it is stopped (SIGTERM, then SIGKILL, which a paused
    /// process cannot ignore) and the next pass resumes the roll.
    @Test
    func aPausedPassIsStoppedAtItsDeadlineAndTheRollResumed() async throws {
        try await assertInterruptedPassIsResumed("lean-paused", hook: "KEYROLL_TEST_STOP_AT", extra: ["--pass-deadline", "10"],
                                                 interruption: "was stopped: no sign of life for --pass-deadline 10 s",
                                                 outcome: "stopped", seconds: 180)
    }

    /// One lean agent whose first pass is interrupted by `hook` (once) just before the answer to
    /// addKey is journaled: the log shows `interruption` and then a pass that ended well, the store and
    /// the registration converge as after an uninterrupted roll, the app still signs in, and the
    /// supervisor counts exactly one pass with `outcome`.
    func assertInterruptedPassIsResumed(_ name: String, hook: String, extra: [String] = [], interruption: String,
                                        outcome: String, seconds: Double = 120, healthyAfter: Bool = false) async throws {
        try Binaries.require()
        let rig = try await CrashTests.Rig.start()
        let (store, bundle) = try await rig.newStore(name)
        let bootstrap = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let once = try Tools.temporaryDirectory("keyroll-lean-once") + "/fired"
        let agent = try Agent(rig, store, extra: extra, env: [hook: "answered addKey#1", "KEYROLL_TEST_HOOK_ONCE": once])
        try agent.waitFor("an interrupted pass (\(interruption)), then one that ends well", seconds: seconds) {
            guard let interrupted = $0.range(of: interruption) else { return false }
            return $0[interrupted.upperBound...].contains("pass finished")
        }
        #expect(FileManager.default.fileExists(atPath: once), "the \(hook) hook fired")
        try rig.assertConverged(store, bundle.appId, bootstrap: bootstrap, "after the resumed pass")
        await rig.assertUsable(store, bundle.appId, "after the resumed pass")
        let metrics = try await agent.get("/metrics").body
        #expect(Self.value(metrics, #"keyroll_agent_passes_total{outcome="\#(outcome)"}"#) == 1, "\(metrics)")
        if healthyAfter {
            #expect(try await agent.get("/healthz").status == "200", "healthy again once a pass ended well")
        }
        #expect(agent.stop() == 0)
        await rig.server.stop()
    }

    /// A settle longer than --pass-deadline is not a pass without a sign of life: the pass's heartbeat
    /// goes on while it waits, and the roll finishes in the pass that began it.
    @Test func aSettleLongerThanThePassDeadlineFinishesItsRoll() async throws {
        try Binaries.require()
        let rig = try await CrashTests.Rig.start()
        let (store, bundle) = try await rig.newStore("lean-settle")
        let bootstrap = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let policy = try Tools.temporaryDirectory("keyroll-lean-policy") + "/policy.json"
        try #"{"settleSeconds": 16, "registrationCheckSeconds": 5}"#.write(toFile: policy, atomically: true, encoding: .utf8)
        let agent = try Agent(rig, store, extra: ["--pass-deadline", "10"], env: ["KEYROLL_POLICY_FILE": policy])
        try agent.waitFor("the roll's pass to end", seconds: 120) { $0.contains("pass finished") || $0.contains("was stopped") }
        #expect(!agent.log.contains("was stopped"), "a waiting pass was taken for a dead one: \(agent.log.suffix(1500))")
        try rig.assertConverged(store, bundle.appId, bootstrap: bootstrap, "after a settle longer than the pass deadline")
        #expect(agent.stop() == 0)
        await rig.server.stop()
    }

    /// A store whose lock another process holds (a `keyroll roll` paused mid-roll) is that identity's
    /// failure alone: the other identity rolls, /healthz names the store, and once the lock is free
    /// the next pass resumes the interrupted roll.
    @Test func aHeldLockStopsOnlyItsIdentity() async throws {
        try Binaries.require()
        let rig = try await CrashTests.Rig.start()
        let (held, heldBundle) = try await rig.newStore("lean-held")
        let (free, freeBundle) = try await rig.newStore("lean-free")
        let roll = Process()
        roll.executableURL = URL(fileURLWithPath: Binaries.keyroll)
        roll.arguments = ["roll", "--store", held.path]
        var env = ProcessInfo.processInfo.environment
        env["KEYROLL_CA_FILE"] = rig.server.stateDir + "/ca.pem"
        env["KEYROLL_TEST_STOP_AT"] = "answered addKey#1"
        roll.environment = env
        roll.standardError = FileHandle.nullDevice
        roll.standardOutput = FileHandle.nullDevice
        try roll.run()
        defer { kill(roll.processIdentifier, SIGKILL) }
        // wait until it is paused, holding the lock, with the new key added
        let deadline = Date().addingTimeInterval(60)
        var paused = false
        while !paused, Date() < deadline {
            let stat = (try? String(contentsOfFile: "/proc/\(roll.processIdentifier)/stat", encoding: .utf8)) ?? ""
            if let close = stat.range(of: ") "), stat[close.upperBound...].hasPrefix("T") { paused = true } else { usleep(50_000) }
        }
        try #require(paused, "the roll never paused at its addKey answer")
        let agent = try Agent(rig, held, extra: ["--store", free.path])
        try agent.waitFor("the free identity's roll") { _ in rig.converged(free, freeBundle.appId, bootstrap: (try? freeBundle.signingCredential().certificate.sha1Thumbprint.hex) ?? "") }
        try agent.waitFor("a pass that ends") { $0.contains("pass finished") }
        #expect(agent.log.contains("cannot open the store"), "the pass says which store it could not open")
        let health = try await agent.get("/healthz")
        #expect(health.status == "503" && health.body.contains(held.path), "\(health)")
        // the paused roll dies (its lock with it); the next pass resumes its roll
        kill(roll.processIdentifier, SIGKILL)
        roll.waitUntilExit()
        let bootstrap = try heldBundle.signingCredential().certificate.sha1Thumbprint.hex
        try agent.waitFor("the held identity's roll, resumed") { _ in rig.converged(held, heldBundle.appId, bootstrap: bootstrap) }
        await rig.assertUsable(held, heldBundle.appId, "after the lock came free")
        await rig.assertUsable(free, freeBundle.appId, "the free identity")
        #expect(agent.stop() == 0)
        await rig.server.stop()
    }

    /// The token endpoint needs keys in a long-lived process: with a store that enables it, --lean
    /// runs the resident agent and says why (it never refuses to run: an agent that does not start
    /// rolls nothing).
    @Test
    func withTheTokenEndpointEnabledTheLeanAgentStaysResident() async throws {
        try Binaries.require()
        let rig = try await CrashTests.Rig.start()
        let (store, _) = try await rig.newStore("lean-token")
        _ = try await Tools.run([Binaries.keyroll, "token-endpoint", "enable", "--store", store.path])
        let agent = try Agent(rig, store, extra: ["--token-endpoint-port", "0"])
        try agent.waitFor("the resident fallback") { $0.contains("roll complete") }
        #expect(agent.log.contains("--lean: the agent runs resident, because the token endpoint is enabled"), "\(agent.log.suffix(2000))")
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(agent.process.processIdentifier)/exe")
        #expect(exe.hasSuffix("/keyroll"), "the agent's process runs \(exe)")
        #expect(agent.stop() == 0)
        await rig.server.stop()
    }
}
