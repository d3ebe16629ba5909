import LogStore
import NIOCore
import Testing
import TopicRouter
import WireProtocol

@testable import BrokerServer

/// `PublishSorter.sort` judges a frame's records by the roles of the frame's header names (each looked up once per
/// frame). Its decisions must be exactly those of `Policy.recordVerdict` asked record by record with name strings,
/// also for names past the frame's name table (more than 32 distinct names) and for reserved names in any case.
@Suite("Sorter record checks")
struct SorterChecksTests {
    /// With `sharedMemo`, every frame is sorted twice with one `PublishSorter.Memo` (as a connection's requests
    /// are): its roles of the name table and its memory of the last good consent scope carry from request to request.
    @Test(
        "accepted, quarantined (reason, rule, message) and dedupe keys match the per-record verdicts",
        arguments: [false, true]
    )
    func sameDecisions(sharedMemo: Bool) throws {
        let policy = try Policy(config: TestBroker.makeConfig(dataDir: "/nonexistent"))
        let memo = sharedMemo ? PublishSorter.Memo(topic: "education.completed", policy: policy) : nil
        let principal = Principal(clientID: "p", role: "r", clearance: "phi")
        let names = [
            "x-a", "dedupe-key", "broker-x", "Broker-Producer", "QUARANTINE-reason", "brokerage", "consent_scope",
            "event_type", "source_system", "recipient",
        ]
        let values = ["", "k1", "educational", "educational, operational_notice", "not_a_scope", "educational,,x", "é"]
        var random = UInt64(0x0123_4567_89ab_cdef)
        func next(_ bound: Int) -> Int {
            random = random &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((random >> 33) % UInt64(bound))
        }
        for frame in 0..<40 {
            var records: [WireRecord] = []
            for n in 0..<20 {
                var record = educationEvent(frame * 100 + n)
                if next(3) == 0 { record.headers.removeAll { _ in next(6) == 0 } }
                for _ in 0..<next(4) {
                    record.headers.insert(
                        WireHeader(
                            name: names[next(names.count)], value: ByteBuffer(string: values[next(values.count)])
                        ),
                        at: next(record.headers.count + 1)
                    )
                }
                // Frames 30... use more distinct names than the frame's name table keeps.
                if frame >= 30 {
                    for extra in 0..<3 {
                        record.headers.append(
                            WireHeader(name: "n\(n)-\(extra)", value: ByteBuffer(string: "v"))
                        )
                    }
                    if n % 5 == 4 {
                        record.headers.append(WireHeader(name: "Broker-late-\(n)", value: ByteBuffer(string: "v")))
                    }
                }
                records.append(record)
            }
            let publish = Publish(topic: "education.completed", records: records)
            for _ in 0..<(sharedMemo ? 2 : 1) {
            let sorted = PublishSorter.sort(
                publish, principal: principal, policy: policy, receivedAtMillis: 1,
                limiterHeaderNames: ["recipient", "consent_scope"], memo: memo
            )
            for (index, record) in records.enumerated() {
                let headers = record.headers.map {
                    PolicyHeader(name: $0.name, value: Array($0.value.readableBytesView))
                }
                let expected = policy.recordVerdict(
                    topic: publish.topic, headers: headers, value: Array(record.value.readableBytesView)
                )
                let keys = record.headers.filter { $0.name == "dedupe-key" }
                let expectedKey = keys.count == 1 ? keys[0].value : nil
                switch expected {
                case .accept:
                    let entry = sorted.accepted.first { $0.index == index }
                    #expect(entry != nil, "frame \(frame) record \(index): accepted")
                    #expect(sorted.key(entry?.dedupeKey) == expectedKey, "frame \(frame) record \(index): key")
                case .quarantine(let reason, let rule, let message):
                    let entry = sorted.quarantined.first { $0.index == index }
                    #expect(entry?.reason == reason.rawValue, "frame \(frame) record \(index): \(message)")
                    #expect(entry?.rule == rule && entry?.message == message, "frame \(frame) record \(index)")
                    #expect(sorted.key(entry?.dedupeKey) == expectedKey, "frame \(frame) record \(index): key")
                case .refuse:
                    #expect(sorted.refused.contains { $0.index == index }, "frame \(frame) record \(index): refused")
                }
            }
            #expect(sorted.accepted.count + sorted.quarantined.count + sorted.refused.count == records.count)
            if frame >= 30 { #expect(sorted.quarantined.contains { $0.reason == "RESERVED_HEADER" }) }
            }
        }
    }
}

extension PublishSorter {
    /// The bytes of a dedupe key the sorter noted, as a buffer (nil for none): what the tests compare.
    func key(_ span: KeySpan?) -> ByteBuffer? {
        span.map { self.records.bytes.getSlice(at: self.records.bytes.readerIndex + Int($0.start), length: Int($0.count))! }
    }
}
