import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import Hummingbird
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import NIOCore
import ServiceLifecycle

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

    // .unconditional: the value may start with a dash (`--metrics-port -1`)
    @Option(name: .long, parsing: .unconditional, help: "Port for /metrics, /healthz, /readyz (0: pick one; -1: none).")
    var metricsPort = 9464

    @Option(name: .long, parsing: .upToNextOption, help: "Command to run after each switch (KEYROLL_CERTIFICATE_PATH is set for it).")
    var reloadCommand: [String] = []

    @Option(name: .long, help: "Instead: send a signal to a process after each switch, as PID:SIGNAL (e.g. 1234:HUP).")
    var reloadSignal: String?

    @Flag(name: .long, help: "Wait for another agent's lock instead of exiting.")
    var waitForLock = false

    @Option(name: .long, parsing: .unconditional, help: "Port of the managed-identity token endpoint, served for the identities whose stores enable it (keyroll token-endpoint enable); -1: none.")
    var tokenEndpointPort = TokenEndpointOptions.defaultPort

    @Option(name: .long, help: "Address of the token endpoint; only a loopback address is allowed (the secret header travels in the clear).")
    var tokenEndpointHost = "127.0.0.1"

    @Option(name: .long, help: "Most token-endpoint connections open at once; later ones are closed at once.")
    var tokenEndpointMaxConnections = 4096

    @Flag(name: .long, help: ArgumentHelp("Keep only keyroll-supervisor (a few MiB, no keys) running between passes; each pass (the rolls due, the registration checks) runs as a short-lived child.",
                                          discussion: "The token endpoint needs the resident agent: when a store enables it, the agent runs resident and says so."))
    var lean = false

    @Option(name: .long, help: "With --lean: a pass that shows no sign of life (paused, wedged) for this many seconds is stopped; the next resumes it.")
    var passDeadline = 300

    @Option(name: .long, help: "With --lean: the wait after a failed pass; it doubles with each failure in a row, up to an hour.")
    var passRetry = 60

    @Option(name: .long, help: .hidden)
    var passState: String?

    func run() async throws {
        KeyRollLogHandler.bootstrap()
        let logger = Logger(label: "keyroll.agent")
        Self.raiseDescriptorLimit()
        Self.limitThreads()
        if let passState {
            try await runPass(stateDirectory: passState, logger: logger)
            return
        }
        guard (10...86_400).contains(passDeadline) else {
            throw ValidationError("--pass-deadline takes seconds from 10 to 86400 (default 300).")
        }
        guard (1...3600).contains(passRetry) else {
            throw ValidationError("--pass-retry takes seconds from 1 to 3600 (default 60).")
        }
        // every setting is checked before the HTTP client exists: a client must be shut down, never just dropped
        let hook = try reloadHook()
        let p = try policy.policy()
        guard SecureURL.isLoopback(host: tokenEndpointHost) else {
            throw UserFacingError("--token-endpoint-host \(tokenEndpointHost) is not a loopback address. The token endpoint's secret header and the tokens it "
                                  + "serves travel unencrypted, so it binds 127.0.0.1 (or ::1, localhost) only.")
        }
        let metrics = MetricsRegistry.agent()
        // the passed sockets are checked before the HTTP client exists (a client must be shut down)
        let tokenListener = try tokenEndpointListener(logger: logger)
        if lean {
            let supervisor = Self.supervisorPath()
            if let why = leanRefusal(stores: try stores.paths(), supervisor: supervisor) {
                logger.warning("--lean: the agent runs resident, because \(why)")
            } else if let supervisor {
                becomeSupervisor(supervisor, logger: logger)
            }
        }
        let transport = try trust.transport()
        let daemon: AgentDaemon
        var rollers: [Roller] = []
        do {
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
        let endpoint = TokenEndpoint(rollers: rollers, metrics: metrics, logger: Logger(label: "keyroll.token-endpoint"))
        let served = endpoint.servedRollers
        if tokenListener == nil, !served.isEmpty {
            logger.error("the token endpoint is enabled for \(served.count) identit\(served.count == 1 ? "y" : "ies"), but no socket was passed and --token-endpoint-port is -1: applications cannot get tokens until keyroll-agent.socket runs (systemctl start keyroll-agent.socket; systemctl restart keyroll-agent)")
        }
        if let listener = tokenListener, !served.isEmpty {
            let limits = ConnectionLimits(maximumConnections: tokenEndpointMaxConnections, headTimeout: .seconds(10)) { reason in
                metrics.increment("keyroll_token_endpoint_connections_closed_total", ["reason": reason])
            }
            services.append(TokenEndpointServer(listener: listener, limits: limits, answer: { request in await Self.answer(request, endpoint: endpoint) },
                                                onListening: { address in
                                                    let url = TokenEndpointOptions.url(address: address)
                                                    for r in served {
                                                        do { try r.store.writeTokenEndpointEnvironment(endpointURL: url) } catch {
                                                            logger.error("cannot write the token endpoint's environment file", metadata: ["app_id": "\(r.identity.appId)", "error": "\(error)"])
                                                        }
                                                    }
                                                    logger.info("managed-identity token endpoint on \(url) for \(served.count) identit\(served.count == 1 ? "y" : "ies"); environment files: STORE/token-endpoint.env")
                                                }, logger: logger))
        }
        var configuration = ServiceGroupConfiguration(services: services.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A stop never waits on a slow client or on Entra beyond this: an interrupted roll resumes
        // from the journal at the next start (every step is crash-safe), so cancelling is safe.
        configuration.maximumGracefulShutdownDuration = .seconds(10)
        let group = ServiceGroup(configuration: configuration)
        // A service that fails (a port already taken by another process) stops the agent with a
        // non-zero status, so the service manager restarts it and the failure is seen: an agent
        // never stays up without the endpoint applications rely on, nor exits 0 with rolling stopped.
        var failure: (any Error)?
        do { try await group.run() } catch { failure = error }
        try await transport.shutdown()
        if let failure {
            let ports = [metricsPort >= 0 ? "metrics \(metricsHost):\(metricsPort)" : nil,
                         tokenEndpointPort >= 0 && !served.isEmpty ? "token endpoint \(tokenEndpointHost):\(tokenEndpointPort)" : nil].compactMap { $0 }
            logger.error("agent stopped: \(failure)", metadata: ["ports": "\(ports.joined(separator: ", "))"])
            throw UserFacingError("The agent stopped: \(failure). If a port is taken (\(ports.joined(separator: ", "))), another process holds it — on the token endpoint's port it may be collecting applications' secrets: find it (ss -ltnp), stop it, and rotate the secrets at once (keyroll token-endpoint rotate-secret --overlap-minutes 0). The packaged agent takes the endpoint from keyroll-agent.socket instead (a privileged port PID 1 holds), which no other user can bind.")
        }
    }

    /// The token endpoint's socket: the one the service manager passed (the packaged
    /// `keyroll-agent.socket`: PID 1 holds a privileged port), else the address of the options;
    /// nil for none (`--token-endpoint-port -1` without a passed socket).
    func tokenEndpointListener(logger: Logger) throws -> TokenEndpointListener? {
        let activation = try SocketActivation.parse(environment: ProcessInfo.processInfo.environment, pid: getpid())
        // a reload hook started later must see neither the variables nor the listening socket
        for name in SocketActivation.variables { unsetenv(name) }
        // no passed descriptor, used or not, reaches a reload hook
        for (_, d) in activation?.descriptors ?? [] { _ = fcntl(d, F_SETFD, FD_CLOEXEC) }
        if let descriptors = activation?.tokenEndpoints, !descriptors.isEmpty {
            for d in descriptors {
                _ = fcntl(d, F_SETFD, FD_CLOEXEC)
                try Self.checkPassedSocket(d)
            }
            logger.info("token endpoint: using the \(descriptors.count) socket(s) the service manager passed (socket activation); --token-endpoint-host/--token-endpoint-port are not used")
            return .inherited(descriptors: descriptors)
        }
        return tokenEndpointPort >= 0 ? .address(host: tokenEndpointHost, port: tokenEndpointPort) : nil
    }

    /// A passed descriptor must be a listening TCP socket on a loopback address: the secret header
    /// travels in the clear, so a unit edited to listen on another address is refused, by name.
    static func checkPassedSocket(_ d: Int32) throws {
        var type: Int32 = 0, listening: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(d, SOL_SOCKET, SO_TYPE, &type, &length) == 0, type == Int32(SOCK_STREAM.rawValue) else {
            throw UserFacingError("The socket passed as the token endpoint (descriptor \(d)) is not a stream socket. Check keyroll-agent.socket: ListenStream= takes a loopback address and port.")
        }
        length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(d, SOL_SOCKET, SO_ACCEPTCONN, &listening, &length) == 0, listening != 0 else {
            throw UserFacingError("The socket passed as the token endpoint (descriptor \(d)) is not listening. Check keyroll-agent.socket (Accept=no, ListenStream=).")
        }
        var storage = sockaddr_storage()
        var size = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(d, $0, &size) } }
        guard named == 0 else { throw UserFacingError("Cannot read the address of the socket passed as the token endpoint (descriptor \(d)).") }
        let loopback: Bool
        switch Int32(storage.ss_family) {
        case AF_INET:
            loopback = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt32(bigEndian: $0.pointee.sin_addr.s_addr) >> 24 == 127 } }
        case AF_INET6:
            loopback = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { p in
                withUnsafeBytes(of: p.pointee.sin6_addr) { b in b.prefix(15).allSatisfy { $0 == 0 } && b[15] == 1 } } }
        default:
            loopback = false
        }
        guard loopback else {
            throw UserFacingError("The socket passed as the token endpoint (descriptor \(d)) is not on a loopback address; applications' secrets would travel the network in the clear. Set ListenStream=127.0.0.1:PORT in keyroll-agent.socket (a drop-in needs an empty ListenStream= first).")
        }
    }

    /// One token-endpoint request answered: the managed-identity path goes to the endpoint,
    /// anything else is a 400 in the same shape.
    static func answer(_ request: Request, endpoint: TokenEndpoint) async -> Response {
        var headers: [(String, String)] = []
        for field in request.headers { headers.append((field.name.canonicalName, field.value)) }
        let query = URLComponents(string: "http://agent/?" + (request.uri.query ?? ""))?.queryItems?.map { ($0.name, $0.value ?? "") } ?? []
        let path = request.uri.path
        let (status, body) = path == TokenEndpointOptions.path
            ? await endpoint.respond(method: request.method.rawValue, query: query, headers: headers)
            : (400, TokenEndpointError.badRequest("Unknown path \(path.prefix(100)); the token endpoint is \(TokenEndpointOptions.path).").body(correlationID: UUID().uuidString.lowercased()))
        // a token answer is never cached (RFC 6749 §5.1); a 503 says when to come back
        var fields: HTTPFields = [.contentType: "application/json", .cacheControl: "no-store"]
        if status == 503 { fields[.retryAfter] = "5" }
        return Response(status: .init(code: status), headers: fields, body: .init(byteBuffer: .init(bytes: body)))
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

    /// Raises the soft limit on open descriptors to the hard one (at most 65,536), so a flood of
    /// idle connections to the token endpoint cannot leave the agent without a descriptor for Entra.
    /// Best effort: a sandbox may forbid it (the packaged unit sets `LimitNOFILE=` itself).
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        let wanted = min(limit.rlim_max, 65_536)
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }

    /// A host agent's threads and memory arenas, sized for its work rather than for the host: one
    /// event loop and one blocking thread serve Entra calls, /metrics and the token endpoint (loopback
    /// requests of a few KiB), where NIO's default is a loop per core (64 threads on a 64-core host,
    /// each with its own stack and malloc arena). glibc gives each thread that allocates an arena of
    /// its own (up to 8 per core); two bound the heap of an idle agent. Called once, first thing in
    /// `run()`, before anything uses NIO (NIO traps on a suggestion set after use). NIO's own
    /// environment variables and glibc's `MALLOC_ARENA_MAX`, when set, win.
    static func limitThreads() {
        let environment = ProcessInfo.processInfo.environment
        func unset(_ name: String) -> Bool { (environment[name] ?? "").isEmpty }
        if unset("NIO_SINGLETON_GROUP_LOOP_COUNT") { NIOSingletons.groupLoopCountSuggestion = 1 }
        if unset("NIO_SINGLETON_BLOCKING_POOL_THREAD_COUNT") { NIOSingletons.blockingPoolThreadCountSuggestion = 1 }
        if unset("MALLOC_ARENA_MAX") { MemoryRelease.limitArenas(to: 2) }
    }

    struct HealthBody: Encodable {
        struct Identity: Encodable { var appId: String; var alarm: String; var timeToCliffSeconds: Double?; var advice: String? }
        var healthy: Bool
        var identities: [Identity]
        var errors: [String: String]
    }
}
