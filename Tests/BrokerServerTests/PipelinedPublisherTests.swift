import BrokerClient
import Foundation
import Locking
import NIOCore
import Testing
import WireProtocol

/// `PipelinedPublisher` against a real broker over TCP: order, the in-flight window, refusals and a closed connection.
@Suite("Pipelined publisher")
struct PipelinedPublisherTests {
    /// The next acknowledgement from `reader`; fails the test (nil) when none comes within `timeout` instead of
    /// hanging it. `.some(nil)`: the sequence ended.
    static func next(
        _ reader: AcknowledgementReader,
        timeout: Duration = .seconds(20)
    ) async -> PipelinedPublisher.Acknowledgement?? {
        let waiting = Locked<CheckedContinuation<PipelinedPublisher.Acknowledgement??, Never>?>(nil)
        let result = await withCheckedContinuation { continuation in
            waiting.withLock { $0 = continuation }
            Task {
                let acknowledgement = await reader.next()
                waiting.withLock { $0.take() }?.resume(returning: .some(acknowledgement))
            }
            Task {
                try? await Task.sleep(for: timeout)
                waiting.withLock { $0.take() }?.resume(returning: .none)
            }
        }
        if result == nil { Issue.record("no acknowledgement within \(timeout)") }
        return result
    }

    /// The next acknowledgement; fails the test on a timeout or when the sequence ended early.
    static func acknowledgement(_ reader: AcknowledgementReader) async throws -> PipelinedPublisher.Acknowledgement {
        let next = try #require(await Self.next(reader))
        return try #require(next, "the acknowledgements ended early")
    }

    /// Holds the iterator of a publisher's acknowledgements so a child task can read it.
    final class AcknowledgementReader: @unchecked Sendable {
        // Read by one task at a time: `next(_:timeout:)` waits for each read before the test goes on (after a
        // timeout the test has failed and reads no more). Each read runs in a new task, so `order` orders the
        // reads for ThreadSanitizer too: a read takes it before touching the iterator and after it is done, so
        // the next read, in another task and maybe on another thread, sees what the previous one wrote.
        private var iterator: PipelinedPublisher.Acknowledgements.Iterator
        private let order = Locked(0)
        init(_ publisher: PipelinedPublisher) { self.iterator = publisher.acknowledgements.makeAsyncIterator() }
        func next() async -> PipelinedPublisher.Acknowledgement? {
            self.order.withLock { $0 += 1 }
            let acknowledgement = await self.iterator.next()
            self.order.withLock { $0 += 1 }
            return acknowledgement
        }
    }

    @Test("onAcknowledgement takes every answer on the event loop, in send order; sendIfRoom stops at a full window")
    func callbackAndSendIfRoom() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let loop = producer.eventLoop
        let taken = Locked<(sequences: [UInt64], offsets: [Int64], offLoop: Int)>(([], [], 0))
        let publisher = producer.pipelinedPublisher(maxInFlight: 4) { acknowledgement in
            let onLoop = loop.inEventLoop
            let offsets = (try? acknowledgement.result.get().map(\.offset)) ?? [-1]
            taken.withLock { taken in
                taken.sequences.append(acknowledgement.sequence)
                taken.offsets += offsets
                if !onLoop { taken.offLoop += 1 }
            }
        }
        let total = 100
        var sent = 0
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while taken.withLock({ $0.sequences.count }) < total, ContinuousClock.now < deadline {
            // Sent on the event loop, as a paced producer does: no answer can be read meanwhile, so a fifth send in
            // one go finds the window full (nothing sent, no sequence number used).
            let first = sent
            let sequences = try await loop.submit {
                var sequences: [UInt64?] = []
                for n in first..<min(first + 5, total) {
                    sequences.append(try publisher.sendIfRoom(topic: "education.completed", records: [educationEvent(n)]))
                }
                return sequences
            }.get()
            let accepted = sequences.prefix { $0 != nil }.compactMap { $0 }
            #expect(accepted == (0..<UInt64(accepted.count)).map { UInt64(first) + $0 })
            #expect(sequences.dropFirst(accepted.count).allSatisfy { $0 == nil })
            if sequences.count == 5 { #expect(accepted.count <= 4) }
            sent += accepted.count
            try await Task.sleep(for: .milliseconds(1))
        }
        let got = taken.withLock { $0 }
        #expect(got.sequences == (0..<UInt64(total)).map { $0 })
        #expect(got.offsets == Array(0..<Int64(total)))
        #expect(got.offLoop == 0, "the callback ran off the connection's event loop")
        publisher.finish()
        await producer.close()
        await broker.stop()
    }

    @Test("acknowledgements come in send order with ascending offsets, and every record is stored")
    func inOrder() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let publisher = producer.pipelinedPublisher(maxInFlight: 64)
        let total = 500
        let acknowledgements = AcknowledgementReader(publisher)
        var sent = 0
        var offsets: [Int64] = []
        var sequences: [UInt64] = []
        while offsets.count < total {
            while sent < total, sent - offsets.count < 64 {
                #expect(try await publisher.send(topic: "education.completed", records: [educationEvent(sent)]) == UInt64(sent))
                sent += 1
            }
            guard let acknowledgement = try #require(await Self.next(acknowledgements)) else { break }
            sequences.append(acknowledgement.sequence)
            offsets.append(contentsOf: try acknowledgement.result.get().map(\.offset))
        }
        #expect(sequences == (0..<UInt64(total)).map { $0 })
        #expect(offsets == Array(0..<Int64(total)))
        publisher.finish()
        // After finish() and the last acknowledgement, the sequence ends.
        #expect(try #require(await Self.next(acknowledgements)) == nil)
        await #expect(throws: BrokerClientError.self) { try await publisher.send(topic: "education.completed", records: [educationEvent(0)]) }
        // The connection still serves ordinary requests.
        #expect(try await producer.publish(topic: "education.completed", records: [educationEvent(total)])[0].offset == Int64(total))
        let consumer = try await broker.client("crm-automation")
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest), count: total + 1)
        #expect(got.map(\.offset) == Array(0...Int64(total)))
        await consumer.close()
        await producer.close()
        await broker.stop()
    }

    @Test("send waits while maxInFlight requests have no acknowledgement taken, and goes on when one is taken")
    func window() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let publisher = producer.pipelinedPublisher(maxInFlight: 4)
        for n in 0..<4 { try await publisher.send(topic: "education.completed", records: [educationEvent(n)]) }
        let fifthSent = Locked(false)
        let fifth = Task {
            let sequence = try await publisher.send(topic: "education.completed", records: [educationEvent(4)])
            fifthSent.withLock { $0 = true }
            return sequence
        }
        // Long enough for the broker to answer the four (fsync included); the fifth must still wait.
        try await Task.sleep(for: .milliseconds(300))
        let sentEarly = fifthSent.withLock { $0 }
        #expect(!sentEarly)
        let acknowledgements = AcknowledgementReader(publisher)
        let first = try await Self.acknowledgement(acknowledgements)
        #expect(first.sequence == 0)
        #expect(try await fifth.value == 4)
        var results: [Int64] = try first.result.get().map(\.offset)
        for _ in 0..<4 {
            let acknowledgement = try await Self.acknowledgement(acknowledgements)
            results += try acknowledgement.result.get().map(\.offset)
        }
        #expect(results == [0, 1, 2, 3, 4])
        await producer.close()
        await broker.stop()
    }

    @Test("a request the broker refuses is acknowledged with its error code; one that cannot be encoded throws at send")
    func refusals() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let publisher = producer.pipelinedPublisher()
        try await publisher.send(topic: "education.completed", records: [educationEvent(0)])
        try await publisher.send(topic: "no.such.topic", records: [educationEvent(1)])
        let tooLong = String(repeating: "t", count: 70_000)
        let error = await #expect(throws: BrokerClientError.self) {
            try await publisher.send(topic: tooLong, records: [educationEvent(2)])
        }
        #expect(error?.code == .invalidRequest)
        try await publisher.send(topic: "education.completed", records: [educationEvent(3)])
        let acknowledgements = AcknowledgementReader(publisher)
        var outcomes: [(UInt64, Result<[PublishResult], BrokerClientError>)] = []
        for _ in 0..<3 {
            let acknowledgement = try await Self.acknowledgement(acknowledgements)
            outcomes.append((acknowledgement.sequence, acknowledgement.result))
        }
        // The refused sequence number was not used: three requests, numbered 0, 1, 2.
        #expect(outcomes.map(\.0) == [0, 1, 2])
        #expect(try outcomes[0].1.get().map(\.offset) == [0])
        guard case .failure(let refusal) = outcomes[1].1 else {
            Issue.record("the unknown topic was not refused: \(outcomes[1].1)")
            return
        }
        #expect(refusal.code == .unknownTopic)
        #expect(try outcomes[2].1.get().map(\.offset) == [1])
        await producer.close()
        await broker.stop()
    }

    @Test("a closed connection acknowledges every outstanding request with its error and ends the sequence")
    func closedConnection() async throws {
        let config = ConfigText()
        // per_connection as a delaying limiter of one record every 10 s, bursts of 1: the second and third PUBLISH
        // are held for the broker's longest hold, 2 s (`maxPublishDelayNanos`), so they are outstanding when the
        // client closes. (At 1 record/s they were held about a second, and once in a loaded `make test` both were
        // answered before the close reached the broker.)
        config.delayPerConnection(rate: 0.1)
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let publisher = producer.pipelinedPublisher()
        for n in 0..<3 { try await publisher.send(topic: "education.completed", records: [PolicyPlaneTests.event(n)]) }
        let acknowledgements = AcknowledgementReader(publisher)
        let first = try await Self.acknowledgement(acknowledgements)
        #expect(try first.result.get().map(\.offset) == [0])
        await producer.close()
        for sequence in 1...2 {
            let acknowledgement = try await Self.acknowledgement(acknowledgements)
            #expect(acknowledgement.sequence == UInt64(sequence))
            guard case .failure(let error) = acknowledgement.result else {
                Issue.record("request \(sequence) was not failed: \(acknowledgement.result)")
                continue
            }
            #expect(error == BrokerClientError(code: .internal, message: "connection closed"))
        }
        #expect(try #require(await Self.next(acknowledgements)) == nil)
        let error = await #expect(throws: BrokerClientError.self) {
            try await publisher.send(topic: "education.completed", records: [PolicyPlaneTests.event(3)])
        }
        #expect(error?.code == .internal)
        await broker.stop()
    }
}
