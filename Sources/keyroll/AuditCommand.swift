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
        discussion: "Exit status is the worst finding: 0 healthy, 1 expiring or leftovers, 2 bootstrap not rolled, 3 drift, 4 past the cliff.")

    @OptionGroup var identity: ProvisionerOptions

    @Option(name: .long, help: "A certificate expiring within this many days is flagged.")
    var expiringDays: Double = 30

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
        let (provisioner, transport) = try identity.connect()
        let audit = try await transport.closing {
            try await Auditor(graph: provisioner.graph).scan(now: provisioner.graph.correctedNow, expiringWithinDays: expiringDays, managedOnly: managedOnly)
        }
        if json { print(AuditReport.json(audit)) } else if csv { print(AuditReport.csv(audit), terminator: "") } else { print(AuditReport.table(audit)) }
        if let html {
            try AuditReport.html(audit).write(toFile: html, atomically: true, encoding: .utf8)
            if !json && !csv { print("HTML report: \(html)") }
        }
        if audit.exitCode != 0 { throw ExitCode(audit.exitCode) }
    }
}
