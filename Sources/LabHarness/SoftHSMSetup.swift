import Foundation
import KeyRollPrimitives
#if canImport(Glibc)
import Glibc
#endif

/// A SoftHSM2 token of its own, for the lab and the tests: a token folder and configuration in
/// `directory`, one token initialised with `softhsm2-util`, the user PIN in a 0600 file.
/// SoftHSM reads its configuration (`SOFTHSM2_CONF`) when the module is loaded, so making one sets
/// it for this process; ``environment`` passes it to child processes.
public struct SoftHSMSetup: Sendable {
    public let directory: String
    public let modulePath: String
    public let label: String
    public let pin: String
    public let pinFile: String
    public let configuration: String

    /// The RFC 7512 URI KeyRoll is given.
    public var uri: String { "pkcs11:token=\(label)?module-path=\(modulePath)&pin-source=file:\(pinFile)" }
    /// What a child process needs to see the same token.
    public var environment: [String: String] { ["SOFTHSM2_CONF": configuration] }

    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    public static let modulePaths = ["/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
                                     "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"]

    public static func make(in directory: String, label: String) throws -> SoftHSMSetup {
        guard let module = modulePaths.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw Unavailable(description: "SoftHSM2 is not installed (no libsofthsm2.so): sudo apt-get install softhsm2 opensc")
        }
        try SecureFiles.ensurePrivateDirectory(directory)
        try SecureFiles.ensurePrivateDirectory(directory + "/tokens")
        let conf = directory + "/softhsm2.conf"
        try SecureFiles.writeAtomically("directories.tokendir = \(directory)/tokens\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                                        to: conf, mode: 0o600)
        var rng = SystemRandomNumberGenerator()
        let pin = String(UInt64.random(in: 100_000_000...999_999_999, using: &rng))
        try SecureFiles.writeAtomically(pin + "\n", to: directory + "/user.pin", mode: 0o600)
        setenv("SOFTHSM2_CONF", conf, 1)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "so" + pin, "--pin", pin]
        p.environment = ProcessInfo.processInfo.environment.merging(["SOFTHSM2_CONF": conf]) { $1 }
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        let message = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw Unavailable(description: "softhsm2-util --init-token failed: \(String(decoding: message, as: UTF8.self).prefix(500))")
        }
        return SoftHSMSetup(directory: directory, modulePath: module, label: label, pin: pin, pinFile: directory + "/user.pin", configuration: conf)
    }

    /// Files under `path` (at any depth) that hold a PEM private key: what a store whose keys live
    /// in a token must never contain.
    public static func privateKeyFiles(under path: String) -> [String] {
        let e = FileManager.default.enumerator(atPath: path)
        var found: [String] = []
        while let f = e?.nextObject() as? String {
            if let data = FileManager.default.contents(atPath: path + "/" + f), String(decoding: data, as: UTF8.self).contains("PRIVATE KEY") { found.append(f) }
        }
        return found
    }
}
