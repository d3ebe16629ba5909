import Foundation
import Glibc
import Testing

@testable import LogStore

@Suite("DurableTable")
struct DurableTableTests {
    static func bytes(_ string: String) -> [UInt8] { Array(string.utf8) }

    @Test("put, get, delete and batches survive a reopen")
    func putGetDeleteReopen() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            do {
                let table = try DurableTable(path: path, logger: CapturedLogs().logger)
                #expect(table.get("a") == nil)
                #expect(table.count == 0)
                try table.put("a", Self.bytes("1"))
                try table.put("b", Self.bytes("2"))
                try table.put("a", Self.bytes("3"))
                try table.put("empty", [])
                try table.delete("b")
                try table.delete("never-there")
                try table.put([(key: "x/1", value: [1]), (key: "x/2", value: [2]), (key: "y", value: [9])])
                try table.apply([.put(key: "z", value: [7]), .delete(key: "y"), .put(key: "z", value: [8])])
                #expect(table.get("a") == Self.bytes("3"))
                #expect(table.get("b") == nil)
            }
            let table = try DurableTable(path: path, logger: CapturedLogs().logger)
            #expect(table.get("a") == Self.bytes("3"))
            #expect(table.get("b") == nil)
            #expect(table.get("empty") == [])
            #expect(table.get("y") == nil)
            #expect(table.get("z") == [8])
            #expect(table.count == 5)
            #expect(table.entries(withPrefix: "x/").map(\.key) == ["x/1", "x/2"])
            #expect(table.entries(withPrefix: "x/").map(\.value) == [[1], [2]])
            #expect(table.snapshot() == ["a": Self.bytes("3"), "empty": [], "x/1": [1], "x/2": [2], "z": [8]])
        }
    }

    @Test("a batch is one entry with one fdatasync")
    func batchIsOneSync() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let table = try DurableTable(path: dir + "/table", logger: CapturedLogs().logger, io: io)
            let before = io.state.withLock { $0.otherFdatasyncs }
            let size = table.fileBytes
            let entries = (0..<50).map { (key: "k\($0)", value: [UInt8(truncatingIfNeeded: $0)]) }
            try table.put(entries)
            #expect(io.state.withLock { $0.otherFdatasyncs } == before + 1)
            let entry = try DurableTable.encodeEntry(entries.map { .put(key: $0.key, value: $0.value) })
            #expect(table.fileBytes == size + Int64(entry.readableBytes))
            try table.put("one", [1])
            #expect(io.state.withLock { $0.otherFdatasyncs } == before + 2)
            try table.apply([])
            #expect(io.state.withLock { $0.otherFdatasyncs } == before + 2, "an empty batch writes nothing")
        }
    }

    @Test("a tail torn at every byte of the last entry (a batch) is cut: all of the batch or none of it")
    func tornTail() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            let batch: [DurableTable.Change] = [
                .put(key: "a", value: [2, 2]), .delete(key: "b"), .put(key: "c", value: [3]),
            ]
            do {
                let table = try DurableTable(path: path, logger: CapturedLogs().logger)
                try table.put("a", [1])
                try table.put("b", [1])
                try table.apply(batch)
            }
            let bytes = try fileBytes(path)
            let lastStart = bytes.count - (try DurableTable.encodeEntry(batch).readableBytes)
            for cut in lastStart..<bytes.count {
                try writeFile(path, Array(bytes[..<cut]))
                let logs = CapturedLogs()
                let table = try DurableTable(path: path, logger: logs.logger)
                #expect(table.snapshot() == ["a": [1], "b": [1]], "cut at \(cut)")
                #expect(try fileBytes(path).count == lastStart)
                #expect(cut == lastStart || logs.contains(level: .warning, "truncating torn or corrupt tail"))
                if cut > lastStart {
                    let line = logs.all.first { $0.message.contains("truncating") }
                    #expect(line?.metadata["brokerd.position"] == "\(lastStart)")
                    #expect(line?.metadata["brokerd.bytes_cut"] == "\(cut - lastStart)")
                }
                try table.put("after", [9])
                #expect(try DurableTable(path: path, logger: CapturedLogs().logger).get("after") == [9])
            }
            // The intact file replays the whole batch.
            try writeFile(path, bytes)
            let table = try DurableTable(path: path, logger: CapturedLogs().logger)
            #expect(table.snapshot() == ["a": [2, 2], "c": [3]])
        }
    }

    @Test(
        "a flipped bit anywhere in the last entry ends the replay before it",
        arguments: [0, 3, 4, 7, 8, 9, 10, 14, 19]
    )
    func corruptEntry(position: Int) async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            do {
                let table = try DurableTable(path: path, logger: CapturedLogs().logger)
                try table.put("key", [1])
                try table.put("key", [2])
            }
            var bytes = try fileBytes(path)
            let entry = bytes.count - (try DurableTable.encodeEntry([.put(key: "key", value: [2])]).readableBytes)
            bytes[entry + position] ^= 0x10
            try writeFile(path, bytes)
            let logs = CapturedLogs()
            let table = try DurableTable(path: path, logger: logs.logger)
            #expect(table.get("key") == [1])
            #expect(try fileBytes(path).count == entry)
            #expect(logs.contains(level: .warning, "truncating torn or corrupt tail"))
        }
    }

    @Test("a file that is not a table is refused and left untouched; a torn header is rewritten")
    func fileHeader() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            let foreign = Array("not a durable table at all".utf8)
            try writeFile(path, foreign)
            do {
                _ = try DurableTable(path: path, logger: CapturedLogs().logger)
                Issue.record("opened a foreign file")
            } catch let error as LogStoreError {
                #expect(error.kind == .corruptBatch)
                #expect(error.message.contains(path))
            }
            #expect(try fileBytes(path) == foreign)

            for torn in 0..<DurableTable.fileHeaderSize {
                try writeFile(path, Array(DurableTable.magic.prefix(torn)))
                let table = try DurableTable(path: path, logger: CapturedLogs().logger)
                #expect(table.count == 0)
                try table.put("k", [torn == 0 ? 0 : 1])
                #expect(Array(try fileBytes(path).prefix(8)) == DurableTable.magic)
                #expect(try DurableTable(path: path, logger: CapturedLogs().logger).get("k") != nil)
            }
        }
    }

    @Test("the file is compacted once larger than the factor times its live size; deletes shrink the live size")
    func compaction() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            let factor: Int64 = 3
            do {
                let table = try DurableTable(
                    path: path,
                    logger: CapturedLogs().logger,
                    compactionMinimumBytes: 0,
                    compactionFactor: factor
                )
                for round in 0..<100 {
                    try table.put("key-a", Array(repeating: UInt8(round % 256), count: 10))
                    try table.put([(key: "key-b", value: [UInt8(round % 256)]), (key: "tmp-\(round)", value: [1])])
                    try table.delete("tmp-\(round)")
                    let live =
                        Int64(DurableTable.fileHeaderSize)
                        + DurableTable.singleEntrySize(key: "key-a", valueCount: 10)
                        + DurableTable.singleEntrySize(key: "key-b", valueCount: 1)
                    #expect(table.fileBytes <= factor * live + 64, "after round \(round)")
                    #expect(Int64(try fileBytes(path).count) == table.fileBytes)
                }
                #expect(table.get("key-b") == [99])
            }
            #expect(!(try fileNames(dir).contains("table.compact")))
            let table = try DurableTable(path: path, logger: CapturedLogs().logger)
            #expect(table.snapshot() == ["key-a": Array(repeating: 99, count: 10), "key-b": [99]])
        }
    }

    @Test("a failed compaction rename keeps the old file and the table keeps working")
    func compactionFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let logs = CapturedLogs()
            let path = dir + "/table"
            let table = try DurableTable(path: path, logger: logs.logger, io: io, compactionMinimumBytes: 0)
            io.state.withLock { $0.failRename = EIO }
            for i in 0..<20 { try table.put("k", [UInt8(i)]) }
            #expect(logs.contains(level: .error, "compaction failed; keeping the old file"))
            #expect(!(try fileNames(dir).contains("table.compact")))
            io.state.withLock { $0.failRename = nil }
            try table.put("k", [100])
            #expect(try DurableTable(path: path, logger: CapturedLogs().logger).get("k") == [100])
        }
    }

    @Test("a failed fdatasync fails that change and every later one; reads answer the last durable values")
    func syncFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let logs = CapturedLogs()
            let path = dir + "/table"
            let table = try DurableTable(path: path, logger: logs.logger, io: io)
            try table.put("k", [1])
            io.state.withLock { $0.failOtherFdatasync = EIO }
            #expect(throws: LogStoreError.self) { try table.put("k", [2]) }
            io.state.withLock { $0.failOtherFdatasync = nil }
            do {
                try table.put([(key: "k", value: [3]), (key: "j", value: [3])])
                Issue.record("a change after a failed sync succeeded")
            } catch let error as LogStoreError {
                #expect(error.kind == .storageFailure)
                #expect(error.message.contains("fdatasync"))
                #expect(error.message.contains(path))
            }
            #expect(table.get("k") == [1])
            #expect(table.get("j") == nil)
            #expect(logs.contains(level: .error, "durable table failed"))
            // The failed entry was cut: a reopen sees only what was acknowledged.
            #expect(try DurableTable(path: path, logger: CapturedLogs().logger).snapshot() == ["k": [1]])
        }
    }

    @Test("limits: long keys, large values and oversized batches are refused before anything is written")
    func limits() async throws {
        try await withTemporaryDirectory { dir in
            let table = try DurableTable(path: dir + "/table", logger: CapturedLogs().logger)
            let size = table.fileBytes
            let longKey = String(repeating: "k", count: DurableTable.maxKeyBytes + 1)
            #expect(
                throws: LogStoreError(
                    .invalidArgument,
                    "durable table \(dir)/table: key of \(longKey.utf8.count) bytes, limit \(DurableTable.maxKeyBytes)"
                )
            ) {
                try table.put(longKey, [])
            }
            #expect(throws: LogStoreError.self) {
                try table.put("v", [UInt8](repeating: 0, count: DurableTable.maxValueBytes + 1))
            }
            let many = (0...DurableTable.maxOperations).map { DurableTable.Change.delete(key: "\($0)") }
            #expect(throws: LogStoreError.self) { try table.apply(many) }
            #expect(table.fileBytes == size)
            try table.put(String(repeating: "k", count: DurableTable.maxKeyBytes), [1])
        }
    }

    @Test("concurrent puts from many tasks are all durable")
    func concurrentPuts() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/table"
            let table = try DurableTable(path: path, logger: CapturedLogs().logger, compactionMinimumBytes: 0)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for task in 0..<8 {
                    group.addTask {
                        for i in 0..<25 { try table.put("t\(task)", [UInt8(i)]) }
                    }
                }
                try await group.waitForAll()
            }
            let reopened = try DurableTable(path: path, logger: CapturedLogs().logger)
            #expect(reopened.snapshot() == Dictionary(uniqueKeysWithValues: (0..<8).map { ("t\($0)", [UInt8(24)]) }))
        }
    }
}
