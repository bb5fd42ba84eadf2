import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI

struct TokenEndpointEnableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "enable",
        abstract: "Let the agent's token endpoint serve this identity (creates its secret; restart the agent to start serving).")

    @OptionGroup var stores: StoreOptions

    @Option(name: .long, help: "A resource this identity may get tokens for, e.g. https://graph.microsoft.com (repeat; default: any resource).")
    var allowResource: [String] = []

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        for r in allowResource where r.trimmingCharacters(in: .whitespaces).isEmpty || r.hasSuffix("/.default") {
            throw ValidationError("--allow-resource \(r): give the resource (https://graph.microsoft.com), not a scope ending in /.default.")
        }
        try store.enableTokenEndpoint(TokenEndpointSettings(allowedResources: allowResource.isEmpty ? nil : allowResource))
        let id = try store.identity()
        print("The token endpoint will serve \(id.displayName ?? id.appId) (client id \(id.appId)) for "
              + (allowResource.isEmpty ? "any resource" : allowResource.joined(separator: ", ")) + ".")
        print("Restart the agent; it writes \(store.tokenEndpointEnvironmentPath) for the application's service (EnvironmentFile=).")
    }
}
