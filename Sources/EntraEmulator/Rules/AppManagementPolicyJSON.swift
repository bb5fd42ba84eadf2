import Foundation
import KeyRollPrimitives

/// Graph's JSON for app management policies (`tenantAppManagementPolicy`, `appManagementPolicy`,
/// and their `passwordCredentialConfiguration` / `keyCredentialConfiguration` restrictions): read
/// with Graph's checks, written in Graph's shape.
enum AppManagementPolicyJSON {
    static let passwordRestrictionTypes: Set<String> = ["passwordAddition", "passwordLifetime", "symmetricKeyAddition", "symmetricKeyLifetime",
                                                        "customPasswordAddition", "unknownFutureValue"]
    static let keyRestrictionTypes: Set<String> = ["asymmetricKeyLifetime", "trustedCertificateAuthority", "unknownFutureValue"]
    /// The types that need a `maxLifetime`.
    static let lifetimeTypes: Set<String> = ["passwordLifetime", "symmetricKeyLifetime", "asymmetricKeyLifetime"]
    static let states: Set<String> = ["enabled", "disabled", "unknownFutureValue"]

    // MARK: writing

    static func tenantPolicy(_ p: TenantAppManagementPolicy) -> [String: JSONValue] {
        var o = base(p)
        o["applicationRestrictions"] = configuration(p.applicationRestrictions)
        o["servicePrincipalRestrictions"] = configuration(p.servicePrincipalRestrictions)
        return o
    }

    static func policy(_ p: AppManagementPolicy) -> [String: JSONValue] {
        var o = base(p)
        o["restrictions"] = configuration(p.restrictions)
        return o
    }

    private static func base(_ p: some AppPolicyBase) -> [String: JSONValue] {
        ["id": .string(p.id), "deletedDateTime": .null, "displayName": .string(p.displayName), "description": .string(p.description),
         "isEnabled": .bool(p.isEnabled)]
    }

    static func configuration(_ c: AppManagementConfiguration) -> JSONValue {
        .object(["passwordCredentials": .array(c.passwordCredentials.map(restriction)), "keyCredentials": .array(c.keyCredentials.map(restriction))])
    }

    static func restriction(_ r: CredentialRestriction) -> JSONValue {
        .object([
            "restrictionType": .string(r.restrictionType),
            "state": .string(r.state),
            "maxLifetime": r.maxLifetime.map(JSONValue.string) ?? .null,
            "restrictForAppsCreatedAfterDateTime": r.restrictForAppsCreatedAfterDateTime.map { .string(WireTime.iso($0)) } ?? .null,
        ])
    }

    // MARK: reading

    /// `body` (property names in Graph's casing) applied to `p` as a PATCH: each property sent
    /// replaces the stored one; inside a restrictions object, each collection sent replaces the
    /// stored collection and one not sent is kept.
    static func patch(_ p: inout TenantAppManagementPolicy, with body: [String: JSONValue]) throws {
        try patchBase(&p, body, type: "tenantAppManagementPolicy", resource: "TenantAppManagementPolicy")
        if let v = body["applicationRestrictions"] { try patch(&p.applicationRestrictions, with: v, property: "applicationRestrictions") }
        if let v = body["servicePrincipalRestrictions"] { try patch(&p.servicePrincipalRestrictions, with: v, property: "servicePrincipalRestrictions") }
    }

    static func patch(_ p: inout AppManagementPolicy, with body: [String: JSONValue]) throws {
        try patchBase(&p, body, type: "appManagementPolicy", resource: "AppManagementPolicy")
        if let v = body["restrictions"] { try patch(&p.restrictions, with: v, property: "restrictions") }
    }

    /// The properties both kinds of policy have; a property the type does not have is refused.
    private static func patchBase<P: AppPolicyBase>(_ p: inout P, _ body: [String: JSONValue], type: String, resource: String) throws {
        for name in body.keys.sorted() where !name.hasPrefix("@odata.") && GraphJSON.canonical(name, of: type) != name {
            throw GraphError(400, "BadRequest", "The property '\(name.prefix(64))' does not exist on type 'microsoft.graph.\(type)'. Make sure to only use property names that are defined by the type or mark the type as open type.")
        }
        if let v = body["displayName"] {
            guard let s = v.stringValue else { throw invalid("displayName", resource) }
            p.displayName = s
        }
        if let v = body["description"] {
            guard let s = v.stringValue else { throw invalid("description", resource) }
            p.description = s
        }
        if let v = body["isEnabled"] {
            guard case .bool(let b) = v else { throw invalid("isEnabled", resource) }
            p.isEnabled = b
        }
    }

    private static func patch(_ c: inout AppManagementConfiguration, with v: JSONValue, property: String) throws {
        guard case .object(let o) = v else { throw invalid(property, "AppManagementConfiguration") }
        if let list = o["passwordCredentials"], list != .null {
            c.passwordCredentials = try restrictions(list, allowed: passwordRestrictionTypes, property: "passwordCredentials",
                                                     resource: "PasswordCredentialConfiguration")
        }
        if let list = o["keyCredentials"], list != .null {
            c.keyCredentials = try restrictions(list, allowed: keyRestrictionTypes, property: "keyCredentials", resource: "KeyCredentialConfiguration")
        }
    }

    /// A restriction collection: each type at most once, a known `state`, a `maxLifetime` that is a
    /// duration (required for the lifetime types), a date or null for `restrictForAppsCreatedAfterDateTime`.
    private static func restrictions(_ v: JSONValue, allowed: Set<String>, property: String, resource: String) throws -> [CredentialRestriction] {
        guard case .array(let items) = v else { throw invalid(property, "AppManagementConfiguration") }
        var out: [CredentialRestriction] = []
        for item in items {
            guard case .object(let o) = item else { throw invalid(property, "AppManagementConfiguration") }
            func text(_ name: String) throws -> String? {
                guard let v = o[name], v != .null else { return nil }
                guard let s = v.stringValue else { throw invalid(name, resource) }
                return s
            }
            guard let type = try text("restrictionType"), allowed.contains(type) else { throw invalid("restrictionType", resource) }
            guard !out.contains(where: { $0.restrictionType == type }) else { throw GraphError.badRequest("Duplicate restrictionType '\(type)' in \(property).") }
            let state = try text("state") ?? "enabled"
            guard states.contains(state) else { throw invalid("state", resource) }
            let maxLifetime = try text("maxLifetime")
            if let m = maxLifetime, ISODuration.seconds(m) == nil { throw invalid("maxLifetime", resource) }
            if maxLifetime == nil, lifetimeTypes.contains(type) { throw invalid("maxLifetime", resource) }
            var date: Date?
            if let after = try text("restrictForAppsCreatedAfterDateTime") {
                guard let d = WireTime.parse(after) else { throw invalid("restrictForAppsCreatedAfterDateTime", resource) }
                date = d
            }
            out.append(CredentialRestriction(type, maxLifetime: maxLifetime, restrictForAppsCreatedAfterDateTime: date, state: state))
        }
        return out
    }

    private static func invalid(_ property: String, _ resource: String) -> GraphError {
        GraphError.badRequest("Invalid value specified for property '\(property)' of resource '\(resource)'.")
    }
}
