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
    /// What the appender answered one request: its result and how many fdatasyncs had returned by then.
    struct Answer {
        var result: Result<AppendResult, LogStoreError>
        var syncsDone: Int
    }

    static func record(_ n: Int) -> LogRecord {
        LogRecord(key: nil, headers: [], value: ByteBuffer(string: #"{"event":\#(n)}"#), timestamp: 1_700_000_000_000)
    }

    /// An appender on topic `t` of a fresh log in `dir` (fsync always, the broker's default), and its backend.
    static func appender(dir: String, io: FailingSyncIO) async throws -> (TopicAppender, FileLogBackend) {
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let backend = try FileLogBackend(directory: dir, logger: logger, io: io)
        let log = try await backend.openTopic(name: "t", config: TopicLogConfig())
        let metrics = TopicMetrics(topic: "t", factory: NOOPMetricsHandler.instance)
        return (TopicAppender(log: log, metrics: metrics), backend)
    }

    /// Enqueues `count` requests of one record each while the first batch's write is held, then lets it go; returns
    /// their answers in the order they came.
    static func enqueueBehindHeldWrite(_ appender: TopicAppender, io: FailingSyncIO, count: Int) async -> [Answer] {
        let answers = Locked<[(Int, Answer)]>([])
        io.holdWrites(ofPathsContaining: ".log")
        for n in 0..<count {
            appender.enqueue([Self.record(n)]) { result in
                let syncs = io.syncsReturned(ofPathsContaining: ".log")
                answers.withLock { $0.append((n, Answer(result: result, syncsDone: syncs))) }
            }
            // The first request alone is the first batch: the rest queue behind its (held) write.
            if n == 0 {
                for _ in 0..<5000 where io.writeCalls(ofPathsContaining: ".log") < 1 { usleep(1000) }
            }
        }
        io.holdWrites(ofPathsContaining: nil)
        await appender.flushed()
        let answered = answers.withLock { $0 }
        #expect(answered.map(\.0) == Array(0..<count), "answered in the order queued")
        return answered.map(\.1)
    }

    @Test("requests queued behind a batch go as the next one, each answered in order after the fdatasync covering it")
    func queuedRequestsShareTheNextBatch() async throws {
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FailingSyncIO()
        let (appender, backend) = try await Self.appender(dir: dir, io: io)
        let answers = await Self.enqueueBehindHeldWrite(appender, io: io, count: 3)
        #expect(io.writeCalls(ofPathsContaining: ".log") == 2, "the first request, then the two queued behind it together")
        #expect(answers.map { try? $0.result.get().baseOffset } == [0, 1, 2])
        // The first request after the first fdatasync, the two behind it only after the second.
        #expect(answers.map(\.syncsDone) == [1, 2, 2])
        let read = try appender.log.read(from: 0, maxRecords: 10, maxBytes: 1 << 20)
        #expect(read.map(\.record) == (0..<3).map { Self.record($0) })
        // Each request was encoded as it was queued: a batch of its own, the second write holding two.
        #expect(try Self.batchBases(dir: dir) == [0, 1, 2])
        await backend.closeAll()
    }

    /// The base offsets of the batches in topic `t`'s first segment, parsed from their headers.
    static func batchBases(dir: String) throws -> [Int64] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/t/" + SegmentName.stem(0) + ".log")))
        var bases: [Int64] = []
        var position = 0
        while let header = BatchHeader.peek(ByteBuffer(bytes: bytes[position...])), header.length > 0,
            position + header.totalSize <= bytes.count
        {
            bases.append(header.baseOffset)
            position += header.totalSize
        }
        return bases
    }

    @Test("requests laid out on the log's writer, queued one after another, go as one batch beside encoded ones")
    func deferredRequestsShareABatch() async throws {
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FailingSyncIO()
        let (appender, backend) = try await Self.appender(dir: dir, io: io)
        let answers = Locked<[Int64]>([])
        let built = Locked(0)
        io.holdWrites(ofPathsContaining: ".log")
        // Request 0 alone is the first batch; 1 and 2 (deferred) and 3 (encoded as queued) wait behind its write.
        for n in 0..<4 {
            let completion: TopicAppender.Completion = { result in
                answers.withLock { $0.append((try? result.get().baseOffset) ?? -1) }
            }
            if n == 1 || n == 2 {
                let stored = try BatchCodec.storedRecords([Self.record(n)])
                let deferred = TopicAppender.DeferredRecords(count: 1, storedBytes: stored.bytes.readableBytes) {
                    built.withLock { $0 += 1 }
                    return stored
                }
                appender.enqueue(deferred: deferred, completion: completion)
            } else {
                appender.enqueue([Self.record(n)], completion: completion)
            }
            if n == 0 {
                for _ in 0..<5000 where io.writeCalls(ofPathsContaining: ".log") < 1 { usleep(1000) }
            }
        }
        #expect(built.withLock { $0 } == 0, "deferred records are laid out when their batch is written")
        io.holdWrites(ofPathsContaining: nil)
        await appender.flushed()
        #expect(answers.withLock { $0 } == [0, 1, 2, 3])
        #expect(built.withLock { $0 } == 2)
        #expect(io.writeCalls(ofPathsContaining: ".log") == 2)
        #expect(try Self.batchBases(dir: dir) == [0, 1, 3], "1 and 2 in one batch, 3 in its own")
        let read = try appender.log.read(from: 0, maxRecords: 10, maxBytes: 1 << 20)
        #expect(read.map(\.record) == (0..<4).map { Self.record($0) })
        await backend.closeAll()
    }

    @Test("a batch refused for want of space answers its requests with storageFull; the ones queued behind it are still written")
    func refusedBatchDoesNotStallTheQueue() async throws {
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let io = FailingSyncIO()
        io.failWrites(ofPathsContaining: ".log", errno: ENOSPC, count: 1)
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
