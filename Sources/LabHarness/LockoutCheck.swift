import EntraClient
import EntraCrypto
import EntraEmulator
import Foundation
import KeyRoll
import KeyRollPrimitives

/// The invariant KeyRoll exists for, checked one way everywhere (tests, crash runs, the demo): an
/// app is never locked out. At every instant its store holds at least one key that is
///
/// 1. on disk, whole and readable,
/// 2. listed by the journal,
/// 3. inside its certificate's validity,
/// 4. registered in Entra and propagated to the token endpoint,
///
/// and the credential published to the application (`current.pem`) is registered too. With
/// `signIn`, the published credential must also get a token from the emulator.
public struct LockoutCheck: Sendable {
    public let emulator: EntraEmulator
    public let base: String

    public init(emulator: EntraEmulator, base: String = "https://login.emulator.test") {
        self.emulator = emulator
        self.base = base
    }

    /// What is wrong with `store` of app `appId` now; empty when the app can sign in.
    public func violations(_ store: CredentialStore, appId: String, signIn: Bool = false) async -> [String] {
        let now = emulator.now
        guard let journal = try? store.journal() else { return ["the journal cannot be read"] }
        let registered = (try? emulator.keyCredentials(appId: appId)) ?? []
        let usable = journal.credentials.filter { c in
            store.hasCredential(c.thumbprint) && (try? store.credential(c.thumbprint)) != nil && c.notBefore <= now && now <= c.notAfter
                && registered.contains { $0.sha1.hex == c.thumbprint && $0.activeAt <= now }
        }
        var wrong: [String] = []
        if usable.isEmpty { wrong.append("locked out: no key on disk is valid, registered and propagated (journal: \(journal.credentials.map(\.thumbprint)))") }
        guard let published = store.published() else { return wrong + ["current.pem cannot be read"] }
        if !registered.contains(where: { $0.sha1 == published.certificate.sha1Thumbprint }) {
            wrong.append("the published certificate \(published.certificate.sha1Thumbprint.hex) is not registered")
        } else if signIn, !(await accepts(appId, published)) {
            wrong.append("the token endpoint refuses the published certificate")
        }
        return wrong
    }

    /// Whether the emulator's token endpoint accepts `credential` for `appId` now.
    public func accepts(_ appId: String, _ credential: SigningCredential) async -> Bool {
        guard let tenant = (try? emulator.store.application(appId: appId))??.tenantID else { return false }
        let clients = LabClients(emulator: emulator, base: base, tenantID: tenant)
        let tokens = TokenProvider(endpoints: clients.endpoints, clientID: appId, transport: clients.transport, clock: clients.clock,
                                   sleeper: clients.sleeper, retry: RetryPolicy(maxAttempts: 1))
        return (try? await tokens.token(credential: .certificate(credential))) != nil
    }
}
