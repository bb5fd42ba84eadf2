import Foundation
import KeyRollPrimitives

// MARK: app management policies, as Graph serves them

/// One restriction of an app management policy (`passwordCredentialConfiguration` or
/// `keyCredentialConfiguration`), as Graph returns it.
public struct GraphCredentialRestriction: Sendable, Codable, Equatable {
    /// `passwordAddition`, `passwordLifetime`, `asymmetricKeyLifetime`, …
    public var restrictionType: String?
    /// `enabled` or `disabled`; absent means enabled.
    public var state: String?
    /// An ISO 8601 duration (`P90D`); lifetime restrictions only.
    public var maxLifetime: String?
    /// The restriction binds applications created on or after this instant; nil: every application.
    public var restrictForAppsCreatedAfterDateTime: Date?

    public init(restrictionType: String?, state: String? = nil, maxLifetime: String? = nil, restrictForAppsCreatedAfterDateTime: Date? = nil) {
        self.restrictionType = restrictionType
        self.state = state
        self.maxLifetime = maxLifetime
        self.restrictForAppsCreatedAfterDateTime = restrictForAppsCreatedAfterDateTime
    }

    /// Whether it is in force for an application created at `created` (unknown: assumed bound).
    public func binds(appCreatedAt created: Date?) -> Bool {
        guard (state ?? "enabled") == "enabled" else { return false }
        guard let after = restrictForAppsCreatedAfterDateTime, let created else { return true }
        return created >= after
    }
}

/// Graph's `appManagementConfiguration`.
public struct GraphAppManagementConfiguration: Sendable, Codable, Equatable {
    public var passwordCredentials: [GraphCredentialRestriction]?
    public var keyCredentials: [GraphCredentialRestriction]?

    public init(passwordCredentials: [GraphCredentialRestriction]? = nil, keyCredentials: [GraphCredentialRestriction]? = nil) {
        self.passwordCredentials = passwordCredentials
        self.keyCredentials = keyCredentials
    }

    var all: [GraphCredentialRestriction] { (passwordCredentials ?? []) + (keyCredentials ?? []) }
}

/// An `appManagementPolicy` (its `restrictions`) or the tenant's `tenantAppManagementPolicy` (its
/// `applicationRestrictions`: the ones that bind the tenant's own applications).
public struct GraphAppManagementPolicy: Sendable, Codable, Equatable {
    public var id: String
    public var displayName: String?
    public var isEnabled: Bool?
    public var restrictions: GraphAppManagementConfiguration?
    public var applicationRestrictions: GraphAppManagementConfiguration?

    public init(id: String, displayName: String? = nil, isEnabled: Bool?, restrictions: GraphAppManagementConfiguration? = nil,
                applicationRestrictions: GraphAppManagementConfiguration? = nil) {
        self.id = id
        self.displayName = displayName
        self.isEnabled = isEnabled
        self.restrictions = restrictions
        self.applicationRestrictions = applicationRestrictions
    }

    /// What binds applications: `restrictions` of an assigned policy, `applicationRestrictions` of the tenant default.
    var configuration: GraphAppManagementConfiguration { restrictions ?? applicationRestrictions ?? .init() }

    /// How messages name it: `'display name' (id)`.
    public var label: String { displayName.map { "'\($0)' (\(id))" } ?? id }
}

/// What the app management policies in force allow an application: the limits KeyRoll must stay
/// inside when it adds credentials to it.
///
/// Which policy binds an application: Microsoft's documentation has said both that an assigned
/// policy *overrides* the tenant default and (since 2025) that restriction types it does not name
/// *fall back* to the default. KeyRoll takes, for each restriction type, the assigned policy's
/// restriction when it names that type (enabled or not), else the tenant default's: the stricter of
/// the two readings, so a limit chosen under it is inside the one Entra applies.
public struct AppCredentialLimits: Sendable, Equatable {
    /// A policy, for messages and the audit trail.
    public struct PolicyRef: Sendable, Equatable, CustomStringConvertible {
        public var id: String
        public var displayName: String?
        public var description: String { displayName.map { "'\($0)' (\(id))" } ?? id }
        public init(id: String, displayName: String?) {
            self.id = id
            self.displayName = displayName
        }
    }

    /// The longest certificate lifetime Entra accepts for this application (`asymmetricKeyLifetime`).
    public var maxCertificateLifetime: TimeInterval?
    /// The policy that sets it, and its duration as written.
    public var certificatePolicy: PolicyRef?
    public var certificateMaxLifetimeText: String?
    /// `passwordAddition` binds: no new client secret may be added.
    public var passwordAdditionBlocked: Bool
    /// The longest client-secret lifetime Entra accepts (`passwordLifetime`).
    public var maxPasswordLifetime: TimeInterval?
    public var passwordPolicy: PolicyRef?

    public init(maxCertificateLifetime: TimeInterval? = nil, certificatePolicy: PolicyRef? = nil, certificateMaxLifetimeText: String? = nil,
                passwordAdditionBlocked: Bool = false, maxPasswordLifetime: TimeInterval? = nil, passwordPolicy: PolicyRef? = nil) {
        self.maxCertificateLifetime = maxCertificateLifetime
        self.certificatePolicy = certificatePolicy
        self.certificateMaxLifetimeText = certificateMaxLifetimeText
        self.passwordAdditionBlocked = passwordAdditionBlocked
        self.maxPasswordLifetime = maxPasswordLifetime
        self.passwordPolicy = passwordPolicy
    }

    /// No policy limits anything.
    public static let unlimited = AppCredentialLimits()

    /// A policy whose restriction KeyRoll cannot read (an unparseable `maxLifetime`).
    public struct Unreadable: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    /// The policies could not be read at all (403 without Policy.Read.All, or another failure).
    public struct NotReadable: Error, CustomStringConvertible {
        public let underlying: EntraError
        public init(underlying: EntraError) { self.underlying = underlying }
        public var description: String {
            if underlying.kind == .forbidden {
                return "KeyRoll cannot read the app management policies (HTTP 403: the provisioner lacks Policy.Read.All), so it cannot prove that the certificates it has agents make are inside the tenant's lifetime limits. Grant the provisioner Policy.Read.All, or pass --max-certificate-days N with the limit you know applies."
            }
            return "KeyRoll cannot read the app management policies (\(underlying)); it cannot prove that the certificates it has agents make are inside the tenant's lifetime limits. Try again, or pass --max-certificate-days N with the limit you know applies."
        }
    }

    /// The limits in force for an application created at `appCreatedAt` (nil: unknown, every
    /// dated restriction is taken as binding), from the policies assigned to it (Graph allows one;
    /// several are all applied) and the tenant default. Disabled policies bind nothing.
    public static func effective(assigned: [GraphAppManagementPolicy], tenantDefault: GraphAppManagementPolicy?, appCreatedAt: Date?) throws -> AppCredentialLimits {
        // per restriction type: the candidates it is judged by (the assigned policies' when any names it)
        var byType: [String: [(GraphAppManagementPolicy, GraphCredentialRestriction)]] = [:]
        let own = assigned.filter { $0.isEnabled == true }
        for p in own { for r in p.configuration.all { if let t = r.restrictionType { byType[t, default: []].append((p, r)) } } }
        if let d = tenantDefault, d.isEnabled == true {
            for r in d.configuration.all { if let t = r.restrictionType, byType[t] == nil { byType[t, default: []].append((d, r)) } }
        }
        var out = AppCredentialLimits()
        for (p, r) in byType["asymmetricKeyLifetime"] ?? [] where r.binds(appCreatedAt: appCreatedAt) {
            let seconds = try lifetime(r, of: p)
            if out.maxCertificateLifetime.map({ seconds < $0 }) ?? true {
                out.maxCertificateLifetime = seconds
                out.certificatePolicy = PolicyRef(id: p.id, displayName: p.displayName)
                out.certificateMaxLifetimeText = r.maxLifetime
            }
        }
        for (p, r) in byType["passwordLifetime"] ?? [] where r.binds(appCreatedAt: appCreatedAt) {
            let seconds = try lifetime(r, of: p)
            if out.maxPasswordLifetime.map({ seconds < $0 }) ?? true {
                out.maxPasswordLifetime = seconds
                out.passwordPolicy = out.passwordPolicy ?? PolicyRef(id: p.id, displayName: p.displayName)
            }
        }
        for (p, r) in byType["passwordAddition"] ?? [] where r.binds(appCreatedAt: appCreatedAt) {
            out.passwordAdditionBlocked = true
            out.passwordPolicy = PolicyRef(id: p.id, displayName: p.displayName)
        }
        return out
    }

    static func lifetime(_ r: GraphCredentialRestriction, of p: GraphAppManagementPolicy) throws -> TimeInterval {
        guard let text = r.maxLifetime else {
            throw Unreadable(description: "app management policy \(p.label) has a \(r.restrictionType ?? "?") restriction without maxLifetime; KeyRoll cannot tell which lifetimes it allows. Fix the policy, or pass --max-certificate-days N.")
        }
        guard let seconds = ISO8601Duration.seconds(text), seconds > 0 else {
            throw Unreadable(description: "app management policy \(p.label) has a \(r.restrictionType ?? "?") maxLifetime '\(text.prefix(40))' that is not an ISO 8601 duration KeyRoll reads (such as P90D or PT12H); KeyRoll cannot tell which lifetimes it allows. Fix the policy, or pass --max-certificate-days N.")
        }
        return seconds
    }

    /// One line for the operator: which policy limits certificates, to what.
    public var certificateSummary: String {
        guard let max = maxCertificateLifetime else { return "no app management policy limits certificate lifetimes" }
        let days = max / 86_400
        return "app management policy \(certificatePolicy?.description ?? "?") limits certificates to \(certificateMaxLifetimeText ?? "") (\(days.rounded() == days ? "\(Int(days))" : String(format: "%.2f", days)) days)"
    }
}

/// ISO 8601 durations as app management policies write them (`P90D`, `PT12H`, `P1Y6M`,
/// `P4DT12H30M5S`, `P2W`). Graph's `Edm.Duration` has days and time only; years and months are
/// read too, at their *shortest* (a year 365 days, a month 28 days), so a limit KeyRoll derives from
/// them is never longer than the one Entra applies.
public enum ISO8601Duration {
    /// Seconds, or nil for anything that is not such a duration (signs, empty `P` or `T`, units out
    /// of order, a fraction anywhere but the last field).
    public static func seconds(_ text: String) -> TimeInterval? {
        guard text.hasPrefix("P"), text.count <= 64 else { return nil }
        var total: TimeInterval = 0
        var number = ""
        var inTime = false
        var lastRank = -1
        var fields = 0, timeFields = 0
        var sawFraction = false
        for ch in text.dropFirst() {
            if ch.isASCII, ch.isNumber || ch == "." || ch == "," { number.append(ch == "," ? "." : ch); continue }
            if ch == "T" {
                guard !inTime, number.isEmpty else { return nil }
                inTime = true
                continue
            }
            let field: (rank: Int, unit: TimeInterval)
            switch (ch, inTime) {
            case ("Y", false): field = (0, 365 * 86_400)
            case ("M", false): field = (1, 28 * 86_400)
            case ("W", false): field = (2, 7 * 86_400)
            case ("D", false): field = (3, 86_400)
            case ("H", true): field = (4, 3600)
            case ("M", true): field = (5, 60)
            case ("S", true): field = (6, 1)
            default: return nil
            }
            guard !sawFraction, field.rank > lastRank, !number.isEmpty, number.first != ".", number.filter({ $0 == "." }).count <= 1,
                  let value = Double(number), value.isFinite else { return nil }
            if number.contains(".") { sawFraction = true }
            total += value * field.unit
            lastRank = field.rank
            number = ""
            fields += 1
            if inTime { timeFields += 1 }
        }
        // a limit beyond 100 years limits nothing a certificate needs, and is not read as a number
        // of days any later arithmetic could overflow on
        guard number.isEmpty, fields > 0, !inTime || timeFields > 0, total.isFinite, total <= 100 * 365 * 86_400 else { return nil }
        return total
    }
}

extension GraphClient {
    /// The policies assigned to application `objectID` (`GET /applications/{id}/appManagementPolicies`;
    /// Policy.Read.All and Application.Read.All).
    public func appManagementPolicies(ofApplication objectID: String) async throws -> [GraphAppManagementPolicy] {
        struct Page: Decodable { var value: [GraphAppManagementPolicy]? }
        let page: Page = try decode(try await call("getAppManagementPolicies", "GET", "/applications/\(objectID)/appManagementPolicies"))
        return page.value ?? []
    }

    /// The tenant's default app management policy (`GET /policies/defaultAppManagementPolicy`; Policy.Read.All).
    public func defaultAppManagementPolicy() async throws -> GraphAppManagementPolicy {
        try decode(try await call("getDefaultAppManagementPolicy", "GET", "/policies/defaultAppManagementPolicy"))
    }

    /// The limits in force for `application` (its `createdDateTime` decides the dated restrictions).
    /// `tenantDefault` is the default policy when the caller already read it (one read per run).
    /// Throws ``AppCredentialLimits/NotReadable`` when Graph refuses or fails a read, and
    /// ``AppCredentialLimits/Unreadable`` when a policy's lifetime cannot be read.
    public func credentialLimits(for application: Application, tenantDefault: GraphAppManagementPolicy? = nil) async throws -> AppCredentialLimits {
        let assigned: [GraphAppManagementPolicy]
        let fallback: GraphAppManagementPolicy
        do {
            assigned = try await appManagementPolicies(ofApplication: application.id)
            if let tenantDefault { fallback = tenantDefault } else { fallback = try await defaultAppManagementPolicy() }
        } catch let e as EntraError {
            throw AppCredentialLimits.NotReadable(underlying: e)
        }
        return try AppCredentialLimits.effective(assigned: assigned, tenantDefault: fallback, appCreatedAt: application.createdDateTime)
    }
}
