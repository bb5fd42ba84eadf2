import EntraCrypto
import Foundation
import KeyRollPrimitives

/// `/_emulator/…`: the administration API over HTTP (what ``EntraEmulator``'s Swift API offers
/// in-process). Meant for local test rigs; it is unauthenticated, so the server binds to loopback.
///
/// - `GET /_emulator/clock` · `POST /_emulator/clock {"now": "ISO-8601"} | {"advanceSeconds": n}`
/// - `GET|PUT /_emulator/settings` (the JSON of ``EmulatorSettings``)
/// - `GET|PUT|DELETE /_emulator/faults` (a JSON array of ``FaultRule``)
/// - `POST /_emulator/tenants {"domain", "id"?}` · `GET /_emulator/tenants`
/// - `POST /_emulator/apps {"tenant", "displayName", "roles": [...], "credential": "certificate"|"secret", "validityDays"}`
///   → ids plus the generated certificate + key PEM or secret (so a test rig can sign in as it)
/// - `POST /_emulator/roles {"appId", "roles": [...]}`
/// - `GET|PUT /_emulator/defaultAppManagementPolicy?tenant=` (Graph's `tenantAppManagementPolicy` JSON;
///   PUT replaces the whole policy; the tenant defaults to the development tenant)
/// - `POST /_emulator/appManagementPolicies {"appId", …appManagementPolicy JSON}`: stores the policy
///   and assigns it to the app, in place of any policy it had
/// - `GET /_emulator/signins?appId=&after=` · `GET /_emulator/requests`
/// - `POST /_emulator/signins {"appId", "userPrincipalName", "interactive"?: true, "credentialKeyId"?, "resource"?, "at"?}`:
///   records a delegated (user) sign-in (``EntraEmulator/recordDelegatedSignIn(appId:userPrincipalName:interactive:credentialKeyId:resource:at:)``)
///   → 201 with the entry as `GET /_emulator/signins` lists it
struct ControlRoutes {
    let emulator: EntraEmulator
    let request: EmulatorRequest

    func respond() -> EmulatorResponse {
        do { return try dispatch() } catch let e as GraphError {
            return e.response(now: emulator.now, requestID: UUID().uuidString.lowercased(), clientRequestID: nil)
        } catch let e as ControlError {
            return .json(400, .object(["error": .object(["code": "BadRequest", "message": .string(e.message)])]))
        } catch {
            return .json(400, .object(["error": .object(["code": "BadRequest", "message": .string("\(error)")])]))
        }
    }

    struct ControlError: Error { let message: String }

    private func body() throws -> [String: JSONValue] {
        guard let v = try? JSONValue.parse(request.body), case .object(let o) = v else { throw ControlError(message: "expected a JSON object body") }
        return o
    }

    private func decode<T: Decodable>(_ type: T.Type) throws -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(request.body)) } catch {
            throw ControlError(message: "cannot decode \(T.self): \(error)")
        }
    }

    /// `current` with the fields of `changes` replaced (nested objects merged): a PUT may name only
    /// the settings it changes. An unknown field is refused by name.
    private func merged(_ current: EmulatorSettings, with changes: [String: JSONValue]) throws -> EmulatorSettings {
        guard case .object(var base)? = try? JSONValue.parse(Array(try JSONEncoder().encode(current))) else { throw ControlError(message: "cannot encode the settings") }
        for (key, value) in changes {
            guard let old = base[key] else { throw ControlError(message: "unknown setting '\(key)'; known: \(base.keys.sorted().joined(separator: ", "))") }
            if case .object(var inner) = old, case .object(let patch) = value {
                for (k, v) in patch {
                    guard inner[k] != nil else { throw ControlError(message: "unknown setting '\(key).\(k)'; known: \(inner.keys.sorted().joined(separator: ", "))") }
                    inner[k] = v
                }
                base[key] = .object(inner)
            } else {
                base[key] = value
            }
        }
        do { return try JSONDecoder().decode(EmulatorSettings.self, from: Data(JSONValue.object(base).serialized())) } catch {
            throw ControlError(message: "cannot decode the settings: \(error)")
        }
    }

    private func encode<T: Encodable>(_ value: T) -> EmulatorResponse {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        enc.dateEncodingStrategy = .utcISO8601
        return EmulatorResponse(status: 200, headers: [("Content-Type", "application/json")], body: Array((try? enc.encode(value)) ?? Data()))
    }

    private func dispatch() throws -> EmulatorResponse {
        let seg = Array(request.pathSegments.dropFirst())
        let m = request.method
        switch (m, seg.first ?? "") {
        case ("GET", "clock"):
            return .json(200, .object(["now": .string(WireTime.isoFraction(emulator.now)), "virtual": .bool(emulator.clock != nil)]))
        case ("POST", "clock"):
            guard let clock = emulator.clock else { throw ControlError(message: "this emulator runs on the system clock; start it with --virtual-clock") }
            let b = try body()
            if let s = b["now"]?.stringValue { guard let d = WireTime.parse(s) else { throw ControlError(message: "'now' is not ISO 8601") }; clock.set(d) }
            if let n = NumericDate.date(from: b["advanceSeconds"])?.timeIntervalSince1970 { clock.advance(by: n) }
            return .json(200, .object(["now": .string(WireTime.isoFraction(emulator.now))]))
        case ("GET", "settings"):
            return encode(emulator.settings)
        case ("PUT", "settings"):
            emulator.settings = try merged(emulator.settings, with: try body())
            return encode(emulator.settings)
        case ("GET", "faults"):
            return encode(emulator.state.withLock { $0.faults })
        case ("PUT", "faults"):
            emulator.setFaults(try decode([FaultRule].self))
            return EmulatorResponse(status: 204)
        case ("DELETE", "faults"):
            emulator.setFaults([])
            return EmulatorResponse(status: 204)
        case ("GET", "tenants"):
            return .json(200, .array(try emulator.store.tenants().map { .object(["id": .string($0.id), "domain": .string($0.domain)]) }))
        case ("POST", "tenants"):
            let b = try body()
            guard let domain = b["domain"]?.stringValue else { throw ControlError(message: "'domain' is required") }
            let t = try emulator.createTenant(domain: domain, id: b["id"]?.stringValue)
            return .json(201, .object(["id": .string(t.id), "domain": .string(t.domain)]))
        case ("POST", "apps"):
            return try createApp(try body())
        case ("POST", "roles"):
            let b = try body()
            guard let appId = b["appId"]?.stringValue else { throw ControlError(message: "'appId' is required") }
            try emulator.grant(try roles(b["roles"]), toAppId: appId)
            return EmulatorResponse(status: 204)
        case ("GET", "defaultAppManagementPolicy"):
            return .json(200, .object(AppManagementPolicyJSON.tenantPolicy(try emulator.defaultAppManagementPolicy(tenantID: policyTenant))))
        case ("PUT", "defaultAppManagementPolicy"):
            var p = TenantAppManagementPolicy()
            try AppManagementPolicyJSON.patch(&p, with: try body())
            try emulator.setDefaultAppManagementPolicy(p, tenantID: policyTenant)
            return .json(200, .object(AppManagementPolicyJSON.tenantPolicy(p)))
        case ("POST", "appManagementPolicies"):
            var b = try body()
            guard let appId = b.removeValue(forKey: "appId")?.stringValue else { throw ControlError(message: "'appId' is required") }
            var p = AppManagementPolicy(isEnabled: false, restrictions: .init())
            try AppManagementPolicyJSON.patch(&p, with: b)
            try emulator.assignAppManagementPolicy(p, toAppId: appId)
            return .json(201, .object(AppManagementPolicyJSON.policy(p)))
        case ("GET", "signins"):
            let after = Int64(request.queryValue("after") ?? "0") ?? 0
            return .json(200, .array(try emulator.store.signIns(appId: request.queryValue("appId"), after: after).map(Self.signInJSON)))
        case ("POST", "signins"):
            return .json(201, Self.signInJSON(try recordDelegatedSignIn(try body())))
        case ("GET", "requests"):
            return .json(200, .array(emulator.requestLog().suffix(1000).map { e in .object([
                "time": .string(WireTime.isoFraction(e.time)), "method": .string(e.method), "path": .string(e.path),
                "status": .int(Int64(e.status)), "requestId": .string(e.requestID), "ms": .double(e.milliseconds),
            ]) }))
        default:
            return .json(404, .object(["error": .object(["code": "NotFound", "message": .string("No emulator control route \(m) \(request.path).")])]))
        }
    }

    /// An entry of the sign-in log as the control API shows it: everything that was logged.
    static func signInJSON(_ e: SignInEvent) -> JSONValue {
        func text(_ s: String?) -> JSONValue { s.map(JSONValue.string) ?? .null }
        return .object([
            "sequence": .int(e.sequence), "time": .string(WireTime.isoFraction(e.time)), "tenantId": .string(e.tenantID),
            "appId": .string(e.appId), "keyId": text(e.keyId), "thumbprint": text(e.thumbprint),
            "result": .string(e.result), "errorCode": e.errorCode.map { .int(Int64($0)) } ?? .null, "credentialType": .string(e.credentialType),
            "id": .string(e.id), "servicePrincipalId": text(e.servicePrincipalID), "resource": text(e.resource), "failureReason": text(e.failureReason),
            "eventType": .string(e.eventType.rawValue), "userPrincipalName": text(e.userPrincipalName), "userId": text(e.userId),
        ])
    }

    private func recordDelegatedSignIn(_ b: [String: JSONValue]) throws -> SignInEvent {
        guard let appId = b["appId"]?.stringValue, let upn = b["userPrincipalName"]?.stringValue else {
            throw ControlError(message: "'appId' and 'userPrincipalName' are required")
        }
        var at: Date?
        if let s = b["at"]?.stringValue { guard let d = WireTime.parse(s) else { throw ControlError(message: "'at' is not ISO 8601") }; at = d }
        // Interactive unless `false`; Microsoft Graph as the resource unless named (or null: none).
        return try emulator.recordDelegatedSignIn(appId: appId, userPrincipalName: upn, interactive: b["interactive"] != .bool(false),
                                                  credentialKeyId: b["credentialKeyId"]?.stringValue,
                                                  resource: b["resource"].map { $0.stringValue } ?? "https://graph.microsoft.com", at: at)
    }

    /// The tenant a policy control request names (`?tenant=`), by default the development tenant.
    private var policyTenant: String { request.queryValue("tenant") ?? EntraEmulator.devTenantID }

    private func roles(_ v: JSONValue?) throws -> Set<GraphRole> {
        Set(try (v?.arrayValue ?? []).map { r in
            guard let s = r.stringValue, let role = GraphRole(rawValue: s) else {
                throw ControlError(message: "unknown role \(r); known: \(GraphRole.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return role
        })
    }

    private func createApp(_ b: [String: JSONValue]) throws -> EmulatorResponse {
        guard let name = b["displayName"]?.stringValue else { throw ControlError(message: "'displayName' is required") }
        let tenant = b["tenant"]?.stringValue ?? EntraEmulator.devTenantID
        let days = NumericDate.date(from: b["validityDays"])?.timeIntervalSince1970 ?? 365
        let kind = b["credential"]?.stringValue ?? "certificate"
        let now = emulator.now
        var out: [String: JSONValue] = [:]
        var certs: [X509Certificate] = []
        var secret: String?
        if kind == "certificate" {
            let cred = try SigningCredential.generate(subject: .init(commonName: name), notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(days * 86_400))
            certs = [cred.certificate]
            out["certificatePEM"] = .string(cred.certificate.pem)
            out["privateKeyPEM"] = .string(try cred.privateKey.pkcs8PEM)
            out["thumbprint"] = .string(cred.certificate.sha1Thumbprint.hex)
        } else if kind == "secret" {
            secret = PasswordSecret.generate()
            out["secret"] = .string(secret!)
        } else if kind != "none" {
            throw ControlError(message: "'credential' must be certificate, secret or none")
        }
        guard let t = try emulator.store.tenant(tenant) else { throw ControlError(message: "no tenant '\(tenant)'") }
        let reg = try emulator.register(tenantID: t.id, displayName: name, roles: try roles(b["roles"]), certificates: certs, secret: secret)
        out["tenantId"] = .string(reg.tenantID)
        out["appId"] = .string(reg.appId)
        out["objectId"] = .string(reg.objectID)
        out["servicePrincipalId"] = .string(reg.servicePrincipalID)
        return .json(201, .object(out))
    }
}

/// The few ARM endpoints the Azure CLI calls during `az cloud register` and `az login`.
struct AzureCLISupport {
    let emulator: EntraEmulator
    let request: EmulatorRequest

    func respond() -> EmulatorResponse {
        let base = request.baseURL
        switch request.pathSegments.first?.lowercased() {
        case "metadata":
            return .json(200, .object([
                "name": "KeyRollEmulator", "resourceManager": .string(base + "/"), "microsoftGraphResourceId": .string(base + "/"),
                "graphAudience": .string(base + "/"), "graph": .string(base + "/"),
                "authentication": .object(["loginEndpoint": .string(base), "audiences": .array([.string(base + "/")]), "tenant": "common", "identityProvider": "AAD"]),
                "suffixes": .object(["storage": "core.windows.net", "keyVaultDns": "vault.azure.net", "acrLoginServer": "azurecr.io"]),
            ]))
        default:
            return .json(200, .object(["value": .array([])]))
        }
    }
}
