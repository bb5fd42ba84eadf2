import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI

struct TokenEndpointEnvCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "env",
        abstract: "Print the environment an application needs to get this identity's tokens from the agent, as shell exports.",
        discussion: "eval \"$(keyroll token-endpoint env --store DIR)\" in a shell; a systemd service uses STORE/token-endpoint.env instead.")

    @OptionGroup var stores: StoreOptions

    @Option(name: .long, help: "The agent's --token-endpoint-port, when it has not run yet (default: the address the running agent wrote to STORE/token-endpoint.env).")
    var port: Int?

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        guard try store.tokenEndpointSettings() != nil else {
            throw UserFacingError("The token endpoint does not serve \(store.path); enable it first: keyroll token-endpoint enable --store \(store.path)")
        }
        // the address the agent really bound (host and port), as it wrote it; else the default one
        var url = TokenEndpointOptions.url(port: port ?? TokenEndpointOptions.defaultPort)
        if port == nil, let text = try? String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("IDENTITY_ENDPOINT=") }) {
            url = String(line.dropFirst("IDENTITY_ENDPOINT=".count))
        }
        print(try store.tokenEndpointEnvironment(endpointURL: url, export: true), terminator: "")
    }
}
