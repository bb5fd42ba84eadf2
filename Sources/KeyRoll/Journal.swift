import Foundation

/// Where a certificate the agent holds came from. The agent only ever removes keys it created or
/// the bootstrap key it was handed; anything else on the app is left alone.
public enum CredentialOrigin: String, Codable, Sendable {
    case bootstrap
    case keyroll
}

/// A certificate (and, in the store, its private key) the agent holds.
public struct CredentialRecord: Codable, Sendable, Equatable {
    /// Upper-case hex SHA-1 of the certificate DER: the store's file name and Graph's thumbprint.
    public var thumbprint: String
    public var notBefore: Date
    public var notAfter: Date
    /// Graph's keyId once known (from addKey's answer, the bundle, or a Graph read).
    public var keyId: String?
    public var origin: CredentialOrigin
    /// Last time a token was obtained with it.
    public var lastProvenAt: Date?

    public init(thumbprint: String, notBefore: Date, notAfter: Date, keyId: String?, origin: CredentialOrigin, lastProvenAt: Date? = nil) {
        self.thumbprint = thumbprint
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.keyId = keyId
        self.origin = origin
        self.lastProvenAt = lastProvenAt
    }

    public var lifetime: TimeInterval { notAfter.timeIntervalSince(notBefore) }
}

/// The durable steps of a roll (docs/design.md, "The roll"). A freshly generated key is in memory
/// only; every phase here is recorded before the side effect that follows it, so a restart resumes
/// at the right step. The rule, everywhere: record the intent, do the effect, record the outcome;
/// destroy a key only after the journal no longer lists it.
public enum RollPhase: String, Codable, Sendable, CaseIterable, Comparable {
    /// New key + certificate written to the store (fsynced); addKey not yet confirmed.
    case stored
    /// addKey answered 200 (keyId recorded).
    case added
    /// Graph shows the new key on the application.
    case visible
    /// The token endpoint accepted the new key K consecutive times.
    case verified
    /// The published credential is the new one; the reload hook runs (and is recorded as run) in
    /// this phase, before the old key is removed.
    case switched
    /// The old key was removed from Graph. (Journals of earlier versions stopped here before the
    /// old key's file was destroyed; a roll at this phase just finishes.)
    case retired
    /// The roll is being undone: the new key is removed from Graph (if added) and deleted locally.
    case abandoning

    public static func < (a: RollPhase, b: RollPhase) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

public struct RollInProgress: Codable, Sendable, Equatable {
    public var phase: RollPhase
    public var newThumbprint: String
    public var oldThumbprint: String
    public var startedAt: Date
    public var reason: String
    /// When verification started polling (bounds the wait for propagation).
    public var verifyStartedAt: Date?
    public var abandonReason: String?
    /// When the roll entered its current phase (status shows how long a roll has been stuck).
    public var phaseSince: Date?
    /// When the reload hook last succeeded for this roll's switch (nil: not yet, or no hook).
    public var reloadedAt: Date?
    /// When addKey registered the new key (the replica settle counts from it).
    public var addedAt: Date?

    /// Whether the roll still needs `thumbprint`'s private key on disk. The new key is given up
    /// once the roll is abandoning; the old key once it is switched away from (only its
    /// thumbprint and keyId are needed to remove it from Graph).
    public func needsKey(_ thumbprint: String) -> Bool {
        if thumbprint == newThumbprint { return phase != .abandoning }
        if thumbprint == oldThumbprint { return phase < .switched || phase == .abandoning }
        return true
    }

    /// Whether `thumbprint` is on its way out of Entra, so it must not count toward the cliff.
    public func isLeaving(_ thumbprint: String) -> Bool {
        (phase == .abandoning && thumbprint == newThumbprint) || (phase == .retired && thumbprint == oldThumbprint)
    }
}

/// One finished roll, kept for `status` and the demo's summary.
public struct RollRecord: Codable, Sendable, Equatable {
    public var added: String
    public var removed: String?
    public var startedAt: Date
    public var finishedAt: Date
    public var outcome: String
}

/// The agent's durable state for one identity. Every change is a pure transition returning a new
/// journal; the store writes it atomically before the next side effect.
public struct Journal: Codable, Sendable, Equatable {
    public static let currentVersion = 1
    public var version: Int = Journal.currentVersion
    /// Thumbprint of the credential published to the application.
    public var active: String
    public var credentials: [CredentialRecord]
    public var roll: RollInProgress?
    /// Next planned roll (with its jitter), so restarts keep the same plan.
    public var nextRollAt: Date?
    public var history: [RollRecord] = []

    public init(active: CredentialRecord) {
        self.active = active.thumbprint
        self.credentials = [active]
        self.roll = nil
        self.nextRollAt = nil
    }

    public func credential(_ thumbprint: String) -> CredentialRecord? { credentials.first { $0.thumbprint == thumbprint } }
    public var activeCredential: CredentialRecord? { credential(active) }

    /// Errors of transitions applied in the wrong state: a bug or a tampered journal, never normal.
    public struct TransitionError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    // MARK: transitions

    /// idle → stored: the new key is in the store.
    public func beginning(new: CredentialRecord, now: Date, reason: String) throws -> Journal {
        guard roll == nil else { throw TransitionError(description: "a roll is already in progress (\(roll!.phase.rawValue))") }
        guard credential(new.thumbprint) == nil else { throw TransitionError(description: "credential \(new.thumbprint) already held") }
        var j = self
        j.credentials.append(new)
        j.roll = RollInProgress(phase: .stored, newThumbprint: new.thumbprint, oldThumbprint: active, startedAt: now, reason: reason, phaseSince: now)
        return j
    }

    /// stored → added, recording Graph's keyId for the new key.
    public func added(keyId: String, now: Date) throws -> Journal {
        var j = try expecting(.stored).entering(.added, now)
        j.setKeyId(keyId, for: j.roll!.newThumbprint)
        j.roll!.addedAt = now
        return j
    }

    public func visible(now: Date) throws -> Journal {
        var j = try expecting(.added).entering(.visible, now)
        j.roll!.verifyStartedAt = now
        return j
    }

    public func verified(now: Date) throws -> Journal {
        var j = try expecting(.visible).entering(.verified, now)
        j.markProven(j.roll!.newThumbprint, at: now)
        return j
    }

    /// verified → switched: the new credential becomes the active one.
    public func switched(now: Date) throws -> Journal {
        var j = try expecting(.verified).entering(.switched, now)
        j.active = j.roll!.newThumbprint
        return j
    }

    /// switched: the application was told (the reload hook succeeded); the old key may go.
    public func reloaded(now: Date) throws -> Journal {
        var j = try expecting(.switched)
        j.roll!.reloadedAt = now
        return j
    }

    /// switched (or retired, for journals of earlier versions) → idle: the old key is gone from
    /// Graph, so its record is dropped. Its file is destroyed after this is durable.
    public func finished(now: Date) throws -> Journal {
        guard let r = roll, r.phase == .switched || r.phase == .retired else {
            throw TransitionError(description: roll.map { "roll is at \($0.phase.rawValue), expected switched" } ?? "no roll in progress (expected switched)")
        }
        var j = self
        j.credentials.removeAll { $0.thumbprint == r.oldThumbprint }
        j.history.append(RollRecord(added: r.newThumbprint, removed: r.oldThumbprint, startedAt: r.startedAt, finishedAt: now, outcome: "rolled"))
        if j.history.count > 50 { j.history.removeFirst(j.history.count - 50) }
        j.roll = nil
        j.nextRollAt = nil
        return j
    }

    /// Any phase before `switched` → abandoning (e.g. the new key never verified in time).
    public func abandoning(reason: String, now: Date) throws -> Journal {
        guard var r = roll, r.phase < .switched || r.phase == .abandoning else {
            throw TransitionError(description: "cannot abandon a roll past the switch")
        }
        var j = self
        if r.phase != .abandoning { r.phaseSince = now }
        r.phase = .abandoning
        r.abandonReason = reason
        j.roll = r
        return j
    }

    /// abandoning → idle: the new key is gone from Graph, so its record is dropped. Its file is
    /// destroyed after this is durable.
    public func abandoned(now: Date) throws -> Journal {
        var j = try expecting(.abandoning)
        let r = j.roll!
        j.credentials.removeAll { $0.thumbprint == r.newThumbprint }
        j.history.append(RollRecord(added: r.newThumbprint, removed: nil, startedAt: r.startedAt, finishedAt: now,
                                    outcome: "abandoned: \(r.abandonReason ?? "unknown")"))
        j.roll = nil
        j.nextRollAt = nil
        return j
    }

    public func proven(_ thumbprint: String, at date: Date) -> Journal {
        var j = self
        j.markProven(thumbprint, at: date)
        return j
    }

    public func withKeyId(_ keyId: String, for thumbprint: String) -> Journal {
        var j = self
        j.setKeyId(keyId, for: thumbprint)
        return j
    }

    public func planned(_ date: Date?) -> Journal {
        var j = self
        j.nextRollAt = date
        return j
    }

    /// The thumbprints whose private keys must be on disk for this journal to be carried on.
    public var requiredKeys: Set<String> {
        Set(credentials.map(\.thumbprint).filter { $0 == active || (roll?.needsKey($0) ?? true) })
    }

    private func entering(_ phase: RollPhase, _ now: Date) -> Journal {
        var j = self
        j.roll!.phase = phase
        j.roll!.phaseSince = now
        return j
    }

    private func expecting(_ phase: RollPhase) throws -> Journal {
        guard let r = roll else { throw TransitionError(description: "no roll in progress (expected \(phase.rawValue))") }
        guard r.phase == phase else { throw TransitionError(description: "roll is at \(r.phase.rawValue), expected \(phase.rawValue)") }
        return self
    }

    private mutating func setKeyId(_ keyId: String, for thumbprint: String) {
        if let i = credentials.firstIndex(where: { $0.thumbprint == thumbprint }) { credentials[i].keyId = keyId }
    }

    private mutating func markProven(_ thumbprint: String, at date: Date) {
        if let i = credentials.firstIndex(where: { $0.thumbprint == thumbprint }) { credentials[i].lastProvenAt = date }
    }
}
