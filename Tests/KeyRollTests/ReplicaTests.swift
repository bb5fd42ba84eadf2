import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

/// One app on several hosts: each replica provisioned from a manifest with `replicas: N`, imported
/// into its own store and rolled by its own roller (its own agent), all on one virtual clock.
final class ReplicatedApp: @unchecked Sendable {
    let fleet: Fleet
    let name: String
    private let lock = NSLock()
    private var _rollers: [ReplicaName: Roller] = [:]
    private(set) var appId = ""
    private(set) var objectId = ""

    init(_ fleet: Fleet, name: String = "web") {
        self.fleet = fleet
        self.name = name
    }

    var rollers: [ReplicaName: Roller] { lock.withLock { _rollers } }
    var live: [ReplicaName] { rollers.keys.sorted() }

    /// Provisions (or scales to) `replicas` and starts a roller for every replica issued now.
    @discardableResult
    func scale(to replicas: Int, policy: RollPolicy = .init(), random: @escaping @Sendable (ReplicaName) -> Double = { _ in 0.5 }) async throws -> [ReplicaName] {
        let app = Manifest.App(name: name, bundlePath: fleet.root + "/bundles/\(name).json", replicas: replicas)
        let report = try await ProvisionRun(provisioner: fleet.provisioner, manifest: Manifest(apps: [app]), log: try ProvisionLog(path: fleet.root + "/\(name).log")).execute()
        guard case .replicas(let id, _, let issued, _, _)? = report.outcomes[name] else { throw LabError("provisioning failed: \(report.failures)") }
        appId = id
        for r in issued {
            let bundle = try BootstrapBundle.decode(Array(try Data(contentsOf: URL(fileURLWithPath: app.bundlePath(for: r)))))
            objectId = bundle.applicationObjectId
            let store = CredentialStore(path: fleet.root + "/\(name)-\(r)")
            try Roller.importBundle(bundle, into: store, now: fleet.rig.clock.now())
            let value = random(r)
            let roller = try fleet.roller(store, policy: policy, random: value)
            lock.withLock { _rollers[r] = roller }
        }
        return issued
    }

    /// Its host is gone: the agent stops (the roller is dropped, releasing the store).
    func stop(_ r: ReplicaName) { lock.withLock { _rollers[r] = nil } }

    /// Every way a replica can be locked out, and every way siblings can hurt each other: for each
    /// live replica the LockoutCheck (a token for its published key); Graph lists each live
    /// replica's active key exactly once; no key in Graph is held by two replicas.
    /// Without self-read (`duplicatesAllowed`), a lost addKey answer cannot be looked up, and the
    /// retry registers the certificate a second time: room, never a key (docs/replicas.md).
    func violations(duplicatesAllowed: Bool = false) async throws -> [String] {
        var wrong: [String] = []
        let registered = try fleet.graphKeys(appId)
        let counts = Dictionary(grouping: registered, by: \.sha1.hex).mapValues(\.count)
        for (r, roller) in rollers.sorted(by: { $0.key < $1.key }) {
            wrong += await fleet.lockout.violations(roller.store, appId: appId, signIn: true).map { "\(r): \($0)" }
            let active = roller.journal.active
            if duplicatesAllowed { if counts[active] == nil { wrong.append("\(r): its active key is not registered") }; continue }
            if counts[active] != 1 { wrong.append("\(r): its active key is registered \(counts[active] ?? 0) times") }
            for k in registered where k.sha1.hex == active {
                if CredentialName.parse(displayName: k.displayName).replica != r { wrong.append("\(r): its key is named \(k.displayName ?? "-")") }
            }
        }
        if !duplicatesAllowed { for (t, n) in counts where n > 1 { wrong.append("key \(t) registered \(n) times") } }
        return wrong
    }
}

@Suite struct RemovalGuardTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func journal(_ thumbprints: [String]) -> Journal {
        var j = Journal(active: CredentialRecord(thumbprint: thumbprints[0], notBefore: now, notAfter: now + 86_400, keyId: nil, origin: .bootstrap))
        for t in thumbprints.dropFirst() { j.credentials.append(CredentialRecord(thumbprint: t, notBefore: now, notAfter: now + 86_400, keyId: nil, origin: .keyroll)) }
        return j
    }

    func key(_ keyId: String, thumbprint: String, name: String) -> KeyCredential {
        KeyCredential(keyId: keyId, customKeyIdentifier: Base64.encode(Thumbprint(hex: thumbprint, algorithm: .sha1)!.bytes), displayName: name,
                      type: "AsymmetricX509Cert", usage: "Verify")
    }

    @Test func anAgentRemovesOnlyItsOwnKeysOnItsOwnReplica() throws {
        let mine = String(repeating: "A", count: 40), sibling = String(repeating: "B", count: 40), boot = String(repeating: "C", count: 40)
        let r1 = try ReplicaName("r1")
        let keys = [key("k-mine", thumbprint: mine, name: "CN=keyroll-app@r1"), key("k-sib", thumbprint: sibling, name: "CN=keyroll-app@r2"),
                    key("k-boot", thumbprint: boot, name: "CN=keyroll-bootstrap@r1"), key("k-odd", thumbprint: mine, name: "CN=keyroll-app@r2")]
        let j = journal([boot, mine])
        #expect(throws: Never.self) { try RemovalGuard.check(keyId: "k-mine", in: keys, journal: j, replica: r1) }
        #expect(throws: Never.self) { try RemovalGuard.check(keyId: "k-boot", in: keys, journal: j, replica: r1) }
        #expect(throws: RemovalGuard.Refused.self, "a sibling's key") { try RemovalGuard.check(keyId: "k-sib", in: keys, journal: j, replica: r1) }
        #expect(throws: RemovalGuard.Refused.self, "our thumbprint under a sibling's name") { try RemovalGuard.check(keyId: "k-odd", in: keys, journal: j, replica: r1) }
        #expect(throws: RemovalGuard.Refused.self, "a key Graph does not list") { try RemovalGuard.check(keyId: "k-gone", in: keys, journal: j, replica: r1) }
        #expect(throws: RemovalGuard.Refused.self, "a single-host agent never removes a replica's key") {
            try RemovalGuard.check(keyId: "k-mine", in: keys, journal: j, replica: nil)
        }
    }
}

@Suite struct ReplicaTests {
    /// Entra's weather: propagation delay, throttling, transient errors and lost answers on every
    /// write an agent or the provisioner makes.
    static func weather(selfRead: Bool = true) -> EmulatorSettings {
        var s = EmulatorSettings()
        s.allowSelfRead = selfRead
        s.propagationDelayMin = 5
        s.propagationDelayMax = 300
        s.throttling.enabled = true
        s.throttling.writesPerWindow = 40
        s.seed = 16
        return s
    }

    static let faults = [
        FaultRule(route: "token", action: .status(503, retryAfter: nil), probability: 0.05),
        FaultRule(route: "POST /addKey", action: .dropResponse, probability: 0.15),
        FaultRule(route: "POST /addKey", action: .status(429, retryAfter: 3), probability: 0.10),
        FaultRule(route: "POST /removeKey", action: .dropResponse, probability: 0.15),
        FaultRule(route: "PATCH /v1.0/applications", action: .status(503, retryAfter: 2), probability: 0.15),
    ]

    /// Rolls every live replica that is due, all at once (siblings roll at the same moment), while
    /// `alongside` runs (a scale-out or scale-in). A failed roll is retried at a later round.
    func round(_ app: ReplicatedApp, alongside: (@Sendable () async throws -> Void)? = nil) async throws -> Int {
        let now = app.fleet.rig.clock.now()
        let due = app.rollers.filter { $0.value.nextRollDate() <= now }
        return try await withThrowingTaskGroup(of: Int.self) { group in
            for (_, roller) in due {
                group.addTask {
                    do { if case .rolled = try await roller.rollIfDue() { return 1 } } catch {}
                    return 0
                }
            }
            if let alongside { group.addTask { try await alongside(); return 0 } }
            return try await group.reduce(0, +)
        }
    }

    @Test(arguments: [true, false])
    func threeReplicasRollForThreeYearsThroughWeatherScalingOutAndIn(selfRead: Bool) async throws {
        let fleet = try await Fleet(settings: Self.weather(selfRead: selfRead))
        let app = ReplicatedApp(fleet)
        let policy = { var p = RollPolicy(); p.verifyTimeout = 1800; return p }()
        // r1 and r2 share their jitter, so they roll at the same moments; r3 has its own
        let jitter: @Sendable (ReplicaName) -> Double = { $0.number == 3 ? 0.9 : ($0.number == 4 ? 0.2 : 0.5) }
        try await app.scale(to: 3, policy: policy, random: jitter)
        fleet.rig.emulator.setFaults(Self.faults)
        fleet.rig.clock.advance(by: 301)  // the bootstraps propagate before the agents start
        let start = fleet.rig.clock.now()
        let end = start.addingTimeInterval(3 * 365 * 86_400)
        var scaledOut = false, scaledIn = false, rolls = 0, rounds = 0
        var sameMoment = 0
        while fleet.rig.clock.now() < end {
            let next = app.rollers.values.map { $0.nextRollDate() }.min()!
            fleet.rig.clock.set(max(fleet.rig.clock.now(), min(next, end)))
            if fleet.rig.clock.now() >= end { break }
            let now = fleet.rig.clock.now()
            if app.rollers.values.filter({ $0.nextRollDate() <= now }).count > 1 { sameMoment += 1 }
            var alongside: (@Sendable () async throws -> Void)?
            if !scaledOut, now > start.addingTimeInterval(365 * 86_400) {
                scaledOut = true  // scale out while the siblings roll: the provisioner's PATCH races their addKey/removeKey
                alongside = { try await app.scale(to: 4, policy: policy, random: jitter) }
            } else if !scaledIn, now > start.addingTimeInterval(2 * 365 * 86_400) {
                scaledIn = true  // scale in: r2's host goes away, the provisioner retires its keys while the others roll
                app.stop(.numbered(2))
                let objectId = app.objectId, appId = app.appId
                alongside = {
                    let target = Application(id: objectId, appId: appId, displayName: "web")
                    try await ReplicaRetirement(provisioner: fleet.provisioner, auditLogPath: fleet.root + "/audit.log")
                        .run(application: target, replica: .numbered(2), force: true, reason: "scale in", operator: "test")
                }
            }
            rolls += try await round(app, alongside: alongside)
            rounds += 1
            if scaledOut, app.rollers[.numbered(4)] != nil, alongside != nil { fleet.rig.clock.advance(by: 301) }  // r4's bootstrap propagates
            fleet.rig.emulator.setFaults([])  // the check signs in once per replica: no injected 503 may fail it
            let wrong = try await app.violations(duplicatesAllowed: !selfRead)
            fleet.rig.emulator.setFaults(Self.faults)
            #expect(wrong.isEmpty, "round \(rounds) at \(UTCTime.iso(fleet.rig.clock.now())): \(wrong); events: \(fleet.events.all.suffix(30).map { "\(UTCTime.iso($0.time)) \($0.kind) \($0.detail)" })")
            if !wrong.isEmpty { break }
            #expect(rounds < 500, "the run does not converge")
            if rounds >= 500 { break }
        }
        #expect(scaledOut && scaledIn)
        #expect(app.live.map(\.rawValue) == ["r1", "r3", "r4"])
        // every live replica rolled through the years; the retired one left nothing behind
        for (r, roller) in app.rollers { #expect(roller.journal.history.count >= 3, "\(r) rolled \(roller.journal.history.count) times") }
        let keys = try fleet.graphKeys(app.appId)
        #expect(!keys.contains { CredentialName.parse(displayName: $0.displayName).replica == .numbered(2) }, "r2's keys were retired")
        #expect(sameMoment > 0, "siblings rolled at the same moment")
        // each replica's audit row: healthy; the app is healthy
        let audit = try await Auditor(graph: fleet.provisioner.graph).scan(now: fleet.rig.clock.now(), expiringWithinDays: 30)
        let row = try #require(audit.apps.first { $0.appId == app.appId })
        #expect(row.replicas.map(\.replica.rawValue) == ["r1", "r3", "r4"])
        #expect(row.replicas.allSatisfy { $0.condition == .healthy }, "\(row.replicas)")
        // without self-read a lost addKey answer leaves a second registration the audit lists as a leftover
        #expect(row.worst == .healthy || (!selfRead && row.worst == .leftovers), "\(row.worst)")
        // the jitter spreads the roll dates: r3 plans its rolls apart from r1
        let plans = app.rollers.mapValues { $0.nextRollDate() }
        let spread = plans[.numbered(3)]!.timeIntervalSince(plans[.numbered(1)]!)
        print("3 replicas × 3 years: \(rolls) rolls in \(rounds) rounds, \(sameMoment) rounds with siblings rolling at once; r3 rolls \(String(format: "%.1f", spread / 86_400)) days after r1 (jitter)")
        #expect(abs(spread) > 86_400)
        let kinds = Set(fleet.events.all.map(\.kind))
        #expect(kinds.contains(.settling) && kinds.contains(.notYetActive), "the settle and the propagation were felt: \(kinds)")
    }

    /// The race the settle closes: a privileged PATCH (a provisioner scaling out) built on a read
    /// made before a sibling's addKey lands after that sibling has verified its new key. Without
    /// the settle the sibling has already removed its old key: the PATCH brings back the old key,
    /// whose private key is destroyed, and drops the new one — locked out. With the settle the
    /// PATCH lands while the old key still works; the sibling sees its new key gone, registers it
    /// again, proves it, and only then removes the old one.
    @Test(arguments: [150.0, 0.0])
    func theSettleOutlastsAPatchBuiltBeforeTheAddKey(settle: Double) async throws {
        let fleet = try await Fleet()
        let app = ReplicatedApp(fleet)
        var policy = RollPolicy()
        policy.settle = settle
        try await app.scale(to: 2, policy: policy)
        let store = try #require(app.rollers[.numbered(1)]).store
        _ = try await app.rollers[.numbered(1)]?.roll(reason: "bootstrap")
        app.stop(.numbered(1))  // r1's agent restarts below with a sleeper that lets the PATCH land
        // The provisioner reads the list now (its PATCH will be built on it) …
        let stale = try fleet.graphKeys(app.appId).map { k -> JSONValue in
            .object(["keyId": .string(k.keyId), "type": .string(k.type), "usage": .string(k.usage), "key": .string(Base64.encode(k.key)),
                     "displayName": .string(k.displayName ?? "")])
        }
        let landed = Flag()
        let land: @Sendable () async -> Void = {
            guard landed.set() else { return }
            try? await fleet.provisioner.graph.updateApplication(id: app.objectId, ["keyCredentials": .array(stale)])
        }
        // … and r1 rolls again; the PATCH lands while r1 waits out the settle, or (no settle) just after its roll.
        let roller = try Roller(store: store, policy: policy, transport: fleet.transport, clock: fleet.rig.clock,
                                sleeper: LandingSleeper(clock: fleet.rig.clock, atLeast: 100, land: land), random: { 0.5 })
        _ = try await roller.roll(reason: "due")
        await land()
        let wrong = await fleet.lockout.violations(store, appId: app.appId, signIn: true)
        if settle > 0 {
            #expect(wrong.isEmpty, "with the settle: \(wrong)")
            #expect(try fleet.graphKeys(app.appId).contains { $0.sha1.hex == roller.journal.active })
        } else {
            #expect(!wrong.isEmpty, "without the settle the stale PATCH must lock r1 out (else this test proves nothing)")
        }
    }

    /// Liveness is evidence, never key age: at 0.76 of their keys' lives (with rollAtFraction 0.75 the
    /// old age rule called both replicas stale), a replica whose key signed in an hour ago is not
    /// retired without --force; one that has not signed in for a day is, and exactly its keys go.
    @Test func retireRefusesAReplicaThatSignedInAnHourAgo() async throws {
        let fleet = try await Fleet()
        let app = ReplicatedApp(fleet)
        var policy = RollPolicy()
        policy.rollAtFraction = 0.75
        try await app.scale(to: 2, policy: policy)
        for r in app.rollers.values { _ = try await r.roll(reason: "bootstrap") }
        let target = Application(id: app.objectId, appId: app.appId, displayName: "web")
        let retirement = ReplicaRetirement(provisioner: fleet.provisioner, auditLogPath: fleet.root + "/audit.log")
        fleet.rig.clock.advance(by: 0.76 * 365 * 86_400)
        let audit = try await Auditor(graph: fleet.provisioner.graph).scan(now: fleet.rig.clock.now(), expiringWithinDays: 30)
        let rows = try #require(audit.apps.first { $0.appId == app.appId }).replicas
        #expect(rows.allSatisfy { $0.condition == .stale }, "by key age both look stale: \(rows.map(\.condition))")
        // without AuditLog.Read.All there is no evidence either way: refused
        await #expect(throws: ReplicaRetirement.Refused.self) {
            try await retirement.run(application: target, replica: .numbered(2), force: false, reason: "t", operator: "test")
        }
        try fleet.rig.emulator.grant([.applicationReadWriteAll, .auditLogReadAll], toAppId: fleet.provisioner.graph.tokens.clientID)
        await fleet.provisioner.graph.tokens.invalidate()  // a new token carries the new role
        try await app.rollers[.numbered(1)]!.checkSignIn()  // r1's agent: its registration check signs in
        fleet.rig.clock.advance(by: 3600)
        let before = try fleet.graphKeys(app.appId)
        do {
            _ = try await retirement.run(application: target, replica: .numbered(1), force: false, reason: "t", operator: "test")
            Issue.record("a replica that signed in an hour ago was retired")
        } catch let refused as ReplicaRetirement.Refused {
            #expect(refused.description.contains("is live") && refused.description.contains("signed in at"), "\(refused)")
        }
        #expect(try fleet.graphKeys(app.appId) == before, "nothing was removed")
        // r2 has not signed in since its roll, 277 days ago: retired on evidence, only its key
        let r2Key = try #require(app.rollers[.numbered(2)]).journal.active
        let removed = try await retirement.run(application: target, replica: .numbered(2), force: false, reason: "host gone", operator: "test")
        #expect(removed.count == 1)
        #expect(try fleet.graphKeys(app.appId).map(\.sha1.hex) == [try #require(app.rollers[.numbered(1)]).journal.active])
        #expect(!(try fleet.graphKeys(app.appId).contains { $0.sha1.hex == r2Key }))
        let trail = try String(contentsOfFile: fleet.root + "/audit.log", encoding: .utf8)
        #expect(trail.contains("no sign-in with its keys since"), "the evidence is in the audit trail")
    }

    @Test func theEmulatorsCredentialLimitHoldsRollsBackWithoutLockingAnyoneOut() async throws {
        var s = EmulatorSettings.selfReading
        s.maxCredentialItems = 4  // 3 replicas' keys and room for one roll at a time
        let fleet = try await Fleet(settings: s)
        let app = ReplicatedApp(fleet)
        try await app.scale(to: 3)
        for roller in app.rollers.values { _ = try await roller.roll(reason: "bootstrap") }
        #expect(try await round(app) == 0, "not due yet")
        // someone registers one more certificate: the app is full
        let extra = try fleet.rig.credential("manual", days: 3650)
        try await fleet.provisioner.mergeKeyCredential(objectID: app.objectId, certificate: extra.certificate, keyId: UUID().uuidString.lowercased(), displayName: "CN=manual")
        fleet.rig.clock.advance(by: 300 * 86_400)
        #expect(try await round(app) == 0, "every addKey meets Directory_ResourceSizeExceeded")
        #expect(try await app.violations().isEmpty, "a roll held back keeps its old key")
        #expect(try fleet.graphKeys(app.appId).count == 4)
        try await fleet.provisioner.removeKeyCredentials(objectID: app.objectId) { $0.displayName == "CN=manual" }
        var rolled = 0, rounds = 0
        while rolled < 3, rounds < 10 {
            fleet.rig.clock.advance(by: 3600)  // a roll refused for room retries later (retryAfterAbandoned)
            rolled += try await round(app)  // siblings due at once: some wait for room, none is hurt
            rounds += 1
            #expect(try await app.violations().isEmpty)
            #expect(try fleet.graphKeys(app.appId).count <= 4)
        }
        #expect(rolled == 3, "every replica rolled once there was room (\(rounds) rounds)")
    }
}

/// Runs `land` while the agent sleeps at least `atLeast` seconds (the replica settle), and moves the
/// virtual clock like ``ClockAdvancingSleeper``.
struct LandingSleeper: Sleeper {
    let clock: ManualClock
    let atLeast: Double
    let land: @Sendable () async -> Void
    func sleep(seconds: Double) async throws {
        if seconds >= atLeast { await land() }
        clock.advance(by: max(0, seconds))
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false
    /// True the first time only.
    func set() -> Bool { lock.withLock { defer { done = true }; return !done } }
}
