import Foundation

/// One restriction of an app management policy: Graph's `passwordCredentialConfiguration` or
/// `keyCredentialConfiguration`.
public struct CredentialRestriction: Sendable, Equatable, Codable {
    /// `passwordAddition`, `passwordLifetime`, `symmetricKeyAddition`, `symmetricKeyLifetime` or
    /// `customPasswordAddition` (password credentials); `asymmetricKeyLifetime` or
    /// `trustedCertificateAuthority` (key credentials).
    public var restrictionType: String
    /// The longest lifetime allowed, the ISO 8601 duration as sent (`P90D`); lifetime types only.
    public var maxLifetime: String?
    /// The restriction binds apps created on or after this instant; nil: every app.
    public var restrictForAppsCreatedAfterDateTime: Date?
    /// `enabled` or `disabled` (a restriction sent without `state` is enabled).
    public var state: String

    public init(_ restrictionType: String, maxLifetime: String? = nil, restrictForAppsCreatedAfterDateTime: Date? = nil, state: String = "enabled") {
        self.restrictionType = restrictionType
        self.maxLifetime = maxLifetime
        self.restrictForAppsCreatedAfterDateTime = restrictForAppsCreatedAfterDateTime
        self.state = state
    }

    /// Whether it binds an application created at `created`.
    public func binds(appCreatedAt created: Date) -> Bool {
        state == "enabled" && (restrictForAppsCreatedAfterDateTime.map { created >= $0 } ?? true)
    }
}

/// Graph's `appManagementConfiguration`: the restrictions on password and on key credentials.
public struct AppManagementConfiguration: Sendable, Equatable, Codable {
    public var passwordCredentials: [CredentialRestriction]
    public var keyCredentials: [CredentialRestriction]

    public init(passwordCredentials: [CredentialRestriction] = [], keyCredentials: [CredentialRestriction] = []) {
        self.passwordCredentials = passwordCredentials
        self.keyCredentials = keyCredentials
    }
}

/// What the policy routes change on both kinds of policy.
protocol AppPolicyBase {
    var id: String { get }
    var displayName: String { get set }
    var description: String { get set }
    var isEnabled: Bool { get set }
}

/// A tenant's default app management policy (`/policies/defaultAppManagementPolicy`): it always
/// exists, and is disabled until enabled. Its `applicationRestrictions` bind the tenant's
/// applications; `servicePrincipalRestrictions` (apps from other tenants) are kept and served only.
public struct TenantAppManagementPolicy: Sendable, Equatable, Codable, AppPolicyBase {
    public static let defaultID = "00000000-0000-0000-0000-000000000000"
    public var id = TenantAppManagementPolicy.defaultID
    public var displayName = "Default app management tenant policy"
    public var description = "Default tenant policy that enforces app management restrictions on applications and service principals. To apply policy to targeted resources, create a new policy under appManagementPolicies collection."
    public var isEnabled: Bool
    public var applicationRestrictions: AppManagementConfiguration
    public var servicePrincipalRestrictions: AppManagementConfiguration

    public init(isEnabled: Bool = false, applicationRestrictions: AppManagementConfiguration = .init(),
                servicePrincipalRestrictions: AppManagementConfiguration = .init()) {
        self.isEnabled = isEnabled
        self.applicationRestrictions = applicationRestrictions
        self.servicePrincipalRestrictions = servicePrincipalRestrictions
    }
}

/// A policy of `/policies/appManagementPolicies`, assigned to chosen applications (at most one each).
public struct AppManagementPolicy: Sendable, Equatable, Codable, AppPolicyBase {
    public var id: String
    public var displayName: String
    public var description: String
    public var isEnabled: Bool
    public var restrictions: AppManagementConfiguration

    public init(id: String = UUID().uuidString.lowercased(), displayName: String = "", description: String = "", isEnabled: Bool,
                restrictions: AppManagementConfiguration) {
        self.id = id
        self.displayName = displayName
        self.description = description
        self.isEnabled = isEnabled
        self.restrictions = restrictions
    }
}

/// A credential a write adds to an application, as app management policies judge it.
public struct NewCredential: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case password, symmetricKey, asymmetricKey

        /// The restriction type that forbids adding one at all, if there is one.
        var additionRestriction: String? {
            switch self {
            case .password: return "passwordAddition"
            case .symmetricKey: return "symmetricKeyAddition"
            case .asymmetricKey: return nil
            }
        }

        /// The restriction type that caps its lifetime.
        var lifetimeRestriction: String {
            switch self {
            case .password: return "passwordLifetime"
            case .symmetricKey: return "symmetricKeyLifetime"
            case .asymmetricKey: return "asymmetricKeyLifetime"
            }
        }
    }

    public var kind: Kind
    public var startDateTime: Date
    public var endDateTime: Date

    public init(kind: Kind, startDateTime: Date, endDateTime: Date) {
        self.kind = kind
        self.startDateTime = startDateTime
        self.endDateTime = endDateTime
    }

    /// The credentials `after` holds that `before` did not: a keyId `before` lacks, or a key
    /// credential whose certificate changed (every credential when `before` is nil). A credential
    /// the application already had is never judged again: policies restrict what is added.
    public static func added(before: StoredApplication?, after: StoredApplication) -> [NewCredential] {
        let passwords = Set(before?.passwordCredentials.map(\.keyId) ?? [])
        let keys = before?.keyCredentials ?? []
        let newPasswords = after.passwordCredentials.filter { !passwords.contains($0.keyId) }
            .map { NewCredential(kind: .password, startDateTime: $0.startDateTime, endDateTime: $0.endDateTime) }
        let newKeys = after.keyCredentials.filter { k in !keys.contains { $0.keyId == k.keyId && $0.key == k.key } }
            .map { NewCredential(kind: $0.type == "Symmetric" ? .symmetricKey : .asymmetricKey, startDateTime: $0.startDateTime, endDateTime: $0.endDateTime) }
        return newPasswords + newKeys
    }
}

/// The restrictions in force for one application: those of its assigned policy (when enabled) and,
/// for the restriction types that policy does not name, the tenant default's (when enabled). With
/// `inheritsDefault` off, an enabled assigned policy replaces the default entirely. Each restriction
/// keeps the id of the policy it came from: Graph's refusals name it.
public struct EffectiveAppPolicy: Sendable, Equatable {
    public struct Binding: Sendable, Equatable {
        public var policyID: String
        public var restriction: CredentialRestriction
    }

    /// By restriction type.
    public var restrictions: [String: Binding]

    public init(tenantDefault: TenantAppManagementPolicy, assigned: AppManagementPolicy?, inheritsDefault: Bool) {
        let own = assigned?.isEnabled == true ? assigned : nil
        var out: [String: Binding] = [:]
        func take(_ c: AppManagementConfiguration, from id: String) {
            for r in c.passwordCredentials + c.keyCredentials { out[r.restrictionType] = Binding(policyID: id, restriction: r) }
        }
        if tenantDefault.isEnabled, own == nil || inheritsDefault { take(tenantDefault.applicationRestrictions, from: tenantDefault.id) }
        if let own { take(own.restrictions, from: own.id) }
        restrictions = out
    }

    /// The restriction of `type` that binds an application created at `created`, if any.
    public func binding(_ type: String, appCreatedAt created: Date) -> Binding? {
        guard let b = restrictions[type], b.restriction.binds(appCreatedAt: created) else { return nil }
        return b
    }

    /// Graph's refusal of the first of `added` the policy forbids to an application created at
    /// `created`, nil when it allows them all. A lifetime runs to the credential's `endDateTime` from
    /// `now`, or from its `startDateTime` when `lifetimeFromStart`.
    public func refusal(adding added: [NewCredential], appCreatedAt created: Date, now: Date, lifetimeFromStart: Bool) -> GraphError? {
        for c in added {
            if let type = c.kind.additionRestriction, let b = binding(type, appCreatedAt: created) {
                return .credentialTypeNotAllowed(policyID: b.policyID)
            }
            if let b = binding(c.kind.lifetimeRestriction, appCreatedAt: created), let limit = b.restriction.maxLifetime.flatMap(ISODuration.seconds),
               c.endDateTime.timeIntervalSince(lifetimeFromStart ? c.startDateTime : now) > limit {
                return .credentialLifetimeExceeded(policyID: b.policyID)
            }
        }
        return nil
    }
}

/// Graph's `Duration` (OData `Edm.Duration`): `P90D`, `PT36H`, `P4DT12H30M5S`.
public enum ISODuration {
    /// The seconds `text` stands for: days, hours, minutes and seconds (a fraction on seconds
    /// only), in that order, as OData takes them; nil for anything else (years, months, weeks,
    /// signs, an empty `P` or `T`).
    public static func seconds(_ text: String) -> TimeInterval? {
        guard text.hasPrefix("P") else { return nil }
        var total: TimeInterval = 0
        var number = ""
        var inTime = false
        var lastRank = -1
        var timeFields = 0
        for ch in text.dropFirst() {
            if ch.isASCII, ch.isNumber || ch == "." { number.append(ch); continue }
            if ch == "T" {
                guard !inTime, number.isEmpty else { return nil }
                inTime = true
                continue
            }
            let field: (rank: Int, unit: TimeInterval)
            switch (ch, inTime) {
            case ("D", false): field = (0, 86_400)
            case ("H", true): field = (1, 3600)
            case ("M", true): field = (2, 60)
            case ("S", true): field = (3, 1)
            default: return nil
            }
            guard field.rank > lastRank, let value = Double(number), ch == "S" || !number.contains(".") else { return nil }
            total += value * field.unit
            lastRank = field.rank
            number = ""
            if inTime { timeFields += 1 }
        }
        guard number.isEmpty, lastRank >= 0, !inTime || timeFields > 0 else { return nil }
        return total
    }
}
