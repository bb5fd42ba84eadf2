import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import Testing
import TestSupport

@Suite struct AgentTests {
    /// The invariant: at every instant the app can sign in (``LockoutCheck``, with a token for the published key).
    func assertNeverLockedOut(_ fleet: Fleet, _ store: CredentialStore, _ appId: String) async throws {
        let wrong = await fleet.lockout.violations(store, appId: appId, signIn: true)
        #expect(wrong.isEmpty, "\(wrong)")
    }

    @Test func bootstrapRollReplacesTheBootstrapCertificate() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("orders")
        let bootThumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [bootThumb])
        let roller = try fleet.roller(store)
        #expect(roller.identityStatus().alarm == .critical, "an unrolled 2-day bootstrap is close to the cliff")
        let outcome = try await roller.rollIfDue()
        guard case .rolled(let newThumb) = outcome else { Issue.record("expected a roll, got \(outcome)"); return }
        let keys = try fleet.graphKeys(bundle.appId)
        #expect(keys.map(\.sha1.hex) == [newThumb], "only the new key is registered")
        #expect(FileManager.default.fileExists(atPath: store.keyPath(bootThumb)), "bootstrap key retained (removed from Entra, kept to undo a stale write)")
        #expect(store.published()?.certificate.sha1Thumbprint.hex == newThumb)
        let j = try store.journal()
        #expect(j.active == newThumb && j.roll == nil && j.credentials.count == 2 && j.credential(bootThumb)?.isRetained == true)
        #expect(j.tombstones.map(\.thumbprint) == [bootThumb] && j.tombstones.first?.keyIds == [bundle.bootstrap.keyId].compactMap { $0 })
        #expect(fleet.events.kinds(bundle.appId) == [.generated, .stored, .added, .visible, .verified, .settling, .switched, .retired, .finished])
        // the retained key goes once its window has passed and a check has seen the new key registered
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        #expect(try await roller.watchRegistration().released.isEmpty, "one check is not enough evidence")
        fleet.rig.clock.advance(by: 600)
        #expect(try await roller.watchRegistration().released == [bootThumb], "a second check that agrees releases it")
        #expect(!FileManager.default.fileExists(atPath: store.keyPath(bootThumb)), "bootstrap key destroyed")
        #expect(try store.journal().credentials.count == 1)
        #expect(try fleet.rig.emulator.keyCredentials(appId: bundle.appId).count == 1)
        // the new certificate: 1 year, 2048 bits, CN names the app
        let cert = try store.credential(newThumb).certificate
        #expect(abs(cert.notAfter.timeIntervalSince(cert.notBefore) - (365 * 86_400 + 300)) < 2)
        #expect(cert.subject == "CN=keyroll-\(bundle.appId)")
        try await assertNeverLockedOut(fleet, store, bundle.appId)
        // the removeKey proof was signed by the NEW key: the sign-in log shows only the new key afterwards
        #expect(roller.identityStatus().alarm == .ok)
        // file modes
        for f in [store.currentPEMPath, store.keyPath(newThumb), store.path + "/journal.json"] {
            let mode = try FileManager.default.attributesOfItem(atPath: f)[.posixPermissions] as! Int
            #expect(mode == 0o600, "\(f) is \(String(mode, radix: 8))")
        }
    }

    @Test func threeYearsOfRollsWithPropagationDelay() async throws {
        var s = EmulatorSettings.selfReading
        s.propagationDelayMin = 30
        s.propagationDelayMax = 600  // up to 10 minutes
        let fleet = try await Fleet(settings: s)
        let (store, bundle) = try await fleet.agentStore("billing")
        var policy = RollPolicy()
        policy.verifyTimeout = 900
        let roller = try fleet.roller(store, policy: policy)
        var rolls = 0
        let end = fleet.rig.clock.now().addingTimeInterval(3 * 365 * 86_400)
        while fleet.rig.clock.now() < end {
            let next = roller.nextRollDate()
            if next > fleet.rig.clock.now() { fleet.rig.clock.set(min(next, end)) }
            if fleet.rig.clock.now() >= end { break }
            if case .rolled = try await roller.rollIfDue() { rolls += 1 }
            try await assertNeverLockedOut(fleet, store, bundle.appId)
            #expect(try fleet.graphKeys(bundle.appId).count == 1, "no leftovers")
        }
        #expect(rolls >= 4 && rolls <= 6, "bootstrap + one roll every ~8 months: \(rolls)")
        #expect(fleet.events.kinds(bundle.appId).contains(.notYetActive), "the delay was felt")
    }

    @Test func propagationBeyondTheBoundAbandonsCleanly() async throws {
        var s = EmulatorSettings.selfReading
        s.propagationDelayMin = 3600
        s.propagationDelayMax = 3600
        let fleet = try await Fleet(settings: s)
        let (store, bundle) = try await fleet.agentStore("slow")
        fleet.rig.clock.advance(by: 3601)  // the bootstrap cert itself propagates first
        let boot = try bundle.signingCredential()
        let roller = try fleet.roller(store)  // verifyTimeout 600
        let outcome = try await roller.rollIfDue()
        guard case .abandoned = outcome else { Issue.record("expected abandon, got \(outcome)"); return }
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1) == [boot.certificate.sha1Thumbprint], "the unproven key was removed again")
        #expect(try store.journal().active == boot.certificate.sha1Thumbprint.hex)
        #expect(try store.journal().credentials.count == 1)
        try await assertNeverLockedOut(fleet, store, bundle.appId)
    }

    @Test func throttlingStormsAndServerErrorsDoNotStopARoll() async throws {
        var s = EmulatorSettings.selfReading
        s.throttling.enabled = true
        s.throttling.writesPerWindow = 1000
        let fleet = try await Fleet(settings: s)
        let (store, bundle) = try await fleet.agentStore("storm")
        fleet.rig.emulator.setFaults([
            FaultRule(route: "POST /addKey", action: .status(429, retryAfter: 7.5), sequence: [true, true, true]),
            FaultRule(route: "POST /removeKey", action: .status(503, retryAfter: nil), sequence: [true, true]),
            FaultRule(route: "token", action: .status(500, retryAfter: nil), sequence: [false, true, false, true]),
            FaultRule(route: "GET /v1.0/applications", action: .drop, sequence: [true]),
        ])
        let roller = try fleet.roller(store)
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("roll failed"); return }
        #expect(try fleet.graphKeys(bundle.appId).count == 1)
        try await assertNeverLockedOut(fleet, store, bundle.appId)
    }

    @Test(arguments: [300.0, -300.0])
    func clockSkewOfFiveMinutes(skew: Double) async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("skewed")
        let agentClock = ManualClock(fleet.rig.clock.now().addingTimeInterval(skew))
        let roller = try fleet.roller(store, clock: agentClock)
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("roll failed"); return }
        try await assertNeverLockedOut(fleet, store, bundle.appId)
    }

    @Test func lostAddKeyAnswerDoesNotRegisterTwice() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("lossy")
        fleet.rig.emulator.setFaults([FaultRule(route: "POST /addKey", action: .dropResponse, sequence: [true])])
        let roller = try fleet.roller(store)
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("roll failed"); return }
        #expect(try fleet.graphKeys(bundle.appId).count == 1)
    }

    /// Graph budget of one roll at fleet scale: 3 tokens (old key once, new key twice, the second
    /// reused for removeKey), 3 reads (visible, after the settle, retire), addKey, removeKey. A fresh key is not looked
    /// up before addKey; a resumed roll is, so a crash cannot register a key twice.
    @Test func aRollSpendsNoMoreRequestsThanItNeeds() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("frugal")
        let before = fleet.rig.emulator.requestCounts()
        let writes = Counter()
        let frugal = try fleet.roller(store, afterTransition: { _ in writes.increment() })
        _ = frugal.nextRollDate()  // plans the bootstrap roll (one write) before counting the roll's own
        writes.reset()
        guard case .rolled = try await frugal.rollIfDue() else { Issue.record("roll failed"); return }
        #expect(writes.value == 6, "one fsynced journal write per transition (stored, added, visible, verified, switched, finished); the last one carries the next roll's plan")
        #expect(try store.journal().nextRollAt != nil)
        let spent = fleet.rig.emulator.requestCounts().reduce(into: [String: Int]()) { $0[$1.key] = $1.value - (before[$1.key] ?? 0) }
        #expect(spent.filter { $0.value != 0 } == ["token": 3, "applications": 3, "addKey": 1, "removeKey": 1])

        // resumed after a failure that left the new key stored but not yet added
        let (store2, bundle2) = try await fleet.agentStore("resumed")
        fleet.rig.emulator.setFaults([FaultRule(route: "POST /addKey", action: .status(403, retryAfter: nil), sequence: [true])])
        await #expect(throws: EntraError.self) { try await fleet.roller(store2).rollIfDue() }
        #expect(try store2.journal().roll?.phase == .stored)
        let before2 = fleet.rig.emulator.requestCounts()
        guard case .rolled = try await fleet.roller(store2).rollIfDue() else { Issue.record("resumed roll failed"); return }
        #expect((fleet.rig.emulator.requestCounts()["applications"] ?? 0) - (before2["applications"] ?? 0) == 4, "a resumed roll reads the keys before addKey")
        #expect(try fleet.graphKeys(bundle2.appId).count == 1)
    }

    @Test func aStoreOthersCanReadIsRefusedWithTheFix() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("open")
        chmod(store.path, 0o755)
        do { _ = try fleet.roller(store); Issue.record("should refuse") } catch {
            #expect("\(error)".contains("chmod 700"), "\(error)")
        }
        chmod(store.path, 0o700)
        chmod(store.currentPEMPath, 0o644)
        do { _ = try fleet.roller(store); Issue.record("should refuse") } catch {
            #expect("\(error)".contains("chmod 600"), "\(error)")
        }
    }

    @Test func twoAgentsOnOneStore() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("shared")
        let first = try fleet.roller(store)
        do { _ = try fleet.roller(CredentialStore(path: store.path)); Issue.record("second agent must not start") } catch let e as CredentialStore.StoreError {
            #expect(e == .locked(store.path))
            #expect(e.description.contains("Only one agent"))
        }
        _ = first
    }

    @Test func corruptedOrDeletedStoreFailsClearlyAndTouchesNothing() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("broken")
        let before = try fleet.graphKeys(bundle.appId)
        try "{ not json".write(toFile: store.path + "/journal.json", atomically: true, encoding: .utf8)
        do { _ = try fleet.roller(store); Issue.record("should refuse") } catch {
            #expect("\(error)".contains("damaged") && "\(error)".contains("changed nothing in Entra"), "\(error)")
        }
        let (store2, bundle2) = try await fleet.agentStore("keyless")
        let active = try store2.journal().active
        try FileManager.default.removeItem(atPath: store2.keyPath(active))
        do { _ = try fleet.roller(store2); Issue.record("should refuse") } catch {
            #expect("\(error)".contains("missing"), "\(error)")
        }
        #expect(try fleet.graphKeys(bundle.appId) == before)
        #expect(try fleet.graphKeys(bundle2.appId).count == 1)
    }
}

/// A thread-safe tally for callbacks.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.withLock { n += 1 } }
    func reset() { lock.withLock { n = 0 } }
    var value: Int { lock.withLock { n } }
}
