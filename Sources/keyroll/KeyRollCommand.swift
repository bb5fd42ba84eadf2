import ArgumentParser
import Foundation
import KeyRollCLI

@main
struct KeyRollCommand: AsyncParsableCommand {
    static let version = KeyRollVersion.current

    static let configuration = CommandConfiguration(
        commandName: "keyroll",
        abstract: "Self-service certificate rolling for Microsoft Entra ID app registrations.",
        discussion: """
            Each app rolls its own certificate credentials through Graph addKey/removeKey, so no central \
            service ever holds the apps' long-lived private keys. The emulator, the demo and the \
            benchmarks are in the separate keyroll-lab tool.
            """,
        version: version,
        subcommands: [ImportCommand.self, AgentCommand.self, RollCommand.self, StatusCommand.self, PlanCommand.self, CertCommand.self,
                      TokenEndpointCommand.self, ProvisionCommand.self, AdoptCommand.self, AuditCommand.self, RebootstrapCommand.self, RetireCommand.self, SecretsCommand.self,
                      IdleBaselineCommand.self]
    )
}
