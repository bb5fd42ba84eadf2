import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

/// An app on the emulator with a KeyRoll key (a 60-day bootstrap, so one key signs in for the whole
/// test) and a client secret, and a provisioner that may read the sign-in log.
struct SecretRig {
    let c: Central
    let app: Application
    let keyRoll: SigningCredential
    let secret: NewPasswordCredential
    static let day = 86_400.0

    init(auditLogReader: Bool = true) async throws {
        c = try Central()
        let roles: Set<GraphRole> = auditLogReader ? [.applicationReadWriteAll, .auditLogReadAll] : [.applicationReadWriteAll]
        try c.rig.emulator.grant(roles, toAppId: c.provisioner.graph.tokens.clientID)
        let r = try await c.provisioner.provision(name: "legacy", bootstrapValidity: 60 * Self.day)
        keyRoll = try r.bundle.signingCredential()
        secret = try await c.provisioner.graph.addPassword(objectID: r.application.id, displayName: "legacy secret")
        app = try await c.provisioner.graph.application(id: r.application.id)
    }

    var retirement: SecretRetirement { SecretRetirement(provisioner: c.provisioner, auditLogPath: c.dir + "/audit.log") }

    func signInWithKeyRoll() async throws { _ = try await c.rig.token(clientID: app.appId, credential: keyRoll) }

    func signInWithSecret() async throws {
        let r = await c.rig.tokenResponse(clientID: app.appId, secret: secret.secretText.reveal)
        guard r.status == 200 else { throw ToolError("the secret was refused: \(r.status)") }
    }

    /// `days` days pass, the app signing in with its KeyRoll key once a day.
    func days(_ days: Int) async throws {
        for _ in 0..<days {
            c.rig.clock.advance(by: Self.day)
            try await signInWithKeyRoll()
        }
    }

    var secretListed: Bool {
        get throws { try c.rig.emulator.applications(tenantID: c.rig.tenant.id).first { $0.appId == app.appId }?.passwordCredentials.isEmpty == false }
    }

    var auditPhases: [String] {
        JSONLinesFile.lines(at: c.dir + "/audit.log").compactMap { try? JSONValue.parse(Array($0))["phase"]?.stringValue }
    }

    func plan(acknowledge: Bool = false) async throws -> SecretDecision {
        try #require(try await retirement.plan(application: app, acknowledgeDelegated: acknowledge).decisions.first)
    }
}

@Suite struct SecretRetirementTests {
    @Test func aSecretGoesOnlyOnEvidence() async throws {
        let s = try await SecretRig()
        // the app still uses its secret, and has not signed in with KeyRoll's key yet
        try await s.signInWithSecret()
        let first = try await s.plan()
        #expect(first.reasons.map { String($0.prefix(3)) } == ["(a)", "(b)"], "\(first.reasons)")
        #expect(first.sufficientAt == .some(nil), "the app does not sign in with KeyRoll: waiting alone cannot help")
        let refused = try await s.retirement.apply(application: s.app, reason: "test", operator: "t")
        #expect(refused.count == 1 && !refused.contains { if case .removed = $0 { return true }; return false })
        #expect(try s.secretListed && s.auditPhases.isEmpty, "a refusal writes nothing")

        // on KeyRoll every day, but the secret is used again on day 7: refused until 14 days after that use
        try await s.signInWithKeyRoll()
        try await s.days(7)
        try await s.signInWithSecret()
        let usedAt = s.c.rig.clock.now()
        try await s.days(7)
        s.c.rig.clock.advance(by: 3600)
        let second = try await s.plan()
        #expect(second.reasons.count == 1 && second.reasons[0].hasPrefix("(b) the secret was used"), "\(second.reasons)")
        let expected = usedAt.addingTimeInterval(14 * SecretRig.day).timeIntervalSince1970
        #expect(abs((second.sufficientAt??.timeIntervalSince1970 ?? 0) - expected) < 2, "\(String(describing: second.sufficientAt))")
        _ = try await s.retirement.apply(application: s.app, reason: "test", operator: "t")
        #expect(try s.secretListed)

        // 14 days of KeyRoll sign-ins and no use of the secret: removed, audited, and it no longer signs in
        try await s.days(7)
        s.c.rig.clock.advance(by: 3600)
        #expect(try await s.plan().retires)
        let outcomes = try await s.retirement.apply(application: s.app, reason: "migrated to KeyRoll", operator: "ops")
        guard case .removed(let evidence, nil)? = outcomes.first else { Issue.record("\(outcomes)"); return }
        #expect(evidence.keyId == s.secret.credential.keyId && evidence.keyRollDaysCovered == 14)
        #expect(try !s.secretListed)
        #expect(try s.c.rig.emulator.keyCredentials(appId: s.app.appId).count == 1, "no certificate touched")
        #expect(s.auditPhases == ["intent", "completed"])
        let log = String(decoding: try Data(contentsOf: URL(fileURLWithPath: s.c.dir + "/audit.log")), as: UTF8.self)
        #expect(!log.contains(s.secret.secretText.reveal), "a secret's text is never written")
        #expect(log.contains("\"action\":\"retire-secret\"") && log.contains("\"operator\":\"ops\""))
        await #expect(throws: ToolError.self) { try await s.signInWithSecret() }
        #expect("\(s.secret.secretText)" == "[redacted]")
    }

    @Test func delegatedUseRefusesUntilAcknowledged() async throws {
        let s = try await SecretRig()
        try await s.signInWithKeyRoll()
        try await s.days(14)
        try s.c.rig.emulator.recordDelegatedSignIn(appId: s.app.appId, userPrincipalName: "alice@contoso.com", interactive: false)
        s.c.rig.clock.advance(by: 3600)
        let d = try await s.plan()
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(c) 1 delegated"), "\(d.reasons)")
        #expect(try await s.plan(acknowledge: true).retires)
    }

    @Test func withoutTheLogNothingGoes() async throws {
        let s = try await SecretRig(auditLogReader: false)
        try await s.signInWithKeyRoll()
        try await s.days(14)
        let d = try await s.plan()
        #expect(d.evidence.log == .noPermission && d.sufficientAt == .some(nil), "\(d.reasons)")
        _ = try await s.retirement.apply(application: s.app, reason: "test", operator: "t")
        #expect(try s.secretListed)
    }

    /// A tenant without a P1/P2 licence: Graph serves no sign-in log, the verdict is unknown
    /// (no-licence), and nothing goes however long the app has been on KeyRoll.
    @Test func withoutTheLicenceNothingGoes() async throws {
        let s = try await SecretRig()
        try await s.signInWithKeyRoll()
        try await s.days(14)
        s.c.rig.emulator.settings.signInLogLicensed = false
        let d = try await s.plan()
        #expect(d.evidence.log == .noLicence && d.sufficientAt == .some(nil), "\(d.reasons)")
        _ = try await s.retirement.apply(application: s.app, reason: "test", operator: "t")
        #expect(try s.secretListed)
        let view = await EvidenceCollector(graph: s.c.provisioner.graph).view(
            for: try await Auditor(graph: s.c.provisioner.graph).scan(now: s.c.rig.clock.now(), expiringWithinDays: 30))
        let secret = try #require(view.credentials.first { $0.keyId == s.secret.credential.keyId })
        #expect(secret.verdict == .unknown(.noLicence), "\(secret.verdict)")
    }

    /// A lost answer to removePassword: the retry reads first, finds the secret gone, and completes.
    @Test func aLostAnswerIsSettledByReading() async throws {
        let s = try await SecretRig()
        try await s.signInWithKeyRoll()
        try await s.days(14)
        s.c.rig.emulator.setFaults([FaultRule(route: "POST /v1.0/applications", action: .dropResponse, sequence: [true])])
        let outcomes = try await s.retirement.apply(application: s.app, reason: "lost answer", operator: "t")
        s.c.rig.emulator.setFaults([])
        guard case .removed? = outcomes.first else { Issue.record("\(outcomes)"); return }
        #expect(try !s.secretListed)
        #expect(s.auditPhases == ["intent", "completed"])
    }

    /// A retirement failing at every file-system step of its audit trail (a full disk there; a crash
    /// stops at the same step) never removes a secret unrecorded, and the next run settles it: the
    /// secret gone, its removal recorded as completed.
    @Test func aRetirementStoppedAtEveryAuditStepIsSettledByTheNext() async throws {
        func ready() async throws -> SecretRig {
            let s = try await SecretRig()
            try await s.signInWithKeyRoll()
            try await s.days(14)
            return s
        }
        let ref = try await ready()
        let reference = FaultPoints()
        _ = try await SecretRetirement(provisioner: ref.c.provisioner, auditLogPath: ref.c.dir + "/audit.log", hook: SideEffectHook { try reference.reach($0) })
            .apply(application: ref.app, reason: "reference", operator: "t")
        let points = reference.seen
        #expect(points.first == "create audit.log#1" && points.count > 3, "\(points)")
        for point in points {
            let s = try await ready()
            let faulty = FaultPoints()
            faulty.target = point
            var failed = false
            do {
                _ = try await SecretRetirement(provisioner: s.c.provisioner, auditLogPath: s.c.dir + "/audit.log", hook: SideEffectHook { try faulty.reach($0) })
                    .apply(application: s.app, reason: "fault", operator: "t")
            } catch { failed = true }
            #expect(failed, "\(point): the fault did not stop the retirement")
            if try !s.secretListed { #expect(s.auditPhases.contains("intent"), "\(point): removed without an intent on record") }
            let again = try await s.retirement.apply(application: s.app, reason: "again", operator: "t")
            #expect(try !s.secretListed, "\(point): the next run did not finish the job: \(again)")
            let records = JSONLinesFile.lines(at: s.c.dir + "/audit.log").compactMap { try? JSONValue.parse(Array($0)) }
            #expect(records.last?["phase"] == "completed", "\(point): \(s.auditPhases)")
            #expect(records.last?["keyId"]?.stringValue == s.secret.credential.keyId.lowercased())
        }
    }
}
