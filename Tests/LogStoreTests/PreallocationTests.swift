import Foundation
import Glibc
import Logging
import NIOCore
import Testing

@testable import LogStore

/// `TopicLogConfig.preallocateBytes`: zeros kept ahead of the active segment's last batch, cut at roll, close and
/// open (docs/STORAGE.md, "Preallocation").
@Suite("Preallocation")
struct PreallocationTests {
    static let topic = "t"

    /// Where the batches of a `.log` file end (parsed from their headers), and the file's size.
    static func batchesEnd(_ path: String) throws -> (end: Int, size: Int) {
        let batches = try segmentBatches(path)
        return (batches.end, batches.size)
    }

    static func logPaths(_ dir: String) throws -> [String] {
        try fileNames(dir + "/" + Self.topic).filter { $0.hasSuffix(".log") }.sorted().map { dir + "/" + Self.topic + "/" + $0 }
    }

    /// Waits (bounded) until the active segment's file is longer than its batches: a preallocation finished.
    static func awaitPreallocated(_ path: String) async throws -> (end: Int, size: Int) {
        for _ in 0..<500 {
            let state = try Self.batchesEnd(path)
            if state.size > state.end { return state }
            try await Task.sleep(for: .milliseconds(10))
        }
        return try Self.batchesEnd(path)
    }

    /// A backend on `dir` and topic `t` opened with `fsync` always and `preallocateBytes` (64 KiB) of preallocation.
    static func open(
        _ dir: String, segmentBytes: Int64, io: any FileIO = PosixFileIO(), logs: CapturedLogs = CapturedLogs(),
        upToBytesPerSecond: Int64 = 0, preallocateBytes: Int = 64 << 10
    ) async throws -> (FileLogBackend, any TopicLog, TopicLogConfig) {
        let backend = try FileLogBackend(directory: dir, logger: logs.logger, io: io)
        var config = TopicLogConfig.test(segmentBytes: segmentBytes, fsync: .always, preallocateBytes: preallocateBytes)
        config.preallocateUpToBytesPerSecond = upToBytesPerSecond
        return (backend, try await backend.openTopic(name: Self.topic, config: config), config)
    }

    /// Reopens topic `t` of `dir` on a new backend (logging to `logs`) and expects it to end at `end` and serve
    /// every record from 0 (written by `FileTopicLogTests.fill` or `testRecords` with `padding`), then closes it.
    static func expectReopened(
        _ dir: String, config: TopicLogConfig, end: Int64, padding: Int, logs: CapturedLogs = CapturedLogs()
    ) async throws {
        let reopened = try FileLogBackend(directory: dir, logger: logs.logger)
        let again = try await reopened.openTopic(name: Self.topic, config: config)
        #expect(again.endOffset == end)
        FileTopicLogTests.expectRecords(try readAll(again, from: 0), 0..<end, padding: padding)
        await reopened.closeAll()
    }

    @Test("a segment growing faster than preallocateUpToBytesPerSecond gets no buffered zeros after its first preallocation")
    func fastGrowthPausesPreallocation() async throws {
        try await withTemporaryDirectory { dir in
            // 1 byte/s: every judgement of the rate finds the segment too fast. The files stay buffered.
            let (backend, log, config) = try await Self.open(
                dir, segmentBytes: 4 << 20, io: FaultyFileIO(), upToBytesPerSecond: 1
            )
            try await FileTopicLogTests.fill(log, batches: 240, padding: 400)
            let path = try Self.logPaths(dir)[0]
            // Past three preallocations' worth of bytes: only the first was zeroed, the batches grew the file since.
            let state = try Self.batchesEnd(path)
            #expect(state.end > 3 * (64 << 10))
            try await Task.sleep(for: .milliseconds(100))
            #expect(try Self.batchesEnd(path).size == state.end, "no zeros ahead of the batches")
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 400)
            let end = log.endOffset
            await backend.closeAll()
            try await Self.expectReopened(dir, config: config, end: end, padding: 400)
        }
    }

    @Test("with direct I/O the zeros bypass the page cache at any growth rate, and batches written over them end on a page boundary")
    func directZeros() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            io.state.withLock { $0.directIO = true }
            // 1 byte/s would pause buffered zeros after the first preallocation (the test above).
            let (backend, log, config) = try await Self.open(dir, segmentBytes: 4 << 20, io: io, upToBytesPerSecond: 1)
            try await FileTopicLogTests.fill(log, batches: 240, padding: 400)
            try #require(io.state.withLock { $0.directIOAlignment ?? 0 } > 0, "the temporary directory has direct I/O")
            let path = try Self.logPaths(dir)[0]
            let state = try await Self.awaitPreallocated(path)
            #expect(state.end > 3 * (64 << 10), "past three preallocations' worth of bytes")
            #expect(state.size > state.end, "zeros ahead of the batches despite the rate")
            #expect(try fileBytes(path)[state.end...].allSatisfy { $0 == 0 })
            let writes = io.state.withLock { $0.logWriteLog }
            let directZeros = writes.filter { $0.zeros && $0.direct }
            #expect(directZeros.allSatisfy { $0.offset % 4096 == 0 && $0.count % 4096 == 0 })
            #expect(directZeros.reduce(0) { $0 + $1.count } > 3 * (64 << 10), "every preallocation went direct")
            // Batches of 1-4 records of about 420 bytes: without the padding about 1 in 4096 would end on a page
            // boundary by chance. Only the segment's first batches, before any zeros, are not padded.
            let batches = writes.filter { !$0.zeros }
            #expect(batches.count == 240)
            #expect(batches.filter { ($0.offset + Int64($0.count)) % 4096 == 0 }.count >= 230)
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 400)
            let end = log.endOffset
            await backend.closeAll()
            let closed = try Self.batchesEnd(path)
            #expect(closed.size == state.end && closed.end == state.end, "close cuts the zeros: \(closed)")
            try await Self.expectReopened(dir, config: config, end: end, padding: 400)
        }
    }

    @Test("a negative preallocateUpToBytesPerSecond is refused when the topic opens")
    func negativeRateLimitRefused() async throws {
        try await withTemporaryDirectory { dir in
            await #expect(
                throws: LogStoreError(.invalidArgument, "topic 't': preallocateUpToBytesPerSecond -1 must not be negative")
            ) {
                _ = try await Self.open(dir, segmentBytes: 1 << 20, upToBytesPerSecond: -1)
            }
            #expect(!FileManager.default.fileExists(atPath: dir + "/" + Self.topic), "nothing of the topic is created")
        }
    }

    @Test("a segment growing slower than preallocateUpToBytesPerSecond keeps zeros ahead of its batches")
    func slowGrowthKeepsPreallocating() async throws {
        try await withTemporaryDirectory { dir in
            // 1 GiB/s: far above what appends that each wait for an fdatasync can reach.
            let (backend, log, _) = try await Self.open(dir, segmentBytes: 4 << 20, upToBytesPerSecond: 1 << 30)
            try await FileTopicLogTests.fill(log, batches: 240, padding: 400)
            let path = try Self.logPaths(dir)[0]
            let ahead = try await Self.awaitPreallocated(path)
            #expect(ahead.end > 3 * (64 << 10))
            #expect(ahead.size > ahead.end, "zeros follow the batches")
            #expect(try fileBytes(path)[ahead.end...].allSatisfy { $0 == 0 })
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 400)
            await backend.closeAll()
        }
    }

    @Test("zeros are kept ahead of the last batch, batches overwrite them, and close cuts them")
    func keptAheadAndCutAtClose() async throws {
        try await withTemporaryDirectory { dir in
            let (backend, log, config) = try await Self.open(dir, segmentBytes: 1 << 20)
            try await FileTopicLogTests.fill(log, batches: 4, padding: 100)
            let path = try Self.logPaths(dir)[0]
            let ahead = try await Self.awaitPreallocated(path)
            #expect(ahead.size > ahead.end, "zeros follow the batches")
            #expect(ahead.size <= ahead.end + (64 << 10), "at most one preallocation ahead")
            #expect(try fileBytes(path)[ahead.end...].allSatisfy { $0 == 0 })
            // The next batches land in the zeros: the file does not grow while they fit.
            try await FileTopicLogTests.fill(log, batches: 4, padding: 100)
            let after = try Self.batchesEnd(path)
            #expect(after.end > ahead.end)
            #expect(after.size >= ahead.size)
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 100)
            let end = log.endOffset
            await backend.closeAll()
            let closed = try Self.batchesEnd(path)
            #expect(closed.size == closed.end, "close cuts the zeros")
            #expect(try fileNames(dir + "/" + Self.topic).contains(cleanShutdownMarkerName))
            // A clean reopen needs no cut and serves every record.
            let logs = CapturedLogs()
            let reopened = try FileLogBackend(directory: dir, logger: logs.logger)
            let again = try await reopened.openTopic(name: Self.topic, config: config)
            #expect(again.endOffset == end)
            FileTopicLogTests.expectRecords(try readAll(again, from: 0), 0..<end, padding: 100)
            #expect(!logs.contains(level: .info, "cutting preallocated zeros"))
            await reopened.closeAll()
        }
    }

    @Test("a roll leaves closed segments ending at their last batch; preallocation stops at segmentBytes")
    func rollCutsZeros() async throws {
        try await withTemporaryDirectory { dir in
            let (backend, log, _) = try await Self.open(dir, segmentBytes: 16 << 10)
            try await FileTopicLogTests.fill(log, batches: 120, padding: 200)
            let paths = try Self.logPaths(dir)
            #expect(paths.count >= 3)
            for path in paths.dropLast() {
                let closed = try Self.batchesEnd(path)
                #expect(closed.size == closed.end, "\(path)")
            }
            // The active segment's zeros never reach past where it rolls (a batch may cross it).
            let active = try await Self.awaitPreallocated(paths.last!)
            #expect(active.size <= max(active.end, 16 << 10))
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 200)
            await backend.closeAll()
        }
    }

    @Test("an unclean stop with zeros after the last batch: reopen cuts them quietly and keeps every record")
    func uncleanStopCutsZerosQuietly() async throws {
        try await withTemporaryDirectory { dir in
            let (backend, log, config) = try await Self.open(dir, segmentBytes: 1 << 20)
            try await FileTopicLogTests.fill(log, batches: 6, padding: 100)
            let end = log.endOffset
            let path = try Self.logPaths(dir)[0]
            let ahead = try await Self.awaitPreallocated(path)
            #expect(ahead.size > ahead.end)
            // What a SIGKILL leaves: the files as they are now, no clean marker.
            let copy = dir + "/copy"
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: dir + "/" + Self.topic, toPath: copy + "/" + Self.topic)
            await backend.closeAll()
            let logs = CapturedLogs()
            let reopened = try FileLogBackend(directory: copy, logger: logs.logger)
            let again = try await reopened.openTopic(name: Self.topic, config: config)
            #expect(again.endOffset == end)
            #expect(logs.contains(level: .info, "cutting preallocated zeros"))
            #expect(!logs.all.contains { $0.level >= .warning }, "zeros are not damage")
            let cut = try Self.batchesEnd(try Self.logPaths(copy)[0])
            #expect(cut.end == ahead.end)
            FileTopicLogTests.expectRecords(try readAll(again, from: 0), 0..<end, padding: 100)
            #expect(try await again.append(testRecords(end..<end + 3)) == AppendResult(baseOffset: end, count: 3))
            FileTopicLogTests.expectRecords(try readAll(again, from: end), end..<end + 3)
            await reopened.closeAll()
        }
    }

    @Test("a torn batch followed by zeros is still a torn tail: cut with a warning")
    func tornBatchBeforeZeros() async throws {
        try await withTemporaryDirectory { dir in
            let (bytes, lastStart, lastBase) = try await FileTopicLogTests.pristineSegment(dir: dir, batches: 4)
            let torn = Array(bytes[..<(lastStart + 20)]) + [UInt8](repeating: 0, count: 8192)
            try writeFile(dir + "/t/00000000000000000000.log", torn)
            try FileManager.default.removeItem(atPath: dir + "/t/" + cleanShutdownMarkerName)
            let logs = CapturedLogs()
            let backend = try FileLogBackend(directory: dir, logger: logs.logger)
            let log = try await backend.openTopic(name: "t", config: .test())
            #expect(log.endOffset == lastBase)
            #expect(logs.contains(level: .warning, "truncating torn or corrupt tail"))
            #expect(try fileBytes(dir + "/t/00000000000000000000.log").count == lastStart)
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<lastBase)
            await backend.closeAll()
        }
    }

    @Test("zeros after the last batch of a cleanly closed log: the active segment's are cut, a closed one's skipped")
    func strayZerosInClosedSegment() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let config = TopicLogConfig.test(segmentBytes: 4 << 10)
            let log = try await backend.openTopic(name: Self.topic, config: config)
            try await FileTopicLogTests.fill(log, batches: 40, padding: 100)
            let end = log.endOffset
            await backend.closeAll()
            let paths = try Self.logPaths(dir)
            #expect(paths.count >= 2)
            for path in [paths[0], paths.last!] {
                try writeFile(path, try fileBytes(path) + [UInt8](repeating: 0, count: 5000))
            }
            let logs = CapturedLogs()
            let reopened = try FileLogBackend(directory: dir, logger: logs.logger)
            let again = try await reopened.openTopic(name: Self.topic, config: config)
            #expect(again.endOffset == end)
            #expect(!logs.all.contains { $0.level >= .warning })
            #expect(logs.contains(level: .notice, "closed segment has zeros after its last batch"))
            #expect(logs.contains(level: .info, "cutting preallocated zeros"))
            let active = try Self.batchesEnd(paths.last!)
            #expect(active.size == active.end, "the active segment's zeros are cut")
            FileTopicLogTests.expectRecords(try readAll(again, from: 0), 0..<end, padding: 100)
            await reopened.closeAll()
        }
    }

    @Test("appends fill the zeros already written while the rest of a preallocation is still being written")
    func appendsFollowPreallocationPieces() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            // 512 KiB of zeros in 128 KiB pieces: the first piece is written, the second held.
            io.state.withLock {
                $0.holdZeroWrites = true
                $0.zeroWritesBeforeHold = 1
            }
            let (backend, log, config) = try await Self.open(
                dir, segmentBytes: 4 << 20, io: io, preallocateBytes: 512 << 10
            )
            // The first batch of the segment starts its first preallocation.
            _ = try await log.append(testRecords(0..<1, padding: 100))
            for _ in 0..<500 where io.state.withLock({ $0.zeroWritesHeld }) == 0 {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(io.state.withLock { $0.zeroWritesHeld } == 1)
            // These batches fit in the first piece: they are written and acknowledged while the preallocation waits
            // in its second (before, every one of them waited for the whole preallocation and its fdatasync).
            for start in stride(from: 1, to: 41, by: 4) {
                _ = try await log.append(testRecords(Int64(start)..<Int64(start + 4), padding: 100))
            }
            let path = try Self.logPaths(dir)[0]
            let during = try Self.batchesEnd(path)
            #expect(io.state.withLock { $0.holdZeroWrites && $0.zeroWritesHeld == 1 }, "the second piece is still held")
            #expect(during.end < 128 << 10)
            #expect(during.size < 512 << 10, "the preallocation has not finished: \(during)")
            io.state.withLock { $0.holdZeroWrites = false }
            let ahead = try await Self.awaitPreallocated(path)
            #expect(ahead.size > during.end)
            #expect(try fileBytes(path)[ahead.end...].allSatisfy { $0 == 0 })
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<41, padding: 100)
            await backend.closeAll()
            try await Self.expectReopened(dir, config: config, end: 41, padding: 100)
        }
    }

    @Test("a preallocation under way when an append's fdatasync fails stops: nothing of the failed log is synced again")
    func preallocationStopsWhenLogFails() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            io.state.withLock {
                $0.holdZeroWrites = true
                $0.failLogFdatasync = EIO
            }
            let (backend, log, _) = try await Self.open(dir, segmentBytes: 1 << 20, io: io)
            // The batch is written, its preallocation starts (and waits in its first write of zeros), then the
            // batch's fdatasync fails.
            await #expect(throws: LogStoreError.self) { try await log.append(testRecords(0..<1, padding: 100)) }
            #expect(io.state.withLock { $0.zeroWritesHeld } == 1)
            #expect(io.logFdatasyncs == 1)
            // The disk would sync again; the preallocation goes on, sees the failed log, and stops. Close waits
            // for it.
            io.state.withLock {
                $0.failLogFdatasync = nil
                $0.holdZeroWrites = false
            }
            await backend.closeAll()
            #expect(io.logFdatasyncs == 1, "no fdatasync after the failure, from the writer or the preallocation")
        }
    }

    @Test(
        "a preallocation that cannot write (no space) stops quietly; appends go on and grow the file",
        arguments: ["buffered zeros", "direct zeros"]
    )
    func failedPreallocationStops(_ zeros: String) async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            if zeros == "direct zeros" {
                // The bytes up to the first page boundary are zeroed through the cache; the pages fail.
                io.state.withLock {
                    $0.directIO = true
                    $0.failDirectZeroWrite = ENOSPC
                }
            } else {
                io.state.withLock { $0.failZeroWrite = ENOSPC }
            }
            let logs = CapturedLogs()
            let (backend, log, _) = try await Self.open(dir, segmentBytes: 1 << 20, io: io, logs: logs)
            try await FileTopicLogTests.fill(log, batches: 12, padding: 100)
            for _ in 0..<500 where !logs.contains(level: .notice, "preallocation stopped") {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(logs.contains(level: .notice, "preallocation stopped"))
            try await FileTopicLogTests.fill(log, batches: 12, padding: 100)
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 100)
            let state = try Self.batchesEnd(try Self.logPaths(dir)[0])
            #expect(state.size == state.end)
            if zeros == "direct zeros" {
                #expect(io.state.withLock { ($0.directIOAlignment ?? 0) > 0 }, "the pages were to go direct")
                #expect(!io.state.withLock { $0.logWriteLog }.contains { $0.direct }, "no direct write succeeded")
            }
            let end = log.endOffset
            await backend.closeAll()
            try await Self.expectReopened(dir, config: TopicLogConfig.test(segmentBytes: 1 << 20), end: end, padding: 100)
        }
    }
}
