import NIOCore
import NIOHTTP1
import NIOPosix

/// Appends the Prometheus text exposition of every metric to the buffer. brokerd passes its
/// `PrometheusCollectorRegistry`'s `emit(into:)`; this library never imports Prometheus.
package typealias MetricsExposition = @Sendable (inout [UInt8]) -> Void

/// The HTTP endpoint that serves `GET /metrics` (docs/METRICS.md): the text exposition with content type
/// `text/plain; version=0.0.4`, 404 for any other path, 405 for any other method on `/metrics`.
enum MetricsEndpoint {
    /// The content type of the Prometheus text exposition format.
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"
    /// A connection that sends nothing for this long is closed.
    static let idleTimeout = TimeAmount.seconds(30)

    /// What a request gets.
    enum Route: Equatable {
        /// 200 with the exposition.
        case metrics
        /// 404: only `/metrics` exists.
        case notFound
        /// 405: `/metrics` answers GET only.
        case methodNotAllowed
    }

    /// The route of a request: its path (the URI up to any `?`) first, then its method.
    static func route(method: HTTPMethod, uri: String) -> Route {
        let path = uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard path == "/metrics" else { return .notFound }
        return method == .GET ? .metrics : .methodNotAllowed
    }

    /// Binds the endpoint; `render` runs on the connection's event loop for every GET /metrics.
    static func bind(
        host: String,
        port: Int,
        group: any EventLoopGroup,
        render: @escaping @Sendable () -> [UInt8]
    ) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: Self.idleTimeout),
                        MetricsHTTPHandler(render: render),
                    ])
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

/// Answers each request on one HTTP/1.1 connection (requests are pipelined by NIO's server pipeline handler).
/// Confined to its channel's event loop.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let render: @Sendable () -> [UInt8]
    private var request: HTTPRequestHead?

    init(render: @escaping @Sendable () -> [UInt8]) {
        self.render = render
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head):
            self.request = head
        case .body:
            break  // no route takes a body; it is read and dropped
        case .end:
            guard let head = self.request else { return }
            self.request = nil
            self.respond(to: head, context: context)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        let status: HTTPResponseStatus
        var body = context.channel.allocator.buffer(capacity: 0)
        switch MetricsEndpoint.route(method: head.method, uri: head.uri) {
        case .metrics:
            status = .ok
            headers.add(name: "Content-Type", value: MetricsEndpoint.contentType)
            body.writeBytes(self.render())
        case .notFound:
            status = .notFound
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("not found: the metrics are at GET /metrics\n")
        case .methodNotAllowed:
            status = .methodNotAllowed
            headers.add(name: "Allow", value: "GET")
            headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
            body.writeString("method \(head.method) not allowed: /metrics answers GET\n")
        }
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        let keepAlive = head.isKeepAlive
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        let response = HTTPResponseHead(version: head.version, status: status, headers: headers)
        context.write(self.wrapOutboundOut(.head(response)), promise: nil)
        context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let written = context.writeAndFlush(self.wrapOutboundOut(.end(nil)))
        if !keepAlive {
            written.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
