import EntraClient
import Foundation
import Provisioning
import Testing

/// A fixed app with a KeyRoll key, a foreign certificate and one client secret, and sign-ins made
/// at given ages (seconds before `now`).
struct SecretWorld {
    static let day = 86_400.0
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let appId = "0a0b0c0d-1111-4222-8333-444455556666"
    var keyRoll: KeyCredential
    var foreign: KeyCredential
    var secret: PasswordCredential
    var app: Application

    init(keyRollKey: Bool = true) {
        let now = self.now
        keyRoll = KeyCredential(keyId: "aaaaaaaa-0000-4000-8000-000000000001", displayName: "CN=keyroll-\(appId)", startDateTime: now - 100 * Self.day,
                                endDateTime: now + 200 * Self.day, type: "AsymmetricX509Cert", usage: "Verify")
        foreign = KeyCredential(keyId: "ffffffff-0000-4000-8000-000000000002", displayName: "CN=legacy-cert", startDateTime: now - 300 * Self.day,
                                endDateTime: now + 60 * Self.day, type: "AsymmetricX509Cert", usage: "Verify")
        secret = PasswordCredential(keyId: "5ec2e7aa-0000-4000-8000-000000000003", displayName: "legacy secret", start: now - 400 * Self.day,
                                    end: now + 300 * Self.day, hint: "Abc")
        app = Application(id: "0b1ec7aa-0000-4000-8000-000000000004", appId: appId, displayName: "orders",
                          keyCredentials: keyRollKey ? [keyRoll, foreign] : [foreign], passwordCredentials: [secret])
    }

    func signIn(age: TimeInterval, key: String, type: String = "clientAssertion", ok: Bool = true) -> ServicePrincipalSignIn {
        ServicePrincipalSignIn(id: UUID().uuidString, createdDateTime: now - age, appId: appId, status: .init(errorCode: ok ? 0 : 7000215),
                               signInEventTypes: ["servicePrincipal"], clientCredentialType: type, servicePrincipalCredentialKeyId: key)
    }

    /// One KeyRoll sign-in per day, an hour into each of the days `days` (day 0: the last 24 h).
    func daily(_ days: Range<Int>, key: String? = nil) -> [ServicePrincipalSignIn] {
        days.map { signIn(age: Double($0) * Self.day + 3600, key: key ?? keyRoll.keyId) }
    }

    func secretUse(age: TimeInterval, ok: Bool = true) -> ServicePrincipalSignIn {
        signIn(age: age, key: secret.keyId, type: "clientSecret", ok: ok)
    }

    func user(age: TimeInterval, upn: String = "alice@contoso.com") -> DelegatedSignIn {
        DelegatedSignIn(id: UUID().uuidString, createdDateTime: now - age, appId: appId, userPrincipalName: upn, userId: upn,
                        signInEventTypes: ["interactiveUser"], clientCredentialType: "none", isInteractive: true)
    }

    func decide(_ signIns: [ServicePrincipalSignIn], delegated: [DelegatedSignIn] = [], report: [AppCredentialSignInActivity] = [], at: Date? = nil,
                window: Int = 14, retention: Double = 30, acknowledge: Bool = false, log: UnknownReason? = nil) -> SecretDecision {
        SecretRetirementRules.decide(secret: secret, app: app, signIns: log.map { .unreadable($0) } ?? .read(signIns),
                                     delegated: log.map { .unreadable($0) } ?? .read(delegated), report: report, now: at ?? now,
                                     windowDays: window, retentionDays: retention, acknowledgeDelegated: acknowledge)
    }
}

extension SecretDecision {
    var reasons: [String] { if case .refuse(_, let r, _) = self { return r }; return [] }
    var sufficientAt: Date?? { if case .refuse(_, _, let d) = self { return .some(d) }; return .none }
}

@Suite struct SecretRetirementRulesTests {
    let w = SecretWorld()
    let day = SecretWorld.day

    @Test func allThreeHoldRetires() {
        let d = w.decide(w.daily(0..<14) + [w.secretUse(age: 20 * day)])
        #expect(d.retires, "\(d.reasons)")
        #expect(d.evidence.keyRollDaysCovered == 14 && d.evidence.keyRollDaysUnbroken == 14)
        #expect(d.evidence.lastSecretUse == w.now - 20 * day && d.evidence.secretSignInsInWindow == 0)
    }

    /// A secret younger than the window has no W days of disuse to show: refused until it has.
    @Test func aSecretYoungerThanTheWindowStays() {
        var young = w
        young.secret.startDateTime = w.now - 3 * day
        young.app.passwordCredentials = [young.secret]
        let d = young.decide(w.daily(0..<14))
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(b) the secret exists only since"), "\(d.reasons)")
        #expect(d.sufficientAt == .some(w.now + 11 * day))
        #expect(young.decide(young.daily(0..<14) + [], at: w.now).retires == false)
        // not yet valid: the same
        young.secret.startDateTime = w.now + day
        young.app.passwordCredentials = [young.secret]
        #expect(!young.decide(w.daily(0..<14)).retires)
    }

    /// A client-secret sign-in that names no secret of the app may be this secret's use.
    @Test func anUnattributedSecretSignInRefuses() {
        let stray = ServicePrincipalSignIn(id: "s", createdDateTime: w.now - 2 * day, appId: w.appId, status: .init(errorCode: 7000215),
                                           signInEventTypes: ["servicePrincipal"], clientCredentialType: "clientSecret", servicePrincipalCredentialKeyId: nil)
        let d = w.decide(w.daily(0..<14) + [stray])
        #expect(d.reasons.count == 1 && d.reasons[0].contains("name no secret of the app"), "\(d.reasons)")
        #expect(d.sufficientAt == .some(w.now + 12 * day))
    }

    /// A multi-tenant app's use elsewhere is logged elsewhere: never retired on this tenant's log.
    @Test func aMultiTenantAppsSecretStays() {
        var multi = w
        multi.app.signInAudience = "AzureADMultipleOrgs"
        let d = multi.decide(w.daily(0..<14))
        #expect(d.reasons.count == 1 && d.reasons[0].contains("multi-tenant") && d.sufficientAt == .some(nil), "\(d.reasons)")
        multi.app.signInAudience = "AzureADMyOrg"
        #expect(multi.decide(w.daily(0..<14)).retires)
    }

    /// A sign-in without a status proves nothing (it is not counted as a KeyRoll success).
    @Test func aSignInWithoutStatusIsNoSuccess() {
        let noStatus = ServicePrincipalSignIn(id: "n", createdDateTime: w.now - 3600, appId: w.appId, signInEventTypes: ["servicePrincipal"],
                                              clientCredentialType: "clientAssertion", servicePrincipalCredentialKeyId: w.keyRoll.keyId)
        #expect(!noStatus.succeeded)
        let d = w.decide(w.daily(1..<14) + [noStatus])
        #expect(d.reasons.first?.hasPrefix("(a)") == true, "\(d.reasons)")
    }

    // (a)

    @Test func aDayWithoutAKeyRollSignInRefusesUntilTheRunIsLongEnough() {
        let signIns = w.daily(0..<5) + w.daily(6..<14)
        let d = w.decide(signIns)
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(a)"), "\(d.reasons)")
        #expect(d.evidence.keyRollDaysCovered == 13 && d.evidence.keyRollDaysUnbroken == 5)
        #expect(d.sufficientAt == .some(w.now + 9 * day))
        // the date holds: with the app signing in every hour from now on, the evidence suffices then, and not a day earlier
        let later = (1...(9 * 24)).map { w.signIn(age: -Double($0) * 3600, key: w.keyRoll.keyId) }
        #expect(w.decide(signIns + later, at: w.now + 9 * day).retires)
        #expect(!w.decide(signIns + later, at: w.now + 8 * day).retires)
    }

    @Test func noKeyRollSignInInTheLastDayCannotBeWaitedOut() {
        let d = w.decide(w.daily(1..<14))
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(a) no successful sign-in with a KeyRoll-managed key in the last 24 hours"), "\(d.reasons)")
        #expect(d.sufficientAt == .some(nil))
    }

    @Test func onlyKeyRollKeysAcceptedCount() {
        #expect(!w.decide(w.daily(0..<14, key: w.foreign.keyId)).retires, "a foreign certificate is not the migration")
        #expect(!w.decide((0..<14).map { w.signIn(age: Double($0) * day + 60, key: w.keyRoll.keyId, ok: false) }).retires, "refused sign-ins prove nothing")
        #expect(!w.decide((0..<14).map { w.signIn(age: Double($0) * day + 60, key: w.keyRoll.keyId, type: "clientSecret") }).retires)
        let none = SecretWorld(keyRollKey: false)
        let d = none.decide(none.daily(0..<14, key: none.foreign.keyId))
        #expect(d.reasons.first?.contains("no KeyRoll-managed certificate is registered") == true, "\(d.reasons)")
        #expect(d.sufficientAt == .some(nil))
    }

    @Test func dayBoundariesAreExact() {
        // ages 0, 1 d, …, 13 d: one sign-in at the start of each of the 14 days
        #expect(w.decide((0..<14).map { w.signIn(age: Double($0) * day, key: w.keyRoll.keyId) }).retires)
        // ages 1 d … 14 d: the last 24 hours have none (a sign-in exactly W days old is outside)
        let d = w.decide((1...14).map { w.signIn(age: Double($0) * day, key: w.keyRoll.keyId) })
        #expect(d.evidence.keyRollDaysCovered == 13 && d.evidence.keyRollDaysUnbroken == 0)
    }

    // (b)

    @Test func aSecretUsedInTheWindowRefusesUntilWDaysAfterItsLastUse() {
        let d = w.decide(w.daily(0..<14) + [w.secretUse(age: 3 * day)])
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(b) the secret was used"), "\(d.reasons)")
        #expect(d.sufficientAt == .some(w.now + 11 * day))
        #expect(d.evidence.secretSignInsInWindow == 1)
        // a refused attempt with the secret shows a host still holding it
        #expect(w.decide(w.daily(0..<14) + [w.secretUse(age: 3 * day, ok: false)]).sufficientAt == .some(w.now + 11 * day))
    }

    @Test func secretUseBoundaryIsExact() {
        #expect(w.decide(w.daily(0..<14) + [w.secretUse(age: 14 * day)]).retires, "unused for exactly W days")
        let d = w.decide(w.daily(0..<14) + [w.secretUse(age: 14 * day - 1)])
        #expect(d.sufficientAt == .some(w.now + 1))
    }

    @Test func theReportIsASecondSource() {
        let row = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId.uppercased(), keyType: "clientSecret", lastSignInDateTime: w.now - 2 * day)
        let d = w.decide(w.daily(0..<14), report: [row])
        #expect(d.reasons.first?.contains("credential report") == true, "\(d.reasons)")
        #expect(d.sufficientAt == .some(w.now + 12 * day))
        let old = AppCredentialSignInActivity(appId: w.appId, keyId: w.secret.keyId, lastSignInDateTime: w.now - 40 * day)
        #expect(w.decide(w.daily(0..<14), report: [old]).retires)
    }

    @Test func aWindowLongerThanTheRetentionCannotBeProved() {
        let d = w.decide(w.daily(0..<14), retention: 7)
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(b) a window of 14 days does not fit in the 7 days"), "\(d.reasons)")
        #expect(d.sufficientAt == .some(nil))
        #expect(w.decide(w.daily(0..<7), window: 7, retention: 7).retires, "W equal to the retention fits")
    }

    @Test func anUnreadableLogRefusesEverything() {
        for reason in [UnknownReason.noPermission, .noLicence, .unreadable] {
            let d = w.decide([], log: reason)
            #expect(d.reasons.count == 1 && d.reasons[0].contains(reason.rawValue), "\(d.reasons)")
            #expect(d.sufficientAt == .some(nil))
            #expect(d.evidence.log == reason)
        }
        #expect(w.decide([], log: .noPermission).reasons[0].contains("AuditLog.Read.All"))
    }

    // (c)

    @Test func delegatedSignInsRefuseUnlessAcknowledged() {
        let users = [w.user(age: 2 * day), w.user(age: 5 * day, upn: "bob@contoso.com"), w.user(age: 20 * day)]
        let d = w.decide(w.daily(0..<14), delegated: users)
        #expect(d.reasons.count == 1 && d.reasons[0].hasPrefix("(c) 2 delegated"), "\(d.reasons)")
        #expect(d.evidence.delegatedUsers == 2)
        #expect(d.sufficientAt == .some(w.now + 12 * day))
        let ack = w.decide(w.daily(0..<14), delegated: users, acknowledge: true)
        #expect(ack.retires && ack.evidence.delegatedAcknowledged)
        #expect(w.decide(w.daily(0..<14), delegated: [w.user(age: 14 * day)]).retires, "older than the window")
    }

    @Test func everyReasonIsGivenAndTheLatestDateWins() {
        let d = w.decide(w.daily(0..<3) + w.daily(4..<14) + [w.secretUse(age: day)], delegated: [w.user(age: 6 * day)])
        #expect(d.reasons.map { String($0.prefix(3)) } == ["(a)", "(b)", "(c)"])
        #expect(d.sufficientAt == .some(w.now + 13 * day))
    }

    @Test func signInsOfOtherAppsAreIgnored() {
        var other = w.secretUse(age: day)
        other.appId = "99999999-0000-4000-8000-000000000009"
        #expect(w.decide(w.daily(0..<14) + [other]).retires)
    }
}
