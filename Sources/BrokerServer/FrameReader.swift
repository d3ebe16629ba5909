import NIOCore
import WireProtocol

/// Decodes inbound frames (what `ByteToMessageHandler(FrameDecoder)` does) and closes a connection that leaves a
/// frame incomplete for too long: a client that sends a header, or part of a body, and then stalls would otherwise
/// hold up to `max_frame_bytes` of buffer for ever.
///
/// The clock starts when bytes of an incomplete frame are left over after a read, and restarts whenever a read
/// completes a frame, so a steady stream of large pipelined frames never trips it. When it runs out the reader
/// stops decoding and fires a `WireProtocolError` (MALFORMED_FRAME, "frame incomplete after N s"), which
/// `ConnectionHandler` answers with ERROR and a close, as for any bad frame.
final class FrameReader: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = TaggedFrame

    private var processor: NIOSingleStepByteToMessageProcessor<FrameDecoder>
    private let timeout: TimeAmount
    /// When the current incomplete frame started waiting; nil when nothing is left over.
    private var partialSince: NIODeadline?
    private var timer: Scheduled<Void>?
    /// A decoding error or the timeout happened: everything after is dropped.
    private var failed = false
    /// The connection's `ConnectionHandler` (looked up at the first read; it directly follows this reader):
    /// decoded frames go to it by a direct call instead of `fireChannelRead`, which boxes each frame into an
    /// `NIOAny`, walks the pipeline and casts it back (callgrind, pipelined-single: about 1,300 instructions per
    /// request). Any other next handler gets the frames through the pipeline.
    private var receiver: ConnectionHandler?
    private var receiverLookedUp = false

    init(maxBodyLength: UInt32, timeout: TimeAmount) {
        self.processor = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxBodyLength: maxBodyLength))
        self.timeout = timeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.failed else { return }
        if !self.receiverLookedUp {
            self.receiverLookedUp = true
            self.receiver = Self.connectionHandler(in: context)
        }
        var completed = false
        do {
            if let receiver = self.receiver {
                try self.processor.process(buffer: self.unwrapInboundIn(data)) { frame in
                    completed = true
                    receiver.frameReceived(frame)
                }
            } else {
                try self.processor.process(buffer: self.unwrapInboundIn(data)) { frame in
                    completed = true
                    context.fireChannelRead(self.wrapInboundOut(frame))
                }
            }
        } catch {
            self.fail(context: context, error: error)
            return
        }
        if self.processor.unprocessedBytes == 0 {
            self.partialSince = nil
        } else if completed || self.partialSince == nil {
            self.partialSince = .now()
            if self.timer == nil { self.arm(context: context, in: self.timeout) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.timer?.cancel()
        self.timer = nil
        self.receiver = nil
    }

    /// The connection's `ConnectionHandler`, if the pipeline has one. `BrokerServer` adds it right after this reader
    /// (one `addHandlers` call), so no handler in between misses a frame the direct call skips.
    private static func connectionHandler(in context: ChannelHandlerContext) -> ConnectionHandler? {
        try? context.pipeline.syncOperations.handler(type: ConnectionHandler.self)
    }

    private func arm(context: ChannelHandlerContext, in delay: TimeAmount) {
        self.timer = context.eventLoop.assumeIsolated().scheduleTask(in: delay) {
            self.timer = nil
            guard !self.failed, let since = self.partialSince else { return }
            let waited = NIODeadline.now() - since
            if waited < self.timeout {
                self.arm(context: context, in: self.timeout - waited)
                return
            }
            let seconds = self.timeout.nanoseconds / 1_000_000_000
            self.fail(
                context: context,
                error: WireProtocolError(
                    code: .malformedFrame,
                    message: "frame incomplete after \(seconds) s (\(self.processor.unprocessedBytes) bytes received)"
                )
            )
        }
    }

    private func fail(context: ChannelHandlerContext, error: any Error) {
        self.failed = true
        self.partialSince = nil
        self.timer?.cancel()
        self.timer = nil
        context.fireErrorCaught(error)
    }
}
