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
    struct Footprint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "footprint", abstract: "Agent idle RSS and CPU with 1 and with N identities; cold start of `keyroll --version`.")
        @Option(help: "Idle measurement window in seconds.") var idleSeconds = 60.0
        @Option(help: "Identities in the large agent.") var identities = 100
        @Option(help: "Cold-start repetitions.") var starts = 20
        @Flag(help: "Run the agents with their /metrics and /healthz server listening (on a free loopback port) instead of without it.")
        var withServer = false
        @Flag(help: "Run the agents with --lean (keyroll-supervisor between passes); their figures add any pass running when sampled, and the CPU of the passes.")
        var lean = false
        @Option(help: "The keyroll binary to measure (default: the one beside keyroll-lab), e.g. a static release build from scripts/package.")
        var keyroll: String?
        @Flag var json = false

        /// A loopback port free now (bound to port 0, then closed) for the agent's server.
        static func freeLoopbackPort() throws -> Int {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            var size = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) == 0 && getsockname(fd, $0, &size) == 0 }
            }
            guard bound else { throw UserFacingError("cannot find a free loopback port for the agent's /metrics") }
            return Int(UInt16(bigEndian: address.sin_port))
        }

        /// A page of the agent's server (its body; empty when it does not answer).
        static func get(port: Int, _ path: String) async throws -> String {
            let http = try AsyncHTTPTransport()
            let answer = try? await http.send(HTTPRequestMessage(method: "GET", url: "http://127.0.0.1:\(port)\(path)"), timeout: 10)
            try await http.shutdown()
            return answer.map { String(decoding: $0.body, as: UTF8.self) } ?? ""
        }

        func validate() throws {
            guard identities >= 1 else { throw ValidationError("--identities \(identities): the large agent needs at least 1 identity.") }
            guard starts >= 1 else { throw ValidationError("--starts \(starts): measure at least 1 start.") }
            guard idleSeconds > 0, idleSeconds.isFinite else { throw ValidationError("--idle-seconds \(idleSeconds): give a window longer than 0 seconds.") }
        }

        func run() async throws {
            BenchCommand.quietLogs()
            let me = BenchCommand.selfPath, keyroll = try self.keyroll ?? BenchCommand.keyrollPath()
            guard FileManager.default.isExecutableFile(atPath: keyroll) else {
                throw UserFacingError("--keyroll \(keyroll) is not an executable file. Pass a keyroll binary, e.g. .build-package/x86_64-unknown-linux-gnu/release/keyroll after scripts/package.")
            }
            Figure(name: "keyroll shared libraries (ldd)", value: Double(BenchCommand.sharedLibraries(of: keyroll).count), unit: "libraries",
                   bound: nil, boundName: nil, command: "ldd keyroll").print(json: json)
            for (name, path) in [("keyroll", keyroll), ("keyroll-lab", me)] {
                let size = ((try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.doubleValue ?? 0) / 1_048_576
                Figure(name: "\(name) binary size", value: size, unit: "MiB", bound: nil, boundName: nil, command: "keyroll-lab bench footprint").print(json: json)
            }
            // cold start against /bin/true: each program interleaved with /bin/true only (a start
            // between them of another large program would evict the caches both are measured in),
            // each start timed from spawn to reap
            let (ours, trues, lab, labTrues) = try await Background.run {
                func interleaved(_ program: String) throws -> ([Double], [Double]) {
                    var times: [Double] = [], trues: [Double] = []
                    for _ in 0..<starts {
                        times.append(try Measured.startTime([program, "--version"]))
                        trues.append(try Measured.startTime(["/bin/true"]))
                    }
                    return (times, trues)
                }
                let (ours, trues) = try interleaved(keyroll)
                let (lab, labTrues) = try interleaved(me)
                return (ours, trues, lab, labTrues)
            }
            Figure(name: "cold start `keyroll-lab --version` (median of \(starts))", value: BenchCommand.median(lab) * 1000, unit: "ms",
                   bound: BenchCommand.median(labTrues) * 1000, boundName: "/bin/true", command: "keyroll-lab bench footprint").print(json: json)
            Figure(name: "cold start `keyroll --version` (median of \(starts))", value: BenchCommand.median(ours) * 1000, unit: "ms",
                   bound: BenchCommand.median(trues) * 1000, boundName: "/bin/true", command: "keyroll-lab bench footprint").print(json: json)
            // baseline RSS: the same binary started and asleep
            let baseline = Process()
            baseline.executableURL = URL(fileURLWithPath: keyroll)
            baseline.arguments = ["idle-baseline", "--seconds", "60"]
            try baseline.run()
            try await Task.sleep(nanoseconds: 1_500_000_000)
            let base = BenchCommand.sample(pid: baseline.processIdentifier)
            let baseRSS = base?.rssKiB ?? 0, baseAnon = base?.anonKiB ?? 0
            baseline.terminate()
            baseline.waitUntilExit()
            try await BenchEmulator.serving { emu in
                for n in identities > 1 ? [1, identities] : [1] {  // each count once: its stores are new folders
                    var stores: [String] = []
                    for i in 0..<n {
                        let b = try await emu.bundle("fp\(n)-\(i)")
                        let store = "\(emu.dir)/stores-\(n)/\(i)"
                        try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(b)), into: CredentialStore(path: store), now: Date())
                        stores.append(store)
                    }
                    let p = Process()
                    p.executableURL = URL(fileURLWithPath: keyroll)
                    let port = withServer ? try Self.freeLoopbackPort() : -1
                    p.arguments = ["agent", "--metrics-port=\(port)"] + (lean ? ["--lean"] : []) + stores.flatMap { ["--store", $0] }
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
                    // the server as Prometheus uses it: a few scrapes before the window
                    var lastPassPeak: Double?
                    if withServer {
                        for page in ["/metrics", "/healthz", "/readyz", "/metrics", "/metrics"] {
                            let body = try await Self.get(port: port, page)
                            if page == "/metrics", let line = body.split(separator: "\n").first(where: { $0.hasPrefix("keyroll_agent_last_pass_max_rss_bytes ") }) {
                                lastPassPeak = Double(line.split(separator: " ").last ?? "")
                            }
                        }
                    }
                    let sample: (Int32) -> (rssKiB: Double, anonKiB: Double, cpuSeconds: Double)? = lean ? { BenchCommand.sampleWithChildren(pid: $0) } : { BenchCommand.sample(pid: $0) }
                    guard let a = sample(p.processIdentifier) else { throw UserFacingError("agent exited") }
                    try await Task.sleep(nanoseconds: UInt64(idleSeconds * 1e9))
                    guard let b = sample(p.processIdentifier) else { throw UserFacingError("agent exited") }
                    let byMapping = BenchCommand.residentByMapping(pid: p.processIdentifier)
                    p.terminate()
                    p.waitUntilExit()
                    // where the resident pages are: the binary, each shared library, the heap
                    for (mapping, kib) in byMapping.prefix(8) {
                        Figure(name: "agent idle RSS in \(mapping), \(n) identit\(n == 1 ? "y" : "ies")", value: kib / 1024, unit: "MiB",
                               bound: b.rssKiB / 1024, boundName: "the agent's whole RSS", command: "keyroll-lab bench footprint").print(json: json)
                    }
                    Figure(name: "agent idle RSS, \(n) identit\(n == 1 ? "y" : "ies")" + (withServer ? ", metrics server on" : "") + (lean ? ", lean (supervisor and any pass running)" : ""), value: b.rssKiB / 1024, unit: "MiB",
                           bound: baseRSS / 1024, boundName: "keyroll asleep", command: "keyroll-lab bench footprint --identities \(identities)").print(json: json)
                    if let lastPassPeak {
                        Figure(name: "lean agent: peak RSS of its last pass (a child keyroll, while it ran), \(n) identit\(n == 1 ? "y" : "ies")", value: lastPassPeak / 1_048_576, unit: "MiB",
                               bound: baseRSS / 1024, boundName: "keyroll asleep", command: "keyroll-lab bench footprint --lean --with-server").print(json: json)
                    }
                    Figure(name: "agent idle anonymous memory (RssAnon: heap, stacks), \(n) identit\(n == 1 ? "y" : "ies")", value: b.anonKiB / 1024, unit: "MiB",
                           bound: baseAnon / 1024, boundName: "keyroll asleep", command: "keyroll-lab bench footprint --identities \(identities)").print(json: json)
                    Figure(name: "agent idle CPU over \(Int(idleSeconds)) s, \(n) identit\(n == 1 ? "y" : "ies")", value: b.cpuSeconds - a.cpuSeconds, unit: "CPU-s",
                           bound: idleSeconds, boundName: "one core for the window", command: "keyroll-lab bench footprint --idle-seconds \(Int(idleSeconds))").print(json: json)
                }
            }
        }
    }
}
