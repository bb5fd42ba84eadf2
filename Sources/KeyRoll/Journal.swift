import Foundation
import KeyRollPrimitives

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
    /// Set when a roll removed this key from Entra but kept its private key: a *retained*
    /// credential. It is never published and never counts toward the cliff; it exists to prove the
    /// re-registration of the active key if a stale privileged PATCH drops that key and brings this
    /// one back (see ``Journal/repairing(prover:reason:now:)``). Released after the retention window.
    public var retainedSince: Date?
    /// The machine's boot-time clock when the retention began (``MonotonicClock/secondsSinceBoot()``),
    /// stamped by the agent as it commits the retention: the window is measured on it as well as on
    /// the wall clock, so a wall-clock step forward cannot end it (``WindowElapsed``). Nil until stamped
    /// (and in journals of earlier versions).
    public var retainedAtBootSeconds: Double?
    /// The boot that reading is of (``MonotonicClock/bootID()``).
    public var retainedAtBootID: String?

    public init(thumbprint: String, notBefore: Date, notAfter: Date, keyId: String?, origin: CredentialOrigin, lastProvenAt: Date? = nil) {
        self.thumbprint = thumbprint
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.keyId = keyId
        self.origin = origin
        self.lastProvenAt = lastProvenAt
    }

    public var lifetime: TimeInterval { notAfter.timeIntervalSince(notBefore) }
    /// Whether this is a removed key kept only to undo a stale write.
    public var isRetained: Bool { retainedSince != nil }
}

/// A key this agent removed from Entra: kept until the certificate expires, so that a stale
/// privileged PATCH that brings it back is noticed and the key removed again.
public struct Tombstone: Codable, Sendable, Equatable {
    public var thumbprint: String
    /// The keyIds it was registered under when removed (a stale PATCH restores them as they were).
    public var keyIds: [String]
    public var notAfter: Date
    public var removedAt: Date
}

/// The agent re-registering its active key after Entra stopped listing it (a stale privileged
/// PATCH dropped it): a journaled step of its own, so a crash anywhere in it resumes at the right
/// point, and the re-registered key is proven and settled again like a new key.
public struct Repair: Codable, Sendable, Equatable {
    public enum Phase: String, Codable, Sendable, CaseIterable {
        /// addKey(active) with a proof by `prover` is about to be sent (or its answer was lost).
        case readding
        /// addKey answered (keyId recorded); the token endpoint must accept the key.
        case readded
        /// The token endpoint accepted it; after the settle and a fresh check the repair ends
        /// (removing `prover` again if it is a retained key that the stale write brought back).
        case proven
    }
    public var phase: Phase
    /// The active key being registered again.
    public var thumbprint: String
    /// A held key Entra lists now, whose signature proves the addKey.
    public var prover: String
    public var reason: String
    public var startedAt: Date
    public var phaseSince: Date
    /// How many times the key was sent to addKey in this repair (bounded: see ``Roller``).
    public var attempts: Int?
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
    /// When addKey registered the new key.
    public var addedAt: Date?
    /// How many times the new key was registered again after Entra dropped it before the switch.
    public var reregistrations: Int?
    /// When the reload hook first failed for this roll's switch; its grace counts from here.
    public var reloadFailingSince: Date?
    /// The machine's boot-time clock at that first failure, stamped by the agent as it commits it.
    public var reloadFailingAtBootSeconds: Double?
    /// The boot that reading is of.
    public var reloadFailingAtBootID: String?

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
    /// Keys this agent removed, until they expire (see ``Tombstone``).
    public var tombstones: [Tombstone] = []
    /// A re-registration of the active key in progress.
    public var repair: Repair?

    enum CodingKeys: String, CodingKey { case version, active, credentials, roll, nextRollAt, history, tombstones, repair }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        version = try c.decode(Int.self, forKey: .version)
        active = try c.decode(String.self, forKey: .active)
        credentials = try c.decode([CredentialRecord].self, forKey: .credentials)
        roll = try c.decodeIfPresent(RollInProgress.self, forKey: .roll)
        nextRollAt = try c.decodeIfPresent(Date.self, forKey: .nextRollAt)
        history = try c.decodeIfPresent([RollRecord].self, forKey: .history) ?? []
        // journals of earlier versions have neither
        tombstones = try c.decodeIfPresent([Tombstone].self, forKey: .tombstones) ?? []
        repair = try c.decodeIfPresent(Repair.self, forKey: .repair)
    }

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

    /// switched → switched: the reload hook failed. The first failure is recorded: the hook's grace
    /// counts from it, not from the switch, so a pause or a restart between the switch and the first
    /// attempt cannot make one failure look like a day of them. Later failures change nothing.
    public func reloadFailed(now: Date) throws -> Journal {
        var j = try expecting(.switched)
        if j.roll!.reloadFailingSince == nil {
            j.roll!.reloadFailingSince = now
            j.roll!.reloadFailingAtBootSeconds = nil
            j.roll!.reloadFailingAtBootID = nil
        }
        return j
    }

    /// This journal with every window whose boot-time reading is of an earlier boot carried over to
    /// this one: its new reading is `seconds` minus the wall-clock time the window has run so far.
    /// The wall clock is trusted once, at the first start after a reboot; from then on a step is
    /// caught again (``WindowElapsed``). Windows without a reading are left to ``stampingWindows``.
    public func rebasingWindows(bootSeconds seconds: Double, bootID boot: String?, wallNow: Date) -> Journal {
        var j = self
        for i in j.credentials.indices {
            guard let since = j.credentials[i].retainedSince, let stamp = j.credentials[i].retainedAtBootSeconds,
                  WindowElapsed.isAnotherBoot(stampID: j.credentials[i].retainedAtBootID, stampSeconds: stamp, nowID: boot, nowSeconds: seconds) else { continue }
            j.credentials[i].retainedAtBootSeconds = seconds - max(0, wallNow.timeIntervalSince(since))
            j.credentials[i].retainedAtBootID = boot
        }
        if let r = j.roll, let since = r.reloadFailingSince, let stamp = r.reloadFailingAtBootSeconds,
           WindowElapsed.isAnotherBoot(stampID: r.reloadFailingAtBootID, stampSeconds: stamp, nowID: boot, nowSeconds: seconds) {
            j.roll!.reloadFailingAtBootSeconds = seconds - max(0, wallNow.timeIntervalSince(since))
            j.roll!.reloadFailingAtBootID = boot
        }
        return j
    }

    /// This journal with every window that has begun but has no boot-time reading given `seconds`
    /// of boot `boot` (``MonotonicClock``): called on each commit, right after the transition that
    /// began the window, so the reading marks its beginning.
    public func stampingWindows(bootSeconds seconds: Double, bootID boot: String?) -> Journal {
        var j = self
        for i in j.credentials.indices where j.credentials[i].retainedSince != nil && j.credentials[i].retainedAtBootSeconds == nil {
            j.credentials[i].retainedAtBootSeconds = seconds
            j.credentials[i].retainedAtBootID = boot
        }
        if j.roll?.reloadFailingSince != nil, j.roll?.reloadFailingAtBootSeconds == nil {
            j.roll!.reloadFailingAtBootSeconds = seconds
            j.roll!.reloadFailingAtBootID = boot
        }
        return j
    }

    /// switched (or retired, for journals of earlier versions) → idle: the old key is gone from
    /// Graph (under `removedKeyIds`). Its record stays, *retained* (``CredentialRecord/retainedSince``),
    /// with its private key, so a stale write that drops the new key can be undone; a tombstone
    /// remembers it until it expires.
    /// `retain` false (the old key's file is already gone) drops the record, as before retention.
    public func finished(now: Date, removedKeyIds: [String] = [], retain: Bool = true) throws -> Journal {
        guard let r = roll, r.phase == .switched || r.phase == .retired else {
            throw TransitionError(description: roll.map { "roll is at \($0.phase.rawValue), expected switched" } ?? "no roll in progress (expected switched)")
        }
        var j = self
        if let i = j.credentials.firstIndex(where: { $0.thumbprint == r.oldThumbprint }) {
            let old = j.credentials[i]
            if retain {
                j.credentials[i].retainedSince = now
                j.credentials[i].retainedAtBootSeconds = nil  // stamped as it is committed
                j.credentials[i].retainedAtBootID = nil
            } else {
                j.credentials.remove(at: i)
            }
            j.tombstones.removeAll { $0.thumbprint == old.thumbprint }
            j.tombstones.append(Tombstone(thumbprint: old.thumbprint, keyIds: removedKeyIds.isEmpty ? old.keyId.map { [$0] } ?? [] : removedKeyIds,
                                          notAfter: old.notAfter, removedAt: now))
        }
        j.history.append(RollRecord(added: r.newThumbprint, removed: r.oldThumbprint, startedAt: r.startedAt, finishedAt: now, outcome: "rolled"))
        if j.history.count > 50 { j.history.removeFirst(j.history.count - 50) }
        j.roll = nil
        j.nextRollAt = nil
        return j
    }

    /// added, visible or verified → stored: Entra no longer lists the new key (a privileged PATCH
    /// built on an older list dropped it) before it was published. The old key is still active
    /// and registered; the roll registers the new key again, proves it and settles it again.
    public func dropped(now: Date) throws -> Journal {
        guard var r = roll, [.added, .visible, .verified].contains(r.phase) else {
            throw TransitionError(description: roll.map { "roll is at \($0.phase.rawValue); only a roll between added and verified goes back to stored" } ?? "no roll in progress")
        }
        var j = self
        r.phase = .stored
        r.phaseSince = now
        r.addedAt = nil
        r.verifyStartedAt = nil
        r.reregistrations = (r.reregistrations ?? 0) + 1
        j.roll = r
        if let i = j.credentials.firstIndex(where: { $0.thumbprint == r.newThumbprint }) { j.credentials[i].keyId = nil }
        return j
    }

    /// A retained key leaves the journal (its window has passed and the active key is registered);
    /// its file is destroyed after this is durable. Its tombstone stays until it expires.
    public func released(_ thumbprint: String) throws -> Journal {
        guard let c = credential(thumbprint), c.isRetained, thumbprint != active, roll?.newThumbprint != thumbprint, roll?.oldThumbprint != thumbprint,
              repair?.prover != thumbprint else {
            throw TransitionError(description: "\(thumbprint) is not a retained key that nothing needs")
        }
        var j = self
        j.credentials.removeAll { $0.thumbprint == thumbprint }
        return j
    }

    /// Tombstones of keys that have expired (they cannot sign anything) are forgotten.
    public func pruningTombstones(now: Date) -> Journal {
        var j = self
        j.tombstones.removeAll { $0.notAfter < now }
        return j
    }

    /// A retained or tombstoned key that came back was removed again: it starts a new retention
    /// window (another stale write may still be on its way).
    public func removedAgain(_ thumbprint: String, now: Date) -> Journal {
        var j = self
        if let i = j.credentials.firstIndex(where: { $0.thumbprint == thumbprint && $0.isRetained }) {
            j.credentials[i].retainedSince = now
            j.credentials[i].retainedAtBootSeconds = nil  // stamped as it is committed
            j.credentials[i].retainedAtBootID = nil
        }
        if let i = j.tombstones.firstIndex(where: { $0.thumbprint == thumbprint }) { j.tombstones[i].removedAt = now }
        return j
    }

    // MARK: repair of a dropped active key

    /// idle or switched → repairing: the active key is not registered; `prover`, a held key Entra
    /// lists, will prove its addKey.
    public func repairing(prover: String, reason: String, now: Date) throws -> Journal {
        guard repair == nil else { throw TransitionError(description: "a repair is already in progress") }
        guard prover != active, credential(prover) != nil else { throw TransitionError(description: "the prover \(prover) is not a held key other than the active one") }
        var j = self
        j.repair = Repair(phase: .readding, thumbprint: active, prover: prover, reason: reason, startedAt: now, phaseSince: now)
        return j
    }

    public func repairAdded(keyId: String, now: Date) throws -> Journal {
        var j = try expectingRepair(.readding)
        j.repair!.attempts = (j.repair!.attempts ?? 0) + 1
        j.repair!.phase = .readded
        j.repair!.phaseSince = now
        j.setKeyId(keyId, for: j.repair!.thumbprint)
        return j
    }

    public func repairProven(now: Date) throws -> Journal {
        var j = try expectingRepair(.readded)
        j.repair!.phase = .proven
        j.repair!.phaseSince = now
        j.markProven(j.repair!.thumbprint, at: now)
        return j
    }

    /// readded or proven → readding: the re-registered key vanished again (or never became usable):
    /// add it once more.
    public func repairAgain(now: Date) throws -> Journal {
        guard var rep = repair, rep.phase != .readding else { throw TransitionError(description: "no repair past its addKey") }
        var j = self
        rep.phase = .readding
        rep.phaseSince = now
        j.repair = rep
        return j
    }

    /// proven → done. When the prover was a retained key that the stale write brought back, it was
    /// removed again (`proverRemoved`), which starts its retention window anew.
    public func repaired(now: Date, proverRemoved: Bool) throws -> Journal {
        var j = try expectingRepair(.proven)
        let rep = j.repair!
        if proverRemoved { j = j.removedAgain(rep.prover, now: now) }
        j.history.append(RollRecord(added: rep.thumbprint, removed: proverRemoved ? rep.prover : nil, startedAt: rep.startedAt, finishedAt: now,
                                    outcome: "repaired: \(rep.reason)"))
        if j.history.count > 50 { j.history.removeFirst(j.history.count - 50) }
        j.repair = nil
        return j
    }

    /// Any phase → done without a repair (its prover was refused, or its key file is gone): the
    /// next registration check decides again, on what Entra shows then.
    public func repairEnded(now: Date, outcome: String) throws -> Journal {
        guard let rep = repair else { throw TransitionError(description: "no repair in progress") }
        var j = self
        j.history.append(RollRecord(added: rep.thumbprint, removed: nil, startedAt: rep.startedAt, finishedAt: now, outcome: "repair ended: \(outcome)"))
        if j.history.count > 50 { j.history.removeFirst(j.history.count - 50) }
        j.repair = nil
        return j
    }

    private func expectingRepair(_ phase: Repair.Phase) throws -> Journal {
        guard let rep = repair else { throw TransitionError(description: "no repair in progress (expected \(phase.rawValue))") }
        guard rep.phase == phase else { throw TransitionError(description: "repair is at \(rep.phase.rawValue), expected \(phase.rawValue)") }
        return self
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
        Set(credentials.filter { !$0.isRetained || $0.thumbprint == repair?.prover }.map(\.thumbprint)
            .filter { $0 == active || (roll?.needsKey($0) ?? true) })
    }

    /// Retained keys (removed from Entra, kept to undo a stale write).
    public var retained: [CredentialRecord] { credentials.filter(\.isRetained) }

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
