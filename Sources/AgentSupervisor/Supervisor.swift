import CSupervisor
#if canImport(Glibc)
import Glibc
#endif

/// The lean agent's long-lived process: it sleeps, starts a pass (`keyroll agent --pass-state`, a
/// short-lived child that rolls what is due and checks each identity's sign-in) when the last pass
/// asked to be woken, and serves the pages the last pass wrote.
///
/// One thread, one `poll(2)` over a signalfd (SIGTERM, SIGINT, SIGHUP, SIGCHLD), the listening
/// socket and at most ``maximumConnections`` connections. It holds no key, no token and no journal:
/// every decision about a credential is the pass's, and every step of a pass is crash-safe, so the
/// supervisor may stop a pass at any point (its deadline, a shutdown) and the next resumes it.
///
/// Schedules are on `CLOCK_BOOTTIME`: a wall-clock step neither hastens nor postpones a pass, and
/// time suspended counts. It never gives up: a failing pass is retried with backoff (``PassSchedule``).
public final class Supervisor {
    /// Connections open at once; later ones are closed at once.
    public static let maximumConnections = 64
    /// A connection gets this long to send its head and take its answer.
    public static let connectionSeconds = 10.0
    /// After SIGTERM, a pass gets this long before SIGKILL.
    public static let stopGraceSeconds = 10.0
    /// A pass is stopped after this long even while it shows signs of life (one identity's call that
    /// never returns must not hold the others' rolls for ever): longer than the longest legitimate pass
    /// (a settle and a reload hook of up to an hour each, and Entra's calls).
    public static let maximumPassSeconds = 21_600.0
    /// How often a running pass's heartbeat is looked at.
    static let heartbeatCheckSeconds = 5.0

    private(set) var options: SupervisorOptions
    private var schedule: PassSchedule
    private var passes: [String: Int] = ["ok": 0, "failed": 0, "stopped": 0]
    private var lastSuccess = 0.0
    private var lastPassMaxRSS = 0
    private var listener: Int32 = -1
    private var signals: Int32 = -1
    private var child: Pass?
    /// SIGHUP during a pass: another pass right after it.
    private var passRequested = false
    /// After accept failed for want of descriptors, the listener rests until then.
    private var acceptPausedUntil = 0.0

    /// The running pass.
    struct Pass {
        let pid: pid_t
        let started: Double
        /// When its heartbeat last changed (the pass writes a counter every few seconds while its
        /// runtime runs: a paused or wedged process stops writing it).
        var lastProgress: Double
        var heartbeat: [UInt8]?
        var termAt: Double
        var killAt = Double.infinity
        var termSent = false
        var killSent = false
        /// Stopped for want of progress (not by a shutdown).
        var stopped = false
    }
    private var nextPass = 0.0
    private var stopping: Double?
    private var connections: [Connection] = []

    struct Connection {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var written = 0
        let deadline: Double
    }

    public init(options: SupervisorOptions) {
        self.options = options
        schedule = PassSchedule(firstRetrySeconds: Double(options.retrySeconds))
    }

    /// Runs until SIGTERM or SIGINT; the exit status.
    public func run() -> Int32 {
        ks_set_process_name("keyroll-supervisor")
        do {
            try start()
        } catch {
            log("error", "\(error)")
            removeState()
            return 1
        }
        while true {
            let now = Self.now()
            if let since = stopping {
                if child == nil { break }
                if now - since > Self.stopGraceSeconds + 5 { break }
            }
            reap(now: now)
            if child == nil, stopping == nil, now >= nextPass { spawn(now: now) }
            enforceDeadlines(now: now)
            pollOnce(now: now)
        }
        if listener >= 0 { close(listener) }
        removeState()
        log("info", "agent supervisor stopped")
        return 0
    }

    /// The folder is this supervisor's alone (`keyroll agent --lean` made it with mkdtemp): its files
    /// go, then the folder — only if it is still a private folder of this user (never through a link
    /// someone put in its place), and only regular files, by descriptor.
    private func removeState() {
        let dir = options.stateDirectory
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        var st = stat()
        guard fstat(fd, &st) == 0, st.st_uid == geteuid(), st.st_mode & 0o077 == 0, let listing = fdopendir(fd) else {
            close(fd)
            return
        }
        while let entry = readdir(listing) {
            let name = withUnsafePointer(to: entry.pointee.d_name) { $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) } }
            var file = stat()
            if name != ".", name != "..", fstatat(fd, name, &file, AT_SYMLINK_NOFOLLOW) == 0, file.st_mode & S_IFMT == S_IFREG { unlinkat(fd, name, 0) }
        }
        closedir(listing)
        rmdir(dir)
    }

    /// A new private folder (mkdtemp) beside the old one, which the passes are told to use instead.
    private func movedState() -> String? {
        let parent = String(options.stateDirectory.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/"))
        var template = Array(((parent.isEmpty ? "" : parent) + "/keyroll-agent.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { return nil }
        let path = String(cString: made)
        if let i = options.child.firstIndex(of: "--pass-state"), i + 1 < options.child.count { options.child[i + 1] = path }
        options.stateDirectory = path
        return checkState() == nil ? path : nil
    }

    /// The state folder is there, a folder, this user's and private; made again (0700) if someone
    /// deleted it (a /tmp cleaner). Nil when usable, else what is wrong.
    private func checkState() -> String? {
        let dir = options.stateDirectory
        if mkdir(dir, 0o700) != 0, errno != EEXIST { return "cannot make \(dir): \(String(cString: strerror(errno)))" }
        var st = stat()
        guard lstat(dir, &st) == 0 else { return "cannot read \(dir): \(String(cString: strerror(errno)))" }
        guard st.st_mode & S_IFMT == S_IFDIR, st.st_uid == geteuid(), st.st_mode & 0o077 == 0 else {
            return "\(dir) is not a private folder of this user (a folder, mode 0700, owned by uid \(geteuid()))"
        }
        return nil
    }

    private func start() throws(SupervisorError) {
        signal(SIGPIPE, SIG_IGN)
        // an ignored disposition survives exec (nohup, a shell's `&`): SIGCHLD ignored would have the
        // kernel reap the passes unseen, the others would never reach the signalfd
        for s in [SIGCHLD, SIGHUP, SIGINT, SIGTERM] { signal(s, SIG_DFL) }
        var mask = sigset_t()
        sigemptyset(&mask)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGCHLD] { sigaddset(&mask, s) }
        guard sigprocmask(SIG_BLOCK, &mask, nil) == 0 else { throw .system("cannot block signals", errno: errno) }
        signals = ks_signalfd(&mask)
        guard signals >= 0 else { throw .system("cannot open a signalfd", errno: errno) }
        if options.metricsPort >= 0 {
            listener = try Self.listen(host: options.metricsHost, port: options.metricsPort)
            log("info", "metrics and health on http://\(options.metricsHost):\(Self.localPort(listener)) (lean agent: a pass runs when one is due)")
        }
    }

    // MARK: passes

    private func spawn(now: Double) {
        if let problem = checkState() {
            // someone else holds the folder's name now: the passes move to a new private folder
            guard let moved = movedState() else {
                failWithoutPass(now: now, "cannot run a pass: \(problem), and no new folder could be made beside it")
                return
            }
            log("error", "\(problem); the passes use \(moved) from now on")
        }
        for name in ["next-pass", "heartbeat"] { unlink(options.stateDirectory + "/" + name) }
        let pid: pid_t
        do {
            // a group of its own: a stop reaches what the pass started too (a reload hook)
            pid = try CleanSpawn.start(options.child, ownProcessGroup: true)
        } catch {
            failWithoutPass(now: now, "cannot start a pass (\(options.child[0])): \(error)")
            return
        }
        child = Pass(pid: pid, started: now, lastProgress: now, termAt: now + Double(options.passDeadlineSeconds))
    }

    private func failWithoutPass(now: Double, _ why: String) {
        let wait = schedule.afterPass(exitedCleanly: false, answer: nil)
        passes["failed", default: 0] += 1
        nextPass = now + wait
        log("error", "\(why); next try in \(Int(wait)) s", ["consecutive_failures": String(schedule.consecutiveFailures)])
    }

    /// Collects every child that ended (a pass; in a container where this is PID 1, orphans too).
    private func reap(now: Double) {
        while true {
            var status: Int32 = 0
            var usage = rusage()
            let r = wait4(-1, &status, WNOHANG, &usage)
            if r == 0 { return }
            if r < 0 {
                if errno == EINTR { continue }
                // no child at all, yet a pass is recorded: it was reaped unseen; count it failed
                if errno == ECHILD, let c = child { ended(c, now: now, status: nil, usage: usage) }
                return
            }
            if let c = child, r == c.pid { ended(c, now: now, status: status, usage: usage) }
        }
    }

    /// A pass that ended: its answer decides the next.
    private func ended(_ c: Pass, now: Double, status: Int32?, usage: rusage) {
        child = nil
        lastPassMaxRSS = Int(usage.ru_maxrss) * 1024
        let code = status.map { ks_exit_code($0) } ?? -1, signal = status.map { ks_term_signal($0) } ?? 0
        let answer = Self.readFile(options.stateDirectory + "/next-pass", limit: 64)
        var wait = schedule.afterPass(exitedCleanly: code == 0 && !c.stopped, answer: answer)
        let took = String(Int((now - c.started) * 1000))
        if schedule.consecutiveFailures == 0 {
            passes["ok", default: 0] += 1
            lastSuccess = Self.wallNow()
            log("info", "pass finished; next in \(Int(wait)) s", ["took_ms": took, "max_rss_kib": String(lastPassMaxRSS / 1024)])
        } else {
            passes[c.stopped ? "stopped" : "failed", default: 0] += 1
            let how = c.stopped ? "was stopped: no sign of life for --pass-deadline \(options.passDeadlineSeconds) s, or past \(Int(Self.maximumPassSeconds)) s in all"
                : status == nil ? "ended unseen" : signal != 0 ? "was killed by signal \(signal)" : code != 0 ? "exited with status \(code)" : "left no answer"
            log("error", "pass \(how); the next resumes it in \(Int(wait)) s", ["took_ms": took, "consecutive_failures": String(schedule.consecutiveFailures)])
        }
        if passRequested {
            passRequested = false
            wait = 0
        }
        nextPass = now + wait
    }

    /// A pass with no sign of life for --pass-deadline, or running past ``maximumPassSeconds``, is
    /// stopped: SIGTERM, then SIGKILL (which a paused process cannot ignore) once.
    private func enforceDeadlines(now: Double) {
        guard var c = child else { return }
        if !c.termSent {
            let beat = Self.readFile(options.stateDirectory + "/heartbeat", limit: 64)
            if beat != nil, beat != c.heartbeat {
                c.heartbeat = beat
                c.lastProgress = now
            }
            if stopping == nil { c.termAt = min(c.lastProgress + Double(options.passDeadlineSeconds), c.started + Self.maximumPassSeconds) }
            if now >= c.termAt {
                if stopping == nil {
                    c.stopped = true
                    log("error", "pass shows no sign of life for --pass-deadline \(options.passDeadlineSeconds) s (or ran \(Int(Self.maximumPassSeconds)) s); stopping it")
                }
                kill(-c.pid, SIGTERM)
                c.termSent = true
                c.killAt = now + Self.stopGraceSeconds
            }
        } else if !c.killSent, now >= c.killAt {
            kill(-c.pid, SIGKILL)
            c.killSent = true
            log("error", "pass did not stop on SIGTERM; SIGKILL")
        }
        child = c
    }

    private func shutdown(now: Double) {
        guard stopping == nil else { return }
        stopping = now
        log("info", "stopping" + (child == nil ? "" : "; the running pass is stopped too (the next start resumes it)"))
        if listener >= 0 { close(listener); listener = -1 }
        for c in connections { close(c.fd) }
        connections = []
        if var c = child {
            c.termAt = now
            child = c
        }
    }

    // MARK: the loop

    private func pollOnce(now: Double) {
        var fds = [pollfd(fd: signals, events: Int16(POLLIN), revents: 0)]
        let listening = listener >= 0 && now >= acceptPausedUntil
        if listening { fds.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0)) }
        for c in connections { fds.append(pollfd(fd: c.fd, events: Int16(c.output.isEmpty ? POLLIN : POLLOUT), revents: 0)) }
        var wake = child.map { c in c.killSent ? now + 1 : c.termSent ? c.killAt : min(c.termAt, now + Self.heartbeatCheckSeconds) } ?? (stopping != nil ? now + 1 : nextPass)
        if listener >= 0, !listening { wake = min(wake, acceptPausedUntil) }
        for c in connections { wake = min(wake, c.deadline) }
        let timeout = Int32(max(0, min(3_600_000, (wake - now) * 1000 + 1)))
        let n = poll(&fds, nfds_t(fds.count), timeout)
        guard n > 0 else { expireConnections(now: Self.now()); return }
        let after = Self.now()
        if fds[0].revents != 0 { drainSignals(now: after) }
        var index = 1
        if listening, fds.count > index, fds[index].fd == listener {
            if fds[index].revents != 0 { acceptAll(now: after) }
            index += 1
        }
        var closed: Set<Int32> = []
        for f in fds[index...] where f.revents != 0 {
            if let i = connections.firstIndex(where: { $0.fd == f.fd }), !serve(&connections[i]) { closed.insert(f.fd) }
        }
        if !closed.isEmpty {
            for fd in closed { close(fd) }
            connections.removeAll { closed.contains($0.fd) }
        }
        expireConnections(now: after)
    }

    private func drainSignals(now: Double) {
        while true {
            let s = ks_signalfd_next(signals)
            if s <= 0 { return }
            switch s {
            case SIGCHLD: reap(now: now)
            case SIGTERM, SIGINT: shutdown(now: now)
            case SIGHUP:
                // a nudge: run a pass now (e.g. after `keyroll import` added an identity's bootstrap)
                if stopping == nil {
                    if child == nil { nextPass = now } else { passRequested = true }
                    log("info", child == nil ? "SIGHUP: a pass runs now" : "SIGHUP: a pass runs right after the one running")
                }
            default: break
            }
        }
    }

    // MARK: the pages

    private func acceptAll(now: Double) {
        while true {
            let fd = ks_accept(listener)
            if fd < 0 {
                // out of descriptors: the listener stays readable; rest it a second rather than spin
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM { acceptPausedUntil = now + 1 }
                return
            }
            if stopping != nil { close(fd); continue }
            if connections.count >= Self.maximumConnections {
                // full: the oldest connection still sending its head goes (a client that sends its
                // request at once, as Prometheus does, is never the oldest for long), else the new one
                guard let oldest = connections.indices.filter({ connections[$0].output.isEmpty }).min(by: { connections[$0].deadline < connections[$1].deadline }) else {
                    close(fd)
                    continue
                }
                close(connections[oldest].fd)
                connections.remove(at: oldest)
            }
            connections.append(Connection(fd: fd, deadline: now + Self.connectionSeconds))
        }
    }

    /// Reads or writes what the connection is ready for; false when it is done.
    private func serve(_ c: inout Connection) -> Bool {
        if c.output.isEmpty {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = read(c.fd, &buffer, buffer.count)
            if n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR) { return false }
            if n < 0 { return true }
            c.input += buffer[..<n]
            if let end = HealthServer.headEnd(c.input), end <= HealthServer.maximumHeadBytes {
                let request = HealthServer.parse(Array(c.input[..<end]))
                // after a failed pass, health and readiness are not the last good pass's: the defaults say so
                let failing = schedule.consecutiveFailures > 0
                c.output = HealthServer.answer(request, file: { page in
                    failing && page != .metrics ? nil : Self.readFile(self.options.stateDirectory + "/" + page.fileName, limit: HealthServer.maximumFileBytes)
                }, supervisorMetrics: metricsText())
            } else if c.input.count > HealthServer.maximumHeadBytes {
                c.output = HealthServer.tooLarge
            } else {
                return true
            }
            c.input = []
        }
        let n = c.output.withUnsafeBytes { b in send(c.fd, b.baseAddress! + c.written, b.count - c.written, Int32(MSG_NOSIGNAL)) }
        if n < 0 { return errno == EAGAIN || errno == EINTR }
        c.written += n
        return c.written < c.output.count
    }

    private func expireConnections(now: Double) {
        let expired = connections.filter { $0.deadline <= now }
        guard !expired.isEmpty else { return }
        for c in expired { close(c.fd) }
        connections.removeAll { $0.deadline <= now }
    }

    /// The metric families the supervisor itself exports (the deploy tests check the alert rules
    /// against them).
    public static var exportedFamilies: Set<String> {
        let text = Supervisor(options: SupervisorOptions(stateDirectory: "/", child: ["/"])).metricsText()
        return Set(text.split(separator: "\n").compactMap { $0.hasPrefix("# TYPE ") ? String($0.split(separator: " ")[2]) : nil })
    }

    /// The supervisor's own series, after the last pass's exposition.
    func metricsText() -> String {
        var s = "# HELP keyroll_agent_passes_total Passes of the lean agent, by outcome (ok; failed: exited non-zero, crashed or left no answer; stopped: past --pass-deadline).\n"
        s += "# TYPE keyroll_agent_passes_total counter\n"
        for k in passes.keys.sorted() { s += "keyroll_agent_passes_total{outcome=\"\(k)\"} \(passes[k] ?? 0)\n" }
        s += "# HELP keyroll_agent_consecutive_pass_failures Passes of the lean agent failed in a row (0 after one that ended well).\n"
        s += "# TYPE keyroll_agent_consecutive_pass_failures gauge\n"
        s += "keyroll_agent_consecutive_pass_failures \(schedule.consecutiveFailures)\n"
        s += "# HELP keyroll_agent_last_pass_success_timestamp_seconds When the lean agent's last pass that ended well ended (unix time; 0 before the first).\n"
        s += "# TYPE keyroll_agent_last_pass_success_timestamp_seconds gauge\n"
        s += "keyroll_agent_last_pass_success_timestamp_seconds \(Int(lastSuccess))\n"
        s += "# HELP keyroll_agent_last_pass_max_rss_bytes Peak resident memory of the lean agent's last pass (its process, while it ran).\n"
        s += "# TYPE keyroll_agent_last_pass_max_rss_bytes gauge\n"
        s += "keyroll_agent_last_pass_max_rss_bytes \(lastPassMaxRSS)\n"
        return s
    }

    // MARK: system

    static func now() -> Double {
        var t = timespec()
        if clock_gettime(CLOCK_BOOTTIME, &t) != 0 { clock_gettime(CLOCK_MONOTONIC, &t) }
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    static func wallNow() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// A whole file of at most `limit` bytes; nil when missing, unreadable or larger.
    static func readFile(_ path: String, limit: Int) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n < 0 { if errno == EINTR { continue }; return nil }
            if n == 0 { return out }
            out += buffer[..<n]
            if out.count > limit { return nil }
        }
    }

    /// A listening TCP socket on `host:port` (a numeric address or a name), non-blocking and
    /// close-on-exec.
    static func listen(host: String, port: Int) throws(SupervisorError) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw .usage("--metrics-host \(host.prefix(100)) is not an address this host has")
        }
        defer { freeaddrinfo(list) }
        var lastError: Int32 = EADDRNOTAVAIL
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let a = entry {
            entry = a.pointee.ai_next
            let fd = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = errno; continue }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            if bind(fd, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0, Glibc.listen(fd, 128) == 0 { return fd }
            lastError = errno
            close(fd)
        }
        throw .system("cannot listen on \(host.prefix(100)):\(port) for /metrics (another process may hold it: ss -ltnp)", errno: lastError)
    }

    static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &size) } }
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { p in
            family == AF_INET6
                ? p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin6_port)) }
                : p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { Int(UInt16(bigEndian: $0.pointee.sin_port)) }
        }
    }

    /// One JSON line on stderr, in the agent's log format (`ts`, `level`, `label`, `msg`, metadata).
    func log(_ level: String, _ message: String, _ metadata: [String: String] = [:]) {
        var line = "{\"ts\":\"\(Self.timestamp())\",\"level\":\"\(level)\",\"label\":\"keyroll.supervisor\",\"msg\":\(Self.quote(message))"
        for k in metadata.keys.sorted() { line += ",\(Self.quote(k)):\(Self.quote(metadata[k]!))" }
        line += "}\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    static func timestamp() -> String {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        var seconds = t.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        let ms = Int(t.tv_nsec / 1_000_000)
        let msText = ms < 10 ? "00\(ms)" : ms < 100 ? "0\(ms)" : "\(ms)"
        return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)).\(msText)Z"
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
