import BrokerClient
import Foundation
import Histogram
import NIOCore
import WireProtocol

/// The requests of one producer connection of `PublishLoad` (every publishing scenario but pipelined-single):
/// `--in-flight` PUBLISHes outstanding, the next sent the moment an acknowledgement arrives; latency per request,
/// send to acknowledgement.
///
/// Sending and acknowledgements both run on the connection's event loop, as e2e-latency's producer does
/// (`PipelinedPublisher.sendIfRoom` and the `onAcknowledgement` callback): a round trip is the socket's and the
/// broker's, with no hand-off between the load generator's own threads. Until round 19 each request in flight was a
/// task awaiting `BrokerClient.publish`, which added two wake-ups of sleeping threads to every round trip (the event
/// loop resuming the task, the task handing its next request to the event loop) on two cores that halt when idle.
final class PublishSender {
    private let publisher: PipelinedPublisher
    private let topic: String
    private let batches: [[WireRecord]]
    private var stamper: DedupeKeyStamper?
    private let tallies: PublishTallies
    /// When each outstanding request was sent, by sequence number modulo the window.
    private var sentAt: [UInt64]
    private var round = 0
    private var outstanding = 0
    private var sending = true
    /// `done` is resolved: acknowledgements still arriving (after a failure) are ignored.
    private var finished = false
    private var histogram = makeHistogram()
    private var last = monotonicNanos()
    /// The latency histogram and when the last acknowledgement arrived, once every request is answered; failed with
    /// the error that failed a request as a whole (the connection closed, the broker refused it), if one did.
    let done: EventLoopPromise<(Histogram<UInt64>, UInt64)>

    private init(
        publisher: PipelinedPublisher, eventLoop: any EventLoop, topic: String, batches: [[WireRecord]],
        keys: UniqueKeys?, tallies: PublishTallies
    ) {
        self.publisher = publisher
        self.topic = topic
        self.batches = batches
        self.stamper = keys.map { DedupeKeyStamper(batches: batches, keys: $0) }
        self.tallies = tallies
        self.sentAt = [UInt64](repeating: 0, count: publisher.maxInFlight)
        self.done = eventLoop.makePromise()
    }

    /// Starts a sender on `client`'s event loop, `inFlight` requests outstanding, publishing `batches` in turn to
    /// `topic` (each record with a unique key, `keys`, when given), until the clock's end,
    /// the budget or the stop flag; returns its `done`.
    static func start(
        on client: BrokerClient, inFlight: Int, topic: String, batches: [[WireRecord]], keys: UniqueKeys?,
        tallies: PublishTallies
    ) -> EventLoopFuture<(Histogram<UInt64>, UInt64)> {
        let loop = client.eventLoop
        let box = NIOLoopBoundBox.makeEmptyBox(valueType: PublishSender.self, eventLoop: loop)
        let publisher = client.pipelinedPublisher(maxInFlight: inFlight) { box.value?.acknowledged($0) }
        return loop.flatSubmit {
            let sender = PublishSender(
                publisher: publisher, eventLoop: loop, topic: topic, batches: batches, keys: keys,
                tallies: tallies
            )
            box.value = sender
            while sender.sending, sender.outstanding < sender.sentAt.count { sender.sendNext() }
            sender.finishIfIdle()
            return sender.done.futureResult
        }
    }

    /// On the event loop, with each acknowledgement: records it and sends the next request.
    private func acknowledged(_ acknowledgement: PipelinedPublisher.Acknowledgement) {
        guard !self.finished else { return }
        self.outstanding -= 1
        self.last = monotonicNanos()
        switch acknowledgement.result {
        case .success(let results):
            self.tallies.answered(
                results, withKeys: self.stamper != nil,
                sentAt: self.sentAt[Int(acknowledgement.sequence % UInt64(self.sentAt.count))], answeredAt: self.last,
                into: &self.histogram
            )
        case .failure(let error):
            return self.fail(error)
        }
        if self.sending { self.sendNext() }
        self.finishIfIdle()
    }

    private func sendNext() {
        let now = monotonicNanos()
        let batch = self.batches[self.round % self.batches.count]
        guard self.tallies.maySend(batch.count, now: now) else {
            self.sending = false
            return
        }
        let records = self.stamper?.batch(self.round) ?? batch
        do {
            guard let sequence = try self.publisher.sendIfRoom(topic: self.topic, records: records) else {
                preconditionFailure("PublishSender sends only when its window has room")
            }
            self.round += 1
            self.outstanding += 1
            self.sentAt[Int(sequence % UInt64(self.sentAt.count))] = now
        } catch {
            self.fail(error)
        }
    }

    private func fail(_ error: BrokerClientError) {
        self.sending = false
        self.finished = true
        self.publisher.finish()
        self.done.fail(error)
    }

    private func finishIfIdle() {
        guard !self.finished, !self.sending, self.outstanding == 0 else { return }
        self.finished = true
        self.publisher.finish()
        self.done.succeed((self.histogram, self.last))
    }
}
