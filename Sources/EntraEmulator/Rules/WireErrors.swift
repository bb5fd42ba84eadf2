import EntraCrypto
import Foundation
import KeyRollPrimitives

/// An error of the v2.0 token endpoint, rendered in Entra's exact envelope:
/// `error`, `error_description` ("AADSTSnnnn: … Trace ID … Correlation ID … Timestamp …"),
/// `error_codes`, `timestamp`, `trace_id`, `correlation_id`, `error_uri`.
/// `invalid_client` answers HTTP 401; every other error 400.
public struct TokenError: Error, Sendable, Equatable {
    public var error: String
    public var code: Int
    public var message: String

    public init(_ error: String, _ code: Int, _ message: String) {
        self.error = error
        self.code = code
        self.message = message
    }

    public var status: Int { error == "invalid_client" ? 401 : 400 }

    func response(now: Date, correlationID: String, traceID: String = UUID().uuidString.lowercased()) -> EmulatorResponse {
        let ts = WireTime.tokenTimestamp(now)
        let description = "AADSTS\(code): \(message)\r\nTrace ID: \(traceID)\r\nCorrelation ID: \(correlationID)\r\nTimestamp: \(ts)"
        return .json(status, .object([
            "error": .string(error),
            "error_description": .string(description),
            "error_codes": .array([.int(Int64(code))]),
            "timestamp": .string(ts),
            "trace_id": .string(traceID),
            "correlation_id": .string(correlationID),
            "error_uri": .string("https://login.microsoftonline.com/error?code=\(code)"),
        ]), headers: [("Cache-Control", "no-store, no-cache"), ("Pragma", "no-cache"), ("x-ms-request-id", traceID)])
    }

    // The AADSTS catalogue the emulator speaks (texts as Entra words them; see docs/emulator.md).
    static func unknownTenant(_ t: String) -> TokenError {
        TokenError("invalid_request", 90002, "Tenant '\(t)' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant.")
    }
    static func duplicatedParameter(_ name: String) -> TokenError {
        TokenError("invalid_request", 9000411, "The request is not properly formatted. The parameter '\(name.prefix(64))' is duplicated.")
    }
    static func missingParameter(_ name: String) -> TokenError {
        TokenError("invalid_request", 900144, "The request body must contain the following parameter: '\(name)'.")
    }
    static func unsupportedGrant(_ g: String) -> TokenError {
        TokenError("unsupported_grant_type", 70003, "The app requested an unsupported grant type '\(g)'.")
    }
    static func appNotFound(_ appId: String, tenant: String) -> TokenError {
        TokenError("unauthorized_client", 700016, "Application with identifier '\(appId)' was not found in the directory '\(tenant)'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant.")
    }
    static let noCredential = TokenError("invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
    static func badAssertionType(_ t: String) -> TokenError {
        TokenError("invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion_type'. Invalid value '\(t)'.")
    }
    static func invalidJWT(_ why: String) -> TokenError { TokenError("invalid_client", 50027, "Invalid JWT token. \(why)") }
    static func unsupportedAlgorithm(_ alg: String) -> TokenError {
        TokenError("invalid_client", 5002738, "Invalid JWT token. '\(alg)' is not a supported signature algorithm. Supported signing algorithms are: 'RS256,RS384,RS512,PS256,PS384,PS512'")
    }
    static func keyNotFound(thumbprint: String, appId: String) -> TokenError {
        TokenError("invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '\(thumbprint)', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '\(appId)'. Review the documentation at https://docs.microsoft.com/en-us/graph/deployments to determine the corresponding service endpoint and https://docs.microsoft.com/en-us/graph/api/application-get?view=graph-rest-1.0&tabs=http to build a query request URL, such as 'https://graph.microsoft.com/beta/applications/\(appId)']")
    }
    static func signatureMismatch(thumbprint: String, start: Date, end: Date) -> TokenError {
        TokenError("invalid_client", 700027, "Client assertion contains an invalid signature. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '\(thumbprint)', Found key 'Start=\(UTCTime.usDateTime(start)), End=\(UTCTime.usDateTime(end))']")
    }
    static func certificateOutsideValidity() -> TokenError {
        TokenError("invalid_client", 1000502, "The client certificate is not within its valid time range. Ensure that the certificate is valid and not expired.")
    }
    static func weakKey(_ bits: Int) -> TokenError {
        TokenError("invalid_client", 50032, "RSA key size \(bits) is less than the minimum required 2048 bits.")
    }
    static let audienceMismatch = TokenError("invalid_client", 700023, "Client assertion audience claim does not match Realm issuer. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .")
    static let subjectMismatch = TokenError("invalid_client", 50048, "Subject mismatches Issuer claim in the client assertion.")
    static let issuerMismatch = TokenError("invalid_client", 50048, "Issuer of the client assertion does not match the client_id of the request.")
    static func expired(now: Date, from: Date?, to: Date?) -> TokenError {
        TokenError("invalid_client", 700024, "Client assertion is not within its valid time range. Current time: \(WireTime.aadTime(now)), assertion valid from \(WireTime.aadTime(from ?? Date(timeIntervalSince1970: 0))), expiry time of assertion \(to.map(WireTime.aadTime) ?? "not specified"). Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .")
    }
    static let replay = TokenError("invalid_client", 50013, "Assertion failed signature validation. [Reason - The jti claim was already used.]")
    static func nonDefaultScope(_ s: String) -> TokenError {
        TokenError("invalid_scope", 1002012, "The provided value for scope \(s) is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
    }
    static func invalidScope(_ s: String) -> TokenError {
        TokenError("invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid. The scope \(s) is not valid.")
    }
    static let multipleResources = TokenError("invalid_scope", 700022, "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope values must be for a single resource.")
    static let invalidSecret = TokenError("invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.")
    static func wrongMethod(_ m: String) -> TokenError {
        TokenError("invalid_request", 900561, "The endpoint only accepts POST, OPTIONS requests. Received a \(m) request.")
    }
}

/// A Microsoft Graph error in Graph's envelope:
/// `{"error":{"code","message","innerError":{"date","request-id","client-request-id"}}}`.
public struct GraphError: Error, Sendable, Equatable {
    public var status: Int
    public var code: String
    public var message: String
    public var headers: [(String, String)] = []

    public static func == (a: GraphError, b: GraphError) -> Bool { a.status == b.status && a.code == b.code && a.message == b.message }

    public init(_ status: Int, _ code: String, _ message: String, headers: [(String, String)] = []) {
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
    }

    func response(now: Date, requestID: String, clientRequestID: String?) -> EmulatorResponse {
        .json(status, .object(["error": .object([
            "code": .string(code),
            "message": .string(message),
            "innerError": .object([
                "date": .string(WireTime.graphInnerDate(now)),
                "request-id": .string(requestID),
                "client-request-id": .string(clientRequestID ?? requestID),
            ]),
        ])]), headers: headers)
    }

    static func notFound(_ id: String) -> GraphError {
        GraphError(404, "Request_ResourceNotFound", "Resource '\(id)' does not exist or one of its queried reference-property objects are not present.")
    }
    static let denied = GraphError(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.")
    static let malformedProof = GraphError(401, "Authentication_MissingOrMalformed", "Access Token missing or malformed.")
    static func badRequest(_ m: String) -> GraphError { GraphError(400, "Request_BadRequest", m) }
    static let sizeExceeded = GraphError(400, "Directory_ResourceSizeExceeded", "The size of the object has exceeded its limit. Please reduce the number of values and retry your request.")
    static func invalidToken(_ m: String) -> GraphError {
        GraphError(401, "InvalidAuthenticationToken", m, headers: [("WWW-Authenticate",
            #"Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000""#)])
    }
    static func unsupportedQuery(_ m: String) -> GraphError { GraphError(400, "Request_UnsupportedQuery", m) }
    static func noRoute(_ method: String, _ path: String) -> GraphError {
        GraphError(400, "BadRequest", "Resource not found for the segment '\(path.split(separator: "/").last.map(String.init) ?? path)'.")
    }
    static func methodNotAllowed() -> GraphError { GraphError(405, "Request_BadRequest", "The requested HTTP method is not supported for this resource.") }
    static let throttled = GraphError(429, "TooManyRequests", "Too many requests.")

    // An app management policy's refusals of a new credential, named after the policy that refuses
    // (codes and texts as Entra's answers quoted by Azure CLI users and the Teams Toolkit show them;
    // the status, the policy id in the type refusal, and the code for certificates are UNCONFIRMED,
    // see docs/emulator.md).
    /// A secret (or symmetric key) where `passwordAddition` (`symmetricKeyAddition`) forbids one.
    static func credentialTypeNotAllowed(policyID: String) -> GraphError {
        GraphError(400, "CredentialTypeNotAllowedAsPerAppPolicy", "Credential type not allowed as per assigned policy '\(policyID)'.")
    }
    /// A credential that outlives a lifetime restriction's `maxLifetime`.
    static func credentialLifetimeExceeded(policyID: String) -> GraphError {
        GraphError(400, "CredentialInvalidLifetimeAsPerAppPolicy", "Credential lifetime exceeds the max value allowed as per assigned policy '\(policyID)'.")
    }
}
