import EntraClient
import Foundation
import KeyRollPrimitives

/// Renders the per-credential evidence view (``CredentialUsage``) of `keyroll audit --credentials`:
/// a terminal table, JSON, CSV, and a self-contained HTML `<section>` for the fleet report.
public enum CredentialReport {
    /// The view with what it was computed from.
    public struct View: Sendable, Codable {
        public var generatedAt: Date
        public var windowDays: Int
        public var retentionDays: Double
        /// Why the credential report (second source) could not be read, if it could not.
        public var reportUnavailable: UnknownReason?
        public var credentials: [CredentialUsage]

        public init(generatedAt: Date, windowDays: Int, retentionDays: Double, reportUnavailable: UnknownReason? = nil, credentials: [CredentialUsage]) {
            self.generatedAt = generatedAt
            self.windowDays = windowDays
            self.retentionDays = retentionDays
            self.reportUnavailable = reportUnavailable
            self.credentials = credentials
        }

        /// Credentials per verdict kind: `in-use`, `unused`, `unknown`.
        public var counts: [String: Int] {
            var c: [String: Int] = [:]
            for u in credentials { c[kind(u.verdict), default: 0] += 1 }
            return c
        }
    }

    static func kind(_ v: UsageVerdict) -> String {
        switch v {
        case .inUse: return "in-use"
        case .unused: return "unused"
        case .unknown: return "unknown"
        }
    }

    static func date(_ d: Date?) -> String { d.map(UTCTime.iso) ?? "" }

    public static func json(_ v: View) -> String {
        String(decoding: (try? JSONEncoder.readable().encode(v)) ?? Data(), as: UTF8.self)
    }

    public static func csv(_ v: View) -> String {
        var lines = ["app,app_id,key_id,type,origin,display_name,start,end,last_sign_in,last_sign_in_source,verdict,unused_days,unknown_reason"]
        func q(_ s: String) -> String { s.contains(where: { ",\"\n\r".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        for u in v.credentials {
            var days = "", reason = ""
            if case .unused(let d) = u.verdict { days = String(d) }
            if case .unknown(let r) = u.verdict { reason = r.rawValue }
            lines.append([u.app, u.appId, u.keyId, u.type, u.origin.rawValue, u.displayName ?? "", date(u.start), date(u.end), date(u.lastSignIn),
                          u.lastSignInSource.rawValue, kind(u.verdict), days, reason].map(q).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func summary(_ v: View) -> String {
        let c = v.counts
        var s = "\(v.credentials.count) credentials: \(c["in-use"] ?? 0) in use (within \(v.windowDays) days), \(c["unused"] ?? 0) unused, \(c["unknown"] ?? 0) unknown"
        if let r = v.reportUnavailable { s += "; the credential report could not be read (\(r.rawValue)): the sign-in log alone was used" }
        return s
    }

    public static func table(_ v: View, limit: Int = 500) -> String {
        let header = ["APP", "TYPE", "ORIGIN", "KEY ID", "NAME", "EXPIRES", "LAST SIGN-IN", "SOURCE", "VERDICT"]
        let rows = v.credentials.prefix(limit).map { u in
            [u.app, u.type, u.origin.rawValue, String(u.keyId.prefix(8)), String((u.displayName ?? "").prefix(32)),
             u.end.map { String(UTCTime.iso($0).prefix(10)) } ?? "-", u.lastSignIn.map(UTCTime.iso) ?? "-",
             u.lastSignInSource == .none ? "-" : u.lastSignInSource.rawValue, u.verdict.label]
        }
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        func line(_ r: [String]) -> String {
            r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ")
        }
        var out = [line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)
        if v.credentials.count > limit { out.append("… \(v.credentials.count - limit) more (use --json or --csv for all)") }
        let reasons = Set(v.credentials.compactMap { u -> UnknownReason? in if case .unknown(let r) = u.verdict { return r }; return nil })
        if !reasons.isEmpty {
            out.append("")
            for r in reasons.sorted(by: { $0.rawValue < $1.rawValue }) { out.append("unknown (\(r.rawValue)): \(r.advice)") }
        }
        out.append("")
        out.append(summary(v))
        return out.joined(separator: "\n")
    }

    /// The view as a self-contained `<section id="credentials">` (inline style, no script), every
    /// value escaped, to embed in the fleet report.
    public static func htmlSection(_ v: View, limit: Int = 5000) -> String {
        func e(_ s: String) -> String { AuditReport.escape(s) }
        let rows = v.credentials.prefix(limit).map { u in
            "<tr class=\"\(kind(u.verdict))\"><td>\(e(u.app))</td><td>\(e(u.type))</td><td>\(e(u.origin.rawValue))</td><td><code>\(e(u.keyId))</code></td>"
                + "<td>\(e(u.displayName ?? ""))</td><td>\(e(date(u.end)))</td><td>\(e(date(u.lastSignIn)))</td>"
                + "<td>\(e(u.lastSignInSource == .none ? "" : u.lastSignInSource.rawValue))</td><td>\(e(u.verdict.label))</td></tr>"
        }.joined(separator: "\n")
        let more = v.credentials.count > limit ? "<p>… and \(v.credentials.count - limit) more: <code>keyroll audit --credentials --csv</code>.</p>" : ""
        return """
            <section id="credentials"><h2>Credentials and their use</h2>
            <style>#credentials tr.in-use td{background:#eaf6ee} #credentials tr.unused td{background:#fff3e6} #credentials tr.unknown td{background:#f1f1f1}</style>
            <p class="meta">\(e(summary(v))). In use: a sign-in used it within \(v.windowDays) days (sign-in log, or the credential report as a second source). Unused for N days counts from the last use, or from the later of its creation and the \(e(SecretRetirementRules.formatDays(v.retentionDays))) days the log keeps.</p>
            <table class="credentials"><thead><tr><th>Application</th><th>Type</th><th>Origin</th><th>Key ID</th><th>Name</th><th>Expires</th><th>Last sign-in</th><th>Source</th><th>Verdict</th></tr></thead><tbody>
            \(rows)
            </tbody></table>\(more)
            </section>
            """
    }

    /// `page` with `section` inserted before its closing `</body>` (appended when there is none).
    public static func embed(_ section: String, in page: String) -> String {
        guard let r = page.range(of: "</body>", options: .backwards) else { return page + section }
        return page.replacingCharacters(in: r, with: section + "\n</body>")
    }
}
