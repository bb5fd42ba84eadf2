import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness
import Logging
import Provisioning
import ServiceLifecycle

extension BenchCommand {
    struct Rolls: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rolls", abstract: "End-to-end bootstrap rolls of N apps against the in-process emulator, as a fraction of the keygen bound.")
        /// RSA signatures in one bootstrap roll: the agent's client assertions (bootstrap key once,
        /// new key twice for verification), the self-signed certificate, the addKey and removeKey
        /// proofs, and the emulator's three access tokens.
        static let signaturesPerRoll = 9

        @Option var apps = 200
        @Option(help: "Rolls in flight at once (default: 2 × cores, so one roll's network and fsync waits overlap another's keygen).")
        var concurrency: Int?
        @Flag var json = false
        @Option(help: ArgumentHelp("Where the rolled keys are generated: file, softhsm2 (a SoftHSM2 token made for the run), or a pkcs11: URI.",
                                   valueName: "file|softhsm2|pkcs11:URI"))
        var keyStore = "file"

        func run() async throws {
            BenchCommand.quietLogs()
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let inFlight = concurrency ?? 2 * cores
            let clock = ManualClock(Date())
            let emulator = try EntraEmulator(clock: clock)
            let base = "https://login.emulator.test"
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            let clients = LabClients(emulator: emulator, base: base, tenantID: reg.tenantID)
            let (transport, sleeper) = (clients.transport, clients.sleeper)
            let provisioner = clients.provisioner(as: reg.appId, cred)
            let root = NSTemporaryDirectory() + "/keyroll-bench-\(UUID().uuidString.prefix(6))"
            try SecureFiles.ensurePrivateDirectory(root)
            defer { try? FileManager.default.removeItem(atPath: root) }
            let keys = try DemoKeyStore.make(keyStore, root: root)
            var rollers: [Roller] = []
            let metrics = MetricsRegistry.agent()
            for i in 0..<apps {  // setup, not timed
                let r = try await provisioner.provision(name: "bench-\(i)")
                let store = CredentialStore(path: "\(root)/\(i)")
                try Roller.importBundle(r.bundle, into: store, now: clock.now(), keyStore: keys.setting())
                rollers.append(try Roller(store: store, transport: transport, clock: clock, sleeper: sleeper, logger: Logger(label: "bench"), metrics: metrics))
            }
            // bound: the same number of RSA-2048 keygens with the same parallelism, measured just
            // before and just after the rolls (key generation time varies a lot from key to key)
            let boundBefore = BenchCommand.keygenRate(bits: .bits2048, count: apps, threads: cores)
            FileHandle.standardError.write(Data("rolling \(apps) apps…\n".utf8))
            let t0 = BenchCommand.now()
            let cpu0 = BenchCommand.cpuSeconds(RUSAGE_SELF)
            let requests0 = emulator.requestCounts()
            let limit = AdaptiveLimit(start: inFlight, minimum: inFlight, maximum: inFlight)
            let results = await BulkRunner.run(rollers, limit: limit, progress: nil) { r in try await r.roll(reason: "bench") }
            let elapsed = BenchCommand.now() - t0
            let cpu = BenchCommand.cpuSeconds(RUSAGE_SELF) - cpu0
            let bound = 2 / (1 / boundBefore + 1 / BenchCommand.keygenRate(bits: .bits2048, count: apps, threads: cores))
            if !json {
                let perRoll = emulator.requestCounts().map { ($0.key, Double($0.value - (requests0[$0.key] ?? 0)) / Double(max(1, apps))) }
                    .filter { $0.1 > 0 }.sorted { $0.0 < $1.0 }.map { "\($0.0) \(BenchCommand.fmt($0.1))" }
                Swift.print("  requests per roll: " + perRoll.joined(separator: ", "))
            }
            if !json { Swift.print(String(format: "  CPU during the rolls: %.2f of %.2f core-seconds (%.0f%% busy)", cpu, elapsed * Double(cores), 100 * cpu / (elapsed * Double(cores)))) }
            let ok = results.filter { if case .success(.rolled) = $0 { return true }; return false }.count
            let failures = results.compactMap { r -> String? in if case .failure(let e) = r { return "\(e)" }; return nil }
            if !failures.isEmpty {
                FileHandle.standardError.write(Data("\(failures.count) rolls failed; first: \(failures[0].prefix(300))\n".utf8))
            }
            let command = "keyroll-lab bench rolls --apps \(apps) --concurrency \(inFlight)" + (keyStore == "file" ? "" : " --key-store \(keyStore)")
            if !json { Swift.print("  keys in \(keys.description): " + String(format: "%.1f ms per roll (wall time over %d rolls, %d in flight)", 1000 * elapsed / Double(max(1, ok)), ok, inFlight)) }
            Figure(name: "end-to-end rolls (\(ok)/\(apps) apps, \(inFlight) in flight: keygen, addKey, visible, 2 tokens, switch, removeKey)", value: Double(ok) / elapsed,
                   unit: "rolls/s", bound: bound, boundName: "RSA-2048 keygen/s on \(cores) threads", command: command).print(json: json)
            // Noise-free view of the same question: the share of both cores the rolls spent generating
            // keys (thread CPU time of the very keygens they did, so no second sample of keys is involved).
            let keygenCPU = metrics.value("keyroll_keygen_cpu_seconds_total") ?? 0
            Figure(name: "same rolls: CPU spent in their own keygens, per second", value: keygenCPU / elapsed, unit: "core-s/s",
                   bound: Double(cores), boundName: "\(cores) cores", command: command).print(json: json)
            // The crypto floor: a roll cannot cost less than its keygen plus the RSA signatures it
            // needs (the agent's assertions, certificate and proofs, and the emulator's tokens).
            let signatures = Double(Self.signaturesPerRoll)
            let signRate = try BenchCommand.signRate(bits: .bits2048, seconds: 1, algorithm: .ps256)
            let floor = Double(cores) / (Double(cores) / bound + signatures / signRate)
            Figure(name: "same rolls against the crypto floor (one keygen + \(Self.signaturesPerRoll) RSA-2048 signatures per roll)", value: Double(ok) / elapsed,
                   unit: "rolls/s", bound: floor, boundName: "keygen and signatures on \(cores) threads, \(BenchCommand.fmt(signRate)) sign/s per thread", command: command).print(json: json)
        }
    }
}
