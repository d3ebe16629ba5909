import BrokerClient
import BrokerServer
import Foundation
import Locking
import NIOCore
import Testing
import WireProtocol

/// `BrokerSubscription.batches`: records a DELIVER at a time, read in place, over a real broker.
@Suite("Subscription batches over TCP")
struct SubscriptionBatchTests {
    /// Reads `count` records through `batches`, keeping each as a value (`DeliveredRecordView.record`) and the
    /// batch sizes; fails after `timeout`.
    static func collectBatches(
        _ subscription: BrokerSubscription, count: Int, timeout: Duration = .seconds(20)
    ) async throws -> (records: [DeliveredRecord], sizes: [Int]) {
        try await withThrowingTaskGroup(of: ([DeliveredRecord], [Int]).self) { group in
            group.addTask {
                var records: [DeliveredRecord] = []
                var sizes: [Int] = []
                for try await batch in subscription.batches {
                    sizes.append(batch.count)
                    var viewed: [DeliveredRecord] = []
                    batch.forEach { viewed.append($0.record) }
                    // The in-place views and the decoded values are the same records.
                    #expect(viewed == batch.records)
                    records += viewed
                    if records.count >= count { break }
                }
                return (records, sizes)
            }
            group.addTask {
                try await Task.sleep(for: timeout)
                throw TimeoutError(what: "waiting for \(count) records in batches")
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }

    @Test("batches hand out every record once, in order, intact; credit flows back batch by batch")
    func batchesMatchPublished() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let expected = try await publishEducationEvents(producer) { records in
            records[3].key = nil  // a record without a key (empty values: RecordsDecodeTests; this topic wants JSON)
        }
        let consumer = try await broker.client("crm-automation")
        // A window of 8 for 200 records: the broker stops after 8 until the batches grant credit back.
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 8)
        let (got, sizes) = try await Self.collectBatches(subscription, count: expected.count)
        #expect(got.map(\.offset) == (0..<Int64(expected.count)).map { $0 })
        #expect(got.map(\.record.producerPart) == expected)
        #expect(got.allSatisfy { $0.record.header("broker-producer") == "learning-portal" })
        #expect(sizes.allSatisfy { $0 >= 1 && $0 <= 8 }, "a DELIVER never exceeds the credit: \(sizes)")
        await producer.close()
        await consumer.close()
        await broker.stop()
    }

    @Test("a handler subscription gets every record once, in order, on the client's event loop; credit flows back")
    func handlerSubscription() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let expected = try await publishEducationEvents(producer)
        let consumer = try await broker.client("crm-automation")
        let loop = consumer.eventLoop
        let seen = Locked<(records: [DeliveredRecord], sizes: [Int], offLoop: Int)>(([], [], 0))
        // A window of 8 for 200 records: all of them arrive only if the client grants credit back after the handler.
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 8) { batch in
            let onLoop = loop.inEventLoop
            seen.withLock { seen in
                seen.records += batch.records
                seen.sizes.append(batch.count)
                if !onLoop { seen.offLoop += 1 }
            }
        }
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while seen.withLock({ $0.records.count }) < expected.count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        let got = seen.withLock { $0 }
        #expect(got.records.map(\.offset) == (0..<Int64(expected.count)).map { $0 })
        #expect(got.records.map(\.record.producerPart) == expected)
        #expect(got.sizes.allSatisfy { $0 >= 1 && $0 <= 8 }, "a DELIVER never exceeds the credit: \(got.sizes)")
        #expect(got.offLoop == 0, "the handler ran off the connection's event loop")
        // The subscription hands out no records itself; it ends, with the error, when the connection closes.
        await consumer.close()
        var handedOut = 0
        await #expect(throws: BrokerClientError.self) {
            for try await _ in subscription.batches { handedOut += 1 }
        }
        #expect(handedOut == 0)
        await producer.close()
        await broker.stop()
    }

    @Test("a batch carries the monotonic time the client's event loop read it")
    func receivedAt() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let results = try await producer.publish(topic: "education.completed", records: [educationEvent(1)])
        #expect(results.map(\.code) == [.ok])
        let consumer = try await broker.client("crm-automation")
        let subscribed = NIODeadline.now().uptimeNanoseconds
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 16)
        var received: [UInt64] = []
        for try await batch in subscription.batches {
            let consumed = NIODeadline.now().uptimeNanoseconds
            received.append(batch.receivedAtNanos)
            // Read after the SUBSCRIBE was sent, before the task took the batch: the same clock as brokerbench's
            // monotonicNanos (CLOCK_MONOTONIC), which e2e-latency subtracts it from.
            #expect(batch.receivedAtNanos >= subscribed && batch.receivedAtNanos <= consumed)
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            #expect(batch.receivedAtNanos <= UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec))
            break
        }
        #expect(received.count == 1)
        await producer.close()
        await consumer.close()
        await broker.stop()
    }

    @Test("a record view reads fields and headers in place")
    func viewFields() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        var record = educationEvent(7)
        record.headers.append(WireHeader(name: "event_type", value: ByteBuffer(string: "second")))
        let results = try await producer.publish(topic: "education.completed", records: [record, educationEvent(8)])
        #expect(results.map(\.code) == [.ok, .ok])
        let consumer = try await broker.client("crm-automation")
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 16)
        typealias Seen = (
            offset: Int64, key: String?, value: String, timestamp: Int64, eventType: String?, names: [String]
        )
        var seen: [Seen] = []
        for try await batch in subscription.batches {
            batch.forEach { view in
                var names: [String] = []
                view.forEachHeader { name, _ in
                    names.append(String(decoding: name, as: UTF8.self))
                    return true
                }
                #expect(names.count == view.headerCount)
                seen.append((
                    view.offset, view.key.map { String(decoding: $0, as: UTF8.self) },
                    String(decoding: view.value, as: UTF8.self), view.timestamp,
                    view.headerValue(named: "event_type").map { String(decoding: $0, as: UTF8.self) }, names
                ))
            }
            if seen.count >= 2 { break }
        }
        #expect(seen.map(\.offset) == [0, 1])
        #expect(seen[0].key == "acct_7")
        #expect(seen[0].value == String(buffer: record.value))
        #expect(seen[0].timestamp == record.timestamp)
        // The first header of a repeated name wins.
        #expect(seen[0].eventType == "account.education.completed")
        #expect(Array(seen[0].names.prefix(4)) == ["event_type", "source_system", "consent_scope", "event_type"])
        #expect(seen[0].names.contains("broker-producer"))
        #expect(seen[1].key == "acct_8")
        #expect(seen[1].names.filter { $0 == "event_type" }.count == 1)
        await producer.close()
        await consumer.close()
        await broker.stop()
    }
}
