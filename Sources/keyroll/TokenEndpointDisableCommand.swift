import ArgumentParser
import Foundation
import KeyRoll
import KeyRollCLI

struct TokenEndpointDisableCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "disable",
        abstract: "Stop serving this identity's tokens: its secret and environment file are destroyed at once.")

    @OptionGroup var stores: StoreOptions

    func run() async throws {
        let store = try TokenEndpointOptions.store(stores)
        try store.disableTokenEndpoint()
        print("The token endpoint no longer serves \(try store.identity().appId): its secret is destroyed, so requests with it get 401 now.")
    }
}
