import ArgumentParser
import Foundation
import KeyRollCLI

/// The lab tool: what developers and CI run, never production hosts.
@main
struct LabCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keyroll-lab",
        abstract: "KeyRoll's lab: the Entra ID emulator, the demo, and the benchmarks.",
        discussion: """
            The production tool is `keyroll` (agent, roll, status, provision, audit, …); it links none of the lab's \
            emulator, SQLite or HTTPS-server code.
            """,
        version: KeyRollVersion.current,
        subcommands: [DemoCommand.self, EmulatorCommand.self, BenchCommand.self]
    )
}
