import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import Logging
import LabHarness
import KeyRollCLI
import Provisioning
import ServiceLifecycle

/// Benchmarks. Every figure is printed next to a bound measured in the same run on the same
/// machine, and as a ratio to it, so noisy machines still compare. Not a test: run it on a quiet
/// machine with a release build (Benchmarks/run.sh).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure KeyRoll against the physical bound (RSA on this CPU) and against what users would use instead.",
        subcommands: [Crypto.self, Rolls.self, EmulatorLoad.self, Tenant.self, Footprint.self, Peers.self])

    /// One line of results, printed as text and collected as JSON.
    struct Figure: Codable {
        var name: String
        var value: Double
        var unit: String
        var bound: Double?
        var boundName: String?
        var command: String
        var ratio: Double? { bound.flatMap { $0 > 0 ? value / $0 : nil } }

        func print(json: Bool) {
            if json {
                let e = JSONEncoder()
                e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
                Swift.print(String(decoding: (try? e.encode(self)) ?? Data(), as: UTF8.self))
            } else {
                var s = "\(name): \(fmt(value)) \(unit)"
                if let b = bound, let n = boundName { s += "   bound \(fmt(b)) (\(n))   ratio \(String(format: "%.1f%%", (ratio ?? 0) * 100))" }
                Swift.print(s)
            }
        }
    }

    static func fmt(_ v: Double) -> String { v >= 100 ? String(format: "%.0f", v) : v >= 1 ? String(format: "%.2f", v) : String(format: "%.4f", v) }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// User + system CPU seconds used so far by this process (`RUSAGE_SELF`, all threads) or by
    /// its waited-for children (`RUSAGE_CHILDREN`).
    static func cpuSeconds(_ who: __rusage_who) -> Double {
        var u = rusage()
        getrusage(who.rawValue, &u)
        func secs(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return secs(u.ru_utime) + secs(u.ru_stime)
    }

    /// RSA keygen/s with `threads` parallel generators for `count` keys in total.
    static func keygenRate(bits: RSAKeySize, count: Int, threads: Int) -> Double {
        let t0 = now()
        DispatchQueue.concurrentPerform(iterations: threads) { t in
            for _ in 0..<(count / threads + (t < count % threads ? 1 : 0)) { _ = try? RSAPrivateKey.generate(size: bits) }
        }
        return Double(count) / (now() - t0)
    }

    static func signRate(bits: RSAKeySize, seconds: Double, algorithm: JWSAlgorithm) throws -> Double {
        let key = try RSAPrivateKey.generate(size: bits)
        let msg = Array(repeating: UInt8(0x61), count: 600)
        var n = 0
        let t0 = now()
        while now() - t0 < seconds { _ = try key.sign(msg, algorithm: algorithm); n += 1 }
        return Double(n) / (now() - t0)
    }

    /// `openssl speed -seconds N rsaBITS`: sign/s (single thread).
    static func opensslSignRate(bits: Int, seconds: Int) -> Double? {
        // `openssl speed` times itself with SIGALRM; children inherit this process's blocked-signal
        // mask, so start it through a shim that clears the mask first.
        let shim = "import signal,subprocess,sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); sys.exit(subprocess.call(sys.argv[1:], stderr=subprocess.DEVNULL))"
        guard let out = try? run(["python3", "-c", shim, "openssl", "speed", "-seconds", "\(seconds)", "rsa\(bits)"]) else { return nil }
        for line in out.split(separator: "\n") where line.hasPrefix("rsa \(bits) bits") || line.hasPrefix("rsa  \(bits) bits") {
            let cols = line.split(separator: " ").filter { !$0.isEmpty }
            // rsa 2048 bits 0.000770s 0.000022s   1298.7  45345.2
            if cols.count >= 7, let s = Double(cols[cols.count - 2]) { return s }
        }
        return nil
    }

    /// Python `cryptography` (OpenSSL) RSA keygen/s, single thread.
    static func pythonKeygenRate(bits: Int, count: Int) -> Double? {
        let script = "import time;from cryptography.hazmat.primitives.asymmetric import rsa\nt=time.perf_counter()\nfor _ in range(\(count)): rsa.generate_private_key(public_exponent=65537,key_size=\(bits))\nprint(\(count)/(time.perf_counter()-t))"
        for py in [ProcessInfo.processInfo.environment["KEYROLL_PYTHON"], ".venv-py/bin/python", "python3"].compactMap({ $0 }) {
            if let out = try? run([py, "-c", script]), let v = Double(out.trimmingCharacters(in: .whitespacesAndNewlines)) { return v }
        }
        return nil
    }

    /// A command's standard output; throws unless it exits 0.
    @discardableResult
    static func run(_ argv: [String], env: [String: String] = [:]) throws -> String {
        let m = try Measured.runBlocking(argv, env: env)
        guard m.status == 0 else { throw UserFacingError("\(argv[0]) exited \(m.status)") }
        return m.stdout
    }

    static func quietLogs() {
        LoggingSystem.bootstrap { label in var h = StreamLogHandler.standardError(label: label); h.logLevel = .critical; return h }
    }

    // MARK: crypto

    struct Crypto: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "RSA keygen/s and sign/s through swift-crypto next to OpenSSL on this machine.")
        @Option var seconds = 3.0
        @Option(help: "Keys per keygen measurement.") var keys = 20
        @Flag var json = false

        func run() async throws {
            let cmd = "keyroll-lab bench crypto --seconds \(seconds) --keys \(keys)"
            for bits in [RSAKeySize.bits2048, .bits3072] {
                let swiftSign = try BenchCommand.signRate(bits: bits, seconds: seconds, algorithm: .rs256)
                let ssl = BenchCommand.opensslSignRate(bits: bits.rawValue, seconds: max(1, Int(seconds)))
                Figure(name: "RS256 sign RSA-\(bits.rawValue), swift-crypto, 1 thread", value: swiftSign, unit: "sign/s", bound: ssl, boundName: "openssl speed rsa\(bits.rawValue)", command: cmd).print(json: json)
                let ps = try BenchCommand.signRate(bits: bits, seconds: seconds / 2, algorithm: .ps256)
                Figure(name: "PS256 sign RSA-\(bits.rawValue), swift-crypto, 1 thread", value: ps, unit: "sign/s", bound: ssl, boundName: "openssl speed rsa\(bits.rawValue) (PKCS#1)", command: cmd).print(json: json)
                let n = bits == .bits2048 ? keys : max(4, keys / 3)
                let kg = BenchCommand.keygenRate(bits: bits, count: n, threads: 1)
                let py = BenchCommand.pythonKeygenRate(bits: bits.rawValue, count: n)
                Figure(name: "keygen RSA-\(bits.rawValue), swift-crypto, 1 thread (n=\(n))", value: kg, unit: "keys/s", bound: py, boundName: "Python cryptography/OpenSSL keygen", command: cmd).print(json: json)
            }
        }
    }

    // MARK: rolls

    struct Rolls: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "End-to-end bootstrap rolls of N apps against the in-process emulator, as a fraction of the keygen bound.")
        /// RSA signatures in one bootstrap roll: the agent's client assertions (bootstrap key once,
        /// new key twice for verification), the self-signed certificate, the addKey and removeKey
        /// proofs, and the emulator's three access tokens.
        static let signaturesPerRoll = 9

        @Option var apps = 200
        @Option(help: "Rolls in flight at once (default: 2 × cores, so one roll's network and fsync waits overlap another's keygen).")
        var concurrency: Int?
        @Flag var json = false

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
            var rollers: [Roller] = []
            let metrics = MetricsRegistry.agent()
            for i in 0..<apps {  // setup, not timed
                let r = try await provisioner.provision(name: "bench-\(i)")
                let store = CredentialStore(path: "\(root)/\(i)")
                try Roller.importBundle(r.bundle, into: store, now: clock.now())
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
            let command = "keyroll-lab bench rolls --apps \(apps) --concurrency \(inFlight)"
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

    // MARK: emulator over loopback

    struct EmulatorLoad: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "emulator", abstract: "Tokens/s and addKey/s over loopback HTTP with wrk, against the RSA-2048 signing bound.")
        @Option var seconds = 5
        @Option var connections = 16
        @Option(help: "Apps the addKey load is spread over.") var apps = 100
        @Flag var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            guard (try? BenchCommand.run(["wrk", "--version"])) != nil || FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else {
                throw UserFacingError("wrk is not installed: apt-get install -y wrk")
            }
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let signBound = try BenchCommand.signRate(bits: .bits2048, seconds: 2, algorithm: .rs256)
            var settings = EmulatorSettings()
            settings.maxCredentialItems = 100_000
            let emulator = try EntraEmulator(settings: settings)
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            let server = try await ServedEmulator.serve(emulator, tls: nil)
            let base = server.baseURL
            let dir = NSTemporaryDirectory() + "/keyroll-wrk-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // tokens: one pre-signed assertion (Entra accepts jti reuse), 1 hour lifetime
            let tokenURL = "\(base)/\(reg.tenantID)/oauth2/v2.0/token"
            let assertion = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: tokenURL, credential: cred, now: Date(), lifetime: 3600)
            let form = FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", reg.appId), ("scope", "https://graph.microsoft.com/.default"),
                                            ("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", assertion)])
            try "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.body = \"\(form)\"\n".write(toFile: dir + "/token.lua", atomically: true, encoding: .utf8)
            let tokens = try await wrk(url: tokenURL, script: dir + "/token.lua")
            Figure(name: "emulator tokens over loopback HTTP (wrk, \(connections) connections)", value: tokens, unit: "tokens/s",
                   bound: signBound * Double(cores), boundName: "RSA-2048 sign/s × \(cores) cores (one signature per token)",
                   command: "keyroll-lab bench emulator --seconds \(seconds)").print(json: json)
            // addKey: apps whose own certificate signs the proofs; one body per app
            var lua = "local bodies = {}\nlocal paths = {}\nlocal bearer = {}\n"
            let now = Date()
            for i in 0..<apps {
                let c = try SigningCredential.generate(subject: .init(commonName: "w\(i)"), notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(86_400))
                let r = try emulator.register(tenantID: reg.tenantID, displayName: "wrk-\(i)", certificates: [c.certificate])
                let proof = try ProofOfPossession.make(objectID: r.objectID, credential: c, now: now)
                let body = JSONValue.object(["keyCredential": .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(c.certificate.der))]),
                                             "proof": .string(proof)])
                let bearer = try JSONValue.parse(await emulator.handle(EmulatorRequest(method: "POST", target: "/\(reg.tenantID)/oauth2/v2.0/token",
                    headers: ["content-type": "application/x-www-form-urlencoded"],
                    body: Array(FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", r.appId), ("scope", "https://graph.microsoft.com/.default"),
                                                     ("client_assertion_type", ClientAssertion.assertionType),
                                                     ("client_assertion", try ClientAssertion.make(clientID: r.appId, tokenEndpoint: tokenURL, credential: c, now: now))]).utf8),
                    baseURL: base)).body)["access_token"]?.stringValue ?? ""
                lua += "bodies[\(i + 1)] = [[\(String(decoding: body.serialized(), as: UTF8.self))]]\npaths[\(i + 1)] = \"/v1.0/applications/\(r.objectID)/addKey\"\nbearer[\(i + 1)] = \"\(bearer)\"\n"
            }
            lua += "local n = 0\nrequest = function()\n  n = n % #bodies + 1\n  return wrk.format(\"POST\", paths[n], {[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer \" .. bearer[n]}, bodies[n])\nend\n"
            try lua.write(toFile: dir + "/addkey.lua", atomically: true, encoding: .utf8)
            let before = try emulator.store.counts()["key_credential"] ?? 0
            let adds = try await wrk(url: base + "/", script: dir + "/addkey.lua")
            let added = (try emulator.store.counts()["key_credential"] ?? 0) - before
            Figure(name: "emulator addKey over loopback HTTP (wrk, \(connections) connections, \(apps) apps; \(added) keys stored)", value: adds, unit: "addKey/s",
                   bound: signBound * Double(cores), boundName: "RSA-2048 sign/s × \(cores) cores",
                   command: "keyroll-lab bench emulator --seconds \(seconds) --apps \(apps)").print(json: json)
            await server.stop()
        }

        /// Requests/s of non-error answers, from wrk's summary.
        /// Blocking subprocess calls run on a Dispatch thread: one of Swift's few cooperative threads
        /// blocked in waitUntilExit would starve the in-process server being measured.
        func wrk(url: String, script: String) async throws -> Double {
            let argv = ["wrk", "-t1", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, url]
            let out = try await Background.run { try BenchCommand.run(argv) }
            var total = 0.0, non2xx = 0.0, seconds = Double(self.seconds)
            for line in out.split(separator: "\n") {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.contains("requests in") {
                    total = Double(t.split(separator: " ")[0]) ?? 0
                    if let r = t.range(of: "requests in ") { seconds = Double(t[r.upperBound...].split(separator: "s")[0]) ?? seconds }
                }
                if t.hasPrefix("Non-2xx or 3xx responses:") { non2xx = Double(t.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0 }
            }
            guard total > 0 else { throw UserFacingError("wrk reported no requests:\n\(out)") }
            if non2xx > 0 { FileHandle.standardError.write(Data("warning: \(Int(non2xx)) error responses not counted\n".utf8)) }
            return (total - non2xx) / seconds
        }
    }
}

/// An HTTPS emulator served by the benchmark process, with its state folder and a provisioner on
/// an in-process transport.
struct BenchEmulator {
    let emulator: EntraEmulator
    let server: ServedEmulator
    let base: String
    let dir: String
    let provisioner: Provisioner
    let registration: EntraEmulator.Registration
    let credential: SigningCredential

    static func start() async throws -> BenchEmulator {
        let emulator = try EntraEmulator()
        let (reg, cred) = try emulator.seedDevelopmentTenant()
        let dir = NSTemporaryDirectory() + "/keyroll-bench-\(UUID().uuidString.prefix(6))"
        let server = try await ServedEmulator.serve(emulator, tls: try EmulatorServer.TLSMaterial.generate(now: Date()), stateDir: dir,
                                                    seeded: .init(registration: reg, credential: cred))
        let base = server.baseURL
        let provisioner = LabClients(emulator: emulator, base: base, tenantID: reg.tenantID).provisioner(as: reg.appId, cred)
        return BenchEmulator(emulator: emulator, server: server, base: base, dir: dir, provisioner: provisioner, registration: reg, credential: cred)
    }

    /// Provisions `name` and returns its bundle path (0600).
    func bundle(_ name: String) async throws -> String {
        let r = try await provisioner.provision(name: name)
        let path = "\(dir)/\(name).json"
        try SecureFiles.writeAtomically(try r.bundle.encoded(), to: path)
        return path
    }

    func stop() async {
        await server.stop()
        try? FileManager.default.removeItem(atPath: dir)
    }

    /// Runs `body` with an emulator that is stopped (and its folder removed) afterwards, also on error.
    static func serving<T>(_ body: (BenchEmulator) async throws -> T) async throws -> T {
        let emu = try await start()
        do {
            let result = try await body(emu)
            await emu.stop()
            return result
        } catch {
            await emu.stop()
            throw error
        }
    }
}

/// A child process with its wall time and CPU time (user + system, from the kernel's rusage).
struct Measured {
    var status: Int32
    var wall: Double
    var cpu: Double
    var stdout: String

    /// Off the cooperative pool (the benchmark hosts the emulator in-process).
    static func run(_ argv: [String], env: [String: String] = [:]) async throws -> Measured {
        try await Background.run { try runBlocking(argv, env: env) }
    }

    static func runBlocking(_ argv: [String], env: [String: String] = [:]) throws -> Measured {
        let before = BenchCommand.cpuSeconds(RUSAGE_CHILDREN)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
        p.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        let t0 = BenchCommand.now()
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        let wall = BenchCommand.now() - t0
        return Measured(status: p.terminationStatus, wall: wall, cpu: BenchCommand.cpuSeconds(RUSAGE_CHILDREN) - before, stdout: String(decoding: data, as: UTF8.self))
    }
}

extension BenchCommand {
    /// This lab binary.
    static var selfPath: String { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0] }

    /// The production `keyroll` binary built beside this one: what the benchmarks run as agents.
    static func keyrollPath() throws -> String {
        let path = (selfPath as NSString).deletingLastPathComponent + "/keyroll"
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw UserFacingError("The keyroll binary is not beside keyroll-lab (\(path)). Build both: swift build.")
        }
        return path
    }

    /// Memory (KiB) and CPU time of a process, from /proc: VmRSS, and RssAnon (heap, stacks and
    /// pages the process wrote: what it costs beyond the file pages it shares with the page cache).
    static func sample(pid: Int32) -> (rssKiB: Double, anonKiB: Double, cpuSeconds: Double)? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.range(of: ")") else { return nil }
        func kib(_ field: String) -> Double {
            status.split(separator: "\n").first { $0.hasPrefix(field) }.flatMap { Double($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        }
        let fields = stat[close.upperBound...].split(separator: " ")
        guard fields.count > 12 else { return nil }
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return (kib("VmRSS:"), kib("RssAnon:"), ticks / Double(sysconf(Int32(_SC_CLK_TCK))))
    }

    /// Resident KiB per mapping of a process (from /proc/PID/smaps), largest first: each file by
    /// its name, and `[anonymous]` for the heap, stacks and other private pages.
    static func residentByMapping(pid: Int32) -> [(String, Double)] {
        guard let smaps = try? String(contentsOfFile: "/proc/\(pid)/smaps", encoding: .utf8) else { return [] }
        var totals: [String: Double] = [:]
        var current = "[anonymous]"
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), first.first?.isHexDigit == true {
                // a mapping header: address perms offset dev inode [path]
                current = fields.count >= 6 ? String((String(fields[5]) as NSString).lastPathComponent) : "[anonymous]"
                if current.hasPrefix("[") && current != "[heap]" && current != "[stack]" { current = "[anonymous]" }
                if current == "[heap]" || current == "[stack]" { current = "[anonymous]" }
            } else if fields.first == "Rss:", fields.count >= 2, let kib = Double(fields[1]) {
                totals[current, default: 0] += kib
            }
        }
        return totals.sorted { $0.value > $1.value }
    }

    struct Footprint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Agent idle RSS and CPU with 1 and with N identities; cold start of `keyroll --version`.")
        @Option(help: "Idle measurement window in seconds.") var idleSeconds = 60.0
        @Option(help: "Identities in the large agent.") var identities = 100
        @Option(help: "Cold-start repetitions.") var starts = 20
        @Flag(help: "Run the agents with their /metrics and /healthz server listening (on a free loopback port) instead of without it.")
        var withServer = false
        @Flag var json = false
        @Flag(name: .customLong("baseline-child"), help: .hidden) var baselineChild = false

        func run() async throws {
            if baselineChild { try await Task.sleep(nanoseconds: 30_000_000_000); return }
            BenchCommand.quietLogs()
            let me = BenchCommand.selfPath, keyroll = try BenchCommand.keyrollPath()
            for (name, path) in [("keyroll", keyroll), ("keyroll-lab", me)] {
                let size = ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.doubleValue ?? 0) / 1_048_576
                Figure(name: "\(name) binary size", value: size, unit: "MiB", bound: nil, boundName: nil, command: "keyroll-lab bench footprint").print(json: json)
            }
            // cold start against /bin/true
            var ours: [Double] = [], lab: [Double] = [], trues: [Double] = []
            for _ in 0..<starts {
                ours.append(try await Measured.run([keyroll, "--version"]).wall)
                lab.append(try await Measured.run([me, "--version"]).wall)
                trues.append(try await Measured.run(["/bin/true"]).wall)
            }
            Figure(name: "cold start `keyroll-lab --version` (median of \(starts))", value: BenchCommand.median(lab) * 1000, unit: "ms",
                   bound: BenchCommand.median(trues) * 1000, boundName: "/bin/true", command: "keyroll-lab bench footprint").print(json: json)
            Figure(name: "cold start `keyroll --version` (median of \(starts))", value: BenchCommand.median(ours) * 1000, unit: "ms",
                   bound: BenchCommand.median(trues) * 1000, boundName: "/bin/true", command: "keyroll-lab bench footprint").print(json: json)
            // baseline RSS: the same binary idle in a sleep
            let baseline = Process()
            baseline.executableURL = URL(fileURLWithPath: me)
            baseline.arguments = ["bench", "footprint", "--baseline-child"]
            try baseline.run()
            try await Task.sleep(nanoseconds: 1_500_000_000)
            let base = BenchCommand.sample(pid: baseline.processIdentifier)
            let baseRSS = base?.rssKiB ?? 0, baseAnon = base?.anonKiB ?? 0
            baseline.terminate()
            try await BenchEmulator.serving { emu in
                for n in [1, identities] {
                    var stores: [String] = []
                    for i in 0..<n {
                        let b = try await emu.bundle("fp\(n)-\(i)")
                        let store = "\(emu.dir)/stores-\(n)/\(i)"
                        try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(b)), into: CredentialStore(path: store), now: Date())
                        stores.append(store)
                    }
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: keyroll)
                    p.arguments = ["agent", withServer ? "--metrics-port=0" : "--metrics-port=-1"] + stores.flatMap { ["--store", $0] }
                    p.environment = ProcessInfo.processInfo.environment.merging(["KEYROLL_CA_FILE": emu.dir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]) { $1 }
                    p.standardError = FileHandle.nullDevice
                    p.standardOutput = FileHandle.nullDevice
                    try p.run()
                    // wait until every identity has rolled its bootstrap
                    let deadline = Date().addingTimeInterval(900)
                    while Date() < deadline {
                        guard p.isRunning else { throw UserFacingError("the agent exited with status \(p.terminationStatus) before rolling") }
                        let done = stores.filter { (try? StoreReader.status(path: $0, policy: RollPolicy(), now: Date()))?.activeOrigin == .keyroll }.count
                        if done == n { break }
                        try await Task.sleep(nanoseconds: 200_000_000)
                    }
                    try await Task.sleep(nanoseconds: 2_000_000_000)
                    guard let a = BenchCommand.sample(pid: p.processIdentifier) else { throw UserFacingError("agent exited") }
                    try await Task.sleep(nanoseconds: UInt64(idleSeconds * 1e9))
                    guard let b = BenchCommand.sample(pid: p.processIdentifier) else { throw UserFacingError("agent exited") }
                    let byMapping = BenchCommand.residentByMapping(pid: p.processIdentifier)
                    p.terminate()
                    p.waitUntilExit()
                    // where the resident pages are: the binary, each shared library, the heap
                    for (mapping, kib) in byMapping.prefix(8) {
                        Figure(name: "agent idle RSS in \(mapping), \(n) identit\(n == 1 ? "y" : "ies")", value: kib / 1024, unit: "MiB",
                               bound: b.rssKiB / 1024, boundName: "the agent's whole RSS", command: "keyroll-lab bench footprint").print(json: json)
                    }
                    Figure(name: "agent idle RSS, \(n) identit\(n == 1 ? "y" : "ies")" + (withServer ? ", metrics server on" : ""), value: b.rssKiB / 1024, unit: "MiB",
                           bound: baseRSS / 1024, boundName: "keyroll-lab asleep", command: "keyroll-lab bench footprint --identities \(identities)").print(json: json)
                    Figure(name: "agent idle anonymous memory (RssAnon: heap, stacks), \(n) identit\(n == 1 ? "y" : "ies")", value: b.anonKiB / 1024, unit: "MiB",
                           bound: baseAnon / 1024, boundName: "keyroll-lab asleep", command: "keyroll-lab bench footprint --identities \(identities)").print(json: json)
                    Figure(name: "agent idle CPU over \(Int(idleSeconds)) s, \(n) identit\(n == 1 ? "y" : "ies")", value: b.cpuSeconds - a.cpuSeconds, unit: "CPU-s",
                           bound: idleSeconds, boundName: "one core for the window", command: "keyroll-lab bench footprint --idle-seconds \(Int(idleSeconds))").print(json: json)
                }
            }
        }
    }

    struct Peers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The same bootstrap + roll by keyroll, a hand-written MSAL Python script, and Azure CLI's privileged path, side by side.")
        @Option(help: "Repetitions per peer.") var reps = 3
        @Option(help: "Python with msal, cryptography, requests, PyJWT.") var python = ProcessInfo.processInfo.environment["KEYROLL_PYTHON"] ?? ".venv-py/bin/python"
        @Option(help: "The Azure CLI (az) to compare, e.g. .venv-azcli/bin/az.") var az: String?
        @Option(help: "The MSAL peer script.") var script = "Benchmarks/peers/msal_roll.py"
        @Flag var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            let me = try BenchCommand.keyrollPath()
            try await BenchEmulator.serving { emu in
                let env = ["KEYROLL_CA_FILE": emu.dir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]
                var keyroll: [Measured] = [], py: [Measured] = [], azRuns: [Measured] = []
                for i in 0..<reps {
                    let b1 = try await emu.bundle("peer-keyroll-\(i)")
                    let store = "\(emu.dir)/kr-\(i)"
                    try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(b1)), into: CredentialStore(path: store), now: Date())
                    let m = try await Measured.run([me, "roll", "--store", store], env: env)
                    guard m.status == 0 else { throw UserFacingError("keyroll roll failed") }
                    keyroll.append(m)
                    let b2 = try await emu.bundle("peer-python-\(i)")
                    let mp = try await Measured.run([python, script, b2, emu.dir + "/ca.pem", "\(emu.dir)/py-\(i)"])
                    guard mp.status == 0 else { throw UserFacingError("the MSAL peer script failed (\(mp.status)); run it by hand to see why") }
                    py.append(mp)
                }
                func report(_ name: String, _ ms: [Measured], _ cmd: String) {
                    let kw = BenchCommand.median(keyroll.map(\.wall)), kc = BenchCommand.median(keyroll.map(\.cpu))
                    Figure(name: "\(name): wall per operation", value: BenchCommand.median(ms.map(\.wall)), unit: "s", bound: kw, boundName: "keyroll roll", command: cmd).print(json: json)
                    Figure(name: "\(name): CPU per operation", value: BenchCommand.median(ms.map(\.cpu)), unit: "CPU-s", bound: kc, boundName: "keyroll roll", command: cmd).print(json: json)
                }
                report("keyroll roll (bootstrap + roll)", keyroll, "keyroll-lab bench peers")
                report("MSAL Python script (bootstrap + roll)", py, "keyroll-lab bench peers --python \(python)")
                if let az {
                    let cfg = emu.dir + "/azcfg"
                    try FileManager.default.createDirectory(atPath: cfg, withIntermediateDirectories: true)
                    let combined = emu.dir + "/combined-ca.pem"
                    let system = (try? String(contentsOfFile: "/etc/ssl/certs/ca-certificates.crt", encoding: .utf8)) ?? ""
                    try (system + (try String(contentsOfFile: emu.dir + "/ca.pem", encoding: .utf8))).write(toFile: combined, atomically: true, encoding: .utf8)
                    let azEnv = ["AZURE_CONFIG_DIR": cfg, "REQUESTS_CA_BUNDLE": combined, "CURL_CA_BUNDLE": combined, "AZURE_CORE_INSTANCE_DISCOVERY": "false",
                                 "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_USE_MSAL_HTTP_CACHE": "false", "AZURE_CORE_ONLY_SHOW_ERRORS": "true"]
                    let b = emu.base
                    for argv in [[az, "cloud", "register", "-n", "KeyRollEmu", "--endpoint-active-directory", b, "--endpoint-active-directory-resource-id", b + "/",
                                  "--endpoint-resource-manager", b + "/", "--endpoint-microsoft-graph-resource-id", b + "/", "--skip-endpoint-discovery"],
                                 [az, "cloud", "set", "-n", "KeyRollEmu"],
                                 [az, "login", "--service-principal", "-u", emu.registration.appId, "--certificate", emu.dir + "/provisioner.pem",
                                  "--tenant", emu.registration.tenantID, "--allow-no-subscriptions"]] {
                        let r = try await Measured.run(argv, env: azEnv)
                        guard r.status == 0 else { throw UserFacingError("\(argv[1...2].joined(separator: " ")) failed with status \(r.status)") }
                    }
                    for i in 0..<reps {
                        let r = try await emu.provisioner.provision(name: "peer-az-\(i)")
                        let m = try await Measured.run([az, "ad", "app", "credential", "reset", "--id", r.application.appId, "--append", "--create-cert"], env: azEnv)
                        guard m.status == 0 else { throw UserFacingError("az ad app credential reset failed (\(m.status))") }
                        let keys = try emu.emulator.keyCredentials(appId: r.application.appId)
                        guard keys.count == 2 else { throw UserFacingError("az ad app credential reset left \(keys.count) keys on the app, expected the bootstrap key and a new one") }
                        azRuns.append(m)
                    }
                    report("Azure CLI `az ad app credential reset --append --create-cert` (privileged add only)", azRuns, "keyroll-lab bench peers --az \(az)")
                }
            }
        }
    }
}
