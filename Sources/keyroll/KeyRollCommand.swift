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

/// The entry point. The command line is parsed on the main thread, synchronously, and a run that
/// only prints (`--version`, `--help`, `help SUBCOMMAND`, a usage error) ends there, before Swift's
/// concurrency runtime starts a thread or parks the main thread in `dispatch_main` (whose
/// `pthread_exit` makes glibc load libgcc_s to unwind it). A command runs as swift-argument-parser's
/// async `main` runs it: its `run()` on the global executor, an error printed and turned into the exit
/// status by the same `exit(withError:)`, status 0 when `run()` returns.
@main
enum KeyRollEntry {
    /// A parsed command handed to the task that runs it (parsed on this thread, used only there).
    struct Parsed: @unchecked Sendable { var command: any AsyncParsableCommand }

    static func main() {
        // a shell's request for completions is answered by the library's own async entry, which also
        // serves asynchronous completion functions (the synchronous parse cannot)
        if CommandLine.arguments.dropFirst().first == "---completion" {
            Task { await KeyRollCommand.main(); exit(0) }
            dispatchMain()
        }
        let command: any ParsableCommand
        do {
            command = try KeyRollCommand.parseAsRoot()
        } catch {
            KeyRollCommand.exit(withError: error)
        }
        guard let runnable = command as? any AsyncParsableCommand else {
            // `help SUBCOMMAND` and `--help` (the library's synchronous help command): nothing to start
            var printing = command
            do { try printing.run() } catch { KeyRollCommand.exit(withError: error) }
            exit(0)
        }
        let parsed = Parsed(command: runnable)
        Task {
            var command = parsed.command
            do {
                try await command.run()
            } catch {
                KeyRollCommand.exit(withError: error)
            }
            exit(0)
        }
        dispatchMain()
    }
}
