import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// One test per way a roll could strand an app or its agent (each failed on the code before the
/// fix): destroyed before recorded, stored but not recorded, the reload hook, settings that
/// guarantee lockout, rolls that never end, a blind status, and concurrency slips.
@Suite struct LockoutFindingsTests {
    /// Runs a first roll that dies at `point`; returns the store, the bundle, and the dead roller's journal.
    func crashed(_ fleet: Fleet, _ name: String, at point: String, policy: RollPolicy = .init()) async throws -> (CredentialStore, BootstrapBundle) {
        let (store, bundle) = try await fleet.agentStore(name)
        let hook = PointHook(target: point)
        do {
            let r = try fleet.roller(CredentialStore(path: store.path, hook: hook.hook), policy: policy)
            _ = try? await r.rollIfDue()
        }
        #expect(hook.didFire, "\(point) not reached")
        return (store, bundle)
    }

    // 1. Destroyed before recorded

    @Test func aJournalOfTheOldOrderWhoseRetiredKeyIsGoneStillFinishes() async throws {
        let fleet = try await Fleet()
        // the old code removed the old key from Entra, recorded `retired`, then destroyed the file
        // and died before recording `finished`: rebuild that state
        let (store, bundle) = try await crashed(fleet, "old-order", at: "send removeKey#1")
        var j = try store.journal()
        let r = try #require(j.roll)
        #expect(r.phase == .switched)
        let keyId = try #require(j.credential(r.oldThumbprint)?.keyId)
        let transport = fleet.transport
        let new = try store.credential(r.newThumbprint)
        let endpoints = EntraEndpoints(authorityHost: fleet.rig.base, tenant: fleet.rig.tenant.id, graphBaseURL: fleet.rig.base + "/v1.0")
        let graph = GraphClient(endpoints: endpoints, tokens: TokenProvider(endpoints: endpoints, clientID: bundle.appId, transport: transport, clock: fleet.rig.clock),
                                auth: .certificate(new), transport: transport, clock: fleet.rig.clock)
        try await graph.removeKey(objectID: bundle.applicationObjectId, keyId: keyId, prover: new)
        j.roll?.phase = .retired
        try store.save(j)
        try FileManager.default.removeItem(atPath: store.keyPath(r.oldThumbprint))
        // a restart neither refuses (missingKey) nor claims nothing changed in Entra: it finishes
        let roller = try fleet.roller(CredentialStore(path: store.path))
        guard case .rolled = try await roller.roll() else { Issue.record("did not finish"); return }
        #expect(roller.journal.credentials.map(\.thumbprint) == [r.newThumbprint], "an old key whose file is gone is not retained")
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [r.newThumbprint])
        #expect(!FileManager.default.fileExists(atPath: store.certPath(r.oldThumbprint)), "the old certificate file was swept")
    }

    @Test func aKeyIsDestroyedOnlyAfterTheJournalLetsGoOfIt() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("destroying")
        do { _ = try await fleet.roller(store).roll(reason: "bootstrap") }
        // the old key is retained; after its window a check releases it: die while destroying it
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        let hook = PointHook(target: "unlink key.pem#1")
        do {
            let r = try fleet.roller(CredentialStore(path: store.path, hook: hook.hook))
            _ = try? await r.watchRegistration()  // sees it gone: a candidate
            fleet.rig.clock.advance(by: 600)
            _ = try? await r.watchRegistration()  // agrees: releases it, and dies destroying it
        }
        #expect(hook.didFire)
        let j = try store.journal()
        #expect(j.credentials.map(\.thumbprint) == [j.active], "the journal let go of the retained key before it was destroyed")
        #expect(store.keysOnDisk().count == 2, "the old key is still there, untracked")
        let roller = try fleet.roller(CredentialStore(path: store.path))  // the start sweeps it
        #expect(store.keysOnDisk() == [j.active])
        #expect(fleet.events.kinds(bundle.appId).contains(.swept))
        _ = roller
    }

    @Test func shreddingNeverLeavesAZeroedFileUnderTheName() throws {
        let dir = try Tools.temporaryDirectory("shred")
        let file = dir + "/" + String(repeating: "A", count: 40) + ".key.pem"
        try SecureFiles.writeAtomically("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n", to: file)
        let hook = PointHook(target: "write key.pem#1")  // dies while overwriting with zeros
        #expect(throws: SimulatedCrash.self) { try SecureFiles.shred(file, hook: hook.hook) }
        #expect(!FileManager.default.fileExists(atPath: file), "the name is gone before the bytes are zeroed")
    }

    // 2. Stored but not recorded

    @Test func untrackedKeysAndTemporaryFilesAreSweptAtStart() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await crashed(fleet, "untracked", at: "create journal.json#2")  // the new key is written, not journaled
        #expect(try store.journal().roll == nil)
        #expect(store.keysOnDisk().count == 2, "an untracked key was left on disk")
        let tmp = store.path + "/.journal.json.tmp-1-2"
        try SecureFiles.writeAtomically("partial", to: tmp)
        let roller = try fleet.roller(CredentialStore(path: store.path))
        #expect(store.keysOnDisk() == [try store.journal().active])
        #expect(!FileManager.default.fileExists(atPath: tmp))
        let swept = fleet.events.all.filter { $0.appId == bundle.appId && $0.kind == .swept }
        #expect(swept.count == 1 && swept[0].detail.contains("key.pem") && swept[0].detail.contains(".journal.json.tmp-"), "\(swept)")
        _ = roller
    }

    // 3. The reload hook

    @Test func aFailingReloadHookKeepsTheOldKeyUntilItSucceedsOrTheGraceEnds() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("hook-fails")
        let flag = fleet.root + "/hook-may-succeed"
        let hook = ReloadHook.command(["/bin/sh", "-c", "test -e '\(flag)'"])
        let roller = try fleet.roller(store, reloadHook: hook)
        await #expect(throws: ReloadHook.Failure.self) { try await roller.rollIfDue() }
        #expect(roller.journal.roll?.phase == .switched)
        #expect(try fleet.graphKeys(bundle.appId).count == 2, "the old key stays registered while the application has not reloaded")
        FileManager.default.createFile(atPath: flag, contents: Data())
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("no roll"); return }
        #expect(try fleet.graphKeys(bundle.appId).count == 1)

        // a hook that never succeeds: the old key goes after the grace period, with an alarm
        let (store2, bundle2) = try await fleet.agentStore("hook-broken")
        var policy = RollPolicy()
        policy.reloadHookGrace = 3600
        let broken = try fleet.roller(store2, policy: policy, reloadHook: .command(["/bin/false"]))
        await #expect(throws: ReloadHook.Failure.self) { try await broken.rollIfDue() }
        fleet.rig.clock.advance(by: 3601)
        guard case .rolled = try await broken.rollIfDue() else { Issue.record("no roll after the grace"); return }
        #expect(try fleet.graphKeys(bundle2.appId).count == 1)
        #expect(fleet.events.all.contains { $0.appId == bundle2.appId && $0.kind == .alarm && $0.detail.contains("reload hook") })
    }

    @Test func aHookInterruptedByACrashRunsAgainOnResume() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("hook-crash")
        let out = fleet.root + "/hook-crash.out"
        let hook = ReloadHook.command(["/bin/sh", "-c", "echo ran >> '\(out)'"])
        let dies = PointHook(target: "create journal.json#7")  // after the hook ran, before it is recorded
        do {
            let r = try fleet.roller(CredentialStore(path: store.path, hook: dies.hook), reloadHook: hook)
            _ = try? await r.rollIfDue()
        }
        #expect(dies.didFire)
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "ran\n")
        #expect(try store.journal().roll?.reloadedAt == nil)
        guard case .rolled = try await fleet.roller(CredentialStore(path: store.path), reloadHook: hook).roll() else { Issue.record("no roll"); return }
        #expect(try String(contentsOfFile: out, encoding: .utf8) == "ran\nran\n", "the unrecorded run is repeated")
        #expect(try fleet.graphKeys(bundle.appId).count == 1)
    }

    // 4. Settings that guarantee lockout

    @Test func policiesThatWouldLockAnAppOutAreRefused() async throws {
        var jitter = RollPolicy()
        jitter.jitterFraction = 2
        #expect(throws: RollPolicy.Invalid.self) { try jitter.validated() }
        var zeroCap = RollPolicy()
        zeroCap.tenantMaximumValidity = 0
        #expect { try zeroCap.validated() } throws: { ($0 as? RollPolicy.Invalid)?.field == "tenantMaximumValidityDays" }
        var shortCap = RollPolicy()
        shortCap.tenantMaximumValidity = 2 * 86_400  // rolled after ~1.4 days, expires 0.6 days later
        #expect { try shortCap.validated() } throws: { ($0 as? RollPolicy.Invalid)?.description.contains("minimumRollMargin") ?? false }
        var fine = RollPolicy()
        fine.tenantMaximumValidity = 30 * 86_400
        #expect(throws: Never.self) { try fine.validated() }
        // a roller refuses such a policy before touching anything
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("bad-policy")
        #expect(throws: RollPolicy.Invalid.self) { try fleet.roller(store, policy: jitter) }
        #expect(try fleet.graphKeys(bundle.appId).count == 1)
        // a window that cannot outlive its own next roll is refused at roll time too
        #expect(throws: RollPolicy.Invalid.self) {
            try RollPolicy().checkNewCertificate(notBefore: Date(timeIntervalSince1970: 0), notAfter: Date(timeIntervalSince1970: 86_400))
        }
    }

    // 5. Rolls that never end

    @Test func aLostRemoveKeyAnswerWithoutSelfReadStillFinishes() async throws {
        var s = EmulatorSettings.selfReading
        s.allowSelfRead = false
        let fleet = try await Fleet(settings: s)
        let (store, bundle) = try await crashed(fleet, "lost-remove", at: "answered removeKey#1")
        #expect(try store.journal().roll?.phase == .switched)
        #expect(try fleet.graphKeys(bundle.appId).count == 1, "Graph applied the removal")
        guard case .rolled = try await fleet.roller(CredentialStore(path: store.path)).roll() else { Issue.record("stuck"); return }
        #expect(try store.journal().roll == nil)
    }

    @Test func aNonRetryableTokenErrorDuringVerificationEndsInAbandon() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("verify-refused")
        // the first token (the bootstrap key, for addKey) works; every probe of the new key is refused
        fleet.rig.emulator.setFaults([FaultRule(route: "token", action: .status(400, retryAfter: nil), sequence: [false] + Array(repeating: true, count: 50))])
        let roller = try fleet.roller(store)
        await #expect(throws: EntraError.self) { try await roller.rollIfDue() }
        #expect(roller.journal.roll?.phase == .visible)
        fleet.rig.clock.advance(by: 601)
        guard case .abandoned = try await roller.rollIfDue() else { Issue.record("never abandons"); return }
        fleet.rig.emulator.setFaults([])
        #expect(try fleet.graphKeys(bundle.appId).count == 1, "the unproven key was removed")
    }

    @Test func eachAttemptCarriesAFreshProof() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("slow-add")
        // three 5-minute Retry-After waits: a proof minted once (valid 10 minutes) would expire
        fleet.rig.emulator.setFaults([FaultRule(route: "POST /addKey", action: .status(429, retryAfter: 300), sequence: [true, true, true])])
        guard case .rolled = try await fleet.roller(store).rollIfDue() else { Issue.record("roll failed"); return }
        #expect(try fleet.graphKeys(bundle.appId).count == 1)
    }

    // 6. Status is computed from what exists

    @Test func statusAfterACrashOnTheAbandonPathShowsTheBootstrapsCliff() async throws {
        var s = EmulatorSettings.selfReading
        s.propagationDelayMin = 3600
        s.propagationDelayMax = 3600
        let fleet = try await Fleet(settings: s)
        var policy = RollPolicy()
        policy.verifyTimeout = 60
        let (store, bundle) = try await fleet.agentStore("abandon-crash")
        fleet.rig.clock.advance(by: 3601)
        let hook = PointHook(target: "answered removeKey#1")  // the new key is gone from Entra; the agent died
        do {
            let r = try fleet.roller(CredentialStore(path: store.path, hook: hook.hook), policy: policy)
            _ = try? await r.rollIfDue()
        }
        #expect(hook.didFire)
        #expect(try fleet.graphKeys(bundle.appId).count == 1, "only the bootstrap is left in Entra")
        let status = try StoreReader.status(path: store.path, policy: policy, now: fleet.rig.clock.now())
        let boot = try bundle.signingCredential().certificate
        #expect(status.cliff == boot.notAfter, "the cliff is the bootstrap's, not the abandoned key's")
        #expect(status.alarm == .critical)
        let r = try #require(status.interruptedRoll)
        #expect(r.phase == .abandoning && r.next.contains("remove the unproven new key") && r.actBy != nil)
    }

    @Test func aMissingKeyTheJournalNeedsIsReportedWithoutFalseComfort() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("keyless")
        try FileManager.default.removeItem(atPath: store.keyPath(try store.journal().active))
        do { _ = try fleet.roller(store); Issue.record("should refuse") } catch {
            #expect("\(error)".contains("missing") && !"\(error)".contains("Nothing was changed"), "\(error)")
        }
    }

    // 7. Concurrency slips

    @Test func twoRollersCannotShareOneStoreObject() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("shared-object")
        let first = try fleet.roller(store)
        #expect(throws: CredentialStore.StoreError.locked(store.path)) { try fleet.roller(store) }
        _ = first
    }

    @Test func waitingForTheLockBlocksNoThread() async throws {
        // more waiters than the pool has threads, each on a store whose lock is held: if waiting
        // held a thread, the pool would be exhausted and the waiters' own polls (and the check
        // below, which needs a pool thread) could not all run
        let fleet = try await Fleet()
        let waiters = ProcessInfo.processInfo.activeProcessorCount * 4
        let polls = PollCounter()
        var holders: [Roller] = []
        var stores: [CredentialStore] = []
        for i in 0..<waiters {
            let (store, _) = try await fleet.agentStore("waiting-\(i)")
            holders.append(try fleet.roller(store))
            stores.append(store)
        }
        let tasks = stores.map { store in
            Task { try await Roller.waitingForLock(pollEvery: 0.01, sleeper: polls) { try fleet.roller(CredentialStore(path: store.path)) } }
        }
        // every waiter polls at least 3 times while all the locks are held
        try await polls.waitUntil(atLeast: waiters * 3)
        #expect(await Task.detached { 42 }.value == 42, "the pool still runs new work")
        holders.removeAll()
        for (task, store) in zip(tasks, stores) {
            let opened = try await task.value
            #expect(opened.journal.active == (try store.journal().active))
        }
    }

    @Test func aNewKeyDroppedByAPrivilegedPatchIsRegisteredAgainBeforeTheOldOneGoes() async throws {
        let fleet = try await Fleet()
        // the roll dies just before removeKey(old): the new key is proven, published, active
        let (store, bundle) = try await crashed(fleet, "patched", at: "send removeKey#1")
        let j = try store.journal()
        let r = try #require(j.roll)
        #expect(r.phase == .switched)
        // a provisioner's PATCH built on a list read before the agent's addKey lands now: the new key is gone
        let app = try #require(try fleet.rig.emulator.store.application(appId: bundle.appId))
        let stale = app.keyCredentials.filter { $0.sha1.hex != r.newThumbprint }.map { k -> JSONValue in
            .object(["keyId": .string(k.keyId), "type": .string(k.type), "usage": .string(k.usage), "key": .string(Base64.encode(k.key))])
        }
        try await fleet.provisioner.graph.updateApplication(id: app.id, ["keyCredentials": .array(stale)])
        #expect(!(try fleet.graphKeys(bundle.appId)).contains { $0.sha1.hex == r.newThumbprint })
        // the restarted agent must not remove the old key while the new one is unregistered
        let roller = try fleet.roller(store)
        let outcome = try await roller.roll()
        #expect({ if case .rolled = outcome { true } else { false } }(), "\(outcome)")
        let wrong = await fleet.lockout.violations(store, appId: bundle.appId, signIn: true)
        #expect(wrong.isEmpty, "\(wrong)")
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [roller.journal.active], "only the new key is left, registered again")
        #expect(fleet.events.kinds(bundle.appId).contains(.added))
    }

    /// A sleeper that counts its calls and suspends (never blocks) for the time asked.
    actor PollCounter: Sleeper {
        private var count = 0
        private var watchers: [(Int, CheckedContinuation<Void, Never>)] = []
        nonisolated func sleep(seconds: Double) async throws {
            await tick()
            try await Task.sleep(nanoseconds: UInt64(seconds * 1e9))
        }
        private func tick() {
            count += 1
            let (ready, waiting) = (watchers.filter { $0.0 <= count }, watchers.filter { $0.0 > count })
            watchers = waiting
            for (_, c) in ready { c.resume() }
        }
        func waitUntil(atLeast n: Int) async throws {
            if count >= n { return }
            await withCheckedContinuation { watchers.append((n, $0)) }
        }
    }

    @Test func reloadHooksRunWithoutHoldingThreadsOfThePool() async throws {
        // 8 hooks that each wait until all 8 have started: if a hook held one of the pool's
        // threads (as many as cores) while it ran, the others could not start and all would fail
        let fleet = try await Fleet()
        let count = 8
        let barrier = fleet.root + "/barrier"
        FileManager.default.createFile(atPath: barrier, contents: Data())
        let hook = ReloadHook.command(["/bin/sh", "-c",
            "echo x >> '\(barrier)'; i=0; while [ $(wc -l < '\(barrier)') -lt \(count) ]; do i=$((i+1)); [ $i -gt 300 ] && exit 1; sleep 0.05; done"])
        var rollers: [Roller] = []
        for i in 0..<count { rollers.append(try fleet.roller(try await fleet.agentStore("pool-\(i)").0, reloadHook: hook)) }
        let outcomes = try await withThrowingTaskGroup(of: RollOutcome.self) { group in
            for r in rollers { group.addTask { try await r.rollIfDue() } }
            return try await group.reduce(into: [RollOutcome]()) { $0.append($1) }
        }
        #expect(outcomes.allSatisfy { if case .rolled = $0 { true } else { false } })
    }

    @Test func aHungHookIsKilledAtItsTimeout() async throws {
        let started = Date()
        await #expect(throws: ReloadHook.Failure.self) {
            try await ReloadHook.command(["/bin/sleep", "30"]).run(certificatePath: "/dev/null", appId: "x", timeout: 1)
        }
        #expect(Date().timeIntervalSince(started) < 10)
    }

    // 8. Windows that guard a destructive step hold on both clocks (WindowElapsed)

    @Test func windowElapsedIsTheShorterOfTheWallAndTheBootTimeReading() {
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        func elapsed(wall: Double, bootSince: Double, bootNow: Double, sameBoot: Bool? = true) -> Double {
            WindowElapsed.seconds(wallSince: t0, wallNow: t0 + wall, bootSince: bootSince, bootNow: bootNow, sameBoot: sameBoot)
        }
        #expect(elapsed(wall: 2 * 86_400, bootSince: 5, bootNow: 605) == 600, "a step forward is capped by the boot-time clock")
        #expect(elapsed(wall: 2 * 86_400, bootSince: 5, bootNow: 605, sameBoot: nil) == 600, "with the boot unknown too")
        #expect(elapsed(wall: 600, bootSince: 0, bootNow: 86_400) == 600, "a step back only delays")
        #expect(elapsed(wall: 90_000, bootSince: 1_000, bootNow: 50_000, sameBoot: false) == 90_000, "another boot: the wall clock decides")
        #expect(elapsed(wall: 90_000, bootSince: 80_000, bootNow: 3_600, sameBoot: nil) == 90_000, "a reading that went back is another boot")
        #expect(elapsed(wall: -3_600, bootSince: 0, bootNow: 10) == 0, "never negative")
        #expect(WindowElapsed.sameBoot("a", "a") == true && WindowElapsed.sameBoot("a", "b") == false && WindowElapsed.sameBoot(nil, "a") == nil)
    }

    /// NTP steps the wall clock two days forward minutes after a roll: the retained old key must
    /// stay for the retention window of real time, or a stale write landing within the hour would
    /// find nothing left to undo it with.
    @Test func aClockStepForwardDoesNotEndTheRetentionWindow() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("clock-step-retained")
        let bootThumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let process = ManualClock(Date(timeIntervalSince1970: 1_000))  // the boot-time clock, apart from the wall clock
        do {
            let roller = try fleet.roller(store, monotonic: process)
            guard case .rolled = try await roller.rollIfDue() else { Issue.record("no roll"); return }
            #expect(try store.journal().credential(bootThumb)?.isRetained == true)
            fleet.rig.clock.advance(by: 2 * 86_400)  // the step
            for _ in 0..<3 {
                fleet.rig.clock.advance(by: 600)
                process.advance(by: 600)
                #expect(try await roller.watchRegistration().released.isEmpty, "released after a clock step, 30 minutes into its window")
            }
        }
        #expect(FileManager.default.fileExists(atPath: store.keyPath(bootThumb)))
        // a restart reads the window's boot-time reading back from the journal: still inside it
        let restarted = try fleet.roller(CredentialStore(path: store.path), monotonic: process)
        for _ in 0..<2 {
            fleet.rig.clock.advance(by: 600)
            process.advance(by: 600)
            #expect(try await restarted.watchRegistration().released.isEmpty, "released after a restart")
        }
        // a real day after the roll two agreeing checks release it (without a restart starting it again)
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow - 3_000)
        process.advance(by: RollPolicy().retainedKeyWindow - 3_000)
        _ = try await restarted.watchRegistration()
        fleet.rig.clock.advance(by: 600)
        process.advance(by: 600)
        #expect(try await restarted.watchRegistration().released == [bootThumb])
        #expect(!FileManager.default.fileExists(atPath: store.keyPath(bootThumb)))
    }

    /// After a reboot the boot-time readings cannot be compared: the first start carries each window
    /// over, crediting the wall-clock time it has run so far, so a host that reboots more often than
    /// the window still releases its retained keys; and a clock step after that start is caught again.
    @Test func aRebootCarriesTheRetentionWindowOverToTheNewBoot() async throws {
        let fleet = try await Fleet()
        for (name, downFor) in [("reboot-after-window", RollPolicy().retainedKeyWindow + 1), ("reboot-then-step", 3_600.0)] {
            let (store, bundle) = try await fleet.agentStore(name)
            let bootThumb = try bundle.signingCredential().certificate.sha1Thumbprint.hex
            do {
                let before = try fleet.roller(store, monotonic: ManualClock(Date(timeIntervalSince1970: 50_000)))
                guard case .rolled = try await before.rollIfDue() else { Issue.record("no roll"); return }
            }
            fleet.rig.clock.advance(by: downFor)
            // another boot whose clock reads *more* than the stamp: only the boot id tells the reboot
            let rebooted = ManualClock(Date(timeIntervalSince1970: 50_000 + 7_200))
            let roller = try fleet.roller(store, monotonic: rebooted)
            #expect(try store.journal().credential(bootThumb)?.retainedAtBootID == rebooted.bootID(), "\(name): the window was not carried over")
            if name == "reboot-then-step" { fleet.rig.clock.advance(by: 2 * 86_400) }  // a step right after the reboot
            _ = try await roller.watchRegistration()
            fleet.rig.clock.advance(by: 600)
            rebooted.advance(by: 600)
            let released = try await roller.watchRegistration().released
            if name == "reboot-after-window" {
                #expect(released == [bootThumb], "a reboot kept the retained key past its window")
            } else {
                #expect(released.isEmpty, "a clock step after a reboot ended the window (an hour and 10 minutes into it)")
            }
        }
    }

    @Test func bootIdsFromSystemdAndTheKernelAgree() {
        let kernel = "6f1b3b6a-58e3-4b1a-9b57-2b0f4c1e9a77", systemd = "6F1B3B6A58E34B1A9B572B0F4C1E9A77"
        #expect(SystemMonotonicClock.canonicalBootID(kernel + "\n") == SystemMonotonicClock.canonicalBootID(systemd))
        #expect(SystemMonotonicClock.canonicalBootID(systemd) == "6f1b3b6a58e34b1a9b572b0f4c1e9a77")
        #expect(SystemMonotonicClock.canonicalBootID("") == nil && SystemMonotonicClock.canonicalBootID("%b") == nil)
        #expect(SystemMonotonicClock().bootID().map { $0.count == 32 } ?? true)
    }

    /// The reload hook's grace counts from its first failure, not from the switch: an agent that
    /// died (or was paused) right after the switch and starts a day later must not remove the old
    /// key at the first failure it sees. And a clock step forward after the first failure does not
    /// use the grace up either.
    @Test func theReloadHooksGraceCountsFromItsFirstFailureOnBothClocks() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("hook-after-pause")
        var policy = RollPolicy()
        policy.reloadHookGrace = 3600
        let dies = PointHook(target: "hook reload#1")  // switched, and dead before the hook ran
        do {
            let first = try fleet.roller(CredentialStore(path: store.path, hook: dies.hook), policy: policy, reloadHook: .command(["/bin/false"]))
            await #expect(throws: SimulatedCrash.self) { try await first.rollIfDue() }
        }
        #expect(dies.didFire)
        #expect(try store.journal().roll?.phase == .switched)
        fleet.rig.clock.advance(by: 86_400)  // down for a day (the boot-time clock counts it too)
        let resumed = try fleet.roller(store, policy: policy, reloadHook: .command(["/bin/false"]))
        await #expect(throws: ReloadHook.Failure.self) { try await resumed.rollIfDue() }
        #expect(try fleet.graphKeys(bundle.appId).count == 2, "the old key was removed at the hook's first failure")
        #expect(try store.journal().roll?.reloadFailingSince == fleet.rig.clock.now(), "the first failure is journaled")

        // the wall clock steps a day forward ten minutes later: still inside the grace
        let (store2, bundle2) = try await fleet.agentStore("hook-clock-step")
        let process = ManualClock(Date(timeIntervalSince1970: 1_000))  // the boot-time clock, apart from the wall clock
        let stepped = try fleet.roller(store2, policy: policy, reloadHook: .command(["/bin/false"]), monotonic: process)
        await #expect(throws: ReloadHook.Failure.self) { try await stepped.rollIfDue() }
        fleet.rig.clock.advance(by: 86_400 + 600)
        process.advance(by: 600)
        await #expect(throws: ReloadHook.Failure.self) { try await stepped.rollIfDue() }
        #expect(try fleet.graphKeys(bundle2.appId).count == 2, "a clock step used the grace up")
        // an hour of real time after the first failure, the roll goes on (with an alarm)
        fleet.rig.clock.advance(by: 3_000)
        process.advance(by: 3_000)
        guard case .rolled = try await stepped.rollIfDue() else { Issue.record("no roll after the grace"); return }
        #expect(try fleet.graphKeys(bundle2.appId).count == 1)
    }

    /// A journal write that fails after its rename (the folder's fsync) leaves the new journal on
    /// disk: the roller's memory must follow it, or its next sweep destroys a key the journal on disk
    /// still needs and the next start refuses to run ("missing key").
    @Test func aJournalWriteThatFailsAfterItsRenameLeavesMemoryWithTheDisk() async throws {
        let fleet = try await Fleet()
        let (reference, _) = try await fleet.agentStore("sync-fails-reference")
        let probe = PointHook()
        _ = try await fleet.roller(CredentialStore(path: reference.path, hook: probe.hook)).rollIfDue()
        let points = probe.points
        let firstKey = try #require(points.firstIndex { $0.hasPrefix("create key.pem") }, "\(points)")
        let target = try #require(points[firstKey...].first { $0.hasPrefix("fsync-dir journal.json#") }, "\(points)")

        let (store, bundle) = try await fleet.agentStore("sync-fails")
        let fault = PointHook(target: target, fault: .ioError)
        do {
            let roller = try fleet.roller(CredentialStore(path: store.path, hook: fault.hook))
            await #expect(throws: (any Error).self) { try await roller.rollIfDue() }
            #expect(fault.didFire, "\(target) was not reached")
            #expect(roller.journal == (try store.journal()), "the roller's journal is not the one on disk")
            // the same process tries again (its sweep comes first), and is then restarted
            _ = try? await roller.rollIfDue()
        }
        let restarted = try fleet.roller(CredentialStore(path: store.path))
        _ = try await restarted.rollIfDue()
        #expect(try store.journal().roll == nil)
        let wrong = await fleet.lockout.violations(store, appId: bundle.appId, signIn: true)
        #expect(wrong.isEmpty, "\(wrong)")
    }
}

/// Advances the agent's wall clock, the emulator's clock and the process's boot-time clock together,
/// steps the agent's wall clock back a day once the first registration check has run, and stops the
/// daemon half an hour of process time later.
private final class StepBackSleeper: Sleeper, @unchecked Sendable {
    let agentWall: ManualClock, entra: ManualClock, process: ManualClock
    let checks: @Sendable () -> Double
    private let lock = NSLock()
    private(set) var checksAtStep: Double?
    private var processAtStep = 0.0

    init(agentWall: ManualClock, entra: ManualClock, process: ManualClock, checks: @escaping @Sendable () -> Double) {
        self.agentWall = agentWall
        self.entra = entra
        self.process = process
        self.checks = checks
    }

    var stepped: Double? { lock.withLock { checksAtStep } }

    func sleep(seconds: Double) async throws {
        try Task.checkCancellation()
        let stop: Bool = lock.withLock {
            if checksAtStep == nil, checks() >= 1 {
                checksAtStep = checks()
                processAtStep = process.monotonicSeconds()
                agentWall.advance(by: -86_400)
            }
            for c in [agentWall, entra, process] { c.advance(by: max(0, seconds)) }
            return checksAtStep != nil && process.monotonicSeconds() - processAtStep > 1_800
        }
        if stop { throw CancellationError() }
        await Task.yield()
    }
}

extension LockoutFindingsTests {
    /// The registration watch is scheduled on the monotonic clock: after the agent's wall clock steps
    /// a day back, the daemon still checks within its interval (≤ 10 minutes), not a day later.
    @Test func aClockStepBackDoesNotPutTheRegistrationWatchOff() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("watch-step-back")
        do { guard case .rolled = try await fleet.roller(store).rollIfDue() else { Issue.record("no roll"); return } }
        let agentWall = ManualClock(fleet.rig.clock.now())
        let process = ManualClock(Date(timeIntervalSince1970: 1_000))
        let metrics = MetricsRegistry.agent()
        let roller = try Roller(store: CredentialStore(path: store.path), transport: fleet.transport, clock: agentWall,
                                sleeper: ClockAdvancingSleeper(clock: fleet.rig.clock), metrics: metrics, random: { 0.5 }, monotonic: process)
        let appId = bundle.appId
        let sleeper = StepBackSleeper(agentWall: agentWall, entra: fleet.rig.clock, process: process,
                                      checks: { metrics.value("keyroll_registration_checks_total", ["app_id": appId]) ?? 0 })
        let daemon = AgentDaemon(rollers: [roller], clock: agentWall, sleeper: sleeper, signInCheckInterval: 600, monotonic: process)
        await daemon.run()  // until the sleeper stops it, half an hour of process time after the step
        let atStep = try #require(sleeper.stepped, "the daemon never ran a registration check")
        let after = metrics.value("keyroll_registration_checks_total", ["app_id": appId]) ?? 0
        #expect(after >= atStep + 2, "\(after - atStep) registration checks in the half hour after a step back (expected one every ≤ 10 minutes)")
    }
}
