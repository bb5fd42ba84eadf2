import Foundation

/// What `keyroll status` and `/metrics` say about one identity. Pure: derived from the journal.
public struct IdentityStatus: Sendable, Codable, Equatable {
    public var store: String
    public var appId: String
    public var displayName: String?
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

    public static func make(store: String, identity: CredentialStore.Identity, journal j: Journal, policy: RollPolicy, now: Date) -> IdentityStatus {
        let active = j.activeCredential
        let cliff = RollPolicy.cliff(of: j)
        let ttc = cliff.map { $0.timeIntervalSince(now) }
        let next = j.roll != nil ? now : (j.nextRollAt ?? active.map { policy.rollDate(for: $0, random: 0.5) } ?? now)
        return IdentityStatus(store: store, appId: identity.appId, displayName: identity.displayName, activeThumbprint: j.active,
                              activeOrigin: active?.origin ?? .keyroll, activeNotAfter: active?.notAfter ?? .distantPast, nextRoll: next,
                              cliff: cliff, timeToCliff: ttc, alarm: policy.alarm(timeToCliff: ttc), rollPhase: j.roll?.phase,
                              heldCredentials: j.credentials.count, rolls: j.history.filter { $0.outcome == "rolled" }.count,
                              lastOutcome: j.history.last?.outcome)
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
        return IdentityStatus.make(store: path, identity: try store.identity(), journal: try store.journal(), policy: policy, now: now)
    }
}

extension Roller {
    public func identityStatus() -> IdentityStatus {
        IdentityStatus.make(store: store.path, identity: identity, journal: journal, policy: policy, now: clock.now())
    }
}
