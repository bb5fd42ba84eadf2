import EntraCrypto
import Foundation

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

    public init() {}

    /// The validity to use for a new certificate: the configured one, clipped to the tenant maximum.
    public var effectiveValidity: TimeInterval { min(validity, tenantMaximumValidity ?? .infinity) }

    /// When to roll away from `credential`. A bootstrap credential is rolled at once.
    public func rollDate(for credential: CredentialRecord, random: Double) -> Date {
        if credential.origin == .bootstrap { return credential.notBefore }
        let base = credential.notBefore.addingTimeInterval(credential.lifetime * rollAtFraction)
        let jitter = credential.lifetime * jitterFraction * (random * 2 - 1)
        return base.addingTimeInterval(jitter)
    }

    /// The validity window of a certificate made at `now`.
    public func newCertificateWindow(now: Date) -> (notBefore: Date, notAfter: Date) {
        (now.addingTimeInterval(-backdate), now.addingTimeInterval(effectiveValidity))
    }

    public enum Alarm: String, Codable, Sendable, Comparable {
        case ok, warning, critical, pastCliff
        public static func < (a: Alarm, b: Alarm) -> Bool {
            let order: [Alarm] = [.ok, .warning, .critical, .pastCliff]
            return order.firstIndex(of: a)! < order.firstIndex(of: b)!
        }
    }

    /// The cliff: the last instant at which any credential the agent holds and Entra has registered
    /// is still valid. After it, self-service rolling is impossible forever.
    public static func cliff(of journal: Journal) -> Date? {
        journal.credentials.filter { $0.keyId != nil || $0.thumbprint == journal.active }.map(\.notAfter).max()
    }

    public func alarm(timeToCliff: TimeInterval?) -> Alarm {
        guard let t = timeToCliff else { return .pastCliff }
        if t <= 0 { return .pastCliff }
        if t < criticalTimeToCliff { return .critical }
        if t < warnTimeToCliff { return .warning }
        return .ok
    }
}
