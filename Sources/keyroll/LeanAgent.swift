import EntraClient
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging

/// `keyroll agent --lean`: the agent's long-lived process becomes `keyroll-supervisor` (exec), which
/// holds no key and sleeps in a few MiB; each pass — the rolls that are due and the registration
/// checks — runs as a short-lived `keyroll agent --pass-state DIR` child with the same options.
///
/// The child is the resident agent's start and one turn per identity: it takes the stores' locks,
/// reconciles each journal with Entra, rolls what is due, checks sign-ins, writes its answers
/// (`metrics.http`, `healthz.http`, `readyz.http`, `carry.json`, then `next-pass`) and exits. Every
/// step is the same crash-safe code the resident agent runs, so a pass killed anywhere is resumed
/// by the next.
extension AgentCommand {
    /// Why this agent cannot be lean (then it runs resident, and says so), or nil.
    func leanRefusal(stores: [String], supervisor: String?) -> String? {
        guard supervisor != nil else {
            return "no keyroll-supervisor that only root or this user can change (no symbolic link on its path, no folder above it that others can write unless sticky) is installed beside keyroll, in ../libexec/keyroll/ or in /usr/libexec/keyroll/"
        }
        let served = stores.filter { (try? CredentialStore(path: $0).tokenEndpointSettings()) != nil }
        if !served.isEmpty {
            return "the token endpoint is enabled for \(served.count) identit\(served.count == 1 ? "y" : "ies") (\(served.prefix(3).joined(separator: ", "))), and serving tokens needs the keys in a long-lived process"
        }
        return nil
    }

    /// The supervisor's executable: beside this one, in `../libexec/keyroll/` from this one's folder (the
    /// tarball), or `/usr/libexec/keyroll/` (the `.deb`); only one that no other user can have put or
    /// changed there, reached without a symbolic link (``SecureFiles/openTrustedExecutable(_:)``).
    static func supervisorPath() -> String? {
        guard let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else { return nil }
        let dir = (me as NSString).deletingLastPathComponent
        return [dir + "/keyroll-supervisor", (dir as NSString).deletingLastPathComponent + "/libexec/keyroll/keyroll-supervisor", "/usr/libexec/keyroll/keyroll-supervisor"]
            .first { SecureFiles.isTrustedExecutable($0) }
    }

    /// A new private (0700) folder for the passes' answers: under `$RUNTIME_DIRECTORY` (systemd's
    /// `RuntimeDirectory=`), else `$XDG_RUNTIME_DIR`, else `$TMPDIR` or `/tmp`. The supervisor
    /// removes it when it stops.
    static func makeStateDirectory() throws -> String {
        let environment = ProcessInfo.processInfo.environment
        let base = [environment["RUNTIME_DIRECTORY"].flatMap { $0.split(separator: ":").first.map(String.init) },
                    environment["XDG_RUNTIME_DIR"], environment["TMPDIR"], "/tmp"]
            .compactMap { $0 }.first { !$0.isEmpty && $0.hasPrefix("/") } ?? "/tmp"
        var template = Array((base + "/keyroll-agent.XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else {
            throw UserFacingError("Cannot make a folder for the lean agent's passes in \(base): \(String(cString: strerror(errno))). Set RUNTIME_DIRECTORY or TMPDIR to a writable folder, or run without --lean.")
        }
        let path = String(cString: made)
        try SecureFiles.ensurePrivateDirectory(path)
        return path
    }

    /// Becomes the supervisor. Returns only if that failed (then the agent runs resident).
    /// Nothing here stops the agent: whatever fails, it runs resident instead, and says why.
    func becomeSupervisor(_ supervisor: String, logger: Logger) {
        let state: String
        do {
            state = try Self.makeStateDirectory()
        } catch {
            logger.error("--lean: \(error); the agent runs resident instead")
            return
        }
        guard let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
            rmdir(state)
            logger.error("--lean: cannot read /proc/self/exe to start the passes; the agent runs resident instead")
            return
        }
        // `agent --pass-state DIR` first: after the user's options a `--` would make it an argument
        var child = [me, "agent", "--pass-state", state]
        for a in CommandLine.arguments.dropFirst(2) where a != "--lean" { child.append(a) }
        let arguments = [supervisor, "--state", state, "--metrics-host", metricsHost, "--metrics-port", String(metricsPort),
                         "--pass-deadline", String(passDeadline), "--retry-seconds", String(passRetry), "--"] + child
        logger.info("lean agent: keyroll-supervisor keeps the process; each pass runs as a short-lived child", metadata: ["state": "\(state)"])
        // the file that is executed is the one that was judged: opened, checked through its descriptor,
        // and executed by it, so a path changed after the check cannot swap in another program
        guard let program = SecureFiles.openTrustedExecutable(supervisor) else {
            rmdir(state)
            logger.error("--lean: \(supervisor) is no longer a program only root or this user can change; the agent runs resident instead")
            return
        }
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        fexecve(program, &argv, environ)
        let reason = String(cString: strerror(errno))
        close(program)
        for p in argv { free(p) }
        rmdir(state)
        logger.error("cannot start keyroll-supervisor (\(reason)); the agent runs resident instead", metadata: ["supervisor": "\(supervisor)"])
    }

    /// One pass of the lean agent, as the supervisor's child.
    ///
    /// A store that cannot be opened (its lock held by a `keyroll roll` or another agent, its modes
    /// wrong) is that identity's failure, named in `/healthz` and retried after `--pass-retry`; the others
    /// roll. Only a pass that can open no store at all fails as a whole.
    func runPass(stateDirectory dir: String, logger: Logger) async throws {
        let hook = try reloadHook()
        let p = try policy.policy()
        let heartbeat = Self.heartbeat(dir)
        defer { heartbeat.cancel() }
        let metrics = MetricsRegistry.agent()
        let transport = try trust.transport()
        do {
            var rollers: [Roller] = []
            var unopened: [String: String] = [:]
            for path in try stores.paths() {
                do {
                    let open = {
                        try Roller(store: CredentialStore(path: path, hook: CrashHook.sideEffects()), policy: p, transport: transport, logger: logger,
                                   metrics: metrics, reloadHook: hook, afterTransition: CrashHook.fromEnvironment())
                    }
                    // never --wait-for-lock here: a held lock is its identity's failure, not every identity's wait
                    rollers.append(try open())
                } catch {
                    unopened[path] = "\(error)"
                    logger.error("cannot open the store; the other identities roll, this one is tried again after --pass-retry", metadata: ["store": "\(path)", "error": "\(error)"])
                }
            }
            guard !rollers.isEmpty else {
                throw UserFacingError("No store could be opened: " + unopened.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; "))
            }
            let daemon = AgentDaemon(rollers: rollers, logger: logger)
            let carried = (try? SecureFiles.read(dir + "/carry.json")).flatMap { try? JSONDecoder().decode(PassCarry.self, from: Data($0)) } ?? PassCarry()
            var (carry, wake) = await daemon.runPass(carry: carried, keepingUnseen: !unopened.isEmpty)
            // a store not opened is tried again after --pass-retry, doubling while it stays closed
            for path in unopened.keys { carry.unopened[path] = (carried.unopened[path] ?? 0) + 1 }
            if let worst = carry.unopened.values.max() { wake = min(wake, Backoff(base: Double(passRetry), cap: 3600).delay(attempt: worst)) }
            let h = daemon.health()
            let healthy = h.healthy && unopened.isEmpty
            let health = jsonString(HealthBody(healthy: healthy, identities: h.identities.map {
                .init(appId: $0.appId, alarm: $0.alarm.rawValue, timeToCliffSeconds: $0.timeToCliff, advice: $0.advice)
            }, errors: h.errors.merging(unopened) { a, _ in a }))
            try SecureFiles.writeAtomically(String(decoding: try JSONEncoder().encode(carry), as: UTF8.self), to: dir + "/carry.json")
            try SecureFiles.writeAtomically(metricsPage(metrics.exposition()), to: dir + "/metrics.http")
            try SecureFiles.writeAtomically("\(healthy ? 200 : 503) application/json\n" + health, to: dir + "/healthz.http")
            try SecureFiles.writeAtomically(daemon.isReady && unopened.isEmpty ? "200 text/plain; charset=utf-8\nready\n" : "503 text/plain; charset=utf-8\nreconciling\n", to: dir + "/readyz.http")
            // last: the supervisor counts a pass as ended well only with this answer
            try SecureFiles.writeAtomically(String(format: "%.3f\n", wake), to: dir + "/next-pass")
        } catch {
            try? await transport.shutdown()
            throw error
        }
        try await transport.shutdown()
    }

    /// The pass's sign of life for the supervisor: a counter in `DIR/heartbeat`, rewritten every 2 s
    /// while this process's runtime runs. A paused or wedged pass stops writing it, and the supervisor
    /// stops the pass after `--pass-deadline` without one; a long settle or reload hook does not.
    static func heartbeat(_ dir: String) -> Task<Void, Never> {
        Task.detached {
            let fd = open(dir + "/heartbeat", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { return }
            defer { close(fd) }
            var beat = 0
            while !Task.isCancelled {
                beat += 1
                let text = Array("\(beat)\n".utf8)
                _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                try? await Task.sleep(for: .seconds(2))
            }
        }
    }

    private func metricsPage(_ exposition: String) -> String { "200 text/plain; version=0.0.4; charset=utf-8\n" + exposition }
}
