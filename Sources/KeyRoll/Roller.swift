import EntraClient
import EntraCrypto
import Foundation
import Logging

/// Rolls one identity's certificate through the journal's state machine: generate → store →
/// addKey → visible → verified (K token successes) → switch (publish, reload hook) →
/// removeKey(old) → idle, destroying the old key only once the journal no longer lists it.
///
/// The rule every step follows (docs/design.md, "Crash points"): record the intent durably, do the
/// effect, record the outcome. So a process that dies anywhere — between any two system calls,
/// with an answer from Entra it never read — is resumed by the next start, which first sweeps what
/// a crash can leave (untracked keys, temporary files). Invariants it keeps: the old key is
/// removed only after the new one is stored, registered, proven and published, with a proof
/// signed by the new key; it removes only keys it created or the bootstrap key it was handed.
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
    /// This roller's hold on the store; released with the roller.
    private let storeLock: StoreLock
    private let lock = NSLock()
    private var _journal: Journal
    private var exportedThumbprints: Set<String> = []
    /// Credentials already read from the store (it is locked by this roller, so they cannot change).
    private var loaded: [String: SigningCredential] = [:]
    /// New keys this process generated and has not yet sent to addKey: Graph cannot hold them, so
    /// the replay check (read the keys, look for the thumbprint) is skipped for them.
    private var neverSent: Set<String> = []
    /// Thumbprints Graph listed at the last read of the application's keys (nil: never read, or
    /// the app may not read itself). Status and the cliff take it into account.
    private var lastSeenInEntra: Set<String>?

    /// A held credential, parsed once.
    func credential(_ thumbprint: String) throws -> SigningCredential {
        if let c = lock.withLock({ loaded[thumbprint] }) { return c }
        let c = try store.credential(thumbprint)
        lock.withLock { loaded[thumbprint] = c }
        return c
    }

    public var journal: Journal { lock.withLock { _journal } }

    /// Opens the store (checks permissions, takes the lock without waiting), loads the journal and
    /// sweeps what a crash may have left: key files the journal does not list and temporary files.
    /// It refuses to start only when a key the journal still needs is missing.
    public init(store: CredentialStore, policy: RollPolicy = .init(), transport: any HTTPTransport, clock: any WallClock = SystemClock(),
                sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(), logger: Logger = Logger(label: "keyroll.agent"),
                metrics: MetricsRegistry = .agent(), observer: (@Sendable (AgentEvent) -> Void)? = nil, reloadHook: ReloadHook? = nil,
                random: @escaping @Sendable () -> Double = { Double.random(in: 0...1) },
                afterTransition: (@Sendable (RollPhase?) -> Void)? = nil) throws {
        self.store = store
        self.policy = try policy.validated()
        try store.checkPermissions()
        self.storeLock = try store.lock()
        self.identity = try store.identity()
        try identity.validate()
        self._journal = try store.journal()
        let endpoints = EntraEndpoints(authorityHost: identity.authorityHost, tenant: identity.tenantId, graphBaseURL: identity.graphBaseURL)
        let wire = SideEffectTransport(transport, hook: store.hook)
        self.tokens = TokenProvider(endpoints: endpoints, clientID: identity.appId, transport: wire, clock: clock, sleeper: sleeper, retry: retry, logger: logger)
        self.clock = clock
        self.sleeper = sleeper
        self.logger = logger
        self.metrics = metrics
        self.observer = observer
        self.reloadHook = reloadHook
        self.random = random
        self.afterTransition = afterTransition
        let j = _journal
        for t in j.requiredKeys.sorted() where !store.hasCredential(t) {
            throw CredentialStore.StoreError.missingKey(thumbprint: t, path: store.path + "/keys")
        }
        let active = try store.credential(j.active)
        self.graphBase = GraphClient(endpoints: endpoints, tokens: tokens, auth: .certificate(active), transport: wire, clock: clock,
                                     sleeper: sleeper, retry: retry, logger: logger)
        try sweep()
    }

    /// Opens the store like `init`, but waits (without blocking a thread) while another agent
    /// holds its lock.
    public static func waitingForLock(pollEvery seconds: Double = 1, sleeper: any Sleeper = TaskSleeper(),
                                      _ open: () throws -> Roller) async throws -> Roller {
        while true {
            do { return try open() } catch CredentialStore.StoreError.locked {
                try await sleeper.sleep(seconds: seconds)
            }
        }
    }

    /// Destroys key files the journal does not list and temporary files left by a crash.
    private func sweep() throws {
        let j = journal
        let removed = try store.sweep(keeping: Set(j.credentials.map(\.thumbprint)))
        if !removed.isEmpty { emit(.swept, "removed what an interrupted run left: \(removed.joined(separator: ", "))") }
    }

    // MARK: import

    /// Creates a store from a bootstrap bundle: the bootstrap credential becomes the active one and
    /// is published. The caller deletes the bundle file afterwards (it holds a private key).
    ///
    /// Import can die anywhere, and running it again with the same bundle finishes the job: a store
    /// of this identity without a journal is an interrupted import and is written again; a store
    /// whose journal holds just this bootstrap is already imported (its `current.pem` is checked).
    /// Any other store is refused, so an import never overwrites keys an agent has rolled.
    @discardableResult
    public static func importBundle(_ bundle: BootstrapBundle, into store: CredentialStore, now: Date) throws -> Journal {
        let identity = CredentialStore.Identity(bundle: bundle)
        try identity.validate()
        let cred: SigningCredential
        do { cred = try bundle.signingCredential() } catch {
            throw BootstrapBundle.BundleError.unreadable("its key and certificate do not fit together (\(error))")
        }
        let thumbprint = cred.certificate.sha1Thumbprint.hex
        if store.exists {
            let refused = CredentialStore.StoreError.corrupted("\(store.path) already holds an identity; import into an empty folder")
            guard (try? store.identity()) == identity else { throw refused }
            if store.hasJournal {
                let j = try store.journal()
                guard j.active == thumbprint, j.roll == nil, j.credentials.map(\.thumbprint) == [thumbprint] else { throw refused }
                let lock = try store.lock()
                defer { withExtendedLifetime(lock) {} }
                if store.published()?.certificate != cred.certificate { try store.publish(cred) }
                return j
            }
        }
        guard cred.certificate.notAfter > now else {
            throw BootstrapBundle.BundleError.unreadable("its bootstrap certificate expired at \(UTCTime.iso(cred.certificate.notAfter)), so the app cannot sign in with it")
        }
        try store.create(identity: identity)
        let lock = try store.lock()
        defer { withExtendedLifetime(lock) {} }
        try store.storeCredential(cred)
        let record = CredentialRecord(thumbprint: thumbprint, notBefore: cred.certificate.notBefore,
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
        identityStatus().cliff.map { $0.timeIntervalSince(now ?? clock.now()) }
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
        if journal.roll == nil { try await begin(reason: reason) }
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
                let delay = Backoff.delay(attempt: patienceAttempt, cap: 30)
                emit(.notYetActive, "the signing credential is not accepted yet (AADSTS700027; still propagating?); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        return .notDue(next: nextRollDate())
    }

    /// idle → stored: a new key and certificate, written to the store, then recorded. (A crash
    /// between the two leaves an untracked key that the next start sweeps.)
    private func begin(reason: String) async throws {
        try sweep()
        let now = clock.now()
        let window = policy.newCertificateWindow(now: now)
        try policy.checkNewCertificate(notBefore: window.notBefore, notAfter: window.notAfter)
        let subject = policy.subject.replacingOccurrences(of: "{appId}", with: identity.appId)
        let size = policy.keySize
        let (cred, cpuSeconds) = try await Background.run {
            try ThreadCPUTime.measure { try SigningCredential.generate(size: size, subject: .init(commonName: subject), notBefore: window.notBefore, notAfter: window.notAfter) }
        }
        metrics.increment("keyroll_keygens_total")
        metrics.increment("keyroll_keygen_cpu_seconds_total", by: cpuSeconds)
        let thumbprint = cred.certificate.sha1Thumbprint.hex
        emit(.generated, "RSA-\(size.rawValue) key and certificate \(thumbprint), valid until \(UTCTime.iso(window.notAfter))")
        try store.storeCredential(cred)
        lock.withLock {
            loaded[thumbprint] = cred
            neverSent.insert(thumbprint)
        }
        let record = CredentialRecord(thumbprint: thumbprint, notBefore: cred.certificate.notBefore,
                                      notAfter: cred.certificate.notAfter, keyId: nil, origin: .keyroll)
        try commit(try journal.beginning(new: record, now: now, reason: reason), phase: .stored, event: (.stored, "new key stored (\(reason))"))
    }

    /// Executes the side effect of the roll's current phase; returns an outcome when the roll ends.
    private func step(_ r: RollInProgress) async throws -> RollOutcome? {
        switch r.phase {
        case .stored: try await stepAdd(r)
        case .added: try await stepVisible(r)
        case .visible:
            if let reason = try await stepVerify(r) {
                try commit(try journal.abandoning(reason: reason, now: clock.now()), phase: .abandoning, event: (.abandoning, reason))
            }
        case .verified: try await stepSwitch(r)
        case .switched, .retired:
            try await stepRetire(r)
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
            try commit(try journal.added(keyId: existing.keyId, now: clock.now()), phase: .added,
                       event: (.added, "already registered as \(existing.keyId) (replayed)"))
            return
        }
        let kc = try await counted { try await graph.addKey(objectID: identity.applicationObjectId, certificate: new.certificate, prover: active) }
        try commit(try journal.added(keyId: kc.keyId, now: clock.now()), phase: .added, event: (.added, "addKey → keyId \(kc.keyId)"))
    }

    /// added → visible: Graph shows the key (when the app may read itself; else addKey's 200 stands).
    /// Visibility is advisory — the token endpoint is the judge — so once the verification window
    /// has passed, an error reading Graph no longer holds the roll here.
    private func stepVisible(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        let graph = graphBase.authenticated(with: .certificate(try credential(r.oldThumbprint)))
        let since = r.phaseSince ?? r.startedAt
        var attempt = 0
        while true {
            let keys: [KeyCredential]?
            do { keys = try await readKeys(graph) } catch let e as EntraError where clock.now().timeIntervalSince(since) >= policy.verifyTimeout {
                logger.warning("cannot confirm the new key in Graph (\(e.kind.rawValue)); going on to verify it at the token endpoint",
                               metadata: ["app_id": "\(identity.appId)"])
                break
            }
            guard let keys else { break }
            if keys.contains(where: { $0.matches(new.certificate) }) { break }
            attempt += 1
            if attempt > 10 {
                try commit(try journal.abandoning(reason: "the new key never appeared in Graph", now: clock.now()), phase: .abandoning,
                           event: (.abandoning, "not visible"))
                return
            }
            try await sleeper.sleep(seconds: Backoff.delay(attempt: attempt, cap: 30))
        }
        try commit(try journal.visible(now: clock.now()), phase: .visible, event: (.visible, "Graph lists the new key"))
    }

    /// visible → verified after K consecutive token successes. Returns an abandon reason once the
    /// verification window (from `verifyStartedAt`, which is durable) has passed — whatever the
    /// error, so no error can hold a roll here forever.
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
                successes = 0
                attempt += 1
                let waited = clock.now().timeIntervalSince(started)
                if waited >= policy.verifyTimeout {
                    return "the token endpoint did not accept the new key within \(Int(policy.verifyTimeout)) s (last: \(e.kind.rawValue))"
                }
                // Not retryable here: the agent retries the roll later; the window keeps running.
                guard e.kind == .credentialNotYetActive || e.isRetryable else { throw e }
                let delay = min(Backoff.delay(attempt: attempt, cap: 30), max(1, policy.verifyTimeout - waited))
                emit(e.kind == .credentialNotYetActive ? .notYetActive : .retry,
                     e.kind == .credentialNotYetActive ? "AADSTS700027 for the new key (propagating); retry in \(Int(delay)) s" : "\(e.kind.rawValue); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        try commit(try journal.verified(now: clock.now()), phase: .verified, event: (.verified, "\(policy.verifySuccesses) consecutive tokens with the new key"))
        return nil
    }

    /// verified → switched: publish the new credential, then record the switch.
    private func stepSwitch(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        try store.publish(new)
        try commit(try journal.switched(now: clock.now()), phase: .switched, event: (.switched, "current.pem now holds \(r.newThumbprint)"))
    }

    /// switched → idle: tell the application (the reload hook, recorded once it succeeded), remove
    /// the old key from Graph with a proof signed by the new key, record it, then destroy the old
    /// key's file.
    private func stepRetire(_ r: RollInProgress) async throws {
        let j = journal
        guard let newRecord = j.credential(r.newThumbprint), newRecord.lastProvenAt != nil, j.active == r.newThumbprint else {
            throw Journal.TransitionError(description: "refusing to remove the old key: the new key is not proven and active")
        }
        guard r.oldThumbprint != r.newThumbprint, let old = j.credential(r.oldThumbprint), [.bootstrap, .keyroll].contains(old.origin) else {
            throw Journal.TransitionError(description: "refusing to remove a key KeyRoll did not create")
        }
        if r.phase == .switched, r.reloadedAt == nil, let hook = reloadHook { try await runReloadHook(hook, r) }
        let new = try credential(r.newThumbprint)
        let graph = graphBase.authenticated(with: .certificate(new))
        var keyIds: [String] = []
        if let keys = try await readKeys(graph) {
            keyIds = keys.filter { $0.matches(thumbprint: r.oldThumbprint) }.map(\.keyId)  // every registration of the old cert
        } else if let k = old.keyId {
            keyIds = [k]
        } else {
            logger.warning("cannot find the old key's keyId (no read access and none recorded); it stays registered until it expires",
                           metadata: ["app_id": "\(identity.appId)", "thumbprint": "\(r.oldThumbprint)"])
        }
        for keyId in keyIds {
            try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: keyId, prover: new) }
        }
        emit(.retired, keyIds.isEmpty ? "old key already gone" : "removeKey \(keyIds.joined(separator: ", "))")
        try commit(planningNextRoll(try journal.finished(now: clock.now())), phase: nil, event: nil)
        destroyGivenUp(r.oldThumbprint, "old key \(r.oldThumbprint) destroyed; roll complete", event: .finished)
    }

    /// Runs the reload hook once per switch. Until it succeeds the old key stays registered, so an
    /// application still holding it keeps working; after `reloadHookGrace` the roll goes on anyway
    /// with an alarm, so a broken hook cannot keep a roll from ever finishing.
    private func runReloadHook(_ hook: ReloadHook, _ r: RollInProgress) async throws {
        try store.hook.reach(SideEffect(.hook, "reload"))
        do {
            try await hook.run(certificatePath: store.currentPEMPath, appId: identity.appId, timeout: policy.reloadHookTimeout)
            try commit(try journal.reloaded(now: clock.now()), phase: .switched, event: (.reloaded, "the application was told about the new credential"))
        } catch let failure as ReloadHook.Failure {
            metrics.increment("keyroll_reload_hook_failures_total", ["app_id": identity.appId])
            let failingFor = clock.now().timeIntervalSince(r.phaseSince ?? r.startedAt)
            guard failingFor >= policy.reloadHookGrace else {
                emit(.reloadHookFailed, "\(failure); the old key stays registered until the hook succeeds (or for \(Int(policy.reloadHookGrace)) s)")
                throw failure
            }
            emit(.alarm, "the reload hook has failed for \(Int(failingFor)) s (\(failure)); removing the old key anyway — the application must reload \(store.currentPEMPath) by itself")
        }
    }

    /// abandoning → idle: remove the new key from Graph (proof by the still-active old key), record
    /// that, then destroy the new key's file.
    private func stepAbandon(_ r: RollInProgress) async throws {
        let active = try credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(active))
        var keyIds = journal.credential(r.newThumbprint)?.keyId.map { [$0] } ?? []
        if let keys = try await readKeys(graph) { keyIds = keys.filter { $0.matches(thumbprint: r.newThumbprint) }.map(\.keyId) }
        for k in keyIds { try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: k, prover: active) } }
        try commit(planningNextRoll(try journal.abandoned(now: clock.now())), phase: nil, event: nil)
        destroyGivenUp(r.newThumbprint, r.abandonReason ?? "abandoned", event: .abandoned)
    }

    /// Destroys a key the journal has just stopped listing. A failure here loses nothing: the key
    /// is untracked now, and the next sweep destroys it.
    private func destroyGivenUp(_ thumbprint: String, _ detail: String, event: AgentEvent.Kind) {
        lock.withLock { loaded[thumbprint] = nil }
        do { try store.destroyCredential(thumbprint) } catch {
            logger.warning("could not destroy a retired key now; the next start sweeps it", metadata: ["app_id": "\(identity.appId)", "error": "\(error)"])
        }
        emit(event, detail)
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
                if let k = keys.first(where: { $0.matches(thumbprint: c.thumbprint) }) { updated = updated.withKeyId(k.keyId, for: c.thumbprint) }
            }
            if updated != j { try commit(updated, phase: nil, event: nil) }
            if !keys.contains(where: { $0.matches(thumbprint: j.active) }) {
                emit(.alarm, "the active certificate \(j.active) is no longer registered in Entra; self-service rolling cannot continue — re-bootstrap through the provisioner")
            }
        }
        refreshMetrics()
    }

    // MARK: plumbing

    /// Reads the application's key credentials; nil when the app may not read itself (403).
    private func readKeys(_ graph: GraphClient) async throws -> [KeyCredential]? {
        do {
            let keys = try await counted { try await graph.keyCredentials(objectID: identity.applicationObjectId) }
            let held = journal.credentials.map(\.thumbprint)
            lock.withLock { lastSeenInEntra = Set(held.filter { t in keys.contains { $0.matches(thumbprint: t) } }) }
            return keys
        } catch let e as EntraError where e.kind == .forbidden {
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

    /// What Graph listed of the held keys at the last read (nil: not read yet, or not allowed).
    var keysSeenInEntra: Set<String>? { lock.withLock { lastSeenInEntra } }

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
        metrics.set("keyroll_roll_phase_since_timestamp_seconds", labels, j.roll?.phaseSince?.timeIntervalSince1970 ?? 0)
        for p in RollPhase.allCases { metrics.set("keyroll_roll_phase", ["app_id": identity.appId, "phase": p.rawValue], j.roll?.phase == p ? 1 : 0) }
    }
}

/// Capped exponential backoff: 2, 4, 8 … seconds up to `cap` (the roller's waits for propagation).
enum Backoff {
    static func delay(attempt: Int, cap: Double) -> Double { min(cap, pow(2, Double(min(attempt, 30)))) }
}
