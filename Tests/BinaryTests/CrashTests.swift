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

/// Kills real `keyroll roll` and `keyroll agent` processes with SIGKILL — after each durable step,
/// and at every named side effect of a roll — restarts them, and checks that the app is never
/// locked out and that the restarted process converges by itself (docs/design.md, "Crash points").
@Suite(.serialized) struct CrashTests {

    struct Rig {
        let server: ServedEmulator
        let provisioner: Provisioner
        let root: String

        /// Self-read on: these tests check exact registrations (without it a lost addKey answer's
        /// retry registers twice by design, see docs/replicas.md).
        static func start(_ settings: EmulatorSettings = .selfReading) async throws -> Rig {
            let server = try await ServedEmulator.start(https: true, settings: settings)
            let provisioner = LabClients(emulator: server.emulator, base: server.baseURL, tenantID: server.provisioner.tenantID)
                .provisioner(as: server.provisioner.appId, server.provisionerCredential)
            return Rig(server: server, provisioner: provisioner, root: try Tools.temporaryDirectory("keyroll-crash"))
        }

        func newStore(_ name: String) async throws -> (CredentialStore, BootstrapBundle) {
            let r = try await provisioner.provision(name: name)
            let store = CredentialStore(path: root + "/" + name)
            try Roller.importBundle(r.bundle, into: store, now: Date())
            return (store, r.bundle)
        }

        func roll(_ store: CredentialStore, crashAfter: String? = nil, extra: [String] = [], env more: [String: String] = [:]) async throws -> Tools.Result {
            var env = ["KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]
            env["KEYROLL_TEST_CRASH_AFTER"] = crashAfter ?? ""
            env["KEYROLL_TEST_CRASH_AT"] = ""
            env["KEYROLL_TEST_SIDE_EFFECT_LOG"] = ""
            return try await Tools.run([Binaries.keyroll, "roll", "--store", store.path] + extra, environment: env.merging(more) { $1 })
        }

        /// Runs `keyroll agent` on `store` until it exits by itself (a crash point) or `done` holds,
        /// then stops it with SIGTERM. Returns its exit status, or nil when it was stopped.
        func agent(_ store: CredentialStore, env more: [String: String] = [:], timeout: TimeInterval = 90,
                   done: @escaping @Sendable () -> Bool) async throws -> Int32? {
            try await withCheckedThrowingContinuation { cont in
                DispatchQueue.global().async {
                    cont.resume(with: Swift.Result {
                        let p = Process()
                        p.executableURL = URL(fileURLWithPath: Binaries.keyroll)
                        p.arguments = ["agent", "--store", store.path, "--metrics-port=-1"]
                        var env = ProcessInfo.processInfo.environment
                        env["KEYROLL_CA_FILE"] = server.stateDir + "/ca.pem"
                        env["KEYROLL_LOG_FORMAT"] = "json"
                        for k in ["KEYROLL_TEST_CRASH_AT", "KEYROLL_TEST_CRASH_AFTER", "KEYROLL_TEST_SIDE_EFFECT_LOG"] { env[k] = nil }
                        p.environment = env.merging(more) { $1 }
                        p.standardOutput = FileHandle.nullDevice
                        p.standardError = FileHandle.nullDevice
                        try p.run()
                        let deadline = Date().addingTimeInterval(timeout)
                        while p.isRunning, Date() < deadline, !done() { usleep(20_000) }
                        if !p.isRunning { return p.terminationStatus }
                        p.terminate()
                        p.waitUntilExit()
                        return nil
                    })
                }
            }
        }

        /// The key files of the journal's credentials: the active key and any retained one.
        static func files(_ j: Journal) -> Set<String> { Set(j.credentials.flatMap { ["\($0.thumbprint).key.pem", "\($0.thumbprint).cert.pem"] }) }

        /// Whether `store` has converged: no roll in progress, one active key (not the bootstrap) in
        /// Entra, and beside it only retained keys (removed from Entra, kept to undo a stale write).
        func converged(_ store: CredentialStore, _ appId: String, bootstrap: String) -> Bool {
            guard let j = try? store.journal(), j.roll == nil, j.repair == nil, j.active != bootstrap,
                  j.credentials.allSatisfy({ $0.thumbprint == j.active || $0.isRetained }) else { return false }
            let files = Set((try? FileManager.default.contentsOfDirectory(atPath: store.path + "/keys")) ?? [])
            guard files == Self.files(j) else { return false }
            return (try? server.emulator.keyCredentials(appId: appId).map(\.sha1.hex)) == [j.active]
        }

        /// Invariant (b): exactly one current key in Entra, the journal's active one; on disk only the
        /// journal's keys (active and retained); nothing left over.
        func assertConverged(_ store: CredentialStore, _ appId: String, bootstrap: String, _ context: String) throws {
            let j = try store.journal()
            #expect(j.roll == nil, "\(context): still rolling (\(j.roll?.phase.rawValue ?? "-"))")
            #expect(j.active != bootstrap, "\(context): bootstrap not retired")
            #expect(j.credentials.allSatisfy { $0.thumbprint == j.active || $0.isRetained }, "\(context): journal holds \(j.credentials.map(\.thumbprint))")
            #expect(try server.emulator.keyCredentials(appId: appId).map(\.sha1.hex) == [j.active], "\(context): Entra holds other keys")
            let files = Set((try? FileManager.default.contentsOfDirectory(atPath: store.path + "/keys")) ?? [])
            #expect(files == Self.files(j), "\(context): keys folder holds \(files)")
            let top = (try? FileManager.default.contentsOfDirectory(atPath: store.path)) ?? []
            #expect(!top.contains { $0.contains(".tmp-") }, "\(context): temporary files left: \(top)")
        }

        /// The invariant: the app can sign in (``LockoutCheck``).
        func assertUsable(_ store: CredentialStore, _ appId: String, _ context: String) async {
            let wrong = await LockoutCheck(emulator: server.emulator, base: server.baseURL).violations(store, appId: appId)
            #expect(wrong.isEmpty, "\(context): \(wrong)")
        }
    }

    @Test
    func killedAtEveryStepBoundaryConverges() async throws {
        try Binaries.require()
        let rig = try await Rig.start()
        defer { Task { await rig.server.stop() } }
        for phase in ["stored", "added", "visible", "verified", "switched", "finished"] {
            let (store, bundle) = try await rig.newStore("crash-\(phase)")
            let bootThumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
            let crashed = try await rig.roll(store, crashAfter: phase)
            #expect(crashed.status == 9, "\(phase): expected SIGKILL, got \(crashed.status): \(crashed.stderr.suffix(500))")
            // after the crash: the journal reads, and the app is not locked out
            let j = try store.journal()
            if phase != "finished" { #expect(j.roll?.phase.rawValue == phase, "\(phase): journal at \(j.roll?.phase.rawValue ?? "idle")") }
            await rig.assertUsable(store, bundle.appId, "after crash at \(phase)")
            // restart: converges with no human help
            let resumed = try await rig.roll(store, extra: phase == "finished" ? ["--if-due"] : [])
            #expect(resumed.status == 0, "\(phase): resume failed (\(resumed.status)): \(resumed.stderr.suffix(800))")
            let end = try store.journal()
            #expect(end.roll == nil, "\(phase): still rolling")
            #expect(end.credentials.allSatisfy { $0.thumbprint == end.active || $0.isRetained }, "\(phase): \(end.credentials.count) held credentials")
            let registered = try rig.server.emulator.keyCredentials(appId: bundle.appId)
            #expect(registered.count == 1, "\(phase): \(registered.count) registrations (duplicates or leftovers)")
            #expect(registered.first?.sha1.hex == end.active, "\(phase): Graph holds \(registered.first?.sha1.hex ?? "-"), agent \(end.active)")
            #expect(end.active != bootThumb, "\(phase): bootstrap not retired")
            #expect(!store.hasCredential(bootThumb) || end.credential(bootThumb)?.isRetained == true, "\(phase): bootstrap key on disk and not retained")
            await rig.assertUsable(store, bundle.appId, "after resume from \(phase)")
        }
        await rig.server.stop()
    }

    /// CI's slice of the points: each costs one or two process starts, so CI kills `keyroll roll` and
    /// `keyroll agent` at a third of their points each, rotating by day so that three days of CI kill
    /// at every one (``CISlice``); `KEYROLL_CRASH_POINTS=all` or `KEYROLL_FULL=1` kills at all of them.
    static func slice() -> CISlice { .rotating(3, fullWhen: "KEYROLL_CRASH_POINTS") }

    /// The points one real run of `command` reaches, in order (`KEYROLL_TEST_SIDE_EFFECT_LOG`).
    func points(_ rig: Rig, _ command: String) async throws -> [String] {
        let (store, bundle) = try await rig.newStore("points-\(command)")
        let log = rig.root + "/points-\(command).log"
        let boot = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        if command == "roll" {
            let r = try await rig.roll(store, env: ["KEYROLL_TEST_SIDE_EFFECT_LOG": log])
            #expect(r.status == 0, "reference roll: \(r.stderr.suffix(500))")
        } else {
            _ = try await rig.agent(store, env: ["KEYROLL_TEST_SIDE_EFFECT_LOG": log]) { rig.converged(store, bundle.appId, bootstrap: boot) }
        }
        return try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map(String.init)
    }

    /// Every named side effect of a roll, as a real process killed there with SIGKILL: the crash
    /// leaves the app able to sign in, and a restarted process converges with nothing sent twice.
    @Test(arguments: ["roll", "agent"])
    func sigkilledAtEveryNamedPointConverges(_ command: String) async throws {
        try Binaries.require()
        let rig = try await Rig.start()
        let all = try await points(rig, command)
        #expect(all.count > 40, "\(all)")
        let slice = Self.slice()
        for (i, point) in all.enumerated() where slice.includes(i) {
            let context = "\(command) killed at \(point)"
            let (store, bundle) = try await rig.newStore("\(command)-\(i)")
            let boot = try bundle.signingCredential().certificate.sha1Thumbprint.hex
            let before = rig.server.emulator.requestCounts()
            let status: Int32?
            if command == "roll" {
                status = try await rig.roll(store, env: ["KEYROLL_TEST_CRASH_AT": point]).status
            } else {
                status = try await rig.agent(store, env: ["KEYROLL_TEST_CRASH_AT": point], timeout: 60) { false }
            }
            #expect(status == 9, "\(context): expected SIGKILL, got \(String(describing: status))")
            await rig.assertUsable(store, bundle.appId, context)
            if command == "roll" {
                let resumed = try await rig.roll(store, extra: ["--if-due"])
                #expect(resumed.status == 0, "\(context): resume failed (\(resumed.status)): \(resumed.stderr.suffix(600))")
            } else {
                _ = try await rig.agent(store) { rig.converged(store, bundle.appId, bootstrap: boot) }
            }
            try rig.assertConverged(store, bundle.appId, bootstrap: boot, context)
            await rig.assertUsable(store, bundle.appId, context + ", after restart")
            let spent = rig.server.emulator.requestCounts().reduce(into: [String: Int]()) { $0[$1.key] = $1.value - (before[$1.key] ?? 0) }
            #expect(spent["addKey", default: 0] == 1 && spent["removeKey", default: 0] == 1, "\(context): \(spent)")
        }
        let ran = all.indices.filter(slice.includes).count
        print("SIGKILL crash points (\(command)): \(ran) of \(all.count) points killed and restarted"
              + slice.note(ran: ran, of: all.count, variable: "KEYROLL_CRASH_POINTS") + " (failures are recorded as issues above)")
        await rig.server.stop()
    }

    @Test
    func agentDaemonServesMetricsHealthAndStopsGracefully() async throws {
        try Binaries.require()
        let rig = try await Rig.start()
        let (store, bundle) = try await rig.newStore("daemon")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Binaries.keyroll)
        p.arguments = ["agent", "--store", store.path, "--metrics-port", "0"]
        p.environment = ProcessInfo.processInfo.environment.merging(["KEYROLL_CA_FILE": rig.server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]) { $1 }
        let err = Pipe()
        p.standardError = err
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        // read log lines until the metrics port is announced and the bootstrap roll finished
        var port: Int?
        var log = ""
        let handle = err.fileHandleForReading
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            log += String(decoding: chunk, as: UTF8.self)
            if port == nil, let r = log.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                port = Int(log[r].split(separator: ":").last!)
            }
            if port != nil, log.contains("roll complete") { break }
        }
        let metricsPort = try #require(port, "no metrics port in: \(log.suffix(1000))")
        #expect(log.contains("roll complete"), "bootstrap not rolled: \(log.suffix(1500))")
        let metrics = try await Tools.run(["curl", "-s", "http://127.0.0.1:\(metricsPort)/metrics"]).stdout
        for family in ["keyroll_time_to_cliff_seconds", "keyroll_certificate_not_after_seconds", "keyroll_rolls_total", "keyroll_next_roll_timestamp_seconds",
                       "keyroll_alarm", "keyroll_clock_offset_seconds"] {
            #expect(metrics.contains(family), "\(family) missing from /metrics")
        }
        #expect(metrics.contains(#"keyroll_rolls_total{app_id="\#(bundle.appId)",outcome="rolled"} 1"#), "\(metrics)")
        let bootThumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        #expect(!metrics.contains(bootThumb), "the retired bootstrap certificate is no longer exported")
        let ready = try await Tools.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(metricsPort)/readyz"]).stdout
        #expect(ready == "200")
        let health = try await Tools.run(["curl", "-s", "-w", "\n%{http_code}", "http://127.0.0.1:\(metricsPort)/healthz"]).stdout
        #expect(health.hasSuffix("200"), "\(health)")
        // no secret in the logs
        #expect(!log.contains("BEGIN PRIVATE KEY") && !log.contains("eyJ"), "secret material in logs")
        p.terminate()  // SIGTERM
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus == 0, "graceful shutdown: \(p.terminationReason) \(p.terminationStatus)")
        await rig.server.stop()
    }
}
