import Foundation
import Glibc
import Logging
import NIOCore
import Testing

@testable import LogStore

/// `TopicLogConfig.recentBatchBytes`: the newest batches kept as written serve reads near the end of the log.
@Suite("Recent batches in memory")
struct RecentBatchesTests {
    /// What a read returned, comparable: offsets and records.
    static func records(_ raw: RawRecords) -> [StoredRecord] {
        (0..<raw.count).map { raw.storedRecord(at: $0) }
    }

    @Test("reads served from memory return exactly what reads of the files return, for every offset and size")
    func sameAsFileReads() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, io: io)
            // Small segments, so the kept batches span a roll; LZ4, so decoding is exercised too.
            let remembered = try await backend.openTopic(
                name: "mem",
                config: .test(segmentBytes: 8 << 10, compression: .lz4, recentBatchBytes: 16 << 10)
            )
            let plain = try await backend.openTopic(
                name: "file",
                config: .test(segmentBytes: 8 << 10, compression: .lz4)
            )
            for log in [remembered, plain] { try await FileTopicLogTests.fill(log, batches: 150, padding: 60) }
            let end = remembered.endOffset
            #expect(end == plain.endOffset)
            #expect(!remembered.readsFromMemory(from: 0), "the oldest batches are no longer kept")
            #expect(remembered.readsFromMemory(from: end - 1))
            #expect(!plain.readsFromMemory(from: end - 1))
            var fromMemory = 0
            for offset in stride(from: Int64(0), to: end, by: 1) {
                for (maxRecords, maxBytes) in [(1, 1 << 20), (3, 1 << 20), (1000, 1), (1000, 700), (1000, 1 << 20)] {
                    let memory = remembered.readsFromMemory(from: offset)
                    let readsBefore = io.state.withLock { $0.logReads }
                    let a = try remembered.readRaw(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
                    let readsAfter = io.state.withLock { $0.logReads }
                    let b = try plain.readRaw(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
                    #expect(Self.records(a) == Self.records(b), "offset \(offset) \(maxRecords) \(maxBytes)")
                    #expect(
                        try remembered.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
                            == plain.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)
                    )
                    if memory {
                        fromMemory += 1
                        #expect(readsAfter == readsBefore, "a read from memory touches no file (offset \(offset))")
                    }
                }
            }
            #expect(fromMemory > 0)
            // The end and beyond behave as for any read.
            #expect(try remembered.readRaw(from: end, maxRecords: 10, maxBytes: 1 << 20).count == 0)
            #expect(throws: LogStoreError.self) { try remembered.readRaw(from: end + 1, maxRecords: 10, maxBytes: 100) }
            await backend.closeAll()
        }
    }
}
