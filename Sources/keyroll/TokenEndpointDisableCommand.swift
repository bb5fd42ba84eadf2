import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI

struct TokenEndpointDisableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disable",
        abstract: "Stop serving this identity's tokens: its secrets (current and previous) and environment file are destroyed at once.")

    @OptionGroup var stores: StoreOptions

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        try store.disableTokenEndpoint()
        print("The token endpoint no longer serves \(try store.identity().appId): its secrets are destroyed, so requests with them get 401 now.")
    }
}
