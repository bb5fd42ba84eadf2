import EntraClient
import Foundation
import KeyRollPrimitives

/// The evidence about one client secret that the retirement rules weigh, as shown to the operator.
public struct SecretEvidence: Sendable, Equatable, Codable {
    public var app: String
    public var appId: String
    public var keyId: String
    public var displayName: String?
    public var hint: String?
    public var end: Date?
    public var windowDays: Int
    public var retentionDays: Double
    /// `now − windowDays`: the window is (windowStart, now].
    public var windowStart: Date
    /// Why the log could not be read (nil: it was).
    public var log: UnknownReason?
    /// The newest sign-in that presented the secret (accepted or not) in what was read, or the
    /// report's last use of it, whichever is later.
    public var lastSecretUse: Date?
    public var lastSecretUseSource: SignInSource
    /// Sign-ins that presented the secret within the window.
    public var secretSignInsInWindow: Int
    /// The app's KeyRoll-managed keys (bootstrap and own) registered now.
    public var keyRollKeyIds: [String]
    /// How many of the last `windowDays` days had a successful sign-in with one of them.
    public var keyRollDaysCovered: Int
    /// How many days in a row, counted back from now, had one.
    public var keyRollDaysUnbroken: Int
    public var lastKeyRollSignIn: Date?
    /// Delegated (user) sign-ins by the app within the window, and the newest.
    public var delegatedSignIns: Int
    public var delegatedUsers: Int
    public var lastDelegatedSignIn: Date?
    public var delegatedAcknowledged: Bool
}

/// Retire a client secret, or refuse with the reasons and the date the evidence would suffice.
public enum SecretDecision: Sendable, Equatable {
    case retire(SecretEvidence)
    /// `sufficientAt`: the earliest time the evidence would suffice if the app keeps behaving as
    /// it does now; nil when waiting cannot help (no permission, no licence, a window longer than
    /// the retention, an app not signing in with KeyRoll's key).
    case refuse(SecretEvidence, reasons: [String], sufficientAt: Date?)

    public var evidence: SecretEvidence {
        switch self {
        case .retire(let e), .refuse(let e, _, _): return e
        }
    }

    public var retires: Bool { if case .retire = self { return true }; return false }
}

/// When a client secret may be removed (pure: no I/O, `now` given). A removed secret cannot be
/// brought back, so it goes only on evidence, never on its age, and only when all of these hold
/// for the window of the last W days, (now − W·24 h, now]:
///
/// - (a) **the migration works**: on each of the last W days — UTC 24-hour periods counted back
///   from now, day 0 being the last 24 hours — the app signed in successfully with a
///   KeyRoll-managed certificate (bootstrap or own; the agent's token endpoint signs in with one).
///   Only keys registered now count: a sign-in with a key rolled away since cannot be told from a
///   foreign one, so a roll inside the window may cost a day of evidence, never add one.
/// - (b) **the secret is unused**: no sign-in presented it — accepted or not — within the window,
///   in the sign-in log or in the credential report; and the window fits in the log's retention
///   (the log cannot show more days of disuse than it keeps).
/// - (c) **no delegated use**: the app has no delegated (user) sign-in in the window, or the
///   operator acknowledged them: delegated use of a secret is not keyed to the credential in the log.
///
/// A log that cannot be read refuses everything: absence of evidence is not evidence.
public enum SecretRetirementRules {
    public static let defaultWindowDays = 14
    static let day = EvidenceRules.day

    public static func decide(secret: PasswordCredential, app: Application, signIns: LogRead<ServicePrincipalSignIn>, delegated: LogRead<DelegatedSignIn>,
                              report: [AppCredentialSignInActivity] = [], now: Date, windowDays: Int, retentionDays: Double,
                              acknowledgeDelegated: Bool) -> SecretDecision {
        let w = max(1, windowDays)
        let windowStart = now.addingTimeInterval(-Double(w) * day)
        let appId = app.appId.lowercased()
        let mine = signIns.entries.filter { $0.appId.lowercased() == appId }
        func inWindow(_ t: Date) -> Bool { t > windowStart }
        func dayIndex(_ t: Date) -> Int { max(0, Int((now.timeIntervalSince(t) / day).rounded(.down))) }

        // (a): KeyRoll-managed keys and the days they signed in on
        let keyRollIds = (app.keyCredentials ?? []).filter { CredentialOrigin.of($0).isKeyRoll }.map { $0.keyId.lowercased() }
        let keyRollSignIns = mine.filter { s in
            s.succeeded && s.usedCertificate && s.servicePrincipalCredentialKeyId.map { keyRollIds.contains($0.lowercased()) } == true
        }
        let covered = Set(keyRollSignIns.map { dayIndex($0.createdDateTime) }.filter { $0 < w })
        let unbroken = (0..<w).first { !covered.contains($0) } ?? w

        // (b): the secret's own use, in the log (any outcome) and in the report
        let key = secret.keyId.lowercased()
        let secretUses = mine.filter { $0.servicePrincipalCredentialKeyId?.lowercased() == key }.map(\.createdDateTime)
        let reported = report.filter { $0.appId.lowercased() == appId && $0.keyId.lowercased() == key }.compactMap(\.lastSignInDateTime)
        let (lastUse, lastSource) = EvidenceRules.lastUse(log: secretUses.max(), report: reported.max())
        let lastUseInWindow = (secretUses + reported).filter(inWindow).max()

        // (c): delegated sign-ins by the app
        let users = delegated.entries.filter { $0.appId.lowercased() == appId && inWindow($0.createdDateTime) }

        let evidence = SecretEvidence(
            app: app.displayName ?? app.appId, appId: app.appId, keyId: secret.keyId, displayName: secret.displayName, hint: secret.hint,
            end: secret.endDateTime, windowDays: w, retentionDays: retentionDays, windowStart: windowStart, log: signIns.failure ?? delegated.failure,
            lastSecretUse: lastUse, lastSecretUseSource: lastSource, secretSignInsInWindow: secretUses.filter(inWindow).count,
            keyRollKeyIds: keyRollIds, keyRollDaysCovered: covered.count, keyRollDaysUnbroken: unbroken,
            lastKeyRollSignIn: keyRollSignIns.map(\.createdDateTime).max(), delegatedSignIns: users.count,
            delegatedUsers: Set(users.map { ($0.userId ?? $0.userPrincipalName ?? $0.id).lowercased() }).count,
            lastDelegatedSignIn: users.map(\.createdDateTime).max(), delegatedAcknowledged: acknowledgeDelegated)

        if let failure = evidence.log {
            return .refuse(evidence, reasons: ["the sign-in log cannot be read (\(failure.rawValue)): \(failure.advice). Without it nothing shows the secret unused, and absence of evidence is not evidence."],
                           sufficientAt: nil)
        }
        var reasons: [String] = []
        var dates: [Date?] = []
        if keyRollIds.isEmpty {
            reasons.append("(a) no KeyRoll-managed certificate is registered on the app: it does not sign in with KeyRoll yet. Adopt it and run its agent; the secret can go once it has signed in with KeyRoll's key on each of \(w) days.")
            dates.append(nil)
        } else if unbroken < w {
            let gap = now.addingTimeInterval(-Double(unbroken + 1) * day)
            let when = "\(UTCTime.iso(gap)) – \(UTCTime.iso(gap.addingTimeInterval(day)))"
            if unbroken == 0 {
                reasons.append("(a) no successful sign-in with a KeyRoll-managed key in the last 24 hours (\(when)); \(covered.count) of the last \(w) days have one. Check that the app uses KeyRoll's certificate (its agent, or the agent's token endpoint); the evidence suffices \(w) days after it does every day.")
                dates.append(nil)
            } else {
                reasons.append("(a) the app signed in with a KeyRoll-managed key on only the last \(unbroken) day(s) in a row (\(covered.count) of \(w)); no such sign-in in \(when).")
                dates.append(now.addingTimeInterval(Double(w - unbroken) * day))
            }
        }
        // (b) needs W days in which the secret *existed* and went unused: a secret younger than the
        // window (or not yet valid) has no such history, however quiet the log
        if Double(w) <= retentionDays, lastUseInWindow == nil {
            if let start = secret.startDateTime {
                if start > windowStart {
                    reasons.append("(b) the secret exists only since \(UTCTime.iso(start)): the log cannot show \(w) days in which it went unused (a new secret may be someone's rollout or rollback plan).")
                    dates.append(start.addingTimeInterval(Double(w) * day))
                }
            } else {
                reasons.append("(b) Graph shows no start date for the secret: how long it has gone unused cannot be told.")
                dates.append(nil)
            }
        }
        // a secret sign-in that names no credential of the app may be a use of this one
        let secretKeys = Set((app.passwordCredentials ?? []).map { $0.keyId.lowercased() })
        let unattributed = mine.filter { $0.usedSecret && inWindow($0.createdDateTime)
            && ($0.servicePrincipalCredentialKeyId.map { !secretKeys.contains($0.lowercased()) } ?? true) }
        if let last = unattributed.map(\.createdDateTime).max() {
            reasons.append("(b) \(unattributed.count) client-secret sign-in(s) in the window name no secret of the app (the last at \(UTCTime.iso(last))): something presented a secret, and it may be this one.")
            dates.append(last.addingTimeInterval(Double(w) * day))
        }
        if let audience = app.signInAudience, audience != "AzureADMyOrg" {
            reasons.append("the app is multi-tenant (signInAudience \(audience)): its sign-ins in other tenants are logged there, so this tenant's log cannot show the secret unused. Retire it by hand once every tenant's log agrees.")
            dates.append(nil)
        }
        if Double(w) > retentionDays {
            reasons.append("(b) a window of \(w) days does not fit in the \(formatDays(retentionDays)) days the sign-in log keeps: it cannot show the secret unused that long. Use --window-days \(Int(retentionDays.rounded(.down))) or less.")
            dates.append(nil)
        } else if let used = lastUseInWindow {
            let source = reported.contains(used) && !secretUses.contains(used) ? "the credential report" : "the sign-in log"
            reasons.append("(b) the secret was used at \(UTCTime.iso(used)) (\(source); \(evidence.secretSignInsInWindow) sign-in(s) with it in the window): something still holds it.")
            dates.append(used.addingTimeInterval(Double(w) * day))
        }
        if let last = evidence.lastDelegatedSignIn, !acknowledgeDelegated {
            reasons.append("(c) \(users.count) delegated (user) sign-in(s) by the app in the window, by \(evidence.delegatedUsers) user(s), the last at \(UTCTime.iso(last)): the log does not say which credential a delegated flow used, so the secret may be in use. If those sign-ins do not use this secret (a public client, or a certificate), pass --acknowledge-delegated.")
            dates.append(last.addingTimeInterval(Double(w) * day))
        }
        if reasons.isEmpty { return .retire(evidence) }
        let sufficientAt: Date? = dates.contains { $0 == nil } ? nil : dates.compactMap { $0 }.max()
        return .refuse(evidence, reasons: reasons, sufficientAt: sufficientAt)
    }

    /// Days as a whole number when whole (`30`), else with one decimal (`7.5`).
    public static func formatDays(_ d: Double) -> String { d == d.rounded() ? String(Int(d)) : String(format: "%.1f", d) }
}
