import EntraCrypto
import Foundation
import KeyRollPrimitives

/// Renders a ``FleetAudit`` as a terminal table, JSON, CSV or a self-contained HTML page.
public enum AuditReport {
    public static func json(_ a: FleetAudit) -> String {
        String(decoding: (try? JSONEncoder.readable().encode(a)) ?? Data(), as: UTF8.self)
    }

    public static func csv(_ a: FleetAudit) -> String {
        var lines = ["app,app_id,object_id,managed,condition,credential_key_id,kind,display_name,start,end,finding,replica,replica_condition,key_store"]
        func q(_ s: String) -> String { s.contains(where: { ",\"\n".contains($0) }) ? "\"" + s.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : s }
        for app in a.apps {
            if app.credentials.isEmpty {
                lines.append([app.name, app.appId, app.objectId, "\(app.managed)", app.worst.rawValue, "", "", "", "", "", "", "", "", ""].map(q).joined(separator: ","))
            }
            for c in app.credentials {
                let replica = app.replicas.first { $0.keyIds.contains(c.keyId) }
                lines.append([app.name, app.appId, app.objectId, "\(app.managed)", app.worst.rawValue, c.keyId, c.kind, c.displayName ?? "",
                              c.start.map(UTCTime.iso) ?? "", c.end.map(UTCTime.iso) ?? "", c.finding.rawValue,
                              replica?.replica.rawValue ?? "", replica?.condition.rawValue ?? "", c.keyStore ?? ""].map(q).joined(separator: ","))
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

    /// Where an app's (or a replica's) rolled KeyRoll keys live: `pkcs11`, `file`, `file+pkcs11`, or `-`.
    static func keyStores(_ credentials: [CredentialAudit]) -> String {
        let kinds = Set(credentials.filter { $0.finding != .bootstrapNotRolled && $0.finding != .expiredLeftover }.compactMap(\.keyStore))
        return kinds.isEmpty ? "-" : kinds.sorted().joined(separator: "+")
    }

    public static func table(_ a: FleetAudit, limit: Int = 200) -> String {
        let header = ["APP", "APP ID", "CONDITION", "CERTS", "SECRETS", "KEY STORE", "CLIFF IN", "FINDINGS"]
        func days(_ d: Date?) -> String { d.map { String(format: "%.1fd", $0.timeIntervalSince(a.generatedAt) / 86_400) } ?? "-" }
        let rows = a.apps.prefix(limit).flatMap { app -> [[String]] in
            let certs = app.credentials.filter { $0.kind != "Password" }.count
            let secrets = app.credentials.count - certs
            let findings = Dictionary(grouping: app.credentials, by: \.finding).map { "\($0.value.count) \($0.key.rawValue)" }.sorted().joined(separator: ", ")
            let replicaRows = app.replicas.map { r -> [String] in
                ["  └ replica \(r.replica)", "", r.condition.rawValue, "\(r.keyIds.count)", "", keyStores(app.credentials.filter { r.keyIds.contains($0.keyId) }), days(r.cliff),
                 r.lastRolledAt.map { "rolled \(UTCTime.iso($0).prefix(10))" } ?? "bootstrap only"]
            }
            return [[app.name, String(app.appId.prefix(8)), app.worst.rawValue, "\(certs)", "\(secrets)", keyStores(app.credentials), days(app.cliff), findings]] + replicaRows
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

    /// The fleet report: one self-contained HTML file (see ``FleetReport``).
    public static func html(_ a: FleetAudit) -> String { FleetReport.html(a) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
