import EntraCrypto
import Foundation
import KeyRoll
import KeyRollPrimitives
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

    /// A fresh SoftHSM2 token (`keyroll-demo`) in `root`, initialised with softhsm2-util.
    static func softHSM(root: String) throws -> DemoKeyStore {
        let modules = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"]
        guard let module = modules.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw DemoFailure("--key-store softhsm2 needs SoftHSM2: sudo apt-get install softhsm2")
        }
        let dir = root + "/softhsm"
        try SecureFiles.ensurePrivateDirectory(dir)
        try SecureFiles.ensurePrivateDirectory(dir + "/tokens")
        let conf = dir + "/softhsm2.conf"
        try SecureFiles.writeAtomically("directories.tokendir = \(dir)/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", to: conf, mode: 0o600)
        setenv("SOFTHSM2_CONF", conf, 1)  // read by the module when it is loaded, below
        var rng = SystemRandomNumberGenerator()
        let pin = String(UInt64.random(in: 100_000_000...999_999_999, using: &rng))
        try SecureFiles.writeAtomically(pin + "\n", to: dir + "/user.pin", mode: 0o600)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["softhsm2-util", "--init-token", "--free", "--label", "keyroll-demo", "--so-pin", "so" + pin, "--pin", pin]
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw DemoFailure("softhsm2-util --init-token failed: \(String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))")
        }
        let uri = try PKCS11URI("pkcs11:token=keyroll-demo?module-path=\(module)&pin-source=file:\(dir)/user.pin")
        return DemoKeyStore(uri: uri, description: "a SoftHSM2 token (keyroll-demo, \(module))")
    }

    /// After the run: the identity's key pairs in the token, and any private key material in its store.
    static func check(_ roller: Roller) throws -> (tokenKeyPairs: Int, keyFiles: [String]) {
        let store = roller.store
        var pairs = 0
        if let (token, prefix) = try store.token() {
            pairs = try token.objects(labelPrefix: prefix).filter(\.isPrivate).count
        }
        var files: [String] = []
        let e = FileManager.default.enumerator(atPath: store.path)
        while let f = e?.nextObject() as? String {
            if let data = FileManager.default.contents(atPath: store.path + "/" + f), String(decoding: data, as: UTF8.self).contains("PRIVATE KEY") { files.append(f) }
        }
        return (pairs, files)
    }
}
