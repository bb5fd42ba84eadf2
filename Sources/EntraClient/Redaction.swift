/// Removes secrets from text bound for logs and errors.
///
/// Four rules, applied in this order, each a single left-to-right scan over the UTF-8 bytes (no
/// regular-expression engine: this runs on every log line, and Foundation's would compile four ICU
/// patterns per call):
///
/// 1. a JWT — `eyJ` + at least 4 base64url characters, `.`, a segment, `.`, an optional segment —
///    becomes `[redacted-jwt]`;
/// 2. a PEM block — `-----BEGIN LABEL-----` through the next `-----END LABEL-----`, or to the end of
///    the text when it is cut off — becomes `[redacted-pem]`;
/// 3. `Bearer <token>` (any case) keeps the word and loses the token;
/// 4. the value of a secret-bearing field — `client_secret`, `client_assertion`, `secretText`,
///    `proof`, `access_token` (any case), then `=` or `:` with optional quotes and spaces — becomes
///    `[redacted]`, up to the next `&`, quote, space, `,` or `}`.
public enum Redaction {
    public static func scrub(_ text: String) -> String {
        var bytes = Array(text.utf8)
        bytes = replacingJWTs(bytes)
        bytes = replacingPEMBlocks(bytes)
        bytes = replacingBearerTokens(bytes)
        bytes = replacingSecretFields(bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// A URL without its query string (queries may carry identifiers, never needed in logs).
    public static func url(_ u: String) -> String { String(u.split(separator: "?", maxSplits: 1).first ?? "") }

    // MARK: the rules

    /// Linear: where a candidate fails, no match can start before the place it failed (any later
    /// `eyJ` inside the same runs reaches the same dead end), so the scan jumps there.
    static func replacingJWTs(_ s: [UInt8]) -> [UInt8] {
        scanSkipping(s) { s, i in
            guard matches(s, at: i, "eyJ") else { return nil }
            var j = i + 3
            let first = j
            while j < s.count, isBase64URL(s[j]) { j += 1 }
            guard j - first >= 4, j < s.count, s[j] == dot else { return .skip(to: j) }
            j += 1
            let second = j
            while j < s.count, isBase64URL(s[j]) || s[j] == equals { j += 1 }
            guard j > second, j < s.count, s[j] == dot else { return .skip(to: j) }
            j += 1
            while j < s.count, isBase64URL(s[j]) || s[j] == equals { j += 1 }
            return .replace(end: j, with: Array("[redacted-jwt]".utf8))
        }
    }

    static func replacingPEMBlocks(_ s: [UInt8]) -> [UInt8] {
        scan(s) { s, i in
            guard let afterBegin = armor(s, at: i, "-----BEGIN ") else { return nil }
            var j = afterBegin
            while j < s.count {
                if let afterEnd = armor(s, at: j, "-----END ") { return (afterEnd, Array("[redacted-pem]".utf8)) }
                j += 1
            }
            return (s.count, Array("[redacted-pem]".utf8))
        }
    }

    static func replacingBearerTokens(_ s: [UInt8]) -> [UInt8] {
        scan(s) { s, i in
            guard matches(s, at: i, "bearer", ignoringCase: true) else { return nil }
            var j = i + 6
            while j < s.count, isSpace(s[j]) { j += 1 }
            guard j > i + 6 else { return nil }
            let token = j
            while j < s.count, isBase64URL(s[j]) || s[j] == dot || s[j] == equals { j += 1 }
            guard j > token else { return nil }
            return (j, Array(s[i..<token]) + Array("[redacted]".utf8))
        }
    }

    static let secretFields = ["client_secret", "client_assertion", "secretText", "proof", "access_token"]

    static func replacingSecretFields(_ s: [UInt8]) -> [UInt8] {
        scan(s) { s, i in
            guard let name = secretFields.first(where: { matches(s, at: i, $0, ignoringCase: true) }) else { return nil }
            var j = i + name.utf8.count
            if j < s.count, isQuote(s[j]) { j += 1 }
            while j < s.count, isSpace(s[j]) { j += 1 }
            guard j < s.count, s[j] == UInt8(ascii: "=") || s[j] == UInt8(ascii: ":") else { return nil }
            j += 1
            while j < s.count, isSpace(s[j]) { j += 1 }
            if j < s.count, isQuote(s[j]) { j += 1 }
            let value = j
            while j < s.count, !endsValue(s[j]) { j += 1 }
            guard j > value else { return nil }
            return (j, Array(s[i..<value]) + Array("[redacted]".utf8))
        }
    }

    // MARK: scanning

    /// Copies `s`, replacing each match `rule` finds (it returns where the match ends and what
    /// replaces it) and moving on one byte wherever it finds none.
    private static func scan(_ s: [UInt8], _ rule: ([UInt8], Int) -> (end: Int, replacement: [UInt8])?) -> [UInt8] {
        scanSkipping(s) { s, i in rule(s, i).map { .replace(end: $0.end, with: $0.replacement) } }
    }

    enum Step {
        case replace(end: Int, with: [UInt8])
        /// No match starts anywhere before `to`: copy up to it.
        case skip(to: Int)
    }

    /// ``scan`` for a rule that can also say how far no match can start.
    private static func scanSkipping(_ s: [UInt8], _ rule: ([UInt8], Int) -> Step?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(s.count)
        var i = 0
        while i < s.count {
            switch rule(s, i) {
            case .replace(let end, let replacement)?:
                out += replacement
                i = end
            case .skip(let to)?:
                let end = max(i + 1, min(to, s.count))
                out += s[i..<end]
                i = end
            case nil:
                out.append(s[i])
                i += 1
            }
        }
        return out
    }

    /// `prefix` + one or more of `A`–`Z` and space + `-----`; the index after it.
    private static func armor(_ s: [UInt8], at i: Int, _ prefix: String) -> Int? {
        guard matches(s, at: i, prefix) else { return nil }
        var j = i + prefix.utf8.count
        let label = j
        while j < s.count, (s[j] >= UInt8(ascii: "A") && s[j] <= UInt8(ascii: "Z")) || s[j] == UInt8(ascii: " ") { j += 1 }
        guard j > label, matches(s, at: j, "-----") else { return nil }
        return j + 5
    }

    private static func matches(_ s: [UInt8], at i: Int, _ word: String, ignoringCase: Bool = false) -> Bool {
        var j = i
        for w in word.utf8 {
            guard j < s.count else { return false }
            let c = s[j]
            guard c == w || (ignoringCase && lower(c) == lower(w)) else { return false }
            j += 1
        }
        return true
    }

    private static let dot = UInt8(ascii: "."), equals = UInt8(ascii: "=")
    private static func lower(_ c: UInt8) -> UInt8 { c >= 65 && c <= 90 ? c + 32 : c }
    private static func isBase64URL(_ c: UInt8) -> Bool {
        (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c == UInt8(ascii: "-") || c == UInt8(ascii: "_")
    }
    /// Regular-expression `\s`: space, tab, line feed, vertical tab, form feed, carriage return.
    private static func isSpace(_ c: UInt8) -> Bool { c == 32 || (c >= 9 && c <= 13) }
    private static func isQuote(_ c: UInt8) -> Bool { c == UInt8(ascii: "\"") || c == UInt8(ascii: "'") }
    private static func endsValue(_ c: UInt8) -> Bool {
        c == UInt8(ascii: "&") || isQuote(c) || isSpace(c) || c == UInt8(ascii: ",") || c == UInt8(ascii: "}")
    }
}
