import KeyRollBackoff

/// When the next pass starts, decided from how the last one ended. Pure.
///
/// A pass that ended well names its own next wake (the soonest roll or registration check of any
/// identity, written to `next-pass`); a pass that crashed, was stopped at its deadline or wrote no
/// answer is retried after 1, 2, 4 … minutes, at most an hour — the resident agent's backoff. A
/// supervisor never gives up: an agent that stops trying is an app that will be locked out.
public struct PassSchedule: Equatable, Sendable {
    public private(set) var consecutiveFailures = 0
    /// The first retry's wait; each further failure doubles it, up to an hour.
    public let firstRetrySeconds: Double

    public init(firstRetrySeconds: Double = 60) { self.firstRetrySeconds = firstRetrySeconds }

    /// Seconds from now to the next pass. `answer` is the content of `next-pass`, nil when the pass
    /// left none.
    public mutating func afterPass(exitedCleanly: Bool, answer: [UInt8]?) -> Double {
        if exitedCleanly, let answer, let wake = Self.parseWake(answer) {
            consecutiveFailures = 0
            return wake
        }
        consecutiveFailures += 1
        return Self.backoff(consecutiveFailures, first: firstRetrySeconds)
    }

    /// first · 2^(n-1) seconds, at most 3600: KeyRoll's one backoff formula, the resident agent's.
    public static func backoff(_ failures: Int, first: Double = 60) -> Double {
        Backoff(base: max(1, first), cap: 3600).delay(attempt: failures)
    }

    /// A wake in seconds: a finite decimal number, clamped to 1 s … 1 h (a pass that asked for
    /// longer is woken within the hour anyway, as the resident agent is).
    public static func parseWake(_ bytes: [UInt8]) -> Double? {
        guard bytes.count <= 64 else { return nil }
        let text = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
        guard !text.isEmpty, let v = Double(text), v.isFinite else { return nil }
        return min(3600, max(1, v))
    }
}

extension String {
    var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\n" || c == "\r" || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\n" || c == "\r" || c == "\t" { s = s.dropLast() }
        return String(s)
    }
}
