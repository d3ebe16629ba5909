import BrokerClient
import Foundation
import Histogram
import NIOCore
import WireProtocol

/// sync-latency's load: each producer connection keeps `--in-flight` PUBLISHes of `--batch` records outstanding (one
/// of one record, by default: a record at a time, each waiting for its acknowledgement) and sends the next the moment
/// an acknowledgement arrives; latency per request, send to acknowledgement.
///
/// Sending and acknowledgements both run on the connection's event loop, as e2e-latency's producer does
/// (`PipelinedPublisher.sendIfRoom` and the `onAcknowledgement` callback): a round trip is the socket's and the
/// broker's, with no hand-off between the load generator's own threads. Until round 19 each request was a task
/// awaiting `BrokerClient.publish`, which added two wake-ups of sleeping threads to every round trip (the event loop
/// resuming the task, the task handing its next request to the event loop) on two cores that halt when idle.
struct SyncLoad {
    let target: BenchTarget
    let parameters: BenchParameters

    /// What the connections' senders share.
    struct Shared: Sendable {
        let clock: RunClock
        let budget: Counter?
        let progress: Progress
        let errors: Counter
        let duplicates: Counter
    }

    /// One connection's requests, confined to its event loop.
    final class Sender {
        private let publisher: PipelinedPublisher
        private let topic: String
        private let batches: [[WireRecord]]
        private var stamper: DedupeKeyStamper?
        private let shared: Shared
        /// When each outstanding request was sent, by sequence number modulo the window.
        private var sentAt: [UInt64]
        private var round = 0
        private var outstanding = 0
        private var sending = true
        private var histogram = makeHistogram()
        private var last = monotonicNanos()
        /// The latency histogram and when the last acknowledgement arrived, once every request is answered; the
        /// error that failed a request as a whole, if one did.
        let done: EventLoopPromise<(Histogram<UInt64>, UInt64)>

        init(
            publisher: PipelinedPublisher, eventLoop: any EventLoop, topic: String, batches: [[WireRecord]],
            keyPrefix: String?, shared: Shared
        ) {
            self.publisher = publisher
            self.topic = topic
            self.batches = batches
            self.stamper = keyPrefix.map { DedupeKeyStamper(batches: batches, prefix: $0) }
            self.shared = shared
            self.sentAt = [UInt64](repeating: 0, count: publisher.maxInFlight)
            self.done = eventLoop.makePromise()
        }

        /// On the event loop: fills the window.
        func begin() {
            while self.sending, self.outstanding < self.sentAt.count { self.sendNext() }
            self.finishIfIdle()
        }

        /// On the event loop, with each acknowledgement: records it and sends the next request.
        func acknowledged(_ acknowledgement: PipelinedPublisher.Acknowledgement) {
            self.outstanding -= 1
            self.last = monotonicNanos()
            switch acknowledgement.result {
            case .success(let results):
                let ok = results.reduce(0) { $0 + ($1.code == .ok ? 1 : 0) }
                if ok < results.count, let failed = results.first(where: { $0.code != .ok }) {
                    reportFirstError(failed)
                }
                if self.stamper != nil { self.shared.duplicates.add(results.reduce(0) { $0 + ($1.isDuplicate ? 1 : 0) }) }
                self.shared.errors.add(results.count - ok)
                self.shared.progress.all.add(ok)
                let sent = self.sentAt[Int(acknowledgement.sequence % UInt64(self.sentAt.count))]
                if sent >= self.shared.clock.measureFrom {
                    self.shared.progress.measured.add(ok)
                    self.histogram.record((self.last - sent) / 1000)
                }
            case .failure(let error):
                self.sending = false
                self.publisher.finish()
                self.done.fail(error)
                return
            }
            if self.sending { self.sendNext() }
            self.finishIfIdle()
        }

        private func sendNext() {
            let now = monotonicNanos()
            let batch = self.batches[self.round % self.batches.count]
            if now >= self.shared.clock.end || self.shared.budget.map({ $0.add(-batch.count) < 0 }) == true {
                self.sending = false
                return
            }
            let records = self.stamper?.batch(self.round) ?? batch
            do {
                guard let sequence = try self.publisher.sendIfRoom(topic: self.topic, records: records) else {
                    preconditionFailure("sync-latency sends only when its window has room")
                }
                self.round += 1
                self.outstanding += 1
                self.sentAt[Int(sequence % UInt64(self.sentAt.count))] = now
            } catch {
                self.sending = false
                self.publisher.finish()
                self.done.fail(error)
            }
        }

        private func finishIfIdle() {
            guard !self.sending, self.outstanding == 0 else { return }
            self.publisher.finish()
            self.done.succeed((self.histogram, self.last))
        }
    }

    func run() async throws -> BenchResult {
        let p = self.parameters
        var clients: [BrokerClient] = []
        for _ in 0..<p.producers { clients.append(try await self.target.connect()) }
        defer { for client in clients { Task { await client.close() } } }
        let payloads = makePayloads(size: p.recordSize)
        let batches = (0..<16).map { b in
            (0..<p.batch).map { n in WireRecord(headers: benchHeaders, value: payloads[(b * p.batch + n) % payloads.count]) }
        }
        let runTag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let clock = RunClock(warmup: p.warmup, duration: p.duration)
        let shared = Shared(
            clock: clock, budget: p.records.map { Counter($0) }, progress: Progress(), errors: Counter(0),
            duplicates: Counter(0)
        )
        shared.progress.start(clock: clock, label: Scenario.syncLatency.rawValue)
        var futures: [EventLoopFuture<(Histogram<UInt64>, UInt64)>] = []
        for (index, client) in clients.enumerated() {
            let topic = self.target.topics[index % self.target.topics.count]
            let loop = client.eventLoop
            let box = NIOLoopBoundBox.makeEmptyBox(valueType: Sender.self, eventLoop: loop)
            let publisher = client.pipelinedPublisher(maxInFlight: p.inFlight) { box.value?.acknowledged($0) }
            let keyPrefix = p.dedupeKeys ? "bb-\(runTag)-\(index)-0-" : nil
            futures.append(
                loop.flatSubmit {
                    let sender = Sender(
                        publisher: publisher, eventLoop: loop, topic: topic, batches: batches, keyPrefix: keyPrefix,
                        shared: shared
                    )
                    box.value = sender
                    sender.begin()
                    return sender.done.futureResult
                }
            )
        }
        var histogram = makeHistogram()
        var finishedAt = clock.measureFrom
        for future in futures {
            let (local, last) = try await future.get()
            histogram.add(local)
            finishedAt = max(finishedAt, last)
        }
        shared.progress.stop()
        let seconds = Double(min(finishedAt, clock.end) - clock.measureFrom) / 1e9
        var result = BenchResult(
            scenario: Scenario.syncLatency.rawValue, parameters: p, measuredSeconds: seconds,
            records: shared.progress.measured.value, recordBytes: p.recordSize, errors: shared.errors.value,
            latencyLabel: "publish ack latency per request (\(p.batch) record\(p.batch == 1 ? "" : "s"))",
            histogram: histogram
        )
        if p.dedupeKeys { result.extra["dedupe_duplicates"] = Double(shared.duplicates.value) }
        return result
    }
}
