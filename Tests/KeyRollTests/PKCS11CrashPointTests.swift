import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import PKCS11
import Testing
import TestSupport

/// A roll from one token key to the next, and the destruction of the old key after its window,
/// die (or fail as a device would) at every side effect: every file call, every HTTP exchange and
/// every PKCS#11 call that changes the token (`C_GenerateKeyPair`, `C_DestroyObject`, before and
/// after). A restarted agent must converge by itself with the same guarantees as the file store:
/// never locked out, never stuck, no orphan object in the token, no key file left.
/// (Part of `PKCS11StoreTests`, so that no two tests use a token at once: SoftHSM2 would not mind,
/// but the TPM simulator is one device.)
extension PKCS11StoreTests {
    /// One run of the agent with `hook`: a forced roll, then the retained key's window passes and
    /// two registration checks release it (C_DestroyObject). Errors are what the fault makes them.
    func run(_ fleet: Fleet, _ store: CredentialStore, hook: SideEffectHook, continueAfterFailure: Bool) async -> Roller? {
        guard let roller = try? fleet.roller(CredentialStore(path: store.path, hook: hook)) else { return nil }
        _ = try? await roller.roll(reason: "test")
        if continueAfterFailure, roller.journal.roll != nil { _ = try? await roller.roll() }
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        for _ in 0..<2 {
            try? await roller.watchRegistration()
            fleet.rig.clock.advance(by: 600)
        }
        return roller
    }

    /// A token store that has rolled its bootstrap once: its active key is in the token.
    func rolledOnce(_ fleet: Fleet, _ name: String, on tokenName: String) async throws -> (CredentialStore, String, String) {
        let (store, appId, _) = try await Self.tokenStore(fleet, name, on: tokenName)
        do {
            let r = try fleet.roller(store)
            _ = try await r.roll()
            fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
            for _ in 0..<2 {
                try await r.watchRegistration()
                fleet.rig.clock.advance(by: 600)
            }
        }
        let active = try store.journal().active
        #expect(store.keyStoreKind(of: active) == .pkcs11 && store.keysOnDisk() == [active])
        return (store, appId, active)
    }

    /// SoftHSM2 in CI. On the TPM simulator a long sequence of generations, signatures and
    /// destructions ends in libtpms' failure mode (docs/key-stores.md, "TPM 2.0"); the full
    /// enumeration runs there with `KEYROLL_TPM_CRASH_POINTS=1`, and is expected to hit it.
    @Test(arguments: ProcessInfo.processInfo.environment["KEYROLL_TPM_CRASH_POINTS"] == "1" ? tokens : ["softhsm2"])
    func everyPointOfATokenRollEveryFault(_ tokenName: String) async throws {
        let fleet = try await Fleet()
        let hsm = try TestToken.named(tokenName)
        let (refStore, _, _) = try await rolledOnce(fleet, "p11-reference-\(tokenName)", on: tokenName)
        let recorder = PointHook()
        _ = await run(fleet, refStore, hook: recorder.hook, continueAfterFailure: false)
        let points = recorder.points
        #expect(points.contains("p11 C_GenerateKeyPair#1") && points.contains("p11-done C_DestroyObject#2"), "\(points)")
        var trials = 0, cases = 0, wrongCount = 0
        var byFault: [Fault: Int] = [:]
        // CI slice: every device fault (an error from the token, a full token) at every token call,
        // and a quarter of the crashes and lost answers, rotating by day (CISlice); all of them:
        // KEYROLL_PKCS11_CRASH_POINTS=all, and on the TPM (KEYROLL_TPM_CRASH_POINTS=1)
        let slice = tokenName == "softhsm2" ? CISlice.rotating(4, fullWhen: "KEYROLL_PKCS11_CRASH_POINTS") : .all
        for (i, point) in points.enumerated() {
            guard let effect = SideEffect(String(point.prefix { $0 != "#" })) else { Issue.record("unparseable \(point)"); continue }
            for (f, fault) in [Fault.crash, .deviceError, .tokenFull, .lostAnswer].enumerated() where fault.applies(to: effect) {
                cases += 1
                if fault == .crash || fault == .lostAnswer { guard slice.includes(i + f) else { continue } }
                trials += 1
                byFault[fault, default: 0] += 1
                let wrong = try await trial(fleet, hsm, name: "p11-\(tokenName)-\(i)-\(fault.rawValue)", point: point, fault: fault)
                wrongCount += wrong.isEmpty ? 0 : 1
            }
        }
        print("crash points (pkcs11 roll, \(tokenName)): \(points.count) points, \(trials) trials: "
              + byFault.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }.joined(separator: ", ")
              + "; \(wrongCount) trials went wrong" + slice.note(ran: trials, of: cases, variable: "KEYROLL_PKCS11_CRASH_POINTS"))
    }

    @discardableResult
    func trial(_ fleet: Fleet, _ hsm: TestToken, name: String, point: String, fault: Fault) async throws -> [String] {
        var wrong: Set<String> = []
        let context = "pkcs11 \(fault.rawValue) at \(point)"
        let (store, appId, old) = try await rolledOnce(fleet, name, on: hsm.name)
        let prefix = try Self.labelPrefix(store)
        let faulty = PointHook(target: point, fault: fault)
        do {
            _ = await run(fleet, store, hook: faulty.hook, continueAfterFailure: fault != .crash)
            #expect(faulty.didFire, "\(context): the point was not reached")
            let usable = try await fleet.usableKeys(store, appId)
            if usable.isEmpty { wrong.insert("lockout") }
            #expect(!usable.isEmpty, "\(context): locked out after the fault")
        }
        // a restarted agent converges by itself
        let restarted = try fleet.roller(store)
        for _ in 0..<3 where restarted.journal.roll != nil || restarted.journal.active == old {
            do { _ = try await restarted.roll(reason: "test") } catch { Issue.record("\(context): resume failed: \(error)") }
        }
        fleet.rig.clock.advance(by: RollPolicy().retainedKeyWindow + 1)
        for _ in 0..<2 {
            do { try await restarted.watchRegistration() } catch { Issue.record("\(context): the registration check failed: \(error)") }
            fleet.rig.clock.advance(by: 600)
        }
        let j = restarted.journal
        if j.roll != nil { wrong.insert("stuck") }
        #expect(j.roll == nil, "\(context): stuck at \(j.roll?.phase.rawValue ?? "-")")
        #expect(j.active != old, "\(context): never rolled")
        #expect(j.credentials.map(\.thumbprint) == [j.active], "\(context): journal holds \(j.credentials.map(\.thumbprint))")
        let graph = try fleet.graphKeys(appId).map(\.sha1.hex)
        #expect(graph == [j.active], "\(context): Entra holds \(graph), the agent \(j.active)")
        #expect(store.keysOnDisk() == [j.active], "\(context): keys held \(store.keysOnDisk())")
        let keyFiles = Set((try? FileManager.default.contentsOfDirectory(atPath: store.path + "/keys")) ?? [])
        #expect(keyFiles == ["\(j.active).key.p11", "\(j.active).cert.pem"], "\(context): key folder holds \(keyFiles)")
        #expect(fleet.temporaryFiles(store).isEmpty, "\(context): temporary files left")
        // the token holds exactly the active key pair: no orphan, nothing destroyed too early
        let objects = try hsm.objects(labelPrefix: prefix)
        let ref = try #require(FileManager.default.contents(atPath: store.tokenKeyPath(j.active)))
        let label = try #require(try JSONValue.parse(Array(ref))["label"]?.stringValue)
        if objects.count != 2 || !objects.allSatisfy({ $0.label == label }) { wrong.insert("orphan") }
        #expect(objects.count == 2 && objects.allSatisfy { $0.label == label }, "\(context): token holds \(objects.map { "\($0.kind) \($0.label)" })")
        #expect(!(try await fleet.usableKeys(store, appId)).isEmpty, "\(context): locked out after convergence")
        #expect(store.published()?.certificate.sha1Thumbprint.hex == j.active, "\(context): current-cert.pem is not the active key")
        return wrong.sorted()
    }
}
