import Foundation
import KeyRollPrimitives

/// The `$filter` forms Graph's audit log and usage reports are queried with: clauses joined by
/// `and` (each may be parenthesised), each `property op literal` or `collection/any(t: t eq 'v')`
/// (with `or` between the lambda's alternatives). Literals are quoted strings, bare integers, or bare
/// ISO 8601 date-times (`createdDateTime ge 2025-01-01T00:00:00Z`; a quoted date is refused, as Graph
/// refuses it). Anything else — a top-level `or`, functions, `not` — is not a filter Graph's
/// sign-in log takes: `400 BadRequest` "Invalid filter clause".
///
/// The parser knows no properties: each endpoint checks the clauses it supports.
struct AuditLogFilter {
    enum Operator: String, CaseIterable { case eq, ne, gt, ge, lt, le }

    enum Literal: Equatable {
        case string(String)
        case int(Int64)
        case date(Date)
    }

    enum Clause: Equatable {
        /// `collection/any(t: t eq 'a' or t eq 'b')`; the collection lower-cased.
        case any(String, [String])
        /// `property op literal`; the property lower-cased (`status/errorcode`).
        case compare(String, Operator, Literal)
    }

    let clauses: [Clause]

    /// The error Graph's sign-in log answers for a filter it cannot read.
    static let invalid = GraphError(400, "BadRequest", "Invalid filter clause")

    init(parsing text: String) throws {
        clauses = try Self.conjuncts(text).map(Self.clause)
        guard !clauses.isEmpty else { throw Self.invalid }
    }

    /// The `and`-joined parts of `s`, with balanced outer parentheses removed, flattened.
    private static func conjuncts(_ text: String) throws -> [String] {
        let s = try unwrapped(text)
        guard !s.isEmpty else { throw invalid }
        if try split(s, on: "or").count > 1 { throw invalid }
        let parts = try split(s, on: "and")
        if parts.count == 1 { return [s] }
        return try parts.flatMap(conjuncts)
    }

    /// `s` trimmed, without parentheses that enclose all of it.
    private static func unwrapped(_ text: String) throws -> String {
        var s = text.trimmingCharacters(in: .whitespaces)
        while s.hasPrefix("("), s.hasSuffix(")"), try closingParen(of: s) == s.count - 1 {
            s = String(s.dropFirst().dropLast()).trimmingCharacters(in: .whitespaces)
        }
        return s
    }

    /// The offset of the parenthesis that closes the one `s` starts with.
    private static func closingParen(of s: String) throws -> Int {
        var depth = 0, inQuote = false
        for (i, ch) in s.enumerated() {
            if ch == "'" { inQuote.toggle() }
            guard !inQuote else { continue }
            if ch == "(" { depth += 1 }
            if ch == ")" {
                depth -= 1
                if depth == 0 { return i }
                if depth < 0 { throw invalid }
            }
        }
        throw invalid
    }

    /// `s` split on the keyword `word` (case-insensitive, between whitespace) outside quotes and parentheses.
    private static func split(_ s: String, on word: String) throws -> [String] {
        let chars = Array(s)
        let key = Array(" \(word) ")
        var parts: [String] = [], current = "", depth = 0, inQuote = false, i = 0
        while i < chars.count {
            let ch = chars[i]
            if ch == "'" { inQuote.toggle() }
            if !inQuote {
                if ch == "(" { depth += 1 }
                if ch == ")" { depth -= 1; if depth < 0 { throw invalid } }
                if depth == 0, i + key.count <= chars.count, String(chars[i..<i + key.count]).lowercased() == String(key) {
                    parts.append(current)
                    current = ""
                    i += key.count
                    continue
                }
            }
            current.append(ch)
            i += 1
        }
        guard !inQuote, depth == 0 else { throw invalid }
        parts.append(current)
        return parts.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    private static func clause(_ c: String) throws -> Clause {
        if let r = c.range(of: "/any(", options: .caseInsensitive) {
            let collection = c[..<r.lowerBound].trimmingCharacters(in: .whitespaces).lowercased()
            guard c.hasSuffix(")"), !collection.isEmpty, !collection.contains(" ") else { throw invalid }
            let inner = c[r.upperBound..<c.index(before: c.endIndex)]
            guard let colon = inner.firstIndex(of: ":") else { throw invalid }
            let variable = inner[..<colon].trimmingCharacters(in: .whitespaces)
            guard !variable.isEmpty else { throw invalid }
            let values = try split(String(inner[inner.index(after: colon)...]), on: "or").map { alternative -> String in
                let tokens = try self.tokens(alternative)
                guard tokens.count == 3, tokens[0] == variable, tokens[1].lowercased() == "eq", case .string(let v) = try literal(tokens[2]) else { throw invalid }
                return v
            }
            return .any(collection, values)
        }
        let tokens = try tokens(c)
        guard tokens.count == 3, let op = Operator(rawValue: tokens[1].lowercased()) else { throw invalid }
        let property = tokens[0].lowercased()
        guard property.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "/" }) else { throw invalid }
        return .compare(property, op, try literal(tokens[2]))
    }

    /// Whitespace-separated tokens, a quoted string (with `''` inside) being one.
    private static func tokens(_ s: String) throws -> [String] {
        var out: [String] = [], current = "", inQuote = false
        for ch in s {
            if ch == "'" { inQuote.toggle() }
            if ch == " ", !inQuote {
                if !current.isEmpty { out.append(current); current = "" }
                continue
            }
            current.append(ch)
        }
        guard !inQuote else { throw invalid }
        if !current.isEmpty { out.append(current) }
        return out
    }

    private static func literal(_ t: String) throws -> Literal {
        if t.count >= 2, t.hasPrefix("'"), t.hasSuffix("'") {
            return .string(String(t.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'"))
        }
        if let n = Int64(t) { return .int(n) }
        if t.count >= 20, let d = UTCTime.parseISO(t) { return .date(d) }
        throw invalid
    }
}
