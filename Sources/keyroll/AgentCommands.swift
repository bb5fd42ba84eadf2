import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import Hummingbird
import KeyRoll
import Logging
import ServiceLifecycle

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Create a store from a bootstrap bundle (then the bundle file is destroyed: it holds a private key).")

    @Option(name: .long, help: "The bootstrap bundle (keyroll-bootstrap/1 JSON) from the provisioner.")
    var bundle: String

    @Option(name: .long, help: "The new store folder (created 0700; must not hold an identity yet).")
    var store: String

    @Flag(name: .long, help: "Keep the bundle file instead of overwriting and deleting it.")
    var keepBundle = false

    func run() async throws {
        // A bundle holds a private key: read it only if it is a private regular file of this user,
        // never through a link (so the shred below can never reach another file).
        let bytes: [UInt8]
        do { bytes = try SecureFiles.readSecret(bundle, limit: 256 * 1024) } catch {
            throw UserFacingError("Cannot use the bundle: \(error)")
        }
        let b = try BootstrapBundle.decode(bytes)
        let journal = try Roller.importBundle(b, into: CredentialStore(path: store), now: SystemClock().now())
        if !keepBundle { try SecureFiles.shred(bundle) }
        print("Imported \(b.displayName ?? b.appId) (appId \(b.appId)) into \(store); active: bootstrap certificate \(journal.active).")
        print("Run `keyroll roll --store \(store)` (or the agent) now: the bootstrap certificate is short-lived.")
    }
}

struct RollCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "roll",
        abstract: "Roll now: new key, addKey, verify, switch, removeKey(old). Resumes an interrupted roll.",
        discussion: "Exit status: 0 rolled, 2 abandoned (the old key stays active), 1 error (progress is kept in the journal).")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions
    @OptionGroup var trust: TrustOptions

    @Flag(name: .long, help: "Only roll when due (otherwise: now).")
    var ifDue = false

    @Flag(name: .long, help: "Print the outcome as JSON.")
    var json = false

    @Option(name: .long, help: "Give up after this many seconds (the journal keeps the progress; the next run resumes).")
    var timeout: Double = 1800

    func run() async throws {
        KeyRollLogHandler.bootstrap()
        let policy = try policy.policy()
        guard timeout > 0 else { throw ValidationError("--timeout must be more than 0 seconds") }
        let transport = try trust.transport()
        let abandoned = try await transport.closing { try await Deadline.run(seconds: timeout, what: "keyroll roll") {
            var abandoned = false
            for path in try stores.paths() {
                let roller = try Roller(store: CredentialStore(path: path, hook: CrashHook.sideEffects()), policy: policy, transport: transport,
                                        afterTransition: CrashHook.fromEnvironment())
                try await roller.reconcile()
                let outcome = ifDue ? try await roller.rollIfDue() : try await roller.roll(reason: "requested")
                switch outcome {
                case .rolled(let t): print(json ? #"{"store":"\#(path)","outcome":"rolled","active":"\#(t)"}"# : "\(path): rolled; active certificate \(t)")
                case .abandoned(let why): abandoned = true; print(json ? #"{"store":"\#(path)","outcome":"abandoned"}"# : "\(path): roll abandoned: \(why)")
                case .notDue(let next): print(json ? #"{"store":"\#(path)","outcome":"notDue","next":"\#(shortDate(next))"}"# : "\(path): not due until \(shortDate(next)) UTC")
                }
            }
            return abandoned
        } }
        if abandoned { throw ExitCode(2) }
    }
}

/// Test hooks, read from the environment (never set in production):
/// - `KEYROLL_TEST_CRASH_AFTER=<phase>` SIGKILLs the process right after that transition is durable;
/// - `KEYROLL_TEST_CRASH_AT=<side effect>#<n>` SIGKILLs it just before the n-th time it reaches that
///   side effect (`rename journal.json#3`, `answered addKey#1`; see ``SideEffect``);
/// - `KEYROLL_TEST_SIDE_EFFECT_LOG=<file>` appends the name of every side effect reached to a file,
///   so a test can enumerate them.
enum CrashHook {
    static func fromEnvironment() -> (@Sendable (RollPhase?) -> Void)? {
        guard let target = ProcessInfo.processInfo.environment["KEYROLL_TEST_CRASH_AFTER"], !target.isEmpty else { return nil }
        return { phase in if phase?.rawValue == target || (phase == nil && target == "finished") { kill(getpid(), SIGKILL) } }
    }

    static func sideEffects() -> SideEffectHook {
        let env = ProcessInfo.processInfo.environment
        let target = env["KEYROLL_TEST_CRASH_AT"].flatMap { $0.isEmpty ? nil : $0 }
        let logPath = env["KEYROLL_TEST_SIDE_EFFECT_LOG"].flatMap { $0.isEmpty ? nil : $0 }
        guard target != nil || logPath != nil else { return .none }
        let counts = Counts()
        let logFD: Int32 = logPath.map { open($0, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600) } ?? -1
        return SideEffectHook { effect in
            let n = counts.next(effect.description)
            if logFD >= 0 {
                let line = Array("\(effect)#\(n)\n".utf8)
                _ = line.withUnsafeBytes { write(logFD, $0.baseAddress, line.count) }
            }
            if let target, target == "\(effect)#\(n)" { kill(getpid(), SIGKILL) }
        }
    }

    final class Counts: @unchecked Sendable {
        private let lock = NSLock()
        private var seen: [String: Int] = [:]
        func next(_ name: String) -> Int { lock.withLock { seen[name, default: 0] += 1; return seen[name]! } }
    }
}

struct StatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show each identity's active certificate, next roll, time to the cliff and alarm (reads the store only).",
        discussion: "Exit status: 0 all ok, 1 warning, 2 critical, 3 past the cliff.")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions

    @Flag(name: .long, help: "JSON output.")
    var json = false

    func run() async throws {
        let p = try policy.policy()
        let now = Date()
        let statuses = try stores.paths().map { try StoreReader.status(path: $0, policy: p, now: now) }
        if json {
            print(jsonString(statuses))
        } else {
            print(table(["APP", "APP ID", "ACTIVE", "ORIGIN", "NOT AFTER", "NEXT ROLL", "TO CLIFF", "ALARM", "ROLL"], statuses.map { s in
                [s.displayName ?? "-", String(s.appId.prefix(8)), String(s.activeThumbprint.prefix(12)), s.activeOrigin.rawValue, shortDate(s.activeNotAfter),
                 shortDate(s.nextRoll), formatDuration(s.timeToCliff), s.alarm.rawValue, s.rollPhase?.rawValue ?? "idle"]
            }))
            for s in statuses {
                let name = s.displayName ?? s.appId
                if let r = s.interruptedRoll {
                    print("\(name): roll interrupted at '\(r.phase.rawValue)' since \(shortDate(r.phaseSince ?? r.startedAt)) UTC (started \(shortDate(r.startedAt)) UTC).")
                    print("  next: \(r.next) — the agent resumes it by itself (or: keyroll roll --store \(s.store)).")
                    if let actBy = r.actBy { print("  act by \(shortDate(actBy)) UTC if it is still not finished: check the agent's log, then keyroll rebootstrap.") }
                }
                if let a = s.advice { print("\(name): \(a)") }
            }
        }
        let worst = statuses.map(\.alarm).max() ?? .ok
        if worst != .ok { throw ExitCode(worst == .warning ? 1 : worst == .critical ? 2 : 3) }
    }
}

struct PlanCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Say what the agent would do next and when. Changes nothing.")

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions

    func run() async throws {
        let p = try policy.policy()
        let now = Date()
        for path in try stores.paths() {
            let s = try StoreReader.status(path: path, policy: p, now: now)
            let j = try CredentialStore(path: path).journal()
            print("\(s.displayName ?? s.appId) (\(path)):")
            if let r = j.roll {
                print("  resume the roll in progress at '\(r.phase.rawValue)' (started \(shortDate(r.startedAt)) UTC, reason: \(r.reason))")
            } else if s.nextRoll <= now {
                print("  roll now (\(s.activeOrigin == .bootstrap ? "bootstrap certificate" : "due since \(shortDate(s.nextRoll)) UTC"))")
            } else {
                print("  next roll at \(shortDate(s.nextRoll)) UTC (in \(formatDuration(s.nextRoll.timeIntervalSince(now))))")
            }
            print("  steps: generate RSA-\(p.keySize.rawValue) key + \(Int(p.effectiveValidity / 86_400))-day certificate → store → addKey (proof by the active key)")
            print("         → wait until Graph lists it → \(p.verifySuccesses) consecutive tokens with it (≤ \(Int(p.verifyTimeout)) s) → publish current.pem")
            print("         → removeKey(old) with a proof by the new key → destroy the old private key")
            print("  cliff: \(s.cliff.map { shortDate($0) + " UTC" } ?? "none") (\(formatDuration(s.timeToCliff)) away; alarm \(s.alarm.rawValue))")
        }
    }
}

struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the rolling agent for one or many identities, with /metrics, /healthz and /readyz.",
        discussion: """
            Each identity sleeps until its next roll is due (2/3 of the certificate lifetime, with jitter; a bootstrap \
            certificate at once), rolls, and keeps retrying with backoff on failure. SIGTERM/SIGINT stop it gracefully; \
            an interrupted roll resumes from the journal at the next start.
            """)

    @OptionGroup var stores: StoreOptions
    @OptionGroup var policy: PolicyOptions
    @OptionGroup var trust: TrustOptions

    @Option(name: .long, help: "Address for /metrics, /healthz, /readyz.")
    var metricsHost = "127.0.0.1"

    @Option(name: .long, help: "Port for /metrics, /healthz, /readyz (0: pick one; -1: none).")
    var metricsPort = 9464

    @Option(name: .long, parsing: .upToNextOption, help: "Command to run after each switch (KEYROLL_CERTIFICATE_PATH is set for it).")
    var reloadCommand: [String] = []

    @Option(name: .long, help: "Instead: send a signal to a process after each switch, as PID:SIGNAL (e.g. 1234:HUP).")
    var reloadSignal: String?

    @Flag(name: .long, help: "Wait for another agent's lock instead of exiting.")
    var waitForLock = false

    func run() async throws {
        KeyRollLogHandler.bootstrap()
        let logger = Logger(label: "keyroll.agent")
        let transport = try trust.transport()
        let metrics = MetricsRegistry.agent()
        let hook = try reloadHook()
        let p = try policy.policy()
        let daemon: AgentDaemon
        do {
            var rollers: [Roller] = []
            for path in try stores.paths() {
                let open = {
                    try Roller(store: CredentialStore(path: path, hook: CrashHook.sideEffects()), policy: p, transport: transport, logger: logger,
                               metrics: metrics, reloadHook: hook, afterTransition: CrashHook.fromEnvironment())
                }
                rollers.append(waitForLock ? try await Roller.waitingForLock(open) : try open())
            }
            daemon = AgentDaemon(rollers: rollers, logger: logger)
        } catch {
            try? await transport.shutdown()
            throw error
        }
        var services: [any Service] = [DaemonService(daemon: daemon)]
        if metricsPort >= 0 {
            let router = Router()
            router.get("/metrics") { _, _ in metrics.exposition() }
            router.get("/readyz") { _, _ -> Response in
                Response(status: daemon.isReady ? .ok : .serviceUnavailable, body: .init(byteBuffer: .init(string: daemon.isReady ? "ready\n" : "reconciling\n")))
            }
            router.get("/healthz") { _, _ -> Response in
                let h = daemon.health()
                let body = jsonString(HealthBody(healthy: h.healthy, identities: h.identities.map { .init(appId: $0.appId, alarm: $0.alarm.rawValue, timeToCliffSeconds: $0.timeToCliff, advice: $0.advice) }, errors: h.errors))
                return Response(status: h.healthy ? .ok : .serviceUnavailable, headers: [.contentType: "application/json"], body: .init(byteBuffer: .init(string: body)))
            }
            services.append(Application(router: router, configuration: .init(address: .hostname(metricsHost, port: metricsPort), serverName: "keyroll-agent"),
                                        onServerRunning: { ch in logger.info("metrics and health on http://\(metricsHost):\(ch.localAddress?.port ?? 0)") }, logger: logger))
        }
        let group = ServiceGroup(configuration: .init(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do { try await group.run() } catch { logger.error("agent stopped: \(error)") }
        try await transport.shutdown()
    }

    func reloadHook() throws -> ReloadHook? {
        if !reloadCommand.isEmpty { return .command(reloadCommand) }
        guard let s = reloadSignal else { return nil }
        let parts = s.split(separator: ":")
        let names: [String: Int32] = ["HUP": SIGHUP, "USR1": SIGUSR1, "USR2": SIGUSR2, "TERM": SIGTERM]
        guard parts.count == 2, let pid = Int32(parts[0]), let sig = Int32(parts[1]) ?? names[parts[1].uppercased().replacingOccurrences(of: "SIG", with: "")] else {
            throw ValidationError("--reload-signal takes PID:SIGNAL, e.g. 1234:HUP")
        }
        return .signal(pid: pid, signal: sig)
    }

    struct HealthBody: Encodable {
        struct Identity: Encodable { var appId: String; var alarm: String; var timeToCliffSeconds: Double?; var advice: String? }
        var healthy: Bool
        var identities: [Identity]
        var errors: [String: String]
    }
}

/// The daemon as a ServiceLifecycle service: cancelled on graceful shutdown.
struct DaemonService: Service {
    let daemon: AgentDaemon
    func run() async throws {
        try await cancelWhenGracefulShutdown { await daemon.run() }
    }
}
