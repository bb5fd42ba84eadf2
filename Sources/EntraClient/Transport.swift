import EntraCrypto
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

/// Waits. Real code sleeps; virtual-clock runs advance the clock instead.
public protocol Sleeper: Sendable {
    func sleep(seconds: Double) async throws
}

public struct TaskSleeper: Sleeper {
    public init() {}
    public func sleep(seconds: Double) async throws {
        try await Task.sleep(nanoseconds: UInt64(max(0, seconds) * 1_000_000_000))
    }
}

/// For virtual-clock runs (tests, the demo): "sleeping" advances the clock instantly.
public struct ClockAdvancingSleeper: Sleeper {
    public let clock: ManualClock
    public init(clock: ManualClock) { self.clock = clock }
    public func sleep(seconds: Double) async throws {
        try Task.checkCancellation()
        clock.advance(by: max(0, seconds))
        await Task.yield()
    }
}
