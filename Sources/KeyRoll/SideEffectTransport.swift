import EntraClient
import Foundation
import KeyRollPrimitives

/// A transport whose every exchange passes two named points: before the request is sent, and after
/// its answer arrived but before anyone read it (where a lost answer or a crash leaves the server
/// having applied a request the client never learned about).
public struct SideEffectTransport: HTTPTransport {
    public let base: any HTTPTransport
    public let hook: SideEffectHook

    public init(_ base: any HTTPTransport, hook: SideEffectHook) {
        self.base = base
        self.hook = hook
    }

    public func send(_ request: HTTPRequestMessage, timeout: TimeInterval) async throws -> HTTPResponseMessage {
        let op = SideEffect.operation(of: request)
        try hook.reach(SideEffect(.send, op))
        let response = try await base.send(request, timeout: timeout)
        try hook.reach(SideEffect(.answered, op))
        return response
    }
}

extension SideEffect {
    /// The operation an HTTP request performs, by its method and path.
    public static func operation(of request: HTTPRequestMessage) -> String {
        let path = request.url.split(separator: "?").first.map(String.init) ?? request.url
        if path.contains("/oauth2/") { return "token" }
        if path.hasSuffix("/addKey") { return "addKey" }
        if path.hasSuffix("/removeKey") { return "removeKey" }
        return request.method == "GET" ? "read" : request.method.lowercased()
    }
}
