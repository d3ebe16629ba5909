import Foundation
import NIOCore
import Testing

@testable import LogStore

/// Replays the committed FuzzBatch corpus (seeds and every finding of `make fuzz`) through the harness's check.
@Suite("FuzzBatch corpus")
struct FuzzCorpusTests {
    static var corpus: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fuzz/corpus/FuzzBatch")
    }

    @Test("every corpus input decodes without a crash or a contract violation")
    func replay() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).sorted()
        #expect(files.count >= 3)
        for file in files {
            let bytes = Array(try Data(contentsOf: Self.corpus.appendingPathComponent(file)))
            #expect(throws: Never.self, "\(file)") { try BatchCodecCheck.check(bytes) }
        }
    }

    @Test("the check reaches the decoder: the seed segments hold batches that decode and round-trip")
    func seedsDecode() throws {
        let bytes = Array(try Data(contentsOf: Self.corpus.appendingPathComponent("audit-segment.bin")))
        var input = ByteBuffer(bytes: bytes)
        var batches = 0
        while let header = BatchHeader.peek(input), let batch = input.readSlice(length: header.totalSize) {
            _ = try BatchCodec.decode(batch)
            batches += 1
        }
        #expect(batches > 1)
        #expect(input.readableBytes == 0)
    }

    @Test("an LZ4 batch claiming more than 255x its compressed size is refused before allocating (FuzzBatch finding)")
    func lz4ExpansionBound() throws {
        let records = (0..<20).map { LogRecord(key: nil, headers: [], value: ByteBuffer(string: "event \($0) of twenty"), timestamp: 1) }
        var batch = try BatchCodec.encode(records, baseOffset: 0, codec: .lz4)
        let compressed = batch.readableBytes - BatchFormat.headerSize
        // The finding: a header (with a valid CRC) saying the body expands to 2 GiB made the decoder allocate it.
        batch.setInteger(UInt32(compressed * 255 + 1), at: batch.readerIndex + 38)
        let crc = batch.withUnsafeReadableBytes { CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[BatchFormat.crcCoverageStart...])) }
        batch.setInteger(crc, at: batch.readerIndex + BatchFormat.crcPosition)
        do {
            _ = try BatchCodec.decode(batch)
            Issue.record("a batch claiming an impossible expansion decoded")
        } catch {
            #expect(error.reason.contains("cannot"))
        }
    }

    @Test("a batch whose stored CRC is wrong is refused as stored, and decodes only once the check fixes the CRC")
    func flippedCRC() throws {
        var bytes = Array(try Data(contentsOf: Self.corpus.appendingPathComponent("education-batch.bin")))
        bytes[BatchFormat.crcPosition] ^= 0xFF
        #expect(throws: BatchDecodeError.self) { try BatchCodec.decode(ByteBuffer(bytes: bytes)) }
        try BatchCodecCheck.check(bytes)
    }
}
