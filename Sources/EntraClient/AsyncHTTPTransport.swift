import AsyncHTTPClient
import EntraCrypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL

/// ``HTTPTransport`` over AsyncHTTPClient: one shared client, the system trust roots plus an
/// optional extra CA (the emulator's), and `HTTPS_PROXY` / `NO_PROXY` from the environment.
///
/// Call ``shutdown()`` when done (AsyncHTTPClient requires it on every path).
public final class AsyncHTTPTransport: HTTPTransport {
    let client: HTTPClient

    /// - Parameters:
    ///   - additionalCAPEM: PEM certificates to trust in addition to the system roots.
    ///   - environment: where proxy settings are read from.
    public init(additionalCAPEM: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let pem = additionalCAPEM {
            let certs = try PEMBlock.all(in: pem).filter { $0.label == "CERTIFICATE" }.map { try NIOSSLCertificate(bytes: $0.der, format: .der) }
            tls.additionalTrustRoots = [.certificates(certs)]
        }
        var config = HTTPClient.Configuration(tlsConfiguration: tls)
        config.proxy = Self.proxy(from: environment)
        // Bounded waits (docs/security.md): 10 s to connect, 60 s between bytes; each request also
        // has its own deadline (RetryPolicy.requestTimeout, 30 s) and a bounded number of retries.
        config.timeout = .init(connect: .seconds(10), read: .seconds(60))
        client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: config)
    }

    /// `HTTPS_PROXY`/`https_proxy` (host:port or http://host:port), unless `NO_PROXY` is `*`.
    static func proxy(from env: [String: String]) -> HTTPClient.Configuration.Proxy? {
        guard let raw = env["HTTPS_PROXY"] ?? env["https_proxy"], !raw.isEmpty else { return nil }
        if (env["NO_PROXY"] ?? env["no_proxy"]) == "*" { return nil }
        let url = URL(string: raw.contains("://") ? raw : "http://" + raw)
        guard let host = url?.host else { return nil }
        return .server(host: host, port: url?.port ?? 8080)
    }

    /// Refuses (``SecureURL/Refused``, never retried) a URL that is not https or loopback http.
    public func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        try SecureURL.check(request.url, what: "The URL of a \(request.method) request")
        var req = HTTPClientRequest(url: request.url)
        req.method = HTTPMethod(rawValue: request.method)
        for (k, v) in request.headers { req.headers.add(name: k, value: v) }
        if !request.body.isEmpty { req.body = .bytes(ByteBuffer(bytes: request.body)) }
        do {
            let resp = try await client.execute(req, timeout: .milliseconds(Int64(timeout * 1000)))
            let body = try await resp.body.collect(upTo: 16 * 1024 * 1024)
            return HTTPResponseMessage(status: Int(resp.status.code), headers: resp.headers.map { ($0.name, $0.value) }, body: Array(buffer: body))
        } catch let e as HTTPClientError {
            // a cancelled task (the agent shutting down) is not a transient failure to retry
            if Task.isCancelled { throw CancellationError() }
            throw TransportError("\(request.method) \(Redaction.url(request.url)): \(e)")
        } catch let e as NIOSSLError {
            throw TransportError("\(request.method) \(Redaction.url(request.url)): TLS failed (\(e)); if this is the emulator, pass its CA file")
        } catch let e as TransportError {
            throw e
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            if Task.isCancelled { throw CancellationError() }
            throw TransportError("\(request.method) \(Redaction.url(request.url)): \(error)")
        }
    }

    public func shutdown() async throws { try await client.shutdown() }
}
