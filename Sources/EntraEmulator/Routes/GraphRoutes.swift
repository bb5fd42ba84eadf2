import EntraCrypto
import Foundation
import GRDB
import KeyRollPrimitives

/// The app-only caller behind a Graph bearer token.
struct GraphCaller {
    var appId: String
    var servicePrincipalID: String
    var tenantID: String
    var roles: Set<GraphRole>

    var canWriteAll: Bool { roles.contains(.applicationReadWriteAll) || roles.contains(.directoryReadWriteAll) }
    var canReadAll: Bool { canWriteAll || roles.contains(.applicationReadAll) || roles.contains(.applicationReadWriteOwnedBy) }
    /// App management policies: read with Policy.Read.All, write with Policy.ReadWrite.ApplicationConfiguration.
    var canWritePolicies: Bool { roles.contains(.policyReadWriteApplicationConfiguration) }
    var canReadPolicies: Bool { canWritePolicies || roles.contains(.policyReadAll) }

    /// Create/update/delete an application: RW.All, Directory.RW.All, or OwnedBy on an owned app.
    func mayWrite(_ app: StoredApplication) -> Bool {
        canWriteAll || (roles.contains(.applicationReadWriteOwnedBy) && app.owners.contains(servicePrincipalID))
    }
}

/// Microsoft Graph v1.0: the application and service-principal subset KeyRoll needs, with Graph's
/// authorization rules, error envelope and OData conventions; and under `/beta` the sign-in log and
/// the credential-usage reports (``AuditLogRoutes``).
struct GraphRoutes {
    let emulator: EntraEmulator
    let request: EmulatorRequest
    let requestID: String

    var now: Date { emulator.now }
    /// `v1.0` or `beta`: the version segment the request came in on.
    var version: String { request.pathSegments.first?.lowercased() == "beta" ? "beta" : "v1.0" }
    var base: String { request.baseURL + "/" + version }

    func respond() -> EmulatorResponse {
        do {
            let caller = try authenticate()
            let (status, body) = try dispatch(caller)
            var headers: [(String, String)] = []
            if status == 201, let id = body?["id"]?.stringValue {
                headers.append(("Location", "\(base)/\(request.pathSegments.dropFirst().joined(separator: "/"))/\(id)"))
            }
            guard let body else { return EmulatorResponse(status: status, headers: headers) }
            return .json(status, body, headers: headers + [("OData-Version", "4.0")])
        } catch let e as GraphError {
            if e.code == "Authentication_MissingOrMalformed" { emulator.bump("proof_failures_total") }
            return e.response(now: now, requestID: requestID, clientRequestID: request.headers["client-request-id"])
        } catch {
            return GraphError(500, "generalException", "An internal error occurred.")
                .response(now: now, requestID: requestID, clientRequestID: request.headers["client-request-id"])
        }
    }

    // MARK: authentication

    /// Validates the bearer: the emulator's signature, `exp`/`nbf`, an audience Graph accepts.
    private func authenticate() throws -> GraphCaller {
        guard let auth = request.headers["authorization"], auth.lowercased().hasPrefix("bearer ") else {
            throw GraphError.invalidToken("Access token is empty.")
        }
        let token = String(auth.dropFirst(7)).trimmingCharacters(in: .whitespaces)
        guard let jws = try? CompactJWS(parsing: token, encoding: .strict) else {
            throw GraphError.invalidToken("CompactToken parsing failed with error code: 80049217")
        }
        guard (try? jws.verify(with: emulator.signing.certificate.rsaPublicKey(), allowing: [.rs256])) != nil else {
            throw GraphError.invalidToken("Access token validation failure. Invalid signature.")
        }
        guard let exp = jws.claims.date("exp"), let nbf = jws.claims.date("nbf"), nbf <= now.addingTimeInterval(300), now < exp else {
            throw GraphError.invalidToken("Access token has expired or is not yet valid.")
        }
        let aud = (jws.claims.string("aud") ?? "").lowercased()
        let own = request.baseURL.lowercased()
        let host = URL(string: own)?.host.map { "\(URL(string: own)?.scheme ?? "https")://\($0)" } ?? own
        let accepted = Set(TokenRoutes.graphResources + [own, own + "/", host, host + "/"])
        guard accepted.contains(aud) else { throw GraphError.invalidToken("Access token validation failure. Invalid audience.") }
        guard let appId = jws.claims.string("appid"), let oid = jws.claims.string("oid"), let tid = jws.claims.string("tid") else {
            throw GraphError.invalidToken("Access token validation failure.")
        }
        let roles = Set((jws.claims["roles"]?.arrayValue ?? []).compactMap { $0.stringValue.flatMap(GraphRole.init(rawValue:)) })
        return GraphCaller(appId: appId, servicePrincipalID: oid, tenantID: tid, roles: roles)
    }

    // MARK: routing

    private func dispatch(_ caller: GraphCaller) throws -> (Int, JSONValue?) {
        let seg = Array(request.pathSegments.dropFirst())  // drop "v1.0"
        guard let first = seg.first else { throw GraphError.noRoute(request.method, request.path) }
        let (set, altKey) = parseEntitySet(first)
        let method = request.method
        if set == "auditlogs" || set == "reports" {
            return try AuditLogRoutes(graph: self, caller: caller).dispatch(seg: seg)
        }
        // Under /beta the emulator serves the audit log and the reports only.
        guard version == "v1.0" else { throw GraphError.noRoute(method, request.path) }
        switch set {
        case "policies":
            return try PolicyRoutes(graph: self, caller: caller).dispatch(seg: seg)
        case "applications":
            if seg.count == 1, altKey == nil {
                switch method {
                case "GET": return (200, try listApplications(caller))
                case "POST": return (201, try createApplication(caller))
                default: throw GraphError.methodNotAllowed()
                }
            }
            let id = altKey ?? seg[1]
            let action = altKey == nil ? (seg.count > 2 ? seg[2] : nil) : (seg.count > 1 ? seg[1] : nil)
            let lookup: AppLookup = altKey != nil ? .appId(id) : .id(id)
            if action?.lowercased() == "appmanagementpolicies" {
                return try PolicyRoutes(graph: self, caller: caller).dispatch(application: lookup, rest: Array(seg.dropFirst(altKey == nil ? 3 : 2)))
            }
            guard seg.count <= (altKey == nil ? 3 : 2) else { throw GraphError.noRoute(method, request.path) }
            if let action {
                guard method == "POST" else { throw GraphError.methodNotAllowed() }
                switch normalizeAction(action) {
                case "addkey": return (200, try addKey(caller, lookup))
                case "removekey": try removeKey(caller, lookup); return (204, nil)
                case "addpassword": return (200, try addPassword(caller, lookup))
                case "removepassword": try removePassword(caller, lookup); return (204, nil)
                default: throw GraphError.noRoute(method, request.path)
                }
            }
            switch method {
            case "GET": return (200, try getApplication(caller, lookup))
            case "PATCH": try updateApplication(caller, lookup); return (204, nil)
            case "DELETE": try deleteApplication(caller, lookup); return (204, nil)
            default: throw GraphError.methodNotAllowed()
            }
        case "serviceprincipals":
            return try ServicePrincipalRoutes(graph: self, caller: caller).dispatch(seg: seg, altKey: altKey)
        default:
            throw GraphError(400, "BadRequest", "Resource not found for the segment '\(first)'.")
        }
    }

    /// `applications` → ("applications", nil); `applications(appId='x')` → ("applications", "x").
    func parseEntitySet(_ s: String) -> (String, String?) {
        guard let open = s.firstIndex(of: "("), s.hasSuffix(")") else { return (s.lowercased(), nil) }
        let name = s[..<open].lowercased()
        var inner = s[s.index(after: open)..<s.index(before: s.endIndex)]
        if inner.lowercased().hasPrefix("appid=") { inner = inner.dropFirst(6) }
        let key = inner.trimmingCharacters(in: CharacterSet(charactersIn: "'\""))
        return (String(name), key)
    }

    func normalizeAction(_ a: String) -> String {
        a.lowercased().replacingOccurrences(of: "microsoft.graph.", with: "")
    }

    enum AppLookup {
        case id(String), appId(String)
        var text: String { switch self { case .id(let s), .appId(let s): return s } }
    }

    func loadApplication(_ db: Database, _ lookup: AppLookup, caller: GraphCaller) throws -> StoredApplication {
        let app: StoredApplication?
        switch lookup {
        case .id(let id): app = try DirectoryStore.application(db, id: id)
        case .appId(let appId): app = try DirectoryStore.application(db, appId: appId)
        }
        guard let app, app.tenantID == caller.tenantID else { throw GraphError.notFound(lookup.text) }
        return app
    }

    // MARK: applications

    private func getApplication(_ caller: GraphCaller, _ lookup: AppLookup) throws -> JSONValue {
        let select = try canonicalSelect("application")
        if select?.contains("keyCredentials") == true, let e = emulator.throttleKeyCredentialSelect(caller: caller.appId, tenant: caller.tenantID) { throw e }
        let app = try emulator.store.read { try loadApplication($0, lookup, caller: caller) }
        let selfRead = emulator.settings.allowSelfRead && app.appId == caller.appId
        guard caller.canReadAll || selfRead || app.owners.contains(caller.servicePrincipalID) else { throw GraphError.denied }
        let tenant = try emulator.store.tenant(app.tenantID)
        let includeKey = select?.contains("keyCredentials") == true
        let context = select.map { "\(base)/$metadata#applications(\($0.joined(separator: ",")))/$entity" } ?? "\(base)/$metadata#applications/$entity"
        return GraphJSON.application(app, publisherDomain: tenant?.domain ?? "", select: select, includeKey: includeKey, context: context)
    }

    private func listApplications(_ caller: GraphCaller) throws -> JSONValue {
        // Listing or filtering needs Application.Read.All (or higher); a role-less app may read
        // only its own object, by id or appId (GET /applications/{id}).
        guard caller.canReadAll else { throw GraphError.denied }
        let select = try canonicalSelect("application")
        if select?.contains("keyCredentials") == true, let e = emulator.throttleKeyCredentialSelect(caller: caller.appId, tenant: caller.tenantID) { throw e }
        let filter = try request.queryValue("$filter").map { try ODataFilter(parsing: $0, resource: "application") }
        let top = try pageSize()
        let after = skipToken()
        let tenant = try emulator.store.tenant(caller.tenantID)
        let wantCount = request.queryValue("$count")?.lowercased() == "true"
        var page = ListingPage<StoredApplication>(top: top, after: after, counting: wantCount)
        var total: Int?
        let everyone = caller.canReadAll  // (checked above; kept as the one place that decides visibility)
        func visible(_ app: StoredApplication) -> Bool { everyone || app.owners.contains(caller.servicePrincipalID) }
        try emulator.store.read { db in
            // An indexable clause narrows the candidates through an index; the full filter then
            // confirms each one, so the answer is the same as a scan's, in the same order.
            if let filter, let seqs = try filter.clauses.lazy.compactMap({ try DirectoryStore.candidateApplications(db, tenantID: caller.tenantID, clause: $0, after: after) }).first {
                for seq in seqs {
                    guard let app = try DirectoryStore.application(db, seq: seq), visible(app), filter.matches(app) else { continue }
                    if !page.offer(app, seq: seq) { break }
                }
            } else if filter == nil, everyone {
                let batch = try DirectoryStore.applications(db, tenantID: caller.tenantID, after: after, limit: top + 1)
                for (seq, app) in batch {
                    if !page.offer(app, seq: seq) { break }
                }
                if wantCount { total = try DirectoryStore.applicationCount(db, tenantID: caller.tenantID) }
            } else {
                try page.scan(from: after, batch: { cursor in
                    try DirectoryStore.applications(db, tenantID: caller.tenantID, after: cursor, limit: 500).map { ($0.seq, $0.app) }
                }, keep: { visible($0) && (filter?.matches($0) ?? true) })
            }
        }
        // only the first page counts
        let count = !wantCount || after > 0 ? nil : (total ?? page.count)
        let includeKey = emulator.settings.keyOnListSelect && select?.contains("keyCredentials") == true
        let context = select.map { "\(base)/$metadata#applications(\($0.joined(separator: ",")))" } ?? "\(base)/$metadata#applications"
        var body: [String: JSONValue] = [
            "@odata.context": .string(context),
            "value": .array(page.items.map { GraphJSON.application($0, publisherDomain: tenant?.domain ?? "", select: select, includeKey: includeKey, context: nil) }),
        ]
        if let count { body["@odata.count"] = .int(Int64(count)) }
        if page.more { body["@odata.nextLink"] = .string(nextLink(after: page.lastSeq)) }
        return .object(body)
    }

    func nextLink(after seq: Int64) -> String {
        nextLink(token: Base64URL.encode(Array(String(seq).utf8)))
    }

    /// This request's URL with `$skiptoken` set to `token`.
    func nextLink(token: String) -> String {
        var items = request.query.filter { $0.name.lowercased() != "$skiptoken" }
        items.append(("$skiptoken", token))
        return "\(request.baseURL)\(request.path)?" + items.map { "\($0.0)=\($0.1.addingPercentEncoding(withAllowedCharacters: .urlQueryValueAllowed) ?? $0.1)" }.joined(separator: "&")
    }

    /// The sequence number a `$skiptoken` (from our own `@odata.nextLink`) continues after; 0 for the first page.
    func skipToken() -> Int64 {
        Int64(request.queryValue("$skiptoken").flatMap { Base64URL.decodeLenient($0) }.map { String(decoding: $0, as: UTF8.self) } ?? "0") ?? 0
    }

    func pageSize() throws -> Int {
        guard let t = request.queryValue("$top") else { return 100 }
        guard let n = Int(t), n >= 1, n <= 999 else {
            throw GraphError.badRequest("Invalid page size specified: '\(t)'. Must be between 1 and 999 inclusive.")
        }
        return n
    }

    /// `$select` in Graph's casing for `type` (whatever casing the client sent), nil when absent;
    /// a property the type does not have is a 400, as in Graph.
    func canonicalSelect(_ type: String) throws -> [String]? {
        guard let raw = request.queryValue("$select") else { return nil }
        return try raw.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }.map { name in
            guard let c = GraphJSON.canonical(name, of: type) else {
                throw GraphError(400, "BadRequest", "Could not find a property named '\(name.prefix(64))' on type 'microsoft.graph.\(type)'.")
            }
            return c
        }
    }

    /// A request body with every known property name in Graph's casing (`DisplayName` → `displayName`).
    func canonicalBody(_ body: [String: JSONValue], _ type: String) -> [String: JSONValue] {
        Dictionary(body.map { (GraphJSON.canonical($0.key, of: type) ?? $0.key, $0.value) }, uniquingKeysWith: { _, last in last })
    }

    func bodyObject() throws -> [String: JSONValue] {
        guard request.body.count <= 4 * 1024 * 1024 else { throw GraphError(413, "Request_EntityTooLarge", "The request body is too large.") }
        guard !request.body.isEmpty else { throw GraphError.badRequest("Empty Payload. JSON content expected.") }
        guard let v = try? JSONValue.parse(request.body, maxDepth: 32), case .object(let o) = v else {
            throw GraphError.badRequest("Unable to read JSON request payload. Please ensure Content-Type header is set and payload is of valid JSON format.")
        }
        return o
    }

    private func createApplication(_ caller: GraphCaller) throws -> JSONValue {
        guard caller.canWriteAll || caller.roles.contains(.applicationReadWriteOwnedBy) else { throw GraphError.denied }
        var body = canonicalBody(try bodyObject(), "application")
        guard let name = body["displayName"]?.stringValue, !name.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw GraphError.badRequest("Invalid value specified for property 'displayName' of resource 'Application'.")
        }
        guard name.count <= 256 else { throw GraphError.badRequest("Invalid value specified for property 'displayName' of resource 'Application'.") }
        if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
        if body["passwordCredentials"]?.arrayValue?.isEmpty == false {
            throw GraphError.badRequest("Adding passwordCredentials when creating applications is not supported.")
        }
        let audience = body["signInAudience"]?.stringValue ?? "AzureADMyOrg"
        guard ["AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount", "PersonalMicrosoftAccount"].contains(audience) else {
            throw GraphError.badRequest("Invalid value specified for property 'signInAudience' of resource 'Application'.")
        }
        let keyCreds = try KeyCredentialInput.list(body["keyCredentials"], existing: [], now: now, activeAt: now.addingTimeInterval(emulator.propagationDelay()),
                                                   settings: emulator.settings)
        for k in ["displayName", "signInAudience", "keyCredentials", "passwordCredentials", "@odata.type", "id", "appId", "createdDateTime"] { body[k] = nil }
        var app = StoredApplication(id: UUID().uuidString.lowercased(), appId: UUID().uuidString.lowercased(), tenantID: caller.tenantID,
                                    displayName: name, signInAudience: audience, createdDateTime: now, extra: body,
                                    keyCredentials: keyCreds, passwordCredentials: [], owners: [])
        if !caller.canWriteAll { app.owners = [caller.servicePrincipalID] }
        try emulator.store.write { db in
            try enforceAppPolicy(db, before: nil, after: app)
            try DirectoryStore.insert(db, application: app)
        }
        let tenant = try emulator.store.tenant(caller.tenantID)
        return GraphJSON.application(app, publisherDomain: tenant?.domain ?? "", select: nil, includeKey: false,
                                     context: "\(base)/$metadata#applications/$entity")
    }

    /// PATCH: replaces each property sent. `keyCredentials` replaces the whole collection; an entry
    /// that echoes an existing keyId with `key: null` keeps the stored certificate (as the Azure CLI
    /// relies on); entries left out are deleted.
    private func updateApplication(_ caller: GraphCaller, _ lookup: AppLookup) throws {
        var body = canonicalBody(try bodyObject(), "application")
        try mutateApplication(caller, lookup, allowed: caller.mayWrite) { app in
            if body["passwordCredentials"] != nil {
                throw GraphError.badRequest("Property 'passwordCredentials' is read-only and cannot be set.")
            }
            if let name = body["displayName"] {
                guard let s = name.stringValue, !s.isEmpty else { throw GraphError.badRequest("Invalid value specified for property 'displayName' of resource 'Application'.") }
                app.displayName = s
            }
            if let aud = body["signInAudience"]?.stringValue { app.signInAudience = aud }
            if body.keys.contains("keyCredentials") {
                app.keyCredentials = try KeyCredentialInput.list(body["keyCredentials"], existing: app.keyCredentials, now: now,
                                                                 activeAt: now.addingTimeInterval(emulator.propagationDelay()), settings: emulator.settings)
                guard app.keyCredentials.count + app.passwordCredentials.count <= emulator.settings.maxCredentialItems else { throw GraphError.sizeExceeded }
            }
            for k in ["displayName", "signInAudience", "keyCredentials", "@odata.type", "id", "appId", "createdDateTime"] { body[k] = nil }
            for (k, v) in body { app.extra[k] = v }
        }
    }

    /// Every change to one application: loaded inside one write transaction, refused unless
    /// `allowed` says the caller may, counted against the caller's write throttle, changed by
    /// `change`, held to the app management policy in force, stored. A throw anywhere leaves the
    /// application as it was.
    private func mutateApplication<T>(_ caller: GraphCaller, _ lookup: AppLookup, allowed: (StoredApplication) -> Bool,
                                      _ change: (inout StoredApplication) throws -> T) throws -> T {
        try emulator.store.write { db in
            var app = try loadApplication(db, lookup, caller: caller)
            guard allowed(app) else { throw GraphError.denied }
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            let before = app
            let result = try change(&app)
            try enforceAppPolicy(db, before: before, after: app)
            try DirectoryStore.update(db, application: app)
            return result
        }
    }

    /// Refuses, as Graph does, a write that adds a credential the application's app management
    /// policy forbids (see ``EffectiveAppPolicy``); `before` nil for a new application.
    private func enforceAppPolicy(_ db: Database, before: StoredApplication?, after: StoredApplication) throws {
        let added = NewCredential.added(before: before, after: after)
        guard !added.isEmpty else { return }
        let settings = emulator.settings
        let policy = try DirectoryStore.effectiveAppPolicy(db, after, inheritsDefault: settings.appPolicyInheritsDefault)
        if let refusal = policy.refusal(adding: added, appCreatedAt: after.createdDateTime, now: now, lifetimeFromStart: settings.appPolicyLifetimeFromStart) {
            throw refusal
        }
    }

    private func deleteApplication(_ caller: GraphCaller, _ lookup: AppLookup) throws {
        try emulator.store.write { db in
            let app = try loadApplication(db, lookup, caller: caller)
            guard caller.mayWrite(app) else { throw GraphError.denied }
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            try DirectoryStore.deleteApplication(db, id: app.id)
            if let sp = try DirectoryStore.servicePrincipal(db, tenantID: app.tenantID, appId: app.appId) {
                try DirectoryStore.deleteServicePrincipal(db, id: sp.id)
            }
        }
    }

    // MARK: addKey / removeKey

    /// Self-service: an app's own token may roll its own application's keys; otherwise RW.All,
    /// Directory.RW.All, or OwnedBy on an owned app.
    private func mayRollKeys(_ caller: GraphCaller, _ app: StoredApplication) -> Bool {
        caller.appId == app.appId || caller.mayWrite(app)
    }

    /// The JSON type each parameter of the key actions must have. Graph reads an action's body
    /// against its parameter types before anything else, so a wrong type is a 400 bad request
    /// (never an authentication error about the proof).
    static let actionParameters: [String: [String: String]] = [
        "addKey": ["keyCredential": "object", "passwordCredential": "object", "proof": "string"],
        "removeKey": ["keyId": "string", "proof": "string"],
    ]

    static func checkTypes(_ body: [String: JSONValue], action: String) throws {
        let expected = actionParameters[action] ?? [:]
        for (name, value) in body.sorted(by: { $0.key < $1.key }) {
            guard let type = expected.first(where: { $0.key.lowercased() == name.lowercased() })?.value else {
                throw GraphError(400, "BadRequest", "The parameter '\(name.prefix(64))' in the request payload is not a valid parameter for the operation '\(action)'.")
            }
            let actual: String
            switch value {
            case .null: continue  // every parameter is nullable; the action itself says which it needs
            case .string: actual = "string"
            case .object: actual = "object"
            case .array: actual = "array"
            case .bool: actual = "boolean"
            case .int, .double: actual = "number"
            }
            guard actual == type else {
                throw GraphError(400, "BadRequest", "Cannot convert the literal of type \(actual) to the expected type \(type) for the parameter '\(name)' of the operation '\(action)'.")
            }
        }
    }

    private func addKey(_ caller: GraphCaller, _ lookup: AppLookup) throws -> JSONValue {
        let body = try bodyObject()
        try Self.checkTypes(body, action: "addKey")
        let added = try mutateApplication(caller, lookup, allowed: { mayRollKeys(caller, $0) }) { app in
            let input = try KeyCredentialInput.forAddKey(body)
            try ProofValidator(now: now, settings: emulator.settings).validate(body["proof"], objectID: app.id, credentials: app.keyCredentials)
            guard app.keyCredentials.count + app.passwordCredentials.count + 1 <= emulator.settings.maxCredentialItems else { throw GraphError.sizeExceeded }
            let k = try input.make(keyId: nil, existing: [], now: now, activeAt: now.addingTimeInterval(emulator.propagationDelay()), settings: emulator.settings)
            app.keyCredentials.append(k)
            return k
        }
        emulator.bump("keys_added_total")
        var out = GraphJSON.keyCredential(added, includeKey: emulator.settings.addKeyEchoesKey).objectValue ?? [:]
        out["@odata.context"] = .string("\(base)/$metadata#microsoft.graph.keyCredential")
        return .object(out)
    }

    private func removeKey(_ caller: GraphCaller, _ lookup: AppLookup) throws {
        let body = try bodyObject()
        try Self.checkTypes(body, action: "removeKey")
        try mutateApplication(caller, lookup, allowed: { mayRollKeys(caller, $0) }) { app in
            guard let keyId = body["keyId"]?.stringValue, UUID(uuidString: keyId) != nil else {
                throw GraphError.badRequest("Invalid value specified for property 'keyId' of resource 'RemoveKey'.")
            }
            try ProofValidator(now: now, settings: emulator.settings).validate(body["proof"], objectID: app.id, credentials: app.keyCredentials)
            guard let i = app.keyCredentials.firstIndex(where: { $0.keyId.lowercased() == keyId.lowercased() }) else {
                throw GraphError.badRequest("No credentials found to be removed.")
            }
            app.keyCredentials.remove(at: i)
        }
        emulator.bump("keys_removed_total")
    }

    private func addPassword(_ caller: GraphCaller, _ lookup: AppLookup) throws -> JSONValue {
        let body = (try? bodyObject()) ?? [:]
        let pc = body["passwordCredential"]?.objectValue ?? [:]
        let secret = PasswordSecret.generate()
        let cred = StoredPasswordCredential(
            keyId: UUID().uuidString.lowercased(), secretHash: Thumbprint.sha256(of: Array(secret.utf8)).bytes, hint: String(secret.prefix(3)),
            displayName: pc["displayName"]?.stringValue,
            startDateTime: pc["startDateTime"]?.stringValue.flatMap(WireTime.parse) ?? now,
            endDateTime: pc["endDateTime"]?.stringValue.flatMap(WireTime.parse) ?? now.addingTimeInterval(2 * 365 * 86_400))
        try mutateApplication(caller, lookup, allowed: caller.mayWrite) { app in
            guard app.keyCredentials.count + app.passwordCredentials.count + 1 <= emulator.settings.maxCredentialItems else { throw GraphError.sizeExceeded }
            app.passwordCredentials.append(cred)
        }
        var out = GraphJSON.passwordCredential(cred, secretText: secret).objectValue ?? [:]
        out["@odata.context"] = .string("\(base)/$metadata#microsoft.graph.passwordCredential")
        return .object(out)
    }

    private func removePassword(_ caller: GraphCaller, _ lookup: AppLookup) throws {
        let body = try bodyObject()
        try mutateApplication(caller, lookup, allowed: caller.mayWrite) { app in
            guard let keyId = body["keyId"]?.stringValue, let i = app.passwordCredentials.firstIndex(where: { $0.keyId == keyId.lowercased() }) else {
                throw GraphError.badRequest("No credentials found to be removed.")
            }
            app.passwordCredentials.remove(at: i)
        }
    }
}

enum PasswordSecret {
    static func generate() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789~.-_")
        return String((0..<40).map { _ in alphabet.randomElement()! })
    }
}

extension CharacterSet {
    static let urlQueryValueAllowed: CharacterSet = {
        var s = CharacterSet.alphanumerics
        s.insert(charactersIn: "-._~'(),:")
        return s
    }()
}
