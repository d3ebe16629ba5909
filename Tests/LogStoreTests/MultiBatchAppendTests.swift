import Foundation
import NIOCore
import Testing

@testable import LogStore

/// `TopicLog.append(bodiesBy:completion:)`: batches encoded before the append (the broker compresses each
/// connection's records on its event loop) are written at consecutive offsets in one write, under one fdatasync,
/// and are read, indexed, kept in memory and recovered as batches appended one by one would be.
@Suite("Appends of several batches")
struct MultiBatchAppendTests {
    static func append(_ log: any TopicLog, bodies: @escaping @Sendable () throws(LogStoreError) -> [EncodedBatchBody])
        async -> Result<AppendResult, LogStoreError>
    {
        await withCheckedContinuation { continuation in
            log.append(bodiesBy: bodies) { continuation.resume(returning: $0) }
        }
    }

    @Test(
        "bodies become consecutive batches in one write and one fdatasync; reads, index, memory and reopen agree",
        arguments: [1, 150]
    )
    func bodiesWrittenTogether(indexInterval: Int) async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, io: io)
            // An index entry at every batch but a segment's first (interval 1), or at some (150: due inside an
            // append of several), and every batch kept in memory.
            let config = TopicLogConfig.test(
                fsync: .always, compression: .lz4, indexIntervalBytes: indexInterval, recentBatchBytes: 1 << 20
            )
            let log = try await backend.openTopic(name: "t", config: config)
            try await FileTopicLogTests.fill(log, batches: 2)  // offsets 0..<3
            let sizes: [Int64] = [3, 1, 5, 2, 1, 4]
            var bodies: [EncodedBatchBody] = []
            var next: Int64 = 3
            for size in sizes {
                let stored = try BatchCodec.storedRecords(testRecords(next..<next + size, padding: 40))
                bodies.append(try log.encodeBody([stored]))
                next += size
            }
            #expect(bodies.allSatisfy { $0.attributes == 1 }, "each body compressed by the topic's codec (LZ4)")
            let (writesBefore, syncsBefore) = io.state.withLock { state in
                (state.logWriteLog.filter { !$0.zeros }.count, state.logFdatasyncs)
            }
            let encoded = bodies
            let result = await Self.append(log) { encoded }
            #expect(try result.get() == AppendResult(baseOffset: 3, count: 16))
            let end: Int64 = 19
            #expect(log.endOffset == end)
            let (writes, syncs) = io.state.withLock { state in
                (state.logWriteLog.filter { !$0.zeros }.count, state.logFdatasyncs)
            }
            #expect(writes - writesBefore == 1, "one write for the six batches")
            #expect(syncs - syncsBefore == 1, "one fdatasync covers them")
            let segment = dir + "/t/" + SegmentName.stem(0) + ".log"
            let headers = try segmentBatches(segment).headers
            #expect(headers.map(\.baseOffset) == [0, 1, 3, 6, 7, 12, 14, 15])
            #expect(headers.map(\.recordCount) == [1, 2, 3, 1, 5, 2, 1, 4])
            for offset in Int64(0)..<end {
                #expect(log.readsFromMemory(from: offset), "offset \(offset) in the recent batches")
                // At least the 4 asked for (or to the end), then the rest of the last batch read.
                let raw = try log.readRaw(from: offset, maxRecords: 4, maxBytes: 1 << 20)
                #expect((0..<raw.count).map { raw.offset(at: $0) } == Array(offset..<offset + Int64(raw.count)))
                #expect(raw.count >= min(4, Int(end - offset)) && offset + Int64(raw.count) <= end)
                for index in 0..<raw.count {
                    let record = raw.storedRecord(at: index)
                    let padding = record.offset >= 3 ? 40 : 0
                    #expect(record.record == testRecord(record.offset, padding: padding), "offset \(record.offset)")
                }
            }
            let read = try readAll(log, from: 0)
            #expect(read.map(\.offset) == Array(0..<end))
            for stored in read {
                #expect(stored.record == testRecord(stored.offset, padding: stored.offset >= 3 ? 40 : 0))
            }
            await backend.closeAll()
            // The index written beside the batches is the one recovery rebuilds from them.
            let indexPath = dir + "/t/" + SegmentName.stem(0) + ".index"
            let written = try fileBytes(indexPath)
            if indexInterval == 1 {
                #expect(written.count == 7 * IndexEntry.size, "an entry at each batch but the first")
            } else {
                #expect(written.count >= IndexEntry.size && written.count < 7 * IndexEntry.size)
            }
            try FileManager.default.removeItem(atPath: indexPath)
            let reopened = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let again = try await reopened.openTopic(name: "t", config: config)
            #expect(try fileBytes(indexPath) == written)
            #expect(again.endOffset == end)
            #expect(try readAll(again, from: 0).map(\.record) == read.map(\.record))
            await reopened.closeAll()
        }
    }

    @Test("an encoding error, or no body, fails that append only: nothing written, the next append is stored")
    func failedEncodingFailsTheAppendOnly() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: .test(fsync: .always))
            try await FileTopicLogTests.fill(log, batches: 2)
            let refused = LogStoreError(.tooLarge, "records too large for a batch")
            let failed = await Self.append(log) { () throws(LogStoreError) -> [EncodedBatchBody] in throw refused }
            #expect(throws: refused) { try failed.get() }
            let empty = await Self.append(log) { [] }
            #expect(throws: LogStoreError(.invalidArgument, "an append needs at least one batch")) { try empty.get() }
            #expect(log.endOffset == 3)
            let stored = try BatchCodec.storedRecords(testRecords(3..<5))
            let body = try log.encodeBody([stored])
            #expect(try await Self.append(log) { [body] }.get() == AppendResult(baseOffset: 3, count: 2))
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<5)
            await backend.closeAll()
        }
    }
}
