import EntraCrypto
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import GRDB
import KeyRollPrimitives

/// The emulator's persistent directory: tenants, applications, service principals, credentials,
/// role grants, the sign-in log and the emulator's own token-signing key, in SQLite (GRDB).
///
/// Every mutation runs in one SQLite transaction, so concurrent requests never see or leave a
/// half-applied change, and a restart on the same file sees exactly the state that was committed.
/// Dates are stored as `Date`'s own `timeIntervalSinceReferenceDate`, so they round-trip bit for
/// bit (a conversion through the 1970 epoch can move an instant by one ulp, enough to make a key
/// registered "now" not yet active "now").
public final class DirectoryStore: Sendable {
    let db: DatabaseQueue
    /// The schema version this build writes; older files are migrated forward at open.
    public static let schemaVersion = "v1"

    /// An in-memory store (tests, the demo).
    public convenience init() throws {
        try self.init(queue: try DatabaseQueue())
    }

    /// A store in the SQLite file at `path` (created if missing).
    /// Opens (or creates) the directory in the SQLite file at `path`. The file holds the tenant's
    /// token-signing key and every app's credentials, so it is created 0600 (SQLite gives its WAL
    /// and shared-memory files the same mode) and an existing one others can read is made 0600.
    public convenience init(path: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            throw DatabaseError(message: "cannot open \(path): \(String(cString: strerror(errno)))\(errno == ELOOP ? " (it is a symbolic link)" : "")")
        }
        var st = stat()
        let isFile = fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
        if isFile, st.st_mode & 0o077 != 0 { fchmod(fd, 0o600) }
        close(fd)
        guard isFile else { throw DatabaseError(message: "\(path) is not a regular file") }
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        let queue = try DatabaseQueue(path: path, configuration: config)
        try queue.writeWithoutTransaction { try $0.execute(sql: "PRAGMA journal_mode = WAL") }
        try self.init(queue: queue)
    }

    private init(queue: DatabaseQueue) throws {
        self.db = queue
        try Self.migrator.migrate(queue)
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
                CREATE TABLE tenant (id TEXT PRIMARY KEY, domain TEXT NOT NULL UNIQUE COLLATE NOCASE, display_name TEXT NOT NULL);
                CREATE TABLE application (
                    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenant(id), app_id TEXT NOT NULL UNIQUE,
                    display_name TEXT NOT NULL, sign_in_audience TEXT NOT NULL, created REAL NOT NULL, extra TEXT NOT NULL,
                    seq INTEGER NOT NULL);
                CREATE INDEX application_tenant ON application(tenant_id, seq);
                CREATE TABLE service_principal (
                    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL REFERENCES tenant(id), app_id TEXT NOT NULL,
                    display_name TEXT NOT NULL, created REAL NOT NULL, extra TEXT NOT NULL, seq INTEGER NOT NULL,
                    UNIQUE (tenant_id, app_id));
                CREATE TABLE key_credential (
                    owner_id TEXT NOT NULL, key_id TEXT NOT NULL, position INTEGER NOT NULL, der BLOB NOT NULL,
                    custom_key_identifier BLOB, display_name TEXT, start REAL NOT NULL, end REAL NOT NULL,
                    type TEXT NOT NULL, usage TEXT NOT NULL, active_at REAL NOT NULL, sha1 TEXT NOT NULL, sha256 TEXT NOT NULL,
                    PRIMARY KEY (owner_id, key_id));
                CREATE INDEX key_credential_sha1 ON key_credential(sha1);
                CREATE TABLE password_credential (
                    owner_id TEXT NOT NULL, key_id TEXT NOT NULL, secret_hash BLOB NOT NULL, hint TEXT NOT NULL,
                    display_name TEXT, start REAL NOT NULL, end REAL NOT NULL, PRIMARY KEY (owner_id, key_id));
                CREATE TABLE app_owner (application_id TEXT NOT NULL, owner_id TEXT NOT NULL, PRIMARY KEY (application_id, owner_id));
                CREATE TABLE role_grant (sp_id TEXT NOT NULL, role TEXT NOT NULL, PRIMARY KEY (sp_id, role));
                CREATE TABLE sign_in (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT, time REAL NOT NULL, tenant_id TEXT NOT NULL, app_id TEXT NOT NULL,
                    key_id TEXT, thumbprint TEXT, result TEXT NOT NULL, error_code INTEGER, credential_type TEXT NOT NULL);
                CREATE TABLE seen_jti (jti TEXT PRIMARY KEY, expires REAL NOT NULL);
                """)
        }
        // Lookups that stay fast as a tenant grows: the next sequence number, displayName (eq and
        // startswith, case-insensitively), and tags (any) are answered from indexes, not scans.
        m.registerMigration("v2-indexed-lookups") { db in
            try db.execute(sql: """
                CREATE INDEX application_seq ON application(seq);
                CREATE INDEX application_name ON application(tenant_id, display_name COLLATE NOCASE);
                CREATE INDEX service_principal_seq ON service_principal(seq);
                CREATE INDEX service_principal_name ON service_principal(tenant_id, display_name COLLATE NOCASE);
                CREATE TABLE application_tag (tenant_id TEXT NOT NULL, tag TEXT NOT NULL, application_id TEXT NOT NULL,
                                              PRIMARY KEY (tenant_id, tag, application_id)) WITHOUT ROWID;
                CREATE INDEX application_tag_owner ON application_tag(application_id);
                """)
            for row in try Row.fetchAll(db, sql: "SELECT id, tenant_id, extra FROM application") {
                try replaceTags(db, applicationID: row["id"], tenantID: row["tenant_id"], extra: decodeExtra(row["extra"]))
            }
        }
        // What Graph's sign-in log and usage reports need of each sign-in: its id, the service
        // principal, the app's name, the resource and the failure's message; and indexes that answer
        // "a tenant's (or an app's) sign-ins in a time window, newest first" without a scan. Rows
        // logged before get an id, their service principal and the app's current name.
        m.registerMigration("v3-sign-in-graph-fields") { db in
            try db.execute(sql: """
                ALTER TABLE sign_in ADD COLUMN id TEXT;
                ALTER TABLE sign_in ADD COLUMN sp_id TEXT;
                ALTER TABLE sign_in ADD COLUMN app_display_name TEXT;
                ALTER TABLE sign_in ADD COLUMN resource TEXT;
                ALTER TABLE sign_in ADD COLUMN failure_reason TEXT;
                UPDATE sign_in SET
                    id = lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-'
                               || substr('89ab', 1 + abs(random()) % 4, 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),
                    sp_id = (SELECT s.id FROM service_principal s WHERE s.tenant_id = sign_in.tenant_id AND s.app_id = sign_in.app_id),
                    app_display_name = (SELECT a.display_name FROM application a WHERE a.app_id = sign_in.app_id);
                CREATE UNIQUE INDEX sign_in_id ON sign_in(id);
                CREATE INDEX sign_in_tenant_time ON sign_in(tenant_id, time, seq);
                CREATE INDEX sign_in_app_time ON sign_in(app_id, time, seq);
                """)
        }
        // App management policies: each tenant's default policy, the tenant's own policies, and
        // which policy each application is assigned (one at most). Bodies are JSON.
        m.registerMigration("v4-app-management-policies") { db in
            try db.execute(sql: """
                CREATE TABLE tenant_app_policy (tenant_id TEXT PRIMARY KEY, body TEXT NOT NULL);
                CREATE TABLE app_policy (id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, body TEXT NOT NULL);
                CREATE INDEX app_policy_tenant ON app_policy(tenant_id);
                CREATE TABLE app_policy_assignment (owner_id TEXT PRIMARY KEY, policy_id TEXT NOT NULL);
                CREATE INDEX app_policy_assignment_policy ON app_policy_assignment(policy_id);
                """)
        }
        // Delegated (user) sign-ins beside the app-only ones: each sign-in's Graph event type and,
        // for a user's, who signed in. Rows logged before are app-only.
        m.registerMigration("v5-delegated-sign-ins") { db in
            try db.execute(sql: """
                ALTER TABLE sign_in ADD COLUMN event_type TEXT NOT NULL DEFAULT 'servicePrincipal';
                ALTER TABLE sign_in ADD COLUMN user_principal_name TEXT;
                ALTER TABLE sign_in ADD COLUMN user_id TEXT;
                """)
        }
        return m
    }

    /// Runs a read. The queue serializes every access to the one connection, so a read sees one
    /// consistent state without a transaction of its own. (`DatabaseQueue.read` would wrap it in
    /// `PRAGMA query_only`, and changing that flag expires every prepared statement in SQLite:
    /// each request would re-prepare all of its cached statements.)
    private func reading<T>(_ body: (Database) throws -> T) throws -> T { try db.inDatabase(body) }

    // MARK: meta

    public func meta(_ key: String) throws -> [UInt8]? {
        try reading { db in try Data.fetchOne(try db.cachedStatement(sql: "SELECT value FROM meta WHERE key = ?"), arguments: [key]).map { [UInt8]($0) } }
    }

    /// Returns the stored value for `key`, or stores and returns `make()` (atomically).
    public func metaOrInsert(_ key: String, _ make: () throws -> [UInt8]) throws -> [UInt8] {
        try db.write { db in
            if let v = try Data.fetchOne(try db.cachedStatement(sql: "SELECT value FROM meta WHERE key = ?"), arguments: [key]) { return [UInt8](v) }
            let v = try make()
            try db.cachedStatement(sql: "INSERT INTO meta (key, value) VALUES (?, ?)").execute(arguments: [key, Data(v)])
            return v
        }
    }

    // MARK: tenants

    public func createTenant(_ t: Tenant) throws {
        try db.write { db in
            try db.cachedStatement(sql: "INSERT INTO tenant (id, domain, display_name) VALUES (?, ?, ?)").execute(arguments: [t.id, t.domain, t.displayName])
        }
    }

    /// A tenant by GUID or by domain (case-insensitive).
    public func tenant(_ idOrDomain: String) throws -> Tenant? {
        try reading { db in
            try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM tenant WHERE id = ? OR domain = ?"), arguments: [idOrDomain.lowercased(), idOrDomain])
                .map { Tenant(id: $0["id"], domain: $0["domain"], displayName: $0["display_name"]) }
        }
    }

    public func tenants() throws -> [Tenant] {
        try reading { db in
            try Row.fetchAll(db, sql: "SELECT * FROM tenant ORDER BY domain").map { Tenant(id: $0["id"], domain: $0["domain"], displayName: $0["display_name"]) }
        }
    }

    // MARK: applications

    public func read<T>(_ body: (Database) throws -> T) throws -> T { try reading(body) }
    public func write<T>(_ body: (Database) throws -> T) throws -> T { try db.write(body) }

    public func application(id: String) throws -> StoredApplication? { try reading { try Self.application($0, id: id) } }
    public func application(appId: String) throws -> StoredApplication? { try reading { try Self.application($0, appId: appId) } }

    static func application(_ db: Database, id: String) throws -> StoredApplication? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM application WHERE id = ?"), arguments: [id.lowercased()]).map { try application(db, row: $0) }
    }

    static func application(_ db: Database, appId: String) throws -> StoredApplication? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM application WHERE app_id = ?"), arguments: [appId.lowercased()]).map { try application(db, row: $0) }
    }

    /// Applications of a tenant in creation order, starting after sequence number `after`.
    static func applications(_ db: Database, tenantID: String, after: Int64, limit: Int) throws -> [(seq: Int64, app: StoredApplication)] {
        try Row.fetchAll(db, sql: "SELECT * FROM application WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                         arguments: [tenantID, after, limit]).map { (seq: $0["seq"], app: try application(db, row: $0)) }
    }

    static func application(_ db: Database, row: Row) throws -> StoredApplication {
        let id: String = row["id"]
        return StoredApplication(
            id: id, appId: row["app_id"], tenantID: row["tenant_id"], displayName: row["display_name"],
            signInAudience: row["sign_in_audience"], createdDateTime: Date(timeIntervalSinceReferenceDate: row["created"]),
            extra: decodeExtra(row["extra"]), keyCredentials: try keyCredentials(db, owner: id),
            passwordCredentials: try passwordCredentials(db, owner: id),
            owners: try String.fetchAll(try db.cachedStatement(sql: "SELECT owner_id FROM app_owner WHERE application_id = ? ORDER BY owner_id"), arguments: [id]))
    }

    static func insert(_ db: Database, application a: StoredApplication) throws {
        let seq = (try Int64.fetchOne(try db.cachedStatement(sql: nextApplicationSeqSQL))) ?? 1
        try db.cachedStatement(sql: """
            INSERT INTO application (id, tenant_id, app_id, display_name, sign_in_audience, created, extra, seq)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [a.id, a.tenantID, a.appId, a.displayName, a.signInAudience, a.createdDateTime.timeIntervalSinceReferenceDate, encodeExtra(a.extra), seq])
        try replaceKeyCredentials(db, owner: a.id, a.keyCredentials)
        try replacePasswordCredentials(db, owner: a.id, a.passwordCredentials)
        try replaceTags(db, applicationID: a.id, tenantID: a.tenantID, extra: a.extra)
        for o in a.owners { try db.cachedStatement(sql: "INSERT OR IGNORE INTO app_owner VALUES (?, ?)").execute(arguments: [a.id, o]) }
    }

    /// Keeps the tag index in step with the application's `tags`.
    static func replaceTags(_ db: Database, applicationID: String, tenantID: String, extra: [String: JSONValue]) throws {
        try db.cachedStatement(sql: "DELETE FROM application_tag WHERE application_id = ?").execute(arguments: [applicationID])
        for case .string(let tag) in extra["tags"]?.arrayValue ?? [] {
            try db.cachedStatement(sql: "INSERT OR IGNORE INTO application_tag (tenant_id, tag, application_id) VALUES (?, ?, ?)")
                .execute(arguments: [tenantID, tag, applicationID])
        }
    }

    /// Sequence numbers (ascending) of the tenant's applications a filter clause can match, from an
    /// index (named with `INDEXED BY` where SQLite, without statistics, would prefer walking the
    /// tenant in `seq` order): `appId`/`id` eq, `displayName` eq or startswith (case-insensitive superset), `tags`
    /// any. Nil when the clause needs no index (the caller then walks the tenant in order).
    static func candidateApplications(_ db: Database, tenantID: String, clause: ODataFilter.Clause, after: Int64) throws -> [Int64]? {
        guard let (sql, args) = candidateQuery(tenantID: tenantID, clause: clause, after: after) else { return nil }
        return try Int64.fetchAll(try db.cachedStatement(sql: sql), arguments: args)
    }

    /// The statement ``candidateApplications(_:tenantID:clause:after:)`` runs for `clause`.
    static func candidateQuery(tenantID: String, clause: ODataFilter.Clause, after: Int64) -> (String, StatementArguments)? {
        switch clause {
        case .eq("appid", let v): return ("SELECT seq FROM application WHERE app_id = ? AND tenant_id = ? AND seq > ?", [v.lowercased(), tenantID, after])
        case .eq("id", let v): return ("SELECT seq FROM application WHERE id = ? AND tenant_id = ? AND seq > ?", [v.lowercased(), tenantID, after])
        case .eq("displayname", let v):
            return ("SELECT seq FROM application INDEXED BY application_name WHERE tenant_id = ? AND display_name = ? COLLATE NOCASE AND seq > ? ORDER BY seq",
                    [tenantID, v, after])
        case .startsWith(_, let v):
            return ("SELECT seq FROM application INDEXED BY application_name WHERE tenant_id = ? AND display_name >= ? COLLATE NOCASE AND display_name < ? COLLATE NOCASE AND seq > ? ORDER BY seq",
                    [tenantID, v, v + "\u{10FFFF}", after])
        case .any("tags", let v):
            return ("SELECT a.seq FROM application_tag t JOIN application a ON a.id = t.application_id WHERE t.tenant_id = ? AND t.tag = ? AND a.seq > ? ORDER BY a.seq",
                    [tenantID, v, after])
        default: return nil
        }
    }

    /// The next application sequence number: one search of the `seq` index, whatever the table's size.
    static let nextApplicationSeqSQL = "SELECT COALESCE(MAX(seq), 0) + 1 FROM application"

    static func application(_ db: Database, seq: Int64) throws -> StoredApplication? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM application WHERE seq = ?"), arguments: [seq]).map { try application(db, row: $0) }
    }

    static func applicationCount(_ db: Database, tenantID: String) throws -> Int {
        try Int.fetchOne(try db.cachedStatement(sql: "SELECT COUNT(*) FROM application WHERE tenant_id = ?"), arguments: [tenantID]) ?? 0
    }

    static func update(_ db: Database, application a: StoredApplication) throws {
        try db.cachedStatement(sql: "UPDATE application SET display_name = ?, sign_in_audience = ?, extra = ? WHERE id = ?").execute(
            arguments: [a.displayName, a.signInAudience, encodeExtra(a.extra), a.id])
        try replaceKeyCredentials(db, owner: a.id, a.keyCredentials)
        try replacePasswordCredentials(db, owner: a.id, a.passwordCredentials)
        try replaceTags(db, applicationID: a.id, tenantID: a.tenantID, extra: a.extra)
        try db.cachedStatement(sql: "DELETE FROM app_owner WHERE application_id = ?").execute(arguments: [a.id])
        for o in a.owners { try db.cachedStatement(sql: "INSERT OR IGNORE INTO app_owner VALUES (?, ?)").execute(arguments: [a.id, o]) }
    }

    static func deleteApplication(_ db: Database, id: String) throws {
        for sql in ["DELETE FROM key_credential WHERE owner_id = ?", "DELETE FROM password_credential WHERE owner_id = ?",
                    "DELETE FROM app_owner WHERE application_id = ?", "DELETE FROM application_tag WHERE application_id = ?",
                    "DELETE FROM app_policy_assignment WHERE owner_id = ?", "DELETE FROM application WHERE id = ?"] {
            try db.cachedStatement(sql: sql).execute(arguments: [id])
        }
    }

    // MARK: credentials

    static func keyCredentials(_ db: Database, owner: String) throws -> [StoredKeyCredential] {
        try Row.fetchAll(try db.cachedStatement(sql: "SELECT * FROM key_credential WHERE owner_id = ? ORDER BY position"), arguments: [owner]).map {
            StoredKeyCredential(
                keyId: $0["key_id"], key: [UInt8]($0["der"] as Data), customKeyIdentifier: ($0["custom_key_identifier"] as Data?).map { [UInt8]($0) },
                displayName: $0["display_name"], startDateTime: Date(timeIntervalSinceReferenceDate: $0["start"]),
                endDateTime: Date(timeIntervalSinceReferenceDate: $0["end"]), type: $0["type"], usage: $0["usage"],
                activeAt: Date(timeIntervalSinceReferenceDate: $0["active_at"]))
        }
    }

    static func replaceKeyCredentials(_ db: Database, owner: String, _ creds: [StoredKeyCredential]) throws {
        try db.cachedStatement(sql: "DELETE FROM key_credential WHERE owner_id = ?").execute(arguments: [owner])
        for (i, k) in creds.enumerated() {
            try db.cachedStatement(sql: """
                INSERT INTO key_credential (owner_id, key_id, position, der, custom_key_identifier, display_name, start, end, type, usage, active_at, sha1, sha256)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [owner, k.keyId, i, Data(k.key), k.customKeyIdentifier.map { Data($0) }, k.displayName,
                                 k.startDateTime.timeIntervalSinceReferenceDate, k.endDateTime.timeIntervalSinceReferenceDate, k.type, k.usage,
                                 k.activeAt.timeIntervalSinceReferenceDate, k.sha1.hex, k.sha256.hex])
        }
    }

    static func passwordCredentials(_ db: Database, owner: String) throws -> [StoredPasswordCredential] {
        try Row.fetchAll(try db.cachedStatement(sql: "SELECT * FROM password_credential WHERE owner_id = ? ORDER BY start, key_id"), arguments: [owner]).map {
            StoredPasswordCredential(keyId: $0["key_id"], secretHash: [UInt8]($0["secret_hash"] as Data), hint: $0["hint"],
                                     displayName: $0["display_name"], startDateTime: Date(timeIntervalSinceReferenceDate: $0["start"]),
                                     endDateTime: Date(timeIntervalSinceReferenceDate: $0["end"]))
        }
    }

    static func replacePasswordCredentials(_ db: Database, owner: String, _ creds: [StoredPasswordCredential]) throws {
        try db.cachedStatement(sql: "DELETE FROM password_credential WHERE owner_id = ?").execute(arguments: [owner])
        for p in creds {
            try db.cachedStatement(sql: "INSERT INTO password_credential VALUES (?, ?, ?, ?, ?, ?, ?)").execute(
                arguments: [owner, p.keyId, Data(p.secretHash), p.hint, p.displayName, p.startDateTime.timeIntervalSinceReferenceDate, p.endDateTime.timeIntervalSinceReferenceDate])
        }
    }

    // MARK: service principals

    public func servicePrincipal(tenantID: String, appId: String) throws -> StoredServicePrincipal? {
        try reading { try Self.servicePrincipal($0, tenantID: tenantID, appId: appId) }
    }

    static func servicePrincipal(_ db: Database, tenantID: String, appId: String) throws -> StoredServicePrincipal? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM service_principal WHERE tenant_id = ? AND app_id = ?"), arguments: [tenantID, appId.lowercased()])
            .map { try servicePrincipal(db, row: $0) }
    }

    static func servicePrincipal(_ db: Database, id: String) throws -> StoredServicePrincipal? {
        try Row.fetchOne(try db.cachedStatement(sql: "SELECT * FROM service_principal WHERE id = ?"), arguments: [id.lowercased()]).map { try servicePrincipal(db, row: $0) }
    }

    static func servicePrincipals(_ db: Database, tenantID: String, after: Int64, limit: Int) throws -> [(seq: Int64, sp: StoredServicePrincipal)] {
        try Row.fetchAll(db, sql: "SELECT * FROM service_principal WHERE tenant_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                         arguments: [tenantID, after, limit]).map { (seq: $0["seq"], sp: try servicePrincipal(db, row: $0)) }
    }

    static func servicePrincipal(_ db: Database, row: Row) throws -> StoredServicePrincipal {
        let id: String = row["id"]
        let roles = try String.fetchAll(try db.cachedStatement(sql: "SELECT role FROM role_grant WHERE sp_id = ?"), arguments: [id]).compactMap(GraphRole.init(rawValue:))
        return StoredServicePrincipal(id: id, appId: row["app_id"], tenantID: row["tenant_id"], displayName: row["display_name"],
                                      createdDateTime: Date(timeIntervalSinceReferenceDate: row["created"]),
                                      keyCredentials: try keyCredentials(db, owner: id), roles: Set(roles), extra: decodeExtra(row["extra"]))
    }

    static func insert(_ db: Database, servicePrincipal s: StoredServicePrincipal) throws {
        let seq = (try Int64.fetchOne(try db.cachedStatement(sql: "SELECT COALESCE(MAX(seq), 0) + 1 FROM service_principal"))) ?? 1
        try db.cachedStatement(sql: "INSERT INTO service_principal (id, tenant_id, app_id, display_name, created, extra, seq) VALUES (?, ?, ?, ?, ?, ?, ?)").execute(
            arguments: [s.id, s.tenantID, s.appId, s.displayName, s.createdDateTime.timeIntervalSinceReferenceDate, encodeExtra(s.extra), seq])
        try replaceKeyCredentials(db, owner: s.id, s.keyCredentials)
        try setRoles(db, spID: s.id, s.roles)
    }

    static func setRoles(_ db: Database, spID: String, _ roles: Set<GraphRole>) throws {
        try db.cachedStatement(sql: "DELETE FROM role_grant WHERE sp_id = ?").execute(arguments: [spID])
        for r in roles { try db.cachedStatement(sql: "INSERT INTO role_grant VALUES (?, ?)").execute(arguments: [spID, r.rawValue]) }
    }

    static func deleteServicePrincipal(_ db: Database, id: String) throws {
        for sql in ["DELETE FROM key_credential WHERE owner_id = ?", "DELETE FROM role_grant WHERE sp_id = ?",
                    "DELETE FROM app_owner WHERE owner_id = ?", "DELETE FROM service_principal WHERE id = ?"] {
            try db.cachedStatement(sql: sql).execute(arguments: [id])
        }
    }

    // MARK: sign-in log and replay

    public func logSignIn(_ e: SignInEvent) throws {
        try db.write { db in
            try db.cachedStatement(sql: """
                INSERT INTO sign_in (time, tenant_id, app_id, key_id, thumbprint, result, error_code, credential_type,
                                     id, sp_id, app_display_name, resource, failure_reason, event_type, user_principal_name, user_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """).execute(arguments: [e.time.timeIntervalSinceReferenceDate, e.tenantID, e.appId, e.keyId, e.thumbprint, e.result, e.errorCode,
                                         e.credentialType, e.id.isEmpty ? UUID().uuidString.lowercased() : e.id, e.servicePrincipalID,
                                         e.appDisplayName, e.resource, e.failureReason, e.eventType.rawValue, e.userPrincipalName, e.userId])
        }
    }

    /// The sign-in log, oldest first, optionally for one appId, after sequence number `after`.
    public func signIns(appId: String? = nil, after: Int64 = 0, limit: Int = 1000) throws -> [SignInEvent] {
        try reading { db in
            try Row.fetchAll(db, sql: "SELECT * FROM sign_in WHERE seq > ? AND (? IS NULL OR app_id = ?) ORDER BY seq LIMIT ?",
                             arguments: [after, appId, appId, limit]).map(Self.signIn(row:))
        }
    }

    static func signIn(row: Row) -> SignInEvent {
        SignInEvent(sequence: row["seq"], time: Date(timeIntervalSinceReferenceDate: row["time"]), tenantID: row["tenant_id"], appId: row["app_id"],
                    keyId: row["key_id"], thumbprint: row["thumbprint"], result: row["result"], errorCode: row["error_code"],
                    credentialType: row["credential_type"], id: row["id"] ?? "", servicePrincipalID: row["sp_id"],
                    appDisplayName: row["app_display_name"], resource: row["resource"], failureReason: row["failure_reason"],
                    eventType: SignInEventType(rawValue: row["event_type"] ?? "") ?? .servicePrincipal,
                    userPrincipalName: row["user_principal_name"], userId: row["user_id"])
    }

    /// Records `jti`; returns false if it was already seen and has not expired (strict replay mode).
    public func recordJTI(_ jti: String, expires: Date, now: Date) throws -> Bool {
        try db.write { db in
            try db.cachedStatement(sql: "DELETE FROM seen_jti WHERE expires < ?").execute(arguments: [now.timeIntervalSinceReferenceDate])
            if try Bool.fetchOne(try db.cachedStatement(sql: "SELECT 1 FROM seen_jti WHERE jti = ?"), arguments: [jti]) != nil { return false }
            try db.cachedStatement(sql: "INSERT INTO seen_jti VALUES (?, ?)").execute(arguments: [jti, expires.timeIntervalSinceReferenceDate])
            return true
        }
    }

    /// Row counts per table: for status pages and tests of "nothing was corrupted".
    public func counts() throws -> [String: Int] {
        try reading { db in
            var out: [String: Int] = [:]
            for t in ["tenant", "application", "service_principal", "key_credential", "password_credential", "sign_in"] {
                out[t] = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM \(t)") ?? 0
            }
            return out
        }
    }

    /// SQLite's own consistency check; "ok" when the file is sound.
    public func integrityCheck() throws -> String {
        try reading { try String.fetchOne($0, sql: "PRAGMA integrity_check") ?? "unknown" }
    }
}

private func encodeExtra(_ extra: [String: JSONValue]) -> String {
    String(decoding: JSONValue.object(extra).serialized(), as: UTF8.self)
}

private func decodeExtra(_ text: String) -> [String: JSONValue] {
    (try? JSONValue.parse(Array(text.utf8), maxDepth: 64))?.objectValue ?? [:]
}
