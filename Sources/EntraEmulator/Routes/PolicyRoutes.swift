import Foundation
import GRDB
import KeyRollPrimitives

/// App management policies, as Graph v1.0 serves them:
///
/// - `GET|PATCH /policies/defaultAppManagementPolicy`: the tenant default.
/// - `GET|POST /policies/appManagementPolicies`, `GET|PATCH|DELETE /policies/appManagementPolicies/{id}`.
/// - `GET /policies/appManagementPolicies/{id}/appliesTo`, and `POST …/appliesTo/$ref`
///   `{"@odata.id": "…/applications/{objectId}"}`.
/// - `GET /applications/{id}/appManagementPolicies`, `POST /applications/{id}/appManagementPolicies/$ref`
///   `{"@odata.id": "…/policies/appManagementPolicies/{id}"}` (Graph's documented assignment),
///   `DELETE /applications/{id}/appManagementPolicies/{policyId}/$ref`.
///
/// Reading needs Policy.Read.All (or Policy.ReadWrite.ApplicationConfiguration), writing
/// Policy.ReadWrite.ApplicationConfiguration, and a route that names applications also
/// Application.Read.All (or higher); otherwise `403 Authorization_RequestDenied`.
struct PolicyRoutes {
    let graph: GraphRoutes
    let caller: GraphCaller
    var emulator: EntraEmulator { graph.emulator }
    var method: String { graph.request.method }
    var base: String { graph.base }

    /// `seg`: the path after the version, starting with `policies`.
    func dispatch(seg: [String]) throws -> (Int, JSONValue?) {
        let names = seg.map { $0.lowercased() }
        switch (names.count > 1 ? names[1] : "", names.count) {
        case ("defaultappmanagementpolicy", 2):
            switch method {
            case "GET": return (200, try getDefault())
            case "PATCH": try patchDefault(); return (204, nil)
            default: throw GraphError.methodNotAllowed()
            }
        case ("appmanagementpolicies", 2):
            switch method {
            case "GET": return (200, try list())
            case "POST": return (201, try create())
            default: throw GraphError.methodNotAllowed()
            }
        case ("appmanagementpolicies", 3):
            switch method {
            case "GET": return (200, try get(seg[2]))
            case "PATCH": try update(seg[2]); return (204, nil)
            case "DELETE": try delete(seg[2]); return (204, nil)
            default: throw GraphError.methodNotAllowed()
            }
        case ("appmanagementpolicies", 4) where names[3] == "appliesto":
            guard method == "GET" else { throw GraphError.methodNotAllowed() }
            return (200, try appliesTo(seg[2]))
        case ("appmanagementpolicies", 5) where names[3] == "appliesto" && names[4] == "$ref":
            guard method == "POST" else { throw GraphError.methodNotAllowed() }
            try require(caller.canWritePolicies && caller.canReadAll)
            try assign(policyID: seg[2], to: .id(try referencedID(in: ["applications", "directoryobjects"])))
            return (204, nil)
        default:
            throw GraphError.noRoute(method, graph.request.path)
        }
    }

    /// `/applications/{id}/appManagementPolicies…`; `rest`: the path after `appManagementPolicies`.
    func dispatch(application lookup: GraphRoutes.AppLookup, rest: [String]) throws -> (Int, JSONValue?) {
        let names = rest.map { $0.lowercased() }
        switch method {
        case "GET" where names.isEmpty:
            return (200, try policies(of: lookup))
        case "POST" where names == ["$ref"]:
            try require(caller.canWritePolicies && caller.canReadAll)
            try assign(policyID: try referencedID(in: ["appmanagementpolicies"]), to: lookup)
            return (204, nil)
        case "DELETE" where names.count == 2 && names[1] == "$ref":
            try unassign(policyID: rest[0], from: lookup)
            return (204, nil)
        default:
            throw GraphError.noRoute(method, graph.request.path)
        }
    }

    private func require(_ allowed: Bool) throws { guard allowed else { throw GraphError.denied } }

    // MARK: the tenant default

    private func getDefault() throws -> JSONValue {
        try require(caller.canReadPolicies)
        let p = try emulator.store.read { try DirectoryStore.tenantAppManagementPolicy($0, tenantID: caller.tenantID) }
        var o = AppManagementPolicyJSON.tenantPolicy(p)
        o["@odata.context"] = .string("\(base)/$metadata#policies/defaultAppManagementPolicy/$entity")
        return .object(o)
    }

    private func patchDefault() throws {
        try require(caller.canWritePolicies)
        let body = graph.canonicalBody(try graph.bodyObject(), "tenantAppManagementPolicy")
        try emulator.store.write { db in
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            var p = try DirectoryStore.tenantAppManagementPolicy(db, tenantID: caller.tenantID)
            try AppManagementPolicyJSON.patch(&p, with: body)
            try DirectoryStore.setTenantAppManagementPolicy(db, tenantID: caller.tenantID, p)
        }
    }

    // MARK: the tenant's policies

    private func entity(_ p: AppManagementPolicy, context: String?) -> JSONValue {
        var o = AppManagementPolicyJSON.policy(p)
        if let context { o["@odata.context"] = .string(context) }
        return .object(o)
    }

    private func list() throws -> JSONValue {
        try require(caller.canReadPolicies)
        let all = try emulator.store.read { try DirectoryStore.appManagementPolicies($0, tenantID: caller.tenantID) }
        return .object(["@odata.context": .string("\(base)/$metadata#policies/appManagementPolicies"),
                        "value": .array(all.map { entity($0, context: nil) })])
    }

    private func load(_ db: Database, _ id: String) throws -> AppManagementPolicy {
        guard let p = try DirectoryStore.appManagementPolicy(db, tenantID: caller.tenantID, id: id) else { throw GraphError.notFound(id) }
        return p
    }

    private func get(_ id: String) throws -> JSONValue {
        try require(caller.canReadPolicies)
        let p = try emulator.store.read { try load($0, id) }
        return entity(p, context: "\(base)/$metadata#policies/appManagementPolicies/$entity")
    }

    /// POST: `displayName` and `description` required, `isEnabled` false unless sent.
    private func create() throws -> JSONValue {
        try require(caller.canWritePolicies)
        let body = graph.canonicalBody(try graph.bodyObject(), "appManagementPolicy")
        for name in ["displayName", "description"] where body[name]?.stringValue == nil {
            throw GraphError.badRequest("Invalid value specified for property '\(name)' of resource 'AppManagementPolicy'.")
        }
        var p = AppManagementPolicy(isEnabled: false, restrictions: .init())
        try AppManagementPolicyJSON.patch(&p, with: body)
        try writing { try DirectoryStore.saveAppManagementPolicy($0, tenantID: caller.tenantID, p) }
        return entity(p, context: "\(base)/$metadata#policies/appManagementPolicies/$entity")
    }

    private func update(_ id: String) throws {
        try require(caller.canWritePolicies)
        let body = graph.canonicalBody(try graph.bodyObject(), "appManagementPolicy")
        try writing { db in
            var p = try load(db, id)
            try AppManagementPolicyJSON.patch(&p, with: body)
            try DirectoryStore.saveAppManagementPolicy(db, tenantID: caller.tenantID, p)
        }
    }

    private func delete(_ id: String) throws {
        try require(caller.canWritePolicies)
        try writing { db in try DirectoryStore.deleteAppManagementPolicy(db, id: try load(db, id).id) }
    }

    /// One write transaction, counted against the caller's write throttle.
    private func writing(_ body: (Database) throws -> Void) throws {
        try emulator.store.write { db in
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            try body(db)
        }
    }

    // MARK: assignments

    /// The applications a policy is assigned to, as `directoryObject`s.
    private func appliesTo(_ id: String) throws -> JSONValue {
        try require(caller.canReadPolicies && caller.canReadAll)
        let tenant = try emulator.store.tenant(caller.tenantID)
        let apps = try emulator.store.read { db in
            try DirectoryStore.appManagementPolicyTargets(db, policyID: try load(db, id).id).compactMap { try DirectoryStore.application(db, id: $0) }
        }
        return .object(["@odata.context": .string("\(base)/$metadata#directoryObjects"), "value": .array(apps.map { app -> JSONValue in
            var o = GraphJSON.application(app, publisherDomain: tenant?.domain ?? "", select: nil, includeKey: false, context: nil).objectValue ?? [:]
            o["@odata.type"] = "#microsoft.graph.application"
            return .object(o)
        })])
    }

    /// The policies assigned to an application (none or one).
    private func policies(of lookup: GraphRoutes.AppLookup) throws -> JSONValue {
        try require(caller.canReadPolicies && caller.canReadAll)
        let (app, assigned) = try emulator.store.read { db -> (StoredApplication, AppManagementPolicy?) in
            let app = try graph.loadApplication(db, lookup, caller: caller)
            return (app, try DirectoryStore.assignedAppManagementPolicy(db, ownerID: app.id))
        }
        return .object(["@odata.context": .string("\(base)/$metadata#applications('\(app.id)')/appManagementPolicies"),
                        "value": .array(assigned.map { [entity($0, context: nil)] } ?? [])])
    }

    /// The id the `$ref` body's `@odata.id` names, when it names an object of one of `collections`
    /// (lower-case): `https://graph.microsoft.com/v1.0/applications/{id}` or a relative form of it.
    private func referencedID(in collections: [String]) throws -> String {
        let ref = try graph.bodyObject()["@odata.id"]?.stringValue ?? ""
        let parts = ref.split(separator: "/").map(String.init)
        guard parts.count >= 2, collections.contains(parts[parts.count - 2].lowercased()), let id = parts.last, UUID(uuidString: id) != nil else {
            throw GraphError.badRequest("Invalid object identifier '\(ref.prefix(256))'.")
        }
        return id.lowercased()
    }

    /// Assigns a policy to an application: one policy per application, as Graph allows. (The
    /// caller's permissions are checked before the body is read.)
    private func assign(policyID: String, to lookup: GraphRoutes.AppLookup) throws {
        try writing { db in
            let app = try graph.loadApplication(db, lookup, caller: caller)
            let policy = try load(db, policyID)
            if let current = try DirectoryStore.assignedAppManagementPolicy(db, ownerID: app.id) {
                throw current.id == policy.id ? Self.referenceExists : Self.onePolicyOnly
            }
            try DirectoryStore.assignAppManagementPolicy(db, policyID: policy.id, to: app.id)
        }
    }

    private func unassign(policyID: String, from lookup: GraphRoutes.AppLookup) throws {
        try require(caller.canWritePolicies && caller.canReadAll)
        try writing { db in
            let app = try graph.loadApplication(db, lookup, caller: caller)
            guard try DirectoryStore.assignedAppManagementPolicy(db, ownerID: app.id)?.id == policyID.lowercased() else { throw GraphError.notFound(policyID) }
            try DirectoryStore.assignAppManagementPolicy(db, policyID: nil, to: app.id)
        }
    }

    /// Graph's answer to a reference that is already there (as for `owners/$ref`).
    static let referenceExists = GraphError.badRequest("One or more added object references already exist for the following modified properties: 'appManagementPolicies'.")
    /// Assigning a second policy to an application (UNCONFIRMED: Graph documents only that one policy can be assigned).
    static let onePolicyOnly = GraphError.badRequest("Only one appManagementPolicy can be assigned to an application or service principal.")
}
