import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
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

    func run() async throws {
        KeyRollLogHandler.bootstrap(level: .warning)
        guard staleAfterFraction > 0.5, staleAfterFraction < 1 else {
            throw UserFacingError("--stale-after-fraction \(staleAfterFraction) must be between 0.5 and 1 (agents roll at 2/3 of a key's lifetime); 0.75 is the default.")
        }
        guard expiringDays.isFinite, expiringDays >= 0 else { throw UserFacingError("--expiring-days \(expiringDays) must be 0 or more.") }
        let (provisioner, transport) = try identity.connect()
        let audit = try await transport.closing {
            try await Auditor(graph: provisioner.graph).scan(now: provisioner.graph.correctedNow, expiringWithinDays: expiringDays, managedOnly: managedOnly,
                                                           staleAfterFraction: staleAfterFraction)
        }
        if json { print(AuditReport.json(audit)) } else if csv { print(AuditReport.csv(audit), terminator: "") } else { print(AuditReport.table(audit)) }
        if let html {
            try AuditReport.html(audit).write(toFile: html, atomically: true, encoding: .utf8)
            if !json && !csv { print("HTML report: \(html)") }
        }
        if audit.exitCode != 0 { throw ExitCode(audit.exitCode) }
    }
}
