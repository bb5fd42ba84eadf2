import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

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
            // the application's own business permission: msgraph-sdk reads its own application object
            try server.emulator.grant([.applicationReadAll], toAppId: r.bundle.appId)
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
        // object_id / principal_id name the service principal, as in App Service (the application's object id is a KeyRoll extension)
        let principalID = try #require(try server.emulator.store.servicePrincipal(tenantID: server.provisioner.tenantID, appId: bundles[0].appId)).id
        let started = Date()
        let result = try await Task.detached {
            try Tools.python("managed_identity.py", [envFile, server.stateDir, bundles[0].applicationObjectId, principalID, bundles[1].appId, "20"])  // the roll: ~14 s of propagation, a 1 s settle
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

    /// A neighbour binds the token endpoint's port before the agent starts: the agent must not stay
    /// up without the endpoint, nor exit 0 (the service manager would not restart it and rolling
    /// would stop unseen). It exits non-zero, naming the port and what to do. `--metrics-port -1`
    /// is given as two words, as the help says.
    @Test func anAgentWhosePortIsTakenExitsNonZeroAndSaysSo() async throws {
        try Binaries.require()
        let server = try await ServedEmulator.start(https: true)
        defer { Task { await server.stop() } }
        let root = try Tools.temporaryDirectory("keyroll-squat")
        let store = try await Binaries.identityWithTokenEndpoint(server, name: "squatted", in: root)
        // the squatter
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: addr.sin_port))
        // (timeout: an agent that stays up without its endpoint is the failure this test looks for)
        let result = try await Tools.run(["/usr/bin/timeout", "60", Binaries.keyroll, "agent", "--store", store.path, "--metrics-port", "-1", "--token-endpoint-port", "\(port)"],
                                         environment: ["KEYROLL_CA_FILE": server.stateDir + "/ca.pem"])
        #expect(result.status != 0 && result.status != 124, "the agent exited \(result.status) with its port taken (124: it stayed up)")
        #expect(result.stderr.contains("\(port)") && result.stderr.contains("rotate-secret"), "\(result.stderr.suffix(800))")
        #expect(!result.stderr.contains("Unknown option"), "--metrics-port -1 parses")
    }
}
