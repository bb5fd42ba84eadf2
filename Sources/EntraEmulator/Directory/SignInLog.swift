import Foundation
import GRDB
import KeyRollPrimitives

/// The sign-in log as Graph's audit-log and report endpoints read it: pages in `createdDateTime`
/// order with a keyset cursor, single entries by id, and the newest successful sign-in per app,
/// per credential and per resource (app-only and delegated apart).
extension DirectoryStore {
    /// Where a page of the sign-in log continues: after the entry at (`time`, `seq`) in the
    /// listing's order. Times are `timeIntervalSinceReferenceDate`, written with Swift's shortest
    /// round-tripping spelling, so the cursor names the stored instant exactly.
    struct SignInCursor: Equatable {
        var time: Double
        var seq: Int64

        init(time: Double, seq: Int64) {
            self.time = time
            self.seq = seq
        }

        init(after e: SignInEvent) { self.init(time: e.time.timeIntervalSinceReferenceDate, seq: e.sequence) }

        /// The cursor in a `$skiptoken` (nil when the token is not one of ours).
        init?(token: String) {
            guard let bytes = Base64URL.decodeLenient(token) else { return nil }
            let parts = String(decoding: bytes, as: UTF8.self).split(separator: ":")
            guard parts.count == 2, let t = Double(parts[0]), t.isFinite, let s = Int64(parts[1]) else { return nil }
            self.init(time: t, seq: s)
        }

        var token: String { Base64URL.encode(Array("\(time):\(seq)".utf8)) }
    }

    /// One condition on `sign_in` rows, in SQL with its arguments.
    struct SignInCondition {
        var sql: String
        var arguments: [(any DatabaseValueConvertible)?]
    }

    /// A tenant's sign-ins matching every condition, newest first (or oldest first), after `cursor`.
    static func signInPage(_ db: Database, tenantID: String, conditions: [SignInCondition], descending: Bool,
                           after cursor: SignInCursor?, limit: Int) throws -> [SignInEvent] {
        var sql = "SELECT * FROM sign_in WHERE tenant_id = ?"
        var args: [(any DatabaseValueConvertible)?] = [tenantID]
        for c in conditions {
            sql += " AND (\(c.sql))"
            args += c.arguments
        }
        if let cursor {
            sql += descending ? " AND (time < ? OR (time = ? AND seq < ?))" : " AND (time > ? OR (time = ? AND seq > ?))"
            args += [cursor.time, cursor.time, cursor.seq]
        }
        sql += descending ? " ORDER BY time DESC, seq DESC LIMIT ?" : " ORDER BY time, seq LIMIT ?"
        args.append(limit)
        return try Row.fetchAll(db, sql: sql, arguments: StatementArguments(args)).map(signIn(row:))
    }

    /// One sign-in of a tenant by its Graph id.
    static func signIn(_ db: Database, tenantID: String, id: String) throws -> SignInEvent? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM sign_in WHERE id = ? AND tenant_id = ?"), arguments: [id.lowercased(), tenantID])
            .map(signIn(row:))
    }

    /// The newest successful sign-in of some group: when, and which sign-in it was.
    struct LastSignIn: Equatable {
        var time: Date
        var signInID: String
        var resource: String?
    }

    /// The flows the service-principal report tells apart: app-only sign-ins (client credentials)
    /// and delegated ones (a user's sign-in to the app).
    enum Flow {
        case appOnly, delegated

        /// The condition on `sign_in.event_type` (constant SQL).
        var sql: String {
            switch self {
            case .appOnly: return "event_type = 'servicePrincipal'"
            case .delegated: return "event_type IN ('interactiveUser', 'nonInteractiveUser')"
            }
        }
    }

    /// The newest successful sign-in of `flow` at or before `until` of each app of the tenant (or of
    /// `appId`) as the client, keyed by appId.
    static func lastSignInByApp(_ db: Database, tenantID: String, appId: String?, flow: Flow, until: Date) throws -> [String: LastSignIn] {
        var out: [String: LastSignIn] = [:]
        // SQLite takes the bare columns of an aggregate query with one MAX() from the row holding the maximum.
        for row in try Row.fetchAll(db, sql: """
            SELECT app_id, MAX(time) AS last, id, resource FROM sign_in
            WHERE tenant_id = ? AND result = 'success' AND \(flow.sql) AND time <= ? AND (? IS NULL OR app_id = ?) GROUP BY app_id
            """, arguments: [tenantID, until.timeIntervalSinceReferenceDate, appId?.lowercased(), appId?.lowercased()]) {
            out[row["app_id"]] = LastSignIn(time: Date(timeIntervalSinceReferenceDate: row["last"]), signInID: row["id"] ?? "", resource: row["resource"])
        }
        return out
    }

    /// The newest successful sign-in at or before `until` with each credential of the tenant's apps
    /// (or of `appId`), app-only or delegated (a confidential client redeeming a code with it), keyed
    /// by ``credentialKey(appId:keyId:)``.
    static func lastSignInByCredential(_ db: Database, tenantID: String, appId: String?, until: Date) throws -> [String: LastSignIn] {
        var out: [String: LastSignIn] = [:]
        for row in try Row.fetchAll(db, sql: """
            SELECT app_id, lower(key_id) AS key, MAX(time) AS last, id, resource FROM sign_in
            WHERE tenant_id = ? AND result = 'success' AND key_id IS NOT NULL AND time <= ? AND (? IS NULL OR app_id = ?)
            GROUP BY app_id, lower(key_id)
            """, arguments: [tenantID, until.timeIntervalSinceReferenceDate, appId?.lowercased(), appId?.lowercased()]) {
            out[credentialKey(appId: row["app_id"], keyId: row["key"])] =
                LastSignIn(time: Date(timeIntervalSinceReferenceDate: row["last"]), signInID: row["id"] ?? "", resource: row["resource"])
        }
        return out
    }

    static func credentialKey(appId: String, keyId: String) -> String { "\(appId.lowercased())|\(keyId.lowercased())" }

    /// The newest successful sign-in of `flow` at or before `until` for each resource tokens were
    /// asked for, keyed by ``resourceKey(_:)``.
    static func lastSignInByResource(_ db: Database, tenantID: String, flow: Flow, until: Date) throws -> [String: LastSignIn] {
        var out: [String: LastSignIn] = [:]
        for row in try Row.fetchAll(db, sql: """
            SELECT resource, MAX(time) AS last, id FROM sign_in
            WHERE tenant_id = ? AND result = 'success' AND \(flow.sql) AND resource IS NOT NULL AND time <= ? GROUP BY resource
            """, arguments: [tenantID, until.timeIntervalSinceReferenceDate]) {
            let key = resourceKey(row["resource"])
            let last = LastSignIn(time: Date(timeIntervalSinceReferenceDate: row["last"]), signInID: row["id"] ?? "", resource: row["resource"])
            if let seen = out[key], seen.time >= last.time { continue }
            out[key] = last
        }
        return out
    }

    /// A resource as compared: lower-cased, without a trailing `/` (`api://x/` and `API://x` are one).
    static func resourceKey(_ r: String) -> String {
        var k = r.lowercased()
        while k.hasSuffix("/") { k.removeLast() }
        return k
    }
}
