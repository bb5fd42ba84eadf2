import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// What one registration check found and did.
public struct WatchReport: Sendable, Equatable {
    /// The token endpoint (or Graph) showed the active key registered.
    public var activeRegistered = false
    /// The active key was registered again (a journaled repair).
    public var repaired = false
    /// Keys this agent had removed that came back and were removed again.
    public var removedAgain: [String] = []
    /// Retained keys whose window passed and that were destroyed.
    public var released: [String] = []
    public init() {}
}

/// Recoverable by construction (docs/replicas.md): a privileged whole-list PATCH built on an older
/// read can drop the active key and bring back a key this agent removed, at any time — no settle
/// can fence it. So between rolls the agent keeps checking, on evidence:
/// - the active key still signs in (a fresh token); if the token endpoint refuses it as unknown
///   (confirmed, and Graph does not list it where the app may read itself), it is registered again
///   with a proof by a held key Entra still accepts — usually the retained old key the stale
///   write brought back — proven, settled, and then the brought-back key is removed again;
/// - a key it removed (tombstoned) that Graph lists again is removed again;
/// - a retained key is destroyed only once its window has passed *and* this check has just seen
///   the active key registered.
extension Roller {
    /// Between rolls, Graph is read for tombstones at most this often (reads spend the tenant's
    /// `$select=keyCredentials` budget); during a retention window, at every check.
    static let tombstoneReadInterval: TimeInterval = 6 * 3600
    /// How many registrations one repair sends before it gives up until the next check.
    static let maximumRepairAttempts = 3

    /// Checks that the active key is registered and that no removed key came back; repairs both.
    /// Throws when it cannot tell (Entra unreachable, throttled): nothing is decided then.
    @discardableResult
    public func watchRegistration() async throws -> WatchReport {
        var report = WatchReport()
        if journal.repair != nil {
            try await runRepair()
            report.repaired = true
        }
        guard journal.roll == nil else { return report }  // a roll checks its own keys at every step
        let pruned = journal.pruningTombstones(now: clock.now())
        if pruned != journal { try commit(pruned, phase: nil, event: nil) }
        let j = journal
        let active = try credential(j.active)
        metrics.increment("keyroll_registration_checks_total", ["app_id": identity.appId])

        // 1. The token endpoint is the judge of whether the active key works.
        var refused = false
        do { try await checkSignIn() } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
            refused = true
        }
        // 2. Graph (when the app may read itself), when there is something to look for.
        let now = clock.now()
        let tombstoneReadDue = !j.tombstones.isEmpty && now.timeIntervalSince(lock.withLock { lastTombstoneRead } ?? .distantPast) >= Self.tombstoneReadInterval
        var listed: [KeyCredential]?
        if refused || !j.retained.isEmpty || tombstoneReadDue {
            let readers = [active] + j.retained.compactMap { try? credential($0.thumbprint) }
            for reader in readers {
                if let keys = try? await readKeys(graphBase.authenticated(with: .certificate(reader))) {
                    listed = keys
                    lock.withLock { lastTombstoneRead = now }
                    break
                }
            }
        }
        // Where Graph can be read, its list decides whether the active key is registered; otherwise
        // the token endpoint's refusal, confirmed a little later.
        var dropped = false
        if let listed {
            dropped = !listed.contains { $0.matches(thumbprint: j.active) }
        } else if refused {
            try await sleeper.sleep(seconds: Self.dropConfirmationSpacing)
            dropped = !(try await isStillRegistered(active, readingWith: nil))
        }
        if dropped {
            try await repairDroppedActive(reason: "the active key is no longer registered in Entra (a stale privileged write?)", preferring: nil)
            report.repaired = true
            return report
        }
        if refused {
            // listed, yet refused: propagation for a while; an alarm when it lasts
            let times = lock.withLock { () -> Int in refusedWhileListed += 1; return refusedWhileListed }
            if times >= 3 {
                setActiveRegistered(false)
                emit(.alarm, "Graph lists the active key \(j.active) but the token endpoint has refused it at \(times) checks in a row; the application cannot sign in with it")
            }
            return report
        }
        lock.withLock { refusedWhileListed = 0 }
        report.activeRegistered = true
        setActiveRegistered(true)

        // 3. Keys this agent removed: back (listed, or a retained key gets a token), gone (not listed,
        // or refused as unknown), or unknown (an error: nothing is decided on it).
        var back: Set<String> = [], gone: Set<String> = []
        if let listed {
            let mine = Set(j.tombstones.map(\.thumbprint) + j.retained.map(\.thumbprint))
            back = Set(mine.filter { t in listed.contains { $0.matches(thumbprint: t) } })
            gone = mine.subtracting(back)
        } else {
            for r in j.retained {
                guard let c = try? credential(r.thumbprint) else { continue }
                do {
                    _ = try await tokens.probe(credential: .certificate(c))
                    back.insert(r.thumbprint)
                } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
                    gone.insert(r.thumbprint)
                } catch {}
            }
        }
        // Without self-read, a key that still signs in after its known keyIds were removed again is
        // registered under a keyId this agent never learned (a lost addKey answer's retry): it
        // cannot be removed from here. Say so once, and let its window end like a gone key's.
        let stillBack = lock.withLock { () -> Set<String> in
            let again = listed == nil ? back.intersection(backLastCheck) : []
            backLastCheck = back
            return again
        }
        for t in stillBack.sorted() where lock.withLock({ unremovable.insert(t).inserted }) {
            metrics.increment("keyroll_unremovable_keys_total", ["app_id": identity.appId])
            emit(.alarm, "key \(t) still signs in after this agent removed it: it is registered a second time under a keyId the agent cannot see without reading its application (a lost addKey answer). It holds no lockout risk; remove it with: az ad app credential list --id \(identity.appId), then az ad app credential delete --id \(identity.appId) --key-id <its keyId>")
        }
        gone.formUnion(lock.withLock { unremovable })
        for t in back.subtracting(stillBack).sorted() {
            // intent first: a new retention window, so a crash after the removal keeps the key
            try commit(journal.removedAgain(t, now: clock.now()), phase: nil, event: nil)
            if try await removeAgain(t, using: active, listed: listed) { report.removedAgain.append(t) }
        }

        // 4. A retained key goes once its window has passed and two checks in a row (minutes
        // apart) have seen it gone and the active key registered: a stale write landing just before
        // the first would have dropped the active key by the second.
        let candidates = lock.withLock { releaseCandidates }
        var next: Set<String> = []
        for r in journal.retained where gone.contains(r.thumbprint) {
            // the window on both clocks: a wall-clock step forward cannot end it early (WindowElapsed)
            guard let since = r.retainedSince, windowElapsed(wallSince: since, bootSince: r.retainedAtBootSeconds, bootID: r.retainedAtBootID) >= policy.retainedKeyWindow else { continue }
            guard candidates.contains(r.thumbprint) else { next.insert(r.thumbprint); continue }
            try commit(try journal.released(r.thumbprint), phase: nil, event: nil)
            destroyGivenUp(r.thumbprint, "retained key \(r.thumbprint) destroyed: its window passed and two checks saw the active key registered", event: .released)
            report.released.append(r.thumbprint)
        }
        lock.withLock { releaseCandidates = next }
        refreshMetrics()
        return report
    }

    /// The active key is not registered: find a held key Entra accepts (preferring `preferring`),
    /// journal the repair, and run it.
    func repairDroppedActive(reason: String, preferring: String?) async throws {
        guard let prover = await findProver(preferring: preferring) else {
            setActiveRegistered(false)
            metrics.increment("keyroll_repairs_total", ["app_id": identity.appId, "kind": "no_prover"])
            let message = "the active key \(journal.active) is not registered in Entra and no key this agent holds is accepted to prove its re-registration: locked out. Re-bootstrap: keyroll rebootstrap --app \(identity.appId)\(identity.replica.map { " --replica \($0.rawValue)" } ?? "") --force, then keyroll import the new bundle"
            emit(.alarm, message)
            throw Journal.TransitionError(description: message)
        }
        metrics.increment("keyroll_repairs_total", ["app_id": identity.appId, "kind": "active_dropped"])
        try commit(try journal.repairing(prover: prover, reason: reason, now: clock.now()), phase: nil,
                   event: (.repairing, "\(reason); registering \(journal.active) again with a proof by \(prover)"))
        try await runRepair()
    }

    /// A held key other than the active one, still valid, that the token endpoint accepts now (so
    /// Graph will accept its proof).
    func findProver(preferring: String?) async -> String? {
        let j = journal
        let now = clock.now()
        let candidates = j.credentials.filter { $0.thumbprint != j.active && $0.notAfter > now && $0.notBefore <= now }
            .sorted { a, b in a.thumbprint == preferring || (b.thumbprint != preferring && a.notAfter > b.notAfter) }
        for c in candidates {
            guard let key = try? credential(c.thumbprint) else { continue }
            if (try? await tokens.probe(credential: .certificate(key))) != nil { return c.thumbprint }
        }
        return nil
    }

    /// Runs the journaled repair to its end: addKey(active) with a proof by the prover (found
    /// registered already on a replay where the app may read itself), prove it at the token
    /// endpoint, settle, check again, then remove the prover again if it is a key this agent had
    /// removed (the stale write brought it back).
    func runRepair() async throws {
        while let rep = journal.repair {
            let key = try credential(rep.thumbprint)
            switch rep.phase {
            case .readding:
                if (rep.attempts ?? 0) >= Self.maximumRepairAttempts {
                    try commit(try journal.repairEnded(now: clock.now(), outcome: "\(rep.attempts ?? 0) registrations were not accepted"), phase: nil,
                               event: (.alarm, "the active key was registered again \(rep.attempts ?? 0) times and is still not accepted; the next registration check starts over"))
                    throw Journal.TransitionError(description: "repair of \(rep.thumbprint) gave up after \(rep.attempts ?? 0) registrations")
                }
                guard let prover = try? credential(rep.prover) else {
                    try commit(try journal.repairEnded(now: clock.now(), outcome: "the prover's key file is gone"), phase: nil, event: nil)
                    continue
                }
                let byProver = graphBase.authenticated(with: .certificate(prover))
                let found = (try? await byProver.findKey(objectID: identity.applicationObjectId, certificate: key.certificate)) ?? nil
                let keyId: String
                if let found {
                    keyId = found.keyId
                } else {
                    do {
                        keyId = try await counted {
                            try await byProver.addKey(objectID: identity.applicationObjectId, certificate: key.certificate,
                                                      displayName: CredentialName.displayName(cn: certificateSubject, inToken: key.signer.keyStoreKind == .pkcs11), prover: prover)
                        }.keyId
                    } catch let e as EntraError where e.kind == .credentialInvalid || e.kind == .credentialNotYetActive || Self.refusesForGood(e) {
                        // The prover is not accepted any more: end this repair; the next check starts
                        // one with whatever key Entra accepts then (or says the app is locked out).
                        try commit(try journal.repairEnded(now: clock.now(), outcome: "addKey refused (\(e.graphCode ?? e.kind.rawValue))"), phase: nil,
                                   event: (.alarm, Self.refusesForGood(e) && e.kind != .credentialInvalid ? "re-registering the active key was refused: \(Self.fix(for: e))"
                                               : "the key proving the repair was refused; the next registration check tries again"))
                        throw e
                    }
                }
                try commit(try journal.repairAdded(keyId: keyId, now: clock.now()), phase: nil, event: (.added, "re-registered \(rep.thumbprint) as \(keyId)"))
            case .readded:
                let started = monotonic.monotonicSeconds()
                var attempt = 0
                var proven = false
                while !proven {
                    do {
                        _ = try await counted { try await tokens.probe(credential: .certificate(key)) }
                        proven = true
                    } catch let e as EntraError where e.isRetryable || e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
                        attempt += 1
                        guard monotonic.monotonicSeconds() - started < policy.verifyTimeout else { break }
                        if e.kind == .credentialInvalid, attempt > 3 { break }
                        try await sleeper.sleep(seconds: Self.propagationBackoff.delay(attempt: attempt))
                    }
                }
                if proven {
                    try commit(try journal.repairProven(now: clock.now()), phase: nil, event: (.verified, "the re-registered key signs in"))
                } else {
                    try commit(try journal.repairAgain(now: clock.now()), phase: nil, event: (.alarm, "the re-registered key was not accepted in time; registering it again"))
                }
            case .proven:
                try await settle("after registering the active key again")
                guard try await isStillRegistered(key, readingWith: try? credential(rep.prover)) else {
                    try commit(try journal.repairAgain(now: clock.now()), phase: nil, event: (.alarm, "the re-registered key vanished again during the settle"))
                    continue
                }
                let j = journal
                let removedByUs = j.credential(rep.prover)?.isRetained == true || j.tombstones.contains { $0.thumbprint == rep.prover }
                if removedByUs {
                    // intent first: its retention window starts again before the removal is sent
                    try commit(journal.removedAgain(rep.prover, now: clock.now()), phase: nil, event: nil)
                    _ = try await removeAgain(rep.prover, using: key, listed: nil)
                }
                try commit(try journal.repaired(now: clock.now(), proverRemoved: removedByUs), phase: nil,
                           event: (.repaired, "the active key is registered again and proven\(removedByUs ? "; the brought-back key \(rep.prover) was removed again" : "")"))
                setActiveRegistered(true)
            }
        }
    }

    /// Removes again a key this agent had removed and that came back, with a proof by `active`.
    /// Where the app may read itself, exactly the keyIds Graph lists for it, each checked by the
    /// removal guard; otherwise the keyIds it had when removed (a stale write restores them).
    /// Returns whether anything was sent.
    func removeAgain(_ thumbprint: String, using active: SigningCredential, listed: [KeyCredential]?) async throws -> Bool {
        let graph = graphBase.authenticated(with: .certificate(active))
        let j = journal
        var keyIds = Set((j.tombstones.first { $0.thumbprint == thumbprint }?.keyIds ?? []) + [j.credential(thumbprint)?.keyId].compactMap { $0 })
        var keys = listed
        if keys == nil { keys = try? await readKeys(graph) }
        if let keys {
            keyIds = Set(keys.filter { $0.matches(thumbprint: thumbprint) }.map(\.keyId))
            for k in keyIds { try RemovalGuard.check(keyId: k, in: keys, journal: j, replica: identity.replica) }
        }
        guard !keyIds.isEmpty else { return false }
        for k in keyIds.sorted() {
            try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: k, prover: active) }
        }
        metrics.increment("keyroll_removed_again_total", ["app_id": identity.appId])
        emit(.removedAgain, "a key this agent had removed (\(thumbprint)) was back in Entra; removed it again (\(keyIds.sorted().joined(separator: ", ")))")
        return true
    }

    /// Records what the last check showed about the active key, for status, `/healthz` and metrics.
    func setActiveRegistered(_ registered: Bool) {
        lock.withLock { activeRefused = !registered }
        metrics.set("keyroll_active_key_registered", ["app_id": identity.appId], registered ? 1 : 0)
    }
}
