import Foundation

/// Which cases of a long enumeration (every crash point with every fault, every side effect of a
/// run) this test run takes.
///
/// CI takes one part in `parts`, chosen by the day (UTC), so that `parts` consecutive days of CI
/// take every case once; the parts interleave (case `i` is in part `i % parts`), so each part
/// reaches from the first side effect to the last. An enumeration of points × faults passes
/// `point + fault` (the indices) so that one day's part holds every kind of fault, not one kind. `KEYROLL_FULL=1` takes every case of every
/// enumeration, and so does the enumeration's own variable set to `all` (`KEYROLL_CRASH_POINTS`,
/// `KEYROLL_PKCS11_CRASH_POINTS`, …). The test prints ``note(ran:of:)`` so a reader of the log
/// knows what was left for another day.
public struct CISlice: Sendable, Equatable {
    /// The part taken, `0..<parts`; `nil` takes every case.
    public let part: Int?
    public let parts: Int

    /// Every case.
    public static let all = CISlice(part: nil, parts: 1)

    public init(part: Int?, parts: Int) {
        precondition(parts >= 1 && (part.map { (0..<parts).contains($0) } ?? true), "part \(String(describing: part)) of \(parts)")
        self.part = part
        self.parts = parts
    }

    /// `KEYROLL_FULL=1`: every enumeration takes every case (and sized runs take their full size).
    public static func isFullRun(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["KEYROLL_FULL"] == "1"
    }

    /// Today's (UTC) part of `parts`, or every case when `KEYROLL_FULL=1` or `variable` is `all`.
    public static func rotating(_ parts: Int, fullWhen variable: String? = nil,
                                environment: [String: String] = ProcessInfo.processInfo.environment, on day: Date = Date()) -> CISlice {
        if isFullRun(environment) || variable.map({ environment[$0] == "all" }) == true { return .all }
        // days since 1970 in UTC: consecutive, also across New Year, and the same in every time zone
        let days = Int((day.timeIntervalSince1970 / 86_400).rounded(.down))
        return CISlice(part: ((days % parts) + parts) % parts, parts: parts)
    }

    public func includes(_ index: Int) -> Bool { part.map { index % parts == $0 } ?? true }

    /// ` (part 2 of 3 today; KEYROLL_FULL=1 takes every case)` when `ran < total`, else "".
    public func note(ran: Int, of total: Int, variable: String? = nil) -> String {
        guard let part, ran < total else { return "" }
        let full = (variable.map { "\($0)=all or " } ?? "") + "KEYROLL_FULL=1"
        return " (part \(part + 1) of \(parts) today; \(full) takes every case)"
    }
}
