import ArgumentParser
import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollCLI
import KeyRollPrimitives
import LabHarness

extension BenchCommand {
    /// Does the emulator stay as fast at 100,000 apps as at 1,000? Each figure's bound is the same
    /// figure at the smallest size in the same run; the goal is a flat line (ratio ≤ 2×).
    struct Tenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "tenant",
            abstract: "Latency (p50/p99) of a filtered lookup, a page of 999, a token request and an addKey, and RSS, as a tenant grows.")

        @Option(name: .long, parsing: .upToNextOption, help: "Tenant sizes (applications), ascending.")
        var sizes: [Int] = [1000, 10_000, 100_000]

        @Option(name: .long, help: "Requests per figure and size.")
        var requests = 200

        @Flag(name: .long, help: "One JSON object per figure.")
        var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            let dir = NSTemporaryDirectory() + "keyroll-bench-tenant-\(getpid())"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let emulator = try EntraEmulator(store: try DirectoryStore(path: dir + "/tenant.sqlite"))
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            let base = "https://bench.emulator.test"
            let tokenEndpoint = "\(base)/\(reg.tenantID)/oauth2/v2.0/token"
            func call(_ method: String, _ target: String, token: String? = nil, body: [UInt8] = [], form: Bool = false) async -> EmulatorResponse {
                var h: [String: String] = ["content-type": form ? "application/x-www-form-urlencoded" : "application/json"]
                if let token { h["authorization"] = "Bearer \(token)" }
                return await emulator.handle(EmulatorRequest(method: method, target: target, headers: h, body: body, baseURL: base))
            }
            func tokenFor(_ appId: String, _ c: SigningCredential) async throws -> String {
                let a = try ClientAssertion.make(clientID: appId, tokenEndpoint: tokenEndpoint, credential: c, now: emulator.now)
                let form = FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", appId), ("scope", "https://graph.microsoft.com/.default"),
                                                ("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", a)])
                let r = await call("POST", "/\(reg.tenantID)/oauth2/v2.0/token", body: Array(form.utf8), form: true)
                guard r.status == 200, let t = r.json?["access_token"]?.stringValue else { throw UserFacingError("token refused: \(r.status)") }
                return t
            }
            func timed(_ n: Int, _ body: (Int) async throws -> Void) async throws -> (p50: Double, p99: Double) { try await BenchCommand.latencies(n, body) }
            let admin = try await tokenFor(reg.appId, cred)
            var first: [String: Double] = [:]
            var seeded = 0
            var rng = SystemRandomNumberGenerator()
            for size in sizes.sorted() {
                let t0 = BenchCommand.now()
                try emulator.seedApplications(tenantID: reg.tenantID, count: size - seeded, prefix: "seed-", start: seeded)
                let seedRate = Double(size - seeded) / (BenchCommand.now() - t0)
                seeded = size
                let lookup = try await timed(requests) { _ in
                    let r = await call("GET", "/v1.0/applications?$filter=displayName%20eq%20'seed-\(Int.random(in: 0..<size, using: &rng))'", token: admin)
                    guard r.status == 200, r.json?["value"]?.arrayValue?.count == 1 else { throw UserFacingError("lookup failed: \(r.status)") }
                }
                let page = try await timed(max(10, requests / 10)) { _ in
                    let skip = Base64URL.encode(Array(String(Int.random(in: 0..<max(1, size - 999), using: &rng)).utf8))
                    let r = await call("GET", "/v1.0/applications?$top=999&$select=id,displayName&$skiptoken=\(skip)", token: admin)
                    guard r.status == 200, (r.json?["value"]?.arrayValue?.count ?? 0) > 0 else { throw UserFacingError("page failed: \(r.status)") }
                }
                let tokens = try await timed(requests) { _ in _ = try await tokenFor(reg.appId, cred) }
                // addKey: one app with a bootstrap certificate, pre-made certificates (keygen is not what is measured)
                let boot = try SigningCredential.generate(subject: .init(commonName: "boot"), notBefore: emulator.now.addingTimeInterval(-300),
                                                          notAfter: emulator.now.addingTimeInterval(86_400))
                let app = try emulator.register(tenantID: reg.tenantID, displayName: "bench-\(size)", certificates: [boot.certificate])
                let appToken = try await tokenFor(app.appId, boot)
                let certs = try (0..<40).map { _ in
                    try SigningCredential.generate(subject: .init(commonName: "k"), notBefore: emulator.now.addingTimeInterval(-300), notAfter: emulator.now.addingTimeInterval(30 * 86_400))
                }
                let adds = try await timed(certs.count) { i in
                    let body: JSONValue = .object([
                        "keyCredential": .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(certs[i].certificate.der))]),
                        "passwordCredential": .null,
                        "proof": .string(try ProofOfPossession.make(objectID: app.objectID, credential: boot, now: emulator.now)),
                    ])
                    let r = await call("POST", "/v1.0/applications/\(app.objectID)/addKey", token: appToken, body: body.serialized())
                    guard r.status == 200 else { throw UserFacingError("addKey failed: \(r.status)") }
                }
                let rss = Self.residentMiB()
                let cmd = "keyroll-lab bench tenant --sizes \(sizes.map(String.init).joined(separator: " ")) --requests \(requests)"
                for (name, v) in [("filtered lookup p50", lookup.p50), ("filtered lookup p99", lookup.p99), ("page of 999 p50", page.p50), ("page of 999 p99", page.p99),
                                  ("token request p50", tokens.p50), ("token request p99", tokens.p99), ("addKey p50", adds.p50), ("addKey p99", adds.p99)] {
                    if first[name] == nil { first[name] = v }
                    Figure(name: "emulator \(name) at \(size) apps", value: v, unit: "ms", bound: first[name],
                           boundName: "the same at \(sizes.min() ?? size) apps", command: cmd).print(json: json)
                }
                if first["rss"] == nil { first["rss"] = rss }
                Figure(name: "emulator RSS at \(size) apps", value: rss, unit: "MiB", bound: first["rss"], boundName: "at \(sizes.min() ?? size) apps", command: cmd).print(json: json)
                Figure(name: "seeding up to \(size) apps", value: seedRate, unit: "apps/s", bound: nil, boundName: nil, command: cmd).print(json: json)
            }
        }

        static func residentMiB() -> Double {
            guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
                  let line = s.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let kb = Double(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
            return kb / 1024
        }
    }
}
