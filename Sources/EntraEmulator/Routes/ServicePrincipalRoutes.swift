import EntraCrypto
import Foundation
import KeyRollPrimitives

/// `/servicePrincipals`: create (for an application of the tenant), get (by id or appId), list with
/// `$filter`, delete, and addKey/removeKey, which — unlike the application variants — need a role.
struct ServicePrincipalRoutes {
    let graph: GraphRoutes
    let caller: GraphCaller
    var emulator: EntraEmulator { graph.emulator }
    var base: String { graph.request.baseURL + "/v1.0" }

    func dispatch(seg: [String], altKey: String?) throws -> (Int, JSONValue?) {
        let method = graph.request.method
        if seg.count == 1, altKey == nil {
            switch method {
            case "GET": return (200, try list())
            case "POST": return (201, try create())
            default: throw GraphError.methodNotAllowed()
            }
        }
        let key = altKey ?? seg[1]
        let action = altKey == nil ? (seg.count > 2 ? seg[2] : nil) : (seg.count > 1 ? seg[1] : nil)
        let sp = try emulator.store.read { db -> StoredServicePrincipal? in
            altKey != nil ? try DirectoryStore.servicePrincipal(db, tenantID: caller.tenantID, appId: key) : try DirectoryStore.servicePrincipal(db, id: key)
        }
        guard let sp, sp.tenantID == caller.tenantID else { throw GraphError.notFound(key) }
        if let action {
            guard method == "POST" else { throw GraphError.methodNotAllowed() }
            // No self-service on service principals: the action needs a permission (I-13921).
            guard caller.canWriteAll else { throw GraphError.denied }
            switch graph.normalizeAction(action) {
            case "addkey": return (200, try addKey(sp))
            case "removekey": try removeKey(sp); return (204, nil)
            default: throw GraphError.noRoute(method, graph.request.path)
            }
        }
        switch method {
        case "GET":
            guard caller.canReadAll || sp.id == caller.servicePrincipalID else { throw GraphError.denied }
            let select = try graph.canonicalSelect("servicePrincipal")
            let ctx = select.map { "\(base)/$metadata#servicePrincipals(\($0.joined(separator: ",")))/$entity" } ?? "\(base)/$metadata#servicePrincipals/$entity"
            return (200, GraphJSON.servicePrincipal(sp, appOwnerTenant: sp.tenantID, select: select, context: ctx))
        case "DELETE":
            guard caller.canWriteAll else { throw GraphError.denied }
            try emulator.store.write { try DirectoryStore.deleteServicePrincipal($0, id: sp.id) }
            return (204, nil)
        default:
            throw GraphError.methodNotAllowed()
        }
    }

    private func list() throws -> JSONValue {
        guard caller.canReadAll else { throw GraphError.denied }
        let filter = try graph.request.queryValue("$filter").map { try ODataFilter(parsing: $0, resource: "servicePrincipal") }
        let top = try graph.pageSize()
        let after = graph.skipToken()
        var page = ListingPage<StoredServicePrincipal>(top: top, after: after, counting: false)
        try emulator.store.read { db in
            try page.scan(from: after, batch: { cursor in
                try DirectoryStore.servicePrincipals(db, tenantID: caller.tenantID, after: cursor, limit: 500).map { ($0.seq, $0.sp) }
            }, keep: { filter?.matches($0) ?? true })
        }
        let select = try graph.canonicalSelect("servicePrincipal")
        var body: [String: JSONValue] = [
            "@odata.context": .string(select.map { "\(base)/$metadata#servicePrincipals(\($0.joined(separator: ",")))" } ?? "\(base)/$metadata#servicePrincipals"),
            "value": .array(page.items.map { GraphJSON.servicePrincipal($0, appOwnerTenant: $0.tenantID, select: select, context: nil) }),
        ]
        if page.more { body["@odata.nextLink"] = .string(graph.nextLink(after: page.lastSeq)) }
        return .object(body)
    }

    private func create() throws -> JSONValue {
        let body = try graph.bodyObject()
        guard let appId = body["appId"]?.stringValue?.lowercased() else {
            throw GraphError.badRequest("Invalid value specified for property 'appId' of resource 'ServicePrincipal'.")
        }
        let sp: StoredServicePrincipal = try emulator.store.write { db in
            guard let app = try DirectoryStore.application(db, appId: appId), app.tenantID == caller.tenantID else {
                throw GraphError.badRequest("The appId '\(appId)' of the service principal does not reference a valid application object.")
            }
            guard caller.mayWrite(app) else { throw GraphError.denied }
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            if try DirectoryStore.servicePrincipal(db, tenantID: caller.tenantID, appId: appId) != nil {
                throw GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "Another object with the same value for property servicePrincipalNames already exists.")
            }
            var extra = body
            for k in ["appId", "@odata.type", "accountEnabled", "id"] { extra[k] = nil }
            let sp = StoredServicePrincipal(id: UUID().uuidString.lowercased(), appId: appId, tenantID: caller.tenantID, displayName: app.displayName,
                                            createdDateTime: emulator.now, keyCredentials: [], roles: [], extra: extra)
            try DirectoryStore.insert(db, servicePrincipal: sp)
            return sp
        }
        return GraphJSON.servicePrincipal(sp, appOwnerTenant: sp.tenantID, select: nil, context: "\(base)/$metadata#servicePrincipals/$entity")
    }

    /// Every change to one service principal's keys: loaded inside one write transaction (so
    /// concurrent calls cannot lose each other's updates), throttled like any write, changed, stored.
    private func mutateKeys<T>(_ sp: StoredServicePrincipal, _ change: (inout [StoredKeyCredential]) throws -> T) throws -> T {
        try emulator.store.write { db in
            guard let current = try DirectoryStore.servicePrincipal(db, id: sp.id) else { throw GraphError.notFound(sp.id) }
            if let e = emulator.throttleWrite(caller: caller.appId, tenant: caller.tenantID) { throw e }
            var keys = current.keyCredentials
            let result = try change(&keys)
            try DirectoryStore.replaceKeyCredentials(db, owner: sp.id, keys)
            return result
        }
    }

    private func addKey(_ sp: StoredServicePrincipal) throws -> JSONValue {
        let body = try graph.bodyObject()
        try GraphRoutes.checkTypes(body, action: "addKey")
        let input = try KeyCredentialInput.forAddKey(body)
        let now = emulator.now
        let k: StoredKeyCredential = try mutateKeys(sp) { keys in
            try ProofValidator(now: now, settings: emulator.settings).validate(body["proof"], objectID: sp.id, credentials: keys)
            guard keys.count + 1 <= emulator.settings.maxCredentialItems else { throw GraphError.sizeExceeded }
            let k = try input.make(keyId: nil, existing: [], now: now, activeAt: now, settings: emulator.settings)
            keys.append(k)
            return k
        }
        var out = GraphJSON.keyCredential(k, includeKey: false).objectValue ?? [:]
        out["@odata.context"] = .string("\(base)/$metadata#microsoft.graph.keyCredential")
        return .object(out)
    }

    private func removeKey(_ sp: StoredServicePrincipal) throws {
        let body = try graph.bodyObject()
        try GraphRoutes.checkTypes(body, action: "removeKey")
        try mutateKeys(sp) { keys in
            try ProofValidator(now: emulator.now, settings: emulator.settings).validate(body["proof"], objectID: sp.id, credentials: keys)
            guard let keyId = body["keyId"]?.stringValue, keys.contains(where: { $0.keyId == keyId.lowercased() }) else {
                throw GraphError.badRequest("No credentials found to be removed.")
            }
            keys.removeAll { $0.keyId == keyId.lowercased() }
        }
    }
}
