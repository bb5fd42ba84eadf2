import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI

struct TokenEndpointRotateSecretCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rotate-secret",
        abstract: "Give this identity a new token-endpoint secret. The old one stops working at once: restart the application with the new environment file.")

    @OptionGroup var stores: StoreOptions

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        guard try store.tokenEndpointSettings() != nil else {
            throw UserFacingError("The token endpoint does not serve \(store.path); enable it first: keyroll token-endpoint enable --store \(store.path)")
        }
        try store.rotateTokenEndpointSecret()
        // keep the environment file the agent wrote in step with the secret (same endpoint URL)
        if let text = try? String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8),
           let line = text.split(separator: "\n").first(where: { $0.hasPrefix("IDENTITY_ENDPOINT=") }) {
            try store.writeTokenEndpointEnvironment(endpointURL: String(line.dropFirst("IDENTITY_ENDPOINT=".count)))
        }
        print("New secret written to \(store.tokenEndpointSecretPath); \(store.tokenEndpointEnvironmentPath) is updated. Restart the application so it loads it.")
    }
}
