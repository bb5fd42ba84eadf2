import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import Logging
import ServiceLifecycle
import UnixSignals

/// An emulator served over HTTP(S) by this process until ``stop()``: the one way the lab tool,
/// the benchmarks and the tests put an emulator on a socket.
///
/// With a state folder it also writes what a client needs there, as `keyroll-lab emulator` does:
/// `emulator.json` (base URL, tenant, provisioner), `ca.pem` (with TLS) and `provisioner.pem`
/// (the seeded provisioner's key and certificate, 0600).
public final class ServedEmulator: @unchecked Sendable {
    /// The provisioner a served emulator was seeded with.
    public struct Seeded: Sendable {
        public let registration: EntraEmulator.Registration
        public let credential: SigningCredential
        public init(registration: EntraEmulator.Registration, credential: SigningCredential) {
            self.registration = registration
            self.credential = credential
        }
    }

    public let emulator: EntraEmulator
    public let port: Int
    public let baseURL: String
    public let tls: EmulatorServer.TLSMaterial?
    /// Where `emulator.json`, `ca.pem` and `provisioner.pem` are (empty when none was asked for).
    public let stateDir: String
    public let seeded: Seeded?
    let group: ServiceGroup
    let task: Task<Void, Error>

    /// Serves `emulator` on `host:port` (0 picks a free port) and returns once it listens.
    /// `shutdownSignals` (for a foreground server) stop it gracefully.
    public static func serve(_ emulator: EntraEmulator, host: String = "127.0.0.1", port: Int = 0, tls: EmulatorServer.TLSMaterial?,
                             stateDir: String? = nil, seeded: Seeded? = nil, logger: Logger = ServedEmulator.quietLogger,
                             shutdownSignals: [UnixSignal] = []) async throws -> ServedEmulator {
        let (stream, cont) = AsyncStream<Int>.makeStream()
        let app = try EmulatorServer(emulator: emulator, host: host, port: port, tls: tls, logger: logger).makeApplication { cont.yield($0) }
        let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: shutdownSignals, logger: logger))
        let task = Task { try await group.run() }
        var it = stream.makeAsyncIterator()
        guard let bound = await it.next() else {
            _ = try? await task.value
            throw LabError("the emulator's server did not start on \(host):\(port)")
        }
        let served = ServedEmulator(emulator: emulator, port: bound, baseURL: "\(tls == nil ? "http" : "https")://\(host):\(bound)", tls: tls,
                                    stateDir: stateDir ?? "", seeded: seeded, group: group, task: task)
        if let stateDir {
            do { try served.writeStateFiles(to: stateDir) } catch {
                await served.stop()
                throw error
            }
        }
        return served
    }

    /// A fresh emulator with the development tenant and a provisioner, served on 127.0.0.1, with
    /// its state files in a new temporary folder: what most tests and benchmarks want.
    public static func start(https: Bool = true, settings: EmulatorSettings = .init(), clock: ManualClock? = nil) async throws -> ServedEmulator {
        let emulator = try EntraEmulator(clock: clock, settings: settings)
        let (reg, cred) = try emulator.seedDevelopmentTenant()
        let dir = NSTemporaryDirectory() + "keyroll-served-" + UUID().uuidString.prefix(8)
        try SecureFiles.ensurePrivateDirectory(dir)
        return try await serve(emulator, tls: https ? try EmulatorServer.TLSMaterial.generate(now: Date()) : nil, stateDir: dir,
                               seeded: Seeded(registration: reg, credential: cred))
    }

    init(emulator: EntraEmulator, port: Int, baseURL: String, tls: EmulatorServer.TLSMaterial?, stateDir: String, seeded: Seeded?,
         group: ServiceGroup, task: Task<Void, Error>) {
        self.emulator = emulator
        self.port = port
        self.baseURL = baseURL
        self.tls = tls
        self.stateDir = stateDir
        self.seeded = seeded
        self.group = group
        self.task = task
    }

    /// The seeded provisioner's registration. Only for emulators started with one.
    public var provisioner: EntraEmulator.Registration { seeded!.registration }
    /// The seeded provisioner's key and certificate. Only for emulators started with one.
    public var provisionerCredential: SigningCredential { seeded!.credential }

    /// What `emulator.json` holds.
    public var info: [String: JSONValue] {
        var info: [String: JSONValue] = ["baseURL": .string(baseURL), "port": .int(Int64(port)), "graphBaseURL": .string(baseURL + "/v1.0")]
        if tls != nil, !stateDir.isEmpty { info["caFile"] = .string(stateDir + "/ca.pem") }
        if let seeded {
            info["tenantId"] = .string(seeded.registration.tenantID)
            info["provisionerClientId"] = .string(seeded.registration.appId)
            info["provisionerObjectId"] = .string(seeded.registration.objectID)
            if !stateDir.isEmpty { info["provisionerCertificatePath"] = .string(stateDir + "/provisioner.pem") }
        }
        return info
    }

    private func writeStateFiles(to dir: String) throws {
        try SecureFiles.ensurePrivateDirectory(dir)
        if let tls { try SecureFiles.writeAtomically(tls.ca.certificate.pem, to: dir + "/ca.pem", mode: 0o644) }
        if let seeded { try SecureFiles.writeAtomically(seeded.credential.combinedPEM, to: dir + "/provisioner.pem") }
        try SecureFiles.writeAtomically(JSONValue.object(info).serialized(), to: dir + "/emulator.json")
    }

    /// Stops serving and waits until the server has shut down.
    public func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }

    /// Waits until the server stops (a shutdown signal, or ``stop()`` elsewhere).
    public func waitUntilStopped() async throws { try await task.value }

    public static var quietLogger: Logger {
        var logger = Logger(label: "keyroll.lab.server")
        logger.logLevel = .warning
        return logger
    }
}

public struct LabError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
