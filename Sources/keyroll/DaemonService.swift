import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import Hummingbird
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import ServiceLifecycle

/// The daemon as a ServiceLifecycle service: cancelled on graceful shutdown.
struct DaemonService: Service {
    let daemon: AgentDaemon
    func run() async throws {
        try await cancelWhenGracefulShutdown { await daemon.run() }
    }
}
