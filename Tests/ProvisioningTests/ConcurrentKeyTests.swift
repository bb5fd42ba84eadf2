import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives
import LabHarness
import Provisioning
import Testing
import TestSupport

/// A privileged PATCH replaces an application's whole keyCredentials list. The provisioner's
/// read-merge-PATCH must never re-send a list it read before an agent's addKey.
@Suite struct ConcurrentKeyTests {
    /// Answers the first PATCH of keyCredentials with a 429, after letting `meanwhile` run: as if
    /// the request had waited out Graph's throttling while an agent added a key.
    struct ThrottledOncePatch: HTTPTransport {
        let base: any HTTPTransport
        let meanwhile: @Sendable () async throws -> Void
        final class Once: @unchecked Sendable {
            let lock = NSLock()
            var fired = false
            func fire() -> Bool { lock.withLock { defer { fired = true }; return !fired } }
        }
        let once = Once()

        func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
            if request.method == "PATCH", once.fire() {
                try await meanwhile()
                let body = JSONValue.object(["error": .object(["code": "TooManyRequests", "message": "Too many requests."])]).serialized()
                return HTTPResponseMessage(status: 429, headers: [("Retry-After", "1"), ("Content-Type", "application/json")], body: body)
            }
            return try await base.send(request, timeout: timeout)
        }
    }

    @Test func aRetriedBootstrapPatchKeepsAKeyAddedDuringItsWait() async throws {
        let c = try Central()
        let r = try await c.provisioner.provision(name: "busy")
        let bootstrap = try r.bundle.signingCredential()
        let agentsNewKey = try c.rig.credential("keyroll-busy", days: 365)
        let clients = LabClients(emulator: c.rig.emulator, base: c.rig.base, tenantID: c.rig.tenant.id)
        // the app's agent adds its new key while the provisioner's PATCH waits out a 429
        let agent = clients.graph(as: r.application.appId, bootstrap)
        let transport = ThrottledOncePatch(base: clients.transport) {
            _ = try await agent.addKey(objectID: r.application.id, certificate: agentsNewKey.certificate, prover: bootstrap)
        }
        let graph = GraphClient.signingIn(as: c.provisioner.graph.tokens.clientID, with: .certificate(c.cred), endpoints: clients.endpoints,
                                          transport: transport, clock: clients.clock, sleeper: clients.sleeper)
        let provisioner = Provisioner(graph: graph, clock: clients.clock)
        let second = try await provisioner.issueBootstrap(application: r.application, validity: 2 * 86_400)
        let keys = try c.rig.emulator.keyCredentials(appId: r.application.appId)
        #expect(transport.once.fired, "the PATCH was throttled once")
        #expect(keys.contains { $0.sha1 == agentsNewKey.certificate.sha1Thumbprint }, "the agent's key, added during the wait, was dropped by the retried PATCH")
        #expect(keys.contains { $0.sha1 == bootstrap.certificate.sha1Thumbprint })
        let secondThumbprint = try second.signingCredential().certificate.sha1Thumbprint
        #expect(keys.contains { $0.sha1 == secondThumbprint })
        #expect(keys.count == 3)
    }
}
