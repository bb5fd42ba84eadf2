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

    /// Where the TLS library looks for the system's trust roots, in its order (a bundle file, else
    /// a folder of hashed certificates). Debian's `ca-certificates` package provides the first.
    public static let systemTrustStores = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/certs"]

    /// True when `path` can give roots: a bundle file that is not empty, or a folder holding at least one
    /// certificate under its hashed name (`5ad8a5d6.0`), as `c_rehash`/`update-ca-certificates` make
    /// them. (Debian's `openssl` package creates an empty /etc/ssl/certs without `ca-certificates`.)
    public static func holdsTrustRoots(_ path: String) -> Bool {
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) else { return false }
        if !isFolder.boolValue {
            let size = ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? 0
            return size > 0
        }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        return names.contains { name in
            let parts = name.split(separator: ".")
            return parts.count == 2 && parts[0].count == 8 && parts[0].allSatisfy(\.isHexDigit) && parts[1].allSatisfy(\.isNumber)
        }
    }

    /// Why no transport could be made: a host without trust roots cannot verify Entra.
    public struct NoTrustRoots: Error, CustomStringConvertible {
        public let description: String
    }

    /// - Parameters:
    ///   - additionalCAPEM: PEM certificates to trust in addition to the system roots (alone, on a
    ///     host that has no system trust store: they are then the only roots, as the operator said).
    ///   - environment: where proxy settings are read from.
    ///   - systemTrustStores: where the system's roots are looked for (tests point it elsewhere).
    /// - Throws: ``NoTrustRoots`` when the host has no system trust store and no CA was given: every
    ///   request would fail its TLS handshake, so the agent says so at start instead of retrying.
    public init(additionalCAPEM: String? = nil, environment: [String: String] = ProcessInfo.processInfo.environment,
                systemTrustStores: [String] = AsyncHTTPTransport.systemTrustStores) throws {
        var tls = TLSConfiguration.makeClientConfiguration()
        let hasSystemStore = systemTrustStores.contains(where: Self.holdsTrustRoots)
        if let pem = additionalCAPEM {
            let certs = try PEMBlock.all(in: pem).filter { $0.label == "CERTIFICATE" }.map { try NIOSSLCertificate(bytes: $0.der, format: .der) }
            guard !certs.isEmpty else {
                throw NoTrustRoots(description: "The CA to trust (--ca-file or KEYROLL_CA_FILE) holds no PEM CERTIFICATE block. Name a file "
                                   + "with the CA certificate(s) in PEM ('-----BEGIN CERTIFICATE-----').")
            }
            if hasSystemStore { tls.additionalTrustRoots = [.certificates(certs)] } else { tls.trustRoots = .certificates(certs) }
        } else if !hasSystemStore {
            throw NoTrustRoots(description: "This host has no system trust store (none of \(systemTrustStores.joined(separator: ", ")) holds a certificate), so no "
                               + "TLS connection to Entra could be verified. Install the CA certificates (Debian, Ubuntu: apt-get install ca-certificates), "
                               + "or name the CA to trust with --ca-file or KEYROLL_CA_FILE.")
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
