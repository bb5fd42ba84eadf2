import Foundation
import LabHarness
#if canImport(Glibc)
import Glibc
#endif

/// A PKCS#11 token for the tests, from Debian's packages, with `pkcs11-tool` (OpenSC) as the
/// independent check of what it holds:
/// - ``softHSM()``: SoftHSM2, its own token folder and configuration in a temporary folder, one
///   token (`keyroll-tests`) initialised with `softhsm2-util`;
/// - ``tpm()``: a TPM 2.0 simulator (`swtpm`) behind `tpm2-abrmd` and `libtpm2-pkcs11-1`, set up by
///   `scripts/tpm-token` (token `keyroll-tpm`).
///
/// One of each per test process: a module reads its configuration (`SOFTHSM2_CONF`,
/// `TPM2_PKCS11_*`) from the environment when it is loaded, so it is set here, for this process and
/// the child processes that get ``environment``.
public struct TestToken: Sendable, CustomStringConvertible {
    public let name: String
    public let modulePath: String
    public let label: String
    public let pin: String
    public let pinFile: String
    /// What a child process needs to see the same token.
    public let environment: [String: String]
    /// Where the token's own files are (SoftHSM) or its state folder (TPM).
    public let directory: String

    /// The RFC 7512 URI KeyRoll is given.
    public var uri: String { "pkcs11:token=\(label)?module-path=\(modulePath)&pin-source=file:\(pinFile)" }
    public var description: String { name }

    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }

    private static let softHSMToken: Result<TestToken, any Error> = Result { try makeSoftHSM() }
    private static let tpmToken: Result<TestToken, any Error> = Result { try makeTPM() }

    /// The process's SoftHSM2 token (made on first use).
    public static func softHSM() throws -> TestToken { try softHSMToken.get() }
    /// The process's TPM token (made on first use).
    public static func tpm() throws -> TestToken { try tpmToken.get() }
    /// By name: `softhsm2` or `tpm`.
    public static func named(_ name: String) throws -> TestToken { name == "tpm" ? try tpm() : try softHSM() }

    private static func makeSoftHSM() throws -> TestToken {
        let hsm = try SoftHSMSetup.make(in: try Tools.temporaryDirectory("keyroll-softhsm"), label: "keyroll-tests")
        return TestToken(name: "softhsm2", modulePath: hsm.modulePath, label: hsm.label, pin: hsm.pin, pinFile: hsm.pinFile,
                         environment: hsm.environment, directory: hsm.directory)
    }

    private static func makeTPM() throws -> TestToken {
        let directory = try Tools.temporaryDirectory("keyroll-tpm")
        let r = try Tools.run([Tools.packageRoot + "/scripts/tpm-token", directory, "start"])
        guard r.status == 0 else { throw Missing(description: "scripts/tpm-token failed (\(r.status)): \(r.stderr.suffix(1500))") }
        var exports: [String: String] = [:]
        for line in r.stdout.split(separator: "\n") where line.hasPrefix("export ") {
            let kv = line.dropFirst(7).split(separator: "=", maxSplits: 1)
            guard kv.count == 2 else { continue }
            exports[String(kv[0])] = String(kv[1]).trimmingCharacters(in: CharacterSet(charactersIn: "'"))
        }
        guard let module = exports["TPM_TOKEN_MODULE"], let label = exports["TPM_TOKEN_LABEL"], let pinFile = exports["TPM_TOKEN_PIN_FILE"] else {
            throw Missing(description: "scripts/tpm-token printed no token: \(r.stdout.suffix(800))")
        }
        let env = exports.filter { ["TPM2_PKCS11_TCTI", "TPM2_PKCS11_STORE", "DBUS_SESSION_BUS_ADDRESS"].contains($0.key) }
        for (k, v) in env { setenv(k, v, 1) }
        let pin = String(decoding: FileManager.default.contents(atPath: pinFile) ?? Data(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        stopAtExit(directory)
        return TestToken(name: "tpm", modulePath: module, label: label, pin: pin, pinFile: pinFile, environment: env, directory: directory)
    }

    /// `pkcs11-tool` on this token, logged in.
    public func tool(_ args: [String]) throws -> Tools.Result {
        try Tools.run(["pkcs11-tool", "--module", modulePath, "--token-label", label, "--login", "--pin", pin] + args, environment: environment)
    }

    /// The key objects `pkcs11-tool --list-objects` shows whose label starts with `prefix`, with
    /// the lines it prints for each.
    public func objects(labelPrefix prefix: String) throws -> [(kind: String, label: String, details: String)] {
        let r = try tool(["--list-objects"])
        guard r.status == 0 else { throw Missing(description: "pkcs11-tool --list-objects failed: \(r.stderr)") }
        var out: [(String, String, String)] = []
        var kind = "", label = "", details: [String] = []
        func flush() { if label.hasPrefix(prefix) { out.append((kind, label, details.joined(separator: "\n"))) } }
        for line in r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if !line.hasPrefix(" ") && !line.hasPrefix("\t") && line.contains("Object;") {
                flush()
                kind = line
                label = ""
                details = []
            } else if line.trimmingCharacters(in: .whitespaces).hasPrefix("label:") {
                label = line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
                details.append(line)
            } else {
                details.append(line)
            }
        }
        flush()
        return out
    }
}

/// The TPM simulator's state folder, stopped (orderly: TPM2_Shutdown first) when the test process exits.
nonisolated(unsafe) private var tpmStateToStop: String?

private func stopAtExit(_ directory: String) {
    tpmStateToStop = directory
    atexit {
        if let dir = tpmStateToStop { _ = try? Tools.run([Tools.packageRoot + "/scripts/tpm-token", dir, "stop"]) }
    }
}
