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
import Provisioning
import ServiceLifecycle

extension BenchCommand {
    struct EmulatorLoad: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "emulator", abstract: "Tokens/s and addKey/s over loopback HTTP with wrk, against the RSA-2048 signing bound.")
        @Option var seconds = 5
        @Option var connections = 16
        @Option(help: "Apps the addKey load is spread over.") var apps = 100
        @Flag var json = false

        func run() async throws {
            BenchCommand.quietLogs()
            guard (try? BenchCommand.run(["wrk", "--version"])) != nil || FileManager.default.isExecutableFile(atPath: "/usr/bin/wrk") else {
                throw UserFacingError("wrk is not installed: apt-get install -y wrk")
            }
            let cores = ProcessInfo.processInfo.activeProcessorCount
            let signBound = try BenchCommand.signRate(bits: .bits2048, seconds: 2, algorithm: .rs256)
            var settings = EmulatorSettings()
            settings.maxCredentialItems = 100_000
            let emulator = try EntraEmulator(settings: settings)
            let (reg, cred) = try emulator.seedDevelopmentTenant()
            let server = try await ServedEmulator.serve(emulator, tls: nil)
            let base = server.baseURL
            let dir = NSTemporaryDirectory() + "/keyroll-wrk-\(UUID().uuidString.prefix(6))"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            // tokens: one pre-signed assertion (Entra accepts jti reuse), 1 hour lifetime
            let tokenURL = "\(base)/\(reg.tenantID)/oauth2/v2.0/token"
            let assertion = try ClientAssertion.make(clientID: reg.appId, tokenEndpoint: tokenURL, credential: cred, now: Date(), lifetime: 3600)
            let form = FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", reg.appId), ("scope", "https://graph.microsoft.com/.default"),
                                            ("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", assertion)])
            try "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.body = \"\(form)\"\n".write(toFile: dir + "/token.lua", atomically: true, encoding: .utf8)
            let tokens = try await wrk(url: tokenURL, script: dir + "/token.lua")
            Figure(name: "emulator tokens over loopback HTTP (wrk, \(connections) connections)", value: tokens, unit: "tokens/s",
                   bound: signBound * Double(cores), boundName: "RSA-2048 sign/s × \(cores) cores (one signature per token)",
                   command: "keyroll-lab bench emulator --seconds \(seconds)").print(json: json)
            // addKey: apps whose own certificate signs the proofs; one body per app
            var lua = "local bodies = {}\nlocal paths = {}\nlocal bearer = {}\n"
            let now = Date()
            for i in 0..<apps {
                let c = try SigningCredential.generate(subject: .init(commonName: "w\(i)"), notBefore: now.addingTimeInterval(-300), notAfter: now.addingTimeInterval(86_400))
                let r = try emulator.register(tenantID: reg.tenantID, displayName: "wrk-\(i)", certificates: [c.certificate])
                let proof = try ProofOfPossession.make(objectID: r.objectID, credential: c, now: now)
                let body = JSONValue.object(["keyCredential": .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(c.certificate.der))]),
                                             "proof": .string(proof)])
                let bearer = try JSONValue.parse(await emulator.handle(EmulatorRequest(method: "POST", target: "/\(reg.tenantID)/oauth2/v2.0/token",
                    headers: ["content-type": "application/x-www-form-urlencoded"],
                    body: Array(FormEncoding.encode([("grant_type", "client_credentials"), ("client_id", r.appId), ("scope", "https://graph.microsoft.com/.default"),
                                                     ("client_assertion_type", ClientAssertion.assertionType),
                                                     ("client_assertion", try ClientAssertion.make(clientID: r.appId, tokenEndpoint: tokenURL, credential: c, now: now))]).utf8),
                    baseURL: base)).body)["access_token"]?.stringValue ?? ""
                lua += "bodies[\(i + 1)] = [[\(String(decoding: body.serialized(), as: UTF8.self))]]\npaths[\(i + 1)] = \"/v1.0/applications/\(r.objectID)/addKey\"\nbearer[\(i + 1)] = \"\(bearer)\"\n"
            }
            lua += "local n = 0\nrequest = function()\n  n = n % #bodies + 1\n  return wrk.format(\"POST\", paths[n], {[\"Content-Type\"] = \"application/json\", [\"Authorization\"] = \"Bearer \" .. bearer[n]}, bodies[n])\nend\n"
            try lua.write(toFile: dir + "/addkey.lua", atomically: true, encoding: .utf8)
            let before = try emulator.store.counts()["key_credential"] ?? 0
            let adds = try await wrk(url: base + "/", script: dir + "/addkey.lua")
            let added = (try emulator.store.counts()["key_credential"] ?? 0) - before
            Figure(name: "emulator addKey over loopback HTTP (wrk, \(connections) connections, \(apps) apps; \(added) keys stored)", value: adds, unit: "addKey/s",
                   bound: signBound * Double(cores), boundName: "RSA-2048 sign/s × \(cores) cores",
                   command: "keyroll-lab bench emulator --seconds \(seconds) --apps \(apps)").print(json: json)
            await server.stop()
        }

        /// Requests/s of non-error answers, from wrk's summary.
        /// Blocking subprocess calls run on a Dispatch thread: one of Swift's few cooperative threads
        /// blocked in waitUntilExit would starve the in-process server being measured.
        func wrk(url: String, script: String) async throws -> Double {
            let argv = ["wrk", "-t1", "-c\(connections)", "-d\(seconds)s", "--latency", "-s", script, url]
            let out = try await Background.run { try BenchCommand.run(argv) }
            var total = 0.0, non2xx = 0.0, seconds = Double(self.seconds)
            for line in out.split(separator: "\n") {
                let t = line.trimmingCharacters(in: .whitespaces)
                if t.contains("requests in") {
                    total = Double(t.split(separator: " ")[0]) ?? 0
                    if let r = t.range(of: "requests in ") { seconds = Double(t[r.upperBound...].split(separator: "s")[0]) ?? seconds }
                }
                if t.hasPrefix("Non-2xx or 3xx responses:") { non2xx = Double(t.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) ?? 0 }
            }
            guard total > 0 else { throw UserFacingError("wrk reported no requests:\n\(out)") }
            if non2xx > 0 { FileHandle.standardError.write(Data("warning: \(Int(non2xx)) error responses not counted\n".utf8)) }
            return (total - non2xx) / seconds
        }
    }
}
