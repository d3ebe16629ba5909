import CLZ4
import NIOCore
import Testing

@testable import LogStore

@Suite("BatchCodec")
struct BatchCodecTests {
    static let recordSets: [(String, [LogRecord])] = [
        ("null key, empty value", [LogRecord(key: nil, headers: [], value: ByteBuffer(), timestamp: 0)]),
        (
            "many headers",
            [
                LogRecord(
                    key: buffer("k"),
                    headers: (0..<300).map { LogHeader(name: "header-\($0)", value: buffer("v\($0)")) },
                    value: buffer("payload"),
                    timestamp: 5
                )
            ]
        ),
        (
            "binary bytes",
            [
                LogRecord(
                    key: buffer((0...255).map { UInt8($0) }),
                    headers: [LogHeader(name: "bin", value: buffer([0, 0xFF, 0x80, 0x7F]))],
                    value: buffer((0...255).reversed().map { UInt8($0) }),
                    timestamp: -1
                )
            ]
        ),
        (
            "empty key and header value",
            [
                LogRecord(
                    key: ByteBuffer(),
                    headers: [LogHeader(name: "", value: ByteBuffer())],
                    value: buffer("v"),
                    timestamp: 9
                )
            ]
        ),
        ("compressible stream", testRecords(0..<200, padding: 100)),
    ]

    @Test(
        "round trip",
        arguments: [CompressionCodec.none, .lz4],
        Self.recordSets.indices
    )
    func roundTrip(codec: CompressionCodec, set: Int) throws {
        let (name, records) = Self.recordSets[set]
        let batch = try BatchCodec.encode(records, baseOffset: 1234, codec: codec)
        let (header, decoded) = try BatchCodec.decode(batch)
        #expect(decoded == records, "\(name)")
        #expect(header.baseOffset == 1234)
        #expect(Int(header.recordCount) == records.count)
        #expect(header.firstTimestamp == records[0].timestamp)
        #expect(header.maxTimestamp == records.map(\.timestamp).max())
        #expect(header.totalSize == batch.readableBytes)
        #expect(header.magic == BatchFormat.magic)
    }

    @Test("LZ4 is used when it shrinks the body and stated in the attributes")
    func compressionAttributes() throws {
        let compressible = try BatchCodec.encode(testRecords(0..<200, padding: 100), baseOffset: 0, codec: .lz4)
        let plain = try BatchCodec.encode(testRecords(0..<200, padding: 100), baseOffset: 0, codec: .none)
        #expect(BatchHeader.peek(compressible)?.codec == .lz4)
        #expect(compressible.readableBytes < plain.readableBytes / 4)
        #expect(BatchHeader.peek(plain)?.codec == CompressionCodec.none)
        // Incompressible bytes (xorshift): LZ4 would grow them, so the body is stored as is.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let random: [UInt8] = (0..<256).map { _ in
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            return UInt8(truncatingIfNeeded: state >> 32)
        }
        let record = LogRecord(key: nil, headers: [], value: buffer(random), timestamp: 0x0102_0304_0506_0708)
        let tiny = try BatchCodec.encode([record], baseOffset: 0, codec: .lz4)
        #expect(BatchHeader.peek(tiny)?.codec == CompressionCodec.none)
        #expect(try BatchCodec.decode(tiny).1[0].value == buffer(random))
    }

    @Test("a body LZ4-compressed at acceleration 1, as brokerd stored it before 2026-12-06, decodes to its records")
    func acceleration1BodiesDecode() throws {
        // JSON-like events, as a topic holds: the two accelerations compress them differently.
        let records = (0..<300).map { (i: Int64) in
            LogRecord(
                key: nil,
                headers: [LogHeader(name: "event_type", value: buffer("education.completed"))],
                value: buffer(
                    #"{"learner":"L-\#(i * 7919 % 10_007)","course":"C-\#(i % 13)","score":\#(i * 37 % 101),"#
                        + #""completed_at":"2026-12-06T22:\#(10 + i % 50):\#(10 + i * 7 % 50)Z"}"#
                ),
                timestamp: 1_700_000_000_000 + i
            )
        }
        var body = try BatchCodec.encodeBody(records, codec: .none)
        let plain = body.storedBody
        var compressed = ByteBuffer()
        let bound = Int(LZ4_compressBound(Int32(plain.readableBytes)))
        compressed.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
            plain.withUnsafeReadableBytes { input in
                Int(
                    LZ4_compress_default(
                        input.baseAddress!.assumingMemoryBound(to: CChar.self),
                        out.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(input.count), Int32(out.count)
                    )
                )
            }
        }
        #expect(compressed.readableBytes > 0 && compressed.readableBytes < plain.readableBytes)
        body.storedBody = compressed
        body.attributes = CompressionCodec.lz4.rawValue
        let old = BatchCodec.assemble(body, baseOffset: 40)
        let now = try BatchCodec.encode(records, baseOffset: 40, codec: .lz4)
        #expect(BatchHeader.peek(now)?.codec == .lz4)
        #expect(now != old, "the codec's acceleration compresses these records as acceleration 1 does")
        let (header, decoded) = try BatchCodec.decode(old)
        #expect(header.baseOffset == 40 && header.recordCount == 300)
        #expect(decoded == records)
        #expect(try BatchCodec.decode(now).1 == records)
    }

    @Test("every flipped bit after the CRC field is detected", arguments: [CompressionCodec.none, .lz4])
    func crcCoverage(codec: CompressionCodec) throws {
        let batch = try BatchCodec.encode(testRecords(0..<3), baseOffset: 7, codec: codec)
        for position in BatchFormat.crcCoverageStart..<batch.readableBytes {
            var damaged = batch
            damaged.setInteger(batch.getInteger(at: position, as: UInt8.self)! ^ 0x10, at: position)
            #expect(throws: BatchDecodeError.self, "byte \(position)") { try BatchCodec.decode(damaged) }
        }
    }

    @Test("empty batch and oversized batch are refused")
    func limits() {
        #expect(throws: LogStoreError.self) { try BatchCodec.encodeBody([], codec: .none) }
        do {
            _ = try BatchCodec.encodeBody(testRecords(0..<10, padding: 100), codec: .lz4, maxBodyBytes: 500)
            Issue.record("expected tooLarge")
        } catch {
            #expect(error.kind == .tooLarge)
        }
        do {
            _ = try BatchCodec.encodeBody([], codec: .none)
        } catch {
            #expect(error.kind == .invalidArgument)
        }
    }
}
