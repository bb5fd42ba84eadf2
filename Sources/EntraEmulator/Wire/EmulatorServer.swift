import EntraCrypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import ServiceLifecycle

/// Serves an ``EntraEmulator`` over HTTP or HTTPS with Hummingbird. The router is one catch-all
/// responder that translates to ``EmulatorRequest`` and back; all behaviour lives in the emulator.
public struct EmulatorServer: Sendable {
    public let emulator: EntraEmulator
    public let host: String
    public let port: Int
    public let tls: TLSMaterial?
    let logger: Logger

    /// A local CA and a server certificate it issued (SAN 127.0.0.1, ::1 and localhost), as the
    /// Python `ssl` module's strict verification and swift-nio-ssl require.
    public struct TLSMaterial: Sendable {
        public let ca: SigningCredential
        public let leaf: SigningCredential

        /// Generates a CA (10 years) and a leaf (1 year) valid from `now`.
        public static func generate(now: Date) throws -> TLSMaterial {
            let caKey = try RSAPrivateKey.generate()
            let ca = try CertificateIssuer.selfSigned(key: caKey, subject: .init(commonName: "KeyRoll Emulator Local CA", organization: "KeyRoll"),
                                                      notBefore: now.addingTimeInterval(-3600), notAfter: now.addingTimeInterval(10 * 365 * 86_400),
                                                      profile: .certificateAuthority)
            let leafKey = try RSAPrivateKey.generate()
            let leaf = try CertificateIssuer.issue(publicKey: leafKey.publicKey, subject: .init(commonName: "localhost", organization: "KeyRoll"),
                                                   notBefore: now.addingTimeInterval(-3600), notAfter: now.addingTimeInterval(365 * 86_400),
                                                   profile: .tlsServer(dnsNames: ["localhost"], ipAddresses: [[127, 0, 0, 1], [UInt8](repeating: 0, count: 15) + [1]]),
                                                   issuerKey: caKey, issuer: ca)
            return TLSMaterial(ca: try SigningCredential(privateKey: caKey, certificate: ca), leaf: try SigningCredential(privateKey: leafKey, certificate: leaf))
        }

        public init(ca: SigningCredential, leaf: SigningCredential) {
            self.ca = ca
            self.leaf = leaf
        }

        func serverConfiguration() throws -> TLSConfiguration {
            let chain = try [leaf.certificate.der, ca.certificate.der].map { try NIOSSLCertificate(bytes: $0, format: .der) }
            let key = try NIOSSLPrivateKey(bytes: try leaf.privateKey.pkcs8DER, format: .der)
            return TLSConfiguration.makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        }
    }

    public init(emulator: EntraEmulator, host: String = "127.0.0.1", port: Int = 0, tls: TLSMaterial? = nil,
                logger: Logger = Logger(label: "keyroll.emulator.http")) {
        self.emulator = emulator
        self.host = host
        self.port = port
        self.tls = tls
        self.logger = logger
    }

    /// Builds the Hummingbird application; `onRunning` receives the bound port.
    public func makeApplication(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) throws -> some ApplicationProtocol {
        let emulator = self.emulator
        let scheme = tls == nil ? "http" : "https"
        let responder = CallbackResponder<EmulatorRequestContext> { request, context in
            let host = request.head.authority ?? "127.0.0.1"
            let body: [UInt8]
            do {
                body = Array(buffer: try await request.body.collect(upTo: 4 * 1024 * 1024))
            } catch {
                return Response(status: .contentTooLarge, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(string: #"{"error":{"code":"Request_EntityTooLarge","message":"The request body is too large."}}"#)))
            }
            var headers: [String: String] = [:]
            for field in request.headers { headers[field.name.canonicalName] = field.value }
            let r = await emulator.handle(EmulatorRequest(method: request.method.rawValue, target: request.uri.string,
                                                          headers: headers, body: body, baseURL: "\(scheme)://\(host)"))
            if r.dropConnection {
                context.channel.close(promise: nil)
                throw CancellationError()
            }
            var fields = HTTPFields()
            for (name, value) in r.headers { if let n = HTTPField.Name(name) { fields.append(HTTPField(name: n, value: value)) } }
            return Response(status: .init(code: r.status), headers: fields, body: .init(byteBuffer: ByteBuffer(bytes: r.body)))
        }
        let server: HTTPServerBuilder = try tls.map { try .tls(.http1(), tlsConfiguration: $0.serverConfiguration()) } ?? .http1()
        return Application(responder: responder, server: server,
                           configuration: .init(address: .hostname(host, port: port), serverName: "KeyRoll-Entra-Emulator"),
                           onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? 0) }, logger: logger)
    }
}

/// Hummingbird request context that keeps the channel (to emulate dropped connections).
public struct EmulatorRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    public var maxUploadSize: Int { 4 * 1024 * 1024 }
}
