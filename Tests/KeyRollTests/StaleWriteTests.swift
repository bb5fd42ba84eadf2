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

/// A privileged whole-list PATCH of keyCredentials built on an older read (a provisioner paused
/// between its read and its send, a write Graph applies late) can land at any moment of an agent's
/// life: no settle fences it. These tests land one at each moment that matters and check that the
/// agent recovers on evidence, in both self-read modes (an app may, or may not, read its own
/// application object).
@Suite struct StaleWriteTests {
    static func settings(selfRead: Bool) -> EmulatorSettings {
        var s = EmulatorSettings()
        s.allowSelfRead = selfRead
        return s
    }

    /// The body of a whole-list PATCH built on the list Graph holds now (what a provisioner reading
    /// now would send later).
    static func staleList(_ fleet: Fleet, _ appId: String) throws -> [JSONValue] {
        try fleet.graphKeys(appId).map { k -> JSONValue in
            .object(["keyId": .string(k.keyId), "type": .string(k.type), "usage": .string(k.usage), "key": .string(Base64.encode(k.key)),
                     "displayName": .string(k.displayName ?? "")])
        }
    }

    static func land(_ fleet: Fleet, objectId: String, _ list: [JSONValue]) async throws {
        try await fleet.provisioner.graph.updateApplication(id: objectId, ["keyCredentials": .array(list)])
    }

    /// The finding the settle cannot close: the PATCH lands after the roll removed the old key. The
    /// old key comes back, the new one is gone, and the published key no longer signs in. The
    /// watch sees it, re-registers the active key with a proof by the retained old key, proves it,
    /// and removes the old key again.
    @Test(arguments: [true, false])
    func aStaleWriteAfterTheRollIsRepairedByTheWatch(selfRead: Bool) async throws {
        let fleet = try await Fleet(settings: Self.settings(selfRead: selfRead))
        let (store, bundle) = try await fleet.agentStore("late-\(selfRead)")
        let roller = try fleet.roller(store)
        _ = try await roller.roll(reason: "bootstrap")
        let stale = try Self.staleList(fleet, bundle.appId)  // the provisioner reads [K1] …
        fleet.rig.clock.advance(by: 300 * 86_400)
        guard case .rolled = try await roller.rollIfDue() else { Issue.record("the roll did not finish"); return }
        let active = roller.journal.active
        try await Self.land(fleet, objectId: bundle.applicationObjectId, stale)  // … and its PATCH lands now
        let before = await fleet.lockout.violations(store, appId: bundle.appId, signIn: true)
        #expect(!before.isEmpty, "the stale write must strand the published key (else this test proves nothing)")
        let report = try await roller.watchRegistration()
        #expect(report.repaired)
        #expect(await fleet.lockout.violations(store, appId: bundle.appId, signIn: true).isEmpty)
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [active], "only the active key is registered: the old one was removed again")
        #expect(roller.journal.repair == nil)
        #expect(roller.journal.history.last?.outcome.hasPrefix("repaired") == true)
        #expect(fleet.events.kinds(bundle.appId).contains(.repaired))
    }

    /// The PATCH lands while the agent waits out the settle, before the switch: the new key is
    /// never published while dropped; the roll goes back to `stored`, registers it again, proves it
    /// and settles again.
    @Test(arguments: [true, false])
    func aStaleWriteDuringTheSettleSendsTheRollBackToStored(selfRead: Bool) async throws {
        let fleet = try await Fleet(settings: Self.settings(selfRead: selfRead))
        let (store, bundle) = try await fleet.agentStore("settle-\(selfRead)")
        _ = try await fleet.roller(store).roll(reason: "bootstrap")
        let stale = try Self.staleList(fleet, bundle.appId)
        let published = Recorder<String>()
        let landed = Flag()
        let land: @Sendable () async -> Void = {
            guard landed.set() else { return }
            published.value = store.published()?.certificate.sha1Thumbprint.hex
            try? await Self.land(fleet, objectId: bundle.applicationObjectId, stale)
        }
        fleet.rig.clock.advance(by: 300 * 86_400)
        let roller = try Roller(store: CredentialStore(path: store.path), transport: fleet.transport, clock: fleet.rig.clock,
                                sleeper: LandingSleeper(clock: fleet.rig.clock, atLeast: 100, land: land), random: { 0.5 })
        let old = roller.journal.active
        guard case .rolled = try await roller.roll(reason: "due") else { Issue.record("the roll did not finish"); return }
        #expect(landed.set() == false, "the PATCH landed during the settle")
        #expect(published.value == old, "during the settle the application still had the old key")
        #expect(await fleet.lockout.violations(store, appId: bundle.appId, signIn: true).isEmpty)
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [roller.journal.active])
        #expect(roller.journal.history.last?.outcome == "rolled")
    }

    /// A PATCH read after the agent's addKey and landing after its removeKey brings the bootstrap
    /// back: a live 2-day credential whose private key may still sit in the provisioner's bundle
    /// folder. The watch removes it again.
    @Test(arguments: [true, false])
    func aBootstrapBroughtBackByALatePatchIsRemovedAgain(selfRead: Bool) async throws {
        let fleet = try await Fleet(settings: Self.settings(selfRead: selfRead))
        let (store, bundle) = try await fleet.agentStore("boot-\(selfRead)")
        let stale = Recorder<[JSONValue]>()
        let roller = try Roller(store: store, transport: fleet.transport, clock: fleet.rig.clock, sleeper: ClockAdvancingSleeper(clock: fleet.rig.clock),
                                observer: { e in if e.kind == .switched { stale.value = try? Self.staleList(fleet, bundle.appId) } }, random: { 0.5 })
        let bootstrap = roller.journal.active
        _ = try await roller.roll(reason: "bootstrap")
        try await Self.land(fleet, objectId: bundle.applicationObjectId, try #require(stale.value))
        #expect(try fleet.graphKeys(bundle.appId).contains { $0.sha1.hex == bootstrap }, "the bootstrap is back (else this test proves nothing)")
        let report = try await roller.watchRegistration()
        #expect(report.removedAgain == [bootstrap])
        #expect(try fleet.graphKeys(bundle.appId).map(\.sha1.hex) == [roller.journal.active])
        #expect(await fleet.lockout.violations(store, appId: bundle.appId, signIn: true).isEmpty)
    }

    /// A retained key is destroyed only after its window, and only by a check that has just seen
    /// the active key registered.
    @Test func aRetainedKeyIsReleasedOnlyAfterItsWindowOnEvidence() async throws {
        let fleet = try await Fleet()
        let (store, bundle) = try await fleet.agentStore("release")
        let roller = try fleet.roller(store)
        let bootstrap = roller.journal.active
        _ = try await roller.roll(reason: "bootstrap")
        #expect(roller.journal.credential(bootstrap)?.isRetained == true)
        #expect(store.keysOnDisk().contains(bootstrap), "retained: the private key stays")
        #expect(try await roller.watchRegistration().released.isEmpty, "inside the window nothing is released")
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        // the active key is dropped: the check cannot see it registered, so nothing is released
        let active = roller.journal.active
        _ = try await fleet.provisioner.removeKeyCredentials(objectID: bundle.applicationObjectId) { $0.matches(thumbprint: active) }
        _ = try? await roller.watchRegistration()
        #expect(store.keysOnDisk().contains(bootstrap), "no evidence that the active key is registered: the retained key stays")
        _ = store
    }

    /// The wait before the switch is a wait on the monotonic clock: a forward step of the wall
    /// clock (NTP, a VM resumed) in the middle of it does not shorten it. Real time.
    @Test func aForwardClockStepDuringTheSettleDoesNotShortenIt() async throws {
        let fleet = try await Fleet()
        let (store, _) = try await fleet.agentStore("clockstep")
        _ = try await fleet.roller(store).roll(reason: "bootstrap")
        fleet.rig.clock.advance(by: 300 * 86_400)
        var policy = RollPolicy()
        policy.settle = 2
        let marks = Recorder<[String: ContinuousClock.Instant]>()
        marks.value = [:]
        let roller = try Roller(store: CredentialStore(path: store.path), policy: policy, transport: fleet.transport, clock: fleet.rig.clock,
                                sleeper: TaskSleeper(), observer: { e in
                                    marks.update { $0?[e.kind.rawValue] = .now }
                                    if e.kind == .settling { fleet.rig.clock.advance(by: 3600) }  // the wall clock steps an hour ahead
                                }, random: { 0.5 }, monotonic: SystemMonotonicClock())
        guard case .rolled = try await roller.roll(reason: "due") else { Issue.record("the roll did not finish"); return }
        let m = try #require(marks.value)
        let settled = try #require(m["switched"]) - (try #require(m["settling"]))
        #expect(settled >= .seconds(2), "the settle lasted \(settled)")
    }

    /// A provisioner paused between its read and its PATCH (here: its read answer is held back
    /// while an agent adds a key) must not send the list it read: it reads again.
    @Test func aBodyBuiltOnAStaleReadIsBuiltAgainBeforeItIsSent() async throws {
        let fleet = try await Fleet()
        let (_, bundle) = try await fleet.agentStore("basis")
        let cred = try fleet.rig.credential("paused-provisioner", days: 3650)
        let reg = try fleet.rig.emulator.register(tenantID: fleet.rig.tenant.id, displayName: "paused", roles: [.applicationReadWriteAll], certificates: [cred.certificate])
        let added = try fleet.rig.credential("added-meanwhile", days: 300)
        let pausing = PausingTransport(inner: fleet.transport) {
            // while the provisioner is paused, another writer adds a key
            try? await fleet.provisioner.mergeKeyCredential(objectID: bundle.applicationObjectId, certificate: added.certificate,
                                                            keyId: UUID().uuidString.lowercased(), displayName: "CN=meanwhile")
            try? await Task.sleep(for: .milliseconds(600))
        }
        let endpoints = EntraEndpoints(authorityHost: fleet.rig.base, tenant: fleet.rig.tenant.id, graphBaseURL: fleet.rig.base + "/v1.0")
        var graph = GraphClient(endpoints: endpoints, tokens: TokenProvider(endpoints: endpoints, clientID: reg.appId, transport: pausing, clock: fleet.rig.clock),
                                auth: .certificate(cred), transport: pausing, clock: fleet.rig.clock)
        graph.maximumBasisAge = 0.3
        try await graph.updateKeyCredentials(id: bundle.applicationObjectId) { current in current.map { k in
            JSONValue.object(["keyId": .string(k.keyId), "type": .string(k.type ?? ""), "usage": .string(k.usage ?? ""), "key": .string(k.key ?? ""),
                              "displayName": .string(k.displayName ?? "")])
        } }
        #expect(pausing.paused == 1)
        #expect(try fleet.graphKeys(bundle.appId).contains { $0.sha1 == added.certificate.sha1Thumbprint }, "the key added while the provisioner was paused survives its PATCH")
    }
}

/// Holds back the first answer to a read of an application's keyCredentials while `pause` runs.
final class PausingTransport: HTTPTransport, @unchecked Sendable {
    let inner: any HTTPTransport
    let pause: @Sendable () async -> Void
    private let lock = NSLock()
    private var _paused = 0
    var paused: Int { lock.withLock { _paused } }

    init(inner: any HTTPTransport, pause: @escaping @Sendable () async -> Void) {
        self.inner = inner
        self.pause = pause
    }

    func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        let response = try await inner.send(request, timeout: timeout)
        let first = request.method == "GET" && request.url.contains("keyCredentials") && lock.withLock { () -> Bool in
            guard _paused == 0 else { return false }
            _paused = 1
            return true
        }
        if first { await pause() }
        return response
    }
}

final class Recorder<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var _value: T?
    var value: T? {
        get { lock.withLock { _value } }
        set { lock.withLock { _value = newValue } }
    }
    func update(_ f: (inout T?) -> Void) { lock.withLock { f(&_value) } }
}
