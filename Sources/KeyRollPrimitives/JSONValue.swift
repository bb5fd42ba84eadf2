import Foundation

/// A JSON value as it appears in a JOSE header or JWT claims set.
///
/// Numbers keep the distinction the wire makes: `1795913927` is ``int(_:)``, `1795913927.88` is
/// ``double(_:)``. Objects are unordered; serialization sorts keys so output is deterministic.
public enum JSONValue: Sendable, Equatable, Hashable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var objectValue: [String: JSONValue]? { if case .object(let o) = self { return o }; return nil }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    /// A JSON number as a Double (integers included); nil for anything else.
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }

    public subscript(key: String) -> JSONValue? { objectValue?[key] }

    /// Parses JSON text. Nesting deeper than `maxDepth` is refused rather than recursed into.
    public static func parse<D: DataProtocol>(_ bytes: D, maxDepth: Int = 32) throws -> JSONValue {
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: Data(bytes)) } catch {
            throw ParseError(description: "not valid JSON")
        }
        guard value.depth <= maxDepth else { throw ParseError(description: "JSON nested deeper than \(maxDepth) levels") }
        return value
    }

    /// Text that ``parse(_:maxDepth:)`` refuses, and why.
    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public let description: String
    }

    var depth: Int {
        switch self {
        case .array(let a): return 1 + (a.map(\.depth).max() ?? 0)
        case .object(let o): return 1 + (o.values.map(\.depth).max() ?? 0)
        default: return 0
        }
    }

    /// Compact JSON with sorted keys and unescaped slashes.
    public func serialized() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding a closed enum of JSON primitives cannot fail.
        return Array((try? encoder.encode(self)) ?? Data("null".utf8))
    }
}

extension JSONValue: Codable {
    public init(from decoder: Decoder) throws {
        // Each decode is strict (no type coercion), so the order only decides how many failed
        // attempts a value costs: the common kinds (strings, objects) come first, because a failed
        // attempt throws, and throwing dominates parsing time on large documents.
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else if let o = try? c.decode([String: JSONValue].self) { self = .object(o) }
        else if let a = try? c.decode([JSONValue].self) { self = .array(a) }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int64.self) { self = .int(i) }
        else { self = .double(try c.decode(Double.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .null: try c.encodeNil()
        case .bool(let b): try c.encode(b)
        case .int(let i): try c.encode(i)
        case .double(let d): try c.encode(d)
        case .string(let s): try c.encode(s)
        case .array(let a): try c.encode(a)
        case .object(let o): try c.encode(o)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByBooleanLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// RFC 7519 NumericDate, read as tolerantly as Entra reads client assertions: a JSON integer, a JSON
/// float (MSAL Python: `time.time() + 600`) or a decimal string (MSAL.NET: `"nbf":"1717000000"`).
public enum NumericDate {
    public static func date(from value: JSONValue?) -> Date? {
        switch value {
        case .int(let i): return Date(timeIntervalSince1970: TimeInterval(i))
        case .double(let d) where d.isFinite: return Date(timeIntervalSince1970: d)
        case .string(let s):
            guard let d = Double(s.trimmingCharacters(in: .whitespaces)), d.isFinite else { return nil }
            return Date(timeIntervalSince1970: d)
        default: return nil
        }
    }

    /// Whole seconds since the epoch, rounded down: what KeyRoll emits.
    public static func value(_ date: Date) -> JSONValue { .int(Int64(date.timeIntervalSince1970.rounded(.down))) }
}

extension JSONValue: ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral {
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(Dictionary(elements, uniquingKeysWith: { $1 })) }
}
