@testable import BrokerServer
import Foundation
import Locking
import Logging
import LogStore
import Metrics
import NIOCore
import Testing

/// A topic's appender over a real file log: requests queued while a batch is with the log go together as the next
/// batch, each is answered in order only after the fdatasync that covers its records, and a batch refused for want
/// of space does not hold up the ones behind it.
@Suite("Topic appender")
struct TopicAppenderTests {
    /// Real POSIX I/O that can hold a topic's first batch write until the test lets it go (at most 5 s), and fail it.
    final class GatedLogIO: FileIO {
        struct State {
            /// The first batch write waits while this is set.
            var holdFirstWrite = false
            /// The first batch write fails with this errno (after any hold).
            var failFirstWriteWith: Int32?
            /// Batch writes (non-zero writes to segment `.log` files) started.
            var batchWrites = 0
            /// Segment fdatasyncs returned.
            var syncsDone = 0
        }
        let state = Locked(State())
        private let posix = PosixFileIO()

        static func isSegmentLog(_ path: String) -> Bool {
            path.hasSuffix(".log") && path.split(separator: "/").last.map { $0.count == 24 } == true
        }

        /// Waits (at most 5 s) until `condition` holds; returns whether it did.
        @discardableResult
        func wait(until condition: (State) -> Bool) -> Bool {
            for _ in 0..<5000 {
                if self.state.withLock({ condition($0) }) { return true }
                usleep(1000)
            }
            return self.state.withLock { condition($0) }
        }

        func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(FileIOError)
            -> Int
        {
            guard Self.isSegmentLog(path), !bytes.allSatisfy({ $0 == 0 }) else {
                return try self.posix.pwrite(fd, bytes, at: offset, path: path)
            }
            let first = self.state.withLock { state in
                state.batchWrites += 1
                return state.batchWrites == 1
            }
            if first {
                self.wait { !$0.holdFirstWrite }
                if let errno = self.state.withLock({ $0.failFirstWriteWith }) {
                    throw FileIOError(operation: "pwrite", path: path, errno: errno)
                }
            }
            return try self.posix.pwrite(fd, bytes, at: offset, path: path)
        }

        func fdatasync(_ fd: Int32, path: String) throws(FileIOError) {
            guard Self.isSegmentLog(path) else { return try self.posix.fdatasync(fd, path: path) }
            try self.posix.fdatasync(fd, path: path)
            self.state.withLock { $0.syncsDone += 1 }
        }

        func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
            try self.posix.open(path, flags: flags, mode: mode)
        }
        func close(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.close(fd, path: path) }
        func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
            throws(FileIOError) -> Int
        {
            try self.posix.pread(fd, into: buffer, at: offset, path: path)
        }
        func fsync(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.fsync(fd, path: path) }
        func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError) {
            try self.posix.ftruncate(fd, to: size, path: path)
        }
        func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64 {
            try self.posix.fileSize(fd, path: path)
        }
        func rename(_ from: String, to: String) throws(FileIOError) { try self.posix.rename(from, to: to) }
        func unlink(_ path: String) throws(FileIOError) { try self.posix.unlink(path) }
        func mkdir(_ path: String) throws(FileIOError) { try self.posix.mkdir(path) }
        func listDirectory(_ path: String) throws(FileIOError) -> [String] { try self.posix.listDirectory(path) }
    }

    /// What the appender answered one request: its result and how many fdatasyncs had returned by then.
    struct Answer {
        var result: Result<AppendResult, LogStoreError>
        var syncsDone: Int
    }

    static func record(_ n: Int) -> LogRecord {
        LogRecord(key: nil, headers: [], value: ByteBuffer(string: #"{"event":\#(n)}"#), timestamp: 1_700_000_000_000)
    }

    /// An appender on topic `t` of a fresh log in `dir` (fsync always, the broker's default), and its backend.
    static func appender(dir: String, io: GatedLogIO) async throws -> (TopicAppender, FileLogBackend) {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let backend = try FileLogBackend(directory: dir, logger: logger, io: io)
        let log = try await backend.openTopic(name: "t", config: TopicLogConfig())
        let metrics = TopicMetrics(topic: "t", factory: NOOPMetricsHandler.instance)
        return (TopicAppender(log: log, metrics: metrics), backend)
    }

    /// Enqueues `count` requests of one record each while the first batch's write is held, then lets it go; returns
    /// their answers in the order they came.
    static func enqueueBehindHeldWrite(_ appender: TopicAppender, io: GatedLogIO, count: Int) async -> [Answer] {
        let answers = Locked<[(Int, Answer)]>([])
        io.state.withLock { $0.holdFirstWrite = true }
        for n in 0..<count {
            appender.enqueue([Self.record(n)]) { result in
                let syncs = io.state.withLock { $0.syncsDone }
                answers.withLock { $0.append((n, Answer(result: result, syncsDone: syncs))) }
            }
            // The first request alone is the first batch: the rest queue behind its (held) write.
            if n == 0 { io.wait { $0.batchWrites == 1 } }
        }
        io.state.withLock { $0.holdFirstWrite = false }
        await appender.flushed()
        let answered = answers.withLock { $0 }
        #expect(answered.map(\.0) == Array(0..<count), "answered in the order queued")
        return answered.map(\.1)
    }

    @Test("requests queued behind a batch go as the next one, each answered in order after the fdatasync covering it")
    func queuedRequestsShareTheNextBatch() async throws {
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = GatedLogIO()
        let (appender, backend) = try await Self.appender(dir: dir, io: io)
        let answers = await Self.enqueueBehindHeldWrite(appender, io: io, count: 3)
        #expect(io.state.withLock { $0.batchWrites } == 2, "the first request, then the two queued behind it together")
        #expect(answers.map { try? $0.result.get().baseOffset } == [0, 1, 2])
        // The first request after the first fdatasync, the two behind it only after the second.
        #expect(answers.map(\.syncsDone) == [1, 2, 2])
        let read = try appender.log.read(from: 0, maxRecords: 10, maxBytes: 1 << 20)
        #expect(read.map(\.record) == (0..<3).map { Self.record($0) })
        await backend.closeAll()
    }

    @Test("a batch refused for want of space answers its requests with storageFull; the ones queued behind it are still written")
    func refusedBatchDoesNotStallTheQueue() async throws {
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = GatedLogIO()
        io.state.withLock { $0.failFirstWriteWith = ENOSPC }
        let (appender, backend) = try await Self.appender(dir: dir, io: io)
        let answers = await Self.enqueueBehindHeldWrite(appender, io: io, count: 3)
        guard case .failure(let error) = answers[0].result else {
            Issue.record("the first request was stored: \(answers[0].result)")
            return
        }
        #expect(error.kind == .storageFull)
        #expect(answers.dropFirst().map { try? $0.result.get().baseOffset } == [0, 1])
        let read = try appender.log.read(from: 0, maxRecords: 10, maxBytes: 1 << 20)
        #expect(read.map(\.record) == [Self.record(1), Self.record(2)])
        await backend.closeAll()
    }
}
