import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness
import Logging
import ServiceLifecycle

struct EmulatorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "emulator",
        abstract: "Run the Entra ID emulator (token endpoint + Graph application endpoints) on 127.0.0.1.",
        discussion: """
            Seeds a development tenant (\(EntraEmulator.devTenantDomain), \(EntraEmulator.devTenantID)) and a provisioner app \
            with Application.ReadWrite.All whose certificate is written to --state-dir, then prints what a client needs. \
            With --https it uses a local CA (ca.pem in --state-dir) that issued a certificate for 127.0.0.1 and localhost.
            """
    )

    @Flag(name: .long, help: "Serve HTTPS with a generated local CA (recommended; Microsoft's clients require https).")
    var https = false

    @Option(name: .long, help: "Address to bind (loopback by default; another address needs --allow-remote).")
    var host = "127.0.0.1"

    @Flag(name: .long, help: "Allow a non-loopback --host. The control API (which can mint privileged apps and read keys) then requires the bearer token written to STATE-DIR/control-token (0600). Never expose the emulator beyond a lab network.")
    var allowRemote = false

    @Option(name: .long, help: "Port (0 picks a free one and prints it).")
    var port = 0

    @Option(name: .long, help: "SQLite file for the directory (default: in memory).")
    var data: String?

    @Option(name: .long, help: "Folder for ca.pem, the provisioner's credential and emulator.json (created 0700).")
    var stateDir = ".keyroll-emulator"

    @Flag(name: .long, help: "Do not seed the development tenant and provisioner.")
    var noSeed = false

    @Flag(name: .long, help: "Use a virtual clock (moved through POST /_emulator/clock) instead of the system clock.")
    var virtualClock = false

    @Option(name: .long, help: "Propagation delay in seconds between addKey and the token endpoint accepting the key (a or a-b).")
    var propagationDelay = "0"

    @Flag(name: .long, help: "Model Graph throttling (writes per app+tenant per 150 s, $select=keyCredentials per minute).")
    var throttling = false

    @Option(name: .long, help: "Load the development tenant with this many applications (seed-0, seed-1, …, each with a service principal) at start: a big tenant for tests and benchmarks.")
    var seedApps = 0

    @Option(name: .long, help: "Load the development tenant with this many KeyRoll-managed applications whose certificates look like a fleet's (mostly rolled, some on their bootstrap, expiring, past the cliff, drifted, or on 3 replicas): for the fleet report and its screenshots.")
    var seedFleet = 0

    func run() async throws {
        KeyRollLogHandler.bootstrap()
        let logger = Logger(label: "keyroll.emulator")
        let clock = virtualClock ? ManualClock(Date()) : nil
        var settings = EmulatorSettings()
        let delays = propagationDelay.split(separator: "-").compactMap { Double($0) }
        guard (1...2).contains(delays.count) else { throw ValidationError("--propagation-delay takes seconds, e.g. 30 or 5-120") }
        settings.propagationDelayMin = delays[0]
        settings.propagationDelayMax = delays.last!
        settings.throttling.enabled = throttling
        let loopback = SecureURL.isLoopback(host: host)
        if !loopback && !allowRemote {
            throw UserFacingError("--host \(host) is not a loopback address. The emulator's control API hands privileged apps and their keys to any caller, "
                                  + "so it binds 127.0.0.1 unless you pass --allow-remote (which also puts the control API behind a bearer token).")
        }
        try SecureFiles.ensurePrivateDirectory(stateDir)
        let store = try data.map { try DirectoryStore(path: $0) } ?? DirectoryStore()
        let emulator = try EntraEmulator(store: store, clock: clock, settings: settings, logger: logger)
        if allowRemote {
            var bytes = [UInt8](repeating: 0, count: 32)
            var rng = SystemRandomNumberGenerator()
            for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255, using: &rng) }
            let secret = Base64URL.encode(bytes)
            try SecureFiles.writeAtomically(secret + "\n", to: stateDir + "/control-token")
            emulator.controlSecret = secret
        }
        let tls = https ? try loadOrMakeTLS(now: Date()) : nil
        var seeded: ServedEmulator.Seeded?
        if !noSeed {
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            if seedApps > 0 {
                let started = Date()
                try emulator.seedApplications(tenantID: reg.tenantID, count: seedApps)
                logger.info("seeded \(seedApps) applications in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
            }
            if seedFleet > 0 {
                let started = Date()
                let made = try emulator.seedFleet(tenantID: reg.tenantID, count: seedFleet)
                logger.info("seeded a fleet of \(seedFleet) applications in \(String(format: "%.1f", Date().timeIntervalSince(started))) s: \(made)")
            }
            seeded = .init(registration: reg, credential: cred)
        }
        let served = try await ServedEmulator.serve(emulator, host: host, port: port, tls: tls, stateDir: stateDir, seeded: seeded, logger: logger,
                                                    shutdownSignals: [.sigterm, .sigint])
        let base = served.baseURL
        var lines = ["KeyRoll Entra emulator listening on \(base)",
                     "  authority (AZURE_AUTHORITY_HOST): \(base)",
                     "  token endpoint:                   \(base)/{tenant}/oauth2/v2.0/token",
                     "  Graph:                            \(base)/v1.0",
                     "  control API:                      \(base)/_emulator/  (clock, settings, faults, signins)"
                        + (allowRemote ? "; bearer token in \(stateDir)/control-token" : "")]
        if tls != nil {
            lines.append("  CA certificate:                   \(stateDir)/ca.pem  (trust it: REQUESTS_CA_BUNDLE / SSL_CERT_FILE / --ca-file)")
        }
        if let reg = seeded?.registration {
            let certPath = stateDir + "/provisioner.pem"
            lines += ["  dev tenant:                       \(EntraEmulator.devTenantDomain) (\(reg.tenantID))",
                      "  provisioner client id:            \(reg.appId)  (Application.ReadWrite.All)",
                      "  provisioner certificate:          \(certPath)",
                      "", "For azure-identity / MSAL:",
                      "  export AZURE_TENANT_ID=\(reg.tenantID)",
                      "  export AZURE_CLIENT_ID=\(reg.appId)",
                      "  export AZURE_CLIENT_CERTIFICATE_PATH=\(certPath)",
                      "  export AZURE_AUTHORITY_HOST=\(base)"]
        }
        FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        try await served.waitUntilStopped()
    }

    /// Reuses the CA and server certificate in --state-dir while valid, so clients keep trusting it.
    func loadOrMakeTLS(now: Date) throws -> EmulatorServer.TLSMaterial {
        let caPath = stateDir + "/ca.pem", caKeyPath = stateDir + "/ca-key.pem", leafPath = stateDir + "/server.pem"
        if let ca = try? SigningCredential(combinedPEM: (try? String(contentsOfFile: caKeyPath, encoding: .utf8)) ?? ""),
           let leaf = try? SigningCredential(combinedPEM: (try? String(contentsOfFile: leafPath, encoding: .utf8)) ?? ""),
           leaf.certificate.isValid(at: now.addingTimeInterval(86_400)), ca.certificate.isValid(at: now.addingTimeInterval(86_400)) {
            return .init(ca: ca, leaf: leaf)
        }
        let tls = try EmulatorServer.TLSMaterial.generate(now: now)
        try SecureFiles.writeAtomically(tls.ca.certificate.pem, to: caPath, mode: 0o644)
        try SecureFiles.writeAtomically(tls.ca.combinedPEM, to: caKeyPath)
        try SecureFiles.writeAtomically(tls.leaf.combinedPEM, to: leafPath)
        return tls
    }
}
