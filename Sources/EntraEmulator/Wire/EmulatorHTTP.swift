import EntraCrypto
import Foundation
import KeyRollPrimitives

/// An HTTP request as the emulator sees it, independent of the server that carried it (Hummingbird
/// over TCP, or a direct in-process call).
public struct EmulatorRequest: Sendable {
    public var method: String
    /// Path and query exactly as sent, e.g. `/v1.0/applications?$filter=appId%20eq%20'…'`.
    public var target: String
    /// Header names lower-cased; a repeated header keeps its last value.
    public var headers: [String: String]
    public var body: [UInt8]
    /// `scheme://host[:port]` the client addressed: discovery documents and the assertion audience
    /// are derived from it, as Entra derives them from the host it was called on.
    public var baseURL: String

    public init(method: String, target: String, headers: [String: String] = [:], body: [UInt8] = [], baseURL: String) {
        self.method = method.uppercased()
        self.target = target
        self.headers = Dictionary(headers.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { $1 })
        self.body = body
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
    }

    public var path: String { String(target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "") }

    /// Decoded path segments (`%28` → `(` etc.).
    public var pathSegments: [String] {
        path.split(separator: "/", omittingEmptySubsequences: true).map { String($0).removingPercentEncoding ?? String($0) }
    }

    /// Query parameters in order, decoded (`+` is a space, as form encoding and OData clients use it).
    public var query: [(name: String, value: String)] {
        guard let q = target.split(separator: "?", maxSplits: 1).dropFirst().first else { return [] }
        return FormEncoding.decode(String(q))
    }

    public func queryValue(_ name: String) -> String? { query.last { $0.name.lowercased() == name.lowercased() }?.value }
}

public struct EmulatorResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]
    /// Simulate a dropped connection: the server closes the socket without answering.
    public var dropConnection = false

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json(_ status: Int, _ value: JSONValue, headers: [(String, String)] = []) -> EmulatorResponse {
        EmulatorResponse(status: status, headers: [("Content-Type", "application/json; charset=utf-8")] + headers, body: value.serialized())
    }

    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> EmulatorResponse {
        EmulatorResponse(status: status, headers: [("Content-Type", contentType)], body: Array(text.utf8))
    }

    public func header(_ name: String) -> String? { headers.last { $0.0.lowercased() == name.lowercased() }?.1 }

    public var json: JSONValue? { try? JSONValue.parse(body, maxDepth: 64) }
}

/// `application/x-www-form-urlencoded` decoding.
public enum FormEncoding {
    public static func decode(_ text: String) -> [(name: String, value: String)] {
        text.utf8.split(separator: UInt8(ascii: "&"), omittingEmptySubsequences: true).map { pair in
            let kv = pair.split(separator: UInt8(ascii: "="), maxSplits: 1, omittingEmptySubsequences: false)
            return (unescape(kv[0]), kv.count > 1 ? unescape(kv[1]) : "")
        }
    }

    /// `+` → space, `%XX` → byte; malformed escapes are kept as they are.
    static func unescape(_ bytes: Substring.UTF8View.SubSequence) -> String {
        let s = Array(bytes)
        var out = [UInt8]()
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            if s[i] == UInt8(ascii: "+") {
                out.append(32)
            } else if s[i] == UInt8(ascii: "%"), i + 2 < s.count, let high = hexValue(s[i + 1]), let low = hexValue(s[i + 2]) {
                out.append(high << 4 | low)
                i += 2
            } else {
                out.append(s[i])
            }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 65...70: return c - 55
        case 97...102: return c - 87
        default: return nil
        }
    }

    public static func encode(_ pairs: [(String, String)]) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return pairs.map { k, v in
            (k.addingPercentEncoding(withAllowedCharacters: allowed) ?? k) + "=" + (v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v)
        }.joined(separator: "&")
    }
}

/// The timestamp formats Entra and Graph put on the wire (see ``UTCTime``).
enum WireTime {
    static func tokenTimestamp(_ d: Date) -> String { UTCTime.spaced(d) }
    static func graphInnerDate(_ d: Date) -> String { UTCTime.isoNoOffset(d) }
    static func iso(_ d: Date) -> String { UTCTime.iso(d) }
    static func isoFraction(_ d: Date) -> String { UTCTime.isoFraction(d) }
    static func aadTime(_ d: Date) -> String { UTCTime.isoFraction(d) }
    static func httpDate(_ d: Date) -> String { UTCTime.httpDate(d) }
    static func parse(_ s: String) -> Date? { UTCTime.parseISO(s) }
}
