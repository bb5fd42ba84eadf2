import EntraCrypto
import Foundation
import KeyRollPrimitives

/// When and how to roll. Pure: every decision takes `now` and (for jitter) a random fraction.
public struct RollPolicy: Codable, Sendable, Equatable {
    /// Lifetime of new certificates (default 1 year).
    public var validity: TimeInterval = 365 * 86_400
    /// A tenant's maximum certificate lifetime, if its app-management policy sets one.
    public var tenantMaximumValidity: TimeInterval?
    /// Roll once this fraction of a certificate's lifetime has passed (default 2/3).
    public var rollAtFraction: Double = 2.0 / 3.0
    /// ± this fraction of the lifetime, uniformly, so a fleet does not roll in one burst.
    public var jitterFraction: Double = 0.05
    public var keySize: RSAKeySize = .bits2048
    /// Consecutive successful token requests with the new key before it is trusted.
    public var verifySuccesses: Int = 2
    /// How long to keep polling the token endpoint for the new key before abandoning the roll.
    public var verifyTimeout: TimeInterval = 600
    /// Remaining time to the cliff under which the agent warns, and under which health fails.
    public var warnTimeToCliff: TimeInterval = 14 * 86_400
    public var criticalTimeToCliff: TimeInterval = 3 * 86_400
    /// Subject CN of new certificates; `{appId}` is replaced.
    public var subject: String = "keyroll-{appId}"
    /// New certificates start this much before now, to tolerate clock skew.
    public var backdate: TimeInterval = 300
    /// A new certificate must stay valid at least this long after the latest date its own roll can
    /// be planned for (roll fraction plus jitter), so a roll that fails for a while still has time.
    public var minimumRollMargin: TimeInterval = 2 * 86_400
    /// How long the old key stays registered while the reload hook keeps failing; after it the old
    /// key is removed anyway, with an alarm (the application then holds a published credential it
    /// has not reloaded).
    public var reloadHookGrace: TimeInterval = 86_400
    /// A reload command still running after this long is killed and counts as failed.
    public var reloadHookTimeout: TimeInterval = 60
    /// How long a new key, already proven at the token endpoint, must stay registered before it is
    /// published and the old key removed (every app, single-host or replicated). A privileged
    /// whole-list PATCH of keyCredentials that read the list before our addKey usually lands within
    /// its request time; one that lands inside the settle is seen by the check that follows it, and
    /// mended while the old key is still active. It is a wait on the monotonic clock, restarted in
    /// full by every process start. It is not a fence: a write delayed beyond it is mended by the
    /// registration watch, with the retained old key (`retainedKeyWindow`).
    public var settle: TimeInterval = 150
    /// After a roll removes the old key from Entra, its private key is kept (0600, journaled as
    /// *retained*) for at least this long, so a stale privileged PATCH that brings the old key back
    /// and drops the new one can be undone: the retained key proves the new key's re-registration.
    /// Longer than the provisioner's access-token lifetime (about 1–1.5 h), which caps how long a
    /// paused provisioner can still write. The key is destroyed only after this window, and only
    /// once the watch has seen the active key registered.
    public var retainedKeyWindow: TimeInterval = 86_400
    /// How often (at most; each wait is drawn between half and all of it) the agent checks, between
    /// rolls, that its active key is still registered, and that no removed key came back.
    public var registrationCheckInterval: TimeInterval = 600

    public init() {}

    /// A policy field out of its range: names the field, what it holds and what it must be.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let field: String
        public let description: String
    }

    /// Checks every field and the combinations that would lock an app out (a certificate that
    /// expires before its own roll is planned, a cap that leaves no margin). The first problem
    /// found is thrown; a valid policy returns itself.
    @discardableResult
    public func validated() throws -> RollPolicy {
        func days(_ t: TimeInterval) -> String { t.truncatingRemainder(dividingBy: 86_400) == 0 ? "\(Int(t / 86_400)) days" : "\(t / 86_400) days" }
        func check(_ ok: Bool, _ field: String, _ why: @autoclosure () -> String) throws {
            if !ok { throw Invalid(field: field, description: "\(field): \(why())") }
        }
        try check(validity.isFinite && validity >= 86_400 && validity <= 10 * 365 * 86_400, "validityDays",
                  "\(days(validity)) is out of range; new certificates must be valid for 1 to 3650 days")
        if let cap = tenantMaximumValidity {
            try check(cap.isFinite && cap >= 86_400, "tenantMaximumValidityDays",
                      "\(days(cap)) leaves no room to roll; a tenant cap must be at least 1 day (remove it if the tenant sets none)")
        }
        try check(rollAtFraction.isFinite && rollAtFraction > 0 && rollAtFraction < 1, "rollAtFraction",
                  "\(rollAtFraction) must be between 0 and 1 (exclusive); 0.667 rolls at two thirds of the lifetime")
        try check(jitterFraction.isFinite && jitterFraction >= 0 && jitterFraction < rollAtFraction && rollAtFraction + jitterFraction < 1,
                  "jitterFraction", "\(jitterFraction) must be at least 0 and keep roll fraction ± jitter inside (0, 1); with rollAtFraction \(rollAtFraction) use at most \(max(0, min(rollAtFraction, 1 - rollAtFraction) - 0.01))")
        try check(verifySuccesses >= 1 && verifySuccesses <= 20, "verifySuccesses", "\(verifySuccesses) must be 1 to 20")
        try check(verifyTimeout.isFinite && verifyTimeout >= 30 && verifyTimeout <= 86_400, "verifyTimeoutSeconds", "\(verifyTimeout) must be 30 to 86400 seconds")
        try check(criticalTimeToCliff.isFinite && criticalTimeToCliff > 0, "criticalDays", "\(days(criticalTimeToCliff)) must be more than 0")
        try check(warnTimeToCliff.isFinite && warnTimeToCliff >= criticalTimeToCliff, "warnDays",
                  "\(days(warnTimeToCliff)) must be at least criticalDays (\(days(criticalTimeToCliff)))")
        try check(backdate.isFinite && backdate >= 0 && backdate <= 3600, "backdateSeconds", "\(backdate) must be 0 to 3600 seconds")
        try check(minimumRollMargin.isFinite && minimumRollMargin >= 3600, "minimumRollMarginDays", "\(days(minimumRollMargin)) must be at least 1 hour")
        try check(reloadHookGrace.isFinite && reloadHookGrace >= 0, "reloadHookGraceSeconds", "\(reloadHookGrace) must be 0 or more")
        try check(settle.isFinite && settle >= 0 && settle <= 3600, "settleSeconds", "\(settle) must be 0 to 3600 seconds")
        try check(retainedKeyWindow.isFinite && retainedKeyWindow >= 7200 && retainedKeyWindow <= 30 * 86_400, "retainedKeyHours",
                  "\(retainedKeyWindow / 3600) h must be 2 to 720 hours: longer than a provisioner's access token lives (a paused provisioner can write until it expires)")
        try check(registrationCheckInterval.isFinite && registrationCheckInterval >= 1 && registrationCheckInterval <= 600, "registrationCheckSeconds",
                  "\(registrationCheckInterval) must be 1 to 600 seconds (a dropped key must be seen within 10 minutes)")
        try check(reloadHookTimeout.isFinite && reloadHookTimeout >= 1 && reloadHookTimeout <= 3600, "reloadHookTimeoutSeconds", "\(reloadHookTimeout) must be 1 to 3600 seconds")
        try check(!subject.isEmpty && subject.count <= 64 && !subject.unicodeScalars.contains { $0.properties.generalCategory == .control },
                  "subject", "must be 1 to 64 printable characters")
        // The replica marker and KeyRoll's own-key recognition read the CN: `keyroll-` first, no `@`.
        try check(subject.hasPrefix("keyroll-") && !subject.contains("@"), "subject",
                  "'\(subject.prefix(64))' must start with \"keyroll-\" and contain no \"@\" (KeyRoll recognises its keys and their replica by the CN); for example keyroll-{appId}")
        let margin = effectiveValidity * (1 - rollAtFraction - jitterFraction)
        try check(margin >= minimumRollMargin, effectiveValidity < validity ? "tenantMaximumValidityDays" : "validityDays",
                  "a certificate valid for \(days(effectiveValidity)) would be rolled as late as \(days(effectiveValidity * (rollAtFraction + jitterFraction))) after it starts, leaving \(String(format: "%.2f", margin / 86_400)) days before it expires; at least \(days(minimumRollMargin)) are needed (minimumRollMarginDays). Lengthen the validity, or roll earlier")
        return self
    }

    /// Refuses a new certificate window that would not outlive its own latest planned roll by the
    /// margin (the clock-based check made just before a roll generates its key).
    public func checkNewCertificate(notBefore: Date, notAfter: Date) throws {
        let lifetime = notAfter.timeIntervalSince(notBefore)
        let latestRoll = notBefore.addingTimeInterval(lifetime * (rollAtFraction + jitterFraction))
        guard notAfter.timeIntervalSince(latestRoll) >= minimumRollMargin else {
            throw Invalid(field: "validityDays", description: "refusing to roll: the new certificate (valid until \(UTCTime.iso(notAfter))) would expire less than \(Int(minimumRollMargin / 3600)) h after its own next roll")
        }
    }

    /// The validity to use for a new certificate: the configured one, clipped to the tenant maximum.
    public var effectiveValidity: TimeInterval { min(validity, tenantMaximumValidity ?? .infinity) }

    /// This policy with its tenant maximum lowered to `cap` (the app's own limit, recorded in its
    /// store from the bundle; nil changes nothing): the lower of the two applies.
    public func capped(by cap: TimeInterval?) -> RollPolicy {
        guard let cap else { return self }
        var p = self
        p.tenantMaximumValidity = min(tenantMaximumValidity ?? .infinity, cap)
        return p
    }

    /// ``capped(by:)`` and validated, for the identity whose store holds `cap`. A cap that leaves no
    /// room to roll is refused with what to change, naming where the cap came from.
    public func validated(cappedBy cap: TimeInterval?, identity: String) throws -> RollPolicy {
        let base = try validated()
        guard let cap, cap < (base.tenantMaximumValidity ?? .infinity) else { return base }
        do { return try base.capped(by: cap).validated() } catch let e as Invalid {
            let days = cap / 86_400
            let needed = minimumRollMargin / max(0.01, 1 - rollAtFraction - jitterFraction) / 86_400
            throw Invalid(field: "maximumCertificateValidity", description: "\(identity): Entra accepts certificates of at most \(String(format: "%.2f", days)) days for this app (its app management policy, recorded by the provisioner in the bootstrap bundle and the store's identity.json), and with that limit the roll policy does not work: \(e.description). With rollAtFraction \(rollAtFraction), jitterFraction \(jitterFraction) and minimumRollMarginDays \(minimumRollMargin / 86_400), rolling needs certificates of at least \(String(format: "%.2f", needed)) days: lower rollAtFraction or minimumRollMarginDays in the agent's policy file, or ask the tenant's administrator for a longer asymmetricKeyLifetime. Nothing was changed in Entra.")
        }
    }

    /// When to roll away from `credential`. A bootstrap credential is rolled at once.
    public func rollDate(for credential: CredentialRecord, random: Double) -> Date {
        if credential.origin == .bootstrap { return credential.notBefore }
        let base = credential.notBefore.addingTimeInterval(credential.lifetime * rollAtFraction)
        let jitter = credential.lifetime * jitterFraction * (random * 2 - 1)
        return base.addingTimeInterval(jitter)
    }

    /// How long after its `consecutive`-th abandoned roll in a row the next roll may start: 5 minutes,
    /// doubling, at most 6 hours. A refusal that lasts (a full object, a policy) never becomes a loop
    /// of key generation, and the alarms (warn 14 days, critical 3 days before the cliff) say it lasts.
    public func retryAfterAbandoned(consecutive: Int) -> TimeInterval {
        min(300 * pow(2, Double(max(0, min(consecutive, 20) - 1))), 6 * 3600)
    }

    /// The validity window of a certificate made at `now`.
    /// `now` is Entra's time (the host clock corrected by the offset learned from Entra's answers),
    /// so a host clock that runs ahead or behind does not make a certificate Entra sees as not yet
    /// valid. With a tenant cap, the whole window, backdate included, stays a minute inside it.
    public func newCertificateWindow(now: Date) -> (notBefore: Date, notAfter: Date) {
        let notBefore = now.addingTimeInterval(-backdate)
        var notAfter = now.addingTimeInterval(effectiveValidity)
        if let cap = tenantMaximumValidity { notAfter = min(notAfter, notBefore.addingTimeInterval(cap - 60)) }
        return (notBefore, notAfter)
    }

    public enum Alarm: String, Codable, Sendable, Comparable {
        case ok, warning, critical, pastCliff
        public static func < (a: Alarm, b: Alarm) -> Bool {
            let order: [Alarm] = [.ok, .warning, .critical, .pastCliff]
            return order.firstIndex(of: a)! < order.firstIndex(of: b)!
        }
    }

    /// The cliff: the last instant at which a credential is still valid that both exists — its
    /// private key is on disk (`keysOnDisk`) and, when a Graph read is known (`inEntra`), Graph
    /// lists it — and is not on its way out (an abandoned new key, a retired old one). After it,
    /// self-service rolling is impossible forever. It is computed from what exists, never from the
    /// journal's intentions: a crash that left only the bootstrap key shows the bootstrap's cliff.
    public static func cliff(of journal: Journal, keysOnDisk: Set<String>, inEntra: Set<String>? = nil) -> Date? {
        journal.credentials.filter { c in
            !c.isRetained && keysOnDisk.contains(c.thumbprint) && !(journal.roll?.isLeaving(c.thumbprint) ?? false)
                && (inEntra.map { $0.contains(c.thumbprint) } ?? (c.keyId != nil || c.thumbprint == journal.active))
        }.map(\.notAfter).max()
    }

    public func alarm(timeToCliff: TimeInterval?) -> Alarm {
        guard let t = timeToCliff else { return .pastCliff }
        if t <= 0 { return .pastCliff }
        if t < criticalTimeToCliff { return .critical }
        if t < warnTimeToCliff { return .warning }
        return .ok
    }
}
