import BrokerClient
import Foundation
import NIOCore
import Testing
import TopicRouter
import WireProtocol

/// PUBLISHes that reach the broker together (one write, so mostly one read): the broker appends the accepted-only
/// ones as one group; these tests check what a producer relies on, whatever the grouping: arrival order in the log,
/// each request's own offsets, and nothing lost when other requests, quarantines or a close come in between.
@Suite("Publishes that arrive together")
struct PublishGroupTests {
    static func publish(_ correlationID: UInt32, _ topic: String, _ records: [WireRecord]) -> TaggedFrame {
        TaggedFrame(correlationID: correlationID, frame: .publish(Publish(topic: topic, records: records)))
    }

    static func leaking(_ n: Int) -> WireRecord { PolicyPlaneTests.event(n, payload: #""dob":"1961-02-03""#) }

    @Test("one connection's PUBLISHes sent in one write: arrival order in the log, each acknowledged with its own offsets")
    func arrivalOrder() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        // 40 requests in one write. Most carry one good record; some a record to quarantine (alone or after a good
        // one), one a whole-request refusal (unknown topic), one 1,500 good records (about 500 KB: a group sends
        // what it holds before taking a request that large), and a PING sits in the middle.
        var frames: [TaggedFrame] = [hello("learning-portal")]
        var expectedAccounts: [String] = []
        var expectedQuarantined = 0
        for n in 0..<40 {
            let correlationID = UInt32(100 + n)
            switch n {
            case 10, 25:
                frames.append(Self.publish(correlationID, "education.completed", [Self.leaking(n)]))
                expectedQuarantined += 1
            case 17:
                frames.append(Self.publish(correlationID, "education.completed", [PolicyPlaneTests.event(n), Self.leaking(n)]))
                expectedAccounts.append("acct_\(n)")
                expectedQuarantined += 1
            case 5:
                let many = (0..<1_500).map { PolicyPlaneTests.event(1_000 + $0) }
                frames.append(Self.publish(correlationID, "education.completed", many))
                expectedAccounts += (0..<1_500).map { "acct_\(1_000 + $0)" }
            case 21:
                frames.append(Self.publish(correlationID, "no.such.topic", [PolicyPlaneTests.event(n)]))
            case 30:
                frames.append(TaggedFrame(correlationID: correlationID, frame: .ping(nonce: 30)))
            default:
                frames.append(Self.publish(correlationID, "education.completed", [PolicyPlaneTests.event(n)]))
                expectedAccounts.append("acct_\(n)")
            }
        }
        var bytes = ByteBuffer()
        for frame in frames { FrameCodec.encode(frame, into: &bytes) }
        let raw = try await RawConnection.connect(port: broker.port)
        let (answers, _) = try await raw.exchange(Array(bytes.readableBytesView)) { frames in
            frames.filter { $0.correlationID >= 100 }.count == 40
        }
        var byRequest: [UInt32: Frame] = [:]
        for answer in answers where answer.correlationID >= 100 { byRequest[answer.correlationID] = answer.frame }
        #expect(byRequest.count == 40)

        // Accepted records, in request order, hold consecutive topic offsets from 0; quarantined ones consecutive
        // __quarantine offsets from 0.
        var nextOffset: Int64 = 0
        var nextQuarantineOffset: Int64 = 0
        for n in 0..<40 {
            let answer = try #require(byRequest[UInt32(100 + n)], "no answer to request \(n)")
            switch n {
            case 21:
                guard case .error(let error) = answer else { Issue.record("request 21: \(answer)"); continue }
                #expect(error.code == .unknownTopic)
            case 30:
                #expect(answer == .pong(nonce: 30))
            default:
                guard case .publishAck(let ack) = answer else { Issue.record("request \(n): \(answer)"); continue }
                for result in ack.results {
                    if result.code == .quarantined {
                        #expect(result.offset == nextQuarantineOffset, "request \(n)")
                        nextQuarantineOffset += 1
                    } else {
                        #expect(result == .ok(offset: nextOffset), "request \(n)")
                        nextOffset += 1
                    }
                }
            }
        }
        #expect(nextOffset == Int64(expectedAccounts.count))
        #expect(nextQuarantineOffset == Int64(expectedQuarantined))

        let crm = try await broker.client("crm-automation")
        let stored = try await PolicyPlaneTests.readAll(crm, "education.completed")
        #expect(stored.map(\.offset) == Array(0..<Int64(expectedAccounts.count)))
        #expect(stored.map { $0.record.key.map { String(buffer: $0) } } == expectedAccounts)
        // Every stored record carries its own request's provenance.
        #expect(stored.allSatisfy { $0.record.header(RecordHeaderName.brokerProducer) == "learning-portal" })
        await crm.close()
        await broker.stop()
    }

    @Test("PUBLISHes followed at once by a close are all appended")
    func closeRightAfter() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        var bytes = ByteBuffer()
        FrameCodec.encode(hello("learning-portal"), into: &bytes)
        for n in 0..<30 {
            FrameCodec.encode(Self.publish(UInt32(100 + n), "education.completed", [PolicyPlaneTests.event(n)]), into: &bytes)
        }
        let raw = try await RawConnection.connect(port: broker.port)
        try await raw.sendAndClose(Array(bytes.readableBytesView))
        let crm = try await broker.client("crm-automation")
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest)
        let stored = try await collect(subscription, count: 30)
        #expect(stored.map { $0.record.key.map { String(buffer: $0) } } == (0..<30).map { "acct_\($0)" })
        await crm.close()
        await broker.stop()
    }
}
