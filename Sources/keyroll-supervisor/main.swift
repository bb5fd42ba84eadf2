import AgentSupervisor
#if canImport(Glibc)
import Glibc
#endif

// `keyroll agent --lean` becomes this process (exec); see AgentSupervisor.Supervisor.
do {
    let options = try SupervisorOptions.parse(Array(CommandLine.arguments.dropFirst()))
    exit(Supervisor(options: options).run())
} catch {
    let message = "\(error)\n"
    _ = message.withCString { write(2, $0, strlen($0)) }
    exit(2)
}
