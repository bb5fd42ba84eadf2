import Foundation
import Testing
import TestSupport

/// `keyroll-supervisor` as a process, with shell scripts for passes: what it serves after a pass that
/// failed, how it treats hostile connections, and how it stops.
@Suite(.serialized) struct SupervisorProcessTests {
    static let supervisor = Tools.packageRoot + "/.build/debug/keyroll-supervisor"

    final class Running {
        let process = Process()
        let state: String
        let port: Int
        let log: String

        /// A supervisor whose pass is `script` (run by /bin/sh with the state folder as $1), started
        /// through `executable` (the supervisor, or a link to it).
        init(_ script: String, via executable: String = SupervisorProcessTests.supervisor) throws {
            #expect(FileManager.default.isExecutableFile(atPath: SupervisorProcessTests.supervisor), "swift build builds keyroll-supervisor")
            let dir = try Tools.temporaryDirectory("keyroll-supervisor")
            state = dir + "/state"
            try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o700])
            let pass = dir + "/pass.sh"
            try ("#!/bin/sh\nset -e\ncd \"$1\"\n" + script).write(toFile: pass, atomically: true, encoding: .utf8)
            chmod(pass, 0o700)
            log = dir + "/supervisor.log"
            FileManager.default.createFile(atPath: log, contents: nil)
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["--state", state, "--metrics-port", "0", "--retry-seconds", "1", "--pass-deadline", "10", "--", pass, state]
            process.standardError = FileHandle(forWritingAtPath: log)
            try process.run()
            var found: Int?
            let deadline = Date().addingTimeInterval(10)
            while found == nil, Date() < deadline {
                let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                if let r = text.range(of: #"http://127\.0\.0\.1:(\d+)"#, options: .regularExpression) { found = Int(text[r].split(separator: ":").last!) }
                usleep(50_000)
            }
            port = try #require(found, "no port announced")
        }

        var text: String { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }

        func waitFor(_ what: String, seconds: Double = 30, _ condition: (String) -> Bool) throws {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if condition(text) { return }
                usleep(50_000)
            }
            throw ToolError("\(what) did not happen:\n\(text.suffix(2000))")
        }

        func get(_ path: String) async throws -> (status: String, body: String) { try await ServedProcess.get(port: port, path) }

        func stop() -> Int32? { ServedProcess.stop(process) }

        deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
    }

    /// Started by another name (here a link named `3`, as kernels before 6.14 name a process that
    /// `keyroll agent --lean` starts by descriptor), it names itself: ps, top and the journal show
    /// keyroll-supervisor (the kernel keeps 15 bytes of it).
    @Test func itNamesItselfWhateverStartedIt() throws {
        let dir = try Tools.temporaryDirectory("keyroll-supervisor-name")
        let link = dir + "/3"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: Self.supervisor)
        let s = try Running("echo 3600 > next-pass", via: link)
        let comm = try String(contentsOfFile: "/proc/\(s.process.processIdentifier)/comm", encoding: .utf8)
        #expect(comm == "keyroll-supervi\n", "the process is named \(comm)")
        #expect(s.stop() == 0)
    }

    /// Pass 1 ends well, pass 2 exits 1, pass 3 ends well: between 2 and 3 the agent is unhealthy
    /// and not ready (not the last good pass's answer), and the failure is counted.
    @Test func afterAFailedPassHealthSaysSoUntilOneEndsWell() async throws {
        let s = try Running("""
            n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count
            if [ $n -eq 2 ]; then exit 1; fi
            if [ $n -ge 3 ] && [ ! -e go ]; then exit 1; fi
            printf '200 application/json\\n{"healthy":true,"pass":%s}' $n > healthz.http
            printf '200 text/plain\\nready\\n' > readyz.http
            printf '200 text/plain; version=0.0.4\\nkeyroll_pass %s\\n' $n > metrics.http
            if [ $n -eq 1 ]; then echo 1 > next-pass; else echo 3600 > next-pass; fi
            """)
        try s.waitFor("a failed pass") { $0.contains("exited with status 1") }
        let health = try await s.get("/healthz")
        #expect(health.status == "503" && health.body.contains("keyroll_agent_consecutive_pass_failures"), "\(health)")
        #expect(try await s.get("/readyz").status == "503")
        let metrics = try await s.get("/metrics").body
        #expect(metrics.contains("keyroll_pass 1\n"), "the last good pass's metrics stay served")
        #expect(metrics.contains("keyroll_agent_consecutive_pass_failures ") && !metrics.contains("keyroll_agent_consecutive_pass_failures 0"), "\(metrics)")
        FileManager.default.createFile(atPath: s.state + "/go", contents: nil)
        try s.waitFor("a pass that ends well again") { $0.components(separatedBy: "pass finished").count - 1 >= 2 }
        let again = try await s.get("/healthz")
        #expect(again.status == "200" && again.body.contains(#""pass":"#), "\(again)")
        #expect(try await s.get("/metrics").body.contains("keyroll_agent_consecutive_pass_failures 0"))
        #expect(s.stop() == 0)
        #expect(!FileManager.default.fileExists(atPath: s.state), "the folder (mkdtemp's, the supervisor's alone) is removed at stop")
    }

    /// SIGHUP asks for a pass now; a state folder someone deleted (a /tmp cleaner) is made again,
    /// private, before the pass.
    @Test func aDeletedFolderIsMadeAgainAndSIGHUPRunsAPass() async throws {
        let s = try Running("printf '200 text/plain\\nok\\n' > metrics.http; echo 3600 > next-pass\n")
        try s.waitFor("a pass") { $0.contains("pass finished") }
        try FileManager.default.removeItem(atPath: s.state)
        kill(s.process.processIdentifier, SIGHUP)
        try s.waitFor("a second pass, after SIGHUP") { $0.components(separatedBy: "pass finished").count - 1 >= 2 }
        let mode = (try FileManager.default.attributesOfItem(atPath: s.state))[.posixPermissions] as? Int
        #expect(mode == 0o700, "made again, private")
        #expect(try await s.get("/metrics").body.contains("ok"))
        #expect(s.stop() == 0)
    }

    /// Idle and oversized connections cost the others nothing: one thread, poll, bounded heads.
    @Test func hostileConnectionsDoNotStopThePages() async throws {
        let s = try Running("printf '200 text/plain\\nok\\n' > metrics.http; echo 3600 > next-pass\n")
        try s.waitFor("a pass") { $0.contains("pass finished") }
        // 50 connections that send nothing do not hold up the others: one thread, poll
        var idle: [Int32] = []
        defer { for fd in idle { close(fd) } }
        for _ in 0..<50 { idle.append(Self.connect(s.port)) }
        #expect(try await s.get("/metrics").status == "200", "idle connections hold nothing up")
        // a head over 8 KiB gets 431, not the supervisor's memory
        let big = Self.connect(s.port)
        let head = Array(("GET /metrics HTTP/1.1\r\nX: " + String(repeating: "a", count: 9_000) + "\r\n\r\n").utf8)
        _ = head.withUnsafeBytes { send(big, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        var answer = [UInt8](repeating: 0, count: 256)
        let n = recv(big, &answer, answer.count, 0)
        close(big)
        #expect(n > 0 && String(decoding: answer[..<max(0, n)], as: UTF8.self).hasPrefix("HTTP/1.1 431"), "an oversized head is refused")
        // past 64 open, the oldest that has not sent its head is dropped for a new one: a flood of
        // idle connections cannot keep a scrape out
        for _ in 0..<200 { idle.append(Self.connect(s.port)) }
        usleep(300_000)
        #expect(try await s.get("/metrics").status == "200", "a scrape gets through 250 idle connections")
        // and the supervisor holds at most 64 of them
        let held = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(s.process.processIdentifier)/fd").count
        #expect(held < 64 + 16, "the supervisor holds \(held) descriptors")
        #expect(s.process.isRunning)
        #expect(s.stop() == 0)
    }

    /// SIGTERM while a pass runs: the pass is stopped (SIGTERM, SIGKILL if it ignores it) and the
    /// supervisor exits 0 within its grace.
    @Test func aStopEndsTheRunningPassToo() async throws {
        let s = try Running("echo $$ > pass.pid\ntrap '' TERM\nwhile :; do sleep 1; done\n")
        try s.waitFor("the pass to start", seconds: 10) { _ in FileManager.default.fileExists(atPath: s.state + "/pass.pid") }
        let pid = try #require(Int32((try String(contentsOfFile: s.state + "/pass.pid", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)))
        let started = Date()
        #expect(s.stop() == 0)
        #expect(Date().timeIntervalSince(started) < 25, "within the grace")
        #expect(kill(pid, 0) != 0, "the pass that ignored SIGTERM was killed")
    }

    static func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port)).bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        return fd
    }
}
