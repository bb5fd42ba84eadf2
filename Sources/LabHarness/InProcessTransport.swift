import EntraClient
import EntraEmulator
import Foundation

/// Lets ``EntraClient`` talk to an emulator in the same process: same requests and responses as
/// over HTTP, minus the sockets. `baseURL` stands in for the host the client thinks it calls.
public struct InProcessTransport: HTTPTransport {
    public let emulator: EntraEmulator
    public let baseURL: String

    public init(emulator: EntraEmulator, baseURL: String = "https://login.emulator.test") {
        self.emulator = emulator
        self.baseURL = baseURL
    }

    public func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        guard let url = URL(string: request.url), let scheme = url.scheme, let host = url.host else {
            throw TransportError("not an absolute URL: \(Redaction.url(request.url))")
        }
        let base = "\(scheme)://\(host)" + (url.port.map { ":\($0)" } ?? "")
        let target = String(request.url.dropFirst(base.count))
        var headers: [String: String] = [:]
        for (k, v) in request.headers { headers[k] = v }
        let r = await emulator.handle(EmulatorRequest(method: request.method, target: target.isEmpty ? "/" : target, headers: headers,
                                                      body: request.body, baseURL: base))
        if r.dropConnection { throw TransportError("\(request.method) \(Redaction.url(request.url)): connection reset by peer") }
        return HTTPResponseMessage(status: r.status, headers: r.headers, body: r.body)
    }
}
