import Logging
import LogStore
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization
import TopicRouter
import WireProtocol

/// Serves one client connection. Confined to its channel's event loop; shared state lives in `BrokerCore`.
final class ConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = TaggedFrame
    typealias OutboundOut = ByteBuffer

    private let core: BrokerCore
    private let connectionID: UInt64
    private let readPool: NIOThreadPool
    private var logger: Logger
    private var machine = ConnectionStateMachine()
    private var context: ChannelHandlerContext?
    private var handshakeTimeout: Scheduled<Void>?
    private var subscriptions: [UInt32: Subscription] = [:]
    private var nextSubscriptionID: UInt32 = 1
    private var counted = false
    /// `sendErrorAndClose` ran: the connection is closing, and a later error sends nothing more.
    private var closingAfterError = false
    private var flushScheduled = false
    /// Publishes of this tick whose records were all accepted, waiting to go to their topic's appender together
    /// (see `group`); nil when there are none.
    private var publishGroup: PublishGroup?
    private var publishGroupFlushScheduled = false
    /// The frames sent this event-loop tick, encoded back to back; written and flushed as one buffer at its end.
    private var outbound = ByteBuffer()
    /// nil on a plaintext listener; with TLS, how client certificates are handled.
    private let clientAuth: ClientAuthMode?
    /// With TLS: whether the TLS handshake completed (before it, nothing can be sent to the client).
    private var tlsEstablished = false
    /// The names of the verified client certificate, once the TLS handshake completed with one; nil: none presented.
    private var certificateIdentities: [CertificateIdentity]?

    /// Maximum bytes one read for a subscription fetches (bounds per-subscription memory).
    static let readMaxBytes = 1 << 20
    /// How long a subscription waiting for credit keeps the records its last read left over (1 s).
    static let stalledReadAheadNanos: Int64 = 1_000_000_000

    init(
        core: BrokerCore, readPool: NIOThreadPool, connectionID: UInt64, clientAuth: ClientAuthMode? = nil,
        logger: Logger
    ) {
        self.connectionID = connectionID
        self.clientAuth = clientAuth
        self.core = core
        self.readPool = readPool
        var logger = logger
        logger[metadataKey: "brokerd.connection_id"] = "\(connectionID)"
        self.logger = logger
    }

    // MARK: channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        let remote = context.remoteAddress.map { "\($0)" } ?? "unknown"
        self.logger[metadataKey: "brokerd.remote"] = "\(remote)"
        guard self.core.connectionOpened() else {
            self.core.metrics.connectionsRefused.increment()
            // A flood of connections must not flood the log: the first refusal, then every 1,000th.
            let refused = self.core.refusedConnectionCount
            if refused == 1 || refused % 1000 == 0 {
                self.logger.warning(
                    "connection refused: limit reached",
                    metadata: [
                        "brokerd.max_connections": "\(self.core.settings.maxConnections)",
                        "brokerd.refused_total": "\(refused)",
                    ]
                )
            }
            self.machine.decodeFailed()
            self.sendErrorAndClose(ErrorFrame(code: .connectionLimit, message: "connection limit reached (\(self.core.settings.maxConnections))"), correlationID: 0, linger: false)
            return
        }
        self.counted = true
        self.logger.info("connection opened")
        let seconds = Int64(self.core.settings.handshakeTimeoutSeconds)
        // Started at TCP accept, so with TLS it also bounds a client that never finishes the TLS handshake.
        self.handshakeTimeout = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(seconds)) {
            guard self.machine.principal == nil else { return }
            self.machine.decodeFailed()
            guard self.clientAuth == nil || self.tlsEstablished else {
                // No TLS session: an ERROR frame cannot be sent, only the connection closed.
                self.logger.notice("handshake timeout: TLS handshake not completed", metadata: ["brokerd.timeout_s": "\(seconds)"])
                context.close(promise: nil)
                return
            }
            self.logger.notice("handshake timeout: no HELLO", metadata: ["brokerd.timeout_s": "\(seconds)"])
            self.sendErrorAndClose(ErrorFrame(code: .unauthenticated, message: "no HELLO within \(seconds) s"), correlationID: 0)
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Records accepted before the close are appended, as for a publish whose append was already queued.
        self.flushPublishGroup()
        self.handshakeTimeout?.cancel()
        self.core.unwatchPolicy(connectionID: self.connectionID)
        for (_, subscription) in self.subscriptions { self.endSubscription(subscription) }
        self.subscriptions.removeAll()
        if self.counted {
            self.counted = false
            self.core.connectionClosed()
            self.logger.info("connection closed", metadata: ["brokerd.client_id": "\(self.machine.principal?.clientID ?? "-")"])
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tlsEvent = event as? TLSUserEvent, case .handshakeCompleted = tlsEvent {
            self.tlsEstablished = true
            // The TLS handler verified the chain against client_ca_file before completing the handshake.
            if let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate() {
                let identities = BrokerTLS.identities(of: certificate)
                self.certificateIdentities = identities
                self.logger.info("TLS established with a client certificate", metadata: [
                    "brokerd.certificate": "\(identities.map(\.description).joined(separator: ", "))",
                ])
            } else {
                self.logger.debug("TLS established without a client certificate")
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if BrokerTLS.isTLSError(error) {
            if !self.tlsEstablished {
                // A failed TLS handshake: a plaintext client, a certificate that does not verify, no certificate
                // when one is required, no common protocol version. Nothing reached the frame reader.
                let remote = context.remoteAddress.map { "\($0)" } ?? "unknown"
                self.logger.notice("TLS handshake failed, closing", metadata: ["brokerd.error": "\(error)"])
                self.audit("", AuditAction.authFailure, topic: "", decision: "refuse", reason: "UNAUTHENTICATED", detail: "TLS handshake failed (from \(remote)): \(error)")
            } else if !BrokerTLS.isUncleanShutdown(error) {
                self.logger.notice("TLS error, closing", metadata: ["brokerd.error": "\(error)"])
            }
            self.machine.decodeFailed()
            context.close(promise: nil)
        } else if let wireError = error as? WireProtocolError {
            self.logger.notice("bad frame, closing", metadata: ["brokerd.error": "\(wireError)"])
            self.machine.decodeFailed()
            self.sendErrorAndClose(ErrorFrame(code: wireError.code, message: wireError.message), correlationID: wireError.correlationID ?? 0)
        } else if let ioError = error as? IOError, ioError.errnoCode == ECONNRESET || ioError.errnoCode == EPIPE {
            context.close(promise: nil)
        } else {
            self.logger.warning("connection error, closing", metadata: ["brokerd.error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        self.frameReceived(self.unwrapInboundIn(data))
    }

    /// A decoded frame from the client. `FrameReader` calls this directly (no `NIOAny` box, pipeline walk or cast
    /// per frame); `channelRead` serves a pipeline without it.
    func frameReceived(_ tagged: TaggedFrame) {
        if case .publish(let publish) = tagged.frame, let principal = self.machine.principal {
            // What the machine answers for any request but HELLO once authenticated (`.serve`), without the frame
            // copied into the action and out again: a pipelining producer sends thousands of PUBLISHes a second.
            self.publish(publish, correlationID: tagged.correlationID, principal: principal)
            return
        }
        // Publishes waiting in the group are appended before anything else this connection asked for is served.
        if self.publishGroup != nil, tagged.frame.opcode != .publish { self.flushPublishGroup() }
        switch self.machine.frameReceived(tagged) {
        case .authenticate(let hello, let correlationID):
            self.authenticate(hello, correlationID: correlationID)
        case .serve(let request, let principal):
            self.serve(request, principal: principal)
        case .sendError(let error, let correlationID):
            self.send(.error(error), correlationID: correlationID)
        case .sendErrorAndClose(let error, let correlationID):
            self.logger.notice("refused before authentication", metadata: ["brokerd.error": "\(error.code.name): \(error.message)"])
            self.sendErrorAndClose(error, correlationID: correlationID)
        case .ignore:
            break
        }
    }

    // MARK: authentication

    /// HELLO's check. A connection with a verified client certificate is authenticated by the certificate alone:
    /// HELLO's client id must be empty or the mapped principal's, and its token is not consulted (so no token can
    /// claim a principal over a certificate). Without a certificate, the token is checked, unless client auth is
    /// required (then there is always a certificate: the TLS handshake fails without one).
    private func authenticate(_ hello: Hello, correlationID: UInt32) {
        let decision: AuthDecision
        let byCertificate: Bool
        if let identities = self.certificateIdentities {
            decision = self.core.policy.authenticate(certificate: identities, clientID: hello.clientID)
            byCertificate = true
        } else if self.clientAuth == .required {
            decision = .refused(reason: "a client certificate is required")
            byCertificate = true
        } else {
            decision = self.core.policy.authenticate(clientID: hello.clientID, token: Array(hello.credential.readableBytesView))
            byCertificate = false
        }
        switch decision {
        case .authenticated(let principal):
            let names = self.certificateIdentities?.map(\.description).joined(separator: ", ") ?? ""
            let how = byCertificate ? "by client certificate (\(names))" : ""
            self.audit(principal.clientID, AuditAction.authSuccess, topic: "", decision: "allow", detail: how)
            self.machine.authenticationSucceeded(principal)
            self.handshakeTimeout?.cancel()
            let bound = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
            let eventLoop = self.context!.eventLoop
            self.core.watchPolicy(connectionID: self.connectionID) {
                eventLoop.execute { bound.value.policyChanged() }
            }
            self.logger[metadataKey: "brokerd.client_id"] = "\(principal.clientID)"
            self.logger.info("authenticated", metadata: ["brokerd.role": "\(principal.role)"])
            let ok = HelloOK(
                sessionID: self.core.makeSessionID(),
                role: principal.role,
                clearance: principal.clearance,
                maxFrameBytes: UInt32(self.core.settings.maxFrameBytes),
                maxRecordsPerPublish: UInt32(self.core.settings.maxRecordsPerPublish)
            )
            self.send(.helloOK(ok), correlationID: correlationID)
        case .refused(let reason):
            self.core.metrics.authFailures.increment()
            self.audit(hello.clientID, AuditAction.authFailure, topic: "", decision: "refuse", reason: "UNAUTHENTICATED", detail: reason)
            self.machine.authenticationFailed()
            self.logger.notice("authentication failed", metadata: ["brokerd.client_id": "\(hello.clientID)", "brokerd.reason": "\(reason)"])
            // A token failure says nothing more (the reason would tell an attacker which ids exist); a certificate
            // failure names only the certificate's own names and the principal it maps to, which its holder knows.
            let message = byCertificate ? "authentication failed: \(reason)" : "authentication failed"
            self.sendErrorAndClose(ErrorFrame(code: .unauthenticated, message: message), correlationID: correlationID)
        }
    }

    // MARK: requests

    private func serve(_ request: TaggedFrame, principal: Principal) {
        let correlationID = request.correlationID
        switch request.frame {
        case .publish(let publish):
            self.publish(publish, correlationID: correlationID, principal: principal)
        case .subscribe(let subscribe):
            self.subscribe(subscribe, correlationID: correlationID, principal: principal)
        case .credit(let credit):
            guard let subscription = self.subscriptions[credit.subscriptionID] else {
                self.send(.error(ErrorFrame(code: .unknownSubscription, message: "no subscription \(credit.subscriptionID) on this connection")), correlationID: correlationID)
                return
            }
            self.run(subscription.machine.creditReceived(credit.credit), for: subscription)
        case .unsubscribe(let subscriptionID):
            guard let subscription = self.subscriptions.removeValue(forKey: subscriptionID) else {
                self.send(.error(ErrorFrame(code: .unknownSubscription, message: "no subscription \(subscriptionID) on this connection")), correlationID: correlationID)
                return
            }
            self.endSubscription(subscription)
            self.send(.unsubscribeOK, correlationID: correlationID)
        case .commit(let commit):
            self.commit(commit, correlationID: correlationID, principal: principal)
        case .listTopics:
            self.send(.topicList(self.topicList(for: principal)), correlationID: correlationID)
        case .ping(let nonce):
            self.send(.pong(nonce: nonce), correlationID: correlationID)
        case .quarantineReplay(let offsets):
            self.replay(offsets, correlationID: correlationID, principal: principal)
        case .adminReload:
            self.reload(correlationID: correlationID, principal: principal)
        case .limitsQuery(let query):
            self.limits(query, correlationID: correlationID, principal: principal)
        case .describeTopics(let topic):
            let answer = Inspection.describe(
                topic: topic, principal: principal, policy: self.core.policy, log: self.core.log(for:)
            )
            self.send(answer, correlationID: correlationID)
        case .groupsQuery(let group):
            guard Inspection.seesEverything(principal, policy: self.core.policy) else {
                let refusal = Inspection.capabilityRefusal(principal, request: .groupsQuery)
                self.send(.error(refusal), correlationID: correlationID)
                return
            }
            let committed = self.core.offsets.allCommitted()
            let groups = Inspection.groups(group: group, committed: committed, log: self.core.log(for:))
            self.send(.groupsState(groups), correlationID: correlationID)
        case .statsQuery:
            let policy = self.core.policy
            guard Inspection.seesEverything(principal, policy: policy) else {
                let refusal = Inspection.capabilityRefusal(principal, request: .statsQuery)
                self.send(.error(refusal), correlationID: correlationID)
                return
            }
            let runtime = Inspection.Runtime(
                startedAtMillis: self.core.startedAtMillis, nowMillis: currentTimeMillis(),
                listenAddress: self.core.listenAddress, connections: self.core.connectionCount
            )
            let stats = Inspection.stats(
                runtime: runtime, policy: policy, committed: self.core.offsets.allCommitted(), log: self.core.log(for:)
            )
            self.send(.brokerStats(stats), correlationID: correlationID)
        case .hello, .helloOK, .publishAck, .subscribeOK, .deliver, .commitOK, .unsubscribeOK, .topicList, .pong, .error,
            .replayResult, .reloadOK, .limitsState, .topicDescriptions, .groupsState, .brokerStats:
            self.send(.error(ErrorFrame(code: .invalidRequest, message: "\(request.frame.opcode) is not a request a client may send")), correlationID: correlationID)
        }
    }

    /// What a publish to one topic needs besides its records: the whole-request decision, the topic's appender and
    /// dedupe gate, and the header names its publish limiters read. Looked up once per topic and policy, not per
    /// request (a pipelining producer sends thousands of requests a second to one topic). A reload installs a new
    /// `Policy` object, which starts a new route; it opens a new topic's log before it installs the policy, and an
    /// open topic never closes while the broker runs, so a route never outlives what it looked up.
    /// A class: each request takes the route with one retain, not one per field.
    private final class PublishRoute {
        let topic: String
        let policy: Policy
        let access: (decision: Decision, rule: String)
        let appender: TopicAppender?
        let gate: DedupeGate?
        let limiterHeaderNames: [String]
        /// Whether the topic has publish limiters under this policy (without, its records are not judged).
        let hasPublishLimiters: Bool
        let sortMemo: PublishSorter.Memo

        init(
            topic: String, policy: Policy, access: (decision: Decision, rule: String), appender: TopicAppender?,
            gate: DedupeGate?, limiters: [LimiterDeclaration]
        ) {
            self.topic = topic
            self.policy = policy
            self.access = access
            self.appender = appender
            self.gate = gate
            self.limiterHeaderNames = LimiterEngine.headerNames(limiters)
            self.hasPublishLimiters = !limiters.isEmpty
            self.sortMemo = PublishSorter.Memo(topic: topic, policy: policy)
        }
    }

    /// The route of this connection's last publish.
    private var publishRoute: PublishRoute?
    /// The millisecond (`currentTimeMillis`) of this connection's last PUBLISH timed by `PublishStageTimers`.
    private var lastTimedMillis: Int64 = -1
    /// The provenance headers of this connection's last publish, with the millisecond and policy they are for: every
    /// request of one millisecond under one policy gets the same (a pipelining producer sends hundreds a millisecond).
    private var lastProvenance: (receivedAtMillis: Int64, policy: Policy, headers: [LogHeader])?

    private func route(to topic: String, policy: Policy, principal: Principal) -> PublishRoute {
        if let route = self.publishRoute, route.policy === policy, route.topic == topic { return route }
        let route = PublishRoute(
            topic: topic,
            policy: policy,
            // The whole-request checks only (topic, pattern); the record checks run per record in `PublishSorter`.
            access: policy.publishAccess(principal: principal, topic: topic),
            appender: self.core.appender(for: topic),
            gate: self.core.gate(for: topic),
            limiters: policy.limiters(for: topic, direction: .publish)
        )
        // A topic without an open log is looked up again next time.
        self.publishRoute = route.appender == nil ? nil : route
        return route
    }

    private func publish(_ publish: Publish, correlationID: UInt32, principal: Principal) {
        let receivedAt = currentTimeMillis()
        // The first request of each millisecond is timed through the publish path's stages (`PublishStageTimers`).
        var sampledAt: UInt64 = 0
        if receivedAt != self.lastTimedMillis {
            self.lastTimedMillis = receivedAt
            sampledAt = NIODeadline.now().uptimeNanoseconds
        }
        let policy = self.core.policy
        let route = self.route(to: publish.topic, policy: policy, principal: principal)
        let access = route.access
        if case .refuse(let code, let reason) = access.decision {
            let rule = access.rule
            self.logger.notice("publish refused", metadata: ["brokerd.topic": "\(publish.topic)", "brokerd.reason": "\(reason)"])
            self.audit(principal.clientID, AuditAction.publishRefuse, topic: publish.topic, decision: "refuse", reason: ErrorCode(code).name, rule: rule, detail: reason, policy: policy)
            self.core.topics.metrics(for: publish.topic)?.count(PublishTally(.refused, count: publish.recordCount))
            self.send(.error(ErrorFrame(code: ErrorCode(code), message: reason)), correlationID: correlationID)
            return
        }
        guard let appender = route.appender else {
            self.send(.error(ErrorFrame(code: .unknownTopic, message: "topic '\(publish.topic)' has no open log")), correlationID: correlationID)
            return
        }
        let limit = self.core.settings.maxRecordsPerPublish
        guard (1...limit).contains(publish.recordCount) else {
            appender.metrics.count(PublishTally(.refused, count: publish.recordCount))
            self.send(.error(ErrorFrame(code: .invalidRequest, message: "a PUBLISH carries 1 to \(limit) records; this one has \(publish.recordCount)")), correlationID: correlationID)
            return
        }
        guard self.core.beginAppend() else {
            appender.metrics.count(PublishTally(.failed, count: publish.recordCount))
            self.send(.error(ErrorFrame(code: .shuttingDown, message: "the broker is shutting down")), correlationID: correlationID)
            return
        }
        let limiterHeaderNames = route.limiterHeaderNames
        let stamps: [LogHeader]
        if let last = self.lastProvenance, last.receivedAtMillis == receivedAt, last.policy === policy {
            stamps = last.headers
        } else {
            stamps = PublishSorter.provenance(receivedAtMillis: receivedAt, principal: principal, policy: policy)
            self.lastProvenance = (receivedAt, policy, stamps)
        }
        var sorted = PublishSorter.sort(
            publish, principal: principal, policy: policy, receivedAtMillis: receivedAt,
            limiterHeaderNames: limiterHeaderNames, provenance: stamps, memo: route.sortMemo
        )
        let gate = route.gate
        if let gate { sorted.reserveKeys(gate) }
        // A topic without publish limiters passes every record: nothing is judged, and nothing copied for it. With
        // them the request's records are judged together (usually every one passes, and nothing changes).
        if route.hasPublishLimiters, let publishJudge = self.core.limits.publishJudge(
            topic: publish.topic, principal: principal, connectionID: self.connectionID, policy: policy
        ), let limits = publishJudge.judgeRequest(sorted, limiterHeaderNames: limiterHeaderNames) {
            let decisions = sorted.applyLimits(
                topic: publish.topic, producer: principal.clientID, receivedAtMillis: receivedAt,
                policyVersion: policy.policyVersion, gate: gate, decisions: limits
            )
            for decision in decisions { self.core.limits.count(decision.limiter, decision.decision) }
        }
        let delay = sorted.longestDelayNanos
        guard delay > 0, let eventLoop = self.context?.eventLoop else {
            if sorted.quarantined.isEmpty, !sorted.accepted.isEmpty, let eventLoop = self.context?.eventLoop {
                self.group(
                    sorted, appender: appender, gate: gate, correlationID: correlationID, sampledAt: sampledAt,
                    eventLoop: eventLoop
                )
            } else {
                self.appendAndAcknowledge(sorted, appender: appender, gate: gate, receivedAt: receivedAt, principal: principal, policy: policy, correlationID: correlationID)
            }
            return
        }
        let judge = Self.judgeMaker(
            limits: self.core.limits, topic: publish.topic, principal: principal, connectionID: self.connectionID,
            policy: policy, records: sorted.records, provenance: sorted.provenance, limiterHeaderNames: limiterHeaderNames
        )
        // A "delay" limiter holds its records (at most `maxPublishDelay`), then they are judged again. The closure
        // captures a copy made here: capturing `sorted` itself would put it in a heap box, with an exclusivity check
        // on every use above, for every request, delayed or not.
        var held = sorted
        let wait = min(delay, Self.maxPublishDelayNanos)
        eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(wait))) {
            held.resumeDelayed(gate: gate, judge: judge())
            self.appendAndAcknowledge(held, appender: appender, gate: gate, receivedAt: receivedAt, principal: principal, policy: policy, correlationID: correlationID)
        }
    }

    /// The longest a publish limiter with action "delay" holds a record before judging it again (then it is rejected
    /// if still limited).
    static let maxPublishDelayNanos: UInt64 = 2_000_000_000

    /// What makes the judge of one request's records against `topic`'s publish limiters, record by record, for the
    /// records a "delay" limiter held: the limiters and clocks are read each time it is called.
    private static func judgeMaker(
        limits: LimiterEngine, topic: String, principal: Principal, connectionID: UInt64, policy: Policy,
        records: EncodedPublishRecords, provenance: [LogHeader], limiterHeaderNames: [String]
    ) -> () -> (PublishSorter.Accepted) -> LimitDecision {
        {
            let publishJudge = limits.publishJudge(
                topic: topic, principal: principal, connectionID: connectionID, policy: policy
            )
            return { entry in
                guard let publishJudge else { return .pass }
                return publishJudge.judge(bytes: entry.valueBytes) {
                    PublishSorter.visitHeaders(
                        of: entry.place, in: records, provenance: provenance, named: $0,
                        limiterHeaderNames: limiterHeaderNames, $1
                    )
                }
            }
        }
    }

    /// Appends the sorted records (topic and `__quarantine`), settles their dedupe keys, audits quarantines, and
    /// sends the PUBLISH_ACK.
    private func appendAndAcknowledge(
        _ sorted: PublishSorter, appender: TopicAppender, gate: DedupeGate?, receivedAt: Int64, principal: Principal,
        policy: Policy, correlationID: UInt32
    ) {
        // Earlier publishes of this connection that wait in the group go to the appender first (their order kept).
        self.flushPublishGroup()
        guard let eventLoop = self.context?.eventLoop else {
            self.core.endAppend()
            return
        }
        let topic = appender.log.name
        func settle(_ acceptedResult: Result<Int64, LogStoreError>, _ quarantinedResult: Result<Int64, LogStoreError>) {
            if case .success = quarantinedResult {
                for entry in sorted.quarantined {
                    self.logger.notice("record quarantined", metadata: ["brokerd.topic": "\(topic)", "brokerd.reason": "\(entry.reason)", "brokerd.rule": "\(entry.rule)"])
                    self.audit(principal.clientID, AuditAction.publishQuarantine, topic: topic, decision: "quarantine", reason: entry.reason, rule: entry.rule, detail: entry.message, policy: policy)
                }
            }
            self.settle(sorted, gate: gate, appender: appender, correlationID: correlationID, accepted: acceptedResult, quarantined: quarantinedResult)
        }
        func logStoreError(_ error: any Error) -> LogStoreError {
            error as? LogStoreError ?? LogStoreError(.storageFailure, "\(error)")
        }
        guard !sorted.quarantined.isEmpty else {
            // The usual case, nothing quarantined: the one append's completion comes back to the event loop
            // directly (a promise and its future cost a pipelined single-record PUBLISH about 3,000 instructions).
            guard !sorted.accepted.isEmpty else {
                settle(.success(-1), .success(-1))
                return
            }
            let bound = NIOLoopBound(settle, eventLoop: eventLoop)
            appender.enqueue(stored: Self.storedAccepted(sorted)) { result in
                eventLoop.execute { bound.value(result.map(\.baseOffset), .success(-1)) }
            }
            return
        }
        let accepted: EventLoopFuture<Int64>
        if sorted.accepted.isEmpty {
            accepted = eventLoop.makeSucceededFuture(-1)
        } else {
            let promise = eventLoop.makePromise(of: Int64.self)
            appender.enqueue(stored: Self.storedAccepted(sorted)) { result in
                promise.completeWith(result.map(\.baseOffset).mapError { $0 })
            }
            accepted = promise.futureResult
        }
        let quarantined = self.append(sorted.quarantined.map(\.record), to: self.core.quarantine, on: eventLoop)
        // Each append settles on its own: a failure of one never reports the other's records as failed.
        EventLoopFuture.whenAllComplete([accepted, quarantined], on: eventLoop).assumeIsolated().whenSuccess { settled in
            settle(settled[0].mapError(logStoreError), settled[1].mapError(logStoreError))
        }
    }

    /// One request's appends settled (its quarantines already audited): its append slot is freed, its dedupe keys
    /// committed or released, a failure logged, and its PUBLISH_ACK sent (once every record that waited on another
    /// append of its key has its answer).
    private func settle(
        _ sorted: PublishSorter, gate: DedupeGate?, appender: TopicAppender, correlationID: UInt32,
        accepted: Result<Int64, LogStoreError>, quarantined: Result<Int64, LogStoreError>
    ) {
        self.core.endAppend()
        if let gate {
            sorted.settleKeys(gate, accepted: accepted, quarantined: quarantined, receivedAtMillis: sorted.receivedAtMillis)
        }
        if case .success(let base) = accepted, sorted.accepted.count == sorted.count {
            // Every record appended, in order, at offsets from `base` (the usual answer): the PUBLISH_ACK is written
            // straight from the base and the count, without a results array.
            appender.metrics.count(PublishTally(.ok, count: sorted.count))
            self.sendAllOKPublishAck(firstOffset: base, count: sorted.count, correlationID: correlationID)
            return
        }
        for case .failure(let error) in [accepted, quarantined] {
            self.logger.error("append failed", metadata: ["brokerd.topic": "\(appender.log.name)", "brokerd.error": "\(error)"])
        }
        let results = sorted.results(accepted: accepted, quarantined: quarantined)
        self.sendPublishAck(results, after: sorted.waiting, metrics: appender.metrics, correlationID: correlationID)
    }

    /// ``settle(_:gate:appender:correlationID:accepted:quarantined:)`` for a grouped request whose records were all
    /// accepted, none with a dedupe key to commit: the same effects, from its record count.
    private func settleAllAccepted(
        count: Int, appender: TopicAppender, correlationID: UInt32, accepted: Result<Int64, LogStoreError>
    ) {
        self.core.endAppend()
        switch accepted {
        case .success(let base):
            appender.metrics.count(PublishTally(.ok, count: count))
            self.sendAllOKPublishAck(firstOffset: base, count: count, correlationID: correlationID)
        case .failure(let error):
            self.logger.error("append failed", metadata: ["brokerd.topic": "\(appender.log.name)", "brokerd.error": "\(error)"])
            let failed = PublishResult(code: ErrorCode(error), offset: -1, message: error.message)
            self.sendPublishAck(
                [PublishResult](repeating: failed, count: count), after: [:], metrics: appender.metrics,
                correlationID: correlationID
            )
        }
    }

    // MARK: publish groups

    /// Publishes whose records were all accepted (nothing quarantined, nothing held by a "delay" limiter), in
    /// arrival order, for one topic: their records go to the appender as one queue entry, and one completion,
    /// brought back to the event loop by one task, settles them all. A pipelining producer sends many small
    /// PUBLISHes that arrive in one read; queueing and settling each on its own cost more than sorting it.
    private struct PublishGroup {
        struct Request {
            var correlationID: UInt32
            /// The request's record count (all of them accepted when `sorted` is nil).
            var count: Int
            /// The sorter, kept only when settling needs more than the count: some record not appended (a
            /// duplicate, a refusal, a wait on another append of its key) or a dedupe key to commit. Usually nil:
            /// the request's sorter is freed when it is grouped, not copied into the group.
            var sorted: PublishSorter?
            var gate: DedupeGate?
            /// When the request was decoded, if it is timed (`PublishStageTimers`); else 0.
            var sampledAt: UInt64
        }

        /// One request's accepted records (`accepted` their indices; nil: all of them) with what their stored
        /// layout needs: written on the thread that hands the group's batch to the log, not on this event loop.
        struct Part: Sendable {
            var records: EncodedPublishRecords
            var accepted: [Int]?
            var provenance: [LogHeader]
            var receivedAtMillis: Int64
        }

        let appender: TopicAppender
        let eventLoop: any EventLoop
        var parts: [Part] = []
        /// Records in `parts` and the bytes of their stored layout.
        var count = 0
        var storedBytes = 0
        var requests: [Request] = []
        /// Some request is timed (`Request.sampledAt`).
        var sampled = false

        /// The requests' accepted records, in their stored layout, in one buffer, back to back.
        ///
        /// It runs on the log's write queue for a deferred group, so it reads the parts in place, by index: a copy of
        /// a part (`for part in parts`) retained and released its references there, atomic instructions on objects
        /// (the connection's header-name table, the provenance headers, the read buffer) that the event loop was
        /// retaining for the next requests at the same time (perf of pipelined-single: 27% of the write queue's
        /// samples in `swift_retain` and `swift_release` before, 16% after; docs/benchmarks/HISTORY.md, round 17).
        static func build(_ parts: [Part], storedBytes: Int) -> StoredRecordBytes {
            var builder = StoredRecordsBuilder(capacity: storedBytes)
            for index in parts.indices {
                if let accepted = parts[index].accepted {
                    builder.append(
                        parts[index].records, indices: accepted, extraHeaders: parts[index].provenance,
                        receivedAtMillis: parts[index].receivedAtMillis
                    )
                } else {
                    builder.appendAll(
                        parts[index].records, extraHeaders: parts[index].provenance,
                        receivedAtMillis: parts[index].receivedAtMillis
                    )
                }
            }
            return builder.build()
        }
    }

    /// A group is sent to its appender once it holds this many stored bytes (a batch body may be up to 16 MiB; the
    /// appender batches up to 4 MiB).
    static let publishGroupMaxBytes = 1 << 20

    /// Adds an accepted-only publish to the group (sending the group first if it is for another topic, or if this
    /// request would take it past `publishGroupMaxBytes`: a large request goes on its own, as it would without
    /// groups). The group is sent once it holds `publishGroupMaxBytes`, when the current event-loop tick's reads are
    /// done, before any other request of this connection is served, before a publish that takes the other path, and
    /// when the connection closes: the records of one connection reach the log in the order their PUBLISHes arrived.
    private func group(
        _ sorted: PublishSorter, appender: TopicAppender, gate: DedupeGate?, correlationID: UInt32, sampledAt: UInt64,
        eventLoop: any EventLoop
    ) {
        // The group is taken out of `publishGroup`, changed as a local and put back: one access of the property
        // each way (each access of a class's stored property is a run-time exclusivity check), and no copy.
        var group: PublishGroup
        if let current = self.publishGroup.take() {
            if current.appender !== appender
                || current.storedBytes + 2 * sorted.records.bytes.readableBytes > Self.publishGroupMaxBytes
            {
                self.publishGroup = current
                self.flushPublishGroup()
                group = self.startPublishGroup(appender: appender, eventLoop: eventLoop)
            } else {
                group = current
            }
        } else {
            group = self.startPublishGroup(appender: appender, eventLoop: eventLoop)
        }
        let all = sorted.accepted.count == sorted.count
        let accepted = all ? nil : sorted.accepted.map(\.index)
        let storedBytes =
            if let accepted {
                StoredRecordsBuilder.storedSize(of: sorted.records, indices: accepted, extraHeaders: sorted.provenance)
            } else {
                StoredRecordsBuilder.storedSizeOfAll(sorted.records, extraHeaders: sorted.provenance)
            }
        // Made in place in the array: a part made first and then appended was copied (its references retained, and
        // released with the local).
        group.parts.append(
            PublishGroup.Part(
                records: sorted.records, accepted: accepted, provenance: sorted.provenance,
                receivedAtMillis: sorted.receivedAtMillis
            )
        )
        group.count += sorted.accepted.count
        group.storedBytes += storedBytes
        let plain = all && (gate == nil || sorted.accepted.allSatisfy { $0.ticket == nil })
        group.requests.append(
            PublishGroup.Request(
                correlationID: correlationID, count: sorted.count, sorted: plain ? nil : sorted, gate: plain ? nil : gate,
                sampledAt: sampledAt
            )
        )
        if sampledAt != 0 { group.sampled = true }
        let full = group.storedBytes >= Self.publishGroupMaxBytes
        self.publishGroup = group
        if full { self.flushPublishGroup() }
    }

    /// A new, empty publish group, with its flush scheduled for the end of this tick if none is.
    private func startPublishGroup(appender: TopicAppender, eventLoop: any EventLoop) -> PublishGroup {
        if !self.publishGroupFlushScheduled {
            self.publishGroupFlushScheduled = true
            // Runs after this tick's reads (the event loop runs its tasks after handling I/O events).
            eventLoop.assumeIsolated().execute {
                self.publishGroupFlushScheduled = false
                self.flushPublishGroup()
            }
        }
        return PublishGroup(appender: appender, eventLoop: eventLoop)
    }

    /// A publish group whose requests carry fewer records than this on average is laid out on the log's write
    /// queue (`TopicAppender.DeferredRecords`), a larger one on the event loop.
    static let deferredLayoutMaxRecordsPerRequest = 8

    /// Hands the group's records to its appender (one queue entry) and settles its requests when they are appended.
    private func flushPublishGroup() {
        guard let group = self.publishGroup else { return }
        self.publishGroup = nil
        let bound = NIOLoopBound((handler: self, requests: group.requests), eventLoop: group.eventLoop)
        let eventLoop = group.eventLoop
        let appender = group.appender
        let (parts, count, storedBytes) = (group.parts, group.count, group.storedBytes)
        // Timed requests: when the group was handed over, and (below) when the log reported it durable (or failed).
        let stages = group.sampled ? self.core.metrics.publishStages : nil
        let handedAt = stages == nil ? 0 : NIODeadline.now().uptimeNanoseconds
        if let stages {
            for index in group.requests.indices where group.requests[index].sampledAt != 0 {
                stages.handed(decodedAt: group.requests[index].sampledAt, handedAt: handedAt)
            }
        }
        let completion: TopicAppender.Completion = { result in
            let durableAt = stages == nil ? 0 : NIODeadline.now().uptimeNanoseconds
            eventLoop.execute {
                let (handler, requests) = bound.value
                var base = (try? result.get())?.baseOffset ?? -1
                // By index: the requests are read in place, not copied out one by one.
                for index in requests.indices {
                    let accepted = result.map { _ in base }
                    if let sorted = requests[index].sorted {
                        base += Int64(sorted.accepted.count)
                        handler.settle(
                            sorted, gate: requests[index].gate, appender: appender,
                            correlationID: requests[index].correlationID, accepted: accepted, quarantined: .success(-1)
                        )
                    } else {
                        base += Int64(requests[index].count)
                        handler.settleAllAccepted(
                            count: requests[index].count, appender: appender,
                            correlationID: requests[index].correlationID, accepted: accepted
                        )
                    }
                    if let stages, requests[index].sampledAt != 0 {
                        stages.answered(decodedAt: requests[index].sampledAt, handedAt: handedAt, durableAt: durableAt)
                    }
                }
            }
        }
        // A group of small requests (a pipelining producer: its connection's event loop is what bounds it) is laid
        // out and encoded on the log's write queue. Larger requests are laid out here, on their connections' event
        // loops, and encoded and compressed here too (`TopicAppender.enqueue(stored:)`), leaving the topic's write
        // queue, which takes one append at a time, only the write and the fdatasync (durable-publish, 100 records a
        // request from 4 connections, lost about a tenth when the queue also laid them out; docs/benchmarks/HISTORY.md
        // round 29 for the compression).
        guard count < Self.deferredLayoutMaxRecordsPerRequest * group.requests.count else {
            appender.enqueue(stored: PublishGroup.build(parts, storedBytes: storedBytes), completion: completion)
            return
        }
        let deferred = TopicAppender.DeferredRecords(count: count, storedBytes: storedBytes) {
            PublishGroup.build(parts, storedBytes: storedBytes)
        }
        appender.enqueue(deferred: deferred, completion: completion)
    }

    /// Sends the PUBLISH_ACK once every record that waited on another append of its dedupe key has its answer.
    /// (The waits start after this request's own appends were committed, so a key repeated inside one request
    /// resolves at once.)
    /// Each record's outcome is counted in `metrics` once its result is final.
    private func sendPublishAck(
        _ results: [PublishResult], after waiting: [Int: DedupeWaiter], metrics: TopicMetrics, correlationID: UInt32
    ) {
        guard !waiting.isEmpty, let eventLoop = self.context?.eventLoop else {
            metrics.count(PublishTally(results))
            self.send(.publishAck(PublishAck(results: results)), correlationID: correlationID)
            return
        }
        let pending = NIOLoopBoundBox((results: results, remaining: waiting.count), eventLoop: eventLoop)
        let bound = NIOLoopBound(self, eventLoop: eventLoop)
        for (index, waiter) in waiting {
            waiter.whenResolved { resolution in
                eventLoop.execute {
                    pending.value.results[index] = PublishSorter.result(after: resolution)
                    pending.value.remaining -= 1
                    if pending.value.remaining == 0 {
                        metrics.count(PublishTally(pending.value.results))
                        bound.value.send(.publishAck(PublishAck(results: pending.value.results)), correlationID: correlationID)
                    }
                }
            }
        }
    }

    /// The accepted records of `sorted` in their stored form, written from the frame's bytes with the provenance
    /// headers.
    private static func storedAccepted(_ sorted: PublishSorter) -> StoredRecordBytes {
        StoredRecordBytes(
            sorted.records, accepted: sorted.accepted, extraHeaders: sorted.provenance,
            receivedAtMillis: sorted.receivedAtMillis
        )
    }

    /// Appends `records` (none: succeeds at once with offset -1) and completes on `eventLoop` with the base offset.
    private func append(_ records: [LogRecord], to appender: TopicAppender, on eventLoop: any EventLoop) -> EventLoopFuture<Int64> {
        guard !records.isEmpty else { return eventLoop.makeSucceededFuture(-1) }
        let promise = eventLoop.makePromise(of: Int64.self)
        appender.enqueue(records) { result in promise.completeWith(result.map(\.baseOffset).mapError { $0 }) }
        return promise.futureResult
    }

    private func replay(_ offsets: [Int64], correlationID: UInt32, principal: Principal) {
        let policy = self.core.policy
        guard policy.hasCapability(principal, .quarantineReplay) else {
            self.audit(principal.clientID, AuditAction.quarantineReplay, topic: "", decision: "refuse", reason: "CAPABILITY_REQUIRED", detail: "role '\(principal.role)' lacks capability 'quarantine.replay'; offsets \(offsets)", policy: policy)
            self.send(.error(ErrorFrame(code: .capabilityRequired, message: "role '\(principal.role)' lacks capability 'quarantine.replay'")), correlationID: correlationID)
            return
        }
        let limit = self.core.settings.maxRecordsPerPublish
        guard (1...limit).contains(offsets.count) else {
            self.send(.error(ErrorFrame(code: .invalidRequest, message: "a QUARANTINE_REPLAY names 1 to \(limit) offsets; this one has \(offsets.count)")), correlationID: correlationID)
            return
        }
        guard self.core.beginAppend() else {
            self.send(.error(ErrorFrame(code: .shuttingDown, message: "the broker is shutting down")), correlationID: correlationID)
            return
        }
        let core = self.core
        let loopBound = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
        let eventLoop = self.context!.eventLoop
        Task {
            let results = await core.replayer.replay(offsets, by: principal.clientID, policy: policy) { result in
                let detail = result.outcome == .replayed ? "quarantine offset \(result.quarantineOffset) -> \(result.topic) offset \(result.newOffset)" : "quarantine offset \(result.quarantineOffset): \(result.message)"
                core.audit.record(AuditEntry(
                    time: currentTimeMillis(), principal: principal.clientID, action: AuditAction.quarantineReplay,
                    topic: result.topic, decision: "\(result.outcome)", reason: result.reason,
                    policyVersion: policy.policyVersion, detail: detail + (result.isEarlier ? " (replayed earlier)" : "")
                ))
            }
            core.endAppend()
            eventLoop.execute {
                loopBound.value.send(.replayResult(results), correlationID: correlationID)
            }
        }
    }

    private func reload(correlationID: UInt32, principal: Principal) {
        guard self.core.policy.hasCapability(principal, .admin) else {
            self.audit(principal.clientID, AuditAction.configReloadReject, topic: "", decision: "refuse", reason: "CAPABILITY_REQUIRED", detail: "role '\(principal.role)' lacks capability 'admin'")
            self.send(.error(ErrorFrame(code: .capabilityRequired, message: "role '\(principal.role)' lacks capability 'admin'")), correlationID: correlationID)
            return
        }
        let core = self.core
        let bound = NIOLoopBound(self, eventLoop: self.context!.eventLoop)
        let eventLoop = self.context!.eventLoop
        Task {
            let result = await core.reload(requestedBy: principal.clientID)
            eventLoop.execute {
                switch result {
                case .success(let ok): bound.value.send(.reloadOK(ok), correlationID: correlationID)
                case .failure(let rejected): bound.value.send(.error(ErrorFrame(code: .configRejected, message: rejected.message)), correlationID: correlationID)
                }
            }
        }
    }

    private func limits(_ query: LimitsQuery, correlationID: UInt32, principal: Principal) {
        let policy = self.core.policy
        guard policy.hasCapability(principal, .admin) else {
            self.send(.error(ErrorFrame(code: .capabilityRequired, message: "role '\(principal.role)' lacks capability 'admin'")), correlationID: correlationID)
            return
        }
        let declarations = query.limiter.isEmpty ? policy.limiters : policy.limiter(named: query.limiter).map { [$0] } ?? []
        guard !declarations.isEmpty || query.limiter.isEmpty else {
            let names = policy.limiters.map(\.name).joined(separator: ", ")
            self.send(.error(ErrorFrame(code: .invalidRequest, message: "no limiter '\(query.limiter)'; declared: \(names)")), correlationID: correlationID)
            return
        }
        self.send(.limitsState(self.core.limits.states(declarations, key: query.key)), correlationID: correlationID)
    }

    /// The policy changed (a reload): this connection's principal and every live subscription are judged again.
    /// A principal no longer declared is disconnected; a subscription no longer allowed ends at once with
    /// NOT_CLEARED, and nothing more of it is sent — reads already in flight are checked again when they complete.
    private func policyChanged() {
        guard let current = self.machine.principal else { return }
        let (policy, generation) = self.core.policyState
        // A certificate-authenticated connection keeps its principal only while the certificate still maps to it.
        var stillMapped = true
        if let identities = self.certificateIdentities,
            case .refused = policy.authenticate(certificate: identities, clientID: current.clientID)
        {
            stillMapped = false
        }
        guard stillMapped, let entry = policy.config.principals.first(where: { $0.clientID == current.clientID }),
            let role = policy.role(named: entry.role)
        else {
            let message = stillMapped
                ? "principal '\(current.clientID)' was removed by a config reload"
                : "the client certificate no longer maps to principal '\(current.clientID)' after a config reload"
            for subscription in self.subscriptions.values { self.revoke(subscription, reason: message, rule: "reload.principal", policy: policy) }
            self.logger.notice("principal removed by reload; closing")
            self.audit(current.clientID, AuditAction.authFailure, topic: "", decision: "revoke", reason: "UNAUTHENTICATED", rule: "reload.principal", detail: "\(message); connection closed", policy: policy)
            self.machine.decodeFailed()
            self.sendErrorAndClose(ErrorFrame(code: .unauthenticated, message: message), correlationID: 0)
            return
        }
        let principal = Principal(clientID: current.clientID, role: role.name, clearance: role.clearance)
        if principal != current { self.machine.principalChanged(principal) }
        for subscription in Array(self.subscriptions.values) {
            _ = self.recheck(subscription, policy: policy, generation: generation)
        }
    }

    /// Judges a subscription again under `policy`; ends it (ERROR NOT_CLEARED, audited) when refused.
    /// Returns whether it may go on.
    private func recheck(_ subscription: Subscription, policy: Policy, generation: UInt64) -> Bool {
        guard subscription.checkedGeneration != generation else { return true }
        guard let principal = self.machine.principal else { return false }
        subscription.principal = principal
        let verdict = policy.subscribeVerdict(principal: principal, topic: subscription.topic)
        guard case .refuse(_, let reason) = verdict.decision else {
            subscription.checkedGeneration = generation
            return true
        }
        self.revoke(subscription, reason: reason, rule: verdict.ruleID, policy: policy)
        return false
    }

    private func revoke(_ subscription: Subscription, reason: String, rule: String, policy: Policy) {
        guard self.subscriptions.removeValue(forKey: subscription.id) != nil else { return }
        self.core.metrics.subscriptionsRevoked.increment()
        self.endSubscription(subscription)
        self.logger.notice("subscription revoked", metadata: ["brokerd.topic": "\(subscription.topic)", "brokerd.subscription": "\(subscription.id)", "brokerd.reason": "\(reason)"])
        self.audit(subscription.principal.clientID, AuditAction.subscriptionRevoke, topic: subscription.topic, decision: "revoke", reason: "NOT_CLEARED", rule: rule, detail: "subscription \(subscription.id): \(reason)", policy: policy)
        self.send(.error(ErrorFrame(code: .notCleared, message: "subscription \(subscription.id) revoked: \(reason)")), correlationID: subscription.correlationID)
    }

    private func subscribe(_ request: Subscribe, correlationID: UInt32, principal: Principal) {
        let (policy, generation) = self.core.policyState
        let verdict = policy.subscribeVerdict(principal: principal, topic: request.topic)
        if case .refuse(let code, let reason) = verdict.decision {
            self.logger.notice("subscription refused", metadata: ["brokerd.topic": "\(request.topic)", "brokerd.code": "\(ErrorCode(code).name)", "brokerd.reason": "\(reason)"])
            self.audit(principal.clientID, AuditAction.subscribeRefuse, topic: request.topic, decision: "refuse", reason: ErrorCode(code).name, rule: verdict.ruleID, detail: reason, policy: policy)
            self.core.metrics.subscriptionRefused(ErrorCode(code))
            self.send(.error(ErrorFrame(code: ErrorCode(code), message: reason)), correlationID: correlationID)
            return
        }
        guard let log = self.core.log(for: request.topic), let metrics = self.core.topics.metrics(for: request.topic)
        else {
            self.core.metrics.subscriptionRefused(.unknownTopic)
            self.send(.error(ErrorFrame(code: .unknownTopic, message: "topic '\(request.topic)' has no open log")), correlationID: correlationID)
            return
        }
        let start: Int64
        switch request.start {
        case .earliest:
            start = log.startOffset
        case .latest:
            start = log.endOffset
        case .offset(let offset):
            guard offset <= log.endOffset, offset >= 0 else {
                self.core.metrics.subscriptionRefused(.offsetOutOfRange)
                self.send(.error(ErrorFrame(code: .offsetOutOfRange, message: "offset \(offset) is outside \(log.startOffset)...\(log.endOffset) of '\(request.topic)'")), correlationID: correlationID)
                return
            }
            start = max(offset, log.startOffset)
        case .committed:
            guard !request.group.isEmpty else {
                self.core.metrics.subscriptionRefused(.invalidRequest)
                self.send(.error(ErrorFrame(code: .invalidRequest, message: "start 'committed' needs a consumer group")), correlationID: correlationID)
                return
            }
            let committed = self.core.offsets.committed(group: request.group, topic: request.topic) ?? log.startOffset
            start = min(max(committed, log.startOffset), log.endOffset)
        }
        let id = self.nextSubscriptionID
        self.nextSubscriptionID &+= 1
        let eventLoop = self.context!.eventLoop
        let subscription = Subscription(
            id: id,
            correlationID: correlationID,
            topic: request.topic,
            principal: principal,
            group: request.group,
            log: log,
            metrics: metrics,
            machine: SubscriptionStateMachine(startOffset: start, endOffset: log.endOffset, initialCredit: request.initialCredit),
            checkedGeneration: generation,
            listener: SubscriptionListener(eventLoop: eventLoop)
        )
        let boundSelf = NIOLoopBound(self, eventLoop: eventLoop)
        subscription.listener.onAdvance = { endOffset, notifiedAt in
            let handler = boundSelf.value
            guard let subscription = handler.subscriptions[id] else { return }
            handler.wake(subscription, endOffset: endOffset, notifiedAt: notifiedAt)
        }
        self.subscriptions[id] = subscription
        self.core.addListener(subscription.listener, topic: request.topic)
        self.logger.info("subscribed", metadata: ["brokerd.topic": "\(request.topic)", "brokerd.subscription": "\(id)", "brokerd.start": "\(start)"])
        self.audit(principal.clientID, AuditAction.subscribeAllow, topic: request.topic, decision: "allow", rule: verdict.ruleID, detail: "subscription \(id) from offset \(start)", policy: policy)
        self.send(.subscribeOK(SubscribeOK(subscriptionID: id, startOffset: start, endOffset: log.endOffset)), correlationID: correlationID)
        // The log may have advanced between reading endOffset and registering the listener.
        self.run(subscription.machine.dataAvailable(endOffset: log.endOffset), for: subscription)
    }

    private func commit(_ commit: Commit, correlationID: UInt32, principal: Principal) {
        if case .refuse(let code, let reason) = self.core.policy.subscribeDecision(principal: principal, topic: commit.topic) {
            self.send(.error(ErrorFrame(code: ErrorCode(code), message: reason)), correlationID: correlationID)
            return
        }
        guard let log = self.core.log(for: commit.topic) else {
            self.send(.error(ErrorFrame(code: .unknownTopic, message: "topic '\(commit.topic)' has no open log")), correlationID: correlationID)
            return
        }
        guard !commit.group.isEmpty, commit.offset >= 0, commit.offset <= log.endOffset else {
            self.send(.error(ErrorFrame(code: .invalidRequest, message: "commit needs a group and an offset in 0...\(log.endOffset); got group '\(commit.group)' offset \(commit.offset)")), correlationID: correlationID)
            return
        }
        let offsets = self.core.offsets
        let eventLoop = self.context!.eventLoop
        self.readPool.runIfActive(eventLoop: eventLoop) {
            try offsets.commit(group: commit.group, topic: commit.topic, offset: commit.offset)
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success:
                self.send(.commitOK, correlationID: correlationID)
            case .failure(let error):
                self.logger.error("commit failed", metadata: ["brokerd.group": "\(commit.group)", "brokerd.error": "\(error)"])
                self.send(.error(ErrorFrame(code: .storageFailure, message: "commit not stored: \(error)")), correlationID: correlationID)
            }
        }
    }

    private func topicList(for principal: Principal) -> [TopicInfo] {
        let policy = self.core.policy
        return (policy.config.topics + policy.reservedTopics).map { topic in
            let log = self.core.log(for: topic.name)
            return TopicInfo(
                name: topic.name,
                sensitivity: topic.sensitivity,
                startOffset: log?.startOffset ?? 0,
                endOffset: log?.endOffset ?? 0,
                access: Inspection.access(principal, topic: topic.name, policy: policy)
            )
        }
    }

    // MARK: delivery

    /// The log reported records readable at `notifiedAt` (up to `endOffset`). The first wake-up of each millisecond
    /// that starts a read has that read timed through the delivery path's stages (`DeliveryStageTimers`).
    private func wake(_ subscription: Subscription, endOffset: Int64, notifiedAt: UInt64) {
        let action = subscription.machine.dataAvailable(endOffset: endOffset)
        if case .read = action {
            let now = NIODeadline.now().uptimeNanoseconds
            if now / 1_000_000 != subscription.lastTimedWakeMillis {
                subscription.lastTimedWakeMillis = now / 1_000_000
                subscription.timedWake = (notifiedAt, now)
            }
        }
        self.run(action, for: subscription)
    }

    private func run(_ action: SubscriptionStateMachine.Action, for subscription: Subscription) {
        guard let eventLoop = self.context?.eventLoop else { return }
        if case .resume(let nanos) = action {
            eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(min(nanos, UInt64(Int64.max))))) {
                guard self.subscriptions[subscription.id] === subscription else { return }  // ended meanwhile
                self.run(subscription.machine.paceElapsed(), for: subscription)
            }
            return
        }
        guard case .read(let from, let maxRecords) = action else { return }
        let log = subscription.log
        // A read resumes on the records the last one left over, without reading and decoding their batch again:
        // a read returns the whole of its last batch, and credit (or a quota, a few records per wake-up) lets
        // only part of it go. Re-reading the rest each time cost a second decode of most batches (and made
        // pacing O(n²)). Records retention has deleted since are not served from memory.
        if let ahead = subscription.takeReadAhead(from: from, logStart: log.startOffset) {
            self.readFinished(.success(ahead), from: from, maxRecords: maxRecords, for: subscription)
            return
        }
        // A consumer that keeps up reads the newest batches, which the log still holds as written: that read does
        // no file I/O, so it runs here rather than costing two thread hand-offs through the read pool.
        if log.readsFromMemory(from: from) {
            let result = Result { () throws(LogStoreError) -> RawRecords in
                try log.readRaw(from: from, maxRecords: maxRecords, maxBytes: Self.readMaxBytes)
            }
            self.readFinished(result.mapError { $0 }, from: from, maxRecords: maxRecords, for: subscription)
            return
        }
        self.readPool.runIfActive(eventLoop: eventLoop) {
            try log.readRaw(from: from, maxRecords: maxRecords, maxBytes: Self.readMaxBytes)
        }.assumeIsolated().whenComplete { result in
            self.readFinished(result, from: from, maxRecords: maxRecords, for: subscription)
        }
    }

    /// Judges and delivers the first `maxRecords` records a read returned (the others wait as read-ahead), then
    /// performs the subscription's next action.
    private func readFinished(
        _ result: Result<RawRecords, any Error>, from: Int64, maxRecords: Int, for subscription: Subscription
    ) {
        guard self.subscriptions[subscription.id] === subscription else { return }  // ended meanwhile
        let log = subscription.log
        let timedWake = subscription.timedWake
        subscription.timedWake = nil
        switch result {
        case .success(let read):
            let records = read.count > maxRecords ? read.prefix(maxRecords) : read
            // Consent is checked now, against the policy in force, not when the subscription started; a reload
            // since the subscription was last judged is applied before anything read is sent.
            let (policy, generation) = self.core.policyState
            guard self.recheck(subscription, policy: policy, generation: generation) else { return }
            // The records stay as their stored bytes: policy reads their headers in place, and the DELIVER is
            // copied from them (a `LogRecord` and a `WireRecord` per record cost more than the rest of the path).
            // The topic and the role are looked up once per read; each record's consent headers are judged on
            // their own (the same verdicts as `deliveryDecision` per record).
            let judge = policy.deliveryJudge(principal: subscription.principal, topic: subscription.topic)
            let verdicts = (0..<records.count).map { index in
                judge.verdict { records.visitHeaders(at: index, named: $0, $1) }
            }
            let deliverable = verdicts.map { $0 == .deliver }
            // A delivery quota (a delivery limiter) decides how many of the records the credit allows go now.
            let candidates = (0..<records.count).filter { deliverable[$0] }
                .prefix(subscription.machine.deliveryCandidates(deliverable))
            let (allowed, retry) = self.core.limits.paceDelivery(
                // The stored size less 4 is `LogRecord.approximateSize` (fields plus 16, plus 8 per header).
                topic: subscription.topic, sizes: candidates.map { records.storedSize(at: $0) - 4 },
                principal: subscription.principal, connectionID: self.connectionID, group: subscription.group,
                policy: policy
            )
            let outcome = subscription.machine.readCompleted(
                offsets: (0..<records.count).map { records.offset(at: $0) },
                deliverable: deliverable,
                endOffset: log.endOffset,
                allowed: allowed,
                retryAfterNanos: retry
            )
            var withheld = 0
            for index in 0..<outcome.consumed {
                if case .withhold(let scope, let rule) = verdicts[index] {
                    subscription.withheld(scope: scope, rule: rule)
                    withheld += 1
                }
            }
            subscription.metrics.withheld(withheld)
            if !outcome.deliver.isEmpty {
                let frame: Deliver
                if let encoded = EncodedDeliveredRecords(records, indices: outcome.deliver) {
                    frame = Deliver(subscriptionID: subscription.id, encoded: encoded)
                } else {
                    let delivered = outcome.deliver.map { DeliveredRecord(stored: records.storedRecord(at: $0)) }
                    frame = Deliver(subscriptionID: subscription.id, records: delivered)
                }
                subscription.metrics.deliveredRecords.increment(by: outcome.deliver.count)
                let bytes = records.valueBytes(outcome.deliver)
                subscription.metrics.deliveredBytes.increment(by: bytes)
                self.send(.deliver(frame), correlationID: 0)
                if let timedWake { self.timeDelivery(timedWake) }
            }
            if subscription.withheldAuditDue(nowMillis: currentTimeMillis()) { self.auditWithheld(subscription, policy: policy) }
            // A subscription that waits for credit keeps at most one read's bytes (`readMaxBytes`) of decoded
            // batches, however long its consumer stalls; one that goes on reading keeps what its read held.
            if outcome.consumed < read.count {
                let rest = read.dropFirst(outcome.consumed)
                if outcome.next != .none || rest.retainedBytes <= Self.readMaxBytes {
                    let kept = subscription.keepReadAhead(rest)
                    // Waiting for credit: a consumer that keeps up sends it within moments. One that does not
                    // (stalled) loses the read-ahead after `stalledReadAheadNanos`, so it holds no broker memory
                    // beyond what its credit let through; the next read goes to the log.
                    if outcome.next == .none, let eventLoop = self.context?.eventLoop {
                        eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Self.stalledReadAheadNanos)) {
                            subscription.dropReadAhead(ifStill: kept)
                        }
                    }
                }
            }
            self.run(outcome.next, for: subscription)
        case .failure(let error as LogStoreError) where error.kind == .offsetOutOfRange && from < log.startOffset:
            self.logger.notice("subscription fell behind retention; skipping ahead", metadata: ["brokerd.topic": "\(subscription.topic)", "brokerd.from": "\(from)", "brokerd.log_start": "\(log.startOffset)"])
            self.run(subscription.machine.fellBehind(logStart: log.startOffset), for: subscription)
        case .failure(let error):
            self.logger.error("read failed; ending subscription", metadata: ["brokerd.topic": "\(subscription.topic)", "brokerd.error": "\(error)"])
            self.subscriptions[subscription.id] = nil
            self.endSubscription(subscription)
            let code = (error as? LogStoreError).map(ErrorCode.init) ?? .storageFailure
            self.send(.error(ErrorFrame(code: code, message: "subscription \(subscription.id) ended: \(error)")), correlationID: subscription.correlationID)
        }
    }

    /// Times the DELIVER just encoded, of the read wake-up `wake` started: its stages up to now, and, once its
    /// bytes are written to the socket (a write queued after them completes), the last one and the total.
    private func timeDelivery(_ wake: (notifiedAt: UInt64, wokeAt: UInt64)) {
        guard let context = self.context else { return }
        let stages = self.core.metrics.deliveryStages
        let encodedAt = NIODeadline.now().uptimeNanoseconds
        stages.encoded(notifiedAt: wake.notifiedAt, wokeAt: wake.wokeAt, encodedAt: encodedAt)
        // What this tick encoded so far goes first (as the flush at its end would write it: both leave in one
        // writev), so the empty write after it completes once the DELIVER's last byte is written.
        if self.outbound.readableBytes > 0 {
            let bytes = self.outbound
            self.outbound = ByteBuffer()
            context.write(self.wrapOutboundOut(bytes), promise: nil)
        }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(self.wrapOutboundOut(ByteBuffer()), promise: written)
        written.futureResult.whenSuccess { stages.written(notifiedAt: wake.notifiedAt, encodedAt: encodedAt) }
    }

    private func endSubscription(_ subscription: Subscription) {
        self.auditWithheld(subscription, policy: self.core.policy)
        subscription.machine.end()
        subscription.listener.onAdvance = nil
        self.core.removeListener(subscription.listener, topic: subscription.topic)
    }

    /// Records the subscription's withheld deliveries, one entry per consent scope with its count.
    private func auditWithheld(_ subscription: Subscription, policy: Policy) {
        for (scope, tally) in subscription.takeWithheld() {
            self.audit(
                subscription.principal.clientID, AuditAction.deliveryWithhold, topic: subscription.topic,
                decision: "withhold", reason: "CONSENT_SCOPE_NOT_RECEIVABLE", rule: tally.rule,
                detail: "subscription \(subscription.id): records with consent_scope '\(scope)'", count: tally.count,
                policy: policy
            )
        }
    }

    // MARK: audit

    private func audit(
        _ principal: String, _ action: String, topic: String, decision: String, reason: String = "", rule: String = "",
        detail: String = "", count: Int = 1, policy: Policy? = nil
    ) {
        self.core.audit.record(
            AuditEntry(
                time: currentTimeMillis(), principal: principal, action: action, topic: topic, decision: decision,
                reason: reason, rule: rule, policyVersion: (policy ?? self.core.policy).policyVersion, count: count,
                detail: detail
            )
        )
    }

    // MARK: output

    /// Encodes `frame` onto this tick's outbound bytes. The frames a tick produces (a group commit acknowledges many
    /// publishes at once) leave as one buffer in one write syscall; encoding them here instead of passing each
    /// through the pipeline to an encoder saved a buffer, a pipeline walk and a pending-write entry per frame.
    private func send(_ frame: Frame, correlationID: UInt32) {
        guard let context = self.context, context.channel.isActive else { return }
        guard self.encode(TaggedFrame(correlationID: correlationID, frame: frame), context: context) else { return }
        self.scheduleFlush(context)
    }

    /// `send` of a PUBLISH_ACK whose `count` results are all OK at offsets from `firstOffset`, encoded from those two
    /// numbers (`FrameCodec.encodeAllOKPublishAck`: the same bytes, no results array, nothing to validate).
    private func sendAllOKPublishAck(firstOffset: Int64, count: Int, correlationID: UInt32) {
        guard let context = self.context, context.channel.isActive else { return }
        FrameCodec.encodeAllOKPublishAck(
            correlationID: correlationID, firstOffset: firstOffset, count: count, into: &self.outbound
        )
        self.scheduleFlush(context)
    }

    /// Writes and flushes this tick's outbound bytes at its end (once, however many frames it encodes).
    private func scheduleFlush(_ context: ChannelHandlerContext) {
        guard !self.flushScheduled else { return }
        self.flushScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.flushScheduled = false
            self.flushOutbound(context, promise: nil)
        }
    }

    /// Appends the frame's bytes to `outbound`; false (nothing appended, the error logged) when it is not valid to
    /// send: a broker bug, never the client's. A DELIVER of stored records (up to `readMaxBytes` of them) is not
    /// copied: its head ends `outbound`, which is written (not flushed) with the records' own buffer after it.
    private func encode(_ frame: TaggedFrame, context: ChannelHandlerContext) -> Bool {
        do {
            try FrameCodec.validate(frame)
        } catch {
            self.logger.error("frame not sent: invalid", metadata: ["brokerd.error": "\(error)"])
            return false
        }
        if let records = FrameCodec.encodeHead(frame, into: &self.outbound) {
            let head = self.outbound
            self.outbound = ByteBuffer()
            context.write(self.wrapOutboundOut(head), promise: nil)
            context.write(self.wrapOutboundOut(records), promise: nil)
        } else {
            FrameCodec.encode(frame, into: &self.outbound)
        }
        return true
    }

    /// Writes what `send` encoded since the last write, and flushes.
    private func flushOutbound(_ context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let bytes = self.outbound
        self.outbound = ByteBuffer()
        context.write(self.wrapOutboundOut(bytes), promise: promise)
        context.flush()
    }

    /// How long a connection closed after an ERROR keeps reading (and dropping) what the client still sends, at most:
    /// see `sendErrorAndClose`.
    static let lingerSeconds: Int64 = 2

    /// Sends `error`, then closes the connection without losing it.
    ///
    /// With `linger` (every case but the connection limit): a close while bytes the client sent are still unread
    /// makes the kernel answer with a reset, and a reset makes the client's next read fail before it has read the
    /// ERROR (a HELLO, a garbage frame and 4 MiB more lost it in 4 runs of 5). So the output is shut after the ERROR
    /// (the client reads it, then the end of the stream), what the client still sends is read and dropped (the
    /// state machine is closed, the frame reader stops at the first bad frame), and the connection closes when the
    /// client closes its side, or after `lingerSeconds`. Where the output cannot be shut alone (TLS may not support
    /// it), it closes at once, as without `linger`. A refusal at the connection limit closes at once: a flood of
    /// refused connections must not hold descriptors.
    private func sendErrorAndClose(_ error: ErrorFrame, correlationID: UInt32, linger: Bool = true) {
        guard let context = self.context, !self.closingAfterError else { return }
        self.closingAfterError = true
        if self.clientAuth != nil && !self.tlsEstablished {
            // The frame waits in the TLS handler for a handshake that may never complete (the connection limit
            // refuses right after accept): close after the handshake timeout at the latest.
            let seconds = Int64(self.core.settings.handshakeTimeoutSeconds)
            context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(seconds)) { context.close(promise: nil) }
        }
        // After everything sent before it.
        _ = self.encode(TaggedFrame(correlationID: correlationID, frame: .error(error)), context: context)
        let written = context.eventLoop.makePromise(of: Void.self)
        self.flushOutbound(context, promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in
            guard linger else {
                context.close(promise: nil)
                return
            }
            // Nothing more is sent: the subscriptions end now, not when the connection closes.
            for (_, subscription) in self.subscriptions { self.endSubscription(subscription) }
            self.subscriptions.removeAll()
            let outputClosed = context.eventLoop.makePromise(of: Void.self)
            context.close(mode: .output, promise: outputClosed)
            outputClosed.futureResult.assumeIsolated().whenFailure { _ in context.close(promise: nil) }
            context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(Self.lingerSeconds)) {
                context.close(promise: nil)
            }
        }
    }
}

/// One push subscription on a connection. Event-loop confined, like its handler.
final class Subscription {
    let id: UInt32
    /// The SUBSCRIBE's correlation id; an ERROR that ends the subscription carries it.
    let correlationID: UInt32
    let topic: String
    /// The subscriber as the policy last judged it (a reload may change its role).
    var principal: Principal
    /// The consumer group ("" for none): delivery quotas keyed by group use it.
    let group: String
    /// The policy generation this subscription was last allowed under.
    var checkedGeneration: UInt64
    let log: any TopicLog
    /// The topic's metric objects: deliveries and withheld records are counted here.
    let metrics: TopicMetrics
    var machine: SubscriptionStateMachine
    let listener: SubscriptionListener
    /// The wake-up whose read is timed through the delivery path's stages (`DeliveryStageTimers`): when the log
    /// reported the records and when the event loop ran it; nil when the read in flight is not timed.
    var timedWake: (notifiedAt: UInt64, wokeAt: UInt64)? = nil
    /// The millisecond (monotonic) of the last wake-up timed, so at most one a millisecond is.
    var lastTimedWakeMillis: UInt64 = 0
    /// Withheld deliveries not yet audited, by consent scope.
    private var withheldByScope: [String: (rule: String, count: Int)] = [:]
    private var withheldTotal = 0
    private var lastWithheldAudit: Int64

    /// Withheld deliveries are audited at most this often per subscription (and when it ends), aggregated.
    static let withheldAuditIntervalMillis: Int64 = 10_000
    /// ...or as soon as this many are pending.
    static let withheldAuditBatch = 1000

    init(
        id: UInt32, correlationID: UInt32, topic: String, principal: Principal, group: String, log: any TopicLog,
        metrics: TopicMetrics, machine: SubscriptionStateMachine, checkedGeneration: UInt64,
        listener: SubscriptionListener
    ) {
        self.metrics = metrics
        self.checkedGeneration = checkedGeneration
        self.id = id
        self.correlationID = correlationID
        self.topic = topic
        self.principal = principal
        self.group = group
        self.log = log
        self.machine = machine
        self.listener = listener
        self.lastWithheldAudit = currentTimeMillis()
    }

    /// Records a read left over (not yet judged or delivered), starting at the next offset to deliver: at most
    /// one read's worth (what the read held in memory anyway; at most `readMaxBytes` of batches while the
    /// subscription waits for credit, and for at most `stalledReadAheadNanos` of that wait), until the next read
    /// takes or drops them.
    private var readAhead = RawRecords()
    /// Counts keeps and takes of `readAhead`, so a timed drop can tell whether it is still the same one.
    private var readAheadGeneration: UInt64 = 0

    /// Keeps the records a paced read did not get to, for the read after the wait; returns what identifies this
    /// keep for ``dropReadAhead(ifStill:)``.
    func keepReadAhead(_ records: RawRecords) -> UInt64 {
        self.readAhead = records
        self.readAheadGeneration &+= 1
        return self.readAheadGeneration
    }

    /// Drops the kept records if nothing took or replaced them since the keep that returned `generation`.
    func dropReadAhead(ifStill generation: UInt64) {
        if self.readAheadGeneration == generation { self.readAhead = RawRecords() }
    }

    /// The kept records when they start exactly at `from` and retention has not deleted it (`logStart`); nil,
    /// and the kept records dropped, otherwise: the next read goes to the log.
    func takeReadAhead(from: Int64, logStart: Int64) -> RawRecords? {
        self.readAheadGeneration &+= 1
        defer { self.readAhead = RawRecords() }
        guard !self.readAhead.isEmpty, self.readAhead.offset(at: 0) == from, from >= logStart else { return nil }
        return self.readAhead
    }

    /// A record was withheld for consent.
    func withheld(scope: String, rule: String) {
        self.withheldByScope[scope, default: (rule, 0)].count += 1
        self.withheldTotal += 1
    }

    /// Whether the pending withheld counts should be audited now.
    func withheldAuditDue(nowMillis: Int64) -> Bool {
        self.withheldTotal >= Self.withheldAuditBatch
            || (self.withheldTotal > 0 && nowMillis - self.lastWithheldAudit >= Self.withheldAuditIntervalMillis)
    }

    /// The pending withheld counts, sorted by scope; resets them.
    func takeWithheld() -> [(scope: String, tally: (rule: String, count: Int))] {
        defer {
            self.withheldByScope.removeAll()
            self.withheldTotal = 0
            self.lastWithheldAudit = currentTimeMillis()
        }
        return self.withheldByScope.keys.sorted().map { ($0, self.withheldByScope[$0]!) }
    }
}

/// Hops "the topic advanced" onto the subscription's event loop, coalescing bursts into one hop.
final class SubscriptionListener: TopicListener {
    private let eventLoop: any EventLoop
    private let scheduled = Atomic<Bool>(false)
    private let latestEnd = Atomic<Int64>(0)
    /// Set and cleared on the event loop only.
    private let callback: NIOLoopBoundBox<((Int64, UInt64) -> Void)?>

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
        self.callback = NIOLoopBoundBox(nil, eventLoop: eventLoop)
    }

    /// When the log reported the records of the hop scheduled now (monotonic nanoseconds): the first report since
    /// the last hop ran, as later ones join that hop.
    private let notifiedAt = Atomic<UInt64>(0)

    /// Called on the event loop with the newest visible end and when the first of the records it brings was reported.
    var onAdvance: ((_ endOffset: Int64, _ notifiedAt: UInt64) -> Void)? {
        get { self.callback.value }
        set { self.callback.value = newValue }
    }

    func topicAdvanced(endOffset: Int64) {
        var current = self.latestEnd.load(ordering: .relaxed)
        while current < endOffset {
            let (exchanged, original) = self.latestEnd.compareExchange(expected: current, desired: endOffset, ordering: .relaxed)
            if exchanged { break }
            current = original
        }
        guard !self.scheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        self.notifiedAt.store(NIODeadline.now().uptimeNanoseconds, ordering: .relaxed)
        self.eventLoop.execute {
            // Read before `scheduled` is cleared: a report after that schedules (and stamps) a hop of its own.
            let notifiedAt = self.notifiedAt.load(ordering: .relaxed)
            self.scheduled.store(false, ordering: .releasing)
            let end = self.latestEnd.load(ordering: .relaxed)
            self.callback.value?(end, notifiedAt)
        }
    }
}
