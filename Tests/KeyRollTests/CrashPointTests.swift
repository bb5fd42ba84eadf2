import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import PKCS11
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The process "died" here: every side effect after it is refused, as in a real crash.
struct SimulatedCrash: Error {}

/// What a trial does when the roll reaches its point.
enum Fault: String, CaseIterable, Sendable {
    /// The process dies just before the side effect (nothing after it happens).
    case crash
    /// An HTTP answer is lost after the server applied the request; the process goes on.
    case lostAnswer
    /// The file-system call fails with ENOSPC; the process goes on, and space returns.
    case noSpace
    /// The file-system call fails with EIO; the process goes on.
    case ioError
    /// A PKCS#11 call that changes the token fails with CKR_DEVICE_ERROR (before it: nothing
    /// happened; after it: it happened and the answer is an error); the process goes on.
    case deviceError
    /// Key generation fails with CKR_DEVICE_MEMORY: the token is full; the process goes on.
    case tokenFull

    func applies(to e: SideEffect) -> Bool {
        switch self {
        case .crash: return true
        case .lostAnswer: return e.kind == .answered
        case .noSpace: return e.isFileSystem
        case .ioError: return e.kind == .fsync || e.kind == .syncFolder
        case .deviceError: return e.isTokenCall
        case .tokenFull: return e.kind == .token && e.target == "C_GenerateKeyPair"
        }
    }
}

/// Records every side effect a roll reaches (`name#n`) and applies a fault at one of them.
final class PointHook: @unchecked Sendable {
    private let lock = NSLock()
    private let target: String?
    private let fault: Fault
    private var counts: [String: Int] = [:]
    private(set) var reached: [String] = []
    private(set) var fired = false
    private var dead = false

    init(target: String? = nil, fault: Fault = .crash) {
        self.target = target
        self.fault = fault
    }

    var hook: SideEffectHook { SideEffectHook { try self.reach($0) } }
    var didFire: Bool { lock.withLock { fired } }
    var points: [String] { lock.withLock { reached } }

    func reach(_ e: SideEffect) throws {
        let fire: Bool = try lock.withLock {
            if dead { throw SimulatedCrash() }
            counts[e.description, default: 0] += 1
            let name = "\(e)#\(counts[e.description]!)"
            reached.append(name)
            guard name == target, !fired else { return false }
            fired = true
            if fault == .crash { dead = true }
            return true
        }
        guard fire else { return }
        switch fault {
        case .crash: throw SimulatedCrash()
        case .lostAnswer: throw TransportError("the answer was lost (test fault)")
        case .noSpace: throw SecureFileError.io(path: "(test fault) \(e.target)", operation: e.kind.rawValue, errno: ENOSPC)
        case .ioError: throw SecureFileError.io(path: "(test fault) \(e.target)", operation: e.kind.rawValue, errno: EIO)
        case .deviceError: throw PKCS11Error(PKCS11Error.deviceError, "\(e.target) (test fault)")
        case .tokenFull: throw PKCS11Error(PKCS11Error.deviceMemory, "\(e.target) (test fault)")
        }
    }
}

/// Every side effect of a roll, enumerated, with every fault that can strike there: the roll dies
/// (or fails) at that exact point, is restarted, and must converge without anyone's help, with
/// the app never locked out. In-process on the virtual clock; `CrashTests` does the same with real
/// SIGKILLed processes.
@Suite(.serialized) struct CrashPointTests {
    enum Scenario: String, CaseIterable, Sendable {
        /// The bootstrap roll with a reload hook: every step through removeKey(old) and destruction.
        case rolled
        /// A roll whose new key never becomes usable in time: the abandon path.
        case abandoned
    }

    struct Tally {
        var trials = 0
        var points = 0
        var byFault: [Fault: Int] = [:]
        var failures: [String: Int] = [:]
    }

    func settings(_ scenario: Scenario) -> EmulatorSettings {
        var s = EmulatorSettings.selfReading
        if scenario == .abandoned {
            s.propagationDelayMin = 3600
            s.propagationDelayMax = 3600
        }
        return s
    }

    func policy(_ scenario: Scenario) -> RollPolicy {
        var p = RollPolicy()
        if scenario == .abandoned { p.verifyTimeout = 60 }
        return p
    }

    /// A fresh app with its store; in the abandon scenario the clock passes its bootstrap's propagation.
    func newApp(_ fleet: Fleet, _ scenario: Scenario, _ name: String) async throws -> (CredentialStore, BootstrapBundle) {
        let (store, bundle) = try await fleet.agentStore(name)
        if scenario == .abandoned { fleet.rig.clock.advance(by: 3601) }
        return (store, bundle)
    }

    func hookCommand(_ fleet: Fleet, _ name: String) -> ReloadHook {
        .command(["/bin/sh", "-c", "echo \"$KEYROLL_CERTIFICATE_PATH\" >> '\(fleet.root)/\(name).reloaded'"])
    }

    /// One roll of `scenario` with `hook`, as the first process would run it.
    func firstRun(_ fleet: Fleet, _ scenario: Scenario, _ store: CredentialStore, _ name: String, _ hook: SideEffectHook) async throws -> Roller {
        let roller = try fleet.roller(CredentialStore(path: store.path, hook: hook), policy: policy(scenario), reloadHook: hookCommand(fleet, name))
        _ = try? await roller.rollIfDue()
        return roller
    }

    /// The points one undisturbed roll of `scenario` reaches, in order.
    func enumerate(_ fleet: Fleet, _ scenario: Scenario) async throws -> [String] {
        let (store, _) = try await newApp(fleet, scenario, "reference-\(scenario.rawValue)")
        let recorder = PointHook()
        let roller = try await firstRun(fleet, scenario, store, "reference-\(scenario.rawValue)", recorder.hook)
        let j = roller.journal
        #expect(j.roll == nil, "the reference roll finished")
        return recorder.points
    }

    @Test(arguments: Scenario.allCases)
    func everyPointOfARollEveryFault(_ scenario: Scenario) async throws {
        let fleet = try await Fleet(settings: settings(scenario))
        let points = try await enumerate(fleet, scenario)
        #expect(points.count > 40, "a roll has many side effects: \(points)")
        var tally = Tally()
        tally.points = points.count
        let slice = CISlice.rotating(4, fullWhen: "KEYROLL_CRASH_POINTS")
        var cases = 0
        for (i, point) in points.enumerated() {
            guard let effect = SideEffect(String(point.prefix { $0 != "#" })) else { Issue.record("unparseable point \(point)"); continue }
            for (f, fault) in Fault.allCases.enumerated() where fault.applies(to: effect) {
                cases += 1
                guard slice.includes(i + f) else { continue }
                let wrong = try await trial(fleet, scenario, name: "\(scenario.rawValue)-\(i)-\(fault.rawValue)", point: point, fault: fault)
                for w in wrong { tally.failures[w, default: 0] += 1 }
                tally.trials += 1
                tally.byFault[fault, default: 0] += 1
            }
        }
        print("crash points (\(scenario.rawValue)): \(tally.points) points, \(tally.trials) trials: "
              + Fault.allCases.map { "\($0.rawValue) \(tally.byFault[$0] ?? 0)" }.joined(separator: ", ")
              + "; \(tally.failures["lockout"] ?? 0) lockouts, \(tally.failures["stuck"] ?? 0) stuck, \(tally.failures["orphan"] ?? 0) orphans"
              + slice.note(ran: tally.trials, of: cases, variable: "KEYROLL_CRASH_POINTS"))
    }

    /// removeKey is idempotent ("No credentials found" is success), so after its answer was lost the
    /// client sends it once more instead of spending a read: that is the one repeat allowed.
    func removeKeysAllowed(_ point: String, _ fault: Fault) -> Int {
        fault == .lostAnswer && point.hasPrefix("answered removeKey") ? 2 : 1
    }

    /// Runs one trial; returns what went wrong (lockout, stuck, orphan), also recorded as issues.
    @discardableResult
    func trial(_ fleet: Fleet, _ scenario: Scenario, name: String, point: String, fault: Fault) async throws -> [String] {
        var wrong: Set<String> = []
        let context = "\(scenario.rawValue) \(fault.rawValue) at \(point)"
        let (store, bundle) = try await newApp(fleet, scenario, name)
        let boot = try bundle.signingCredential().certificate.sha1Thumbprint.hex
        let before = fleet.rig.emulator.requestCounts()
        let faulty = PointHook(target: point, fault: fault)
        do {
            let first = try await firstRun(fleet, scenario, store, name, faulty.hook)
            #expect(faulty.didFire, "\(context): the point was not reached")
            // (a) right after the fault, the app can still sign in: a key on disk, registered, accepted
            let usableAfterFault = try await fleet.usableKeys(store, bundle.appId)
            if usableAfterFault.isEmpty { wrong.insert("lockout") }
            #expect(!usableAfterFault.isEmpty, "\(context): locked out after the fault")
            if let published = store.published() {
                #expect(await fleet.accepts(bundle.appId, published), "\(context): current.pem is not accepted")
            } else { Issue.record("\(context): current.pem unreadable") }
            if fault != .crash {
                // the same process carries on once the disk or the network is back
                let boot = boot
                if first.journal.roll != nil || (scenario == .rolled && first.journal.active == boot) { _ = try? await first.roll() }
            }
        }
        // (b) a restarted agent converges by itself
        let restarted = try fleet.roller(CredentialStore(path: store.path), policy: policy(scenario), reloadHook: hookCommand(fleet, name))
        var outcome: RollOutcome?
        for _ in 0..<3 where restarted.journal.roll != nil || (scenario == .rolled && restarted.journal.active == boot) {
            do { outcome = try await restarted.roll() } catch { Issue.record("\(context): resume failed: \(error)") }
        }
        let j = restarted.journal
        let graph = try fleet.graphKeys(bundle.appId).map(\.sha1.hex)
        if j.roll != nil { wrong.insert("stuck") }
        // the journal holds the active key and, after a roll, the old key *retained* (removed from
        // Entra, kept to undo a stale write); every key on disk is one of them
        let held = Set(j.credentials.map(\.thumbprint))
        let onlyRetainedBesideActive = j.credentials.allSatisfy { $0.thumbprint == j.active || $0.isRetained }
        if graph != [j.active] || store.keysOnDisk() != held || !onlyRetainedBesideActive || !fleet.temporaryFiles(store).isEmpty { wrong.insert("orphan") }
        #expect(j.roll == nil, "\(context): stuck at \(j.roll?.phase.rawValue ?? "-") (outcome \(String(describing: outcome)))")
        #expect(onlyRetainedBesideActive && j.credentials.count <= 2, "\(context): journal holds \(j.credentials.map(\.thumbprint))")
        #expect(graph == [j.active], "\(context): Entra holds \(graph), the agent \(j.active)")
        #expect(store.keysOnDisk() == held, "\(context): keys on disk \(store.keysOnDisk()), journal \(held)")
        let keyFiles = Set((try? FileManager.default.contentsOfDirectory(atPath: store.path + "/keys")) ?? [])
        #expect(keyFiles == Set(held.flatMap { ["\($0).key.pem", "\($0).cert.pem"] }), "\(context): key folder holds \(keyFiles)")
        #expect(fleet.temporaryFiles(store).isEmpty, "\(context): temporary files left: \(fleet.temporaryFiles(store))")
        #expect(store.published()?.certificate.sha1Thumbprint.hex == j.active, "\(context): current.pem is not the active key")
        #expect(!(try await fleet.usableKeys(store, bundle.appId)).isEmpty, "\(context): locked out after convergence")
        let spent = fleet.rig.emulator.requestCounts().reduce(into: [String: Int]()) { $0[$1.key] = $1.value - (before[$1.key] ?? 0) }
        switch scenario {
        case .rolled:
            #expect(j.active != boot, "\(context): the bootstrap was not rolled")
            #expect(FileManager.default.fileExists(atPath: "\(fleet.root)/\(name).reloaded"), "\(context): the reload hook never ran")
            // (c) nothing sent twice that should not be
            #expect(spent["addKey", default: 0] == 1, "\(context): addKey sent \(spent["addKey", default: 0]) times")
            #expect(spent["removeKey", default: 0] == removeKeysAllowed(point, fault), "\(context): removeKey sent \(spent["removeKey", default: 0]) times")
        case .abandoned:
            #expect(j.active == boot, "\(context): the bootstrap must stay active when the roll is abandoned")
            #expect(spent["addKey", default: 0] <= 1, "\(context): addKey sent \(spent["addKey", default: 0]) times")
            #expect(spent["removeKey", default: 0] == spent["addKey", default: 0] * removeKeysAllowed(point, fault),
                    "\(context): removeKey sent \(spent["removeKey", default: 0]) times")
        }
        // (d) once the retention window has passed, a registration check that sees the active key
        // registered destroys the retained key: then only the active key is left anywhere
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        for _ in 0..<2 {  // two checks in a row must agree
            do { try await restarted.watchRegistration() } catch { Issue.record("\(context): the registration check failed: \(error)") }
            fleet.rig.clock.advance(by: 600)
        }
        #expect(store.keysOnDisk() == [restarted.journal.active], "\(context): after the window, keys on disk \(store.keysOnDisk())")
        #expect(restarted.journal.credentials.map(\.thumbprint) == [restarted.journal.active])
        return wrong.sorted()
    }

    /// Import dies (or fails for want of space) at each of its side effects; the same import run
    /// again finishes it, and the store then rolls like any other. A second run of a finished
    /// import changes nothing.
    @Test func everyPointOfAnImport() async throws {
        let fleet = try await Fleet()
        let reference = PointHook()
        let refBundle = try await fleet.bundle("import-reference")
        try Roller.importBundle(refBundle, into: CredentialStore(path: fleet.root + "/import-reference", hook: reference.hook), now: fleet.rig.clock.now())
        let points = reference.points
        #expect(points.contains { $0.hasPrefix("rename identity.json") } && points.contains { $0.hasPrefix("rename journal.json") }
                && points.contains { $0.hasPrefix("rename current.pem") }, "\(points)")
        var trials = 0, cases = 0
        let slice = CISlice.rotating(2, fullWhen: "KEYROLL_CRASH_POINTS")
        for (i, point) in points.enumerated() {
            guard let effect = SideEffect(String(point.prefix { $0 != "#" })) else { Issue.record("unparseable point \(point)"); continue }
            for (f, fault) in [Fault.crash, .noSpace].enumerated() where fault.applies(to: effect) {
                cases += 1
                guard slice.includes(i + f) else { continue }
                trials += 1
                let name = "import-\(i)-\(fault.rawValue)"
                let context = "import: \(fault.rawValue) at \(point)"
                let bundle = try await fleet.bundle(name)
                let boot = try bundle.signingCredential().certificate.sha1Thumbprint.hex
                let faulty = PointHook(target: point, fault: fault)
                #expect(throws: (any Error).self, "\(context)") {
                    try Roller.importBundle(bundle, into: CredentialStore(path: fleet.root + "/" + name, hook: faulty.hook), now: fleet.rig.clock.now())
                }
                #expect(faulty.didFire, "\(context): not reached")
                // the operator runs the same import again
                let store = CredentialStore(path: fleet.root + "/" + name)
                do { try Roller.importBundle(bundle, into: store, now: fleet.rig.clock.now()) } catch {
                    Issue.record("\(context): the import cannot be finished: \(error)"); continue
                }
                #expect(try store.journal().active == boot, "\(context)")
                #expect(store.keysOnDisk() == [boot], "\(context): keys on disk \(store.keysOnDisk())")
                #expect(store.published()?.certificate.sha1Thumbprint.hex == boot, "\(context): current.pem")
                // and a third run is a no-op
                #expect(try Roller.importBundle(bundle, into: store, now: fleet.rig.clock.now()).active == boot, "\(context)")
                let roller = try fleet.roller(store)
                #expect(fleet.temporaryFiles(store).isEmpty, "\(context): temporary files left")
                let outcome = try await roller.roll()
                #expect({ if case .rolled = outcome { true } else { false } }(), "\(context): \(outcome)")
            }
        }
        // a store that has rolled is never overwritten by its old bundle
        let (rolled, rolledBundle) = try await fleet.agentStore("import-after-roll")
        _ = try await fleet.roller(rolled).roll()
        #expect(throws: CredentialStore.StoreError.self) { try Roller.importBundle(rolledBundle, into: rolled, now: fleet.rig.clock.now()) }
        print("crash points (import): \(points.count) points, \(trials) trials" + slice.note(ran: trials, of: cases, variable: "KEYROLL_CRASH_POINTS"))
    }

    /// The sweep at start destroys what a crash left (a key the journal never recorded, a
    /// temporary file); it can die at each of its own side effects, and the next start finishes it.
    @Test func everyPointOfTheStartupSweep() async throws {
        let fleet = try await Fleet()
        func litter(_ store: CredentialStore) throws -> String {
            let stray = try fleet.rig.credential("stray", days: 30)
            try store.storeCredential(stray)
            try SecureFiles.writeAtomically("{", to: store.path + "/.journal.json.tmp-crashed", mode: 0o600)
            return stray.certificate.sha1Thumbprint.hex
        }
        let (refStore, _) = try await fleet.agentStore("sweep-reference")
        _ = try litter(refStore)
        let reference = PointHook()
        _ = try fleet.roller(CredentialStore(path: refStore.path, hook: reference.hook))
        let points = reference.points
        #expect(points.filter { $0.hasPrefix("unlink") }.count == 3, "two key files and a temporary file: \(points)")
        for (i, point) in points.enumerated() {
            let name = "sweep-\(i)"
            let context = "sweep: crash at \(point)"
            let (store, bundle) = try await fleet.agentStore(name)
            let active = try store.journal().active
            let stray = try litter(store)
            let faulty = PointHook(target: point, fault: .crash)
            #expect(throws: (any Error).self, "\(context)") { _ = try fleet.roller(CredentialStore(path: store.path, hook: faulty.hook)) }
            #expect(faulty.didFire, "\(context): not reached")
            #expect(store.hasCredential(active), "\(context): the active key was touched")
            let restarted = try fleet.roller(store)
            #expect(store.keysOnDisk() == [active], "\(context): keys on disk \(store.keysOnDisk()) (stray \(stray))")
            #expect(fleet.temporaryFiles(store).isEmpty, "\(context): temporary files left")
            #expect(restarted.journal.active == active)
            #expect(!(try await fleet.usableKeys(store, bundle.appId)).isEmpty, "\(context): locked out")
        }
    }
}
