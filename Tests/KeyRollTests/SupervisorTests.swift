import AgentSupervisor
import Testing

/// The lean agent's supervisor, its pure parts: when the next pass runs, what its pages answer, and
/// the command line `keyroll agent --lean` hands it.
@Suite struct SupervisorTests {
    @Test func aPassThatEndedWellNamesTheNextWake() {
        var s = PassSchedule()
        #expect(s.afterPass(exitedCleanly: true, answer: Array("42.5\n".utf8)) == 42.5)
        #expect(s.consecutiveFailures == 0)
        // clamped to 1 s … 1 h
        #expect(s.afterPass(exitedCleanly: true, answer: Array("0".utf8)) == 1)
        #expect(s.afterPass(exitedCleanly: true, answer: Array("86400".utf8)) == 3600)
    }

    @Test func aFailedPassIsRetriedWithBackoffForever() {
        var s = PassSchedule()
        // crashed, stopped, or no answer (a pass that died before its last write): all failures
        #expect(s.afterPass(exitedCleanly: false, answer: Array("5".utf8)) == 60)
        #expect(s.afterPass(exitedCleanly: true, answer: nil) == 120)
        #expect(s.afterPass(exitedCleanly: true, answer: Array("nan".utf8)) == 240)
        #expect(s.afterPass(exitedCleanly: true, answer: Array("soon".utf8)) == 480)
        for _ in 0..<100 { _ = s.afterPass(exitedCleanly: false, answer: nil) }
        #expect(s.afterPass(exitedCleanly: false, answer: nil) == 3600, "capped at an hour, never given up")
        #expect(s.afterPass(exitedCleanly: true, answer: Array("7".utf8)) == 7)
        #expect(s.consecutiveFailures == 0)
        var quick = PassSchedule(firstRetrySeconds: 1)
        #expect(quick.afterPass(exitedCleanly: false, answer: nil) == 1)
        #expect(quick.afterPass(exitedCleanly: false, answer: nil) == 2)
    }

    @Test func requestsAreRoutedByTheirRequestLine() {
        func parse(_ s: String) -> HealthServer.Request { HealthServer.parse(Array(s.utf8)) }
        #expect(parse("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == .page(.metrics, headOnly: false))
        #expect(parse("HEAD /healthz HTTP/1.0\r\n\r\n") == .page(.healthz, headOnly: true))
        #expect(parse("GET /readyz?x=1 HTTP/1.1\r\n\r\n") == .page(.readyz, headOnly: false))
        #expect(parse("POST /metrics HTTP/1.1\r\n\r\n") == .methodNotAllowed)
        #expect(parse("GET /metrics/../etc HTTP/1.1\r\n\r\n") == .notFound)
        #expect(parse("GET /carry.json HTTP/1.1\r\n\r\n") == .notFound, "only the three pages: never another file of the folder")
        #expect(parse("GET metrics HTTP/1.1\r\n\r\n") == .badRequest)
        #expect(parse("GET /metrics HTTP/2\r\n\r\n") == .badRequest)
        #expect(parse("\r\n\r\n") == .badRequest)
        #expect(parse("GET  /metrics HTTP/1.1\r\n\r\n") == .badRequest)
        #expect(HealthServer.headEnd(Array("GET / HTTP/1.1\r\n".utf8)) == nil)
        #expect(HealthServer.headEnd(Array("GET / HTTP/1.1\r\n\r\nbody".utf8)) == 18)
    }

    @Test func pagesAnswerWhatTheLastPassWrote() {
        let files: [HealthServer.Page: String] = [
            .metrics: HealthServer.file(status: 200, contentType: "text/plain; version=0.0.4", body: "keyroll_x 1\n"),
            .healthz: HealthServer.file(status: 503, contentType: "application/json", body: #"{"healthy":false}"#),
        ]
        func answer(_ r: HealthServer.Request) -> String {
            String(decoding: HealthServer.answer(r, file: { files[$0].map { Array($0.utf8) } }, supervisorMetrics: "keyroll_agent_y 2\n"), as: UTF8.self)
        }
        let metrics = answer(.page(.metrics, headOnly: false))
        #expect(metrics.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(metrics.contains("Content-Type: text/plain; version=0.0.4\r\n"))
        #expect(metrics.hasSuffix("\r\n\r\nkeyroll_x 1\nkeyroll_agent_y 2\n"))
        #expect(metrics.contains("Content-Length: 30\r\n"))
        #expect(answer(.page(.healthz, headOnly: false)).hasPrefix("HTTP/1.1 503 "))
        // before the first pass (no file): not ready, not healthy
        #expect(answer(.page(.readyz, headOnly: false)).hasPrefix("HTTP/1.1 503 "))
        let head = answer(.page(.metrics, headOnly: true))
        #expect(head.hasSuffix("\r\n\r\n") && head.contains("Content-Length: 30\r\n"), "HEAD: the length, no body")
        #expect(answer(.methodNotAllowed).contains("Allow: GET, HEAD\r\n"))
        // a damaged file is not served as it is
        #expect(HealthServer.parseFile(Array("ok text/plain\nx".utf8)) == nil)
        #expect(HealthServer.parseFile(Array("200 text/plain\r\nx".utf8)) == nil, "no header injection")
        #expect(HealthServer.parseFile(Array("200\n".utf8)) == nil)
    }

    @Test func theCommandLineIsCheckedWhole() throws {
        let o = try SupervisorOptions.parse(["--state", "/run/k", "--metrics-port", "0", "--pass-deadline", "60", "--retry-seconds", "5", "--", "/usr/bin/keyroll", "agent", "--pass-state", "/run/k"])
        #expect(o == SupervisorOptions(stateDirectory: "/run/k", metricsPort: 0, passDeadlineSeconds: 60, retrySeconds: 5, child: ["/usr/bin/keyroll", "agent", "--pass-state", "/run/k"]))
        for bad in [[], ["--state", "/run/k"], ["--state", "run/k", "--", "/bin/true"], ["--state", "/run/k", "--", "keyroll"],
                    ["--metrics-port", "70000", "--state", "/r", "--", "/bin/true"], ["--pass-deadline", "1", "--state", "/r", "--", "/bin/true"],
                    ["--what", "--state", "/r", "--", "/bin/true"], ["--state"]] {
            #expect(throws: SupervisorError.self, "\(bad)") { try SupervisorOptions.parse(bad) }
        }
        let e = SupervisorError.usage("x")
        #expect(e.description.contains("keyroll agent --lean"), "says what to run instead")
    }
}

import Foundation
import KeyRollPrimitives

/// `keyroll agent --lean` runs only a supervisor no other user could have put or changed.
@Suite struct TrustedExecutableTests {
    /// A new folder `top` (0755) holding `relative` as a 0755 shell script, each folder on the way
    /// 0755; the caller removes `top`.
    static func program(_ relative: String = "keyroll-supervisor", script: String = "#!/bin/sh\n") throws -> (top: String, program: String) {
        let top = NSTemporaryDirectory() + "/keyroll-trusted-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        var folder = top
        for name in [""] + relative.split(separator: "/").dropLast().map(String.init) {
            if !name.isEmpty { folder += "/" + name }
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: false)
            chmod(folder, 0o755)
        }
        let program = top + "/" + relative
        try script.write(toFile: program, atomically: false, encoding: .utf8)
        chmod(program, 0o755)
        return (top, program)
    }

    @Test func onlyAProgramNoOtherUserCanChangeIsTrusted() throws {
        let (dir, program) = try Self.program()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(SecureFiles.isTrustedExecutable(program))
        chmod(program, 0o775)
        #expect(!SecureFiles.isTrustedExecutable(program), "group-writable")
        chmod(program, 0o644)
        #expect(!SecureFiles.isTrustedExecutable(program), "not executable")
        chmod(program, 0o755)
        chmod(dir, 0o1777)
        #expect(!SecureFiles.isTrustedExecutable(program), "in a folder anyone can write (like /tmp)")
        chmod(dir, 0o755)
        if geteuid() == 0 {
            chown(program, 65534, 65534)
            #expect(!SecureFiles.isTrustedExecutable(program), "owned by another user")
            chown(program, 0, 0)
        }
        let link = dir + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: program)
        #expect(!SecureFiles.isTrustedExecutable(link), "a symbolic link is never followed, even to a trusted program")
        #expect(!SecureFiles.isTrustedExecutable(dir + "/missing"))
        #expect(!SecureFiles.isTrustedExecutable(dir + "/../" + (dir as NSString).lastPathComponent + "/keyroll-supervisor"), "no .. in the path")
        #expect(!SecureFiles.isTrustedExecutable("keyroll-supervisor"), "only an absolute path")
        chmod(program, 0o711)
        #expect(SecureFiles.isTrustedExecutable(program), "executable but not readable: judged and run without reading it")
    }

    /// Another user plants the path the agent looks in (`../libexec/keyroll/keyroll-supervisor` of a
    /// `keyroll` unpacked under /tmp) before the agent looks: a link there to a program of root's, or a
    /// FIFO that would block an open for reading forever. Neither is trusted, and neither blocks.
    @Test func aPlantedLinkOrFIFOIsRefusedWithoutBlocking() throws {
        let (top, _) = try Self.program("bin/keyroll")
        defer { try? FileManager.default.removeItem(atPath: top) }
        chmod(top, 0o1777)  // like /tmp: anyone may create an entry
        try FileManager.default.createDirectory(atPath: top + "/libexec/keyroll", withIntermediateDirectories: true)
        for folder in [top + "/libexec", top + "/libexec/keyroll"] { chmod(folder, 0o755) }
        let planted = top + "/libexec/keyroll/keyroll-supervisor"
        try FileManager.default.createSymbolicLink(atPath: planted, withDestinationPath: "/usr/bin/true")
        if geteuid() == 0 { lchown(planted, 65534, 65534) }
        #expect(SecureFiles.isTrustedExecutable("/usr/bin/true"), "the target itself is trusted")
        #expect(!SecureFiles.isTrustedExecutable(planted), "a planted link to a trusted program")
        // a link as a folder of the path
        try FileManager.default.removeItem(atPath: planted)
        try FileManager.default.createSymbolicLink(atPath: top + "/libexec-link", withDestinationPath: top + "/libexec")
        try "#!/bin/sh\n".write(toFile: planted, atomically: false, encoding: .utf8)
        chmod(planted, 0o755)
        #expect(SecureFiles.isTrustedExecutable(planted))
        #expect(!SecureFiles.isTrustedExecutable(top + "/libexec-link/keyroll/keyroll-supervisor"), "a link among the folders")
        // a FIFO: an open for reading would wait for a writer forever
        try FileManager.default.removeItem(atPath: planted)
        #expect(mkfifo(planted, 0o755) == 0)
        // judged on another thread, so that a judge that blocks fails the test instead of hanging it
        let judged = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var trusted = true
        DispatchQueue.global().async { trusted = SecureFiles.isTrustedExecutable(planted); judged.signal() }
        #expect(judged.wait(timeout: .now() + 10) == .success, "judging a FIFO blocked")
        #expect(!trusted, "a FIFO is not a program")
    }

    /// A folder above the program that another user can write (and is not sticky) lets that user
    /// rename the program's folder away and put their own in its place.
    @Test func everyFolderAboveTheProgramIsJudged() throws {
        let (top, program) = try Self.program("shared/libexec/keyroll-supervisor")
        defer { try? FileManager.default.removeItem(atPath: top) }
        #expect(SecureFiles.isTrustedExecutable(program))
        chmod(top + "/shared", 0o777)
        #expect(!SecureFiles.isTrustedExecutable(program), "a folder above that anyone can write")
        chmod(top + "/shared", 0o1777)
        #expect(SecureFiles.isTrustedExecutable(program), "a sticky folder above (like /tmp): no one can replace our entry")
        chmod(top + "/shared", 0o775)
        #expect(!SecureFiles.isTrustedExecutable(program), "a folder above that the group can write")
        chmod(top + "/shared", 0o755)
        if geteuid() == 0 {
            chown(top + "/shared", 65534, 65534)
            #expect(!SecureFiles.isTrustedExecutable(program), "a folder above that another user owns")
            chown(top + "/shared", 0, 0)
        }
        #expect(SecureFiles.isTrustedExecutable(program))
    }

    /// The descriptor returned is the file that was judged: replacing the path afterwards does not
    /// change what executing the descriptor runs.
    @Test func theOpenedProgramIsTheOneJudged() throws {
        let (dir, program) = try Self.program(script: "#!/bin/sh\necho judged\n")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let fd = try #require(SecureFiles.openTrustedExecutable(program))
        defer { close(fd) }
        var judged = stat()
        #expect(fstat(fd, &judged) == 0)
        // swapped after the check: a new file (another inode) at the same path
        try FileManager.default.removeItem(atPath: program)
        try "#!/bin/sh\necho swapped\n".write(toFile: program, atomically: false, encoding: .utf8)
        var now = stat(), still = stat()
        #expect(stat(program, &now) == 0 && fstat(fd, &still) == 0)
        #expect(still.st_ino == judged.st_ino && now.st_ino != judged.st_ino)
        #expect(fcntl(fd, F_GETFD) & FD_CLOEXEC != 0, "never leaked into the program it runs")
        chmod(dir, 0o777)
        #expect(SecureFiles.openTrustedExecutable(program) == nil, "its own folder writable by anyone")
    }
}
