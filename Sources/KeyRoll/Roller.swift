import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
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
    /// Waits while Entra propagates a key: 2, 4, 8 … seconds, at most 30.
    static let propagationBackoff = Backoff(base: 2, cap: 30)
    public let store: CredentialStore
    public let policy: RollPolicy
    public let identity: CredentialStore.Identity
    let tokens: TokenProvider
    let graphBase: GraphClient
    let clock: any WallClock
    let sleeper: any Sleeper
    /// In-process waits and windows (a wall-clock step does not move it).
    let monotonic: any MonotonicClock
    let logger: Logger
    let metrics: MetricsRegistry
    let observer: (@Sendable (AgentEvent) -> Void)?
    let reloadHook: ReloadHook?
    let random: @Sendable () -> Double
    /// Called after each durable transition; the crash tests kill the process here.
    let afterTransition: (@Sendable (RollPhase?) -> Void)?
    /// This roller's hold on the store; released with the roller.
    let storeLock: StoreLock
    let lock = NSLock()
    var _journal: Journal
    var exportedThumbprints: Set<String> = []
    /// Credentials already read from the store (it is locked by this roller, so they cannot change).
    var loaded: [String: SigningCredential] = [:]
    /// New keys this process generated and has not yet sent to addKey: Graph cannot hold them, so
    /// the replay check (read the keys, look for the thumbprint) is skipped for them.
    var neverSent: Set<String> = []
    /// Thumbprints Graph listed at the last read of the application's keys (nil: never read, or
    /// the app may not read itself). Status and the cliff take it into account.
    var lastSeenInEntra: Set<String>?
    /// The last registration check found the active key refused and could not repair it.
    var activeRefused = false
    /// When Graph was last read for tombstones (in memory: a restart reads again).
    var lastTombstoneRead: Date?
    /// Checks in a row that found the active key listed by Graph but refused by the token endpoint.
    var refusedWhileListed = 0
    /// Retained keys the last check found gone past their window: released if the next agrees.
    var releaseCandidates: Set<String> = []
    /// Retained keys the last check found back (no self-read), and those found back twice in a row.
    var backLastCheck: Set<String> = []
    var unremovable: Set<String> = []

    /// A held credential, parsed once.
    func credential(_ thumbprint: String) throws -> SigningCredential {
        if let c = lock.withLock({ loaded[thumbprint] }) { return c }
        let c = try store.credential(thumbprint)
        lock.withLock { loaded[thumbprint] = c }
        return c
    }

    public var journal: Journal { lock.withLock { _journal } }

    /// How long a window that guards a destruction has run (``WindowElapsed``), from its journaled
    /// start on the wall clock and on the boot-time clock (`bootSince` of boot `bootID`; nil: not yet
    /// stamped, so it has only begun).
    func windowElapsed(wallSince: Date, bootSince: Double?, bootID: String?) -> TimeInterval {
        let boot = monotonic.secondsSinceBoot()
        return WindowElapsed.seconds(wallSince: wallSince, wallNow: clock.now(), bootSince: bootSince ?? boot, bootNow: boot,
                                     sameBoot: WindowElapsed.sameBoot(bootID, monotonic.bootID()))
    }

    /// The subject CN of the certificates this roller makes: the policy's subject, marked with the
    /// replica's name when the app runs on several hosts (``CredentialName``).
    public var certificateSubject: String {
        CredentialName.cn(policy.subject.replacingOccurrences(of: "{appId}", with: identity.appId), replica: identity.replica)
    }

    /// Opens the store (checks permissions, takes the lock without waiting), loads the journal and
    /// sweeps what a crash may have left: key files the journal does not list and temporary files.
    /// It refuses to start only when a key the journal still needs is missing.
    public init(store: CredentialStore, policy: RollPolicy = .init(), transport: any HTTPTransport, clock: any WallClock = SystemClock(),
                sleeper: any Sleeper = TaskSleeper(), retry: RetryPolicy = .init(), logger: Logger = Logger(label: "keyroll.agent"),
                metrics: MetricsRegistry = .agent(), observer: (@Sendable (AgentEvent) -> Void)? = nil, reloadHook: ReloadHook? = nil,
                random: @escaping @Sendable () -> Double = { Double.random(in: 0...1) },
                afterTransition: (@Sendable (RollPhase?) -> Void)? = nil, monotonic: (any MonotonicClock)? = nil) throws {
        self.store = store
        // a virtual clock is the monotonic clock of a virtual run; a real one uses the machine's
        self.monotonic = monotonic ?? (clock as? ManualClock) ?? SystemMonotonicClock()
        try policy.validated()
        try store.checkPermissions()
        self.storeLock = try store.lock()
        self.identity = try store.identity()
        try identity.validate()
        // the app's own certificate limit (its app management policy, from the bundle) caps the policy
        self.policy = try policy.validated(cappedBy: identity.maximumCertificateValidity, identity: store.path)
        let subject = CredentialName.cn(policy.subject.replacingOccurrences(of: "{appId}", with: identity.appId), replica: identity.replica)
        guard subject.count <= 64 else {
            throw RollPolicy.Invalid(field: "subject", description: "subject: '\(subject)' is \(subject.count) characters with the app id and replica name filled in; a certificate CN holds at most 64. Shorten the policy's subject")
        }
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
        // The first start after a reboot carries the windows over to this boot (Journal.rebasingWindows);
        // windows of a journal of an earlier version, without a boot-time reading, begin now (commit stamps them).
        let rebased = j.rebasingWindows(bootSeconds: self.monotonic.secondsSinceBoot(), bootID: self.monotonic.bootID(), wallNow: clock.now())
        if rebased.stampingWindows(bootSeconds: 0, bootID: nil) != j { try commit(rebased, phase: nil, event: nil) }
        try sweep(tokenMayFail: true)
        // a retained key whose file is gone (restored from a backup without it, removed by hand)
        // cannot prove anything: let the journal forget it
        for r in _journal.retained where !store.hasCredential(r.thumbprint) {
            if let j = try? _journal.released(r.thumbprint) { try commit(j, phase: nil, event: nil) }
        }
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
    /// `tokenMayFail`: at start, a token that cannot be reached must not stop the agent (its active
    /// key may still be a file); the sweep before every roll needs it.
    func sweep(tokenMayFail: Bool = false) throws {
        let j = journal  // retained keys are journal credentials: the sweep keeps them
        let removed = try store.sweep(keeping: Set(j.credentials.map(\.thumbprint)), tokenFailure: tokenMayFail ? { [logger] error in
            logger.warning("the PKCS#11 token could not be swept now; the next roll sweeps it first", metadata: ["error": "\(error)"])
        } : nil)
        if !removed.isEmpty { emit(.swept, "removed what an interrupted run left: \(removed.joined(separator: ", "))") }
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
    func planningNextRoll(_ j: Journal) -> Journal {
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
        if journal.repair != nil { try await runRepair() }
        if journal.roll == nil { try await begin(reason: reason) }
        var patienceStarted: Date?
        var patienceAttempt = 0
        while let r = journal.roll {
            do {
                if journal.repair != nil {
                    try await runRepair()
                    continue
                }
                if let outcome = try await step(r) { return outcome }
                patienceStarted = nil
                patienceAttempt = 0
            } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
                // Entra refuses a key: if it is the active key, proven before, and the evidence says
                // it is gone (a stale privileged write dropped it), register it again with a proof by
                // a held key Entra still accepts (the new key of this roll, or a retained one)
                // before anything else; no step of the roll can succeed without it.
                if journal.repair == nil, journal.activeCredential?.lastProvenAt != nil,
                   let active = try? credential(journal.active), !(try await isStillRegistered(active, readingWith: nil)) {
                    try await repairDroppedActive(reason: "the active key is refused (\(e.kind.rawValue) in \(e.operation))",
                                                  preferring: r.phase >= .switched ? r.oldThumbprint : r.newThumbprint)
                    continue
                }
                guard e.kind == .credentialNotYetActive, e.operation == "token" else { throw e }
                // The credential authenticating Graph calls is not accepted yet: a bootstrap cert the
                // provisioner has just registered propagates like any other. Wait, within the bound.
                let started = patienceStarted ?? clock.now()
                patienceStarted = started
                patienceAttempt += 1
                guard clock.now().timeIntervalSince(started) < policy.verifyTimeout else { throw e }
                let delay = Self.propagationBackoff.delay(attempt: patienceAttempt)
                emit(.notYetActive, "the signing credential is not accepted yet (AADSTS700027; still propagating?); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        return .notDue(next: nextRollDate())
    }

    /// idle → stored: a new key and certificate, written to the store, then recorded. (A crash
    /// between the two leaves an untracked key that the next start sweeps.)
    func begin(reason: String) async throws {
        try sweep()
        let now = clock.now()
        let window = policy.newCertificateWindow(now: graphBase.correctedNow)
        try policy.checkNewCertificate(notBefore: window.notBefore, notAfter: window.notAfter)
        let subject = certificateSubject
        let size = policy.keySize
        let store = self.store
        // generated (and stored, untracked) where the identity keeps its keys: a file, or inside its token
        let (cred, cpuSeconds) = try await Background.run {
            try ThreadCPUTime.measure { try store.generateCredential(size: size, subject: subject, notBefore: window.notBefore, notAfter: window.notAfter) }
        }
        metrics.increment("keyroll_keygens_total")
        metrics.increment("keyroll_keygen_cpu_seconds_total", by: cpuSeconds)
        let thumbprint = cred.certificate.sha1Thumbprint.hex
        let place = cred.signer.keyStoreKind == .pkcs11 ? " in the PKCS#11 token" : ""
        emit(.generated, "RSA-\(size.rawValue) key\(place) and certificate \(thumbprint), valid until \(UTCTime.iso(window.notAfter))")
        lock.withLock {
            loaded[thumbprint] = cred
            neverSent.insert(thumbprint)
        }
        let record = CredentialRecord(thumbprint: thumbprint, notBefore: cred.certificate.notBefore,
                                      notAfter: cred.certificate.notAfter, keyId: nil, origin: .keyroll)
        try commit(try journal.beginning(new: record, now: now, reason: reason), phase: .stored, event: (.stored, "new key stored (\(reason))"))
    }

    /// Executes the side effect of the roll's current phase; returns an outcome when the roll ends.
    func step(_ r: RollInProgress) async throws -> RollOutcome? {
        switch r.phase {
        case .stored: try await stepAdd(r)
        case .added: try await stepVisible(r)
        case .visible:
            if let reason = try await stepVerify(r) {
                try commit(try journal.abandoning(reason: reason, now: clock.now()), phase: .abandoning, event: (.abandoning, reason))
            }
        case .verified: try await stepSwitch(r)
        case .switched, .retired:
            guard try await stepRetire(r) else { return nil }  // repaired the new key first; the step runs again
            metrics.increment("keyroll_rolls_total", ["app_id": identity.appId, "outcome": "rolled"])
            return .rolled(newThumbprint: r.newThumbprint)
        case .abandoning:
            try await stepAbandon(r)
            metrics.increment("keyroll_rolls_total", ["app_id": identity.appId, "outcome": "abandoned"])
            return .abandoned(reason: r.abandonReason ?? "unknown")
        }
        return nil
    }

}
