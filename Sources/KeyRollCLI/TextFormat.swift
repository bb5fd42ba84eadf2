import Foundation
import KeyRollPrimitives

/// How both command-line tools print durations, dates, tables and JSON.

public func formatDuration(_ t: TimeInterval?) -> String {
    guard let t else { return "-" }
    let sign = t < 0 ? "-" : ""
    let a = abs(t)
    if a >= 86_400 { return sign + String(format: "%.1fd", a / 86_400) }
    if a >= 3600 { return sign + String(format: "%.1fh", a / 3600) }
    if a >= 60 { return sign + "\(Int(a / 60))m" }
    return sign + "\(Int(a))s"
}

/// `2026-11-29 07:47` (UTC, minutes).
public func shortDate(_ d: Date) -> String { String(UTCTime.spaced(d).prefix(16)) }

/// A plain text table.
public func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    func line(_ r: [String]) -> String { r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
    return ([line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)).joined(separator: "\n")
}

public func jsonString<T: Encodable>(_ v: T) -> String {
    String(decoding: (try? JSONEncoder.readable().encode(v)) ?? Data(), as: UTF8.self)
}
