import Foundation

/// A token request to the agent's managed-identity endpoint, in the App Service protocol
/// (api-version 2019-08-01) that Azure's SDKs speak when `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`
/// are set:
///
/// `GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource=R[&client_id=C]` with `X-IDENTITY-HEADER: S`.
///
/// Parsing is pure. The rules it enforces: the method is GET; the secret header is present (else
/// 401, before anything else is looked at); `api-version` is `2019-08-01`; `resource` is present,
/// once, and not empty; at most one identity selector, once: `client_id`/`clientid`,
/// `object_id`/`principal_id` and `mi_res_id`/`msi_res_id`/`resource_id` are mutually exclusive, as
/// in App Service, and a repeated one is refused whatever its values. Other parameters are
/// ignored, as App Service does.
public struct IdentityTokenRequest: Sendable, Equatable {
    /// How the caller names the identity it wants (none: the one its secret belongs to).
    public enum Selector: Sendable, Equatable {
        /// The app's client id (`client_id`, `clientid`).
        case clientID(String)
        /// The service principal's object id (`object_id`, `principal_id`), as in App Service and
        /// IMDS; the application object's id is accepted too (a KeyRoll extension).
        case objectID(String)
        /// A user-assigned identity's Azure resource id (`mi_res_id`, `msi_res_id`, `resource_id`),
        /// which KeyRoll identities do not have: always refused.
        case resourceID(String)
    }

    public static let apiVersion = "2019-08-01"
    public static let secretHeader = "x-identity-header"

    /// The secret from `X-IDENTITY-HEADER`.
    public var secret: String
    /// The v1 resource, exactly as sent (the SDKs strip `/.default` from the scope).
    public var resource: String
    public var selector: Selector?

    /// The scope to ask Entra for: `resource/.default`, whatever the resource (ARM's trailing
    /// slash included, as Entra expects: `https://management.azure.com//.default`).
    public var scope: String { resource + "/.default" }

    /// The selector a query parameter names, by the spellings the SDKs and the App Service documentation use.
    static func selector(_ name: String, _ value: String) -> Selector? {
        switch name.lowercased() {
        case "client_id", "clientid": return .clientID(value)
        case "object_id", "principal_id": return .objectID(value)
        case "mi_res_id", "msi_res_id", "resource_id": return .resourceID(value)
        default: return nil
        }
    }

    /// Parses a request; `query` holds the decoded query parameters in order, `headers` any case.
    public static func parse(method: String, query: [(String, String)], headers: [(String, String)]) -> Result<IdentityTokenRequest, TokenEndpointError> {
        let secrets = headers.filter { $0.0.lowercased() == secretHeader }.map(\.1)
        guard let secret = secrets.first, !secret.isEmpty else {
            return .failure(.missingSecret)
        }
        guard secrets.count == 1 else { return .failure(.badRequest("X-IDENTITY-HEADER is sent more than once.")) }
        guard method.uppercased() == "GET" else { return .failure(.badRequest("Use GET; the managed-identity endpoint answers nothing else.")) }
        func values(_ name: String) -> [String] { query.filter { $0.0.lowercased() == name }.map(\.1) }
        let versions = values("api-version")
        guard versions.count == 1, versions[0] == apiVersion else {
            return .failure(.badRequest(versions.isEmpty
                ? "api-version is missing; this endpoint speaks api-version=\(apiVersion) (App Service)."
                : "api-version \(versions.joined(separator: ",").prefix(40)) is not supported; use api-version=\(apiVersion) (App Service)."))
        }
        let resources = values("resource")
        guard resources.count == 1, let resource = resources.first, !resource.trimmingCharacters(in: .whitespaces).isEmpty else {
            return .failure(.badRequest(resources.count > 1 ? "resource is given more than once." : "resource is missing: name the API to get a token for, e.g. resource=https://graph.microsoft.com."))
        }
        guard resource.utf8.count <= 2048 else { return .failure(.badRequest("resource is longer than 2048 bytes.")) }
        var selectors: [(String, Selector)] = []
        for (name, value) in query {
            if let selector = selector(name, value) { selectors.append((name, selector)) }
        }
        guard selectors.count <= 1 else {
            return .failure(.badRequest("The identity selectors client_id, object_id (principal_id) and mi_res_id (msi_res_id, resource_id) are mutually exclusive "
                                        + "and each is given once; this request has \(selectors.count) (\(selectors.map(\.0).joined(separator: ", ").prefix(100))). "
                                        + "Give at most one, or none for the identity of the secret."))
        }
        return .success(IdentityTokenRequest(secret: secret, resource: resource, selector: selectors.first?.1))
    }
}
