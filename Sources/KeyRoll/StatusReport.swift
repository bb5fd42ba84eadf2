import EntraCrypto
import Foundation
import KeyRollPrimitives

/// What `keyroll status` and `/metrics` say about one identity. Pure: derived from the journal,
/// the keys that are on disk and, when known, the keys Graph listed at the last read.
public struct IdentityStatus: Sendable, Codable, Equatable {
    public var store: String
    public var appId: String
    public var displayName: String?
    /// This host's replica of the app (nil: a single-host app).
    public var replica: ReplicaName?
    public var activeThumbprint: String
    public var activeOrigin: CredentialOrigin
    public var activeNotAfter: Date
    /// Planned roll (nil-jitter estimate when the agent has not planned it yet).
    public var nextRoll: Date
    public var cliff: Date?
    public var timeToCliff: TimeInterval?
    public var alarm: RollPolicy.Alarm
    public var rollPhase: RollPhase?
    public var heldCredentials: Int
    public var rolls: Int
    public var lastOutcome: String?
    /// The roll in progress, if any, in words an operator can act on.
    public var interruptedRoll: InterruptedRoll?
    /// A re-registration of the active key in progress (a stale write dropped it), if any.
    public var repair: Repair?
    /// Removed keys kept to undo a stale write, and keys removed whose return is watched for.
    public var retainedKeys: Int?
    public var tombstones: Int?
    /// When the last repair ended and what it said, if any repair is in the history.
    public var lastRepair: String?
    /// Where the identity generates its keys (file or pkcs11), and where the active key lives (the
    /// bootstrap key stays a file until the first roll, whatever the store).
    public var keyStore: KeyStoreKind?
    public var activeKeyStore: KeyStoreKind?

    /// A roll that has not finished: where it stands and what happens next.
    public struct InterruptedRoll: Sendable, Codable, Equatable {
        public var phase: RollPhase
        public var startedAt: Date
        /// When it entered this phase (nil in journals of earlier versions).
        public var phaseSince: Date?
        /// What the agent does next when it runs (resume is automatic).
        public var next: String
        /// After this an operator must act: the cliff minus the critical threshold.
        public var actBy: Date?
    }

    public static func make(store: String, identity: CredentialStore.Identity, journal j: Journal, keysOnDisk: Set<String>,
                            inEntra: Set<String>? = nil, policy: RollPolicy, now: Date, activeKeyStore: KeyStoreKind? = nil) -> IdentityStatus {
        let active = j.activeCredential
        let cliff = RollPolicy.cliff(of: j, keysOnDisk: keysOnDisk, inEntra: inEntra)
        let ttc = cliff.map { $0.timeIntervalSince(now) }
        let next = j.roll != nil ? now : (j.nextRollAt ?? active.map { policy.rollDate(for: $0, random: 0.5) } ?? now)
        let interrupted = j.roll.map { r in
            InterruptedRoll(phase: r.phase, startedAt: r.startedAt, phaseSince: r.phaseSince, next: Self.nextAction(r),
                            actBy: cliff.map { $0.addingTimeInterval(-policy.criticalTimeToCliff) })
        }
        return IdentityStatus(store: store, appId: identity.appId, displayName: identity.displayName, replica: identity.replica, activeThumbprint: j.active,
                              activeOrigin: active?.origin ?? .keyroll, activeNotAfter: active?.notAfter ?? .distantPast, nextRoll: next,
                              cliff: cliff, timeToCliff: ttc, alarm: policy.alarm(timeToCliff: ttc), rollPhase: j.roll?.phase,
                              heldCredentials: j.credentials.count, rolls: j.history.filter { $0.outcome == "rolled" }.count,
                              lastOutcome: j.history.last?.outcome, interruptedRoll: interrupted, repair: j.repair,
                              retainedKeys: j.retained.count, tombstones: j.tombstones.count,
                              lastRepair: j.history.last { $0.outcome.hasPrefix("repair") }.map { "\(UTCTime.iso($0.finishedAt)) \($0.outcome)" },
                              keyStore: identity.keyStore?.kind ?? .file, activeKeyStore: activeKeyStore)
    }

    /// What resuming a roll at its phase does.
    static func nextAction(_ r: RollInProgress) -> String { nextAction(r.phase, reloaded: r.reloadedAt != nil) }

    /// The step that leaves `phase`, in words (the state machine's transitions, as an operator reads them).
    static func nextAction(_ phase: RollPhase, reloaded: Bool, policy: RollPolicy? = nil) -> String {
        switch phase {
        case .stored: return "register the new key with addKey, with a proof signed by the active key (or find it registered already)"
        case .added: return "wait until Graph lists the new key"
        case .visible:
            let how = policy.map { " (\($0.verifySuccesses) consecutive tokens within \(Int($0.verifyTimeout)) s)" } ?? ""
            return "prove the new key at the token endpoint\(how); abandon the roll if it is not accepted in time"
        case .verified: return "publish the new key as current.pem"
        case .switched: return reloaded ? "remove the old key from Entra" : "run the reload hook, then remove the old key from Entra with a proof signed by the new key"
        case .retired: return "destroy the old key"
        case .abandoning: return "remove the unproven new key from Entra and destroy it; the old key stays active"
        }
    }

    /// Every step of a roll under `policy`, in order: key generation, then the step that leaves
    /// each phase of the journal's state machine on the way to the end of a successful roll.
    public static func rollSteps(policy: RollPolicy) -> [String] {
        ["generate an RSA-\(policy.keySize.rawValue) key and a \(Int(policy.effectiveValidity / 86_400))-day certificate, and store both (0600)"]
            + [RollPhase.stored, .added, .visible, .verified, .switched].map { nextAction($0, reloaded: false, policy: policy) }
            + ["destroy the old private key once the journal no longer lists it"]
    }

    /// What to do about the alarm, in words an operator can act on.
    public var advice: String? {
        switch alarm {
        case .ok: return nil
        case .warning: return "certificate expires soon; the agent keeps trying to roll — check its logs"
        case .critical: return activeOrigin == .bootstrap
            ? "still on the bootstrap certificate; start the agent now or the app loses self-service rolling"
            : "close to the cliff; if rolling keeps failing, re-bootstrap through the provisioner (keyroll rebootstrap)"
        case .pastCliff: return "no valid certificate left: self-service is impossible; re-bootstrap through the provisioner (keyroll rebootstrap)"
        }
    }
}

/// Reads a store without locking it (status and plan never change anything).
public enum StoreReader {
    public static func status(path: String, policy: RollPolicy, now: Date) throws -> IdentityStatus {
        let store = CredentialStore(path: path)
        let identity = try store.identity()  // first: "not a KeyRoll store" before "journal missing"
        let j = try store.journal()
        return IdentityStatus.make(store: path, identity: identity, journal: j, keysOnDisk: store.keysOnDisk(),
                                   policy: policy, now: now, activeKeyStore: store.keyStoreKind(of: j.active))
    }
}

extension Roller {
    public func identityStatus() -> IdentityStatus {
        let j = journal
        // A registration check that found the active key refused (and could not repair it) is
        // evidence the active key no longer counts, whatever the last Graph read showed.
        let refused = lock.withLock { activeRefused }
        let inEntra = refused ? (keysSeenInEntra ?? Set(j.credentials.map(\.thumbprint))).subtracting([j.active]) : keysSeenInEntra
        return IdentityStatus.make(store: store.path, identity: identity, journal: j, keysOnDisk: store.keysOnDisk(), inEntra: inEntra,
                                   policy: policy, now: clock.now(), activeKeyStore: store.keyStoreKind(of: j.active))
    }
}
