import EntraCrypto
import EntraEmulator
import Foundation
import KeyRollPrimitives

/// An in-process emulator with a virtual clock, a tenant and helpers to speak its wire protocol
/// directly (no client library): tests of the emulator must not depend on EntraClient's logic.
public final class EmulatorRig: @unchecked Sendable {
    public let clock: ManualClock
    public let emulator: EntraEmulator
    public let tenant: Tenant
    public let base = "https://login.emulator.test"
    public static let start = Date(timeIntervalSince1970: 1_798_761_600)  // 2027-01-01T00:00:00Z

    public init(settings: EmulatorSettings = .init(), store: DirectoryStore? = nil) throws {
        clock = ManualClock(Self.start)
        emulator = try EntraEmulator(store: store, clock: clock, settings: settings)
        tenant = try emulator.createTenant(domain: "contoso.onmicrosoft.com")
    }

    public var tokenEndpoint: String { "\(base)/\(tenant.id)/oauth2/v2.0/token" }

    /// Makes a credential valid from now-5min for `days`.
    public func credential(_ cn: String = "app", days: Double = 2, notBefore: Date? = nil) throws -> SigningCredential {
        let now = clock.now()
        return try SigningCredential.generate(subject: .init(commonName: cn), notBefore: notBefore ?? now.addingTimeInterval(-300),
                                              notAfter: now.addingTimeInterval(days * 86_400))
    }

    public func request(_ method: String, _ target: String, headers: [String: String] = [:], body: [UInt8] = []) async -> EmulatorResponse {
        await emulator.handle(EmulatorRequest(method: method, target: target, headers: headers, body: body, baseURL: base))
    }

    public func tokenResponse(clientID: String, assertion: String? = nil, secret: String? = nil,
                              scope: String = "https://graph.microsoft.com/.default", tenantSegment: String? = nil,
                              extra: [(String, String)] = []) async -> EmulatorResponse {
        var form: [(String, String)] = [("grant_type", "client_credentials"), ("client_id", clientID), ("scope", scope)]
        if let assertion { form += [("client_assertion_type", ClientAssertion.assertionType), ("client_assertion", assertion)] }
        if let secret { form.append(("client_secret", secret)) }
        form += extra
        return await request("POST", "/\(tenantSegment ?? tenant.id)/oauth2/v2.0/token",
                             headers: ["content-type": "application/x-www-form-urlencoded"], body: Array(FormEncoding.encode(form).utf8))
    }

    /// A Graph token for an app signing in with `credential` (fails the test run loudly if refused).
    public func token(clientID: String, credential: SigningCredential, style: ClientAssertion.Style = .ps256) async throws -> String {
        let a = try ClientAssertion.make(clientID: clientID, tokenEndpoint: tokenEndpoint, credential: credential, now: clock.now(), style: style)
        let r = await tokenResponse(clientID: clientID, assertion: a)
        guard r.status == 200, let t = r.json?["access_token"]?.stringValue else {
            throw LabError("token refused: \(r.status) \(String(decoding: r.body, as: UTF8.self))")
        }
        return t
    }

    public func graph(_ method: String, _ path: String, token: String?, json: JSONValue? = nil) async -> EmulatorResponse {
        var h: [String: String] = [:]
        if let token { h["authorization"] = "Bearer \(token)" }
        if json != nil { h["content-type"] = "application/json" }
        return await request(method, path, headers: h, body: json?.serialized() ?? [])
    }

    /// The addKey body for `certificate`, with a proof by `signer` for application `objectID`.
    public func addKeyBody(_ certificate: X509Certificate, signer: SigningCredential, objectID: String) throws -> JSONValue {
        .object([
            "keyCredential": .object(["type": "AsymmetricX509Cert", "usage": "Verify", "key": .string(Base64.encode(certificate.der))]),
            "passwordCredential": .null,
            "proof": .string(try ProofOfPossession.make(objectID: objectID, credential: signer, now: clock.now())),
        ])
    }
}

extension EmulatorSettings {
    /// The emulator's defaults with `allowSelfRead` on: for tests and runs that opt in to an app
    /// reading its own application object (the default is off: Entra likely refuses it).
    public static var selfReading: EmulatorSettings {
        var s = EmulatorSettings()
        s.allowSelfRead = true
        return s
    }
}
