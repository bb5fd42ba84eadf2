import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import PKCS11

/// Where the demo's first app keeps its keys: files, a PKCS#11 token named by URI, or a SoftHSM2
/// token the demo makes for itself in its temporary folder.
struct DemoKeyStore {
    let uri: PKCS11URI?
    let description: String

    /// A setting for one new identity: each store gets its own label prefix (a shared prefix would
    /// make each store's sweep destroy the others' keys as orphans).
    func setting() -> KeyStoreSetting? { uri.map { KeyStoreSetting.pkcs11($0) } }

    static func make(_ option: String, root: String) throws -> DemoKeyStore {
        switch option {
        case "file": return DemoKeyStore(uri: nil, description: "files (0600)")
        case "softhsm2": return try softHSM(root: root)
        case let uri where uri.hasPrefix("pkcs11:"): return DemoKeyStore(uri: try PKCS11URI(uri), description: "the PKCS#11 token \(try PKCS11URI(uri))")
        default: throw DemoFailure("--key-store must be file, softhsm2 or a pkcs11: URI, not '\(option.prefix(60))'")
        }
    }

    /// A fresh SoftHSM2 token (`keyroll-demo`) in `root`.
    static func softHSM(root: String) throws -> DemoKeyStore {
        let hsm = try SoftHSMSetup.make(in: root + "/softhsm", label: "keyroll-demo")
        return DemoKeyStore(uri: try PKCS11URI(hsm.uri), description: "a SoftHSM2 token (keyroll-demo, \(hsm.modulePath))")
    }

    /// After the run: the identity's key pairs in the token, and any private key material in its store.
    static func check(_ roller: Roller) throws -> (tokenKeyPairs: Int, keyFiles: [String]) {
        let store = roller.store
        var pairs = 0
        if let (token, prefix) = try store.token() {
            pairs = try token.objects(labelPrefix: prefix).filter(\.isPrivate).count
        }
        return (pairs, SoftHSMSetup.privateKeyFiles(under: store.path))
    }
}
