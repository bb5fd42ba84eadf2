import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import Provisioning

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Classify every credential of every application: healthy, bootstrap not rolled, expiring, past the cliff, drift, leftovers.",
        discussion: """
            Exit status is the worst finding: 0 healthy, 1 expiring, leftovers or a stale replica, 2 bootstrap not rolled, 3 drift, \
            4 past the cliff. An app on several hosts gets one row per replica (from the @rN marker on its keys): healthy, \
            bootstrap-not-rolled, expiring-soon, or stale (it has not rolled in time: its host is probably gone), with the \
            command that retires a stale one. The app is healthy when every live replica is.
            """)

    @OptionGroup var identity: ProvisionerOptions

    @Option(name: .long, help: "A certificate expiring within this many days is flagged.")
    var expiringDays: Double = 30

    @Option(name: .long, help: "A replica whose newest key has lived past this fraction of its lifetime is stale (agents roll at 2/3 ± 5%).")
    var staleAfterFraction: Double = AuditRules.defaultStaleAfterFraction

    @Flag(name: .long, help: "Only applications tagged keyroll:managed.")
    var managedOnly = false

    @Flag(name: .long, help: "JSON on stdout.")
    var json = false

    @Flag(name: .long, help: "CSV on stdout (one row per credential).")
    var csv = false

    @Option(name: .long, help: "Also write a self-contained HTML report with an expiry timeline to this file.")
    var html: String?

    @Flag(name: .long, help: "Per credential (secrets, foreign certificates, KeyRoll's keys): type, origin, expiry, last sign-in (sign-in log, then the credential report) and a verdict: in use, unused for N days, or unknown (and why). Needs AuditLog.Read.All.")
    var credentials = false

    @Option(name: .long, help: "With --credentials: a credential used within this many days is in use (default 14).")
    var windowDays: Int = SecretRetirementRules.defaultWindowDays

    @Option(name: .long, help: "With --credentials: days the tenant's sign-in log keeps (30 with Entra ID P1/P2).")
    var logRetentionDays: Double = 30

    @Option(name: .long, help: "With --credentials: also write the migration's metrics (secrets remaining and their last use, apps adopted, progress, secrets expiring while in use) in Prometheus text format to this file, for node_exporter's textfile collector.")
    var metricsFile: String?

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        if metricsFile != nil && !credentials { throw UserFacingError("--metrics-file needs --credentials (the migration's metrics come from the per-credential evidence).") }
        guard staleAfterFraction > 0.5, staleAfterFraction < 1 else {
            throw UserFacingError("--stale-after-fraction \(staleAfterFraction) must be between 0.5 and 1 (agents roll at 2/3 of a key's lifetime); 0.75 is the default.")
        }
        guard expiringDays.isFinite, expiringDays >= 0 else { throw UserFacingError("--expiring-days \(expiringDays) must be 0 or more.") }
        guard (1...365).contains(windowDays) else { throw UserFacingError("--window-days \(windowDays) must be between 1 and 365 (14 is the default).") }
        guard logRetentionDays.isFinite, logRetentionDays > 0, logRetentionDays <= 3650 else {
            throw UserFacingError("--log-retention-days \(logRetentionDays) must be a number of days above 0 (30 with Entra ID P1/P2).")
        }
        let (provisioner, transport) = try identity.connect()
        let (audit, view) = try await transport.closing { () async throws -> (FleetAudit, CredentialReport.View?) in
            let audit = try await Auditor(graph: provisioner.graph).scan(now: provisioner.graph.correctedNow, expiringWithinDays: expiringDays, managedOnly: managedOnly,
                                                                         staleAfterFraction: staleAfterFraction)
            guard credentials else { return (audit, nil) }
            return (audit, await EvidenceCollector(graph: provisioner.graph, windowDays: windowDays, retentionDays: logRetentionDays).view(for: audit))
        }
        let progress = view.map { MigrationProgress.of(audit, view: $0, expiringWithinDays: expiringDays) }
        if let view, let progress {
            if json { print(CredentialReport.json(view)) } else if csv { print(CredentialReport.csv(view), terminator: "") } else {
                print(CredentialReport.table(view))
                print(progress.summary)
                for s in progress.expiringWhileInUse {
                    print("  expires while in use: \(s.app) secret \(s.keyId) ends \(s.end.map(UTCTime.iso) ?? "?"), last used \(s.lastSignIn.map(UTCTime.iso) ?? "?"): adopt the app and move what uses it to KeyRoll before then")
                }
            }
            if let metricsFile {
                // written whole or not at all: the collector never reads half a file
                try SecureFiles.writeAtomically(Array(progress.prometheusText.utf8), to: metricsFile, mode: 0o644)
            }
        } else if json { print(AuditReport.json(audit)) } else if csv { print(AuditReport.csv(audit), terminator: "") } else { print(AuditReport.table(audit)) }
        if let html {
            let page = AuditReport.html(audit)
            let sections = (progress?.htmlSection ?? "") + (view.map { CredentialReport.htmlSection($0) } ?? "")
            try (sections.isEmpty ? page : CredentialReport.embed(sections, in: page)).write(toFile: html, atomically: true, encoding: .utf8)
            if !json && !csv { print("HTML report: \(html)") }
        }
        if audit.exitCode != 0 { throw ExitCode(audit.exitCode) }
    }
}
