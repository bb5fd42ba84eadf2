import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives
import Provisioning

/// The one way the lab wires KeyRoll's clients to an emulator in the same process: the transport,
/// the endpoints, and the clock and sleeper (a virtual clock's sleeps advance it instantly).
public struct LabClients: Sendable {
    public let transport: InProcessTransport
    public let endpoints: EntraEndpoints
    public let clock: any WallClock
    public let sleeper: any Sleeper

    /// Clients of `emulator` in tenant `tenantID`; `base` stands in for the host they think they call.
    public init(emulator: EntraEmulator, base: String = "https://login.emulator.test", tenantID: String) {
        transport = InProcessTransport(emulator: emulator, baseURL: base)
        endpoints = EntraEndpoints(authorityHost: base, tenant: tenantID, graphBaseURL: base + "/v1.0")
        if let manual = emulator.clock {
            clock = manual
            sleeper = ClockAdvancingSleeper(clock: manual)
        } else {
            clock = SystemClock()
            sleeper = TaskSleeper()
        }
    }

    /// A Graph client signing in as `appId` with `credential`.
    public func graph(as appId: String, _ credential: SigningCredential, retry: RetryPolicy = .init()) -> GraphClient {
        GraphClient.signingIn(as: appId, with: .certificate(credential), endpoints: endpoints, transport: transport, clock: clock, sleeper: sleeper, retry: retry)
    }

    /// A provisioner signing in as `appId` (an app with Application.ReadWrite.All) with `credential`.
    public func provisioner(as appId: String, _ credential: SigningCredential, retry: RetryPolicy = .init()) -> Provisioner {
        Provisioner(graph: graph(as: appId, credential, retry: retry), clock: clock)
    }
}
