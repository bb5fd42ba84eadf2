import Foundation
import KeyRollPrimitives

/// Every way the managed-identity endpoint refuses a request, with the status the Azure SDKs
/// expect: 401 for a missing or wrong secret; 400 for the caller's mistakes (an unknown identity,
/// a refused resource; never 404, which several SDKs retry); 403 when Entra refuses the app
/// itself (its key is gone: retrying cannot help); 500 and 503 only for transient failures.
public struct TokenEndpointError: Error, Sendable, Equatable, CustomStringConvertible {
    public let status: Int
    /// OAuth-style error code (`invalid_request`, `unauthorized_client`, `temporarily_unavailable`, …).
    public let code: String
    public let message: String

    public init(status: Int, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public var description: String { "\(status) \(code): \(message)" }

    public static let missingSecret = TokenEndpointError(status: 401, code: "invalid_request",
        message: "The X-IDENTITY-HEADER header is missing. Load the environment file the KeyRoll agent wrote (IDENTITY_ENDPOINT, IDENTITY_HEADER) into the application's environment.")
    public static let wrongSecret = TokenEndpointError(status: 401, code: "invalid_request",
        message: "The X-IDENTITY-HEADER secret matches no identity this agent serves. The secret may have been rotated: reload the application with the agent's current environment file.")

    public static func badRequest(_ message: String) -> TokenEndpointError { .init(status: 400, code: "invalid_request", message: message) }

    /// The JSON body every error carries: the fields MSAL (statusCode, message), MSAL.NET (error,
    /// error_description, correlationId) and MSAL Node read.
    public func body(correlationID: String) -> [UInt8] {
        JSONValue.object([
            "statusCode": .int(Int64(status)), "message": .string(message), "error": .string(code),
            "error_description": .string(message), "correlationId": .string(correlationID),
        ]).serialized()
    }
}
