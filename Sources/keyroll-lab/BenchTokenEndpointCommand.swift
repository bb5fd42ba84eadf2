import ArgumentParser
import EntraClient
import EntraCrypto
import Foundation
import KeyRoll
import KeyRollCLI
import KeyRollPrimitives
import LabHarness

extension BenchCommand {
    /// Latency of the agent's managed-identity endpoint, as an application sees it, next to the
    /// client-credentials request the application would otherwise make itself.
    struct TokenEndpointLatency: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "token-endpoint",
            abstract: "Token-serving latency (p50/p99) of a real keyroll agent's managed-identity endpoint, cached and uncached, next to a direct client-credentials request.")

        @Option(name: .long, help: "Requests per figure.")
        var requests = 200

        @Flag(name: .long, help: "One JSON object per figure.")
        var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            let keyroll = try BenchCommand.keyrollPath()
            try await BenchEmulator.serving { emu in
                let store = CredentialStore(path: emu.dir + "/store")
                try Roller.importBundle(try BootstrapBundle.decode(try SecureFiles.read(try await emu.bundle("bench-keyless"))), into: store, now: Date())
                try store.enableTokenEndpoint(TokenEndpointSettings())
                let bootstrap = try store.journal().active
                let agent = Process()
                agent.executableURL = URL(fileURLWithPath: keyroll)
                agent.arguments = ["agent", "--store", store.path, "--metrics-port=-1", "--token-endpoint-port=0"]
                agent.environment = ProcessInfo.processInfo.environment.merging(["KEYROLL_CA_FILE": emu.dir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]) { $1 }
                agent.standardError = FileHandle.nullDevice
                agent.standardOutput = FileHandle.nullDevice
                try agent.run()
                defer { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
                // steady state: the endpoint is up and the bootstrap certificate has been rolled
                let deadline = Date().addingTimeInterval(120)
                while Date() < deadline, agent.isRunning {
                    if FileManager.default.fileExists(atPath: store.tokenEndpointEnvironmentPath), let j = try? store.journal(), j.roll == nil, j.active != bootstrap { break }
                    try await Task.sleep(nanoseconds: 50_000_000)
                }
                guard agent.isRunning, let env = try? String(contentsOfFile: store.tokenEndpointEnvironmentPath, encoding: .utf8) else {
                    throw UserFacingError("the agent did not start its token endpoint")
                }
                let vars = Dictionary(env.split(separator: "\n").compactMap { l -> (String, String)? in
                    guard let eq = l.firstIndex(of: "=") else { return nil }
                    return (String(l[..<eq]), String(l[l.index(after: eq)...]))
                }, uniquingKeysWith: { $1 })
                guard let url = vars["IDENTITY_ENDPOINT"], let secret = vars["IDENTITY_HEADER"] else { throw UserFacingError("the environment file is incomplete") }
                let app = try AsyncHTTPTransport()
                let direct = try AsyncHTTPTransport(additionalCAPEM: try String(contentsOfFile: emu.dir + "/ca.pem", encoding: .utf8))
                defer { Task { try? await app.shutdown(); try? await direct.shutdown() } }
                func ask(_ resource: String) async throws {
                    let r = try await app.send(HTTPRequestMessage(method: "GET", url: url + "?api-version=2019-08-01&resource=" + resource,
                                                                  headers: [("X-IDENTITY-HEADER", secret), ("Metadata", "true")]), timeout: 30)
                    guard r.status == 200 else { throw UserFacingError("the token endpoint answered \(r.status)") }
                }
                try await ask("https://graph.microsoft.com")  // fills the cache
                let cached = try await BenchCommand.latencies(requests) { _ in try await ask("https://graph.microsoft.com") }
                let run = UUID().uuidString.prefix(8)
                let uncached = try await BenchCommand.latencies(requests) { i in try await ask("api://bench-\(run)-\(i)") }
                // what the application would do itself: sign an assertion, ask Entra
                let endpoints = EntraEndpoints(authorityHost: emu.base, tenant: emu.registration.tenantID, graphBaseURL: emu.base + "/v1.0")
                let tokens = TokenProvider(endpoints: endpoints, clientID: emu.registration.appId, transport: direct)
                let ownKey = try await BenchCommand.latencies(requests) { i in
                    _ = try await tokens.probe(credential: .certificate(emu.credential), scope: "api://direct-\(run)-\(i)/.default")
                }
                let command = "keyroll-lab bench token-endpoint --requests \(requests)"
                for (name, v, bound) in [("token endpoint, cached, p50", cached.p50, ownKey.p50), ("token endpoint, cached, p99", cached.p99, ownKey.p99),
                                         ("token endpoint, uncached (Entra asked), p50", uncached.p50, ownKey.p50),
                                         ("token endpoint, uncached (Entra asked), p99", uncached.p99, ownKey.p99)] {
                    Figure(name: name, value: v, unit: "ms", bound: bound, boundName: "the app's own client-credentials request (\(name.hasSuffix("p50") ? "p50" : "p99"))",
                           command: command).print(json: json)
                }
                Figure(name: "direct client-credentials request (assertion + HTTPS to the emulator), p50", value: ownKey.p50, unit: "ms", bound: nil, boundName: nil, command: command).print(json: json)
                Figure(name: "direct client-credentials request (assertion + HTTPS to the emulator), p99", value: ownKey.p99, unit: "ms", bound: nil, boundName: nil, command: command).print(json: json)
            }
        }
    }
}
