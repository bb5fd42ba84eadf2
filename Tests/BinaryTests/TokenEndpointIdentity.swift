import Foundation
import KeyRoll
import LabHarness
import TestSupport

extension Binaries {
    /// One app provisioned on `server`, imported into a fresh store `root/name`, with its token
    /// endpoint enabled by the real `keyroll token-endpoint enable`.
    static func identityWithTokenEndpoint(_ server: ServedEmulator, name: String, in root: String) async throws -> CredentialStore {
        let provisioner = LabClients(emulator: server.emulator, base: server.baseURL, tenantID: server.provisioner.tenantID)
            .provisioner(as: server.provisioner.appId, server.provisionerCredential)
        let store = CredentialStore(path: root + "/" + name)
        try Roller.importBundle(try await provisioner.provision(name: name).bundle, into: store, now: Date())
        let enabled = try await Tools.run([keyroll, "token-endpoint", "enable", "--store", store.path])
        guard enabled.status == 0 else { throw ToolError("keyroll token-endpoint enable failed (\(enabled.status)): \(enabled.stderr)") }
        return store
    }
}

extension Binaries {
    /// Starts `argv` (an agent, possibly behind a launcher) with its stderr in `log` (created) and
    /// stdout discarded. The caller stops it.
    static func start(_ argv: [String], environment: [String: String]? = nil, log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: argv[0])
        p.arguments = Array(argv.dropFirst())
        if let environment { p.environment = environment }
        FileManager.default.createFile(atPath: log, contents: nil)
        p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return p
    }
}
