import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import WireProtocol

/// An error the broker answered with, or a client-side failure mapped onto a wire code.
package struct BrokerClientError: Error, Equatable, Sendable, CustomStringConvertible {
    package var code: ErrorCode
    package var message: String
    /// For RATE_LIMITED: how long the broker asks the client to wait.
    package var retryAfterMillis: UInt32
    package init(code: ErrorCode, message: String, retryAfterMillis: UInt32 = 0) {
        self.code = code
        self.message = message
        self.retryAfterMillis = retryAfterMillis
    }
    package var description: String { "\(self.code.name): \(self.message)" }

    static let connectionClosed = BrokerClientError(code: .internal, message: "connection closed")

    /// `FrameCodec.validate(frame)`, its refusal as a client error (nothing of the frame is sent).
    static func check(_ frame: TaggedFrame) throws(BrokerClientError) {
        do {
            try FrameCodec.validate(frame)
        } catch {
            throw BrokerClientError(code: error.code, message: error.message)
        }
    }
}

/// An async/await client for brokerd: HELLO on connect, pipelined requests, credit-managed subscriptions.
package final class BrokerClient: Sendable {
    let channel: any Channel
    let handler: NIOLoopBound<ClientHandler>
    private let correlationIDs: CorrelationIDs
    /// The size of the last PUBLISH frame encoded: the next one's buffer starts that big instead of growing by
    /// doubling (producers mostly send batches of one size).
    private let publishFrameBytes = Atomic<Int>(0)
    /// The broker's HELLO_OK: session id, role, clearance and limits.
    package let session: HelloOK

    private init(
        channel: any Channel, handler: NIOLoopBound<ClientHandler>, correlationIDs: CorrelationIDs, session: HelloOK
    ) {
        self.channel = channel
        self.handler = handler
        self.correlationIDs = correlationIDs
        self.session = session
    }

    /// The event loop this connection's I/O runs on: where ``pipelinedPublisher(maxInFlight:onAcknowledgement:)``
    /// calls its callback and ``subscribe(topic:group:start:credit:onBatch:)`` its handler. Work scheduled on it
    /// (a producer's pace, say) runs without a hand-off to another thread.
    package var eventLoop: any EventLoop { self.channel.eventLoop }

    /// Connects and authenticates. Throws `BrokerClientError` with UNAUTHENTICATED when the broker refuses.
    ///
    /// With `tls`, the connection is TLS (the broker's `[server.tls]`); with a client certificate in it, the broker
    /// may authenticate the client by the certificate (mutual TLS): then `clientID` may be empty and `token` is
    /// not checked. A TLS failure (an untrusted broker certificate, a client certificate the broker refuses)
    /// throws `BrokerClientError` with code INTERNAL and a message starting with "TLS".
    package static func connect(
        host: String,
        port: Int,
        clientID: String,
        token: String,
        tls: BrokerClientTLS? = nil,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        maxFrameBytes: UInt32 = WireConstants.defaultMaxBodyLength
    ) async throws -> BrokerClient {
        let sslContext = try tls.map { try $0.makeContext() }
        let correlationIDs = CorrelationIDs()
        let serverName = tls.flatMap { $0.serverName ?? (BrokerClientTLS.isIPAddress(host) ? nil : host) }
        let connected = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = ClientHandler(maxFrameBytes: maxFrameBytes, correlationIDs: correlationIDs)
                    if let sslContext {
                        // Without a server name the broker's certificate must carry the connected IP address.
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: sslContext, serverHostname: serverName)
                        )
                    }
                    try channel.pipeline.syncOperations.addHandler(handler)
                    return Connected(channel: channel, handler: NIOLoopBound(handler, eventLoop: channel.eventLoop))
                }
            }
        let hello = Hello(clientID: clientID, credential: ByteBuffer(string: token))
        let answer: Frame
        do {
            answer = try await Self.request(.hello(hello), correlationID: 1, channel: connected.channel, handler: connected.handler)
        } catch {
            try? await connected.channel.close()
            throw error
        }
        guard case .helloOK(let session) = answer else {
            try? await connected.channel.close()
            throw BrokerClientError(code: .malformedFrame, message: "expected HELLO_OK, got \(answer.opcode)")
        }
        correlationIDs.startAfterHello()
        return BrokerClient(channel: connected.channel, handler: connected.handler, correlationIDs: correlationIDs, session: session)
    }

    private struct Connected: Sendable {
        var channel: any Channel
        var handler: NIOLoopBound<ClientHandler>
    }

    /// Publishes records to a topic; returns one result per record, in order.
    /// Throws for a refusal of the whole request (NOT_AUTHORIZED, UNKNOWN_TOPIC, INVALID_REQUEST...).
    ///
    /// The frame is checked and encoded here, on the caller's task, and the event loop only queues its bytes: the
    /// records were most likely just written by this task, so their bytes are read where they are cached, and the
    /// event loop, which every request on the connection shares, does less per request.
    package func publish(topic: String, records: [WireRecord]) async throws -> [PublishResult] {
        let correlationID = self.nextCorrelationID()
        let frame = TaggedFrame(correlationID: correlationID, frame: .publish(Publish(topic: topic, records: records)))
        try BrokerClientError.check(frame)
        var bytes = self.channel.allocator.buffer(capacity: self.publishFrameBytes.load(ordering: .relaxed))
        FrameCodec.encode(frame, into: &bytes)
        self.publishFrameBytes.store(bytes.readableBytes, ordering: .relaxed)
        let encoded = bytes
        let answer = try await Self.request(correlationID: correlationID, channel: self.channel, handler: self.handler) {
            $0.send(encoded: encoded, correlationID: correlationID, on: $1)
        }
        guard case .publishAck(let ack) = answer, ack.results.count == records.count else {
            throw BrokerClientError(code: .malformedFrame, message: "expected PUBLISH_ACK with \(records.count) results, got \(answer.opcode)")
        }
        return ack.results
    }

    /// A publisher that pipelines PUBLISH requests on this connection without awaiting each answer:
    /// ``PipelinedPublisher/send(topic:records:)`` returns at once while fewer than `maxInFlight` requests are
    /// outstanding, and the answers arrive in send order from ``PipelinedPublisher/acknowledgements`` (what Kafka's
    /// producer does). For many small requests this costs far less per request than a task awaiting
    /// ``publish(topic:records:)`` for each.
    ///
    /// With `onAcknowledgement`, each answer is handed to it instead, on this connection's event loop (``eventLoop``)
    /// as soon as it and the answers before it are read, and its window slot is free from then on; the
    /// ``PipelinedPublisher/acknowledgements`` sequence then hands out nothing. The callback runs on the event loop
    /// that reads every answer of the connection: it must be quick and never block.
    package func pipelinedPublisher(
        maxInFlight: Int = 1000,
        onAcknowledgement: (@Sendable (PipelinedPublisher.Acknowledgement) -> Void)? = nil
    ) -> PipelinedPublisher {
        let publisher = PipelinedPublisher(client: self, maxInFlight: maxInFlight, onAcknowledgement: onAcknowledgement)
        let (core, handler) = (publisher.core, self.handler)
        // Runs before the flush of any request sent on it (the event loop runs its tasks in order).
        self.channel.eventLoop.execute { handler.value.add(core) }
        return publisher
    }

    /// Subscribes; the returned sequence grants credit as records are consumed.
    /// - Parameter credit: records the broker may have in flight to this client (the memory bound).
    package func subscribe(
        topic: String,
        group: String = "",
        start: StartPosition,
        credit: UInt32 = 256
    ) async throws -> BrokerSubscription {
        try await self.subscribe(topic: topic, group: group, start: start, credit: credit, handler: nil)
    }

    /// Subscribes with a handler that the client's event loop (``eventLoop``) calls with each DELIVER's records as
    /// it reads them, with no hand-off to a task: the shortest path from the socket to the consumer's code. Credit
    /// is granted back from the event loop once the handler has returned, in chunks of half the window (as the
    /// sequences do), so at most `credit` records are ever buffered in this client. The handler runs on the event
    /// loop that reads every frame of the connection: it must be quick and never block.
    ///
    /// The returned subscription hands out no records; iterating it (or its ``BrokerSubscription/batches``) waits
    /// for the end of the subscription and throws what ended it (the connection closing, or the broker ending it).
    package func subscribe(
        topic: String,
        group: String = "",
        start: StartPosition,
        credit: UInt32 = 256,
        onBatch handler: @escaping @Sendable (DeliveredBatch) -> Void
    ) async throws -> BrokerSubscription {
        try await self.subscribe(topic: topic, group: group, start: start, credit: credit, handler: handler)
    }

    private func subscribe(
        topic: String,
        group: String,
        start: StartPosition,
        credit: UInt32,
        handler: (@Sendable (DeliveredBatch) -> Void)?
    ) async throws -> BrokerSubscription {
        let (stream, continuation) = AsyncThrowingStream<DeliveredBatch, any Error>.makeStream()
        let sink = DeliverySink(continuation, handler: handler, window: credit)
        let correlationID = self.nextCorrelationID()
        let request = Subscribe(topic: topic, group: group, start: start, initialCredit: credit)
        let answer = try await Self.request(
            .subscribe(request),
            correlationID: correlationID,
            channel: self.channel,
            handler: self.handler,
            sink: sink
        )
        guard case .subscribeOK(let ok) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected SUBSCRIBE_OK, got \(answer.opcode)")
        }
        return BrokerSubscription(client: self, info: ok, stream: stream, sink: sink, credit: credit)
    }

    /// Durably stores the group's next offset to read on the topic.
    package func commit(group: String, topic: String, offset: Int64) async throws {
        let answer = try await self.request(.commit(Commit(group: group, topic: topic, offset: offset)))
        guard case .commitOK = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected COMMIT_OK, got \(answer.opcode)")
        }
    }

    /// Every topic with this principal's access bits.
    package func listTopics() async throws -> [TopicInfo] {
        let answer = try await self.request(.listTopics)
        guard case .topicList(let topics) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected TOPIC_LIST, got \(answer.opcode)")
        }
        return topics
    }

    /// Round-trips a PING.
    package func ping() async throws {
        let nonce = UInt64.random(in: 0...UInt64.max)
        let answer = try await self.request(.ping(nonce: nonce))
        guard case .pong(nonce) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected PONG \(nonce), got \(answer)")
        }
    }

    /// Ends a subscription on the broker.
    package func unsubscribe(_ subscriptionID: UInt32) async throws {
        let answer = try await self.request(.unsubscribe(subscriptionID: subscriptionID))
        guard case .unsubscribeOK = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected UNSUBSCRIBE_OK, got \(answer.opcode)")
        }
    }

    /// Replays quarantined records: the broker re-evaluates each `__quarantine` offset against its current policy
    /// and appends the records that now pass to their original topics. Returns one result per offset, in order;
    /// a record already replayed reports its earlier result with `ReplayResult.earlierFlag`.
    /// Throws for a refusal of the whole request (CAPABILITY_REQUIRED without `quarantine.replay`,
    /// INVALID_REQUEST, STORAGE_FAILURE...), or MALFORMED_FRAME when the answer does not match the request.
    package func replay(offsets: [Int64]) async throws -> [ReplayResult] {
        let answer = try await self.request(.quarantineReplay(offsets))
        guard case .replayResult(let results) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected REPLAY_RESULT, got \(answer.opcode)")
        }
        guard results.map(\.quarantineOffset) == offsets else {
            throw BrokerClientError(
                code: .malformedFrame,
                message: "REPLAY_RESULT answers offsets \(results.map(\.quarantineOffset)), "
                    + "but \(offsets) were requested"
            )
        }
        return results
    }

    /// Asks the broker to re-read and apply its config file (like SIGHUP on brokerd); returns the policy version
    /// now in force. Throws CONFIG_REJECTED (the message lists the errors; the old policy stays) or
    /// CAPABILITY_REQUIRED (the role lacks `admin`).
    package func reload() async throws -> ReloadOK {
        let answer = try await self.request(.adminReload)
        guard case .reloadOK(let ok) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected RELOAD_OK, got \(answer.opcode)")
        }
        return ok
    }

    /// The state of the broker's limiters (every one, or `limiter`), and of `key` when given. Needs capability `admin`.
    package func limits(limiter: String = "", key: String = "") async throws -> [LimitState] {
        let answer = try await self.request(.limitsQuery(LimitsQuery(limiter: limiter, key: key)))
        guard case .limitsState(let states) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected LIMITS_STATE, got \(answer.opcode)")
        }
        return states
    }

    /// The settings and storage figures of every topic this principal may see (DESCRIBE_TOPICS), or of `topic` alone.
    /// A role with `admin` or `audit.read` sees every topic; another role only those it may publish to or subscribe
    /// to. Throws UNKNOWN_TOPIC for a `topic` that is not declared or not visible to the role.
    package func describeTopics(topic: String = "") async throws -> [TopicDescription] {
        let answer = try await self.request(.describeTopics(topic: topic))
        guard case .topicDescriptions(let topics) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected TOPIC_DESCRIPTIONS, got \(answer.opcode)")
        }
        return topics
    }

    /// Committed offsets, end offsets and lag of every consumer group, or of `group` alone (GROUPS_QUERY).
    /// Needs capability `admin` or `audit.read` (else CAPABILITY_REQUIRED).
    package func groups(group: String = "") async throws -> [GroupOffset] {
        let answer = try await self.request(.groupsQuery(group: group))
        guard case .groupsState(let groups) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected GROUPS_STATE, got \(answer.opcode)")
        }
        return groups
    }

    /// The broker's one-screen summary (STATS_QUERY). Needs capability `admin` or `audit.read`.
    package func stats() async throws -> BrokerStats {
        let answer = try await self.request(.statsQuery)
        guard case .brokerStats(let stats) = answer else {
            throw BrokerClientError(code: .malformedFrame, message: "expected BROKER_STATS, got \(answer.opcode)")
        }
        return stats
    }

    /// Sends any request frame and returns the broker's answer (an ERROR answer is thrown).
    package func request(_ frame: Frame) async throws -> Frame {
        try await Self.request(frame, correlationID: self.nextCorrelationID(), channel: self.channel, handler: self.handler)
    }

    /// Grants more credit to a subscription (no answer expected).
    func grantCredit(subscriptionID: UInt32, credit: UInt32) {
        let frame = ClientHandler.creditFrame(subscriptionID: subscriptionID, credit: credit, correlationIDs: self.correlationIDs)
        let (channel, handler) = (self.channel, self.handler)
        channel.eventLoop.execute { handler.value.send(frame, on: channel) }
    }

    /// Closes the connection; pending requests fail and subscriptions finish with an error.
    package func close() async {
        try? await self.channel.close()
    }

    /// A correlation id for a new request (never 0, which the broker's pushes use).
    func nextCorrelationID() -> UInt32 { self.correlationIDs.next() }

    private static func request(
        _ frame: Frame,
        correlationID: UInt32,
        channel: any Channel,
        handler: NIOLoopBound<ClientHandler>,
        sink: DeliverySink? = nil
    ) async throws -> Frame {
        try await Self.request(correlationID: correlationID, channel: channel, handler: handler, sink: sink) {
            $0.send(TaggedFrame(correlationID: correlationID, frame: frame), on: $1)
        }
    }

    /// Registers the request on the event loop, then has `send` queue it there (encoded there or already).
    private static func request(
        correlationID: UInt32,
        channel: any Channel,
        handler: NIOLoopBound<ClientHandler>,
        sink: DeliverySink? = nil,
        send: @escaping @Sendable (ClientHandler, any Channel) -> Void
    ) async throws -> Frame {
        // A continuation resumed on the event loop by the answer, not a promise whose future `get()` awaits (a
        // second allocation, a callback list, and a hop through the future's callbacks).
        let answer = try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Frame, any Error>) in
            channel.eventLoop.execute {
                let handler = handler.value
                guard handler.register(correlationID: correlationID, continuation: continuation, sink: sink) else { return }
                send(handler, channel)
            }
        }
        if case .error(let error) = answer {
            throw BrokerClientError(code: error.code, message: error.message, retryAfterMillis: error.retryAfterMillis)
        }
        return answer
    }
}

/// The records of one subscription, in offset order. Iterating grants credit back to the broker as records
/// are consumed, so at most `credit` records are ever buffered in this client.
package struct BrokerSubscription: AsyncSequence, Sendable {
    package typealias Element = DeliveredRecord
    private let client: BrokerClient
    /// The broker's SUBSCRIBE_OK: subscription id, first offset, end offset at subscribe time.
    package let info: SubscribeOK
    private let stream: AsyncThrowingStream<DeliveredBatch, any Error>
    private let sink: DeliverySink
    private let credit: UInt32

    init(
        client: BrokerClient, info: SubscribeOK, stream: AsyncThrowingStream<DeliveredBatch, any Error>,
        sink: DeliverySink, credit: UInt32
    ) {
        self.client = client
        self.info = info
        self.stream = stream
        self.sink = sink
        self.credit = credit
    }

    package func makeAsyncIterator() -> Iterator {
        // Records handed out one by one are decoded on the event loop as they arrive (in parallel with the
        // consumer, as before `batches` existed); `batches` leaves them in wire form.
        self.sink.decodesOnEventLoop = true
        return Iterator(client: self.client, subscriptionID: self.info.subscriptionID, base: self.stream.makeAsyncIterator(), credit: self.credit)
    }

    /// The same records a DELIVER at a time, as they arrived: iterate this instead of the subscription itself (one
    /// or the other, not both) to read records in place with ``DeliveredBatch/forEach(_:)``, without a
    /// `DeliveredRecord` value per record. Credit is granted back as batches are handed out, in the same chunks of
    /// half the window, so at most `credit` records wait in this client besides the batch being read.
    package var batches: Batches {
        Batches(subscription: self)
    }

    /// The records of a subscription, one DELIVER at a time (``BrokerSubscription/batches``).
    package struct Batches: AsyncSequence, Sendable {
        package typealias Element = DeliveredBatch
        fileprivate let subscription: BrokerSubscription

        package func makeAsyncIterator() -> BatchIterator {
            BatchIterator(
                client: self.subscription.client, subscriptionID: self.subscription.info.subscriptionID,
                base: self.subscription.stream.makeAsyncIterator(), credit: self.subscription.credit
            )
        }
    }

    /// Hands out one DELIVER's records at a time; grants credit back in chunks of half the window.
    package struct BatchIterator: AsyncIteratorProtocol {
        private var base: AsyncThrowingStream<DeliveredBatch, any Error>.AsyncIterator
        private var credit: CreditRefill

        init(
            client: BrokerClient, subscriptionID: UInt32,
            base: AsyncThrowingStream<DeliveredBatch, any Error>.AsyncIterator, credit: UInt32
        ) {
            self.base = base
            self.credit = CreditRefill(client: client, subscriptionID: subscriptionID, window: credit)
        }

        package mutating func next() async throws -> DeliveredBatch? {
            guard let batch = try await self.base.next() else { return nil }
            // A DELIVER never carries more records than the credit granted, so this cannot overflow.
            self.credit.handedOut(UInt32(batch.count))
            return batch
        }
    }

    /// Grants credit back in chunks of half the window once the records are handed to the caller.
    package struct Iterator: AsyncIteratorProtocol {
        private var base: AsyncThrowingStream<DeliveredBatch, any Error>.AsyncIterator
        private var credit: CreditRefill
        /// The records of the last DELIVER not handed out yet, from `nextIndex`.
        private var delivered: [DeliveredRecord] = []
        private var nextIndex = 0

        init(
            client: BrokerClient, subscriptionID: UInt32,
            base: AsyncThrowingStream<DeliveredBatch, any Error>.AsyncIterator, credit: UInt32
        ) {
            self.base = base
            self.credit = CreditRefill(client: client, subscriptionID: subscriptionID, window: credit)
        }

        package mutating func next() async throws -> DeliveredRecord? {
            while self.nextIndex == self.delivered.count {
                guard let batch = try await self.base.next() else { return nil }
                self.delivered = batch.records
                self.nextIndex = 0
            }
            let record = self.delivered[self.nextIndex]
            self.nextIndex += 1
            self.credit.handedOut(1)
            return record
        }
    }

    /// How many handed-out records are granted back at once: half the window (at least 1), so the broker can go on
    /// sending the other half while the grant travels.
    static func creditChunk(window: UInt32) -> UInt32 { Swift.max(1, window / 2) }

    /// Counts the records handed to the caller and grants them back as credit once they make half the window.
    private struct CreditRefill {
        let client: BrokerClient
        let subscriptionID: UInt32
        let refill: UInt32
        var consumed: UInt32 = 0

        init(client: BrokerClient, subscriptionID: UInt32, window: UInt32) {
            self.client = client
            self.subscriptionID = subscriptionID
            self.refill = BrokerSubscription.creditChunk(window: window)
        }

        mutating func handedOut(_ count: UInt32) {
            self.consumed += count
            if self.consumed >= self.refill {
                self.client.grantCredit(subscriptionID: self.subscriptionID, credit: self.consumed)
                self.consumed = 0
            }
        }
    }
}

/// The records of one DELIVER, in offset order, as they arrived (``BrokerSubscription/batches``).
package struct DeliveredBatch: Sendable {
    private enum Storage: Sendable {
        /// As the decoder keeps a DELIVER's records: read in place by `forEach`, decoded by `records`.
        case encoded(EncodedDeliveredRecords)
        /// Decoded already (for the per-record iterator), with the wire form for `forEach`.
        case decoded([DeliveredRecord], EncodedDeliveredRecords)
    }

    private let storage: Storage

    /// When the client's event loop read this DELIVER from the connection: nanoseconds of `CLOCK_MONOTONIC`
    /// (`NIODeadline.now().uptimeNanoseconds`). Its difference to the moment the batch is consumed is the
    /// time it waited in the client, between the event loop and the task iterating the subscription.
    package let receivedAtNanos: UInt64

    /// The records of `deliver`; decoded now when `decoded` (a DELIVER built from record values is laid out in
    /// wire form here).
    init(_ deliver: Deliver, decoded: Bool, receivedAtNanos: UInt64) {
        let encoded = deliver.encodedRecords ?? EncodedDeliveredRecords(deliver.records)
        self.storage = decoded ? .decoded(deliver.records, encoded) : .encoded(encoded)
        self.receivedAtNanos = receivedAtNanos
    }

    private var encoded: EncodedDeliveredRecords {
        switch self.storage {
        case .encoded(let encoded), .decoded(_, let encoded): return encoded
        }
    }

    /// Number of records.
    package var count: Int { self.encoded.count }

    /// The records as values that outlive the batch (decoded on each call: keep the array if you need it twice).
    package var records: [DeliveredRecord] {
        switch self.storage {
        case .encoded(let encoded): return encoded.decoded()
        case .decoded(let records, _): return records
        }
    }

    /// Calls `body` with each record in order, read in place from the DELIVER's bytes; a view is valid only
    /// during its call (take ``DeliveredRecordView/record`` to keep one).
    package func forEach(_ body: (DeliveredRecordView) throws -> Void) rethrows {
        try self.encoded.forEach(body)
    }
}

/// Where a subscription's DELIVERs go: its stream, and whether they are decoded on the event loop (set once the
/// subscription is iterated record by record).
final class DeliverySink: Sendable {
    let continuation: AsyncThrowingStream<DeliveredBatch, any Error>.Continuation
    /// Called on the event loop with each DELIVER instead of yielding it (``BrokerClient/subscribe(topic:group:start:credit:onBatch:)``);
    /// the stream then only ends.
    let handler: (@Sendable (DeliveredBatch) -> Void)?
    /// The credit granted in SUBSCRIBE: the handler's records are granted back in chunks of half of it.
    let window: UInt32
    private let eager = Atomic<Bool>(false)

    init(
        _ continuation: AsyncThrowingStream<DeliveredBatch, any Error>.Continuation,
        handler: (@Sendable (DeliveredBatch) -> Void)? = nil,
        window: UInt32 = 0
    ) {
        self.continuation = continuation
        self.handler = handler
        self.window = window
    }

    /// Whether DELIVERs are decoded on the event loop, before they are yielded.
    var decodesOnEventLoop: Bool {
        get { self.eager.load(ordering: .relaxed) }
        set { self.eager.store(newValue, ordering: .relaxed) }
    }
}

/// A connection's correlation ids for new requests: 1 is HELLO's, then 2, 3, ... (never 0, which the broker's pushes
/// use), shared by the client (its requests) and its handler (the CREDIT it grants for a handler subscription).
final class CorrelationIDs: Sendable {
    private let counter = Atomic<UInt32>(1)

    /// HELLO went out with id 1: requests after it start at 2.
    func startAfterHello() { self.counter.store(2, ordering: .relaxed) }

    func next() -> UInt32 {
        var id = self.counter.wrappingAdd(1, ordering: .relaxed).oldValue
        if id == 0 { id = self.counter.wrappingAdd(1, ordering: .relaxed).oldValue }
        return id
    }
}

/// Decodes the broker's frames, matches answers to requests by correlation id and routes DELIVER frames to
/// subscriptions. Confined to the channel's event loop.
///
/// It decodes itself (what `ByteToMessageHandler(FrameDecoder)` did) so that each frame reaches `frameReceived`
/// by a direct call: `ByteToMessageHandler` buffered, boxed each frame into an `NIOAny` and passed it on through the
/// pipeline to be cast back. Callgrind, pipelined-single: reading a PUBLISH_ACK cost 8,700 instructions that way,
/// 4,100 now.
final class ClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private var processor: NIOSingleStepByteToMessageProcessor<FrameDecoder>
    /// A frame did not decode: the connection is closing, and later bytes are dropped.
    private var decodeFailed = false
    private let correlationIDs: CorrelationIDs
    /// Handler subscriptions (`DeliverySink.handler`): records handed to the handler and not yet granted back.
    private var handledNotGranted: [UInt32: UInt32] = [:]

    init(maxFrameBytes: UInt32, correlationIDs: CorrelationIDs) {
        self.processor = NIOSingleStepByteToMessageProcessor(FrameDecoder(maxBodyLength: maxFrameBytes))
        self.correlationIDs = correlationIDs
    }

    /// A CREDIT frame with a new correlation id (the broker answers a CREDIT only with an ERROR, which carries it).
    static func creditFrame(subscriptionID: UInt32, credit: UInt32, correlationIDs: CorrelationIDs) -> TaggedFrame {
        TaggedFrame(correlationID: correlationIDs.next(), frame: .credit(Credit(subscriptionID: subscriptionID, credit: credit)))
    }

    // `pending`, `publishers` and `unclaimed` are read for every answer: their run-time exclusivity checks
    // (about 85 instructions each, callgrind) are off. Proof that accesses never overlap: only this handler's
    // methods touch them, all on the channel's event loop; no access spans a call that could come back here
    // (resuming a continuation schedules its task, `PipelinedPublisher.Core.answered` only takes its own lock and
    // resumes its reader; the closure of `removeAll(where:)` reads its argument only).

    /// Requests waiting for their answer, by correlation id.
    @exclusivity(unchecked) private var pending: [UInt32: CheckedContinuation<Frame, any Error>] = [:]
    /// SUBSCRIBE correlation id → the stream its records go to, until SUBSCRIBE_OK names the subscription.
    private var pendingSinks: [UInt32: DeliverySink] = [:]
    private var sinks: [UInt32: DeliverySink] = [:]
    /// SUBSCRIBE correlation id → subscription id, so an ERROR that ends a subscription finds it.
    private var subscriptionByCorrelation: [UInt32: UInt32] = [:]
    private var closedError: (any Error)?
    private var flushScheduled = false
    /// Frames sent this tick, encoded back to back, and their correlation ids (failed if the write fails).
    private var outbound = ByteBuffer()
    /// Buffers that leave before `outbound`: the frames encoded by their callers (``send(encoded:correlationID:on:)``)
    /// and what `outbound` held when one came.
    private var outboundBefore: [ByteBuffer] = []
    private var outboundIDs: [UInt32] = []
    /// The pipelined publishers on this connection, and the answers of this read not matched in `pending` (theirs,
    /// handed over at the end of the read in one go).
    @exclusivity(unchecked) private var publishers: [PipelinedPublisher.Core] = []
    @exclusivity(unchecked) private var unclaimed: [TaggedFrame] = []

    /// Starts routing answers to a pipelined publisher (fails it at once when the connection is closed).
    func add(_ publisher: PipelinedPublisher.Core) {
        if let closedError {
            publisher.fail(Self.clientError(closedError))
        } else {
            self.publishers.append(publisher)
        }
    }

    /// Encodes a request onto this tick's outbound bytes; the requests of one event-loop tick leave as one buffer in
    /// one flush (pipelined requests share a syscall, and none walks the pipeline or allocates a buffer of its own).
    /// When the frame is not valid to send (a `BrokerClientError`, INVALID_REQUEST; nothing of it is written), or
    /// when the write fails, the request waiting under its correlation id fails.
    func send(_ frame: TaggedFrame, on channel: any Channel) {
        do {
            try BrokerClientError.check(frame)
        } catch {
            self.fail(correlationID: frame.correlationID, error)
            return
        }
        FrameCodec.encode(frame, into: &self.outbound)
        self.queued(frame.correlationID, on: channel)
    }

    /// ``send(_:on:)`` for a frame the caller checked and encoded already: its buffer leaves as it is, in order
    /// with this tick's other requests, in the same flush (one `writev`), without a copy.
    func send(encoded bytes: ByteBuffer, correlationID: UInt32, on channel: any Channel) {
        if self.outbound.readableBytes > 0 {
            self.outboundBefore.append(self.outbound)
            self.outbound = ByteBuffer()
        }
        self.outboundBefore.append(bytes)
        self.queued(correlationID, on: channel)
    }

    /// Notes the request just put on `outbound` and schedules this tick's flush, if none is.
    private func queued(_ correlationID: UInt32, on channel: any Channel) {
        self.outboundIDs.append(correlationID)
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        channel.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            var buffers = self.outboundBefore
            if self.outbound.readableBytes > 0 || buffers.isEmpty { buffers.append(self.outbound) }
            let ids = self.outboundIDs
            self.outbound = ByteBuffer()
            self.outboundBefore = []
            self.outboundIDs = []
            // A failed write fails the writes queued after it, so the last one's failure covers them all.
            for bytes in buffers.dropLast() { channel.write(bytes, promise: nil) }
            channel.writeAndFlush(buffers[buffers.count - 1]).assumeIsolated().whenFailure { error in
                for id in ids { self.fail(correlationID: id, error) }
            }
        }
    }

    /// Fails the request waiting under `correlationID`, if it still waits.
    private func fail(correlationID: UInt32, _ error: any Error) {
        self.pendingSinks.removeValue(forKey: correlationID)?.continuation.finish(throwing: error)
        self.pending.removeValue(forKey: correlationID)?.resume(throwing: error)
    }

    /// Registers a request's continuation (and a SUBSCRIBE's sink); false, and both failed, when the connection is
    /// closed already.
    func register(
        correlationID: UInt32,
        continuation: CheckedContinuation<Frame, any Error>,
        sink: DeliverySink?
    ) -> Bool {
        if let closedError {
            continuation.resume(throwing: closedError)
            sink?.continuation.finish(throwing: closedError)
            return false
        }
        self.pending[correlationID] = continuation
        if let sink { self.pendingSinks[correlationID] = sink }
        return true
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.decodeFailed else { return }
        do {
            let channel = context.channel
            try self.processor.process(buffer: self.unwrapInboundIn(data)) { self.frameReceived($0, channel: channel) }
        } catch {
            self.decodeFailed = true
            self.errorCaught(context: context, error: error)
        }
    }

    private func frameReceived(_ tagged: TaggedFrame, channel: any Channel) {
        switch tagged.frame {
        case .deliver(let deliver):
            guard let sink = self.sinks[deliver.subscriptionID] else { return }
            if let handler = sink.handler {
                guard deliver.recordCount > 0 else { return }
                handler(DeliveredBatch(deliver, decoded: false, receivedAtNanos: NIODeadline.now().uptimeNanoseconds))
                // Granted back once handled, in chunks of half the window (a DELIVER never exceeds the credit).
                let handled = self.handledNotGranted[deliver.subscriptionID, default: 0] + UInt32(deliver.recordCount)
                if handled >= BrokerSubscription.creditChunk(window: sink.window) {
                    self.handledNotGranted[deliver.subscriptionID] = 0
                    let frame = Self.creditFrame(subscriptionID: deliver.subscriptionID, credit: handled, correlationIDs: self.correlationIDs)
                    self.send(frame, on: channel)
                } else {
                    self.handledNotGranted[deliver.subscriptionID] = handled
                }
                return
            }
            // One element per DELIVER, not per record: the stream's lock and wake-up cost about 13,000
            // instructions per element, and the iterator hands the records out one by one anyway. The records
            // stay in wire form until the consumer reads them (decoded by the per-record iterator, in place by
            // `batches`).
            if deliver.recordCount > 0 {
                sink.continuation.yield(
                    DeliveredBatch(
                        deliver, decoded: sink.decodesOnEventLoop,
                        receivedAtNanos: NIODeadline.now().uptimeNanoseconds
                    )
                )
            }
        case .subscribeOK(let ok):
            if let sink = self.pendingSinks.removeValue(forKey: tagged.correlationID) {
                self.sinks[ok.subscriptionID] = sink
                self.subscriptionByCorrelation[tagged.correlationID] = ok.subscriptionID
            }
            self.pending.removeValue(forKey: tagged.correlationID)?.resume(returning: tagged.frame)
        case .unsubscribeOK:
            self.pending.removeValue(forKey: tagged.correlationID)?.resume(returning: tagged.frame)
        case .error(let error) where tagged.correlationID == 0:
            // The broker is closing this connection.
            self.failAll(BrokerClientError(code: error.code, message: error.message))
        case .error(let error):
            if let continuation = self.pending.removeValue(forKey: tagged.correlationID) {
                self.pendingSinks.removeValue(forKey: tagged.correlationID)?.continuation.finish(throwing: BrokerClientError(code: error.code, message: error.message))
                continuation.resume(returning: tagged.frame)
            } else if let subscriptionID = self.subscriptionByCorrelation.removeValue(forKey: tagged.correlationID) {
                // The broker ended a live subscription.
                self.sinks.removeValue(forKey: subscriptionID)?.continuation.finish(throwing: BrokerClientError(code: error.code, message: error.message))
                self.handledNotGranted[subscriptionID] = nil
            } else if !self.publishers.isEmpty {
                self.unclaimed.append(tagged)
            }
        default:
            if let continuation = self.pending.removeValue(forKey: tagged.correlationID) {
                continuation.resume(returning: tagged.frame)
            } else if !self.publishers.isEmpty {
                self.unclaimed.append(tagged)
            }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        self.handOverUnclaimed()
        context.fireChannelReadComplete()
    }

    /// Gives this read's unmatched answers to the pipelined publishers (one lock and at most one wake-up each), and
    /// forgets the publishers that are done.
    private func handOverUnclaimed() {
        guard !self.unclaimed.isEmpty else { return }
        var index = 0
        while index < self.publishers.count, !self.unclaimed.isEmpty {
            if self.publishers[index].answered(&self.unclaimed) {
                self.publishers.remove(at: index)
            } else {
                index += 1
            }
        }
        self.unclaimed.removeAll(keepingCapacity: true)
    }

    /// Forgets a finished publisher with nothing outstanding.
    func remove(_ publisher: PipelinedPublisher.Core) {
        self.publishers.removeAll { $0 === publisher }
    }

    /// `error` as a `BrokerClientError` (an I/O error becomes INTERNAL with its description).
    static func clientError(_ error: any Error) -> BrokerClientError {
        error as? BrokerClientError ?? BrokerClientError(code: .internal, message: "\(error)")
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let wire = error as? WireProtocolError {
            self.failAll(BrokerClientError(code: wire.code, message: wire.message))
        } else if error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError {
            self.failAll(BrokerClientError(code: .internal, message: "TLS: \(error)"))
        } else {
            self.failAll(error)
        }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.failAll(BrokerClientError.connectionClosed)
        context.fireChannelInactive()
    }

    private func failAll(_ error: any Error) {
        if self.closedError == nil { self.closedError = error }
        // Answers already read still count; then every request still outstanding fails.
        self.handOverUnclaimed()
        let publishers = self.publishers
        self.publishers.removeAll()
        for publisher in publishers { publisher.fail(Self.clientError(error)) }
        let pending = self.pending
        self.pending.removeAll()
        for (_, continuation) in pending { continuation.resume(throwing: error) }
        for (_, sink) in self.pendingSinks { sink.continuation.finish(throwing: error) }
        for (_, sink) in self.sinks { sink.continuation.finish(throwing: error) }
        self.pendingSinks.removeAll()
        self.sinks.removeAll()
        self.handledNotGranted.removeAll()
    }
}

/// How a client speaks TLS to the broker: whom to trust, which certificate to present, which name to expect.
package struct BrokerClientTLS: Sendable {
    /// PEM file of the CA certificates that may sign the broker's certificate; nil: the system's trust store.
    package var caFile: String?
    /// PEM file of the client certificate (for mutual TLS); needs `keyFile`.
    package var certFile: String?
    /// PEM file of the client certificate's private key.
    package var keyFile: String?
    /// The name the broker's certificate must carry (also sent as SNI); nil: the host connected to when it is a
    /// name. NIOSSL also accepts a certificate whose IP subject alternative name is the address connected to.
    package var serverName: String?

    /// Creates a TLS setting.
    package init(caFile: String? = nil, certFile: String? = nil, keyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.serverName = serverName
    }

    /// The client context: TLS 1.2 or later, full verification of the broker's certificate.
    func makeContext() throws(BrokerClientError) -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        configuration.certificateVerification = .fullVerification
        if let caFile = self.caFile {
            configuration.trustRoots = .certificates(try Self.certificates(caFile, what: "CA file"))
        }
        switch (self.certFile, self.keyFile) {
        case (nil, nil):
            break
        case (let certFile?, let keyFile?):
            configuration.certificateChain = try Self.certificates(certFile, what: "client certificate").map {
                .certificate($0)
            }
            do {
                configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw BrokerClientError(
                    code: .internal,
                    message: "TLS: cannot load the client key \(keyFile): \(error)"
                )
            }
        default:
            throw BrokerClientError(
                code: .internal,
                message: "TLS: a client certificate needs its key, and a key its certificate"
            )
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw BrokerClientError(code: .internal, message: "TLS: cannot build the TLS context: \(error)")
        }
    }

    private static func certificates(_ path: String, what: String) throws(BrokerClientError) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw BrokerClientError(code: .internal, message: "TLS: cannot load the \(what) \(path): \(error)")
        }
        guard !certificates.isEmpty else {
            throw BrokerClientError(code: .internal, message: "TLS: the \(what) \(path) holds no PEM certificate")
        }
        return certificates
    }

    /// Whether `host` is an IPv4 or IPv6 address literal (SNI must not carry one).
    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}
