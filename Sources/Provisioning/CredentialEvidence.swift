import EntraClient
import Foundation
import KeyRollPrimitives

/// Where a credential on an application came from, as far as Graph shows.
public enum CredentialOrigin: String, Codable, Sendable, CaseIterable {
    /// An agent's own certificate (`CN=keyroll-…`).
    case keyroll
    /// A provisioner's bootstrap certificate (`CN=keyroll-bootstrap…`).
    case keyrollBootstrap = "keyroll-bootstrap"
    /// A certificate KeyRoll did not make.
    case foreignCertificate = "foreign-certificate"
    /// A client secret (password credential).
    case secret
    /// Another key credential (a symmetric key, …).
    case otherKey = "other-key"

    /// Made by KeyRoll: a sign-in with it is a sign-in "with a KeyRoll-managed key".
    public var isKeyRoll: Bool { self == .keyroll || self == .keyrollBootstrap }

    public static func of(_ k: KeyCredential) -> CredentialOrigin {
        let name = CredentialName.parse(displayName: k.displayName)
        if name.isBootstrap { return .keyrollBootstrap }
        if name.isKeyRoll { return .keyroll }
        return k.type == "AsymmetricX509Cert" ? .foreignCertificate : .otherKey
    }
}

/// Which source a credential's last sign-in comes from.
public enum SignInSource: String, Codable, Sendable {
    /// Graph's beta sign-in log (`servicePrincipalCredentialKeyId`): the primary source.
    case signInLog = "sign-in-log"
    /// The `appCredentialSignInActivities` report: the second source (covers delegated flows too;
    /// its freshness is undocumented).
    case report
    case none
}

/// Why a credential's use cannot be told.
public enum UnknownReason: String, Codable, Sendable {
    /// The window asked about is longer than the log keeps, and the log shows no use in what it keeps.
    case outsideRetention = "outside-retention"
    /// The reader lacks `AuditLog.Read.All`.
    case noPermission = "no-permission"
    /// The tenant has no Entra ID P1/P2 licence (Graph serves no sign-in log through its API then).
    case noLicence = "no-licence"
    /// The log could not be read for another reason (throttled or failing past every retry).
    case unreadable

    /// What the operator can do about it.
    public var advice: String {
        switch self {
        case .outsideRetention: return "the window is longer than the sign-in log keeps; shorten --window-days or keep the log longer (Log Analytics)"
        case .noPermission: return "grant the provisioner AuditLog.Read.All"
        case .noLicence: return "Graph serves the sign-in log only to tenants with Entra ID P1/P2"
        case .unreadable: return "the sign-in log could not be read; try again later"
        }
    }
}

/// What the evidence says about a credential's use.
///
/// - `inUse`: a sign-in used it within the window (W days).
/// - `unused`: no sign-in used it for `days` whole days, counted from its last use, or — when no
///   use is visible — from the later of its creation and the oldest day the log keeps, so it never
///   claims more than the log shows.
/// - `unknown`: the evidence cannot tell, and says why.
public enum UsageVerdict: Sendable, Equatable, Codable {
    case inUse(lastUsed: Date)
    case unused(days: Int)
    case unknown(UnknownReason)

    public var label: String {
        switch self {
        case .inUse: return "in use"
        case .unused(let d): return "unused for \(d) day\(d == 1 ? "" : "s")"
        case .unknown(let r): return "unknown (\(r.rawValue))"
        }
    }

    private enum Keys: String, CodingKey { case verdict, lastUsed, days, reason }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        switch self {
        case .inUse(let d): try c.encode("in-use", forKey: .verdict); try c.encode(d, forKey: .lastUsed)
        case .unused(let n): try c.encode("unused", forKey: .verdict); try c.encode(n, forKey: .days)
        case .unknown(let r): try c.encode("unknown", forKey: .verdict); try c.encode(r, forKey: .reason)
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        switch try c.decode(String.self, forKey: .verdict) {
        case "in-use": self = .inUse(lastUsed: try c.decode(Date.self, forKey: .lastUsed))
        case "unused": self = .unused(days: try c.decode(Int.self, forKey: .days))
        default: self = .unknown(try c.decode(UnknownReason.self, forKey: .reason))
        }
    }
}

/// One credential of one application with the evidence of its use.
public struct CredentialUsage: Sendable, Equatable, Codable {
    public var app: String
    public var appId: String
    public var keyId: String
    /// `certificate`, `secret`, or Graph's key type for anything else.
    public var type: String
    public var origin: CredentialOrigin
    public var displayName: String?
    public var start: Date?
    public var end: Date?
    /// The newest sign-in that presented it (accepted or not) in the log, or its last successful
    /// use in the report, whichever is later.
    public var lastSignIn: Date?
    public var lastSignInSource: SignInSource
    public var verdict: UsageVerdict
}

/// What the sign-in log (or the report) gave for an app: its entries, or why there are none.
public enum LogRead<T: Sendable>: Sendable {
    case read([T])
    case unreadable(UnknownReason)

    public var entries: [T] { if case .read(let e) = self { return e }; return [] }
    public var failure: UnknownReason? { if case .unreadable(let r) = self { return r }; return nil }
}

/// The rules that turn an application's credentials and the sign-in evidence into a verdict per
/// credential (pure: no I/O, `now` given).
///
/// - A credential's last use is the newest sign-in in the log that presented its keyId (accepted
///   or not: an attempt shows a host still holding it), or the report's last successful use,
///   whichever is later.
/// - In use: last use less than `windowDays` ago.
/// - Unused for N days: otherwise, when the log could be read. N counts from the last use; with no
///   use visible, from the later of the credential's start and the oldest instant the log keeps
///   (`now − retentionDays`), so N never exceeds what the log can show. With no use visible and a
///   window longer than the retention, the verdict is unknown (outside the retention): the log
///   cannot show W days of disuse.
/// - Unknown: the log could not be read (no permission, no licence, failing), unless the report
///   shows a use within the window (a use is evidence; the report's absence of one is not, its
///   freshness being undocumented).
public enum EvidenceRules {
    public static let day: TimeInterval = 86_400

    public static func usage(_ app: Application, signIns: LogRead<ServicePrincipalSignIn>, report: [AppCredentialSignInActivity],
                             now: Date, windowDays: Int, retentionDays: Double) -> [CredentialUsage] {
        let name = app.displayName ?? app.appId
        var lastLog: [String: Date] = [:]
        for s in signIns.entries where s.appId.lowercased() == app.appId.lowercased() {
            guard let k = s.servicePrincipalCredentialKeyId?.lowercased() else { continue }
            lastLog[k] = max(lastLog[k] ?? .distantPast, s.createdDateTime)
        }
        var lastReport: [String: Date] = [:]
        for r in report where r.appId.lowercased() == app.appId.lowercased() && (r.credentialOrigin ?? "application") == "application" {
            guard let d = r.lastSignInDateTime else { continue }
            lastReport[r.keyId.lowercased()] = max(lastReport[r.keyId.lowercased()] ?? .distantPast, d)
        }
        func row(keyId: String, type: String, origin: CredentialOrigin, displayName: String?, start: Date?, end: Date?) -> CredentialUsage {
            let (last, source) = lastUse(log: lastLog[keyId.lowercased()], report: lastReport[keyId.lowercased()])
            let verdict = self.verdict(lastUse: last, source: source, created: start, log: signIns.failure, now: now, windowDays: windowDays,
                                       retentionDays: retentionDays)
            return CredentialUsage(app: name, appId: app.appId, keyId: keyId, type: type, origin: origin, displayName: displayName, start: start,
                                   end: end, lastSignIn: last, lastSignInSource: source, verdict: verdict)
        }
        let keys = (app.keyCredentials ?? []).map { k in
            row(keyId: k.keyId, type: k.type == "AsymmetricX509Cert" ? "certificate" : (k.type ?? "key"), origin: CredentialOrigin.of(k),
                displayName: k.displayName, start: k.startDateTime, end: k.endDateTime)
        }
        let secrets = (app.passwordCredentials ?? []).map { p in
            row(keyId: p.keyId, type: "secret", origin: .secret, displayName: p.displayName, start: p.startDateTime, end: p.endDateTime)
        }
        return keys + secrets
    }

    /// The later of the two sources' last use (the log wins a tie: it is the primary source).
    static func lastUse(log: Date?, report: Date?) -> (Date?, SignInSource) {
        switch (log, report) {
        case (let l?, let r?): return r > l ? (r, .report) : (l, .signInLog)
        case (let l?, nil): return (l, .signInLog)
        case (nil, let r?): return (r, .report)
        case (nil, nil): return (nil, .none)
        }
    }

    /// The verdict for one credential (see ``EvidenceRules``).
    public static func verdict(lastUse: Date?, source: SignInSource, created: Date?, log failure: UnknownReason?, now: Date, windowDays: Int,
                               retentionDays: Double) -> UsageVerdict {
        let window = Double(windowDays) * day
        if let lastUse, now.timeIntervalSince(lastUse) < window { return .inUse(lastUsed: lastUse) }
        if let failure { return .unknown(failure) }
        if let lastUse { return .unused(days: wholeDays(now.timeIntervalSince(lastUse))) }
        if Double(windowDays) > retentionDays { return .unknown(.outsideRetention) }
        let logStart = now.addingTimeInterval(-retentionDays * day)
        let from = max(logStart, created ?? logStart)
        return .unused(days: wholeDays(now.timeIntervalSince(from)))
    }

    static func wholeDays(_ t: TimeInterval) -> Int { max(0, Int((t / day).rounded(.down))) }
}
