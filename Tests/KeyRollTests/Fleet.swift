import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import TestSupport

/// An emulator, a provisioner with Application.ReadWrite.All, and helpers to make agents.
final class Fleet: @unchecked Sendable {
    let rig: EmulatorRig
    let provisioner: Provisioner
    let transport: InProcessTransport
    let root: String
    let events = EventLog()
    let lockout: LockoutCheck

    init(settings: EmulatorSettings = .selfReading) async throws {
        rig = try EmulatorRig(settings: settings)
        let cred = try rig.credential("provisioner", days: 3650)
        let reg = try rig.emulator.register(tenantID: rig.tenant.id, displayName: "provisioner", roles: [.applicationReadWriteAll], certificates: [cred.certificate])
        let clients = LabClients(emulator: rig.emulator, base: rig.base, tenantID: rig.tenant.id)
        transport = clients.transport
        provisioner = clients.provisioner(as: reg.appId, cred)
        lockout = LockoutCheck(emulator: rig.emulator, base: rig.base)
        root = try Tools.temporaryDirectory("keyroll-fleet")
    }

    /// Provisions `name` and returns its bundle, not yet imported.
    func bundle(_ name: String) async throws -> BootstrapBundle { try await provisioner.provision(name: name).bundle }

    /// Provisions `name` and imports its bundle into a fresh store.
    func agentStore(_ name: String) async throws -> (CredentialStore, BootstrapBundle) {
        let result = try await provisioner.provision(name: name)
        let store = CredentialStore(path: root + "/" + name)
        try Roller.importBundle(result.bundle, into: store, now: rig.clock.now())
        return (store, result.bundle)
    }

    /// `monotonic`: the process's own clock, when a test moves the wall clock without it (a step).
    func roller(_ store: CredentialStore, policy: RollPolicy = .init(), clock: (any WallClock)? = nil, random: Double = 0.5,
                reloadHook: ReloadHook? = nil, afterTransition: (@Sendable (RollPhase?) -> Void)? = nil, monotonic: (any MonotonicClock)? = nil) throws -> Roller {
        let events = self.events
        return try Roller(store: store, policy: policy, transport: transport, clock: clock ?? rig.clock, sleeper: ClockAdvancingSleeper(clock: rig.clock),
                          observer: { events.append($0) }, reloadHook: reloadHook, random: { random }, afterTransition: afterTransition, monotonic: monotonic)
    }

    /// Whether the token endpoint accepts `credential` for `appId` now.
    func accepts(_ appId: String, _ credential: SigningCredential) async -> Bool { await lockout.accepts(appId, credential) }

    /// Keys whose private key is on disk (whole and parseable), that Graph lists, and that the token
    /// endpoint accepts now: what keeps the app from being locked out.
    func usableKeys(_ store: CredentialStore, _ appId: String) async throws -> [String] {
        let registered = Set(try graphKeys(appId).map(\.sha1.hex))
        var usable: [String] = []
        for t in store.keysOnDisk().sorted() where registered.contains(t) {
            if let c = try? store.credential(t), await accepts(appId, c) { usable.append(t) }
        }
        return usable
    }

    /// Files in the store (and its keys folder) whose names show an interrupted atomic write.
    func temporaryFiles(_ store: CredentialStore) -> [String] {
        [store.path, store.path + "/keys"].flatMap { dir in
            ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.contains(".tmp-") }
        }
    }

    func graphKeys(_ appId: String) throws -> [StoredKeyCredential] { try rig.emulator.keyCredentials(appId: appId) }
}

final class EventLog: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [AgentEvent] = []
    func append(_ e: AgentEvent) { lock.withLock { items.append(e) } }
    var all: [AgentEvent] { lock.withLock { items } }
    func kinds(_ appId: String) -> [AgentEvent.Kind] { all.filter { $0.appId == appId }.map(\.kind) }
}
