import Crypto
import Foundation
import KeyRollPrimitives

/// A certificate thumbprint: a hash of the certificate's DER encoding.
///
/// Entra names certificates by SHA-1 (`x5t`, `kid` in upper-case hex, Graph's `customKeyIdentifier`)
/// and by SHA-256 (`x5t#S256`).
public struct Thumbprint: Sendable, Hashable, CustomStringConvertible {
    public enum Algorithm: Sendable, Hashable { case sha1, sha256 }

    public let algorithm: Algorithm
    public let bytes: [UInt8]

    public init(algorithm: Algorithm, bytes: [UInt8]) {
        self.algorithm = algorithm
        self.bytes = bytes
    }

    public static func sha1<D: DataProtocol>(of der: D) -> Thumbprint {
        Thumbprint(algorithm: .sha1, bytes: Array(Insecure.SHA1.hash(data: der)))
    }

    public static func sha256<D: DataProtocol>(of der: D) -> Thumbprint {
        Thumbprint(algorithm: .sha256, bytes: Array(SHA256.hash(data: der)))
    }

    /// Upper-case hex without separators, as the Azure portal and `kid` show it.
    public var hex: String { bytes.map { hexDigits[Int($0 >> 4)] + hexDigits[Int($0 & 0x0F)] }.joined() }
    /// Standard base64 with padding: Graph's `customKeyIdentifier`.
    public var base64: String { Base64.encode(bytes) }
    /// Base64url without padding: JOSE `x5t` / `x5t#S256`.
    public var base64URL: String { Base64URL.encode(bytes) }

    /// Parses an upper- or lower-case hex thumbprint, with or without `:` separators.
    public init?(hex: String, algorithm: Algorithm) {
        let digits = hex.filter { $0 != ":" }
        let expected = algorithm == .sha1 ? 40 : 64
        guard digits.count == expected else { return nil }
        var out: [UInt8] = []
        var it = digits.makeIterator()
        while let a = it.next(), let b = it.next() {
            guard let byte = UInt8(String([a, b]), radix: 16) else { return nil }
            out.append(byte)
        }
        self.init(algorithm: algorithm, bytes: out)
    }

    public var description: String { "\(algorithm == .sha1 ? "SHA-1" : "SHA-256") \(hex)" }
}

private let hexDigits = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "A", "B", "C", "D", "E", "F"]
