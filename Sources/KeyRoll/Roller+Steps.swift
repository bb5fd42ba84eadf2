import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// The steps of a roll, one per phase of the journal's state machine: each records its intent,
/// does its effect, and records the outcome (docs/design.md, "Crash points").
extension Roller {
    /// stored → added. On replay, a key already registered (found by thumbprint) is not added twice;
    /// an ambiguous answer to addKey itself is settled the same way inside `GraphClient.addKey`.
    func stepAdd(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        let active = try credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(active))
        let resumed = lock.withLock { neverSent.remove(r.newThumbprint) == nil }
        if resumed, let existing = try await readKeys(graph)?.first(where: { $0.matches(new.certificate) }) {
            try commit(try journal.added(keyId: existing.keyId, now: clock.now()), phase: .added,
                       event: (.added, "already registered as \(existing.keyId) (replayed)"))
            return
        }
        let kc: KeyCredential
        do {
            kc = try await counted {
                try await graph.addKey(objectID: identity.applicationObjectId, certificate: new.certificate, displayName: CredentialName.displayName(cn: certificateSubject, inToken: new.signer.keyStoreKind == .pkcs11), prover: active)
            }
        } catch let e as EntraError where Self.refusesForGood(e) {
            // Retrying the same certificate cannot succeed: end the roll (the key was not added),
            // say why and what fixes it, and try a fresh roll later (``RollPolicy/retryAfterAbandoned``).
            let reason = "addKey refused (\(e.graphCode ?? e.kind.rawValue)): \(Self.fix(for: e))"
            metrics.increment("keyroll_add_key_refused_total", ["app_id": identity.appId, "code": e.graphCode ?? e.kind.rawValue])
            emit(.alarm, reason)
            try commit(try journal.abandoning(reason: reason, now: clock.now()), phase: .abandoning, event: (.abandoning, reason))
            return
        }
        try commit(try journal.added(keyId: kc.keyId, now: clock.now()), phase: .added, event: (.added, "addKey → keyId \(kc.keyId)"))
    }

    /// Graph's answers to addKey that no retry of the same request can change: the object is full,
    /// the certificate breaks a policy (lifetime, key size), or the proof was refused because the
    /// active key is no longer registered (the registration watch repairs that).
    static func refusesForGood(_ e: EntraError) -> Bool {
        [.sizeExceeded, .badRequest, .credentialInvalid].contains(e.kind) && e.operation == "addKey"
    }

    /// What an operator does about a permanent addKey refusal.
    static func fix(for e: EntraError) -> String {
        switch e.kind {
        case .sizeExceeded:
            return "the application object is full (Directory_ResourceSizeExceeded); remove expired or unused credentials (keyroll audit lists them) and the next roll goes through"
        case .credentialInvalid:
            return "Graph refused the proof signed by the active key, which is no longer registered; the registration check re-registers it with a retained key, or says to re-bootstrap"
        default:
            return "\(e.message.prefix(200)); if a tenant or app management policy limits certificate lifetimes, set tenantMaximumValidityDays in the roll policy"
        }
    }

    /// added → visible: Graph shows the key (when the app may read itself; else addKey's 200 stands).
    /// Visibility is advisory — the token endpoint is the judge — so once the verification window
    /// has passed, an error reading Graph no longer holds the roll here.
    func stepVisible(_ r: RollInProgress) async throws {
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
            try await sleeper.sleep(seconds: Self.propagationBackoff.delay(attempt: attempt))
        }
        try commit(try journal.visible(now: clock.now()), phase: .visible, event: (.visible, "Graph lists the new key"))
    }

    /// visible → verified after K consecutive token successes. Returns an abandon reason once the
    /// verification window (from `verifyStartedAt`, which is durable) has passed — whatever the
    /// error, so no error can hold a roll here forever.
    func stepVerify(_ r: RollInProgress) async throws -> String? {
        let new = try credential(r.newThumbprint)
        let started = r.verifyStartedAt ?? clock.now()
        let resumedAt = monotonic.monotonicSeconds()
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
                // The window ends by whichever clock says so first: the wall clock (which spans
                // restarts) or this process's monotonic clock (which a backward step cannot stretch).
                // Ending early is safe: an abandoned roll keeps the old key.
                let waited = max(clock.now().timeIntervalSince(started), monotonic.monotonicSeconds() - resumedAt)
                if waited >= policy.verifyTimeout {
                    return "the token endpoint did not accept the new key within \(Int(policy.verifyTimeout)) s (last: \(e.kind.rawValue))"
                }
                // Not retryable here: the agent retries the roll later; the window keeps running.
                guard e.kind == .credentialNotYetActive || e.isRetryable else { throw e }
                let delay = min(Self.propagationBackoff.delay(attempt: attempt), max(1, policy.verifyTimeout - waited))
                emit(e.kind == .credentialNotYetActive ? .notYetActive : .retry,
                     e.kind == .credentialNotYetActive ? "AADSTS700027 for the new key (propagating); retry in \(Int(delay)) s" : "\(e.kind.rawValue); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        try commit(try journal.verified(now: clock.now()), phase: .verified, event: (.verified, "\(policy.verifySuccesses) consecutive tokens with the new key"))
        return nil
    }

    /// verified → switched: settle, check that Entra still has the new key, publish it, record the
    /// switch. The settle comes before the switch, so an application never runs on a key that a
    /// racing privileged PATCH dropped: if the key is gone, the roll goes back to `stored` and
    /// registers it again (proof by the old key, still active), proves it and settles again.
    func stepSwitch(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        let old = try credential(r.oldThumbprint)
        try await settle("before the new key is published")
        guard try await isStillRegistered(new, readingWith: old) else {
            metrics.increment("keyroll_repairs_total", ["app_id": identity.appId, "kind": "dropped_before_switch"])
            emit(.alarm, "the new key \(r.newThumbprint) vanished from Entra during the settle (a privileged PATCH built on an older list?); registering it again with a proof by the old key")
            try commit(try journal.dropped(now: clock.now()), phase: .stored, event: (.reregistering, "back to stored: register the new key again"))
            return
        }
        try store.publish(new)
        try commit(try journal.switched(now: clock.now()), phase: .switched, event: (.switched, "current.pem now holds \(r.newThumbprint)"))
    }

    /// switched → idle: tell the application (the reload hook, recorded once it succeeded), remove
    /// the old key from Graph with a proof signed by the new key, and record it. The old key's
    /// private key is *retained* (kept, journaled) for `retainedKeyWindow`: if a stale privileged
    /// PATCH later drops the new key and brings the old one back, it proves the new key's
    /// re-registration. If the new key vanished before the removal, it is re-registered first (a
    /// journaled repair, proof by the old key), so the old key never goes while the new one is
    /// not registered.
    /// Returns false when it repaired the new key instead (the step runs again).
    func stepRetire(_ r: RollInProgress) async throws -> Bool {
        let j = journal
        guard let newRecord = j.credential(r.newThumbprint), newRecord.lastProvenAt != nil, j.active == r.newThumbprint else {
            throw Journal.TransitionError(description: "refusing to remove the old key: the new key is not proven and active")
        }
        guard r.oldThumbprint != r.newThumbprint, let old = j.credential(r.oldThumbprint), [.bootstrap, .keyroll].contains(old.origin) else {
            throw Journal.TransitionError(description: "refusing to remove a key KeyRoll did not create")
        }
        if r.phase == .switched, r.reloadedAt == nil, let hook = reloadHook { try await runReloadHook(hook, r) }
        let new = try credential(r.newThumbprint)
        let oldKey = try? credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(new))
        var keyIds: [String] = []
        let read: [KeyCredential]?
        do { read = try await readKeys(graph) } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
            // Entra no longer knows the new key: read with the old one, which is still registered
            if let oldKey { read = try await readKeys(graphBase.authenticated(with: .certificate(oldKey))) } else { read = nil }
        }
        if let keys = read {
            if !keys.contains(where: { $0.matches(thumbprint: r.newThumbprint) }) {
                try await repairDroppedActive(reason: "the new key vanished from Entra before the old one was removed", preferring: r.oldThumbprint)
                return false  // the roll resumes at switched with the new key registered again
            }
            let mine = keys.filter { $0.matches(thumbprint: r.oldThumbprint) }  // every registration of the old cert
            for key in mine {
                do { try RemovalGuard.check(keyId: key.keyId, in: keys, journal: j, replica: identity.replica) } catch let refused as RemovalGuard.Refused {
                    // Never a reason to hold a roll forever: an extra registration of the old
                    // certificate does not threaten the promise. Leave it, and say so.
                    metrics.increment("keyroll_removal_refused_total", ["app_id": identity.appId])
                    emit(.alarm, "\(refused.description); it stays registered (remove it with az ad app credential delete --id \(identity.appId) --key-id \(key.keyId) if it is not needed)")
                    continue
                }
                keyIds.append(key.keyId)
            }
        } else if let k = old.keyId {
            keyIds = [k]
        } else {
            logger.warning("cannot find the old key's keyId (no read access and none recorded); it stays registered until it expires",
                           metadata: ["app_id": "\(identity.appId)", "thumbprint": "\(r.oldThumbprint)"])
        }
        for keyId in keyIds {
            do {
                try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: keyId, prover: new) }
            } catch let e as EntraError where e.kind == .credentialInvalid && oldKey != nil {
                // Graph refused the proof signed by the new key: it is not registered any more.
                // Register it again (proof by the old key) before anything else.
                try await repairDroppedActive(reason: "Graph refused removeKey's proof by the new key (\(e.graphCode ?? e.kind.rawValue))", preferring: r.oldThumbprint)
                return false
            }
        }
        emit(.retired, keyIds.isEmpty ? "old key already gone" : "removeKey \(keyIds.joined(separator: ", "))")
        let window = policy.retainedKeyWindow
        guard store.hasCredential(r.oldThumbprint) else {
            // its private key is already gone (a journal of an earlier version): nothing to retain
            try commit(planningNextRoll(try journal.finished(now: clock.now(), removedKeyIds: keyIds, retain: false)), phase: nil, event: nil)
            destroyGivenUp(r.oldThumbprint, "old key \(r.oldThumbprint) was already destroyed; roll complete", event: .finished)
            return true
        }
        try commit(planningNextRoll(try journal.finished(now: clock.now(), removedKeyIds: keyIds)), phase: nil,
                   event: (.finished, "roll complete; the old key \(r.oldThumbprint) is retained for \(Int(window / 3600)) h in case a stale write brings it back"))
        return true
    }

    /// Waits `settle` on the monotonic clock (the sleeper), in full: a wall-clock step cannot
    /// shorten it, and a restart begins it again.
    func settle(_ why: String) async throws {
        guard policy.settle > 0 else { return }
        emit(.settling, "waiting \(Int(policy.settle.rounded(.up))) s for the key to settle \(why) (settleSeconds)")
        try await sleeper.sleep(seconds: policy.settle)
    }

    /// Seconds between two token probes that must both refuse a key before it counts as gone.
    static let dropConfirmationSpacing: Double = 15

    /// Evidence that `key` is registered now: where the app may read itself, whether Graph lists it;
    /// otherwise whether the token endpoint accepts it (a fresh token): gone only when it refuses it
    /// as unknown twice, a few seconds apart. Any other failure (throttling, an outage) throws: no
    /// decision without evidence.
    func isStillRegistered(_ key: SigningCredential, readingWith reader: SigningCredential?) async throws -> Bool {
        let thumbprint = key.certificate.sha1Thumbprint.hex
        // Graph's list, where the app may read itself, decides: a token endpoint that has not caught
        // up with a removal must not make a dropped key look registered. (A lagging read that
        // misses the key costs a second registration, never a key.)
        for credential in [key, reader].compactMap({ $0 }) {
            if let keys = try? await readKeys(graphBase.authenticated(with: .certificate(credential))) {
                return keys.contains(where: { $0.matches(thumbprint: thumbprint) })
            }
        }
        for attempt in 0..<2 {
            if attempt > 0 { try await sleeper.sleep(seconds: Self.dropConfirmationSpacing) }
            do {
                _ = try await counted { try await tokens.probe(credential: .certificate(key)) }
                return true
            } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
                continue
            }
        }
        return false
    }

    /// Runs the reload hook once per switch. Until it succeeds the old key stays registered, so an
    /// application still holding it keeps working; after `reloadHookGrace` the roll goes on anyway
    /// with an alarm, so a broken hook cannot keep a roll from ever finishing.
    func runReloadHook(_ hook: ReloadHook, _ r: RollInProgress) async throws {
        try store.hook.reach(SideEffect(.hook, "reload"))
        do {
            try await hook.run(certificatePath: store.currentPEMPath, appId: identity.appId, timeout: policy.reloadHookTimeout)
            try commit(try journal.reloaded(now: clock.now()), phase: .switched, event: (.reloaded, "the application was told about the new credential"))
        } catch let failure as ReloadHook.Failure {
            metrics.increment("keyroll_reload_hook_failures_total", ["app_id": identity.appId])
            // The grace counts from the first failure, journaled (a pause, a restart or a clock step
            // between the switch and the first attempt cannot make one failure look like a day of
            // them), on both clocks: a step forward cannot end it (WindowElapsed). After a reboot the
            // wall clock alone, so a host that reboots daily still finishes its roll.
            if journal.roll?.reloadFailingSince == nil { try commit(try journal.reloadFailed(now: clock.now()), phase: nil, event: nil) }
            let failing = journal.roll
            let failingFor = windowElapsed(wallSince: failing?.reloadFailingSince ?? r.phaseSince ?? r.startedAt,
                                           bootSince: failing?.reloadFailingAtBootSeconds, bootID: failing?.reloadFailingAtBootID)
            guard failingFor >= policy.reloadHookGrace else {
                emit(.reloadHookFailed, "\(failure); the old key stays registered until the hook succeeds (or for \(Int(policy.reloadHookGrace)) s)")
                throw failure
            }
            emit(.alarm, "the reload hook has failed for \(Int(failingFor)) s (\(failure)); removing the old key anyway — the application must reload \(store.currentPEMPath) by itself")
        }
    }

    /// abandoning → idle: remove the new key from Graph (proof by the still-active old key), record
    /// that, then destroy the new key's file.
    func stepAbandon(_ r: RollInProgress) async throws {
        let active = try credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(active))
        var keyIds = journal.credential(r.newThumbprint)?.keyId.map { [$0] } ?? []
        let read: [KeyCredential]?
        do { read = try await readKeys(graph) } catch let e as EntraError where e.kind == .credentialInvalid || e.kind == .credentialNotYetActive {
            // the active key itself is refused (a stale write dropped it): a key never added needs no
            // removal; the registration watch repairs the active key
            read = nil
        }
        if let keys = read {
            keyIds = keys.filter { $0.matches(thumbprint: r.newThumbprint) }.map(\.keyId)
            for keyId in keyIds { try RemovalGuard.check(keyId: keyId, in: keys, journal: journal, replica: identity.replica) }
        }
        for k in keyIds { try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: k, prover: active) } }
        let ended = try journal.abandoned(now: clock.now())
        let consecutive = ended.history.reversed().prefix { $0.outcome.hasPrefix("abandoned") }.count
        let retryAt = clock.now().addingTimeInterval(policy.retryAfterAbandoned(consecutive: consecutive))
        let planned = planningNextRoll(ended)
        try commit(planned.planned(max(planned.nextRollAt ?? retryAt, retryAt)), phase: nil, event: nil)
        destroyGivenUp(r.newThumbprint, r.abandonReason ?? "abandoned", event: .abandoned)
    }

    /// Destroys a key the journal has just stopped listing. A failure here loses nothing: the key
    /// is untracked now, and the next sweep destroys it.
    func destroyGivenUp(_ thumbprint: String, _ detail: String, event: AgentEvent.Kind) {
        lock.withLock { loaded[thumbprint] = nil }
        do { try store.destroyCredential(thumbprint) } catch {
            logger.warning("could not destroy a retired key now; the next start sweeps it", metadata: ["app_id": "\(identity.appId)", "error": "\(error)"])
        }
        emit(event, detail)
    }
}
