import Foundation

/// One HTTP exchange, independent of the library that carries it.
public struct HTTPRequestMessage: Sendable {
    public var method: String
    public var url: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(method: String, url: String, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? { headers.last { $0.0.lowercased() == name.lowercased() }?.1 }
}

public struct HTTPResponseMessage: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)], body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public func header(_ name: String) -> String? { headers.last { $0.0.lowercased() == name.lowercased() }?.1 }
}

/// Sends HTTP requests. ``AsyncHTTPTransport`` talks to the network; the emulator's
/// `InProcessTransport` answers in the same process.
public protocol HTTPTransport: Sendable {
    /// Throws ``TransportError`` when no HTTP answer arrived (connection refused or reset, timeout).
    func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage
}

/// No HTTP answer: the request may or may not have reached the server.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
