import ArgumentParser
import Foundation
import KeyRollCLI

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

/// The entry point. The command line is parsed on the main thread, synchronously, so a run that
/// only prints (`--version`, `--help`, a usage error) exits before Swift's concurrency runtime starts
/// a thread, or parks the main thread (which makes glibc load libgcc_s to unwind it). A command then
/// runs as swift-argument-parser's async `main` runs it: on the global executor, the main thread
/// serving the main queue, an error printed and turned into the exit status by the same
/// `exit(withError:)`, and status 0 when `run()` returns.
@main
enum KeyRollEntry {
    /// A parsed command handed to the task that runs it (parsed on this thread, used only there).
    struct Parsed: @unchecked Sendable { var command: ParsableCommand }

    static func main() {
        let parsed: Parsed
        do {
            parsed = Parsed(command: try KeyRollCommand.parseAsRoot())
        } catch {
            KeyRollCommand.exit(withError: error)
        }
        Task {
            var command = parsed.command
            do {
                if var asyncCommand = command as? AsyncParsableCommand {
                    try await asyncCommand.run()
                } else {
                    try command.run()
                }
            } catch {
                KeyRollCommand.exit(withError: error)
            }
            exit(0)
        }
        dispatchMain()
    }
}
