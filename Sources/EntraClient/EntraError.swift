import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Every failure of a call to Entra or Graph, classified so callers decide without string matching.
/// Messages are redacted: no token, assertion, proof, key or secret ever appears in one.
public struct EntraError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, Equatable {
        /// 429: slow down (see ``retryAfter``).
        case throttled
        /// 5xx, 408, or no answer at all: try again later.
        case transient
        /// AADSTS700027 "The key was not found": normal right after addKey (propagation delay).
        case credentialNotYetActive
        /// The credential itself is refused: wrong signature, expired or weak certificate, bad
        /// secret, or a refused addKey/removeKey proof.
        case credentialInvalid
        /// AADSTS700024: the assertion's time window does not contain the server's now.
        case clockSkew
        /// 401 on Graph: the bearer is missing, expired or for another audience.
        case unauthorized
        /// 403: the caller lacks a permission.
        case forbidden
        /// 404, or AADSTS700016 / 90002: no such object, application or tenant.
        case notFound
        /// 400 that is the caller's fault.
        case badRequest
        /// Directory_ResourceSizeExceeded: the object holds too many credentials.
        case sizeExceeded
        /// The answer could not be understood.
        case protocolViolation
    }

    public var kind: Kind
    /// `token`, `addKey`, `getApplication`, …
    public var operation: String
    public var httpStatus: Int?
    public var aadstsCodes: [Int]
    public var graphCode: String?
    public var message: String
    public var requestID: String?
    public var clientRequestID: String?
    public var retryAfter: Double?

    public init(kind: Kind, operation: String, httpStatus: Int? = nil, aadstsCodes: [Int] = [], graphCode: String? = nil,
                message: String, requestID: String? = nil, clientRequestID: String? = nil, retryAfter: Double? = nil) {
        self.kind = kind
        self.operation = operation
        self.httpStatus = httpStatus
        self.aadstsCodes = aadstsCodes
        self.graphCode = graphCode
        self.message = Redaction.scrub(message)
        self.requestID = requestID
        self.clientRequestID = clientRequestID
        self.retryAfter = retryAfter
    }

    public var isRetryable: Bool { kind == .throttled || kind == .transient }

    /// Entra said no for good: the same request with the same credential gets the same answer
    /// (a bad request such as an unknown resource or scope, or the credential, app or tenant refused).
    /// Throttling, outages, clock skew and a key still propagating are not; nor is an answer that
    /// could not be understood.
    public var isPermanentRefusal: Bool {
        switch kind {
        case .badRequest, .credentialInvalid, .notFound, .unauthorized, .forbidden: return true
        case .throttled, .transient, .clockSkew, .credentialNotYetActive, .sizeExceeded, .protocolViolation: return false
        }
    }

    public var description: String {
        var parts = ["\(operation) failed (\(kind.rawValue)"]
        if let s = httpStatus { parts[0] += ", HTTP \(s)" }
        if let c = aadstsCodes.first { parts[0] += ", AADSTS\(c)" }
        if let g = graphCode { parts[0] += ", \(g)" }
        parts[0] += ")"
        parts.append(message)
        if let r = clientRequestID { parts.append("client-request-id \(r)") }
        if let r = retryAfter { parts.append("retry after \(r) s") }
        return parts.joined(separator: ": ")
    }

    /// Classifies a token-endpoint error body.
    static func fromToken(status: Int, body: [UInt8], response: HTTPResponseMessage, clientRequestID: String) -> EntraError {
        let json = try? JSONValue.parse(body, maxDepth: 16)
        let error = json?["error"]?.stringValue ?? ""
        let codes = (json?["error_codes"]?.arrayValue ?? []).compactMap { v -> Int? in if case .int(let i) = v { return Int(i) }; return nil }
        let description = json?["error_description"]?.stringValue ?? String(decoding: body.prefix(300), as: UTF8.self)
        let firstLine = description.components(separatedBy: "\r\n").first ?? description
        let retry = response.header("Retry-After").flatMap(Double.init)
        let kind: Kind
        switch (status, codes.first ?? 0) {
        case (429, _): kind = .throttled
        case (500..., _), (408, _): kind = .transient
        case (_, 700027) where description.contains("The key was not found"): kind = .credentialNotYetActive
        case (_, 700024): kind = .clockSkew
        case (_, 700016), (_, 90002): kind = .notFound
        case (_, 700027), (_, 1000502), (_, 50032), (_, 7000215), (_, 7000218), (_, 700023), (_, 50048), (_, 50027), (_, 5002738), (_, 7000214), (_, 7000277):
            kind = .credentialInvalid
        default: kind = error == "invalid_client" ? .credentialInvalid : .badRequest
        }
        return EntraError(kind: kind, operation: "token", httpStatus: status, aadstsCodes: codes, graphCode: error.isEmpty ? nil : error,
                          message: firstLine, requestID: response.header("x-ms-request-id") ?? json?["trace_id"]?.stringValue,
                          clientRequestID: clientRequestID, retryAfter: retry)
    }

    /// Classifies a Graph error body.
    static func fromGraph(operation: String, response: HTTPResponseMessage, clientRequestID: String) -> EntraError {
        let json = try? JSONValue.parse(response.body, maxDepth: 16)
        let code = json?["error"]?["code"]?.stringValue
        let message = json?["error"]?["message"]?.stringValue ?? String(decoding: response.body.prefix(300), as: UTF8.self)
        let retry = response.header("Retry-After").flatMap(Double.init)
        let kind: Kind
        switch (response.status, code ?? "") {
        case (429, _): kind = .throttled
        case (500..., _), (408, _): kind = .transient
        case (_, "Directory_ResourceSizeExceeded"): kind = .sizeExceeded
        case (401, "Authentication_MissingOrMalformed"): kind = .credentialInvalid
        case (401, _): kind = .unauthorized
        case (403, _): kind = .forbidden
        case (404, _): kind = .notFound
        case (400..<500, _): kind = .badRequest
        default: kind = .protocolViolation
        }
        return EntraError(kind: kind, operation: operation, httpStatus: response.status, graphCode: code, message: message,
                          requestID: response.header("request-id"), clientRequestID: clientRequestID, retryAfter: retry)
    }
}
