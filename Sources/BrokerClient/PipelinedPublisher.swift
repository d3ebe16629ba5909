import Locking
import NIOCore
import WireProtocol

/// Publishes without waiting for each answer, as Kafka's producer does: ``send(topic:records:)`` queues a PUBLISH
/// and returns its sequence number (0, 1, 2, ... per publisher) at once, and ``acknowledgements`` hands out the
/// answers in send order. At most `maxInFlight` requests are outstanding: `send` waits while that many have no
/// acknowledgement taken from ``acknowledgements`` yet (so the acknowledgements must be read while sending).
///
/// The requests share the client's connection. A request the broker refuses as a whole (an ERROR frame: UNKNOWN_TOPIC,
/// NOT_AUTHORIZED, RATE_LIMITED...) is acknowledged with that error; when the connection closes, every outstanding
/// request is acknowledged with the error that closed it (`BrokerClientError`, code INTERNAL "connection closed", or
/// the broker's closing ERROR), later sends throw it, and ``acknowledgements`` ends after the last of them.
///
/// One task may read ``acknowledgements`` at a time; any number may send. A publisher made with an
/// `onAcknowledgement` callback (``BrokerClient/pipelinedPublisher(maxInFlight:onAcknowledgement:)``) hands every
/// answer to it on the connection's event loop instead, and ``sendIfRoom(topic:records:)`` sends without suspending:
/// together they let a producer run entirely on that event loop, with no thread hand-off per request.
package final class PipelinedPublisher: Sendable {
    /// One PUBLISH's answer.
    package struct Acknowledgement: Sendable {
        /// The number ``PipelinedPublisher/send(topic:records:)`` returned for the request.
        package var sequence: UInt64
        /// One result per record, in order (as ``BrokerClient/publish(topic:records:)`` returns them), or the error
        /// that refused or failed the whole request.
        package var result: Result<[PublishResult], BrokerClientError>
    }

    /// Most requests outstanding: sent, and their acknowledgement not yet taken from ``acknowledgements``.
    package let maxInFlight: Int
    let core: Core

    init(client: BrokerClient, maxInFlight: Int, onAcknowledgement: (@Sendable (Acknowledgement) -> Void)? = nil) {
        self.maxInFlight = max(1, maxInFlight)
        self.core = Core(client: client, maxInFlight: self.maxInFlight, onAcknowledgement: onAcknowledgement)
    }

    /// Queues one PUBLISH and returns its sequence number; waits only while `maxInFlight` requests are outstanding.
    ///
    /// Throws `BrokerClientError`: INVALID_REQUEST when the request cannot be encoded (a string over 65,535 bytes;
    /// nothing is sent and no sequence number is used), the error that closed the connection, or INVALID_REQUEST
    /// after ``finish()``.
    @discardableResult
    package func send(topic: String, records: [WireRecord]) async throws(BrokerClientError) -> UInt64 {
        let frame = try Self.checkedFrame(topic: topic, records: records)
        while true {
            switch self.core.trySend(frame, recordCount: records.count) {
            case .sent(let sequence):
                return sequence
            case .failed(let error):
                throw error
            case .full:
                try await self.core.waitForRoom()
            }
        }
    }

    /// ``send(topic:records:)`` without waiting, for callers that must not suspend (work on the connection's event
    /// loop, ``BrokerClient/eventLoop``): queues the PUBLISH and returns its sequence number when the window has
    /// room, nil (nothing sent, no sequence number used) when `maxInFlight` requests are outstanding. Throws as
    /// `send` does.
    package func sendIfRoom(topic: String, records: [WireRecord]) throws(BrokerClientError) -> UInt64? {
        let frame = try Self.checkedFrame(topic: topic, records: records)
        switch self.core.trySend(frame, recordCount: records.count) {
        case .sent(let sequence): return sequence
        case .failed(let error): throw error
        case .full: return nil
        }
    }

    private static func checkedFrame(topic: String, records: [WireRecord]) throws(BrokerClientError) -> Frame {
        let frame = Frame.publish(Publish(topic: topic, records: records))
        // The correlation id does not change what is checked.
        try BrokerClientError.check(TaggedFrame(correlationID: 0, frame: frame))
        return frame
    }

    /// No more sends: ``acknowledgements`` ends after the acknowledgement of the last request sent.
    package func finish() {
        if self.core.finish() { self.core.forget() }
    }

    /// The acknowledgements, in send order; ends after ``finish()`` or a closed connection once every request sent
    /// has its acknowledgement.
    package var acknowledgements: Acknowledgements { Acknowledgements(core: self.core) }

    /// The acknowledgements of a ``PipelinedPublisher``, in send order.
    package struct Acknowledgements: AsyncSequence, Sendable {
        package typealias Element = Acknowledgement
        package typealias Failure = Never
        let core: Core

        package func makeAsyncIterator() -> Iterator { Iterator(core: self.core) }

        /// Takes every acknowledgement that is ready at once (one lock, one wake-up per read of the socket) and
        /// hands them out one by one; their window slots are free from that moment.
        package struct Iterator: AsyncIteratorProtocol {
            let core: Core
            private var ready: [Acknowledgement] = []
            private var index = 0

            init(core: Core) { self.core = core }

            /// The next acknowledgement in send order; nil once nothing more will come.
            package mutating func next() async -> Acknowledgement? {
                while self.index == self.ready.count {
                    self.ready.removeAll(keepingCapacity: true)
                    self.index = 0
                    guard self.core.take(into: &self.ready) else { return nil }
                    if self.ready.isEmpty { await self.core.waitForAcknowledgements() }
                }
                defer { self.index += 1 }
                return self.ready[self.index]
            }
        }
    }

    /// The shared state: what was sent and not yet taken, the bytes not yet written, and who waits.
    final class Core: Sendable {
        enum SendOutcome {
            case sent(UInt64)
            case full
            case failed(BrokerClientError)
        }

        private struct Slot {
            var correlationID: UInt32
            var recordCount: Int
            var result: Result<[PublishResult], BrokerClientError>?
        }

        private struct State {
            /// The requests from sequence `base` on, in send order; their answers fill in `result`.
            var slots = CircularBuffer<Slot>(initialCapacity: 64)
            /// The sequence number of `slots.first`: every request before it was taken by the iterator.
            var base: UInt64 = 0
            /// Slots `0..<answeredPrefix` have their result (they are ready to be taken).
            var answeredPrefix = 0
            /// Where the next answer is looked for first (the slot after the last one answered).
            var hint = 0
            /// Encoded requests not yet handed to the channel.
            var outbound = ByteBuffer()
            var flushScheduled = false
            var finished = false
            var failure: BrokerClientError?
            var senders: [UnsafeContinuation<Void, any Error>] = []
            var reader: UnsafeContinuation<Void, Never>?
        }

        private let state = Locked(State())
        private let client: BrokerClient
        private let maxInFlight: Int
        /// Takes each acknowledgement on the event loop instead of the reader (`BrokerClient.pipelinedPublisher`).
        private let onAcknowledgement: (@Sendable (Acknowledgement) -> Void)?

        init(client: BrokerClient, maxInFlight: Int, onAcknowledgement: (@Sendable (Acknowledgement) -> Void)?) {
            self.client = client
            self.maxInFlight = maxInFlight
            self.onAcknowledgement = onAcknowledgement
        }

        /// Encodes the request onto the outbound bytes when the window has room; schedules their write.
        func trySend(_ frame: Frame, recordCount: Int) -> SendOutcome {
            let outcome: SendOutcome
            let scheduleFlush: Bool
            (outcome, scheduleFlush) = self.state.withLock { state -> (SendOutcome, Bool) in
                if let failure = state.failure { return (.failed(failure), false) }
                if state.finished {
                    return (.failed(BrokerClientError(code: .invalidRequest, message: "send after finish()")), false)
                }
                guard state.slots.count < self.maxInFlight else { return (.full, false) }
                // Inside the lock: the bytes leave in sequence order.
                let correlationID = self.client.nextCorrelationID()
                FrameCodec.encode(TaggedFrame(correlationID: correlationID, frame: frame), into: &state.outbound)
                let sequence = state.base + UInt64(state.slots.count)
                state.slots.append(Slot(correlationID: correlationID, recordCount: recordCount, result: nil))
                defer { state.flushScheduled = true }
                return (.sent(sequence), !state.flushScheduled)
            }
            if scheduleFlush {
                let channel = self.client.channel
                channel.eventLoop.execute { self.flush(on: channel) }
            }
            return outcome
        }

        /// On the event loop: writes what was encoded since the last flush.
        private func flush(on channel: any Channel) {
            let bytes = self.state.withLock { state in
                state.flushScheduled = false
                let bytes = state.outbound
                state.outbound = ByteBuffer()
                return bytes
            }
            guard bytes.readableBytes > 0 else { return }
            channel.writeAndFlush(bytes).whenFailure { error in
                self.fail(error as? BrokerClientError ?? BrokerClientError(code: .internal, message: "write failed: \(error)"))
            }
        }

        /// Suspends until the window has room or the publisher failed.
        func waitForRoom() async throws(BrokerClientError) {
            do {
                try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
                    let resume: Result<Void, BrokerClientError>? = self.state.withLock { state in
                        if let failure = state.failure { return .failure(failure) }
                        if state.finished || state.slots.count < self.maxInFlight { return .success(()) }
                        state.senders.append(continuation)
                        return nil
                    }
                    if let resume { continuation.resume(with: resume.mapError { $0 }) }
                }
            } catch let error as BrokerClientError {
                throw error
            } catch {
                // Only a BrokerClientError is ever resumed with.
                throw BrokerClientError(code: .internal, message: "\(error)")
            }
        }

        /// Moves the ready acknowledgements into `ready` and frees their window slots; false when there is nothing
        /// more to come (finished or failed, and every request taken).
        func take(into ready: inout [Acknowledgement]) -> Bool {
            let (more, senders) = self.state.withLock { state -> (Bool, [UnsafeContinuation<Void, any Error>]) in
                let count = state.answeredPrefix
                if count == 0 {
                    return (!(state.slots.isEmpty && (state.finished || state.failure != nil)), [])
                }
                ready.reserveCapacity(count)
                for _ in 0..<count {
                    let slot = state.slots.removeFirst()
                    ready.append(Acknowledgement(sequence: state.base, result: slot.result!))
                    state.base += 1
                }
                state.answeredPrefix = 0
                state.hint = max(0, state.hint - count)
                let senders = state.senders
                state.senders.removeAll()
                return (true, senders)
            }
            for sender in senders { sender.resume() }
            return more
        }

        /// Suspends until an acknowledgement is ready, or nothing more will come.
        func waitForAcknowledgements() async {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
                let now = self.state.withLock { state -> Bool in
                    if state.answeredPrefix > 0 || state.failure != nil || (state.finished && state.slots.isEmpty) {
                        return true
                    }
                    state.reader = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        }

        /// On the event loop: takes the answers in `frames` that are this publisher's (removing them) and wakes the
        /// reader when acknowledgements became ready. Returns whether the publisher is done (finished, every request
        /// answered), so the handler can forget it.
        func answered(_ frames: inout [TaggedFrame]) -> Bool {
            let (reader, done) = self.state.withLock { state -> (UnsafeContinuation<Void, Never>?, Bool) in
                frames.removeAll { tagged in
                    guard let index = Self.slotIndex(of: tagged.correlationID, in: state) else { return false }
                    state.slots[offset: index].result = Self.result(of: tagged.frame, recordCount: state.slots[offset: index].recordCount)
                    state.hint = index + 1
                    return true
                }
                let before = state.answeredPrefix
                while state.answeredPrefix < state.slots.count, state.slots[offset: state.answeredPrefix].result != nil {
                    state.answeredPrefix += 1
                }
                var reader: UnsafeContinuation<Void, Never>?
                if state.answeredPrefix > before {
                    reader = state.reader
                    state.reader = nil
                }
                return (reader, state.finished && state.answeredPrefix == state.slots.count)
            }
            reader?.resume()
            self.handToCallback()
            return done
        }

        /// With `onAcknowledgement`: takes the ready acknowledgements (freeing their slots) and hands them to it, in
        /// order, outside the lock. Runs on the event loop, as everything that readies an acknowledgement does.
        private func handToCallback() {
            guard let onAcknowledgement = self.onAcknowledgement else { return }
            var ready: [Acknowledgement] = []
            _ = self.take(into: &ready)
            for acknowledgement in ready { onAcknowledgement(acknowledgement) }
        }

        private static func slotIndex(of correlationID: UInt32, in state: State) -> Int? {
            // Answers come in send order unless a limiter delayed a request or a dedupe key waited: look where the
            // last answer was first, then from the first unanswered slot.
            if state.hint < state.slots.count, state.slots[offset: state.hint].correlationID == correlationID {
                return state.hint
            }
            var index = state.answeredPrefix
            while index < state.slots.count {
                if state.slots[offset: index].correlationID == correlationID, state.slots[offset: index].result == nil { return index }
                index += 1
            }
            return nil
        }

        private static func result(of frame: Frame, recordCount: Int) -> Result<[PublishResult], BrokerClientError> {
            switch frame {
            case .publishAck(let ack) where ack.results.count == recordCount:
                return .success(ack.results)
            case .error(let error):
                return .failure(BrokerClientError(code: error.code, message: error.message, retryAfterMillis: error.retryAfterMillis))
            default:
                return .failure(
                    BrokerClientError(
                        code: .malformedFrame,
                        message: "expected PUBLISH_ACK with \(recordCount) results, got \(frame.opcode)"
                    )
                )
            }
        }

        /// No more sends; wakes a reader waiting when nothing is outstanding. Returns whether every request sent has
        /// its answer (the handler need not route anything here any more).
        @discardableResult
        func finish() -> Bool {
            let (reader, senders, done) = self.state.withLock { state in
                state.finished = true
                let reader = state.slots.isEmpty ? state.reader : nil
                if reader != nil { state.reader = nil }
                let senders = state.senders
                state.senders.removeAll()
                return (reader, senders, state.answeredPrefix == state.slots.count)
            }
            reader?.resume()
            for sender in senders { sender.resume() }
            return done
        }

        /// Stops the connection's handler routing answers here.
        func forget() {
            let handler = self.client.handler
            self.client.channel.eventLoop.execute { handler.value.remove(self) }
        }

        /// The connection closed (or a write failed): every unanswered request is acknowledged with `error`.
        func fail(_ error: BrokerClientError) {
            let (reader, senders) = self.state.withLock { state in
                if state.failure == nil { state.failure = error }
                for index in 0..<state.slots.count where state.slots[offset: index].result == nil {
                    state.slots[offset: index].result = .failure(error)
                }
                state.answeredPrefix = state.slots.count
                let reader = state.reader
                state.reader = nil
                let senders = state.senders
                state.senders.removeAll()
                return (reader, senders)
            }
            reader?.resume()
            for sender in senders { sender.resume(throwing: error) }
            self.handToCallback()
        }
    }
}
