import EntraClient
import Foundation
import KeyRollPrimitives

/// A privileged action refused before it wrote anything, with what to do instead.
public struct PrivilegedActionRefused: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// The audit trail of one privileged action (re-bootstrap, replica retirement): the intent is
/// recorded before the privileged write, the outcome after it, so a run that dies midway leaves a
/// trail that says so. One JSON object per line, in a ``JSONLinesFile``.
struct AuditTrail {
    let path: String
    let hook: SideEffectHook
    let now: @Sendable () -> Date
    private(set) var record: [String: JSONValue]

    init(path: String, hook: SideEffectHook, now: @escaping @Sendable () -> Date, record: [String: JSONValue]) {
        self.path = path
        self.hook = hook
        self.now = now
        self.record = record
    }

    mutating func set(_ key: String, _ value: JSONValue) { record[key] = value }

    mutating func intent() throws { try write("intent") }

    /// Records the failure (best effort: the error that caused it is what the caller reports).
    mutating func failed(_ error: any Error) {
        record["error"] = .string(Redaction.scrub("\(error)"))
        try? write("failed")
    }

    mutating func completed() throws { try write("completed") }

    private mutating func write(_ phase: String) throws {
        record["phase"] = .string(phase)
        record["time"] = .string(UTCTime.iso(now()))
        try AuditLog.append(record, to: path, hook: hook)
    }
}
