import EntraClient
import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// One JSON object per line on stderr (`ts`, `level`, `label`, `msg`, metadata), or a compact human
/// line when stderr is a terminal. Every message and metadata value passes through redaction.
public struct KeyRollLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let json: Bool

    public init(label: String, json: Bool, level: Logger.Level = .info) {
        self.label = label
        self.json = json
        self.logLevel = level
    }

    /// JSON unless stderr is a TTY (or `KEYROLL_LOG_FORMAT` says otherwise).
    public static func bootstrap(level: Logger.Level = .info) {
        let format = ProcessInfo.processInfo.environment["KEYROLL_LOG_FORMAT"]
        let json = format == "json" || (format != "human" && isatty(2) == 0)
        LoggingSystem.bootstrap { KeyRollLogHandler(label: $0, json: json, level: level) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?, source: String, file: String, function: String, line: UInt) {
        let all = metadata.merging(explicit ?? [:]) { $1 }
        let text = Redaction.scrub(message.description)
        let line: String
        if json {
            var obj: [String: String] = ["ts": UTCTime.iso(Date()), "level": level.rawValue, "label": label, "msg": text]
            for (k, v) in all { obj[k] = Redaction.scrub("\(v)") }
            let data = (try? JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        } else {
            let meta = all.sorted { $0.key < $1.key }.map { "\($0.key)=\(Redaction.scrub("\($0.value)"))" }.joined(separator: " ")
            line = "\(level.rawValue.uppercased().prefix(4)) \(label): \(text)" + (meta.isEmpty ? "" : "  [\(meta)]")
        }
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }
}

