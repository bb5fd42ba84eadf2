import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Renders a ``FleetAudit`` as a terminal table, JSON, CSV or a self-contained HTML page.
public enum AuditReport {
    public static func json(_ a: FleetAudit) -> String {
        String(decoding: (try? JSONEncoder.readable().encode(a)) ?? Data(), as: UTF8.self)
    }

    public static func csv(_ a: FleetAudit) -> String {
        var lines = ["app,app_id,object_id,managed,condition,credential_key_id,kind,display_name,start,end,finding,replica,replica_condition"]
        func q(_ s: String) -> String { s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        for app in a.apps {
            if app.credentials.isEmpty {
                lines.append([app.name, app.appId, app.objectId, "\(app.managed)", app.worst.rawValue, "", "", "", "", "", "", "", ""].map(q).joined(separator: ","))
            }
            for c in app.credentials {
                let replica = app.replicas.first { $0.keyIds.contains(c.keyId) }
                lines.append([app.name, app.appId, app.objectId, "\(app.managed)", app.worst.rawValue, c.keyId, c.kind, c.displayName ?? "",
                              c.start.map(UTCTime.iso) ?? "", c.end.map(UTCTime.iso) ?? "", c.finding.rawValue,
                              replica?.replica.rawValue ?? "", replica?.condition.rawValue ?? ""].map(q).joined(separator: ","))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    public static func summary(_ a: FleetAudit) -> String {
        let order: [AppCondition] = [.pastCliff, .drift, .bootstrapNotRolled, .expiringSoon, .leftovers, .healthy, .unmanaged]
        let counts = a.counts
        let replicas = a.apps.reduce(0) { $0 + $1.replicas.count }
        return "\(a.apps.count) applications: " + order.compactMap { c in counts[c].map { "\($0) \(c.rawValue)" } }.joined(separator: ", ")
            + (replicas == 0 ? "" : "; \(replicas) replicas, \(a.staleReplicas) stale")
    }

    public static func table(_ a: FleetAudit, limit: Int = 200) -> String {
        let header = ["APP", "APP ID", "CONDITION", "CERTS", "SECRETS", "CLIFF IN", "FINDINGS"]
        func days(_ d: Date?) -> String { d.map { String(format: "%.1fd", $0.timeIntervalSince(a.generatedAt) / 86_400) } ?? "-" }
        let rows = a.apps.prefix(limit).flatMap { app -> [[String]] in
            let certs = app.credentials.filter { $0.kind != "Password" }.count
            let secrets = app.credentials.count - certs
            let findings = Dictionary(grouping: app.credentials, by: \.finding).map { "\($0.value.count) \($0.key.rawValue)" }.sorted().joined(separator: ", ")
            let replicaRows = app.replicas.map { r -> [String] in
                ["  └ replica \(r.replica)", "", r.condition.rawValue, "\(r.keyIds.count)", "", days(r.cliff),
                 r.lastRolledAt.map { "rolled \(UTCTime.iso($0).prefix(10))" } ?? "bootstrap only"]
            }
            return [[app.name, String(app.appId.prefix(8)), app.worst.rawValue, "\(certs)", "\(secrets)", days(app.cliff), findings]] + replicaRows
        }
        let widths = header.indices.map { i in ([header] + rows).map { $0[i].count }.max() ?? 0 }
        func line(_ r: [String]) -> String { r.enumerated().map { $0.element.padding(toLength: widths[$0.offset], withPad: " ", startingAt: 0) }.joined(separator: "  ") }
        var out = [line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)
        if a.apps.count > limit { out.append("… \(a.apps.count - limit) more (use --json or --csv for all)") }
        let stale = a.apps.flatMap { app in app.staleReplicas.map { (app, $0) } }
        if !stale.isEmpty {
            out.append("")
            out.append("Stale replicas (not rolled in time: the host is probably gone). If the host is gone, retire the replica; if it still runs, re-bootstrap it (keyroll rebootstrap --replica):")
            for (app, r) in stale { out.append("  \(app.name) \(r.replica): \(r.retireCommand ?? "")") }
        }
        out.append("")
        out.append(summary(a))
        return out.joined(separator: "\n")
    }

    /// A single HTML file with inline CSS and an inline SVG expiry timeline: no network to view it.
    public static func html(_ a: FleetAudit) -> String {
        let now = a.generatedAt
        let horizon: TimeInterval = 400 * 86_400
        let shown = Array(a.apps.prefix(300))
        let rowH = 16, labelW = 220, chartW = 760, top = 30
        let height = top + rowH * max(1, shown.count) + 30
        func x(_ d: Date) -> Double { Double(labelW) + max(0, min(1, d.timeIntervalSince(now.addingTimeInterval(-30 * 86_400)) / (horizon + 30 * 86_400))) * Double(chartW) }
        let colors: [CredentialFinding: String] = [.healthy: "#2e9d5b", .bootstrapNotRolled: "#e0a100", .expiringSoon: "#f07f13", .expiredLeftover: "#9aa0a6",
                                                   .notYetValid: "#7aa7e0", .drift: "#c62828", .unmanaged: "#5f6bbf"]
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(labelW + chartW + 20)\" height=\"\(height)\" role=\"img\" aria-label=\"Certificate expiry timeline\">"
        svg += "<style>text{font:11px sans-serif;fill:#333}</style>"
        let month = DateFormatter()
        month.dateFormat = "MMM yyyy"
        month.timeZone = TimeZone(identifier: "UTC")
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let firstOfMonth = calendar.date(from: calendar.dateComponents([.year, .month], from: now))!
        for m in stride(from: 0, through: 13, by: 2) {
            let d = calendar.date(byAdding: .month, value: m, to: firstOfMonth)!
            svg += "<line x1=\"\(x(d))\" y1=\"\(top - 5)\" x2=\"\(x(d))\" y2=\"\(height - 25)\" stroke=\"#eee\"/><text x=\"\(x(d) + 2)\" y=\"\(top - 10)\">\(month.string(from: d))</text>"
        }
        for (i, app) in shown.enumerated() {
            let y = top + i * rowH
            svg += "<text x=\"4\" y=\"\(y + 11)\">\(escape(String(app.name.prefix(32))))</text>"
            for c in app.credentials {
                guard let s = c.start, let e = c.end else { continue }
                let x1 = x(s), x2 = max(x(e), x1 + 2)
                svg += "<rect class=\"cred \(c.finding.rawValue)\" x=\"\(x1)\" y=\"\(y + 3)\" width=\"\(x2 - x1)\" height=\"10\" rx=\"2\" fill=\"\(colors[c.finding]!)\"><title>\(escape(app.name)) \(escape(c.displayName ?? c.keyId)): \(c.finding.rawValue), ends \(UTCTime.iso(e))</title></rect>"
            }
            if let cliff = app.cliff { svg += "<line class=\"cliff\" x1=\"\(x(cliff))\" y1=\"\(y + 1)\" x2=\"\(x(cliff))\" y2=\"\(y + 15)\" stroke=\"#000\" stroke-width=\"2\"/>" }
        }
        svg += "<line id=\"now\" x1=\"\(x(now))\" y1=\"\(top - 5)\" x2=\"\(x(now))\" y2=\"\(height - 25)\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/><text x=\"\(x(now) + 3)\" y=\"\(height - 12)\" fill=\"#c62828\">now</text></svg>"
        let legend = CredentialFinding.allCases.map { "<span class=\"key\"><i style=\"background:\(colors[$0]!)\"></i>\($0.rawValue)</span>" }.joined(separator: " ")
        let rows = a.apps.map { app in
            let head = "<tr class=\"\(app.worst.rawValue)\"><td>\(escape(app.name))\(app.replicas.isEmpty ? "" : " <small>(\(app.replicas.count) replicas)</small>")</td><td><code>\(app.appId)</code></td><td>\(app.worst.rawValue)</td><td>\(app.credentials.count)</td><td>\(app.cliff.map { UTCTime.iso($0) } ?? "—")</td><td>\(escape(app.conditions.map(\.rawValue).joined(separator: ", ")))</td></tr>"
            let replicaRows = app.replicas.map { r in
                "<tr class=\"replica \(r.condition.rawValue)\" data-app=\"\(app.appId)\"><td class=\"indent\">└ replica \(r.replica)</td><td></td><td>\(r.condition.rawValue)</td><td>\(r.keyIds.count)</td><td>\(r.cliff.map { UTCTime.iso($0) } ?? "—")</td><td>\(r.lastRolledAt.map { "rolled " + UTCTime.iso($0) } ?? "bootstrap only")\(r.retireCommand.map { "<br><code>\(escape($0))</code>" } ?? "")</td></tr>"
            }
            return ([head] + replicaRows).joined(separator: "\n")
        }.joined(separator: "\n")
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>KeyRoll fleet audit</title>
            <style>
            body{font:14px/1.4 -apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
            h1{font-size:20px} table{border-collapse:collapse;margin-top:16px} td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left}
            tr.past-cliff td{background:#fde7e7} tr.drift td{background:#fff0f0} tr.bootstrap-not-rolled td{background:#fff8e1} tr.expiring-soon td{background:#fff3e6}
            tr.replica td{font-size:13px;color:#444;border-bottom:1px dotted #e3e3e3} td.indent{padding-left:24px} tr.replica.stale td{background:#f1f1f1;color:#777}
            .key{margin-right:12px} .key i{display:inline-block;width:12px;height:10px;margin-right:4px;border-radius:2px}
            </style></head><body>
            <h1>KeyRoll fleet audit</h1>
            <p>Generated \(UTCTime.iso(now)) · expiring means within \(Int(a.expiringWithinDays)) days · \(escape(summary(a)))</p>
            <h2>Expiry timeline</h2><p>\(legend) · black tick: the app's cliff (no valid certificate after it)</p>
            \(svg)
            <h2>Applications</h2>
            <table><thead><tr><th>Application</th><th>App ID</th><th>Condition</th><th>Credentials</th><th>Cliff</th><th>Findings</th></tr></thead><tbody>
            \(rows)
            </tbody></table></body></html>
            """
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
