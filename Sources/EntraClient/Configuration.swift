import EntraCrypto
import Foundation
import KeyRollPrimitives
import Logging

/// Where an identity signs in and which Graph it calls. Real Entra by default; any emulator by URL.
public struct EntraEndpoints: Sendable, Equatable, Codable {
    /// e.g. `https://login.microsoftonline.com` (the `AZURE_AUTHORITY_HOST` convention).
    public var authorityHost: String
    /// Tenant GUID or domain.
    public var tenant: String
    /// e.g. `https://graph.microsoft.com/v1.0`.
    public var graphBaseURL: String
    /// Scope requested for Graph tokens.
    public var graphScope: String

    public init(authorityHost: String = "https://login.microsoftonline.com", tenant: String,
                graphBaseURL: String = "https://graph.microsoft.com/v1.0", graphScope: String = "https://graph.microsoft.com/.default") {
        self.authorityHost = authorityHost.hasSuffix("/") ? String(authorityHost.dropLast()) : authorityHost
        self.tenant = tenant
        self.graphBaseURL = graphBaseURL.hasSuffix("/") ? String(graphBaseURL.dropLast()) : graphBaseURL
        self.graphScope = graphScope
    }

    /// The v2.0 token endpoint, used directly (no instance or tenant discovery needed).
    public var tokenEndpoint: String { "\(authorityHost)/\(tenant)/oauth2/v2.0/token" }
}

/// How an app proves its identity at the token endpoint.
public enum ClientCredential: Sendable {
    case certificate(SigningCredential, style: ClientAssertion.Style = .ps256)
    case secret(String)

    /// Part of the token-cache key: a token minted with one credential is never served for another.
    var cacheIdentity: String {
        switch self {
        case .certificate(let c, let style): return "cert:\(c.certificate.sha256Thumbprint.hex):\(style.rawValue)"
        case .secret(let s): return "secret:" + Thumbprint.sha256(of: Array(s.utf8)).hex
        }
    }
}

/// Retry behaviour for throttling and transient failures: honour `Retry-After` (decimal seconds,
/// capped), otherwise exponential backoff with full jitter.
public struct RetryPolicy: Sendable, Equatable {
    public var maxAttempts: Int = 6
    public var baseDelay: Double = 0.5
    public var maxDelay: Double = 30
    public var maxRetryAfter: Double = 300
    public var requestTimeout: Double = 30

    public init() {}

    public init(maxAttempts: Int, baseDelay: Double = 0.5, maxDelay: Double = 30, maxRetryAfter: Double = 300, requestTimeout: Double = 30) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.maxRetryAfter = maxRetryAfter
        self.requestTimeout = requestTimeout
    }

    /// The backoff between attempts when the server names no time: from `baseDelay`, doubling, up
    /// to `maxDelay`, with full jitter.
    public var backoff: Backoff { Backoff(base: baseDelay, cap: maxDelay, jitter: .full) }

    /// Delay before attempt `attempt + 1` (attempt counts from 1): the server's `Retry-After`
    /// (capped at `maxRetryAfter`) when it sent one, the backoff otherwise.
    public func delay(attempt: Int, retryAfter: Double?, random: Double) -> Double {
        if let r = retryAfter, r >= 0 { return min(r, maxRetryAfter) }
        return backoff.delay(attempt: attempt, random: random)
    }

    /// After a failed attempt: throws `error` when it may not be retried (or the attempts are
    /// spent), otherwise logs and sleeps for the delay, so the caller tries again. The one retry
    /// step of the token provider and the Graph client.
    func pause(after error: EntraError, attempt: Int, maxAttempts: Int? = nil, sleeper: any Sleeper, logger: Logger, _ what: String,
               metadata: Logger.Metadata = [:]) async throws {
        guard error.isRetryable, attempt < (maxAttempts ?? self.maxAttempts) else { throw error }
        let delay = delay(attempt: attempt, retryAfter: error.retryAfter, random: Double.random(in: 0...1))
        logger.info("\(what) will be retried", metadata: metadata.merging(["kind": "\(error.kind.rawValue)", "status": "\(error.httpStatus ?? 0)",
                                                                          "attempt": "\(attempt)", "delay_s": "\(delay)"]) { $1 })
        try await sleeper.sleep(seconds: delay)
    }
}

/// Learns how far this machine's clock is from Entra's from response `Date` headers, so assertions
/// and proofs carry the server's notion of now.
public final class ClockOffset: @unchecked Sendable {
    private let lock = NSLock()
    private var offset: TimeInterval = 0

    public init() {}

    /// Seconds to add to the local clock.
    public var seconds: TimeInterval { lock.withLock { offset } }

    /// Records a `Date` header observed at local time `localNow`. Offsets under 5 s are HTTP-date
    /// rounding and network noise, and are ignored.
    public func observe(dateHeader: String?, localNow: Date) {
        guard let h = dateHeader, let server = UTCTime.parseHTTPDate(h) else { return }
        let o = server.timeIntervalSince(localNow)
        lock.withLock { offset = abs(o) >= 5 ? o.rounded() : 0 }
    }
}
