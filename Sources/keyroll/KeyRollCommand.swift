import ArgumentParser
import Foundation

@main
struct KeyRollCommand: AsyncParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "keyroll",
        abstract: "Self-service certificate rolling for Microsoft Entra ID app registrations.",
        discussion: """
            Each app rolls its own certificate credentials through Graph addKey/removeKey, so no central \
            service ever holds the apps' long-lived private keys.
            """,
        version: version,
        subcommands: [DemoCommand.self, EmulatorCommand.self, ProvisionCommand.self, ImportCommand.self, AgentCommand.self, RollCommand.self, StatusCommand.self, PlanCommand.self, AuditCommand.self, RebootstrapCommand.self, CertCommand.self, BenchCommand.self]
    )
}

/// Prints a CLI error naming what was wrong and what to do, then exits non-zero.
struct UserFacingError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
