import Foundation
import GRDB

/// App management policies as the store keeps them: each tenant's default policy (absent until
/// first set: then it is the documented default, disabled), the tenant's own policies, and which
/// policy each application is assigned. Policies are kept as JSON of their Swift values, so dates
/// round-trip exactly.
extension DirectoryStore {
    static func tenantAppManagementPolicy(_ db: Database, tenantID: String) throws -> TenantAppManagementPolicy {
        let text = try String.fetchOne(try db.cachedStatement(sql: "SELECT body FROM tenant_app_policy WHERE tenant_id = ?"), arguments: [tenantID])
        return try text.map { try decodePolicy(TenantAppManagementPolicy.self, $0) } ?? TenantAppManagementPolicy()
    }

    static func setTenantAppManagementPolicy(_ db: Database, tenantID: String, _ p: TenantAppManagementPolicy) throws {
        let body = try encodePolicy(p)
        try db.cachedStatement(sql: "INSERT OR REPLACE INTO tenant_app_policy (tenant_id, body) VALUES (?, ?)").execute(arguments: [tenantID, body])
    }

    static func appManagementPolicy(_ db: Database, tenantID: String, id: String) throws -> AppManagementPolicy? {
        try String.fetchOne(try db.cachedStatement(sql: "SELECT body FROM app_policy WHERE id = ? AND tenant_id = ?"), arguments: [id.lowercased(), tenantID])
            .map { try decodePolicy(AppManagementPolicy.self, $0) }
    }

    /// The tenant's policies, oldest first.
    static func appManagementPolicies(_ db: Database, tenantID: String) throws -> [AppManagementPolicy] {
        try String.fetchAll(try db.cachedStatement(sql: "SELECT body FROM app_policy WHERE tenant_id = ? ORDER BY rowid"), arguments: [tenantID])
            .map { try decodePolicy(AppManagementPolicy.self, $0) }
    }

    /// Stores `p` in the tenant, replacing the policy with its id (its id is kept lower-cased).
    static func saveAppManagementPolicy(_ db: Database, tenantID: String, _ p: AppManagementPolicy) throws {
        var p = p
        p.id = p.id.lowercased()
        let body = try encodePolicy(p)
        try db.cachedStatement(sql: "UPDATE app_policy SET body = ? WHERE id = ? AND tenant_id = ?").execute(arguments: [body, p.id, tenantID])
        if db.changesCount == 0 {
            try db.cachedStatement(sql: "INSERT INTO app_policy (id, tenant_id, body) VALUES (?, ?, ?)").execute(arguments: [p.id, tenantID, body])
        }
    }

    /// Deletes a policy and its assignments (the applications fall back to the tenant default).
    static func deleteAppManagementPolicy(_ db: Database, id: String) throws {
        for sql in ["DELETE FROM app_policy_assignment WHERE policy_id = ?", "DELETE FROM app_policy WHERE id = ?"] {
            try db.cachedStatement(sql: sql).execute(arguments: [id.lowercased()])
        }
    }

    /// The policy assigned to the application (object id) `ownerID`, if any.
    static func assignedAppManagementPolicy(_ db: Database, ownerID: String) throws -> AppManagementPolicy? {
        try String.fetchOne(try db.cachedStatement(sql: """
            SELECT p.body FROM app_policy_assignment a JOIN app_policy p ON p.id = a.policy_id WHERE a.owner_id = ?
            """), arguments: [ownerID]).map { try decodePolicy(AppManagementPolicy.self, $0) }
    }

    /// Assigns policy `policyID` to `ownerID`, replacing its assignment; nil removes it.
    static func assignAppManagementPolicy(_ db: Database, policyID: String?, to ownerID: String) throws {
        try db.cachedStatement(sql: "DELETE FROM app_policy_assignment WHERE owner_id = ?").execute(arguments: [ownerID])
        if let policyID {
            try db.cachedStatement(sql: "INSERT INTO app_policy_assignment (owner_id, policy_id) VALUES (?, ?)").execute(arguments: [ownerID, policyID.lowercased()])
        }
    }

    /// Object ids of the applications a policy is assigned to, in assignment order.
    static func appManagementPolicyTargets(_ db: Database, policyID: String) throws -> [String] {
        try String.fetchAll(try db.cachedStatement(sql: "SELECT owner_id FROM app_policy_assignment WHERE policy_id = ? ORDER BY rowid"),
                            arguments: [policyID.lowercased()])
    }

    /// The restrictions in force for `app` (see ``EffectiveAppPolicy``).
    static func effectiveAppPolicy(_ db: Database, _ app: StoredApplication, inheritsDefault: Bool) throws -> EffectiveAppPolicy {
        EffectiveAppPolicy(tenantDefault: try tenantAppManagementPolicy(db, tenantID: app.tenantID),
                           assigned: try assignedAppManagementPolicy(db, ownerID: app.id), inheritsDefault: inheritsDefault)
    }

    private static func encodePolicy(_ p: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(p), as: UTF8.self)
    }

    private static func decodePolicy<T: Decodable>(_ type: T.Type, _ text: String) throws -> T {
        try JSONDecoder().decode(T.self, from: Data(text.utf8))
    }
}
