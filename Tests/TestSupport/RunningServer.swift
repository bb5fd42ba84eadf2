import EntraCrypto
import EntraEmulator
import Foundation
import Logging
import ServiceLifecycle

/// An emulator served over HTTP(S) on 127.0.0.1 inside the test process, with the files
/// `keyroll emulator` writes (emulator.json, ca.pem, provisioner.pem) in `stateDir`.
public final class RunningServer: @unchecked Sendable {
    public let emulator: EntraEmulator
    public let stateDir: String
    public let port: Int
    public let baseURL: String
    public let provisioner: EntraEmulator.Registration
    public let provisionerCredential: SigningCredential
    public let tls: EmulatorServer.TLSMaterial?
    let group: ServiceGroup
    let task: Task<Void, Error>

    public static func start(https: Bool = true, settings: EmulatorSettings = .init(), clock: ManualClock? = nil) async throws -> RunningServer {
        let emulator = try EntraEmulator(clock: clock, settings: settings)
        let (reg, cred) = try emulator.seedDevelopmentTenant()
        let dir = try Tools.temporaryDirectory("keyroll-server")
        let tls = https ? try EmulatorServer.TLSMaterial.generate(now: Date()) : nil
        var logger = Logger(label: "test.server")
        logger.logLevel = .warning
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = try EmulatorServer(emulator: emulator, tls: tls, logger: logger).makeApplication { port in cont.yield(port) }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let task = Task { try await group.run() }
        var it = stream.makeAsyncIterator()
        guard let port = await it.next() else { throw ToolError("server did not start") }
        let base = "\(https ? "https" : "http")://127.0.0.1:\(port)"
        try Tools.write(cred.combinedPEM, to: dir + "/provisioner.pem")
        var info: [String: JSONValue] = ["baseURL": .string(base), "port": .int(Int64(port)), "tenantId": .string(reg.tenantID),
                                         "provisionerClientId": .string(reg.appId), "provisionerObjectId": .string(reg.objectID),
                                         "provisionerCertificatePath": .string(dir + "/provisioner.pem")]
        if let tls {
            try Tools.write(tls.ca.certificate.pem, to: dir + "/ca.pem")
            info["caFile"] = .string(dir + "/ca.pem")
        }
        try Data(JSONValue.object(info).serialized()).write(to: URL(fileURLWithPath: dir + "/emulator.json"))
        return RunningServer(emulator: emulator, stateDir: dir, port: port, baseURL: base, provisioner: reg, provisionerCredential: cred,
                             tls: tls, group: group, task: task)
    }

    init(emulator: EntraEmulator, stateDir: String, port: Int, baseURL: String, provisioner: EntraEmulator.Registration,
         provisionerCredential: SigningCredential, tls: EmulatorServer.TLSMaterial?, group: ServiceGroup, task: Task<Void, Error>) {
        self.emulator = emulator
        self.stateDir = stateDir
        self.port = port
        self.baseURL = baseURL
        self.provisioner = provisioner
        self.provisionerCredential = provisionerCredential
        self.tls = tls
        self.group = group
        self.task = task
    }

    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

extension Tools {
    /// True when the test Python has Microsoft's client libraries (scripts/test installs them).
    public static let hasMicrosoftClients: Bool = {
        (try? run([python, "-c", "import msal, azure.identity, msgraph, jwt"]).status) == 0
    }()
}
