import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// What the roller learns from Entra at start, what it reports, and the plumbing every step uses
/// (durable commits, events, metrics).
extension Roller {
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
    func readKeys(_ graph: GraphClient) async throws -> [KeyCredential]? {
        do {
            let keys = try await counted { try await graph.keyCredentials(objectID: identity.applicationObjectId) }
            let held = journal.credentials.map(\.thumbprint)
            lock.withLock { lastSeenInEntra = Set(held.filter { t in keys.contains { $0.matches(thumbprint: t) } }) }
            return keys
        } catch let e as EntraError where e.kind == .forbidden {
            return nil
        }
    }

    func counted<T>(_ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch let e as EntraError {
            let code = e.graphCode ?? e.aadstsCodes.first.map { "AADSTS\($0)" } ?? e.kind.rawValue
            metrics.increment(e.operation == "token" ? "keyroll_token_errors_total" : "keyroll_graph_errors_total", ["app_id": identity.appId, "code": code])
            throw e
        }
    }

    func commit(_ transition: Journal, phase: RollPhase?, event: (AgentEvent.Kind, String)?) throws {
        // windows the transition began get their boot-time reading (WindowElapsed)
        let j = transition.stampingWindows(bootSeconds: monotonic.secondsSinceBoot(), bootID: monotonic.bootID())
        do { try store.save(j) } catch {
            // The write can fail after its rename (the folder's fsync): the disk may hold the new
            // journal already. Memory follows the disk, so the next attempt (and the sweep before
            // it) acts on what a restart would read, never on a state the disk has left.
            if let onDisk = try? store.journal() { lock.withLock { _journal = onDisk } }
            throw error
        }
        lock.withLock { _journal = j }
        if let event { emit(event.0, event.1) }
        afterTransition?(phase)
    }

    func emit(_ kind: AgentEvent.Kind, _ detail: String) {
        let e = AgentEvent(time: clock.now(), appId: identity.appId, kind: kind, detail: detail)
        logger.info("\(kind.rawValue): \(detail)", metadata: ["app_id": "\(identity.appId)"])
        observer?(e)
    }

    /// Signs in with the active key (a fresh token, never a cached one) and records the success:
    /// the agent's proof, between rolls, that the key it publishes still works.
    public func checkSignIn() async throws {
        let active = try credential(journal.active)
        _ = try await counted { try await tokens.probe(credential: .certificate(active)) }
        metrics.set("keyroll_last_token_success_timestamp_seconds", ["app_id": identity.appId, "thumbprint": active.certificate.sha1Thumbprint.hex],
                    clock.now().timeIntervalSince1970)
    }

    /// What Graph listed of the held keys at the last read (nil: not read yet, or not allowed).
    var keysSeenInEntra: Set<String>? { lock.withLock { lastSeenInEntra } }

    public func refreshMetrics() {
        let next = nextRollDate()
        let j = journal
        let status = identityStatus()
        let labels = ["app_id": identity.appId]
        // retained keys are removed from Entra: no certificate series for them
        let held = Set(j.credentials.filter { !$0.isRetained }.map(\.thumbprint))
        let stale = lock.withLock { () -> Set<String> in
            let gone = exportedThumbprints.subtracting(held)
            exportedThumbprints = held
            return gone
        }
        for t in stale {
            metrics.remove("keyroll_certificate_not_after_seconds", ["app_id": identity.appId, "thumbprint": t])
            metrics.remove("keyroll_last_token_success_timestamp_seconds", ["app_id": identity.appId, "thumbprint": t])
        }
        for c in j.credentials where !c.isRetained { metrics.set("keyroll_certificate_not_after_seconds", ["app_id": identity.appId, "thumbprint": c.thumbprint], c.notAfter.timeIntervalSince1970) }
        metrics.set("keyroll_retained_keys", labels, Double(j.retained.count))
        if let ttc = status.timeToCliff { metrics.set("keyroll_time_to_cliff_seconds", labels, ttc) }
        for a in [RollPolicy.Alarm.ok, .warning, .critical, .pastCliff] { metrics.set("keyroll_alarm", ["app_id": identity.appId, "level": a.rawValue], a == status.alarm ? 1 : 0) }
        metrics.set("keyroll_next_roll_timestamp_seconds", labels, next.timeIntervalSince1970)
        metrics.set("keyroll_clock_offset_seconds", labels, tokens.offset.seconds)
        metrics.set("keyroll_roll_phase_since_timestamp_seconds", labels, j.roll?.phaseSince?.timeIntervalSince1970 ?? 0)
        for p in RollPhase.allCases { metrics.set("keyroll_roll_phase", ["app_id": identity.appId, "phase": p.rawValue], j.roll?.phase == p ? 1 : 0) }
    }
}
