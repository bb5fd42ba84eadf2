import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Graph's JSON shapes for the stored objects.
enum GraphJSON {
    /// The v1.0 properties of each entity type, in Graph's casing: `$select` and body property
    /// names are matched case-insensitively and always written back this way.
    static let properties: [String: [String]] = [
        "application": ["addIns", "api", "appId", "appRoles", "applicationTemplateId", "certification", "createdDateTime", "defaultRedirectUri",
                        "deletedDateTime", "description", "disabledByMicrosoftStatus", "displayName", "groupMembershipClaims", "id", "identifierUris",
                        "info", "isDeviceOnlyAuthSupported", "isFallbackPublicClient", "keyCredentials", "logo", "nativeAuthenticationApisEnabled",
                        "notes", "oauth2RequirePostResponseTypes", "optionalClaims", "parentalControlSettings", "passwordCredentials", "publicClient",
                        "publisherDomain", "requestSignatureVerification", "requiredResourceAccess", "samlMetadataUrl", "serviceManagementReference",
                        "servicePrincipalLockConfiguration", "signInAudience", "spa", "tags", "tokenEncryptionKeyId", "uniqueName", "verifiedPublisher", "web"],
        "servicePrincipal": ["accountEnabled", "addIns", "alternativeNames", "appDescription", "appDisplayName", "appId", "appOwnerOrganizationId",
                             "appRoleAssignmentRequired", "appRoles", "applicationTemplateId", "createdDateTime", "deletedDateTime", "description",
                             "disabledByMicrosoftStatus", "displayName", "homepage", "id", "info", "keyCredentials", "loginUrl", "logoutUrl", "notes",
                             "notificationEmailAddresses", "oauth2PermissionScopes", "passwordCredentials", "preferredSingleSignOnMode",
                             "preferredTokenSigningKeyThumbprint", "replyUrls", "resourceSpecificApplicationPermissions", "samlSingleSignOnSettings",
                             "servicePrincipalNames", "servicePrincipalType", "signInAudience", "tags", "tokenEncryptionKeyId", "verifiedPublisher"],
        "tenantAppManagementPolicy": ["applicationRestrictions", "deletedDateTime", "description", "displayName", "id", "isEnabled",
                                      "servicePrincipalRestrictions"],
        "appManagementPolicy": ["appliesTo", "deletedDateTime", "description", "displayName", "id", "isEnabled", "restrictions"],
    ]

    /// `name` in Graph's casing for `type`, nil if the type has no such property.
    static func canonical(_ name: String, of type: String) -> String? {
        properties[type]?.first { $0.lowercased() == name.lowercased() }
    }

    static func keyCredential(_ k: StoredKeyCredential, includeKey: Bool) -> JSONValue {
        .object([
            "customKeyIdentifier": k.customKeyIdentifier.map { .string(Base64.encode($0)) } ?? .null,
            "displayName": k.displayName.map(JSONValue.string) ?? .null,
            "endDateTime": .string(WireTime.iso(k.endDateTime)),
            "key": includeKey ? .string(Base64.encode(k.key)) : .null,
            "keyId": .string(k.keyId),
            "startDateTime": .string(WireTime.iso(k.startDateTime)),
            "type": .string(k.type),
            "usage": .string(k.usage),
        ])
    }

    static func passwordCredential(_ p: StoredPasswordCredential, secretText: String? = nil) -> JSONValue {
        .object([
            "customKeyIdentifier": .null,
            "displayName": p.displayName.map(JSONValue.string) ?? .null,
            "endDateTime": .string(WireTime.iso(p.endDateTime)),
            "hint": .string(p.hint),
            "keyId": .string(p.keyId),
            "secretText": secretText.map(JSONValue.string) ?? .null,
            "startDateTime": .string(WireTime.iso(p.startDateTime)),
        ])
    }

    static func application(_ a: StoredApplication, publisherDomain: String, select: [String]?, includeKey: Bool, context: String?) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(a.id), "deletedDateTime": .null, "appId": .string(a.appId),
            "createdDateTime": .string(WireTime.isoFraction(a.createdDateTime)), "displayName": .string(a.displayName),
            "signInAudience": .string(a.signInAudience), "publisherDomain": .string(publisherDomain),
            "identifierUris": .array([]), "tags": .array([]), "notes": .null, "description": .null,
            "appRoles": .array([]), "requiredResourceAccess": .array([]), "isFallbackPublicClient": .null,
            "keyCredentials": .array(a.keyCredentials.map { keyCredential($0, includeKey: includeKey) }),
            "passwordCredentials": .array(a.passwordCredentials.map { passwordCredential($0) }),
        ]
        for (k, v) in a.extra { o[k] = v }
        return finish(o, select: select, context: context)
    }

    static func servicePrincipal(_ s: StoredServicePrincipal, appOwnerTenant: String, select: [String]?, context: String?) -> JSONValue {
        var o: [String: JSONValue] = [
            "id": .string(s.id), "deletedDateTime": .null, "appId": .string(s.appId), "accountEnabled": true,
            "appDisplayName": .string(s.displayName), "displayName": .string(s.displayName),
            "appOwnerOrganizationId": .string(appOwnerTenant), "servicePrincipalType": "Application",
            "servicePrincipalNames": .array([.string(s.appId)]), "tags": .array([]),
            "keyCredentials": .array(s.keyCredentials.map { keyCredential($0, includeKey: false) }),
            "passwordCredentials": .array([]),
        ]
        for (k, v) in s.extra { o[k] = v }
        return finish(o, select: select, context: context)
    }

    private static func finish(_ o: [String: JSONValue], select: [String]?, context: String?) -> JSONValue {
        var out = o
        if let select {
            let wanted = Set(select.map { $0.lowercased() })
            out = o.filter { wanted.contains($0.key.lowercased()) }
        }
        if let context { out["@odata.context"] = .string(context) }
        return .object(out)
    }
}

/// The `$filter` subset Graph clients send for applications and service principals: clauses joined
/// by `and`, each `prop eq 'v'`, `startswith(prop,'v')`, or `coll/any(x:x eq 'v')`.
struct ODataFilter {
    enum Clause {
        case eq(String, String)
        case startsWith(String, String)
        case any(String, String)
    }
    let clauses: [Clause]

    init(parsing text: String, resource: String) throws {
        var out: [Clause] = []
        let unsupported = GraphError.unsupportedQuery("Unsupported or invalid query filter clause specified for property '\(text)' of resource '\(resource)'.")
        for raw in Self.splitAnd(text) {
            let c = raw.trimmingCharacters(in: .whitespaces)
            if c.lowercased().hasPrefix("startswith(") && c.hasSuffix(")") {
                let inner = c.dropFirst("startswith(".count).dropLast()
                guard let comma = inner.firstIndex(of: ",") else { throw unsupported }
                let prop = inner[..<comma].trimmingCharacters(in: .whitespaces)
                guard let v = Self.literal(String(inner[inner.index(after: comma)...])) else { throw unsupported }
                out.append(.startsWith(prop.lowercased(), v))
            } else if let r = c.range(of: "/any(") {
                let coll = c[..<r.lowerBound].lowercased()
                let inner = c[r.upperBound...].dropLast()  // x:x eq 'v'
                guard c.hasSuffix(")"), let colon = inner.firstIndex(of: ":") else { throw unsupported }
                let expr = inner[inner.index(after: colon)...]
                let parts = expr.components(separatedBy: " eq ")
                guard parts.count == 2, let v = Self.literal(parts[1]) else { throw unsupported }
                out.append(.any(coll, v))
            } else {
                let parts = c.components(separatedBy: " eq ")
                guard parts.count == 2, let v = Self.literal(parts[1]) else { throw unsupported }
                out.append(.eq(parts[0].trimmingCharacters(in: .whitespaces).lowercased(), v))
            }
        }
        guard !out.isEmpty else { throw unsupported }
        for clause in out {
            let supported: Set<String>
            switch clause {
            case .eq(let p, _): supported = ["appid", "displayname", "id"]; if !supported.contains(p) { throw unsupported }
            case .startsWith(let p, _): if p != "displayname" { throw unsupported }
            case .any(let p, _): if !["identifieruris", "tags", "serviceprincipalnames"].contains(p) { throw unsupported }
            }
        }
        clauses = out
    }

    private static func splitAnd(_ s: String) -> [String] {
        var parts: [String] = [], current = "", inQuote = false
        var i = s.startIndex
        while i < s.endIndex {
            let ch = s[i]
            if ch == "'" { inQuote.toggle() }
            if !inQuote, s[i...].lowercased().hasPrefix(" and ") {
                parts.append(current); current = ""; i = s.index(i, offsetBy: 5); continue
            }
            current.append(ch)
            i = s.index(after: i)
        }
        parts.append(current)
        return parts
    }

    /// `'it''s'` → `it's`.
    private static func literal(_ s: String) -> String? {
        let t = s.trimmingCharacters(in: .whitespaces)
        guard t.count >= 2, t.hasPrefix("'"), t.hasSuffix("'") else { return nil }
        return String(t.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'")
    }

    /// Whether `object` satisfies every clause. Strings compare as Graph compares them: `appId`
    /// and `id` case-insensitively, `displayName eq` exactly, `startswith` case-insensitively.
    func matches(_ object: some FilterableObject) -> Bool {
        clauses.allSatisfy { c in
            switch c {
            case .eq("appid", let v): return object.appId.lowercased() == v.lowercased()
            case .eq("id", let v): return object.id.lowercased() == v.lowercased()
            case .eq("displayname", let v): return object.displayName == v
            case .startsWith(_, let v): return object.displayName.lowercased().hasPrefix(v.lowercased())
            case .any(let collection, let v): return object.collection(collection, contains: v)
            default: return false
            }
        }
    }
}

/// What a `$filter` can see of a directory object.
protocol FilterableObject {
    var id: String { get }
    var appId: String { get }
    var displayName: String { get }
    /// Whether the multi-valued property `name` (lower-cased) holds `value`; false for a property
    /// the object does not have.
    func collection(_ name: String, contains value: String) -> Bool
}

extension StoredApplication: FilterableObject {
    func collection(_ name: String, contains value: String) -> Bool {
        switch name {
        case "identifieruris": return (extra["identifierUris"]?.arrayValue ?? []).contains(.string(value))
        case "tags": return (extra["tags"]?.arrayValue ?? []).contains(.string(value))
        default: return false
        }
    }
}

extension StoredServicePrincipal: FilterableObject {
    func collection(_ name: String, contains value: String) -> Bool {
        switch name {
        case "serviceprincipalnames": return appId.lowercased() == value.lowercased()
        case "tags": return (extra["tags"]?.arrayValue ?? []).contains(.string(value))
        default: return false
        }
    }
}
