import Foundation
import KeyRollPrimitives

/// One identity's token-endpoint settings, kept in its store:
///
/// ```
/// token-endpoint.json             {"allowedResources": [...] | null}: present = the endpoint serves this identity
/// token-endpoint.secret           the X-IDENTITY-HEADER secret of this identity (0600, 43 base64url characters)
/// token-endpoint.previous-secret  {"secret", "acceptedUntil"}: the secret before the last rotation, accepted until then (0600)
/// token-endpoint.env              IDENTITY_ENDPOINT, IDENTITY_HEADER, AZURE_CLIENT_ID, NO_PROXY (0600; systemd EnvironmentFile=)
/// ```
///
/// Each identity has its own secret, so one application's secret never yields another's tokens.
public struct TokenEndpointSettings: Codable, Sendable, Equatable {
    /// Resources this identity may get tokens for (exact `resource` values; a trailing `/` is not
    /// significant). Nil: any resource.
    public var allowedResources: [String]?

    public init(allowedResources: [String]? = nil) { self.allowedResources = allowedResources }

    /// Whether `resource` is allowed (exact match, ignoring one trailing slash on either side).
    public func allows(_ resource: String) -> Bool {
        guard let allowed = allowedResources else { return true }
        func norm(_ s: String) -> String { s.hasSuffix("/") ? String(s.dropLast()) : s }
        return allowed.contains { norm($0) == norm(resource) }
    }
}

/// An identity's secret from before its last rotation, still accepted until `acceptedUntil` so
/// that its application can be restarted with the new one without a moment of 401s.
public struct PreviousTokenEndpointSecret: Codable, Sendable, Equatable {
    public var secret: String
    public var acceptedUntil: Date

    public init(secret: String, acceptedUntil: Date) {
        self.secret = secret
        self.acceptedUntil = acceptedUntil
    }

    /// Whether the endpoint accepts it at `now`.
    public func isAccepted(at now: Date) -> Bool { now < acceptedUntil }
}

extension CredentialStore {
    var tokenEndpointSettingsPath: String { path + "/token-endpoint.json" }
    public var tokenEndpointSecretPath: String { path + "/token-endpoint.secret" }
    public var tokenEndpointPreviousSecretPath: String { path + "/token-endpoint.previous-secret" }
    public var tokenEndpointEnvironmentPath: String { path + "/token-endpoint.env" }

    /// The identity's token-endpoint settings; nil when the endpoint does not serve it.
    public func tokenEndpointSettings() throws -> TokenEndpointSettings? {
        guard FileManager.default.fileExists(atPath: tokenEndpointSettingsPath) else { return nil }
        do { return try JSONDecoder().decode(TokenEndpointSettings.self, from: Data(try SecureFiles.readSecret(tokenEndpointSettingsPath, limit: 64 * 1024))) } catch {
            throw StoreError.corrupted("token-endpoint.json cannot be read (\(error)); run keyroll token-endpoint enable again")
        }
    }

    /// Lets the agent's token endpoint serve this identity (with a new secret, unless it has one).
    public func enableTokenEndpoint(_ settings: TokenEndpointSettings) throws {
        // never rotate implicitly: only a store without a secret gets one (an unreadable one is an error)
        if !FileManager.default.fileExists(atPath: tokenEndpointSecretPath) { try writeNewTokenEndpointSecret() } else { _ = try tokenEndpointSecret() }
        try SecureFiles.writeAtomically(Array(try JSONEncoder.readable().encode(settings)), to: tokenEndpointSettingsPath, hook: hook)
    }

    /// Stops serving this identity and destroys its secrets (current and previous) and environment file.
    public func disableTokenEndpoint() throws {
        for file in [tokenEndpointSettingsPath, tokenEndpointSecretPath, tokenEndpointPreviousSecretPath, tokenEndpointEnvironmentPath]
        where FileManager.default.fileExists(atPath: file) {
            try SecureFiles.shred(file, hook: hook)
        }
    }

    /// The current secret, read from its private file.
    public func tokenEndpointSecret() throws -> String {
        let text = String(decoding: try SecureFiles.readSecret(tokenEndpointSecretPath, limit: 1024), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count >= 32 else { throw StoreError.corrupted("token-endpoint.secret is too short; run keyroll token-endpoint rotate-secret") }
        return text
    }

    /// The secret from before the last rotation, whether or not it is still accepted; nil when there is none.
    public func tokenEndpointPreviousSecret() throws -> PreviousTokenEndpointSecret? {
        guard FileManager.default.fileExists(atPath: tokenEndpointPreviousSecretPath) else { return nil }
        do {
            return try JSONDecoder.utcDates().decode(PreviousTokenEndpointSecret.self, from: Data(try SecureFiles.readSecret(tokenEndpointPreviousSecretPath, limit: 4096)))
        } catch {
            throw StoreError.corrupted("token-endpoint.previous-secret cannot be read (\(error)); run keyroll token-endpoint rotate-secret --overlap-minutes 0")
        }
    }

    /// How long a rotated-out secret is accepted by default: time to restart the application.
    public static let defaultTokenEndpointSecretOverlap: TimeInterval = 3600

    /// Replaces the secret with 256 fresh random bits. The old one stays accepted until `now +
    /// overlap` (kept in `token-endpoint.previous-secret`, replacing any older one), so the
    /// application keeps working until it is restarted with the new environment file. With an
    /// overlap of 0 (a leaked secret) no secret but the new one is accepted from now on.
    /// Returns the new secret and until when the old one is accepted (nil: it no longer is).
    @discardableResult
    public func rotateTokenEndpointSecret(overlap: TimeInterval, now: Date) throws -> (secret: String, previousAcceptedUntil: Date?) {
        var until: Date?
        // the previous secret first: a crash before the new one is written leaves the old secret
        // current (and also previous), never unaccepted
        if overlap > 0, let old = try? tokenEndpointSecret() {
            // whole seconds, as the file records it
            let end = Date(timeIntervalSince1970: now.addingTimeInterval(overlap).timeIntervalSince1970.rounded(.down))
            let previous = PreviousTokenEndpointSecret(secret: old, acceptedUntil: end)
            try SecureFiles.writeAtomically(Array(try JSONEncoder.readable().encode(previous)), to: tokenEndpointPreviousSecretPath, hook: hook)
            until = end
        } else {
            try SecureFiles.shred(tokenEndpointPreviousSecretPath, hook: hook)
        }
        let secret = try writeNewTokenEndpointSecret()
        return (secret, until)
    }

    /// Writes a new current secret of 256 fresh random bits.
    @discardableResult
    func writeNewTokenEndpointSecret() throws -> String {
        var rng = SystemRandomNumberGenerator()
        let secret = Base64URL.encode((0..<32).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try SecureFiles.writeAtomically(secret + "\n", to: tokenEndpointSecretPath, hook: hook)
        return secret
    }

    /// The lines an application's environment needs to get this identity's tokens from an
    /// endpoint at `endpointURL`: systemd `EnvironmentFile=` syntax (and, with `export`, a shell's).
    public func tokenEndpointEnvironment(endpointURL: String, export: Bool = false) throws -> String {
        let id = try identity()
        let prefix = export ? "export " : ""
        // The endpoint's own host, bracketless and bracketed for IPv6, in both spellings: Python's
        // requests and urllib read `no_proxy` first, others `NO_PROXY`. An application with a proxy
        // must keep these in its own list (systemd's EnvironmentFile= replaces Environment=).
        let bypass = Self.noProxyHosts(for: endpointURL).joined(separator: ",")
        return [("IDENTITY_ENDPOINT", endpointURL), ("IDENTITY_HEADER", try tokenEndpointSecret()), ("AZURE_CLIENT_ID", id.appId),
                ("NO_PROXY", bypass), ("no_proxy", bypass)]
            .map { "\(prefix)\($0.0)=\($0.1)" }.joined(separator: "\n") + "\n"
    }

    /// The hosts a proxy must not see for the endpoint at `url`: its own host (IPv6 both with and
    /// without brackets), then `127.0.0.1` and `localhost`.
    public static func noProxyHosts(for url: String) -> [String] {
        var hosts: [String] = []
        if let rest = url.range(of: "://").map({ url[$0.upperBound...] }) {
            let authority = rest.prefix { $0 != "/" }
            if authority.hasPrefix("["), let close = authority.firstIndex(of: "]") {
                let inner = String(authority[authority.index(after: authority.startIndex)..<close])
                hosts += [inner, "[\(inner)]"]
            } else if let host = authority.split(separator: ":").first {
                hosts.append(String(host))
            }
        }
        for h in ["127.0.0.1", "localhost"] where !hosts.contains(h) { hosts.append(h) }
        return hosts
    }

    /// Writes ``tokenEndpointEnvironment(endpointURL:export:)`` to `token-endpoint.env` (0600).
    public func writeTokenEndpointEnvironment(endpointURL: String) throws {
        try SecureFiles.writeAtomically(try tokenEndpointEnvironment(endpointURL: endpointURL), to: tokenEndpointEnvironmentPath, hook: hook)
    }
}
