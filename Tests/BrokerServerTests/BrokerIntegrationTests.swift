import BrokerClient
import BrokerServer
import Foundation
import NIOCore
import Testing
import WireProtocol

/// End-to-end behaviour over real sockets and real files.
@Suite("Broker over TCP")
struct BrokerIntegrationTests {
    @Test("publish then subscribe from earliest returns every record, in order, intact")
    func publishThenSubscribe() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let expected = try await publishEducationEvents(producer)
        let consumer = try await broker.client("crm-automation")
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 16)
        let got = try await collect(subscription, count: expected.count)
        #expect(got.map(\.offset) == (0..<Int64(expected.count)).map { $0 })
        #expect(got.map(\.record.producerPart) == expected)
        #expect(got.allSatisfy { $0.record.header("broker-producer") == "learning-portal" })
        await producer.close()
        await consumer.close()
        await broker.stop()
    }

    @Test("a live subscription receives records published after it started")
    func liveDelivery() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let consumer = try await broker.client("crm-automation")
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .latest, credit: 4)
        let producer = try await broker.client("learning-portal")
        let received = Task { try await collect(subscription, count: 30) }
        for n in 0..<30 {
            _ = try await producer.publish(topic: "education.completed", records: [educationEvent(n)])
        }
        let got = try await received.value
        #expect(got.map(\.offset) == (0..<30).map { Int64($0) })
        await producer.close()
        await consumer.close()
        await broker.stop()
    }

    @Test("stopping and restarting the broker between publish and consume loses nothing")
    func restartLosesNothing() async throws {
        let first = try await TestBroker.start()
        defer { first.removeData() }
        let producer = try await first.client("learning-portal")
        let records = (0..<300).map(educationEvent)
        for chunk in stride(from: 0, to: records.count, by: 50) {
            _ = try await producer.publish(topic: "education.completed", records: Array(records[chunk..<chunk + 50]))
        }
        await producer.close()
        await first.stop()

        let second = try await TestBroker.start(dataDir: first.dataDir)
        let consumer = try await second.client("crm-automation")
        let topics = try await consumer.listTopics()
        #expect(topics.first { $0.name == "education.completed" }?.endOffset == 300)
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest), count: 300)
        #expect(got.map(\.record.producerPart) == records)
        // Appends continue after the recovered end.
        let producer2 = try await second.client("learning-portal")
        let next = try await producer2.publish(topic: "education.completed", records: [educationEvent(300)])
        #expect(next.first?.offset == 300)
        await producer2.close()
        await consumer.close()
        await second.stop()
    }

    @Test("a committed group offset survives a restart and `committed` resumes after it")
    func committedOffsetSurvivesRestart() async throws {
        let first = try await TestBroker.start()
        defer { first.removeData() }
        let producer = try await first.client("learning-portal")
        _ = try await producer.publish(topic: "education.completed", records: (0..<20).map(educationEvent))
        let consumer = try await first.client("crm-automation")
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", group: "crm-sync", start: .committed), count: 12)
        #expect(got.last?.offset == 11)
        try await consumer.commit(group: "crm-sync", topic: "education.completed", offset: 12)
        await consumer.close()
        await producer.close()
        await first.stop()

        let second = try await TestBroker.start(dataDir: first.dataDir)
        let again = try await second.client("crm-automation")
        let subscription = try await again.subscribe(topic: "education.completed", group: "crm-sync", start: .committed)
        #expect(subscription.info.startOffset == 12)
        let rest = try await collect(subscription, count: 8)
        #expect(rest.map(\.offset) == Array(12..<20))
        await again.close()
        await second.stop()
    }

    @Test("a subscription above the role's clearance is refused with NOT_CLEARED and delivers nothing")
    func notClearedDeliversNothing() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        _ = try await producer.publish(topic: "support.milestone", records: (0..<5).map(educationEvent))
        _ = try await producer.publish(topic: "clinical.referral", records: (0..<5).map(educationEvent))

        // crm is cleared for non_phi only: support.milestone matches its patterns but is pseudonymous.
        let crm = try await broker.client("crm-automation")
        for topic in ["support.milestone", "clinical.referral"] {
            await #expect(throws: BrokerClientError.self) {
                _ = try await crm.subscribe(topic: topic, start: .earliest)
            }
            do {
                _ = try await crm.subscribe(topic: topic, start: .earliest)
            } catch let error as BrokerClientError {
                #expect(error.code == .notCleared)
            }
        }
        // Committing on a topic the role cannot read is refused the same way.
        do {
            try await crm.commit(group: "g", topic: "clinical.referral", offset: 0)
            Issue.record("commit on a PHI topic should be refused")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        // The connection stays usable and no DELIVER for a refused topic ever arrives on it.
        try await crm.ping()
        let raw = try await RawConnection.connect(port: broker.port)
        let subscribePHI = TaggedFrame(correlationID: 2, frame: .subscribe(Subscribe(topic: "clinical.referral", start: .earliest, initialCredit: 100)))
        let ping = TaggedFrame(correlationID: 3, frame: .ping(nonce: 9))
        let (frames, _) = try await raw.exchange(encode(hello("crm-automation"), subscribePHI, ping)) { frames in
            frames.contains { $0.correlationID == 3 }
        }
        #expect(frames.count == 3)
        #expect(frames.contains { if case .deliver = $0.frame { true } else { false } } == false)
        if case .error(let error) = frames[1].frame {
            #expect(error.code == .notCleared)
        } else {
            Issue.record("expected NOT_CLEARED, got \(frames[1])")
        }
        // A cleared role reads the same topic.
        let support = try await broker.client("support-desk")
        let phi = try await collect(try await support.subscribe(topic: "clinical.referral", start: .earliest), count: 5)
        #expect(phi.count == 5)
        await support.close()
        await crm.close()
        await producer.close()
        await broker.stop()
    }

    @Test("a publish outside the role's patterns is refused with NOT_AUTHORIZED and appends nothing")
    func publishNotAuthorized() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let crm = try await broker.client("crm-automation")
        do {
            _ = try await crm.publish(topic: "education.completed", records: [educationEvent(1)])
            Issue.record("crm may not publish")
        } catch let error as BrokerClientError {
            #expect(error.code == .notAuthorized)
        }
        do {
            _ = try await crm.publish(topic: "no.such.topic", records: [educationEvent(1)])
            Issue.record("unknown topic accepted")
        } catch let error as BrokerClientError {
            #expect(error.code == .unknownTopic)
        }
        let topics = try await crm.listTopics()
        #expect(topics.first { $0.name == "education.completed" }?.endOffset == 0)
        #expect(topics.first { $0.name == "education.completed" }?.access == 2)
        await crm.close()
        await broker.stop()
    }

    @Test("the broker never sends more records than the credit granted")
    func creditBoundsDelivery() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        _ = try await producer.publish(topic: "education.completed", records: (0..<50).map(educationEvent))
        let raw = try await RawConnection.connect(port: broker.port)
        let subscribe = TaggedFrame(correlationID: 2, frame: .subscribe(Subscribe(topic: "education.completed", start: .earliest, initialCredit: 7)))
        // Wait long enough for over-delivery to show, then check the count.
        let (frames, closed) = try await raw.exchange(encode(hello("crm-automation"), subscribe), timeout: .seconds(30)) { frames in
            let delivered = frames.reduce(0) { count, frame in
                if case .deliver(let deliver) = frame.frame { return count + deliver.records.count }
                return count
            }
            return delivered >= 7 && frames.contains { $0.correlationID == 2 }
        }
        #expect(!closed)
        let delivered = frames.flatMap { frame -> [DeliveredRecord] in
            if case .deliver(let deliver) = frame.frame { return deliver.records }
            return []
        }
        #expect(delivered.map(\.offset) == Array(0..<7))
        await producer.close()
        await broker.stop()
    }

    @Test("a subscriber that stalls longer than its read-ahead is kept resumes at the next offset, from the log")
    func stalledSubscriberResumes() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        // One PUBLISH, one stored batch: the first read returns all 50, credit lets 7 go, 43 are kept as read-ahead.
        _ = try await producer.publish(topic: "education.completed", records: (0..<50).map(educationEvent))
        let consumer = try await broker.client("crm-automation")
        let subscription = try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 7)
        // No reading (so no credit) for longer than the broker keeps the read-ahead of a subscriber waiting for
        // credit (`ConnectionHandler.stalledReadAheadNanos`, 1 s); then everything must still arrive once, in order.
        try await Task.sleep(for: .milliseconds(1_500))
        let records = try await collect(subscription, count: 50)
        #expect(records.map(\.offset) == Array(0..<50))
        await consumer.close()
        await producer.close()
        await broker.stop()
    }

    @Test("bad credentials get UNAUTHENTICATED and the connection closes")
    func badCredentials() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        for frame in [hello("crm-automation", token: "wrong"), hello("nobody", token: "x")] {
            let raw = try await RawConnection.connect(port: broker.port)
            let (frames, closed) = try await raw.exchange(encode(frame))
            #expect(closed)
            #expect(frames.count == 1)
            if case .error(let error) = frames.first?.frame {
                #expect(error.code == .unauthenticated)
            } else {
                Issue.record("expected UNAUTHENTICATED, got \(frames)")
            }
        }
        await #expect(throws: BrokerClientError.self) {
            _ = try await BrokerClient.connect(host: "127.0.0.1", port: broker.port, clientID: "crm-automation", token: "nope")
        }
        await broker.stop()
    }

    @Test("a request before HELLO gets UNAUTHENTICATED and the connection closes")
    func requestBeforeHello() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let raw = try await RawConnection.connect(port: broker.port)
        let publish = TaggedFrame(correlationID: 5, frame: .publish(Publish(topic: "education.completed", records: [educationEvent(0)])))
        let (frames, closed) = try await raw.exchange(encode(publish))
        #expect(closed)
        #expect(frames.first?.correlationID == 5)
        if case .error(let error) = frames.first?.frame { #expect(error.code == .unauthenticated) } else { Issue.record("\(frames)") }
        let admin = try await broker.client("ops-admin")
        #expect(try await admin.listTopics().first { $0.name == "education.completed" }?.endOffset == 0)
        await admin.close()
        await broker.stop()
    }

    @Test("a garbage frame gets ERROR and close while another connection keeps working")
    func garbageFrame() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let bystander = try await broker.client("learning-portal")
        _ = try await bystander.publish(topic: "education.completed", records: [educationEvent(0)])
        let cases: [(bytes: [UInt8], code: ErrorCode)] = [
            (Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8), .malformedFrame),
            ([0x42, 0x4B, 0x01, 0x03, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF], .frameTooLarge),
            ([0x42, 0x4B, 0x09, 0x01, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], .unsupportedVersion),
            ([0x42, 0x4B, 0x01, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], .malformedFrame),
        ]
        for item in cases {
            let raw = try await RawConnection.connect(port: broker.port)
            let (frames, closed) = try await raw.exchange(encode(hello("learning-portal")) + item.bytes)
            #expect(closed, "broker must close after \(item.code.name)")
            let errors = frames.compactMap { frame -> ErrorFrame? in
                if case .error(let error) = frame.frame { return error }
                return nil
            }
            #expect(errors.map(\.code) == [item.code])
            // The other connection is unaffected.
            let results = try await bystander.publish(topic: "education.completed", records: [educationEvent(1)])
            #expect(results.first?.code == .ok)
        }
        await bystander.close()
        await broker.stop()
    }

    @Test("the ERROR before a close is read even when the client sent more after the bad frame (no reset loses it)")
    func errorSurvivesUnreadBytes() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        // A garbage frame, then 4 MiB the broker has not read when it closes: a plain close would answer with a
        // reset, and the client's read would fail before it reads the ERROR (4 runs of 5 before the fix).
        let bytes = encode(hello("learning-portal")) + Array("GET / HTTP/1.1\r\n\r\n".utf8)
            + [UInt8](repeating: 0x78, count: 4 << 20)
        for _ in 0..<3 {
            let raw = try await RawConnection.connect(port: broker.port)
            let (frames, closed) = try await raw.exchange(bytes, timeout: .seconds(15))
            #expect(closed)
            let errors = frames.compactMap { frame -> ErrorCode? in
                if case .error(let error) = frame.frame { return error.code }
                return nil
            }
            #expect(errors == [.malformedFrame])
        }
        // None of them is left open: only the admin's own connection counts.
        let admin = try await broker.client("ops-admin")
        var connections = try await admin.stats().connections
        for _ in 0..<250 where connections != 1 {
            try await Task.sleep(for: .milliseconds(20))
            connections = try await admin.stats().connections
        }
        #expect(connections == 1)
        await admin.close()
        await broker.stop()
    }

    @Test("a connection that never says HELLO is closed after the handshake timeout")
    func handshakeTimeout() async throws {
        let broker = try await TestBroker.start { $0.server.handshakeTimeoutSeconds = 1 }
        defer { broker.removeData() }
        let raw = try await RawConnection.connect(port: broker.port)
        let (frames, closed) = try await raw.exchange([0x42, 0x4B], timeout: .seconds(15))
        #expect(closed)
        if case .error(let error) = frames.first?.frame { #expect(error.code == .unauthenticated) } else { Issue.record("\(frames)") }
        await broker.stop()
    }

    @Test("pipelined publishes on one connection are acknowledged with ascending offsets")
    func pipelinedPublishes() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let offsets = try await withThrowingTaskGroup(of: (Int, Int64).self) { group in
            for n in 0..<200 {
                group.addTask { (n, try await producer.publish(topic: "education.completed", records: [educationEvent(n)])[0].offset) }
            }
            var all: [(Int, Int64)] = []
            for try await item in group { all.append(item) }
            return all
        }
        #expect(Set(offsets.map(\.1)) == Set(0..<200))
        let consumer = try await broker.client("crm-automation")
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest), count: 200)
        #expect(got.map(\.offset) == Array(0..<200))
        await consumer.close()
        await producer.close()
        await broker.stop()
    }

    @Test("a request too long to encode fails at once with INVALID_REQUEST; the requests pipelined around it are served")
    func unencodableRequestAmongPipelined() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let longTopic = String(repeating: "t", count: 70_000)
        let outcomes = try await withThrowingTaskGroup(of: (Int, Result<Int64, BrokerClientError>).self) { group in
            for n in 0..<101 {
                group.addTask {
                    do {
                        let topic = n == 50 ? longTopic : "education.completed"
                        return (n, .success(try await producer.publish(topic: topic, records: [educationEvent(n)])[0].offset))
                    } catch let error as BrokerClientError {
                        return (n, .failure(error))
                    }
                }
            }
            var all: [Int: Result<Int64, BrokerClientError>] = [:]
            for try await (n, outcome) in group { all[n] = outcome }
            return all
        }
        guard case .failure(let error)? = outcomes[50] else {
            Issue.record("the over-long topic was not refused: \(String(describing: outcomes[50]))")
            return
        }
        #expect(error.code == .invalidRequest)
        #expect(error.message.contains("the limit is 65535"))
        let offsets = outcomes.filter { $0.key != 50 }.compactMap { try? $0.value.get() }
        #expect(Set(offsets) == Set(0..<100))
        // Nothing of the refused frame reached the stream: the connection still works.
        #expect(try await producer.publish(topic: "education.completed", records: [educationEvent(100)])[0].offset == 100)
        let consumer = try await broker.client("crm-automation")
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest), count: 101)
        #expect(got.map(\.offset) == Array(0..<101))
        await consumer.close()
        await producer.close()
        await broker.stop()
    }
}
