import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Testing
import TestSupport

/// A hostile neighbour against a real `keyroll agent`: `Tests/python/abuse.py` sends malformed
/// request lines, huge URLs, invalid header bytes, floods of wrong secrets, slowloris connections
/// and 2,000 idle connections, while a legitimate client keeps asking for tokens and the agent
/// rolls its bootstrap certificate (20 s of propagation put the roll inside the abuse).
///
/// `KEYROLL_ABUSE_MODE=bench` makes each phase longer and `KEYROLL_ABUSE_REPORT=FILE` keeps the
/// figures: `scripts/bench-abuse` runs it so for docs/benchmarks.md.
@Suite(.serialized) struct TokenEndpointAbuseTests {
    @Test func aHostileNeighbourCannotStopTokensOrRollsNorGrowTheAgent() async throws {
        try Binaries.require()
        let environment = ProcessInfo.processInfo.environment
        let mode = environment["KEYROLL_ABUSE_MODE"] ?? "quick"
        var settings = EmulatorSettings()
        settings.propagationDelayMin = 20
        settings.propagationDelayMax = 20
        let server = try await ServedEmulator.start(https: true, settings: settings)
        defer { Task { await server.stop() } }
        let root = try Tools.temporaryDirectory("keyroll-abuse")
        let store = try await Binaries.identityWithTokenEndpoint(server, name: "abused", in: root)
        // the bootstrap key propagates before the agent starts; the roll's new key then takes 20 s
        try await Task.sleep(nanoseconds: 20_500_000_000)
        let boot = try store.journal().active

        let log = root + "/agent.log"
        let agent = try Binaries.start([Binaries.keyroll, "agent", "--store", store.path, "--metrics-port", "0", "--token-endpoint-port", "0"],
                                       environment: environment.merging(["KEYROLL_CA_FILE": server.stateDir + "/ca.pem", "KEYROLL_LOG_FORMAT": "json"]) { $1 }, log: log)
        defer { if agent.isRunning { agent.terminate(); agent.waitUntilExit() } }
        let logText = { (try? String(contentsOfFile: log, encoding: .utf8)) ?? "" }
        // the metrics port the agent picked, from its log
        var metricsURL: String?
        let deadline = Date().addingTimeInterval(60)
        while metricsURL == nil || !FileManager.default.fileExists(atPath: store.tokenEndpointEnvironmentPath), Date() < deadline, agent.isRunning {
            if let r = logText().range(of: #"metrics and health on (http://[0-9.]+:[0-9]+)"#, options: .regularExpression) {
                metricsURL = String(logText()[r].split(separator: " ").last!) + "/metrics"
            }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let metrics = try #require(metricsURL, "the agent did not start: \(logText().suffix(1500))")
        let started = Date()
        let result = try await Task.detached {
            try Tools.python("abuse.py", [store.tokenEndpointEnvironmentPath, metrics, "\(agent.processIdentifier)", mode])
        }.value
        let ended = Date()
        if let report = environment["KEYROLL_ABUSE_REPORT"] { try Tools.write(String(decoding: result.serialized(), as: UTF8.self), to: report) }
        let checks = try #require(result["checks"]?.objectValue)
        #expect(checks.count >= 6, "\(checks.keys.sorted())")
        for (name, c) in checks.sorted(by: { $0.key < $1.key }) {
            #expect(c["ok"] == .bool(true), "\(name): \(c["detail"]?.stringValue ?? "") \(c["error"]?.stringValue ?? "")")
        }
        // the agent rolled while it was abused, and it is still up
        #expect(agent.isRunning, "the agent died: \(logText().suffix(1500))")
        let j = try store.journal()
        let roll = try #require(j.history.first { $0.outcome == "rolled" && $0.removed == boot }, "no roll during the abuse: \(j.history) \(logText().suffix(1500))")
        #expect(roll.finishedAt > started && roll.finishedAt < ended, "the roll finished at \(roll.finishedAt), outside the abuse (\(started)–\(ended))")
        // the bounds did the closing, and say so
        let text = try await Tools.run(["/usr/bin/python3", "-c", "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())", metrics]).stdout
        #expect(text.contains("keyroll_token_endpoint_connections_closed_total{reason=\"head_timeout\"}"), "slow connections were not closed by the head deadline")
    }
}
