import EntraClient
import Foundation
import KeyRollPrimitives

/// The fleet's migration from client secrets to KeyRoll's certificates, from the audit and the
/// per-credential evidence (pure: no I/O, the view's `generatedAt` is now).
///
/// Each application is at one stage:
/// - `secret-only`: it holds client secrets and KeyRoll does not manage it (adopt it);
/// - `adopted`: KeyRoll manages it (provisioned or adopted) and it still holds client secrets
///   (retire them once the evidence allows: `keyroll secrets retire`);
/// - `migrated`: KeyRoll manages it and it holds no client secret;
/// - `other`: unmanaged, without secrets (nothing for this migration to do).
///
/// A secret *expires while in use* when its verdict is in use and it ends within
/// `expiringWithinDays`: whatever still holds it fails at that date, whether or not the app is adopted.
public struct MigrationProgress: Sendable, Equatable, Codable {
    public enum Stage: String, Sendable, Codable, CaseIterable {
        case secretOnly = "secret-only"
        case adopted
        case migrated
        case other
    }

    /// One client secret still registered, with its evidence.
    public struct Secret: Sendable, Equatable, Codable {
        public var app: String
        public var appId: String
        public var keyId: String
        public var end: Date?
        public var lastSignIn: Date?
        public var verdict: UsageVerdict
        /// In use, and it ends within the expiry horizon.
        public var expiresWhileInUse: Bool
    }

    public var generatedAt: Date
    public var stages: [Stage: Int]
    /// Apps KeyRoll adopted (tag `keyroll:adopted`).
    public var adoptedApps: Int
    public var secrets: [Secret]

    /// Secrets that end within the horizon while something still uses them.
    public var expiringWhileInUse: [Secret] { secrets.filter(\.expiresWhileInUse) }

    /// Managed apps without a secret, over all apps that hold or held one for this migration
    /// (secret-only + adopted + migrated); 1 when there is nothing to migrate.
    public var fractionMigrated: Double {
        let total = (stages[.secretOnly] ?? 0) + (stages[.adopted] ?? 0) + (stages[.migrated] ?? 0)
        return total == 0 ? 1 : Double(stages[.migrated] ?? 0) / Double(total)
    }

    public static func of(_ audit: FleetAudit, view: CredentialReport.View, expiringWithinDays: Double) -> MigrationProgress {
        let now = view.generatedAt
        let usage = Dictionary(view.credentials.map { ("\($0.appId.lowercased())/\($0.keyId.lowercased())", $0) }, uniquingKeysWith: { a, _ in a })
        var stages: [Stage: Int] = [:]
        var secrets: [Secret] = []
        var adopted = 0
        for app in audit.apps {
            let appSecrets = app.credentials.filter { $0.kind == "Password" }
            let stage: Stage = app.managed ? (appSecrets.isEmpty ? .migrated : .adopted) : (appSecrets.isEmpty ? .other : .secretOnly)
            stages[stage, default: 0] += 1
            if app.adopted { adopted += 1 }
            for s in appSecrets {
                let u = usage["\(app.appId.lowercased())/\(s.keyId.lowercased())"]
                let verdict = u?.verdict ?? .unknown(.unreadable)
                var expiring = false
                if case .inUse = verdict, let end = s.end { expiring = end.timeIntervalSince(now) < expiringWithinDays * 86_400 }
                secrets.append(Secret(app: app.name, appId: app.appId, keyId: s.keyId, end: s.end, lastSignIn: u?.lastSignIn, verdict: verdict,
                                      expiresWhileInUse: expiring))
            }
        }
        return MigrationProgress(generatedAt: now, stages: stages, adoptedApps: adopted, secrets: secrets)
    }

    /// One line for the terminal.
    public var summary: String {
        let inUse = secrets.filter { if case .inUse = $0.verdict { return true }; return false }.count
        return "Migration: \(stages[.migrated] ?? 0) apps migrated, \(stages[.adopted] ?? 0) adopted with secrets left, \(stages[.secretOnly] ?? 0) secret-only "
            + "(\(String(format: "%.0f", fractionMigrated * 100))% migrated); \(adoptedApps) adopted; \(secrets.count) secrets remaining, \(inUse) in use, "
            + "\(expiringWhileInUse.count) expiring while in use"
    }

    /// The Prometheus text format, for node_exporter's textfile collector (`keyroll audit
    /// --credentials --metrics-file /var/lib/node_exporter/textfile/keyroll-fleet.prom`): one series
    /// per remaining secret (their number is the tenant's, not a request's) and the fleet's counts.
    public var prometheusText: String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
        }
        func num(_ d: Double) -> String { d == d.rounded() && abs(d) < 1e15 ? String(Int64(d)) : String(d) }
        var out: [String] = []
        out += ["# HELP keyroll_fleet_apps Applications per migration stage (secret-only, adopted, migrated, other).", "# TYPE keyroll_fleet_apps gauge"]
        for s in Stage.allCases { out.append("keyroll_fleet_apps{stage=\"\(s.rawValue)\"} \(stages[s] ?? 0)") }
        out += ["# HELP keyroll_fleet_apps_adopted Applications KeyRoll adopted (tag keyroll:adopted).", "# TYPE keyroll_fleet_apps_adopted gauge",
                "keyroll_fleet_apps_adopted \(adoptedApps)"]
        out += ["# HELP keyroll_fleet_migrated_ratio Managed apps without a client secret, over all apps in the migration.",
                "# TYPE keyroll_fleet_migrated_ratio gauge", "keyroll_fleet_migrated_ratio \(num((fractionMigrated * 10_000).rounded() / 10_000))"]
        out += ["# HELP keyroll_fleet_secrets_remaining Client secrets still registered, by verdict (in-use, unused, unknown).",
                "# TYPE keyroll_fleet_secrets_remaining gauge"]
        for kind in ["in-use", "unused", "unknown"] {
            out.append("keyroll_fleet_secrets_remaining{verdict=\"\(kind)\"} \(secrets.filter { CredentialReport.kind($0.verdict) == kind }.count)")
        }
        out += ["# HELP keyroll_fleet_secret_in_use 1 when a sign-in used the secret within the window, else 0.", "# TYPE keyroll_fleet_secret_in_use gauge"]
        for s in secrets {
            let inUse: Bool = { if case .inUse = s.verdict { return true }; return false }()
            out.append("keyroll_fleet_secret_in_use{app=\"\(esc(s.app))\",app_id=\"\(esc(s.appId))\",key_id=\"\(esc(s.keyId))\"} \(inUse ? 1 : 0)")
        }
        out += ["# HELP keyroll_fleet_secret_expiry_timestamp_seconds When the secret ends (Unix time).", "# TYPE keyroll_fleet_secret_expiry_timestamp_seconds gauge"]
        for s in secrets {
            guard let end = s.end else { continue }
            out.append("keyroll_fleet_secret_expiry_timestamp_seconds{app=\"\(esc(s.app))\",app_id=\"\(esc(s.appId))\",key_id=\"\(esc(s.keyId))\"} \(num(end.timeIntervalSince1970.rounded()))")
        }
        out += ["# HELP keyroll_fleet_secret_last_use_timestamp_seconds The last sign-in that used the secret (Unix time), from the sign-in log or the report.",
                "# TYPE keyroll_fleet_secret_last_use_timestamp_seconds gauge"]
        for s in secrets {
            guard let last = s.lastSignIn else { continue }
            out.append("keyroll_fleet_secret_last_use_timestamp_seconds{app=\"\(esc(s.app))\",app_id=\"\(esc(s.appId))\",key_id=\"\(esc(s.keyId))\"} \(num(last.timeIntervalSince1970.rounded()))")
        }
        out += ["# HELP keyroll_fleet_audit_timestamp_seconds When this audit ran (Unix time): alert when it stops running.",
                "# TYPE keyroll_fleet_audit_timestamp_seconds gauge", "keyroll_fleet_audit_timestamp_seconds \(num(generatedAt.timeIntervalSince1970.rounded()))"]
        return out.joined(separator: "\n") + "\n"
    }

    /// A self-contained HTML `<section>` for the fleet report: the stages, and the secrets that
    /// expire while in use first.
    public var htmlSection: String {
        func e(_ s: String) -> String { AuditReport.escape(s) }
        var rows = ""
        let ordered = secrets.sorted { ($0.expiresWhileInUse ? 0 : 1, $0.end ?? .distantFuture) < ($1.expiresWhileInUse ? 0 : 1, $1.end ?? .distantFuture) }
        for s in ordered.prefix(2000) {
            rows += "<tr\(s.expiresWhileInUse ? " class=\"bad\"" : "")><td>\(e(s.app))</td><td><code>\(e(s.keyId))</code></td><td>\(e(s.end.map(UTCTime.iso) ?? "never"))</td>"
                + "<td>\(e(s.lastSignIn.map(UTCTime.iso) ?? "none seen"))</td><td>\(e(s.verdict.label))\(s.expiresWhileInUse ? " — <b>expires while in use</b>" : "")</td></tr>\n"
        }
        let stageCells = Stage.allCases.filter { $0 != .other }.map { "<li><b>\(stages[$0] ?? 0)</b> \($0.rawValue)</li>" }.joined()
        return """
            <section id="migration"><h2>Client secrets: migration</h2>
            <ul class="stages">\(stageCells)<li><b>\(adoptedApps)</b> adopted</li><li><b>\(String(format: "%.0f", fractionMigrated * 100))%</b> migrated</li>\
            <li><b>\(secrets.count)</b> secrets remaining</li><li><b>\(expiringWhileInUse.count)</b> expiring while in use</li></ul>
            <table><thead><tr><th>App</th><th>Secret keyId</th><th>Expires</th><th>Last use</th><th>Verdict</th></tr></thead><tbody>
            \(rows)</tbody></table></section>

            """
    }
}
