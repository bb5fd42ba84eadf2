import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The handful of UTC timestamp formats Entra and Graph put on the wire, formatted and parsed
/// without Foundation's `DateFormatter` (whose creation costs an ICU formatter per call, and which
/// showed up as the largest non-RSA cost on every request).
public enum UTCTime {
    struct Parts { var year, month, day, hour, minute, second: Int; var nanos: Int }

    static func parts(_ d: Date) -> Parts {
        let t = d.timeIntervalSince1970
        let whole = t.rounded(.down)
        var tt = time_t(whole)
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        return Parts(year: Int(tmv.tm_year) + 1900, month: Int(tmv.tm_mon) + 1, day: Int(tmv.tm_mday), hour: Int(tmv.tm_hour),
                     minute: Int(tmv.tm_min), second: Int(tmv.tm_sec), nanos: Int(((t - whole) * 1e9).rounded(.down)))
    }

    @inline(__always) static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    static func date(_ p: Parts) -> String { "\(pad(p.year, 4))-\(pad(p.month, 2))-\(pad(p.day, 2))" }
    static func time(_ p: Parts) -> String { "\(pad(p.hour, 2)):\(pad(p.minute, 2)):\(pad(p.second, 2))" }

    /// `2024-01-11T15:31:26Z`
    public static func iso(_ d: Date) -> String { let p = parts(d); return "\(date(p))T\(time(p))Z" }
    /// `2019-09-17T19:10:35.2742618Z` (7-digit fraction, as Graph and AADSTS messages print it)
    public static func isoFraction(_ d: Date) -> String { let p = parts(d); return "\(date(p))T\(time(p)).\(pad(p.nanos / 100, 7))Z" }
    /// `2020-11-15T01:32:03` (Graph's innerError.date: no offset, no fraction)
    public static func isoNoOffset(_ d: Date) -> String { let p = parts(d); return "\(date(p))T\(time(p))" }
    /// `2016-01-09 02:02:12Z` (token-endpoint timestamp)
    public static func spaced(_ d: Date) -> String { let p = parts(d); return "\(date(p)) \(time(p))Z" }
    /// `01/09/2016 02:02:12` (US order, as AADSTS700027 prints a key's validity)
    public static func usDateTime(_ d: Date) -> String { let p = parts(d); return "\(pad(p.month, 2))/\(pad(p.day, 2))/\(pad(p.year, 4)) \(time(p))" }

    static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Sun, 29 Nov 2026 03:14:49 GMT` (RFC 7231 HTTP-date)
    public static func httpDate(_ d: Date) -> String {
        var tt = time_t(d.timeIntervalSince1970.rounded(.down))
        var tmv = tm()
        gmtime_r(&tt, &tmv)
        return "\(weekdays[Int(tmv.tm_wday)]), \(pad(Int(tmv.tm_mday), 2)) \(months[Int(tmv.tm_mon)]) \(tmv.tm_year + 1900) \(pad(Int(tmv.tm_hour), 2)):\(pad(Int(tmv.tm_min), 2)):\(pad(Int(tmv.tm_sec), 2)) GMT"
    }

    /// Parses an HTTP-date (`Sun, 29 Nov 2026 03:14:49 GMT`).
    public static func parseHTTPDate(_ s: String) -> Date? {
        let f = s.split(separator: " ")
        guard f.count == 6, let day = Int(f[1]), let mon = months.firstIndex(of: String(f[2])), let year = Int(f[3]) else { return nil }
        let hms = f[4].split(separator: ":").compactMap { Int($0) }
        guard hms.count == 3 else { return nil }
        return make(year: year, month: mon + 1, day: day, hour: hms[0], minute: hms[1], second: hms[2], fraction: 0, offset: 0)
    }

    /// Parses ISO 8601 / RFC 3339 date-times: `2024-01-11T15:31:26Z`, with a fraction of any length,
    /// with `+hh:mm`/`-hh:mm`, or with no offset at all (read as UTC, as Graph's innerError.date).
    public static func parseISO(_ text: String) -> Date? {
        let u = Array(text.utf8)
        func num(_ a: Int, _ n: Int) -> Int? {
            guard a + n <= u.count else { return nil }
            var v = 0
            for i in a..<(a + n) { guard u[i] >= 48 && u[i] <= 57 else { return nil }; v = v * 10 + Int(u[i] - 48) }
            return v
        }
        guard u.count >= 19, let y = num(0, 4), u[4] == 45, let mo = num(5, 2), u[7] == 45, let d = num(8, 2), u[10] == 84 || u[10] == 116 || u[10] == 32,
              let h = num(11, 2), u[13] == 58, let mi = num(14, 2), u[16] == 58, let s = num(17, 2) else { return nil }
        var i = 19
        var fraction = 0.0
        if i < u.count, u[i] == 46 {
            i += 1
            var scale = 0.1
            let start = i
            while i < u.count, u[i] >= 48, u[i] <= 57 { fraction += Double(u[i] - 48) * scale; scale /= 10; i += 1 }
            guard i > start else { return nil }
        }
        var offset = 0
        if i < u.count {
            switch u[i] {
            case 90, 122: i += 1
            case 43, 45:
                guard let oh = num(i + 1, 2), i + 3 < u.count, u[i + 3] == 58, let om = num(i + 4, 2) else { return nil }
                offset = (oh * 3600 + om * 60) * (u[i] == 45 ? -1 : 1)
                i += 6
            default: return nil
            }
        }
        guard i == u.count else { return nil }
        return make(year: y, month: mo, day: d, hour: h, minute: mi, second: s, fraction: fraction, offset: offset)
    }

    static func make(year: Int, month: Int, day: Int, hour: Int, minute: Int, second: Int, fraction: Double, offset: Int) -> Date? {
        guard (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second) else { return nil }
        var tmv = tm()
        tmv.tm_year = Int32(year - 1900)
        tmv.tm_mon = Int32(month - 1)
        tmv.tm_mday = Int32(day)
        tmv.tm_hour = Int32(hour)
        tmv.tm_min = Int32(minute)
        tmv.tm_sec = Int32(second)
        let t = timegm(&tmv)
        return Date(timeIntervalSince1970: Double(t) - Double(offset) + fraction)
    }
}

extension JSONEncoder.DateEncodingStrategy {
    /// ISO 8601 in UTC with whole seconds (`2024-01-11T15:31:26Z`), exactly as `.iso8601` writes it,
    /// without Foundation's time-zone machinery (which loads ICU into every process that uses it).
    public static var utcISO8601: Self {
        .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(UTCTime.iso(date))
        }
    }
}

extension JSONEncoder {
    /// Every JSON document KeyRoll writes for people or for itself (store files, bundles, reports,
    /// `--json`): pretty-printed, keys sorted, `/` unescaped, dates as UTC ISO 8601 seconds.
    public static func readable() -> JSONEncoder {
        let e = JSONEncoder()
        e.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        e.dateEncodingStrategy = .utcISO8601
        return e
    }
}

extension JSONDecoder {
    /// A decoder whose dates are ISO 8601 (`.utcISO8601`).
    public static func utcDates() -> JSONDecoder {
        let d = JSONDecoder()
        d.dateDecodingStrategy = .utcISO8601
        return d
    }
}

extension JSONDecoder.DateDecodingStrategy {
    /// Reads what `.iso8601` reads (and fractions and offsets too), without ICU.
    public static var utcISO8601: Self {
        .custom { decoder in
            let c = try decoder.singleValueContainer()
            let text = try c.decode(String.self)
            guard let date = UTCTime.parseISO(text) else {
                throw DecodingError.dataCorruptedError(in: c, debugDescription: "Expected an ISO 8601 date, found '\(text)'")
            }
            return date
        }
    }
}
