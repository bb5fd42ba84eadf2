import EntraClient
import Foundation
import KeyRollPrimitives
import Provisioning
import Testing
import TestSupport

/// The fleet's migration off client secrets: stages, secrets remaining, expiring while in use, and
/// the Prometheus text the alert rules read (checked by promtool, independently).
@Suite struct MigrationProgressTests {
    let w = SecretWorld()
    let day = SecretWorld.day

    /// Four apps: a legacy one (secret-only), an adopted one still holding a secret used yesterday
    /// that ends in 5 days, a migrated one, and an unmanaged one without secrets.
    func fleet() -> (FleetAudit, CredentialReport.View) {
        let now = w.now
        let legacy = Application(id: "10000000-0000-4000-8000-000000000001", appId: "a0000000-0000-4000-8000-000000000001", displayName: "legacy \"api\"",
                                 passwordCredentials: [PasswordCredential(keyId: "5e000000-0000-4000-8000-000000000001", start: now - 90 * day, end: now + 200 * day)])
        var adopted = w.app
        adopted.tags = [Provisioner.managedTag, Provisioner.adoptedTag]
        adopted.passwordCredentials = [PasswordCredential(keyId: w.secret.keyId, start: now - 300 * day, end: now + 5 * day)]
        let migrated = Application(id: "10000000-0000-4000-8000-000000000003", appId: "a0000000-0000-4000-8000-000000000003", displayName: "migrated",
                                   keyCredentials: [w.keyRoll], tags: [Provisioner.managedTag, Provisioner.adoptedTag])
        let plain = Application(id: "10000000-0000-4000-8000-000000000004", appId: "a0000000-0000-4000-8000-000000000004", displayName: "plain")
        let apps = [legacy, adopted, migrated, plain]
        let audit = FleetAudit(generatedAt: now, expiringWithinDays: 30, apps: apps.map { AuditRules.classify($0, now: now, expiringWithin: 30 * day) })
        let signIns = [w.secretUse(age: day)] + w.daily(0..<3)
        let usage = apps.flatMap { EvidenceRules.usage($0, signIns: .read(signIns), report: [], now: now, windowDays: 14, retentionDays: 30) }
        return (audit, CredentialReport.View(generatedAt: now, windowDays: 14, retentionDays: 30, credentials: usage))
    }

    @Test func stagesSecretsAndWhatExpiresWhileInUse() {
        let (audit, view) = fleet()
        let p = MigrationProgress.of(audit, view: view, expiringWithinDays: 30)
        #expect(p.stages == [.secretOnly: 1, .adopted: 1, .migrated: 1, .other: 1])
        #expect(p.adoptedApps == 2)
        #expect(p.secrets.count == 2)
        #expect(p.expiringWhileInUse.map(\.keyId) == [w.secret.keyId], "used yesterday, ends in 5 days")
        #expect(p.secrets.first { $0.keyId == "5e000000-0000-4000-8000-000000000001" }?.verdict == .unused(days: 30))
        #expect(abs(p.fractionMigrated - 1.0 / 3.0) < 1e-9)
        #expect(p.summary.contains("1 apps migrated") && p.summary.contains("1 expiring while in use"), "\(p.summary)")
        // the same secret, unused: not expiring *while in use*
        let quiet = CredentialReport.View(generatedAt: view.generatedAt, windowDays: 14, retentionDays: 30,
                                          credentials: view.credentials.map { var u = $0; u.verdict = .unused(days: 20); return u })
        #expect(MigrationProgress.of(audit, view: quiet, expiringWithinDays: 30).expiringWhileInUse.isEmpty)
    }

    @Test func thePrometheusTextIsValidAndCarriesEverySecret() async throws {
        let (audit, view) = fleet()
        let text = MigrationProgress.of(audit, view: view, expiringWithinDays: 30).prometheusText
        #expect(text.contains("keyroll_fleet_apps{stage=\"secret-only\"} 1"))
        #expect(text.contains("keyroll_fleet_secret_in_use{app=\"orders\",app_id=\"\(w.appId)\",key_id=\"\(w.secret.keyId)\"} 1"))
        #expect(text.contains("app=\"legacy \\\"api\\\"\""), "label values are escaped")
        #expect(text.contains("keyroll_fleet_secret_last_use_timestamp_seconds{app=\"orders\""))
        #expect(text.contains("keyroll_fleet_secret_expiry_timestamp_seconds{app=\"orders\",app_id=\"\(w.appId)\",key_id=\"\(w.secret.keyId)\"} \(Int64((w.now.timeIntervalSince1970 + 5 * day).rounded()))"))
        // promtool, an independent parser, accepts it
        guard let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"].first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            Issue.record("promtool is not installed (apt-get install prometheus; scripts/test installs it)")
            return
        }
        let dir = try Tools.temporaryDirectory("keyroll-fleet-metrics")
        try Tools.write(text, to: dir + "/fleet.prom")
        let check = try await Tools.run(["/bin/sh", "-c", "\(promtool) check metrics < \(dir)/fleet.prom"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
    }
}
