import Glibc
import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTPTypes
import NIOPosix
import ServiceLifecycle
import Synchronization

/// Where the token endpoint listens.
enum TokenEndpointListener: Sendable {
    /// Bind this loopback address (development, tests, hosts without systemd).
    case address(host: String, port: Int)
    /// Listening sockets the service manager bound and passed (socket activation); the first is
    /// the endpoint's address.
    case inherited(descriptors: [Int32])
}

/// Bounds on the token endpoint's connections, shared by all of them.
final class ConnectionLimits: Sendable {
    /// At most this many connections are open at once; later ones are closed at once.
    let maximumConnections: Int
    /// A request head (request line and headers) must arrive within this time of the connection
    /// opening or of the previous answer (slowloris).
    let headTimeout: TimeAmount
    /// Called for each connection closed by a bound: `too_many` or `head_timeout`.
    let onClosed: @Sendable (String) -> Void
    let open = Atomic<Int>(0)

    init(maximumConnections: Int, headTimeout: TimeAmount, onClosed: @escaping @Sendable (String) -> Void) {
        self.maximumConnections = maximumConnections
        self.headTimeout = headTimeout
        self.onClosed = onClosed
    }
}

/// The managed-identity endpoint's HTTP/1.1 server: Hummingbird's HTTP/1 channel over a socket
/// it binds or one the service manager passed, with ``ConnectionGuard`` on every connection.
struct TokenEndpointServer: Service {
    let listener: TokenEndpointListener
    let limits: ConnectionLimits
    let answer: @Sendable (Request) async -> Response
    /// Called once listening, with the bound address.
    let onListening: @Sendable (SocketAddress?) -> Void
    let logger: Logger

    func run() async throws {
        let answer = self.answer
        let limits = self.limits
        // a request's header fields (the request line included) are at most 8 KiB, 16 KiB and 64 in
        // all; an idle connection closes after 10 s; the guard bounds the rest
        let http1 = HTTP1Channel(
            responder: { request, writer, _ in
                let response = await answer(request)
                try await writer.write(response: response.head, body: response.body)
            },
            configuration: .init(additionalChannelHandlers: [ConnectionGuard(limits: limits)], idleTimeout: .seconds(10),
                                 httpDecoderConfiguration: .init(maxHeaderFieldSize: 8192, maxHeaderListSize: 16_384, maxHeaderFieldCount: 64)))
        let logger = self.logger
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
        let servers: [NIOAsyncChannel<HTTP1Channel.Value, Never>]
        switch listener {
        case .address(let host, let port):
            servers = [try await bootstrap.bind(host: host, port: port) { http1.setup(channel: $0, logger: logger) }]
        case .inherited(let descriptors):
            var bound: [NIOAsyncChannel<HTTP1Channel.Value, Never>] = []
            do {
                for d in descriptors { bound.append(try await bootstrap.bind(d) { http1.setup(channel: $0, logger: logger) }) }
            } catch {
                for b in bound { try? await b.channel.close() }
                throw error
            }
            servers = bound
        }
        onListening(servers.first?.channel.localAddress)
        // Graceful shutdown closes the listeners; connections finish their answer (Hummingbird
        // closes idle ones) and the service group's shutdown deadline bounds the rest.
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { listeners in
                for server in servers {
                    listeners.addTask {
                        try await server.executeThenClose { inbound in
                            try await withThrowingDiscardingTaskGroup { group in
                                for try await connection in inbound {
                                    group.addTask { await http1.handle(value: connection, logger: logger) }
                                }
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            for server in servers { server.channel.close(promise: nil) }
        }
    }
}

/// Keeps one connection within ``ConnectionLimits``: closes it at once when too many are open,
/// and closes it when a request head has not arrived in time (a slow sender holding it open).
/// Sits after HTTP decoding, so a head counts as arrived only once fully parsed.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limits: ConnectionLimits
    private var counted = false
    private var refused = false
    private var deadline: Scheduled<Void>?

    init(limits: ConnectionLimits) { self.limits = limits }

    func handlerAdded(context: ChannelHandlerContext) {
        counted = true
        refused = limits.open.wrappingAdd(1, ordering: .relaxed).newValue > limits.maximumConnections
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        if counted { limits.open.wrappingSubtract(1, ordering: .relaxed); counted = false }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) { deadline?.cancel(); deadline = nil }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        // the answer is complete: the next request's head must arrive in time too
        if case .end = unwrapOutboundIn(data) { arm(context) }
        context.write(data, promise: promise)
    }

    private func start(_ context: ChannelHandlerContext) {
        if refused {
            refused = false
            limits.onClosed("too_many")
            context.close(promise: nil)
            return
        }
        if deadline == nil { arm(context) }
    }

    private func arm(_ context: ChannelHandlerContext) {
        deadline?.cancel()
        let channel = context.channel
        let limits = self.limits
        deadline = context.eventLoop.scheduleTask(in: limits.headTimeout) {
            limits.onClosed("head_timeout")
            channel.close(promise: nil)
        }
    }
}
