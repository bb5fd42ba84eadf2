import EntraCrypto
import EntraEmulator
import Foundation
import LabHarness
import Testing
import TestSupport

/// Microsoft's own client libraries against the HTTPS emulator (Tests/python/conformance.py).
@Suite(.serialized) struct ConformanceTests {
    @Test(.enabled(if: Tools.hasMicrosoftClients, "needs msal, azure-identity, msgraph-sdk, PyJWT (scripts/test installs them)"))
    func microsoftClientsWorkAgainstTheHTTPSEmulator() async throws {
        let server = try await ServedEmulator.start(https: true)
        defer { Task { await server.stop() } }
        let result = try await Task.detached { try Tools.python("conformance.py", [server.stateDir]) }.value
        guard case .object(let checks)? = result["checks"] else { Issue.record("no checks in output"); return }
        #expect(checks.count >= 11)
        for (name, c) in checks.sorted(by: { $0.key < $1.key }) {
            #expect(c["ok"] == true, "\(name): \(c["error"]?.stringValue ?? "")\n\(c["trace"]?.stringValue ?? "")")
        }
        // the emulator saw both algorithms and the sign-in log recorded the refusals
        let log = try server.emulator.store.signIns()
        #expect(log.contains { $0.errorCode == 700027 })
        #expect(log.contains { $0.errorCode == 700024 })
        #expect(log.contains { $0.errorCode == 700023 })
        await server.stop()
    }

    @Test func plainHTTPServesAndShutsDown() async throws {
        let server = try await ServedEmulator.start(https: false)
        let r = try await Tools.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", server.baseURL + "/healthz"])
        #expect(r.stdout == "200")
        await server.stop()
        let after = try await Tools.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2", server.baseURL + "/healthz"])
        #expect(after.stdout == "000", "the port is closed after a graceful shutdown")
    }
}
