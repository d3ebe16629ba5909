import Foundation
import Glibc
import Logging
import NIOCore
import Testing

@testable import LogStore

/// `TopicLogConfig.spareSegment`: the next segment's `.log` file zeroed ahead in `next-segment.zeros` and renamed
/// into place at the roll (docs/STORAGE.md, "Preallocation").
@Suite("Spare segment")
struct SpareSegmentTests {
    static let topic = "t"
    static let segmentBytes: Int64 = 256 << 10
    static let chunk = 64 << 10
    static let padding = 300

    static func open(_ dir: String, io: FaultyFileIO, logs: CapturedLogs = CapturedLogs()) async throws
        -> (FileLogBackend, any TopicLog, TopicLogConfig)
    {
        let backend = try FileLogBackend(directory: dir, logger: logs.logger, io: io)
        var config = TopicLogConfig.test(segmentBytes: Self.segmentBytes, fsync: .always, preallocateBytes: Self.chunk)
        config.spareSegment = true
        return (backend, try await backend.openTopic(name: Self.topic, config: config), config)
    }

    static func sparePath(_ dir: String) -> String { dir + "/" + Self.topic + "/" + spareSegmentName }

    /// The file's inode number and size, nil when it does not exist.
    static func inode(_ path: String) -> (inode: UInt, size: Int64)? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return (UInt(info.st_ino), Int64(info.st_size))
    }

    /// Appends one batch of two records at the log's end.
    static func appendOne(_ log: any TopicLog) async throws {
        let start = log.endOffset
        #expect(
            try await log.append(testRecords(start..<start + 2, padding: Self.padding))
                == AppendResult(baseOffset: start, count: 2)
        )
    }

    /// Appends one batch at a time (bounded) until the topic has `segments` `.log` files, waiting before each for a
    /// zeroing of the spare in flight, so that the spare keeps up as it does at the broker's rates. Returns the
    /// spare's inode just before the last roll.
    @discardableResult
    static func fillUntil(segments: Int, _ log: any TopicLog, _ dir: String) async throws -> UInt? {
        var lastSpare: UInt?
        for _ in 0..<5000 {
            if try PreallocationTests.logPaths(dir).count >= segments { return lastSpare }
            // Zeroing is quick here; a short pause lets the preallocator finish the part the last batch asked for.
            try await Task.sleep(for: .milliseconds(1))
            lastSpare = Self.inode(Self.sparePath(dir))?.inode
            try await Self.appendOne(log)
        }
        Issue.record("the log did not reach \(segments) segments")
        return lastSpare
    }

    @Test("the next segment is zeroed ahead in the spare file and renamed into place at the roll, with no zeros of its own")
    func renamedAtRoll() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            io.state.withLock { $0.directIO = true }
            let (backend, log, config) = try await Self.open(dir, io: io)
            try await Self.appendOne(log)
            // A spare follows the active segment's first batch, at most two preallocations ahead of it.
            var spare = Self.inode(Self.sparePath(dir))
            for _ in 0..<500 where spare == nil || spare!.size < Self.chunk {
                try await Task.sleep(for: .milliseconds(10))
                spare = Self.inode(Self.sparePath(dir))
            }
            #expect(spare != nil && spare!.size == Int64(Self.chunk))
            #expect(try fileBytes(Self.sparePath(dir)).allSatisfy { $0 == 0 })
            let sparedInode = try await Self.fillUntil(segments: 2, log, dir)
            let paths = try PreallocationTests.logPaths(dir)
            // The new segment's file is the spare, renamed: the same inode.
            #expect(sparedInode != nil)
            #expect(Self.inode(paths[1])?.inode == sparedInode)
            let closed = try PreallocationTests.batchesEnd(paths[0])
            #expect(closed.size == closed.end, "the closed segment ends at its last batch")
            // Born whole: segmentBytes of zeros after its first batch, and no zeros written to it while it fills.
            let zerosBefore = io.state.withLock { $0.logWriteLog.filter { $0.zeros }.count }
            let born = try PreallocationTests.batchesEnd(paths[1])
            #expect(born.size == Self.segmentBytes)
            #expect(try fileBytes(paths[1])[born.end...].allSatisfy { $0 == 0 })
            for _ in 0..<40 { try await Self.appendOne(log) }
            #expect(try PreallocationTests.logPaths(dir).count == 2, "still filling the second segment")
            #expect(io.state.withLock { $0.logWriteLog.filter { $0.zeros }.count } == zerosBefore)
            // Direct writes of zeros into the spare, direct zeros under the batches: each batch ends on a page.
            #expect(io.state.withLock { $0.spareDirectWrites } > 0)
            #expect(io.state.withLock { $0.logWriteLog.suffix(40).allSatisfy { ($0.offset + Int64($0.count)) % 4096 == 0 } })
            // What a SIGKILL leaves: the born segment's zeros and a spare. Reopen cuts the zeros, removes the
            // spare, and keeps every record.
            let end = log.endOffset
            let copy = dir + "/copy"
            try FileManager.default.createDirectory(atPath: copy, withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: dir + "/" + Self.topic, toPath: copy + "/" + Self.topic)
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<end, padding: Self.padding)
            await backend.closeAll()
            #expect(Self.inode(Self.sparePath(dir)) == nil, "close removes the spare")
            let logs = CapturedLogs()
            try await PreallocationTests.expectReopened(copy, config: config, end: end, padding: Self.padding, logs: logs)
            #expect(logs.contains(level: .info, "cutting preallocated zeros"))
            #expect(!logs.all.contains { $0.level >= .warning }, "zeros are not damage")
            let cut = try PreallocationTests.batchesEnd(try PreallocationTests.logPaths(copy)[1])
            #expect(cut.size == cut.end)
        }
    }

    @Test("a spare left behind is removed at open and never read, whatever it holds")
    func leftOverSpareRemoved() async throws {
        try await withTemporaryDirectory { dir in
            let (backend, log, config) = try await Self.open(dir, io: FaultyFileIO())
            for _ in 0..<10 { try await Self.appendOne(log) }
            let end = log.endOffset
            await backend.closeAll()
            #expect(try !fileNames(dir + "/" + Self.topic).contains(spareSegmentName))
            // A spare with bytes that would parse as a batch if anything read them (a copy of the segment).
            let segment = try PreallocationTests.logPaths(dir)[0]
            try writeFile(Self.sparePath(dir), try fileBytes(segment))
            let logs = CapturedLogs()
            try await PreallocationTests.expectReopened(dir, config: config, end: end, padding: Self.padding, logs: logs)
            #expect(logs.contains(level: .info, "removing spare segment"))
            #expect(Self.inode(Self.sparePath(dir)) == nil)
        }
    }

    @Test("a spare that cannot be written is removed and stops until the next roll; the segments after zero their own space, then a spare again")
    func spareWriteFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            io.state.withLock {
                $0.directIO = true
                $0.failSpareWrite = ENOSPC
            }
            let logs = CapturedLogs()
            let (backend, log, config) = try await Self.open(dir, io: io, logs: logs)
            try await Self.fillUntil(segments: 2, log, dir)
            #expect(logs.contains(level: .notice, "spare segment stopped"))
            // The roll's batch started the next spare, which fails in turn (perhaps not yet): it is removed too.
            for _ in 0..<500 where Self.inode(Self.sparePath(dir)) != nil { try await Task.sleep(for: .milliseconds(10)) }
            #expect(Self.inode(Self.sparePath(dir)) == nil, "a failed spare is removed, its space freed")
            // The second segment was created without zeros (there was no spare) and preallocates for itself.
            try await Self.appendOne(log)
            let second = try await PreallocationTests.awaitPreallocated(try PreallocationTests.logPaths(dir)[1])
            #expect(second.size > second.end && second.size < Self.segmentBytes, "zeros of its own, ahead of its batches")
            // The spare that failed again right after the first roll stays stopped until the second; after that it
            // is zeroed again, and the fourth segment is the spare renamed.
            io.state.withLock { $0.failSpareWrite = nil }
            let spared = try await Self.fillUntil(segments: 4, log, dir)
            #expect(spared != nil)
            #expect(Self.inode(try PreallocationTests.logPaths(dir)[3])?.inode == spared)
            let end = log.endOffset
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<end, padding: Self.padding)
            await backend.closeAll()
            try await PreallocationTests.expectReopened(dir, config: config, end: end, padding: Self.padding)
        }
    }
}
