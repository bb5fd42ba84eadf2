import AgentSupervisor
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

/// Benchmarks. Every figure is printed next to a bound measured in the same run on the same
/// machine, and as a ratio to it, so noisy machines still compare. Not a test: run it on a quiet
/// machine with a release build (Benchmarks/run.sh).
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure KeyRoll against the physical bound (RSA on this CPU) and against what users would use instead.",
        subcommands: [Crypto.self, Rolls.self, EmulatorLoad.self, Tenant.self, TokenEndpointLatency.self, Footprint.self, Peers.self])

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

    /// Runs `body` `n` times, one after another; the median and 99th percentile in milliseconds.
    static func latencies(_ n: Int, _ body: (Int) async throws -> Void) async throws -> (p50: Double, p99: Double) {
        var ms: [Double] = []
        for i in 0..<max(1, n) {
            let t0 = now()
            try await body(i)
            ms.append((now() - t0) * 1000)
        }
        ms.sort()
        return (ms[ms.count / 2], ms[min(ms.count - 1, Int(Double(ms.count) * 0.99))])
    }

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

extension Measured {
    /// The wall time of one start of `argv` (an absolute path), seconds: from just before
    /// `posix_spawn` to `wait4`'s return, output to /dev/null. What a shell or systemd pays to run
    /// the program; nothing of this process's own machinery (Foundation's `Process` adds a monitoring
    /// thread, pipes and a signal source to every start, `/bin/true`'s included, which would blur
    /// the ratio between a program and its bound).
    static func startTime(_ argv: [String]) throws -> Double {
        let t0 = BenchCommand.now()
        let pid: pid_t
        do { pid = try CleanSpawn.start(argv, quiet: true) } catch { throw UserFacingError("cannot start \(argv[0]): \(error)") }
        var status: Int32 = 0
        while true {
            let reaped = wait4(pid, &status, 0, nil)
            if reaped == pid { break }
            if reaped < 0 && errno == EINTR { continue }
            throw UserFacingError("cannot wait for \(argv[0]) (pid \(pid)): \(String(cString: strerror(errno)))")
        }
        let wall = BenchCommand.now() - t0
        guard status == 0 else { throw UserFacingError("\(argv.joined(separator: " ")) exited with wait status \(status)") }
        return wall
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

    /// The shared libraries a binary needs, as `ldd` lists them (the vDSO left out).
    static func sharedLibraries(of binary: String) -> [String] {
        // ldd exits 1 for a binary with no dynamic section: then there is no library to list
        let out = (try? run(["/usr/bin/ldd", binary])) ?? ""
        return out.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty && !$0.hasPrefix("linux-vdso") && !$0.contains("statically linked") }
            .map { String($0.split(separator: " ").first ?? "") }
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

    /// ``sample(pid:)`` of a process and of its children now running, with the CPU time of the
    /// children it has reaped: the lean agent's supervisor and any pass it runs.
    static func sampleWithChildren(pid: Int32) -> (rssKiB: Double, anonKiB: Double, cpuSeconds: Double)? {
        guard var total = sample(pid: pid) else { return nil }
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.range(of: ")") {
            let fields = stat[close.upperBound...].split(separator: " ")
            if fields.count > 14 { total.cpuSeconds += ((Double(fields[13]) ?? 0) + (Double(fields[14]) ?? 0)) / Double(sysconf(Int32(_SC_CLK_TCK))) }
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let child = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                  let close = stat.range(of: ")") else { continue }
            let fields = stat[close.upperBound...].split(separator: " ")
            guard fields.count > 1, Int32(fields[1]) == pid, let c = sample(pid: child) else { continue }
            total.rssKiB += c.rssKiB
            total.anonKiB += c.anonKiB
            total.cpuSeconds += c.cpuSeconds
        }
        return total
    }

    /// Resident KiB per mapping of a process (from /proc/PID/smaps), largest first: each file by
    /// its name, and `[anonymous]` for the heap, stacks and other private pages.
    static func residentByMapping(pid: Int32) -> [(String, Double)] {
        // /proc files report size 0: read to the end, not to the size
        guard let handle = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps"), let data = try? handle.readToEnd() else { return [] }
        let smaps = String(decoding: data, as: UTF8.self)
        var totals: [String: Double] = [:]
        var current = "[anonymous]"
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), first.first?.isHexDigit == true {
                // a mapping header: address perms offset dev inode [path]
                current = fields.count >= 6 ? String((String(fields[5]) as NSString).lastPathComponent) : "[anonymous]"
                if current.hasPrefix("[") { current = "[anonymous]" }  // [heap], [stack], [vdso], …
            } else if fields.first == "Rss:", fields.count >= 2, let kib = Double(fields[1]) {
                totals[current, default: 0] += kib
            }
        }
        return totals.sorted { $0.value > $1.value }
    }
}
