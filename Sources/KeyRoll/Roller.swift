import EntraClient
import EntraCrypto
import Foundation
import Logging

/// Something that happened to an identity: for logs, the demo's timeline and tests.
public struct AgentEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case imported, generated, stored, added, visible, notYetActive, verified, switched, retired, finished
        case abandoning, abandoned, retry, alarm, reconciled, reloadHookFailed
    }
    public var time: Date
    public var appId: String
    public var kind: Kind
    public var detail: String
}

/// What the application is told after a switch: run a command or signal a process.
public enum ReloadHook: Sendable, Equatable, Codable {
    case command([String])
    case signal(pid: Int32, signal: Int32)
}

public enum RollOutcome: Sendable, Equatable {
    case notDue(next: Date)
    case rolled(newThumbprint: String)
    case abandoned(reason: String)
}

/// Rolls one identity's certificate through the journal's state machine: generate → store →
/// addKey → visible → verified (K token successes) → switch → removeKey(old) → idle.
///
/// Invariants it keeps (DESIGN.md §2): the journal records each step before the next side effect;
/// the old key is removed only after the new one is stored, visible and proven, with a proof signed
/// by the new key; it never removes the last key it holds and has proven; it removes only keys it
/// created or the bootstrap key.
public final class Roller: @unchecked Sendable {
    public let store: CredentialStore
    public let policy: RollPolicy
    public let identity: CredentialStore.Identity
    let tokens: TokenProvider
    let graphBase: GraphClient
    let clock: any WallClock
    let sleeper: any Sleeper
    let logger: Logger
    let metrics: MetricsRegistry
    let observer: (@Sendable (AgentEvent) -> Void)?
    let reloadHook: ReloadHook?
    let random: @Sendable () -> Double
    /// Called after each durable transition; the crash tests kill the process here.
    let afterTransition: (@Sendable (RollPhase?) -> Void)?
    private let lock = NSLock()
    private var _journal: Journal
    private var exportedThumbprints: Set<String> = []
    /// Credentials already read from the store (it is locked by this roller, so they cannot change).
    private var loaded: [String: SigningCredential] = [:]
    /// New keys this process generated and has not yet sent to addKey: Graph cannot hold them, so
    /// the replay check (read the keys, look for the thumbprint) is skipped for them.
    private var neverSent: Set<String> = []

    /// A held credential, parsed once.
    func credential(_ thumbprint: String) throws -> SigningCredential {
        if let c = lock.withLock({ loaded[thumbprint] }) { return c }
        let c = try store.credential(thumbprint)
        lock.withLock { loaded[thumbprint] = c }
        return c
    }

    private func forget(_ thumbprint: String) throws {
        lock.withLock { loaded[thumbprint] = nil }
        try store.destroyCredential(thumbprint)
    }

    public var journal: Journal { lock.withLock { _journal } }

    /// Opens the store (checks permissions, takes the lock) and loads the journal.
    public init(store: CredentialStore, policy: RollPolicy = .init(), transport: any HTTPTransport, clock: any WallClock = SystemClock(),
                sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(), logger: Logger = Logger(label: "keyroll.agent"),
                metrics: MetricsRegistry = .agent(), observer: (@Sendable (AgentEvent) -> Void)? = nil, reloadHook: ReloadHook? = nil,
                waitForLock: Bool = false, random: @escaping @Sendable () -> Double = { Double.random(in: 0...1) },
                afterTransition: (@Sendable (RollPhase?) -> Void)? = nil) throws {
        self.store = store
        self.policy = policy
        try store.checkPermissions()
        try store.lock(wait: waitForLock)
        self.identity = try store.identity()
        self._journal = try store.journal()
        let endpoints = EntraEndpoints(authorityHost: identity.authorityHost, tenant: identity.tenantId, graphBaseURL: identity.graphBaseURL)
        self.tokens = TokenProvider(endpoints: endpoints, clientID: identity.appId, transport: transport, clock: clock, sleeper: sleeper, retry: retry, logger: logger)
        self.clock = clock
        self.sleeper = sleeper
        self.logger = logger
        self.metrics = metrics
        self.observer = observer
        self.reloadHook = reloadHook
        self.random = random
        self.afterTransition = afterTransition
        let active = try store.credential(_journal.active)
        self.graphBase = GraphClient(endpoints: endpoints, tokens: tokens, auth: .certificate(active), transport: transport, clock: clock,
                                     sleeper: sleeper, retry: retry, logger: logger)
        for c in _journal.credentials where !store.hasCredential(c.thumbprint) {
            throw CredentialStore.StoreError.missingKey(thumbprint: c.thumbprint, path: store.path + "/keys")
        }
    }

    deinit { store.unlock() }

    // MARK: import

    /// Creates a store from a bootstrap bundle: the bootstrap credential becomes the active one and
    /// is published. The caller deletes the bundle file afterwards (it holds a private key).
    @discardableResult
    public static func importBundle(_ bundle: BootstrapBundle, into store: CredentialStore, now: Date) throws -> Journal {
        guard !store.exists else { throw CredentialStore.StoreError.corrupted("\(store.path) already holds an identity; import into an empty folder") }
        let cred = try bundle.signingCredential()
        try store.create(identity: .init(bundle: bundle))
        try store.storeCredential(cred)
        let record = CredentialRecord(thumbprint: cred.certificate.sha1Thumbprint.hex, notBefore: cred.certificate.notBefore,
                                      notAfter: cred.certificate.notAfter, keyId: bundle.bootstrap.keyId, origin: .bootstrap)
        let journal = Journal(active: record)
        try store.save(journal)
        try store.publish(cred)
        return journal
    }

    // MARK: planning

    /// When the next roll is due: the planned date (kept in the journal so jitter survives
    /// restarts), or now if a roll is in progress.
    public func nextRollDate() -> Date {
        let j = journal
        if j.roll != nil { return clock.now() }
        if let planned = j.nextRollAt { return planned }
        let withPlan = planningNextRoll(j)
        guard let date = withPlan.nextRollAt else { return clock.now() }
        try? commit(withPlan, phase: nil, event: nil)
        return date
    }

    /// `j` with its next roll planned for its active credential (policy date plus this roller's
    /// jitter). A roll's last transition carries the plan, so ending a roll is one durable write.
    private func planningNextRoll(_ j: Journal) -> Journal {
        guard let active = j.activeCredential else { return j }
        return j.planned(policy.rollDate(for: active, random: random()))
    }

    public func timeToCliff(now: Date? = nil) -> TimeInterval? {
        RollPolicy.cliff(of: journal).map { $0.timeIntervalSince(now ?? clock.now()) }
    }

    /// Rolls if due (or resumes a roll in progress).
    public func rollIfDue() async throws -> RollOutcome {
        let next = nextRollDate()
        guard next <= clock.now() else { return .notDue(next: next) }
        return try await roll(reason: journal.roll?.reason ?? (journal.activeCredential?.origin == .bootstrap ? "bootstrap" : "due"))
    }

    // MARK: the roll

    /// Runs (or resumes) a roll to completion. Throws on a failure that should be retried later;
    /// the journal keeps the progress.
    public func roll(reason: String = "requested") async throws -> RollOutcome {
        defer { refreshMetrics() }
        if journal.roll == nil {
            let now = clock.now()
            let window = policy.newCertificateWindow(now: now)
            let subject = policy.subject.replacingOccurrences(of: "{appId}", with: identity.appId)
            let size = policy.keySize
            let (cred, cpuSeconds) = try await Background.run {
                try ThreadCPUTime.measure { try SigningCredential.generate(size: size, subject: .init(commonName: subject), notBefore: window.notBefore, notAfter: window.notAfter) }
            }
            metrics.increment("keyroll_keygens_total")
            metrics.increment("keyroll_keygen_cpu_seconds_total", by: cpuSeconds)
            emit(.generated, "RSA-\(size.rawValue) key and certificate \(cred.certificate.sha1Thumbprint.hex), valid until \(UTCTime.iso(window.notAfter))")
            try store.storeCredential(cred)
            lock.withLock {
                loaded[cred.certificate.sha1Thumbprint.hex] = cred
                neverSent.insert(cred.certificate.sha1Thumbprint.hex)
            }
            let record = CredentialRecord(thumbprint: cred.certificate.sha1Thumbprint.hex, notBefore: cred.certificate.notBefore,
                                          notAfter: cred.certificate.notAfter, keyId: nil, origin: .keyroll)
            try commit(try journal.beginning(new: record, now: now, reason: reason), phase: .stored, event: (.stored, "new key stored (\(reason))"))
        }
        var patienceStarted: Date?
        var patienceAttempt = 0
        while let r = journal.roll {
            do {
                if let outcome = try await step(r) { return outcome }
                patienceStarted = nil
                patienceAttempt = 0
            } catch let e as EntraError where e.kind == .credentialNotYetActive && e.operation == "token" {
                // The credential authenticating Graph calls is not accepted yet: a bootstrap cert the
                // provisioner has just registered propagates like any other. Wait, within the bound.
                let started = patienceStarted ?? clock.now()
                patienceStarted = started
                patienceAttempt += 1
                guard clock.now().timeIntervalSince(started) < policy.verifyTimeout else { throw e }
                let delay = min(30, pow(2, Double(patienceAttempt)))
                emit(.notYetActive, "the signing credential is not accepted yet (AADSTS700027; still propagating?); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        return .notDue(next: nextRollDate())
    }

    /// Executes the side effect of the roll's current phase; returns an outcome when the roll ends.
    private func step(_ r: RollInProgress) async throws -> RollOutcome? {
        switch r.phase {
        case .stored: try await stepAdd(r)
        case .added: try await stepVisible(r)
        case .visible:
            if let reason = try await stepVerify(r) {
                try commit(try journal.abandoning(reason: reason), phase: .abandoning, event: (.abandoning, reason))
            }
        case .verified: try await stepSwitch(r)
        case .switched: try await stepRetire(r)
        case .retired:
            try forget(r.oldThumbprint)
            try commit(planningNextRoll(try journal.finished(now: clock.now())), phase: nil, event: (.finished, "old key \(r.oldThumbprint) destroyed; roll complete"))
            metrics.increment("keyroll_rolls_total", ["app_id": identity.appId, "outcome": "rolled"])
            return .rolled(newThumbprint: r.newThumbprint)
        case .abandoning:
            try await stepAbandon(r)
            metrics.increment("keyroll_rolls_total", ["app_id": identity.appId, "outcome": "abandoned"])
            return .abandoned(reason: r.abandonReason ?? "unknown")
        }
        return nil
    }

    /// stored → added. On replay, a key already registered (found by thumbprint) is not added twice;
    /// an ambiguous answer to addKey itself is settled the same way inside `GraphClient.addKey`.
    private func stepAdd(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        let active = try credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(active))
        let resumed = lock.withLock { neverSent.remove(r.newThumbprint) == nil }
        if resumed, let existing = try await readKeys(graph)?.first(where: { $0.matches(new.certificate) }) {
            try commit(try journal.added(keyId: existing.keyId), phase: .added, event: (.added, "already registered as \(existing.keyId) (replayed)"))
            return
        }
        let kc = try await counted { try await graph.addKey(objectID: identity.applicationObjectId, certificate: new.certificate, prover: active) }
        try commit(try journal.added(keyId: kc.keyId), phase: .added, event: (.added, "addKey → keyId \(kc.keyId)"))
    }

    /// added → visible: Graph shows the key (when the app may read itself; else addKey's 200 stands).
    private func stepVisible(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        let graph = graphBase.authenticated(with: .certificate(try credential(r.oldThumbprint)))
        var attempt = 0
        while true {
            guard let keys = try await readKeys(graph) else { break }
            if keys.contains(where: { $0.matches(new.certificate) }) { break }
            attempt += 1
            if attempt > 10 {
                try commit(try journal.abandoning(reason: "the new key never appeared in Graph"), phase: .abandoning, event: (.abandoning, "not visible"))
                return
            }
            try await sleeper.sleep(seconds: min(30, Double(1 << attempt)))
        }
        try commit(try journal.visible(now: clock.now()), phase: .visible, event: (.visible, "Graph lists the new key"))
    }

    /// visible → verified after K consecutive token successes; returns an abandon reason on timeout.
    private func stepVerify(_ r: RollInProgress) async throws -> String? {
        let new = try credential(r.newThumbprint)
        let started = r.verifyStartedAt ?? clock.now()
        var successes = 0, attempt = 0
        while successes < policy.verifySuccesses {
            do {
                _ = try await tokens.probe(credential: .certificate(new))
                successes += 1
                metrics.set("keyroll_last_token_success_timestamp_seconds", ["app_id": identity.appId, "thumbprint": r.newThumbprint], clock.now().timeIntervalSince1970)
                continue
            } catch let e as EntraError {
                metrics.increment("keyroll_token_errors_total", ["app_id": identity.appId, "code": e.aadstsCodes.first.map(String.init) ?? e.kind.rawValue])
                guard e.kind == .credentialNotYetActive || e.isRetryable else { throw e }
                successes = 0
                attempt += 1
                let waited = clock.now().timeIntervalSince(started)
                if waited >= policy.verifyTimeout {
                    return "the token endpoint did not accept the new key within \(Int(policy.verifyTimeout)) s"
                }
                let delay = min(min(30, pow(2, Double(attempt))), max(1, policy.verifyTimeout - waited))
                emit(e.kind == .credentialNotYetActive ? .notYetActive : .retry,
                     e.kind == .credentialNotYetActive ? "AADSTS700027 for the new key (propagating); retry in \(Int(delay)) s" : "\(e.kind.rawValue); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        try commit(try journal.verified(now: clock.now()), phase: .verified, event: (.verified, "\(policy.verifySuccesses) consecutive tokens with the new key"))
        return nil
    }

    /// verified → switched: publish the new credential, then tell the application.
    private func stepSwitch(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        try store.publish(new)
        try commit(try journal.switched(), phase: .switched, event: (.switched, "current.pem now holds \(r.newThumbprint)"))
        runReloadHook()
    }

    /// switched → retired: removeKey(old) with a proof signed by the new key.
    private func stepRetire(_ r: RollInProgress) async throws {
        let j = journal
        guard let newRecord = j.credential(r.newThumbprint), newRecord.lastProvenAt != nil, j.active == r.newThumbprint else {
            throw Journal.TransitionError(description: "refusing to remove the old key: the new key is not proven and active")
        }
        guard r.oldThumbprint != r.newThumbprint, let old = j.credential(r.oldThumbprint), [.bootstrap, .keyroll].contains(old.origin) else {
            throw Journal.TransitionError(description: "refusing to remove a key KeyRoll did not create")
        }
        let new = try credential(r.newThumbprint)
        let oldCert = try credential(r.oldThumbprint).certificate
        let graph = graphBase.authenticated(with: .certificate(new))
        var keyIds: [String] = []
        if let keys = try await readKeys(graph) {
            keyIds = keys.filter { $0.matches(oldCert) }.map(\.keyId)  // every registration of the old cert
        } else if let k = old.keyId {
            keyIds = [k]
        } else {
            logger.warning("cannot find the old key's keyId (no read access and none recorded); it stays registered until it expires",
                           metadata: ["app_id": "\(identity.appId)", "thumbprint": "\(r.oldThumbprint)"])
        }
        for keyId in keyIds {
            try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: keyId, prover: new) }
        }
        try commit(try journal.retired(), phase: .retired, event: (.retired, keyIds.isEmpty ? "old key already gone" : "removeKey \(keyIds.joined(separator: ", "))"))
    }

    /// abandoning → idle: remove the new key from Graph (proof by the still-active old key), delete it.
    private func stepAbandon(_ r: RollInProgress) async throws {
        if store.hasCredential(r.newThumbprint) {
            let newCert = try credential(r.newThumbprint).certificate
            let active = try credential(r.oldThumbprint)
            let graph = graphBase.authenticated(with: .certificate(active))
            var keyIds = journal.credential(r.newThumbprint)?.keyId.map { [$0] } ?? []
            if let keys = try await readKeys(graph) { keyIds = keys.filter { $0.matches(newCert) }.map(\.keyId) }
            for k in keyIds { try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: k, prover: active) } }
            try forget(r.newThumbprint)
        }
        try commit(planningNextRoll(try journal.abandoned(now: clock.now())), phase: nil, event: (.abandoned, r.abandonReason ?? "abandoned"))
    }

    // MARK: reconcile and status

    /// At start: republishes the active credential if a crash left `current.pem` behind, learns
    /// missing keyIds, and reports an active credential Entra no longer lists.
    public func reconcile() async throws {
        let j = journal
        if let active = try? credential(j.active), store.published()?.certificate != active.certificate {
            try store.publish(active)
            emit(.reconciled, "republished current.pem for \(j.active)")
        }
        if let keys = try? await readKeys(graphBase) {
            var updated = j
            for c in j.credentials where c.keyId == nil {
                if let cert = try? credential(c.thumbprint).certificate, let k = keys.first(where: { $0.matches(cert) }) {
                    updated = updated.withKeyId(k.keyId, for: c.thumbprint)
                }
            }
            if updated != j { try commit(updated, phase: nil, event: nil) }
            if let activeCert = try? credential(j.active).certificate, !keys.contains(where: { $0.matches(activeCert) }) {
                emit(.alarm, "the active certificate \(j.active) is no longer registered in Entra; self-service rolling cannot continue — re-bootstrap through the provisioner")
            }
        }
        refreshMetrics()
    }

    // MARK: plumbing

    /// Reads the application's key credentials; nil when the app may not read itself (403).
    private func readKeys(_ graph: GraphClient) async throws -> [KeyCredential]? {
        do { return try await counted { try await graph.keyCredentials(objectID: identity.applicationObjectId) } } catch let e as EntraError where e.kind == .forbidden {
            return nil
        }
    }

    private func counted<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as EntraError {
            let code = e.graphCode ?? e.aadstsCodes.first.map { "AADSTS\($0)" } ?? e.kind.rawValue
            metrics.increment(e.operation == "token" ? "keyroll_token_errors_total" : "keyroll_graph_errors_total", ["app_id": identity.appId, "code": code])
            throw e
        }
    }

    private func commit(_ j: Journal, phase: RollPhase?, event: (AgentEvent.Kind, String)?) throws {
        try store.save(j)
        lock.withLock { _journal = j }
        if let event { emit(event.0, event.1) }
        afterTransition?(phase)
    }

    func emit(_ kind: AgentEvent.Kind, _ detail: String) {
        let e = AgentEvent(time: clock.now(), appId: identity.appId, kind: kind, detail: detail)
        logger.info("\(kind.rawValue): \(detail)", metadata: ["app_id": "\(identity.appId)"])
        observer?(e)
    }

    public func refreshMetrics() {
        let next = nextRollDate()
        let j = journal
        let status = identityStatus()
        let labels = ["app_id": identity.appId]
        let held = Set(j.credentials.map(\.thumbprint))
        let stale = lock.withLock { () -> Set<String> in
            let gone = exportedThumbprints.subtracting(held)
            exportedThumbprints = held
            return gone
        }
        for t in stale {
            metrics.remove("keyroll_certificate_not_after_seconds", ["app_id": identity.appId, "thumbprint": t])
            metrics.remove("keyroll_last_token_success_timestamp_seconds", ["app_id": identity.appId, "thumbprint": t])
        }
        for c in j.credentials { metrics.set("keyroll_certificate_not_after_seconds", ["app_id": identity.appId, "thumbprint": c.thumbprint], c.notAfter.timeIntervalSince1970) }
        if let ttc = status.timeToCliff { metrics.set("keyroll_time_to_cliff_seconds", labels, ttc) }
        for a in [RollPolicy.Alarm.ok, .warning, .critical, .pastCliff] { metrics.set("keyroll_alarm", ["app_id": identity.appId, "level": a.rawValue], a == status.alarm ? 1 : 0) }
        metrics.set("keyroll_next_roll_timestamp_seconds", labels, next.timeIntervalSince1970)
        metrics.set("keyroll_clock_offset_seconds", labels, tokens.offset.seconds)
        for p in RollPhase.allCases { metrics.set("keyroll_roll_phase", ["app_id": identity.appId, "phase": p.rawValue], j.roll?.phase == p ? 1 : 0) }
    }

    private func runReloadHook() {
        guard let hook = reloadHook else { return }
        switch hook {
        case .signal(let pid, let sig):
            if kill(pid, sig) != 0 { emit(.reloadHookFailed, "kill(\(pid), \(sig)) failed: errno \(errno)") }
        case .command(let argv):
            guard !argv.isEmpty else { return }
            let p = Process()
            p.executableURL = URL(fileURLWithPath: argv[0].hasPrefix("/") ? argv[0] : "/usr/bin/env")
            p.arguments = argv[0].hasPrefix("/") ? Array(argv.dropFirst()) : argv
            var env = ProcessInfo.processInfo.environment
            env["KEYROLL_CERTIFICATE_PATH"] = store.currentPEMPath
            env["KEYROLL_APP_ID"] = identity.appId
            p.environment = env
            do {
                try p.run()
                p.waitUntilExit()
                if p.terminationStatus != 0 { emit(.reloadHookFailed, "\(argv[0]) exited \(p.terminationStatus)") }
            } catch { emit(.reloadHookFailed, "\(argv[0]): \(error)") }
        }
    }
}

/// CPU time of the calling thread: what a piece of work cost, whatever else the machine was doing.
public enum ThreadCPUTime {
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// `work`'s result and the seconds of CPU this thread spent on it.
    public static func measure<T>(_ work: () throws -> T) rethrows -> (T, Double) {
        let start = now()
        let result = try work()
        return (result, now() - start)
    }
}

/// CPU-heavy work (RSA key generation) off Swift's cooperative pool, which has only as many threads
/// as cores: a 4096-bit keygen can block one for seconds.
public enum Background {
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            DispatchQueue.global(qos: .utility).async { cont.resume(with: Swift.Result { try work() }) }
        }
    }
}
