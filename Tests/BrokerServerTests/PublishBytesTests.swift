import LogStore
import NIOCore
import Testing
import TopicRouter
import WireProtocol

@testable import BrokerServer

/// A PUBLISH's accepted records are written into the log batch straight from the frame's bytes
/// (`StoredRecordBytes(_:accepted:extraHeaders:receivedAtMillis:)`): the batch must hold exactly the bytes the
/// `LogRecord` path writes for the same request (each record's headers, then the provenance headers, a zero
/// timestamp stamped with the receive time).
@Suite("PUBLISH records as bytes")
struct PublishBytesTests {
    static let receivedAt: Int64 = 1_776_000_123_456
    static let principal = Principal(clientID: "learning-portal", role: "producer", clearance: "phi")

    static func header(_ name: String, _ value: String) -> WireHeader {
        WireHeader(name: name, value: ByteBuffer(string: value))
    }

    /// Records covering the layout's corners: no key, an empty key, no headers, repeated header names, an empty
    /// value and empty header values, timestamp 0 (the broker stamps it), non-ASCII names, a dedupe key.
    static let records: [WireRecord] = [
        WireRecord(key: nil, headers: [], value: ByteBuffer(string: "{}"), timestamp: 0),
        WireRecord(key: ByteBuffer(), headers: [], value: ByteBuffer(), timestamp: 1_700_000_000_000),
        WireRecord(
            key: ByteBuffer(string: "acct_1"),
            headers: [Self.header("event_type", "a.b"), Self.header("x", ""), Self.header("x", "second")],
            value: ByteBuffer(string: #"{"n":1}"#), timestamp: 0
        ),
        WireRecord(
            key: ByteBuffer(string: "k"),
            headers: [Self.header("dedupe-key", "key-1"), Self.header("grüße", "ü"), Self.header("", "")],
            value: ByteBuffer(repeating: 0x41, count: 3000), timestamp: 42
        ),
        WireRecord(
            key: nil, headers: (0..<40).map { Self.header("h\($0 % 7)", String(repeating: "v", count: $0)) },
            value: ByteBuffer(string: "many headers"), timestamp: -5
        ),
    ]

    /// The request as the broker receives it: encoded as a client does, decoded as the broker does.
    static func received(_ records: [WireRecord], topic: String = "support.milestone") throws -> Publish {
        var bytes = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 1, frame: .publish(Publish(topic: topic, records: records))), into: &bytes)
        var decoder = FrameDecoder()
        let frame = try #require(try decoder.decode(buffer: &bytes))
        guard case .publish(let publish) = frame.frame else {
            Issue.record("decoded \(frame.frame.opcode), not PUBLISH")
            throw CancellationError()
        }
        return publish
    }

    /// The `LogRecord` path: each accepted record converted header by header, as the sorter used to.
    static func logRecords(_ records: [WireRecord], provenance: [LogHeader]) -> [LogRecord] {
        records.map { wire in
            LogRecord(
                key: wire.key, headers: wire.headers.map { LogHeader(name: $0.name, value: $0.value) } + provenance,
                value: wire.value, timestamp: wire.timestamp == 0 ? Self.receivedAt : wire.timestamp
            )
        }
    }

    /// The scenario config with `support.milestone` taking any record (no required headers, any payload), so the
    /// records above are accepted unless a test makes one fail the record checks.
    static func policy() throws -> Policy {
        var config = TestBroker.makeConfig(dataDir: "/nonexistent")
        let index = try #require(config.topics.firstIndex { $0.name == "support.milestone" })
        config.topics[index].requiredHeaders = []
        config.topics[index].payload = .any
        return try Policy(config: config)
    }

    @Test("the batch written from the frame's bytes equals the LogRecord path's, byte for byte", arguments: [CompressionCodec.none, .lz4])
    func sameBatchBytes(codec: CompressionCodec) throws {
        let policy = try Self.policy()
        let publish = try Self.received(Self.records)
        #expect(publish.encodedRecords.count == Self.records.count)
        #expect(publish.records == Self.records)
        let sorted = PublishSorter.sort(publish, principal: Self.principal, policy: policy, receivedAtMillis: Self.receivedAt)
        #expect(sorted.accepted.map(\.index) == Array(Self.records.indices))
        #expect(sorted.quarantined.isEmpty && sorted.refused.isEmpty)
        let stored = StoredRecordBytes(
            sorted.records, accepted: sorted.accepted, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt
        )
        let expected = Self.logRecords(Self.records, provenance: sorted.provenance)
        #expect(sorted.provenance.map(\.name) == RecordHeaderName.brokerSet)
        let old = try BatchCodec.encode(expected, baseOffset: 77, codec: codec)
        let new = BatchCodec.assemble(try BatchCodec.encodeBody(parts: [stored], codec: codec), baseOffset: 77)
        #expect(Array(new.readableBytesView) == Array(old.readableBytesView))
        // And it reads back as those records.
        let (header, decoded) = try BatchCodec.decode(new)
        #expect(header.recordCount == UInt32(Self.records.count))
        #expect(decoded == expected)
        #expect(stored.valueBytes == Self.records.reduce(0) { $0 + $1.value.readableBytes })
    }

    @Test("two requests in one batch, and a subset of a request's records, equal the LogRecord path's bytes")
    func partsAndSubsets() throws {
        let policy = try Self.policy()
        let first = PublishSorter.sort(
            try Self.received(Array(Self.records.prefix(3))), principal: Self.principal, policy: policy,
            receivedAtMillis: Self.receivedAt
        )
        let second = PublishSorter.sort(
            try Self.received(Array(Self.records.suffix(2))), principal: Self.principal, policy: policy,
            receivedAtMillis: Self.receivedAt
        )
        // Only records 0 and 2 of the first request (as if record 1 were a duplicate).
        let subset = first.accepted.filter { $0.index != 1 }
        let parts = [
            StoredRecordBytes(first.records, accepted: subset, extraHeaders: first.provenance, receivedAtMillis: Self.receivedAt),
            StoredRecordBytes(
                second.records, accepted: second.accepted, extraHeaders: second.provenance, receivedAtMillis: Self.receivedAt
            ),
        ]
        let expected =
            Self.logRecords([Self.records[0], Self.records[2]], provenance: first.provenance)
            + Self.logRecords(Array(Self.records.suffix(2)), provenance: second.provenance)
        for codec in [CompressionCodec.none, .lz4] {
            let old = try BatchCodec.encode(expected, baseOffset: 5, codec: codec)
            let new = BatchCodec.assemble(try BatchCodec.encodeBody(parts: parts, codec: codec), baseOffset: 5)
            #expect(Array(new.readableBytesView) == Array(old.readableBytesView), "\(codec)")
        }
        // The accepted records' stored form, as values, is the same as the LogRecord path's.
        #expect(first.accepted.map { first.storedRecord($0) } == Self.logRecords(Array(Self.records.prefix(3)), provenance: first.provenance))
    }

    @Test("the sizes a publish group queues its records by, before they are written, are the bytes written")
    func sizesBeforeWriting() throws {
        let policy = try Self.policy()
        for records in [Self.records, Array(Self.records.prefix(1)), Array(Self.records.suffix(2))] {
            let sorted = PublishSorter.sort(
                try Self.received(records), principal: Self.principal, policy: policy, receivedAtMillis: Self.receivedAt
            )
            var all = StoredRecordsBuilder()
            all.appendAll(sorted.records, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt)
            let whole = StoredRecordBytes(
                sorted.records, accepted: sorted.accepted, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt
            )
            #expect(all.build().bytes == whole.bytes && all.count == records.count)
            #expect(StoredRecordsBuilder.storedSizeOfAll(sorted.records, extraHeaders: sorted.provenance) == whole.bytes.readableBytes)
            let indices = sorted.accepted.map(\.index).filter { $0 % 2 == 0 }
            var some = StoredRecordsBuilder()
            some.append(sorted.records, indices: indices, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt)
            #expect(
                StoredRecordsBuilder.storedSize(of: sorted.records, indices: indices, extraHeaders: sorted.provenance)
                    == some.byteCount
            )
            #expect(some.build().bytes == StoredRecordBytes(
                sorted.records, accepted: sorted.accepted.filter { $0.index % 2 == 0 }, extraHeaders: sorted.provenance,
                receivedAtMillis: Self.receivedAt
            ).bytes)
        }
    }

    @Test("quarantined records keep the LogRecord path: their headers, then the quarantine headers")
    func quarantined() throws {
        let policy = try Self.policy()
        var records = Self.records
        records.insert(
            WireRecord(key: nil, headers: [Self.header("broker-producer", "forged")], value: ByteBuffer(string: "q"), timestamp: 0),
            at: 1
        )
        records.append(
            WireRecord(
                key: ByteBuffer(string: "d"), headers: [Self.header("dedupe-key", "a"), Self.header("dedupe-key", "b")],
                value: ByteBuffer(string: "twice"), timestamp: 9
            )
        )
        let sorted = PublishSorter.sort(
            try Self.received(records), principal: Self.principal, policy: policy, receivedAtMillis: Self.receivedAt
        )
        #expect(sorted.quarantined.map(\.index) == [1, records.count - 1])
        #expect(sorted.quarantined.map(\.reason) == ["RESERVED_HEADER", "INVALID_DEDUPE_KEY"])
        for entry in sorted.quarantined {
            let wire = records[entry.index]
            let expected = LogRecord(
                key: wire.key,
                headers: wire.headers.map { LogHeader(name: $0.name, value: $0.value) }
                    + PublishSorter.quarantineHeaders(
                        topic: "support.milestone", producer: Self.principal.clientID, time: String(Self.receivedAt),
                        reason: entry.reason, rule: entry.rule, policyVersion: policy.policyVersion, message: entry.message
                    ),
                value: wire.value, timestamp: wire.timestamp == 0 ? Self.receivedAt : wire.timestamp
            )
            #expect(entry.record == expected)
            // A repeated key is no key.
            #expect(entry.dedupeKey == nil)
        }
        // The accepted ones around them are still written byte for byte as before.
        let acceptedWire = sorted.accepted.map { records[$0.index] }
        #expect(acceptedWire.count == Self.records.count)
        let stored = StoredRecordBytes(
            sorted.records, accepted: sorted.accepted, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt
        )
        let old = try BatchCodec.encode(Self.logRecords(acceptedWire, provenance: sorted.provenance), baseOffset: 0, codec: .lz4)
        let new = BatchCodec.assemble(try BatchCodec.encodeBody(parts: [stored], codec: .lz4), baseOffset: 0)
        #expect(Array(new.readableBytesView) == Array(old.readableBytesView))
        // The one dedupe key of record 4 is found in the frame.
        let keyed = try #require(sorted.accepted.first { records[$0.index].headers.first?.name == "dedupe-key" })
        #expect(sorted.key(keyed.dedupeKey) == ByteBuffer(string: "key-1"))
    }

    @Test("a PUBLISH built from records, not decoded, is sorted and written the same way")
    func builtFromRecords() throws {
        let policy = try Self.policy()
        let publish = Publish(topic: "support.milestone", records: Self.records)
        let sorted = PublishSorter.sort(publish, principal: Self.principal, policy: policy, receivedAtMillis: Self.receivedAt)
        let stored = StoredRecordBytes(
            sorted.records, accepted: sorted.accepted, extraHeaders: sorted.provenance, receivedAtMillis: Self.receivedAt
        )
        let old = try BatchCodec.encode(Self.logRecords(Self.records, provenance: sorted.provenance), baseOffset: 3, codec: .none)
        let new = BatchCodec.assemble(try BatchCodec.encodeBody(parts: [stored], codec: .none), baseOffset: 3)
        #expect(Array(new.readableBytesView) == Array(old.readableBytesView))
    }
}
