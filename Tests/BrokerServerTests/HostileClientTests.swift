import BrokerClient
import Foundation
import NIOCore
import Testing
import WireProtocol

/// Clients that misbehave: each gets a clear error, is closed where right, and nobody else notices.
@Suite("Hostile and broken clients over TCP")
struct HostileClientTests {
    /// A well-behaved client still publishes and reads after whatever just happened.
    static func stillServes(_ broker: TestBroker, _ n: Int) async throws {
        let producer = try await broker.client("learning-portal")
        let results = try await producer.publish(topic: "education.completed", records: [educationEvent(n)])
        #expect(results.first?.code == .ok)
        await producer.close()
    }

    static func errors(_ frames: [TaggedFrame]) -> [ErrorFrame] {
        frames.compactMap { frame -> ErrorFrame? in
            if case .error(let error) = frame.frame { return error }
            return nil
        }
    }

    @Test("past max_connections a connection gets a clean ERROR and close; closing one makes room again")
    func connectionLimit() async throws {
        let broker = try await TestBroker.start { $0.server.maxConnections = 5 }
        defer { broker.removeData() }
        var clients: [BrokerClient] = []
        for _ in 0..<5 { clients.append(try await broker.client("crm-automation")) }
        for _ in 0..<3 {
            let raw = try await RawConnection.connect(port: broker.port)
            let (frames, closed) = try await raw.exchange([])
            #expect(closed)
            #expect(Self.errors(frames).first?.message.contains("connection limit") == true)
        }
        for client in clients { try await client.ping() }  // the first five are unaffected
        await clients.removeLast().close()
        // The count is released: a new client gets in (retry briefly: the close is asynchronous).
        var admitted: BrokerClient?
        for _ in 0..<50 where admitted == nil {
            admitted = try? await broker.client("learning-portal")
            if admitted == nil { try await Task.sleep(for: .milliseconds(20)) }
        }
        let producer = try #require(admitted)
        #expect(try await producer.publish(topic: "education.completed", records: [educationEvent(0)]).first?.code == .ok)
        await producer.close()
        for client in clients { await client.close() }
        await broker.stop()
    }

    @Test("a frame cut in the middle with the socket left open is closed after frame_timeout_seconds; quiet is fine")
    func stalledFrame() async throws {
        let broker = try await TestBroker.start { $0.server.frameTimeoutSeconds = 1 }
        defer { broker.removeData() }
        // A quiet authenticated connection (no partial frame) outlives the timeout.
        let quiet = try await broker.client("crm-automation")
        // HELLO, then the header of a PUBLISH announcing 1,000 body bytes and only 10 of them.
        var header = ByteBuffer()
        header.writeInteger(WireConstants.magic)
        header.writeInteger(WireConstants.protocolVersion)
        header.writeInteger(Opcode.publish.rawValue)
        header.writeInteger(UInt16(0))
        header.writeInteger(UInt32(7))
        header.writeInteger(UInt32(1000))
        header.writeBytes([UInt8](repeating: 0, count: 10))
        let raw = try await RawConnection.connect(port: broker.port)
        let started = ContinuousClock.now
        let (frames, closed) = try await raw.exchange(encode(hello("learning-portal")) + Array(header.readableBytesView))
        #expect(closed)
        #expect(ContinuousClock.now - started >= .milliseconds(900))
        let error = try #require(Self.errors(frames).first)
        #expect(error.code == .malformedFrame)
        #expect(error.message.contains("frame incomplete after 1 s (24 bytes received)"))
        try await quiet.ping()
        try await Self.stillServes(broker, 0)
        await quiet.close()
        await broker.stop()
    }

    @Test("bad PUBLISH sizes and a second HELLO are refused, and the connection stays usable")
    func refusedButUsable() async throws {
        let broker = try await TestBroker.start { $0.server.maxRecordsPerPublish = 10 }
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        for count in [0, 11] {
            do {
                _ = try await producer.publish(topic: "education.completed", records: (0..<count).map(educationEvent))
                Issue.record("a PUBLISH of \(count) records must be refused")
            } catch let error as BrokerClientError {
                #expect(error.code == .invalidRequest)
            }
        }
        do {
            _ = try await producer.request(.hello(Hello(clientID: "crm-automation", credential: ByteBuffer(string: "x"))))
            Issue.record("a second HELLO must be refused")
        } catch let error as BrokerClientError {
            #expect(error.code == .invalidRequest)
        }
        #expect(try await producer.publish(topic: "education.completed", records: (0..<10).map(educationEvent)).count == 10)
        await producer.close()
        await broker.stop()
    }

    @Test("nonzero flags are MALFORMED_FRAME and close; others keep working")
    func nonzeroFlags() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        var frame = encode(TaggedFrame(correlationID: 2, frame: .ping(nonce: 1)))
        frame[5] = 1  // flags (bytes 4...5) must be 0 in version 1
        let raw = try await RawConnection.connect(port: broker.port)
        let (frames, closed) = try await raw.exchange(encode(hello("learning-portal")) + frame)
        #expect(closed)
        #expect(Self.errors(frames).map(\.code) == [.malformedFrame])
        try await Self.stillServes(broker, 0)
        await broker.stop()
    }

    @Test("a subscribe storm, and a consumer vanishing mid-delivery, leave the broker serving everyone else")
    func stormsAndVanishingConsumers() async throws {
        let broker = try await TestBroker.start()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        _ = try await producer.publish(topic: "education.completed", records: (0..<200).map(educationEvent))
        // 200 subscriptions on one connection, then the connection goes away.
        let stormer = try await broker.client("crm-automation")
        for _ in 0..<200 { _ = try await stormer.subscribe(topic: "education.completed", start: .earliest, credit: 2) }
        await stormer.close()
        // A consumer that reads a little and disconnects while records keep being published.
        for round in 0..<5 {
            let quitter = try await broker.client("crm-automation")
            let subscription = try await quitter.subscribe(topic: "education.completed", start: .earliest, credit: 50)
            _ = try await collect(subscription, count: 3)
            let publishing = Task { try await producer.publish(topic: "education.completed", records: (0..<50).map { educationEvent(1000 + round * 50 + $0) }) }
            await quitter.close()
            #expect(try await publishing.value.allSatisfy { $0.code == .ok })
        }
        // Everything is still there for a consumer that stays.
        let consumer = try await broker.client("crm-automation")
        let all = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest, credit: 256), count: 450)
        #expect(all.map(\.offset) == (0..<450).map { Int64($0) })
        await consumer.close()
        await producer.close()
        await broker.stop()
    }
}
