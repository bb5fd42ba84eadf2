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

    @Option(name: .long, help: "The agent's token-endpoint port, when it has not served this identity yet (default: the address the agent wrote to STORE/token-endpoint.env; the packaged agent's is 424).")
    var port: Int?

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        guard try store.tokenEndpointSettings() != nil else {
            throw UserFacingError("The token endpoint does not serve \(store.path); enable it first: keyroll token-endpoint enable --store \(store.path)")
        }
        // the address the agent really serves (host and port), as it wrote it. Never a guess: an
        // application told the wrong port sends its secret to whoever holds that port.
        let url: String
        if let port {
            url = TokenEndpointOptions.url(port: port)
        } else if let text = try? String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("IDENTITY_ENDPOINT=") }) {
            url = String(line.dropFirst("IDENTITY_ENDPOINT=".count))
        } else {
            throw UserFacingError("No agent has served \(store.path) yet, so its address is not known (the agent writes \(store.tokenEndpointEnvironmentPath) when it starts serving): "
                                  + "start or restart the agent (systemctl restart keyroll-agent), or pass --port PORT, the agent's token-endpoint port (the packaged agent's is 424).")
        }
        print(try store.tokenEndpointEnvironment(endpointURL: url, export: true), terminator: "")
    }
}
