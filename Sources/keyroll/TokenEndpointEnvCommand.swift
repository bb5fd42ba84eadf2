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

    @Option(name: .long, help: "The agent's --token-endpoint-port.")
    var port = TokenEndpointOptions.defaultPort

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        guard try store.tokenEndpointSettings() != nil else {
            throw UserFacingError("The token endpoint does not serve \(store.path); enable it first: keyroll token-endpoint enable --store \(store.path)")
        }
        print(try store.tokenEndpointEnvironment(endpointURL: TokenEndpointOptions.url(port: port), export: true), terminator: "")
    }
}
