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

struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Create a store from a bootstrap bundle (then the bundle file is destroyed: it holds a private key).")

    @Option(name: .long, help: "The bootstrap bundle (keyroll-bootstrap/1 JSON) from the provisioner.")
    var bundle: String

    @Option(name: .long, help: "The new store folder (created 0700; must not hold an identity yet).")
    var store: String

    @Flag(name: .long, help: "Keep the bundle file instead of overwriting and deleting it.")
    var keepBundle = false

    func run() async throws {
        // A bundle holds a private key: read it only if it is a private regular file of this user,
        // never through a link (so the shred below can never reach another file).
        let bytes: [UInt8]
        do { bytes = try SecureFiles.readSecret(bundle, limit: 256 * 1024) } catch {
            throw UserFacingError("Cannot use the bundle: \(error)")
        }
        let b = try BootstrapBundle.decode(bytes)
        let journal = try Roller.importBundle(b, into: CredentialStore(path: store), now: SystemClock().now())
        if !keepBundle { try SecureFiles.shred(bundle) }
        print("Imported \(b.displayName ?? b.appId)\(b.replica.map { " replica \($0)" } ?? "") (appId \(b.appId)) into \(store); active: bootstrap certificate \(journal.active).")
        if let cap = b.maximumCertificateValidity {
            print(String(format: "Entra accepts certificates of at most %.2f days for this app (its app management policy); the agent makes them within that.", cap / 86_400))
        }
        print("Run `keyroll roll --store \(store)` (or the agent) now: the bootstrap certificate is short-lived.")
    }
}
