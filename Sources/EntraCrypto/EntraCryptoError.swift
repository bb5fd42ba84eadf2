/// Every way EntraCrypto refuses an input. Each case names what was wrong precisely enough for a
/// caller to tell a user what to do; none carries key material, token text or signatures.
public enum EntraCryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Entra accepts RSA keys of at least 2048 bits only.
    case keyTooSmall(bits: Int)
    /// A key size that KeyRoll does not generate (it generates 2048, 3072 or 4096).
    case unsupportedKeySize(bits: Int)
    /// EC, Ed25519 or any non-RSA key: Entra supports RSA certificate credentials only.
    case unsupportedKeyType(String)
    /// No PEM block of the expected kind was found, or the PEM framing is broken.
    case malformedPEM(String)
    /// A PEM block carried a label other than the ones accepted here.
    case unexpectedPEMLabel(found: String, expected: [String])
    /// The bytes are not a well-formed key of the claimed encoding.
    case malformedKey(String)
    /// The bytes are not a well-formed X.509 certificate.
    case malformedCertificate(String)
    /// A PKCS#12 (.pfx) file could not be read (bad password, corrupt file, no key or no certificate).
    case pkcs12(String)
    /// A compact JWS is not well formed (segment count, base64, JSON, size).
    case malformedJWS(String)
    /// The JWS header names an algorithm this library never accepts (`none`, HS*, ES*, …).
    case unsupportedAlgorithm(String)
    /// The JWS algorithm is a valid one, but not one the verifying key was allowed to use.
    case algorithmNotAllowed(String)
    /// The signature does not verify with the given key.
    case invalidSignature
    /// A builder was asked for something the protocol forbids (e.g. a proof lifetime over 10 minutes).
    case invalidParameter(String)

    public var description: String {
        switch self {
        case .keyTooSmall(let bits):
            return "RSA key of \(bits) bits is too small: Entra ID requires RSA keys of at least 2048 bits."
        case .unsupportedKeySize(let bits):
            return "RSA key size \(bits) is not supported: use 2048, 3072 or 4096."
        case .unsupportedKeyType(let type):
            return "\(type) keys are not supported: Entra ID accepts only RSA certificate credentials (2048 bits or more)."
        case .malformedPEM(let why):
            return "Malformed PEM: \(why)."
        case .unexpectedPEMLabel(let found, let expected):
            return "Unexpected PEM block 'BEGIN \(found)': expected one of \(expected.map { "'BEGIN \($0)'" }.joined(separator: ", "))."
        case .malformedKey(let why):
            return "Malformed private key: \(why)."
        case .malformedCertificate(let why):
            return "Malformed X.509 certificate: \(why)."
        case .pkcs12(let why):
            return "Cannot read the PKCS#12 (.pfx) file: \(why). To convert it to PEM instead: openssl pkcs12 -in cert.pfx -out cert.pem -nodes"
        case .malformedJWS(let why):
            return "Malformed JWT: \(why)."
        case .unsupportedAlgorithm(let alg):
            return "JWT algorithm '\(alg)' is not supported (supported: RS256, RS384, RS512, PS256, PS384, PS512)."
        case .algorithmNotAllowed(let alg):
            return "JWT algorithm '\(alg)' is not allowed for this key."
        case .invalidSignature:
            return "JWT signature does not verify."
        case .invalidParameter(let why):
            return "Invalid parameter: \(why)."
        }
    }
}
