import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// Unchanged Microsoft SDK code (azure-identity sync and async, DefaultAzureCredential, MSAL
/// Python's ManagedIdentityClient, msgraph-sdk) gets tokens from a real `keyroll agent` with only
/// the environment file it wrote: no key in the application's process. The agent rolls its
/// bootstrap certificate while the SDKs stream requests.
@Suite(.serialized) struct TokenEndpointConformanceTests {
    @Test func microsoftSDKsGetTokensFromTheAgentWithoutAKey() async throws {
        try Binaries.require()
        try #require(Tools.hasMicrosoftClients, "scripts/python-env installs msal, azure-identity and msgraph-sdk")
        // propagation takes a while, so the bootstrap roll spans the SDKs' stream of requests
        var settings = EmulatorSettings()
        settings.propagationDelayMin = 8
        settings.propagationDelayMax = 8
        let server = try await ServedEmulator.start(https: true, settings: settings)
        let provisioner = LabClients(emulator: server.emulator, base: server.baseURL, tenantID: server.provisioner.tenantID)
            .provisioner(as: server.provisioner.appId, server.provisionerCredential)
        let root = try Tools.temporaryDirectory("keyroll-mi")
        var stores: [CredentialStore] = []
        var bundles: [BootstrapBundle] = []
        for name in ["mi-app", "mi-other"] {
            let r = try await provisioner.provision(name: name)
            let store = CredentialStore(path: root + "/" + name)
            try Roller.importBundle(r.bundle, into: store, now: Date())
            let enabled = try await Tools.run([Binaries.keyroll, "token-endpoint", "enable", "--store", store.path])
            #expect(enabled.status == 0, "\(enabled.stderr)")
            stores.append(store)
            bundles.append(r.bundle)
        }
        // the bootstrap keys propagate before the agent starts
        try await Task.sleep(nanoseconds: 8_500_000_000)
        let boot = try stores[0].journal().active
        let agent = Process()
        agent.executableURL = URL(fileURLWithPath: Binaries.keyroll)
        agent.arguments = ["agent", "--store", stores[0].path, "--store", stores[1].path, "--metrics-port=-1", "--token-endpoint-port", "0"]
        agent.environment = ProcessInfo.processInfo.environment.merging(["KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]) { $1 }
        let log = root + "/agent.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        agent.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        agent.standardOutput = FileHandle.nullDevice
        try agent.run()
        defer { if agent.isRunning { agent.terminate() } }
        let envFile = stores[0].tokenEndpointEnvironmentPath
        let deadline = Date().addingTimeInterval(60)
        while !FileManager.default.fileExists(atPath: envFile), Date() < deadline, agent.isRunning {
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        let early = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        try #require(FileManager.default.fileExists(atPath: envFile), "the agent wrote no environment file: \(early.suffix(1500))")
        let started = Date()
        let result = try await Task.detached {
            try Tools.python("managed_identity.py", [envFile, server.stateDir, bundles[0].applicationObjectId, bundles[1].appId, "12"])
        }.value
        let checks = try #require(result["checks"]?.objectValue)
        #expect(checks.count >= 10, "\(checks.keys.sorted())")
        for (name, c) in checks.sorted(by: { $0.key < $1.key }) {
            #expect(c["ok"] == .bool(true), "\(name): \(c["error"]?.stringValue ?? "") \(c["trace"]?.stringValue ?? "")")
        }
        // the roll happened while the SDKs were asking
        let j = try stores[0].journal()
        let roll = try #require(j.history.first { $0.outcome == "rolled" && $0.removed == boot }, "the agent did not roll the bootstrap: \(j.history)")
        #expect(roll.finishedAt > started, "the roll finished before the SDKs started (\(roll.finishedAt) ≤ \(started))")
        // logs carry no secret and no token
        agent.terminate()
        agent.waitUntilExit()
        let logText = try String(contentsOfFile: log, encoding: .utf8)
        #expect(logText.contains("token served"))
        #expect(!logText.contains(try stores[0].tokenEndpointSecret()) && !logText.contains("eyJ"), "the agent's log leaks a secret or a token")
        await server.stop()
    }
}
