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
        let kc = try await counted {
            try await graph.addKey(objectID: identity.applicationObjectId, certificate: new.certificate, displayName: CredentialName.displayName(cn: certificateSubject), prover: active)
        }
        try commit(try journal.added(keyId: kc.keyId, now: clock.now()), phase: .added, event: (.added, "addKey → keyId \(kc.keyId)"))
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
                let delay = min(Self.propagationBackoff.delay(attempt: attempt), max(1, policy.verifyTimeout - waited))
                emit(e.kind == .credentialNotYetActive ? .notYetActive : .retry,
                     e.kind == .credentialNotYetActive ? "AADSTS700027 for the new key (propagating); retry in \(Int(delay)) s" : "\(e.kind.rawValue); retry in \(Int(delay)) s")
                try await sleeper.sleep(seconds: delay)
            }
        }
        try commit(try journal.verified(now: clock.now()), phase: .verified, event: (.verified, "\(policy.verifySuccesses) consecutive tokens with the new key"))
        return nil
    }

    /// verified → switched: publish the new credential, then record the switch.
    func stepSwitch(_ r: RollInProgress) async throws {
        let new = try credential(r.newThumbprint)
        try store.publish(new)
        try commit(try journal.switched(now: clock.now()), phase: .switched, event: (.switched, "current.pem now holds \(r.newThumbprint)"))
    }

    /// switched → idle: tell the application (the reload hook, recorded once it succeeded), remove
    /// the old key from Graph with a proof signed by the new key, record it, then destroy the old
    /// key's file.
    func stepRetire(_ r: RollInProgress) async throws {
        let j = journal
        guard let newRecord = j.credential(r.newThumbprint), newRecord.lastProvenAt != nil, j.active == r.newThumbprint else {
            throw Journal.TransitionError(description: "refusing to remove the old key: the new key is not proven and active")
        }
        guard r.oldThumbprint != r.newThumbprint, let old = j.credential(r.oldThumbprint), [.bootstrap, .keyroll].contains(old.origin) else {
            throw Journal.TransitionError(description: "refusing to remove a key KeyRoll did not create")
        }
        if r.phase == .switched, r.reloadedAt == nil, let hook = reloadHook { try await runReloadHook(hook, r) }
        try await settleAfterAdd(r)
        let new = try credential(r.newThumbprint)
        let graph = graphBase.authenticated(with: .certificate(new))
        var keyIds: [String] = []
        let read: [KeyCredential]?
        do { read = try await readKeys(graph) } catch let e as EntraError where e.kind == .credentialNotYetActive || e.kind == .credentialInvalid {
            // Entra no longer knows the new key: read with the old one, which is still registered
            read = try await readKeys(graphBase.authenticated(with: .certificate(try credential(r.oldThumbprint))))
        }
        if let keys = read {
            // The new key was proven, but a privileged PATCH of the whole keyCredentials list that
            // read the list before our addKey (a provisioner issuing a bootstrap) can drop it. Never
            // remove the old key then: register the new one again and prove it first.
            if !keys.contains(where: { $0.matches(thumbprint: r.newThumbprint) }) {
                try await reregister(new, old: try credential(r.oldThumbprint))
            }
            keyIds = keys.filter { $0.matches(thumbprint: r.oldThumbprint) }.map(\.keyId)  // every registration of the old cert
            for keyId in keyIds { try RemovalGuard.check(keyId: keyId, in: keys, journal: j, replica: identity.replica) }
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

    /// On an app with several replicas, waits until `replicaSettle` has passed since the new key
    /// was added before the old key may go. A privileged PATCH of the whole keyCredentials list
    /// (the provisioner scaling out or retiring a sibling) that read the list before our addKey
    /// lands within its own request time; after the settle it has landed, so the check that
    /// follows (is the new key still registered?) sees what it did. See docs/design.md, "Replicas".
    func settleAfterAdd(_ r: RollInProgress) async throws {
        guard identity.replica != nil, policy.replicaSettle > 0 else { return }
        let added = r.addedAt ?? r.startedAt
        let wait = added.addingTimeInterval(policy.replicaSettle).timeIntervalSince(clock.now())
        guard wait > 0 else { return }
        emit(.settling, "waiting \(Int(wait.rounded(.up))) s for the new key to settle before the old one goes (replicaSettleSeconds)")
        try await sleeper.sleep(seconds: wait)
    }

    /// Registers `new` again with a proof by `old` (still registered: it is never removed before
    /// this returns) and waits until the token endpoint accepts it, within the verification
    /// window; throws if it does not, so the old key stays registered and the step is retried.
    func reregister(_ new: SigningCredential, old: SigningCredential) async throws {
        logger.warning("the new key vanished from Entra before the old one was removed (a concurrent PATCH of keyCredentials?); registering it again",
                       metadata: ["app_id": "\(identity.appId)", "thumbprint": "\(new.certificate.sha1Thumbprint.hex)"])
        let byOld = graphBase.authenticated(with: .certificate(old))
        if try await byOld.findKey(objectID: identity.applicationObjectId, certificate: new.certificate) == nil {
            _ = try await counted {
                try await byOld.addKey(objectID: identity.applicationObjectId, certificate: new.certificate, displayName: CredentialName.displayName(cn: certificateSubject), prover: old)
            }
        }
        emit(.added, "re-registered the new key after it vanished from Entra")
        let started = clock.now()
        var attempt = 0
        while true {
            do {
                _ = try await tokens.probe(credential: .certificate(new))
                return
            } catch let e as EntraError where e.isRetryable || e.kind == .credentialNotYetActive {
                attempt += 1
                guard clock.now().timeIntervalSince(started) < policy.verifyTimeout else { throw e }
                try await sleeper.sleep(seconds: Self.propagationBackoff.delay(attempt: attempt))
            }
        }
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
    func stepAbandon(_ r: RollInProgress) async throws {
        let active = try credential(r.oldThumbprint)
        let graph = graphBase.authenticated(with: .certificate(active))
        var keyIds = journal.credential(r.newThumbprint)?.keyId.map { [$0] } ?? []
        if let keys = try await readKeys(graph) {
            keyIds = keys.filter { $0.matches(thumbprint: r.newThumbprint) }.map(\.keyId)
            for keyId in keyIds { try RemovalGuard.check(keyId: keyId, in: keys, journal: journal, replica: identity.replica) }
        }
        for k in keyIds { try await counted { try await graph.removeKey(objectID: identity.applicationObjectId, keyId: k, prover: active) } }
        try commit(planningNextRoll(try journal.abandoned(now: clock.now())), phase: nil, event: nil)
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
