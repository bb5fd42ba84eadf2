import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import Hummingbird
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import Logging
import PKCS11
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

    @Option(name: .long, help: ArgumentHelp(
        "Where the agent generates this identity's keys: 'file' (default) or an RFC 7512 pkcs11: URI naming the module, the token and the PIN file.",
        discussion: "e.g. 'pkcs11:token=keyroll?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyroll/token.pin'. The PIN is read from that file (0600, owned by the agent's user) or from KEYROLL_PKCS11_PIN, never from the command line. Keys are generated inside the token, non-extractable; applications get tokens from the agent's token endpoint.",
        valueName: "file|pkcs11:URI"))
    var keyStore = "file"

    func run() async throws {
        // A bundle holds a private key: read it only if it is a private regular file of this user,
        // never through a link (so the shred below can never reach another file).
        let bytes: [UInt8]
        do { bytes = try SecureFiles.readSecret(bundle, limit: 256 * 1024) } catch {
            throw UserFacingError("Cannot use the bundle: \(error)")
        }
        let setting: KeyStoreSetting?
        if keyStore == "file" {
            setting = nil
        } else if keyStore.hasPrefix("pkcs11:") {
            do { setting = .pkcs11(try PKCS11URI(keyStore)) } catch let e as PKCS11URI.Invalid { throw UserFacingError("--key-store: \(e)") }
        } else {
            throw UserFacingError("--key-store '\(keyStore.prefix(80))' is neither 'file' nor a pkcs11: URI (e.g. pkcs11:token=keyroll?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/keyroll/token.pin)")
        }
        let b = try BootstrapBundle.decode(bytes)
        let journal: Journal
        do {
            journal = try Roller.importBundle(b, into: CredentialStore(path: store), now: SystemClock().now(), keyStore: setting)
        } catch let e as PKCS11URI.Invalid {
            throw UserFacingError("--key-store: \(e). Nothing was imported; the bundle is untouched")
        } catch let e as PKCS11Error {
            throw UserFacingError("--key-store: \(e). Nothing was imported; the bundle is untouched")
        }
        if !keepBundle { try SecureFiles.shred(bundle) }
        print("Imported \(b.displayName ?? b.appId)\(b.replica.map { " replica \($0)" } ?? "") (appId \(b.appId)) into \(store); active: bootstrap certificate \(journal.active).")
        if let cap = b.maximumCertificateValidity {
            print(String(format: "Entra accepts certificates of at most %.2f days for this app (its app management policy); the agent makes them within that.", cap / 86_400))
        }
        if setting != nil {
            print("Keys from the first roll on are generated inside the PKCS#11 token and never leave it: applications get tokens from the agent's token endpoint (keyroll token-endpoint env), not from current.pem.")
        }
        print("Run `keyroll roll --store \(store)` (or the agent) now: the bootstrap certificate is short-lived.")
    }
}
