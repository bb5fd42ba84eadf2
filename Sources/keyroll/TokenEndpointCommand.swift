import ArgumentParser
import NIOCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import KeyRoll
import KeyRollCLI

/// Where the agent's managed-identity endpoint listens by default, and its path.
enum TokenEndpointOptions {
    static let defaultPort = 42356
    static let path = "/msi/token"

    static func url(port: Int) -> String { "http://127.0.0.1:\(port)\(path)" }

    /// The URL of the socket the agent really listens on (an IPv6 host in brackets).
    static func url(address: SocketAddress?) -> String {
        let host = address?.ipAddress ?? "127.0.0.1"
        return "http://\(host.contains(":") ? "[\(host)]" : host):\(address?.port ?? 0)\(path)"
    }

    /// The one store a token-endpoint command acts on.
    static func store(_ stores: StoreOptions) throws -> CredentialStore {
        let paths = try stores.paths()
        guard paths.count == 1 else { throw ValidationError("Name exactly one store (--store DIR); each identity has its own secret.") }
        let store = CredentialStore(path: paths[0])
        _ = try store.identity()
        // The agent reads the secret as the store's owner: files written by another user (root
        // through sudo) would be unreadable to it, and the identity would silently drop out.
        var st = stat()
        if stat(store.path, &st) == 0, st.st_uid != geteuid() {
            let owner = getpwuid(st.st_uid).flatMap { String(validatingCString: $0.pointee.pw_name) } ?? "#\(st.st_uid)"
            let args = CommandLine.arguments.dropFirst().joined(separator: " ")
            throw UserFacingError("\(store.path) belongs to \(owner), and this runs as user \(geteuid()); the agent could not read what it would write. Run it as the store's owner: runuser -u \(owner) -- keyroll \(args)")
        }
        return store
    }
}

struct TokenEndpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token-endpoint",
        abstract: "Serve an identity's tokens to its application over the managed-identity protocol, so the application holds no key.",
        discussion: """
            The agent (keyroll agent) serves GET http://127.0.0.1:\(TokenEndpointOptions.defaultPort)\(TokenEndpointOptions.path)?api-version=2019-08-01&resource=R \
            with the X-IDENTITY-HEADER secret, as App Service does: Azure SDKs' DefaultAzureCredential and ManagedIdentityCredential \
            use it unchanged once IDENTITY_ENDPOINT and IDENTITY_HEADER are in the application's environment. The agent writes them to \
            STORE/token-endpoint.env (systemd EnvironmentFile= format) when it starts.
            """,
        subcommands: [TokenEndpointEnableCommand.self, TokenEndpointDisableCommand.self, TokenEndpointRotateSecretCommand.self, TokenEndpointEnvCommand.self])
}
