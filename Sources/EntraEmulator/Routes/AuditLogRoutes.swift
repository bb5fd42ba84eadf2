import EntraCrypto
import Foundation
import GRDB
import KeyRollPrimitives

/// Graph's sign-in log and credential-usage reports, served from the emulator's own sign-in log
/// (every token request that named a client, and the delegated sign-ins tests record):
///
/// - `GET /beta/auditLogs/signIns` and `/beta/auditLogs/signIns/{id}`: sign-ins newest first, with
///   `$filter`, `$top` (≤ 1000), `$orderby=createdDateTime`, `$select` and `@odata.nextLink`. The
///   event types listed are those `signInEventTypes/any(…)` names, or interactive user sign-ins
///   without it, as Graph does.
/// - `GET /v1.0/auditLogs/signIns`: always empty (v1.0 lists interactive user sign-ins only, which
///   the emulator serves on beta only); the beta-only properties in a `$filter` are a 400.
/// - `GET /beta/reports/servicePrincipalSignInActivities` and `/beta/reports/appCredentialSignInActivities`:
///   the newest successful sign-in per service principal and per credential.
///
/// All need `AuditLog.Read.All`, count against the audit-log throttle, and see the log through the
/// settings' retention and latencies (on the emulator's clock).
struct AuditLogRoutes {
    let graph: GraphRoutes
    let caller: GraphCaller
    var emulator: EntraEmulator { graph.emulator }
    var request: EmulatorRequest { graph.request }

    /// What Graph answers an app without AuditLog.Read.All (seen in 2023–2024 answers quoted in
    /// microsoft-graph-explorer-v4 issues #2731 and #3165).
    static let permissionMissing = GraphError(403, "Authentication_MSGraphPermissionMissing",
                                              "Calling principal does not have required MSGraph permissions AuditLog.Read.All")
    static let licenceMissing = GraphError(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
                                           "Neither tenant is B2C or tenant doesn't have premium license")
    static let graphAppId = "00000003-0000-0000-c000-000000000000"
    /// `signInEventType` members a filter may name.
    static let eventTypes: Set<String> = ["interactiveUser", "nonInteractiveUser", "servicePrincipal", "managedIdentity", "unknownFutureValue"]
    /// signIn properties that exist on beta only: a v1.0 filter naming one is refused.
    static let betaOnlyProperties = ["signineventtypes": "signInEventTypes", "serviceprincipalcredentialkeyid": "servicePrincipalCredentialKeyId",
                                     "serviceprincipalcredentialthumbprint": "servicePrincipalCredentialThumbprint",
                                     "clientcredentialtype": "clientCredentialType"]
    /// The properties the emulator writes on a signIn, in Graph's casing (what `$select` may name).
    static let signInProperties = ["id", "createdDateTime", "appId", "appDisplayName", "servicePrincipalId", "servicePrincipalName",
                                   "resourceId", "resourceDisplayName", "ipAddress", "status", "signInEventTypes", "clientCredentialType",
                                   "servicePrincipalCredentialKeyId", "servicePrincipalCredentialThumbprint", "federatedCredentialId", "isInteractive",
                                   "userPrincipalName", "userId"]

    private enum Route {
        case signIns, signIn(String), v1SignIns, servicePrincipalActivities, credentialActivities
    }

    func dispatch(seg: [String]) throws -> (Int, JSONValue?) {
        let names = seg.map { $0.lowercased() }
        let beta = graph.version == "beta"
        let route: Route
        switch (names.first ?? "", names.count > 1 ? names[1] : "", names.count) {
        case ("auditlogs", "signins", 2): route = beta ? .signIns : .v1SignIns
        case ("auditlogs", "signins", 3) where beta: route = .signIn(seg[2])
        case ("reports", "serviceprincipalsigninactivities", 2) where beta: route = .servicePrincipalActivities
        case ("reports", "appcredentialsigninactivities", 2) where beta: route = .credentialActivities
        default: throw GraphError.noRoute(request.method, request.path)
        }
        guard request.method == "GET" else { throw GraphError.methodNotAllowed() }
        guard caller.roles.contains(.auditLogReadAll) else { throw Self.permissionMissing }
        guard emulator.settings.signInLogLicensed else { throw Self.licenceMissing }
        if let e = emulator.throttleAuditLog(caller: caller.appId, tenant: caller.tenantID) { throw e }
        switch route {
        case .signIns: return (200, try listSignIns())
        case .signIn(let id): return (200, try getSignIn(id))
        case .v1SignIns: return (200, try listV1SignIns())
        case .servicePrincipalActivities: return (200, try servicePrincipalActivities())
        case .credentialActivities: return (200, try credentialActivities())
        }
    }

    // MARK: sign-in log

    /// The part of the log a reader sees now: entries no older than the retention and no younger
    /// than the latency.
    private func window(_ settings: EmulatorSettings) -> (oldest: Double, newest: Double) {
        let now = graph.now
        return (now.addingTimeInterval(-settings.signInLogRetentionDays * 86_400).timeIntervalSinceReferenceDate,
                now.addingTimeInterval(-settings.signInLogLatency).timeIntervalSinceReferenceDate)
    }

    private func listSignIns() throws -> JSONValue {
        let settings = emulator.settings
        let top = try signInPageSize()
        let descending = try newestFirst()
        let select = try signInSelect()
        var cursor: DirectoryStore.SignInCursor?
        if let token = request.queryValue("$skiptoken") {
            guard let c = DirectoryStore.SignInCursor(token: token) else { throw GraphError(400, "BadRequest", "Invalid skip token.") }
            cursor = c
        }
        let visible = window(settings)
        var conditions: [DirectoryStore.SignInCondition] = [.init(sql: "time >= ? AND time <= ?", arguments: [visible.oldest, visible.newest])]
        var typeClauses: [[String]] = []
        for clause in try request.queryValue("$filter").map({ try AuditLogFilter(parsing: $0).clauses }) ?? [] {
            switch clause {
            case .any("signineventtypes", let values):
                guard values.allSatisfy(Self.eventTypes.contains) else { throw AuditLogFilter.invalid }
                typeClauses.append(values)
            case .compare("appid", .eq, .string(let v)):
                conditions.append(.init(sql: "app_id = ?", arguments: [v.lowercased()]))
            case .compare("serviceprincipalid", .eq, .string(let v)):
                conditions.append(.init(sql: "sp_id = ? COLLATE NOCASE", arguments: [v]))
            case .compare("serviceprincipalcredentialkeyid", .eq, .string(let v)):
                // Only entries that show the keyId match it.
                conditions.append(.init(sql: "key_id = ? COLLATE NOCASE AND (event_type = 'servicePrincipal' OR ?)",
                                        arguments: [v, settings.delegatedSignInsCarryCredentialKeyId]))
            case .compare("userprincipalname", .eq, .string(let v)):
                conditions.append(.init(sql: "user_principal_name = ? COLLATE NOCASE", arguments: [v]))
            case .compare("userid", .eq, .string(let v)):
                conditions.append(.init(sql: "user_id = ? COLLATE NOCASE", arguments: [v]))
            case .compare("status/errorcode", .eq, .int(let n)):
                conditions.append(n == 0 ? .init(sql: "result = 'success'", arguments: []) : .init(sql: "error_code = ?", arguments: [n]))
            case .compare("createddatetime", let op, .date(let d)) where op != .ne:
                let sql: String
                switch op {
                case .eq, .ne: sql = "time = ?"
                case .gt: sql = "time > ?"
                case .ge: sql = "time >= ?"
                case .lt: sql = "time < ?"
                case .le: sql = "time <= ?"
                }
                conditions.append(.init(sql: sql, arguments: [d.timeIntervalSinceReferenceDate]))
            default:
                throw AuditLogFilter.invalid
            }
        }
        let types = Self.listedEventTypes(typeClauses).sorted()
        conditions.append(.init(sql: "event_type IN (\(types.map { _ in "?" }.joined(separator: ", ")))",
                                arguments: types.map { $0 as (any DatabaseValueConvertible)? }))
        var items: [JSONValue] = []
        var next: DirectoryStore.SignInCursor?
        if !types.isEmpty {
            try emulator.store.read { db in
                let rows = try DirectoryStore.signInPage(db, tenantID: caller.tenantID, conditions: conditions, descending: descending,
                                                         after: cursor, limit: top + 1)
                let page = rows.prefix(top)
                items = try page.map { try signInJSON($0, settings: settings, select: select, db) }
                if rows.count > top, let last = page.last { next = DirectoryStore.SignInCursor(after: last) }
            }
        }
        var body: [String: JSONValue] = ["@odata.context": .string(signInContext(select)), "value": .array(items)]
        if let next { body["@odata.nextLink"] = .string(graph.nextLink(token: next.token)) }
        return .object(body)
    }

    /// The event types a list shows: those every `signInEventTypes/any(…)` clause names (an entry has
    /// one type), or without such a clause interactive user sign-ins, Graph's default.
    static func listedEventTypes(_ clauses: [[String]]) -> Set<String> {
        clauses.dropFirst().reduce(Set(clauses.first ?? [SignInEventType.interactiveUser.rawValue])) { $0.intersection($1) }
    }

    private func getSignIn(_ id: String) throws -> JSONValue {
        let settings = emulator.settings
        let select = try signInSelect()
        let visible = window(settings)
        return try emulator.store.read { db in
            guard let e = try DirectoryStore.signIn(db, tenantID: caller.tenantID, id: id), visible.oldest <= e.time.timeIntervalSinceReferenceDate, e.time.timeIntervalSinceReferenceDate <= visible.newest else {
                throw GraphError.notFound(id)
            }
            var o = try signInJSON(e, settings: settings, select: select, db).objectValue ?? [:]
            o["@odata.context"] = .string(signInContext(select) + "/$entity")
            return .object(o)
        }
    }

    /// v1.0 lists interactive user sign-ins only (the emulator serves them on beta only); the
    /// properties that single out service-principal sign-ins do not exist there.
    private func listV1SignIns() throws -> JSONValue {
        _ = try signInPageSize()
        for clause in try request.queryValue("$filter").map({ try AuditLogFilter(parsing: $0).clauses }) ?? [] {
            let property: String
            switch clause {
            case .any(let p, _): property = p
            case .compare(let p, _, _): property = p
            }
            if let name = Self.betaOnlyProperties[property] {
                throw GraphError(400, "BadRequest", "Could not find a property named '\(name)' on type 'microsoft.graph.signIn'.")
            }
        }
        return .object(["@odata.context": .string("\(graph.base)/$metadata#auditLogs/signIns"), "value": .array([])])
    }

    private func signInContext(_ select: [String]?) -> String {
        "\(graph.base)/$metadata#auditLogs/signIns" + (select.map { "(\($0.joined(separator: ",")))" } ?? "")
    }

    /// `$top`: Graph's sign-in log pages 1,000 by default and at most.
    private func signInPageSize() throws -> Int {
        guard let t = request.queryValue("$top") else { return 1000 }
        guard let n = Int(t), n >= 1, n <= 1000 else {
            throw GraphError(400, "BadRequest", "Invalid page size specified: '\(t.prefix(32))'. Must be between 1 and 1000 inclusive.")
        }
        return n
    }

    /// `$orderby`: `createdDateTime` (`desc`, the default, or `asc`); nothing else.
    private func newestFirst() throws -> Bool {
        guard let raw = request.queryValue("$orderby") else { return true }
        let parts = raw.split(separator: " ", omittingEmptySubsequences: true).map { $0.lowercased() }
        guard parts.first == "createddatetime", parts.count <= 2 else { throw GraphError(400, "BadRequest", "Invalid orderby clause") }
        switch parts.count == 2 ? parts[1] : "asc" {
        case "desc": return true
        case "asc": return false
        default: throw GraphError(400, "BadRequest", "Invalid orderby clause")
        }
    }

    private func signInSelect() throws -> [String]? {
        guard let raw = request.queryValue("$select") else { return nil }
        return try raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { name in
            guard let c = Self.signInProperties.first(where: { $0.lowercased() == name.lowercased() }) else {
                throw GraphError(400, "BadRequest", "Could not find a property named '\(name.prefix(64))' on type 'microsoft.graph.signIn'.")
            }
            return c
        }
    }

    /// A logged sign-in as Graph's beta `signIn`. A delegated one names its user, not a service
    /// principal, and shows the credential a confidential client used per the settings.
    private func signInJSON(_ e: SignInEvent, settings: EmulatorSettings, select: [String]?, _ db: Database) throws -> JSONValue {
        func text(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        let resource = try resourceIdentity(e.resource, db)
        let showsKey = !e.isDelegated || settings.delegatedSignInsCarryCredentialKeyId
        var o: [String: JSONValue] = [
            "id": .string(e.id),
            "createdDateTime": .string(WireTime.iso(e.time)),
            "appId": .string(e.appId),
            "appDisplayName": text(e.appDisplayName),
            "servicePrincipalId": text(e.servicePrincipalID),
            "servicePrincipalName": text(e.isDelegated ? nil : e.appDisplayName),
            "resourceId": text(resource.id),
            "resourceDisplayName": text(resource.name),
            "ipAddress": "127.0.0.1",
            "status": .object(["errorCode": .int(Int64(e.result == "success" ? 0 : e.errorCode ?? 0)),
                               "failureReason": text(e.result == "success" ? nil : e.failureReason), "additionalDetails": .null]),
            "signInEventTypes": .array([.string(e.eventType.rawValue)]),
            "clientCredentialType": .string(e.clientCredentialType(certificate: settings.certificateClientCredentialType)),
            "servicePrincipalCredentialKeyId": text(showsKey ? e.keyId : nil),
            "servicePrincipalCredentialThumbprint": text(showsKey ? e.thumbprint : nil),
            "federatedCredentialId": .null,
            "isInteractive": .bool(e.eventType == .interactiveUser),
            "userPrincipalName": text(e.userPrincipalName),
            "userId": text(e.userId),
        ]
        if let select {
            let wanted = Set(select)
            o = o.filter { wanted.contains($0.key) }
        }
        return .object(o)
    }

    /// The `resourceId` (the resource app's appId) and `resourceDisplayName` of a requested resource:
    /// Microsoft Graph by its URI, GUID or the emulator's own host; an application of the tenant by
    /// its appId. Other resources (an `api://` URI) are left null.
    private func resourceIdentity(_ r: String?, _ db: Database) throws -> (id: String?, name: String?) {
        guard let r else { return (nil, nil) }
        let key = DirectoryStore.resourceKey(r)
        if key == "https://graph.microsoft.com" || key == Self.graphAppId || key == DirectoryStore.resourceKey(request.baseURL) {
            return (Self.graphAppId, "Microsoft Graph")
        }
        if UUID(uuidString: r) != nil {
            let app = try DirectoryStore.application(db, appId: r)
            return (r.lowercased(), app?.tenantID == caller.tenantID ? app?.displayName : nil)
        }
        return (nil, nil)
    }

    // MARK: usage reports

    /// The report filters: `appId eq '…'` (both reports) and `keyId eq '…'` (credentials), joined by
    /// `and`. Which other properties Graph filters on is not documented; anything else is refused.
    private struct ReportFilter {
        var appIds: Set<String> = []
        var keyIds: Set<String> = []
        /// Two different values for one property: nothing matches.
        var matchesNothing: Bool { appIds.count > 1 || keyIds.count > 1 }
    }

    private func reportFilter(keyId allowed: Bool) throws -> ReportFilter {
        var f = ReportFilter()
        for clause in try request.queryValue("$filter").map({ try AuditLogFilter(parsing: $0).clauses }) ?? [] {
            switch clause {
            case .compare("appid", .eq, .string(let v)): f.appIds.insert(v.lowercased())
            case .compare("keyid", .eq, .string(let v)) where allowed: f.keyIds.insert(v.lowercased())
            default: throw AuditLogFilter.invalid
            }
        }
        guard request.queryValue("$orderby") == nil else { throw GraphError(400, "BadRequest", "Invalid orderby clause") }
        return f
    }

    /// `{lastSignInDateTime, lastSignInRequestId}`, or null when there was none.
    private func activity(_ last: DirectoryStore.LastSignIn?) -> JSONValue {
        guard let last else { return .null }
        return .object(["lastSignInDateTime": .string(WireTime.iso(last.time)), "lastSignInRequestId": .string(last.signInID)])
    }

    /// One page of a report computed in full: `$top` rows from the offset in `$skiptoken`.
    private func reportPage(_ rows: [JSONValue], context: String) throws -> JSONValue {
        let top = try graph.pageSize()
        let start = Int(min(max(graph.skipToken(), 0), Int64(rows.count)))
        let end = min(start + top, rows.count)
        var body: [String: JSONValue] = ["@odata.context": .string("\(graph.base)/$metadata#\(context)"), "value": .array(Array(rows[start..<end]))]
        if end < rows.count { body["@odata.nextLink"] = .string(graph.nextLink(after: Int64(end))) }
        return .object(body)
    }

    /// Per service principal of the tenant with any activity the report shows yet: its newest
    /// successful sign-in as a client and as a resource (tokens asked for its appId or one of its
    /// application's identifierUris), app-only and delegated apart, and the newest of the four.
    private func servicePrincipalActivities() throws -> JSONValue {
        let filter = try reportFilter(keyId: false)
        let until = graph.now.addingTimeInterval(-emulator.settings.reportLatency)
        let rows: [JSONValue] = filter.matchesNothing ? [] : try emulator.store.read { db in
            let appId = filter.appIds.first
            let principals: [StoredServicePrincipal]
            if let appId {
                principals = [try DirectoryStore.servicePrincipal(db, tenantID: caller.tenantID, appId: appId)].compactMap { $0 }
            } else {
                principals = try DirectoryStore.servicePrincipals(db, tenantID: caller.tenantID, after: 0, limit: Int.max).map(\.sp)
            }
            let tenant = caller.tenantID
            let appOnlyClient = try DirectoryStore.lastSignInByApp(db, tenantID: tenant, appId: appId, flow: .appOnly, until: until)
            let delegatedClient = try DirectoryStore.lastSignInByApp(db, tenantID: tenant, appId: appId, flow: .delegated, until: until)
            let appOnlyResource = try DirectoryStore.lastSignInByResource(db, tenantID: tenant, flow: .appOnly, until: until)
            let delegatedResource = try DirectoryStore.lastSignInByResource(db, tenantID: tenant, flow: .delegated, until: until)
            return try principals.compactMap { sp -> JSONValue? in
                var names: [String] = []
                if !appOnlyResource.isEmpty || !delegatedResource.isEmpty {
                    let app = try DirectoryStore.application(db, appId: sp.appId)
                    names = [sp.appId] + (app?.extra["identifierUris"]?.arrayValue ?? []).compactMap(\.stringValue)
                }
                func asResource(_ byResource: [String: DirectoryStore.LastSignIn]) -> DirectoryStore.LastSignIn? {
                    names.compactMap { byResource[DirectoryStore.resourceKey($0)] }.max { $0.time < $1.time }
                }
                let activities = [
                    "applicationAuthenticationClientSignInActivity": appOnlyClient[sp.appId.lowercased()],
                    "applicationAuthenticationResourceSignInActivity": asResource(appOnlyResource),
                    "delegatedClientSignInActivity": delegatedClient[sp.appId.lowercased()],
                    "delegatedResourceSignInActivity": asResource(delegatedResource),
                ]
                guard let last = activities.values.compactMap({ $0 }).max(by: { $0.time < $1.time }) else { return nil }
                var row = activities.mapValues(activity)
                row["id"] = .string(Base64.encode(Array(sp.appId.utf8)))
                row["appId"] = .string(sp.appId)
                row["lastSignInActivity"] = activity(last)
                return .object(row)
            }
        }
        return try reportPage(rows, context: "reports/servicePrincipalSignInActivities")
    }

    /// One credential as the credential report lists it. Certificates (key credentials, on the
    /// application or its service principal) and secrets (the application's password credentials)
    /// differ only in these fields.
    struct ReportedCredential {
        var keyId: String
        /// `certificate`, `clientSecret` (or `unknownFutureValue` for other key types).
        var keyType: String
        /// `sign` or `verify` for key credentials (from their `usage`); null for secrets (UNCONFIRMED).
        var keyUsage: String?
        /// `application` or `servicePrincipal`.
        var origin: String
        var created: Date
        var expires: Date

        static func key(_ k: StoredKeyCredential, origin: String) -> ReportedCredential {
            let usage = k.usage.lowercased()
            return ReportedCredential(keyId: k.keyId, keyType: k.type.contains("X509") ? "certificate" : "unknownFutureValue",
                                      keyUsage: ["sign", "verify"].contains(usage) ? usage : "unknownFutureValue", origin: origin,
                                      created: k.startDateTime, expires: k.endDateTime)
        }

        static func secret(_ p: StoredPasswordCredential) -> ReportedCredential {
            ReportedCredential(keyId: p.keyId, keyType: "clientSecret", keyUsage: nil, origin: "application", created: p.startDateTime, expires: p.endDateTime)
        }

        static func all(of app: StoredApplication, servicePrincipal sp: StoredServicePrincipal?) -> [ReportedCredential] {
            app.keyCredentials.map { key($0, origin: "application") } + app.passwordCredentials.map(secret)
                + (sp?.keyCredentials ?? []).map { key($0, origin: "servicePrincipal") }
        }
    }

    /// Per current credential of the tenant's applications (and their service principals): its
    /// newest successful sign-in the report shows yet, in any flow ("the sign-in activity of the
    /// credential across all flows": app-only, or delegated with the credential redeeming the code),
    /// or null when it has none.
    private func credentialActivities() throws -> JSONValue {
        let filter = try reportFilter(keyId: true)
        let until = graph.now.addingTimeInterval(-emulator.settings.reportLatency)
        let rows: [JSONValue] = filter.matchesNothing ? [] : try emulator.store.read { db in
            let appId = filter.appIds.first
            let apps: [StoredApplication]
            if let appId {
                apps = [try DirectoryStore.application(db, appId: appId)].compactMap { $0 }.filter { $0.tenantID == caller.tenantID }
            } else {
                apps = try DirectoryStore.applications(db, tenantID: caller.tenantID, after: 0, limit: Int.max).map(\.app)
            }
            let used = try DirectoryStore.lastSignInByCredential(db, tenantID: caller.tenantID, appId: appId, until: until)
            var out: [JSONValue] = []
            for app in apps {
                let sp = try DirectoryStore.servicePrincipal(db, tenantID: caller.tenantID, appId: app.appId)
                for c in ReportedCredential.all(of: app, servicePrincipal: sp) {
                    if let k = filter.keyIds.first, c.keyId.lowercased() != k { continue }
                    let last = c.origin == "application" ? used[DirectoryStore.credentialKey(appId: app.appId, keyId: c.keyId)] : nil
                    out.append(.object([
                        "id": .string(Base64.encode(Array("\(c.keyId)|\(c.origin)".utf8))),
                        "appId": .string(app.appId),
                        "appObjectId": .string(app.id),
                        "servicePrincipalObjectId": sp.map { .string($0.id) } ?? .null,
                        "resourceId": try resourceIdentity(last?.resource, db).id.map(JSONValue.string) ?? .null,
                        "keyId": .string(c.keyId),
                        "keyType": .string(c.keyType),
                        "keyUsage": c.keyUsage.map(JSONValue.string) ?? .null,
                        "credentialOrigin": .string(c.origin),
                        "createdDateTime": .string(WireTime.iso(c.created)),
                        "expirationDateTime": .string(WireTime.iso(c.expires)),
                        "signInActivity": activity(last),
                    ]))
                }
            }
            return out
        }
        return try reportPage(rows, context: "reports/appCredentialSignInActivities")
    }
}
