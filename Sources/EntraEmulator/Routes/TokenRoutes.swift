import EntraCrypto
import Foundation
import KeyRollPrimitives

/// The Entra login endpoints: OIDC discovery (v2 and v1), JWKS, instance discovery, and the v2.0
/// token endpoint for the client-credentials grant. The validation order is documented in
/// docs/emulator.md (Entra's own order is UNCONFIRMED).
struct TokenRoutes {
    let emulator: EntraEmulator
    let request: EmulatorRequest

    /// Resources whose tokens the Graph side accepts, besides the emulator's own base URL.
    static let graphResources = ["https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"]
    static let ignoredScopes: Set<String> = ["openid", "profile", "offline_access", "email"]

    func respond() -> EmulatorResponse {
        let seg = request.pathSegments
        let base = request.baseURL
        // /common/discovery/instance
        if seg.count == 3, seg[0].lowercased() == "common", seg[1] == "discovery", seg[2] == "instance" {
            return instanceDiscovery()
        }
        guard seg.count >= 2 else { return notFound() }
        let tenantSegment = seg[0]
        let rest = seg.dropFirst().joined(separator: "/")
        switch rest {
        case "oauth2/v2.0/token", "oauth2/token":
            return token(tenantSegment: tenantSegment)
        case "v2.0/.well-known/openid-configuration", ".well-known/openid-configuration":
            guard request.method == "GET" else { return notFound() }
            return discovery(tenantSegment: tenantSegment, v2: rest.hasPrefix("v2.0"), base: base)
        case "discovery/v2.0/keys", "discovery/keys":
            return jwks(base: base)
        default:
            return notFound()
        }
    }

    private func notFound() -> EmulatorResponse {
        .json(404, .object(["error": "not_found", "error_description": .string("No Entra endpoint at \(request.path).")]))
    }

    // MARK: discovery

    private func discovery(tenantSegment: String, v2: Bool, base: String) -> EmulatorResponse {
        let special = ["common", "organizations", "consumers"].contains(tenantSegment.lowercased())
        let tenant = try? emulator.store.tenant(tenantSegment)
        guard special || tenant != nil else {
            return TokenError.unknownTenant(tenantSegment).response(now: emulator.now, correlationID: UUID().uuidString.lowercased())
        }
        // Like Entra, the discovery document names the tenant by GUID.
        let t = tenant?.id ?? "{tenantid}"
        let prefix = v2 ? "/v2.0" : ""
        let issuer = v2 ? "\(base)/\(t)/v2.0" : "https://sts.windows.net/\(t)/"
        let doc: [String: JSONValue] = [
            "token_endpoint": .string("\(base)/\(t)/oauth2\(prefix)/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": .string("\(base)/\(t)/discovery\(prefix)/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": .string(issuer),
            "request_uri_parameter_supported": false,
            "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
            "authorization_endpoint": .string("\(base)/\(t)/oauth2\(prefix)/authorize"),
            "device_authorization_endpoint": .string("\(base)/\(t)/oauth2\(prefix)/devicecode"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": .string("\(base)/\(t)/oauth2\(prefix)/logout"),
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        ]
        return .json(200, .object(doc), headers: [("Cache-Control", "max-age=86400, private"), ("Access-Control-Allow-Origin", "*")])
    }

    private func instanceDiscovery() -> EmulatorResponse {
        let base = request.baseURL
        let host = URL(string: base)?.host ?? "localhost"
        let authEndpoint = request.queryValue("authorization_endpoint") ?? "\(base)/common/oauth2/v2.0/authorize"
        // The tenant is the first path segment of the authorization endpoint (MSAL drops the port).
        let tenant = URL(string: authEndpoint)?.pathComponents.dropFirst().first ?? "common"
        return .json(200, .object([
            "tenant_discovery_endpoint": .string("\(base)/\(tenant)/v2.0/.well-known/openid-configuration"),
            "api-version": "1.1",
            "metadata": .array([.object([
                "preferred_network": .string(host), "preferred_cache": .string(host), "aliases": .array([.string(host)]),
            ])]),
        ]))
    }

    private func jwks(base: String) -> EmulatorResponse {
        let cert = emulator.signing.certificate
        let (n, e) = (try? cert.rsaPublicKey().jwkComponents()) ?? ([], [])
        let kid = cert.sha1Thumbprint.base64URL
        return .json(200, .object(["keys": .array([.object([
            "kty": "RSA", "use": "sig", "kid": .string(kid), "x5t": .string(kid),
            "n": .string(Base64URL.encode(n)), "e": .string(Base64URL.encode(e)),
            "x5c": .array([.string(Base64.encode(cert.der))]),
            "issuer": .string("\(base)/{tenantid}/v2.0"),
        ])])]), headers: [("Cache-Control", "max-age=86400, private")])
    }

    // MARK: token endpoint

    private func token(tenantSegment: String) -> EmulatorResponse {
        let correlation = request.headers["client-request-id"] ?? UUID().uuidString.lowercased()
        let now = emulator.now
        switch issue(tenantSegment: tenantSegment, now: now) {
        case .success(let body):
            emulator.bump("tokens_issued_total")
            return .json(200, body, headers: [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache")])
        case .failure(let failure):
            emulator.bump("token_failures_total")
            if let retry = failure.retryAfter {
                var r = TokenError("temporarily_unavailable", 50196, "The server is throttling requests from this client. Retry after \(formatSeconds(retry)) seconds.")
                    .response(now: now, correlationID: correlation)
                r.status = 429
                r.headers.append(("Retry-After", String(Int(retry.rounded(.up)))))
                return r
            }
            return failure.error.response(now: now, correlationID: correlation)
        }
    }

    struct Failure: Error {
        var error: TokenError
        var retryAfter: Double? = nil
    }

    private func issue(tenantSegment: String, now: Date) -> Result<JSONValue, Failure> {
        func fail(_ e: TokenError) -> Result<JSONValue, Failure> { .failure(Failure(error: e)) }
        guard request.method == "POST" else { return fail(.wrongMethod(request.method)) }
        guard let tenant = try? emulator.store.tenant(tenantSegment) else { return fail(.unknownTenant(tenantSegment)) }
        let pairs = FormEncoding.decode(String(decoding: request.body, as: UTF8.self))
        var form: [String: String] = [:]
        for (name, value) in pairs {
            // Entra refuses a repeated parameter rather than picking one (AADSTS9000411).
            guard form.updateValue(value, forKey: name) == nil else { return fail(.duplicatedParameter(name)) }
        }
        guard let grant = form["grant_type"], !grant.isEmpty else { return fail(.missingParameter("grant_type")) }
        guard grant == "client_credentials" else { return fail(.unsupportedGrant(grant)) }
        guard let clientID = form["client_id"]?.lowercased(), !clientID.isEmpty else { return fail(.missingParameter("client_id")) }
        guard let app = try? emulator.store.application(appId: clientID), app.tenantID == tenant.id,
              let sp = try? emulator.store.servicePrincipal(tenantID: tenant.id, appId: clientID) else {
            return fail(.appNotFound(clientID, tenant: tenantSegment))
        }
        if let retry = emulator.throttleToken(client: clientID) { return .failure(Failure(error: .replay, retryAfter: retry)) }
        let assertion = form["client_assertion"], secret = form["client_secret"]
        let credential: (keyId: String?, thumbprint: String?, type: String)
        // The resource the request asks for, as the sign-in log records it (checked further down).
        let requested = form["scope"].flatMap { text in
            text.split(separator: " ").map(String.init).first { !Self.ignoredScopes.contains($0.lowercased()) }
                .map { $0.hasSuffix("/.default") ? String($0.dropLast("/.default".count)) : $0 }
        }
        let log = { (failure: TokenError?, keyId: String?, thumb: String?, type: String) in
            try? emulator.store.logSignIn(SignInEvent(sequence: 0, time: now, tenantID: tenant.id, appId: app.appId, keyId: keyId,
                                                      thumbprint: thumb, result: failure == nil ? "success" : "failure", errorCode: failure?.code,
                                                      credentialType: type, servicePrincipalID: sp.id, appDisplayName: app.displayName,
                                                      resource: requested, failureReason: failure?.message))
        }
        switch (assertion, secret) {
        case (nil, nil), ("", nil), (nil, ""):
            log(.noCredential, nil, nil, "none")
            return fail(.noCredential)
        case (let a?, _) where !a.isEmpty:
            guard form["client_assertion_type"] == ClientAssertion.assertionType else {
                guard let t = form["client_assertion_type"] else { return fail(.missingParameter("client_assertion_type")) }
                return fail(.badAssertionType(t))
            }
            switch AssertionValidator(settings: emulator.settings, store: emulator.store, baseURL: request.baseURL)
                .validate(a, app: app, tenant: tenant, tenantSegment: tenantSegment, clientID: clientID, now: now) {
            case .success(let k):
                credential = (k.keyId, k.sha1.hex, "certificate")
            case .failure(let f):
                log(f.error, f.keyId, f.thumbprint, "certificate")
                return fail(f.error)
            }
        case (_, let s?):
            let hash = Thumbprint.sha256(of: Array(s.utf8)).bytes
            guard let p = app.passwordCredentials.first(where: { $0.secretHash == hash }), p.startDateTime <= now, now <= p.endDateTime else {
                log(.invalidSecret, nil, nil, "secret")
                return fail(.invalidSecret)
            }
            credential = (p.keyId, nil, "secret")
        default:
            return fail(.noCredential)
        }
        // scope: one resource, `/.default`; OIDC scopes are ignored as Entra does.
        guard let scopeText = form["scope"], !scopeText.isEmpty else { return fail(.missingParameter("scope")) }
        let scopes = scopeText.split(separator: " ").map(String.init).filter { !Self.ignoredScopes.contains($0.lowercased()) }
        guard !scopes.isEmpty else { return fail(.invalidScope(scopeText)) }
        for s in scopes where !s.hasSuffix("/.default") { return fail(.nonDefaultScope(s)) }
        let resources = Set(scopes.map { String($0.dropLast("/.default".count)) })
        guard resources.count == 1, let resource = resources.first, !resource.isEmpty else {
            return resources.count > 1 ? fail(.multipleResources) : fail(.invalidScope(scopeText))
        }
        guard resource.hasPrefix("https://") || resource.hasPrefix("http://") || UUID(uuidString: resource) != nil || resource.hasPrefix("api://") else {
            return fail(.invalidScope(scopeText))
        }
        log(nil, credential.keyId, credential.thumbprint, credential.type)
        return .success(mint(resource: resource, app: app, sp: sp, tenant: tenant, viaCertificate: credential.type == "certificate", now: now))
    }

    /// Mints a v1-format app-only access token, RS256-signed by the emulator's key.
    private func mint(resource: String, app: StoredApplication, sp: StoredServicePrincipal, tenant: Tenant, viaCertificate: Bool, now: Date) -> JSONValue {
        let lifetime = emulator.settings.tokenLifetime
        var aud = resource
        if aud == "00000003-0000-0000-c000-000000000000" || aud == "https://graph.microsoft.com/" { aud = "https://graph.microsoft.com" }
        var claims: [String: JSONValue] = [
            "aud": .string(aud),
            "iss": .string("https://sts.windows.net/\(tenant.id)/"),
            "idp": .string("https://sts.windows.net/\(tenant.id)/"),
            "iat": NumericDate.value(now), "nbf": NumericDate.value(now),
            "exp": NumericDate.value(now.addingTimeInterval(TimeInterval(lifetime))),
            "app_displayname": .string(app.displayName),
            "appid": .string(app.appId),
            "appidacr": .string(viaCertificate ? "2" : "1"),
            "idtyp": "app",
            "oid": .string(sp.id), "sub": .string(sp.id),
            "tid": .string(tenant.id),
            "uti": .string(Base64URL.encode(Array(UUID().uuidString.utf8.prefix(16)))),
            "ver": "1.0",
        ]
        if !sp.roles.isEmpty { claims["roles"] = .array(sp.roles.map(\.rawValue).sorted().map(JSONValue.string)) }
        let kid = emulator.signing.certificate.sha1Thumbprint.base64URL
        let token = (try? CompactJWS.sign(header: ["typ": "JWT", "x5t": .string(kid), "kid": .string(kid)], claims: claims,
                                          algorithm: .rs256, key: emulator.signing.signer)) ?? ""
        var body: [String: JSONValue] = [
            "token_type": "Bearer", "expires_in": .int(Int64(lifetime)), "ext_expires_in": .int(Int64(lifetime)), "access_token": .string(token),
        ]
        if lifetime >= 7200 { body["refresh_in"] = .int(Int64(lifetime / 2)) }
        return .object(body)
    }
}
