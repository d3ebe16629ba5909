import LogStore
import NIOCore
import Testing
import WireProtocol

@testable import BrokerServer

/// A DELIVER copied from stored bytes (`EncodedDeliveredRecords`) must be byte for byte the DELIVER encoded from
/// `DeliveredRecord`s, as the broker sent it before.
@Suite("DELIVER from stored bytes")
struct DeliverBytesTests {
    static func frameBytes(_ deliver: Deliver) -> ByteBuffer {
        var buffer = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 0, frame: .deliver(deliver)), into: &buffer)
        return buffer
    }

    static let records: [LogRecord] = (0..<40).map { i in
        LogRecord(
            key: i % 3 == 0 ? nil : ByteBuffer(string: i % 3 == 1 ? "" : "key-\(i)"),
            headers: (0..<(i % 7)).map { h in
                LogHeader(
                    name: ["event_type", "consent_scope", "broker-policy-version", "", "x"][h % 5],
                    value: ByteBuffer(string: String(repeating: "v", count: (i + h) % 11))
                )
            },
            value: ByteBuffer(string: "{\"n\":\(i)}" + String(repeating: "p", count: i * 13)),
            timestamp: 1_700_000_000_000 + Int64(i)
        )
    }

    @Test(
        "the same bytes as DeliveredRecords, for any subset of records over several batches",
        arguments: [CompressionCodec.none, .lz4]
    )
    func sameBytes(codec: CompressionCodec) throws {
        var raw = RawRecords()
        var stored: [StoredRecord] = []
        var base: Int64 = 100
        for chunk in stride(from: 0, to: Self.records.count, by: 9) {
            let records = Array(Self.records[chunk..<min(chunk + 9, Self.records.count)])
            let batch = try BatchCodec.encode(records, baseOffset: base, codec: codec)
            _ = try BatchCodec.index(batch, into: &raw, from: 0, end: .max, maxRecords: .max)
            stored += records.enumerated().map { StoredRecord(offset: base + Int64($0), record: $1) }
            base += Int64(records.count)
        }
        #expect(raw.count == stored.count)
        let subsets: [[Int]] = [
            Array(0..<stored.count), [0], [stored.count - 1], Array(stride(from: 1, to: stored.count, by: 3)),
            Array(8...10), [],
        ]
        for indices in subsets {
            let encoded = try #require(EncodedDeliveredRecords(raw, indices: indices))
            #expect(encoded.count == indices.count)
            let copied = Deliver(subscriptionID: 3, encoded: encoded)
            let built = Deliver(subscriptionID: 3, records: indices.map { DeliveredRecord(stored: stored[$0]) })
            #expect(Self.frameBytes(copied) == Self.frameBytes(built), "\(indices)")
            #expect(copied == built)
            #expect(copied.recordCount == indices.count)
            let tagged = TaggedFrame(correlationID: 0, frame: .deliver(copied))
            #expect(throws: Never.self) { try FrameCodec.validate(tagged) }
        }
    }

    @Test("a header name that is not UTF-8 is not copied as stored: the caller builds DeliveredRecords")
    func invalidNameFallsBack() throws {
        let record = LogRecord(
            key: nil, headers: [LogHeader(name: "abc", value: ByteBuffer())], value: ByteBuffer(), timestamp: 1
        )
        var body = try BatchCodec.encodeBody([record], codec: .none)
        // The name's first byte: timestamp 8, key length 4, value length 4, header count 4, name length 4.
        body.storedBody.setInteger(UInt8(0xFF), at: body.storedBody.readerIndex + 24)
        let batch = BatchCodec.assemble(body, baseOffset: 0)
        var raw = RawRecords()
        _ = try BatchCodec.index(batch, into: &raw, from: 0, end: .max, maxRecords: .max)
        #expect(!raw.namesAreValidUTF8)
        #expect(EncodedDeliveredRecords(raw, indices: [0]) == nil)
        #expect(raw.storedRecord(at: 0).record.headers[0].name == "\u{FFFD}bc")
    }
}
