import Foundation
import KeyRollPrimitives

/// The JWS algorithms Entra accepts for RSA keys (RFC 7518 §3.3 and §3.5). PSS uses MGF1 with the
/// same digest and a salt as long as the digest (32 bytes for PS256).
public enum JWSAlgorithm: String, Sendable, CaseIterable, Hashable {
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
    case ps256 = "PS256", ps384 = "PS384", ps512 = "PS512"

    public enum Digest: Sendable { case sha256, sha384, sha512 }

    public var usesPSS: Bool { self == .ps256 || self == .ps384 || self == .ps512 }
    public var digest: Digest {
        switch self {
        case .rs256, .ps256: return .sha256
        case .rs384, .ps384: return .sha384
        case .rs512, .ps512: return .sha512
        }
    }
}

/// How strictly the base64url segments of a compact JWS are read.
public enum JWSEncodingRule: Sendable {
    /// Unpadded base64url only (RFC 7515). Graph requires this of addKey/removeKey proofs.
    case strict
    /// Also padded segments and standard base64, as Entra's token endpoint tolerates from real clients.
    case lenient
}

/// A compact-serialized JWS (`header.payload.signature`) whose header and payload are JSON objects.
///
/// Parsing checks form only; call ``verify(with:allowing:)`` to check the signature. The signature
/// is always computed over the segments *as received*, so a client that signed padded segments
/// verifies.
public struct CompactJWS: Sendable {
    public let header: [String: JSONValue]
    public let claims: JWTClaims
    public let algorithm: JWSAlgorithm
    public let signature: [UInt8]
    let signingInput: String

    /// Upper bound on a token's length; Entra's own assertions with an x5c chain stay far below it.
    public static let maximumLength = 16 * 1024

    /// Parses `token`. Throws ``EntraCryptoError/malformedJWS(_:)`` for anything but three segments
    /// of valid base64 holding JSON objects, ``EntraCryptoError/unsupportedAlgorithm(_:)`` for
    /// `none`, HMAC, EC or unknown algorithms.
    public init(parsing token: String, encoding: JWSEncodingRule = .lenient, maximumLength: Int = CompactJWS.maximumLength) throws {
        guard token.utf8.count <= maximumLength else {
            throw EntraCryptoError.malformedJWS("token is longer than \(maximumLength) bytes")
        }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else {
            throw EntraCryptoError.malformedJWS("expected 3 dot-separated segments, found \(parts.count)")
        }
        func decode(_ part: Substring, _ name: String) throws -> [UInt8] {
            let bytes = encoding == .strict ? Base64URL.decodeStrict(part) : Base64URL.decodeLenient(part)
            guard let bytes else {
                throw EntraCryptoError.malformedJWS(encoding == .strict
                    ? "the \(name) segment is not unpadded base64url" : "the \(name) segment is not valid base64url")
            }
            return bytes
        }
        let headerBytes = try decode(parts[0], "header")
        let payloadBytes = try decode(parts[1], "payload")
        let sigBytes = try decode(parts[2], "signature")
        func parse(_ bytes: [UInt8], _ what: String) throws -> JSONValue {
            do { return try JSONValue.parse(bytes) } catch { throw EntraCryptoError.malformedJWS("the \(what) is \(error)") }
        }
        guard case .object(let header) = try parse(headerBytes, "header") else {
            throw EntraCryptoError.malformedJWS("the header is not a JSON object")
        }
        guard case .object(let claims) = try parse(payloadBytes, "payload") else {
            throw EntraCryptoError.malformedJWS("the payload is not a JSON object")
        }
        guard let algName = header["alg"]?.stringValue else {
            throw EntraCryptoError.malformedJWS("the header has no 'alg' string")
        }
        guard let alg = JWSAlgorithm(rawValue: algName) else { throw EntraCryptoError.unsupportedAlgorithm(algName) }
        guard !sigBytes.isEmpty else { throw EntraCryptoError.malformedJWS("the signature segment is empty") }
        self.header = header
        self.claims = JWTClaims(claims)
        self.algorithm = alg
        self.signature = sigBytes
        self.signingInput = String(parts[0]) + "." + String(parts[1])
    }

    /// Verifies the signature with `key`, which may only be used with `allowed` algorithms.
    /// Keys under 2048 bits are refused before any signature check.
    public func verify(with key: RSAPublicKey, allowing allowed: Set<JWSAlgorithm>) throws {
        guard allowed.contains(algorithm) else { throw EntraCryptoError.algorithmNotAllowed(algorithm.rawValue) }
        guard key.bits >= 2048 else { throw EntraCryptoError.keyTooSmall(bits: key.bits) }
        guard key.isValidSignature(signature, for: Array(signingInput.utf8), algorithm: algorithm) else {
            throw EntraCryptoError.invalidSignature
        }
    }

    /// Header string field, e.g. `x5t`, `kid`, `typ`.
    public func headerString(_ name: String) -> String? { header[name]?.stringValue }

    /// Signs `claims` with `key` and returns the compact serialization (unpadded base64url).
    /// `header` must not contain `alg`: it is set from `algorithm`.
    public static func sign(header: [String: JSONValue], claims: [String: JSONValue], algorithm: JWSAlgorithm,
                            key: any RSASigner) throws -> String {
        var h = header
        h["alg"] = .string(algorithm.rawValue)
        let input = Base64URL.encode(JSONValue.object(h).serialized()) + "." + Base64URL.encode(JSONValue.object(claims).serialized())
        let sig = try key.signature(for: Array(input.utf8), algorithm: algorithm)
        return input + "." + Base64URL.encode(sig)
    }
}

/// A JWT claims set with the accessors the protocol needs.
public struct JWTClaims: Sendable, Equatable {
    public let values: [String: JSONValue]

    public init(_ values: [String: JSONValue]) { self.values = values }

    public subscript(name: String) -> JSONValue? { values[name] }
    public func string(_ name: String) -> String? { values[name]?.stringValue }
    /// A NumericDate claim read leniently (integer, float or decimal string); nil when absent or unreadable.
    public func date(_ name: String) -> Date? { NumericDate.date(from: values[name]) }
    /// `aud` as a list: a single string or an array of strings.
    public var audiences: [String] {
        switch values["aud"] {
        case .string(let s): return [s]
        case .array(let a): return a.compactMap(\.stringValue)
        default: return []
        }
    }
}
