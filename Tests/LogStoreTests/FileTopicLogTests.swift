import Foundation
import Glibc
import Logging
import NIOCore
import Testing

@testable import LogStore

@Suite("FileTopicLog")
struct FileTopicLogTests {
    /// Appends `batches` batches of 1...4 records (sizes cycle) and returns the base offset of each batch.
    @discardableResult
    static func fill(_ log: any TopicLog, batches: Int, padding: Int = 0, timestamp: Int64 = 1_700_000_000_000)
        async throws -> [Int64]
    {
        var bases: [Int64] = []
        for i in 0..<batches {
            let start = log.endOffset
            let count = Int64(i % 4 + 1)
            let result = try await log.append(
                testRecords(start..<start + count, timestamp: timestamp, padding: padding)
            )
            #expect(result == AppendResult(baseOffset: start, count: Int(count)))
            bases.append(start)
        }
        return bases
    }

    static func expectRecords(_ records: [StoredRecord], _ range: Range<Int64>, padding: Int = 0) {
        #expect(records.map(\.offset) == Array(range))
        for stored in records {
            #expect(stored.record == testRecord(stored.offset, padding: padding), "offset \(stored.offset)")
        }
    }

    @Test("reads from every offset across many segments return exactly the right records")
    func indexLookupAcrossSegments() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(
                name: "t",
                config: .test(segmentBytes: 1500, indexIntervalBytes: 200)
            )
            try await Self.fill(log, batches: 120, padding: 20)
            let end = log.endOffset
            #expect(end == 300)
            let logFiles = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
            #expect(logFiles.count > 5)
            for offset in 0...end {
                let records = try log.read(from: offset, maxRecords: 7, maxBytes: 1 << 20)
                Self.expectRecords(records, offset..<min(offset + 7, end), padding: 20)
            }
            // One record at least, even when the first batch alone exceeds maxBytes.
            let tiny = try log.read(from: 5, maxRecords: 100, maxBytes: 1)
            #expect(tiny.first?.offset == 5 && !tiny.isEmpty)
            #expect(tiny.last!.offset < 12)
            #expect(throws: LogStoreError(.offsetOutOfRange, "offset 301 is outside 0...300 of topic 't'")) {
                try log.read(from: end + 1, maxRecords: 1, maxBytes: 100)
            }
            await backend.closeAll()
        }
    }

    @Test("a size roll creates segments named by their 20-digit base offset")
    func rollBySize() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "orders.v1", config: .test(segmentBytes: 400))
            let bases = try await Self.fill(log, batches: 30)
            let names = try fileNames(dir + "/orders.v1")
            let logBases = names.compactMap { SegmentName.baseOffset(of: $0, suffix: "log") }
            #expect(names.contains("00000000000000000000.log"))
            #expect(names.contains("00000000000000000000.index"))
            #expect(logBases.count > 3)
            for base in logBases {
                #expect(names.contains(SegmentName.stem(base) + ".index"))
                #expect(bases.contains(base), "segment \(base) starts at a batch boundary")
                let bytes = try fileBytes(dir + "/orders.v1/" + SegmentName.stem(base) + ".log")
                #expect(BatchHeader.peek(ByteBuffer(bytes: bytes))?.baseOffset == base)
            }
            // Every closed segment reached the size limit before rolling.
            for base in logBases.sorted().dropLast() {
                let size = try fileBytes(dir + "/orders.v1/" + SegmentName.stem(base) + ".log").count
                #expect(size >= 400)
            }
            // `storage` reports exactly the segment files on disk: their count and their bytes.
            let onDisk = try logBases.reduce(0) { $0 + (try fileBytes(dir + "/orders.v1/" + SegmentName.stem($1) + ".log").count) }
            #expect(log.storage == LogStorage(bytes: Int64(onDisk), segments: logBases.count))
            await backend.closeAll()
            #expect(log.storage == LogStorage(bytes: 0, segments: 0))
        }
    }

    @Test("a segment rolls once its first batch is older than segmentMaxAgeMillis")
    func rollByAge() async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualClock(1_000_000)
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, nowMillis: clock.function)
            var config = TopicLogConfig.test()
            config.segmentMaxAgeMillis = 1000
            let log = try await backend.openTopic(name: "t", config: config)
            _ = try await log.append(testRecords(0..<2, timestamp: clock.millis))
            clock.advance(by: 999)
            _ = try await log.append(testRecords(2..<3, timestamp: clock.millis))
            #expect(try fileNames(dir + "/t").filter { $0.hasSuffix(".log") } == ["00000000000000000000.log"])
            clock.advance(by: 1)
            _ = try await log.append(testRecords(3..<4, timestamp: clock.millis))
            #expect(
                try fileNames(dir + "/t").filter { $0.hasSuffix(".log") } == [
                    "00000000000000000000.log", "00000000000000000003.log",
                ]
            )
            await backend.closeAll()
        }
    }

    @Test(
        "reopen after a clean close returns everything and appends continue",
        arguments: [CompressionCodec.none, .lz4]
    )
    func reopenAfterCleanClose(codec: CompressionCodec) async throws {
        try await withTemporaryDirectory { dir in
            let logs = CapturedLogs()
            do {
                let backend = try FileLogBackend(directory: dir, logger: logs.logger)
                let log = try await backend.openTopic(name: "t", config: .test(segmentBytes: 2000, compression: codec))
                try await Self.fill(log, batches: 40)
                try await log.close()
                await #expect(throws: LogStoreError.self) { try await log.append(testRecords(0..<1)) }
                #expect(try fileNames(dir + "/t").contains(cleanShutdownMarkerName))
            }
            let reopenLogs = CapturedLogs()
            let backend = try FileLogBackend(directory: dir, logger: reopenLogs.logger)
            let log = try await backend.openTopic(name: "t", config: .test(segmentBytes: 2000, compression: codec))
            #expect(!(try fileNames(dir + "/t").contains(cleanShutdownMarkerName)))
            #expect(!reopenLogs.all.contains { $0.message.contains("no clean-shutdown marker") })
            #expect(log.startOffset == 0)
            #expect(log.endOffset == 100)
            Self.expectRecords(try readAll(log, from: 0), 0..<100)
            #expect(try await log.append(testRecords(100..<103)) == AppendResult(baseOffset: 100, count: 3))
            Self.expectRecords(try readAll(log, from: 95), 95..<103)
            await backend.closeAll()
        }
    }

    @Test("opening an open topic returns the same log; another config is refused")
    func openTwice() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let first = try await backend.openTopic(name: "t", config: .test())
            let second = try await backend.openTopic(name: "t", config: .test())
            #expect(first === second)
            await #expect(throws: LogStoreError.self) {
                try await backend.openTopic(name: "t", config: .test(segmentBytes: 99))
            }
            await backend.closeAll()
        }
    }

    /// Builds a topic with `batches` batches in one segment, closes it, and returns the log file bytes and the
    /// position where the last batch starts.
    static func pristineSegment(dir: String, batches: Int, codec: CompressionCodec = .none) async throws
        -> (bytes: [UInt8], lastBatchStart: Int, offsetsBeforeLast: Int64)
    {
        let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
        let log = try await backend.openTopic(name: "t", config: .test(compression: codec))
        let bases = try await Self.fill(log, batches: batches)
        await backend.closeAll()
        let bytes = try fileBytes(dir + "/t/00000000000000000000.log")
        var position = 0
        for _ in 0..<(batches - 1) {
            position += BatchHeader.peek(ByteBuffer(bytes: bytes[position...]))!.totalSize
        }
        return (bytes, position, bases.last!)
    }

    @Test("a tail torn at every byte of the last batch is cut on reopen and appends continue")
    func tornTailEveryByte() async throws {
        try await withTemporaryDirectory { dir in
            let (bytes, lastStart, lastBase) = try await Self.pristineSegment(dir: dir, batches: 4)
            let logPath = dir + "/t/00000000000000000000.log"
            for cut in lastStart..<bytes.count {
                try writeFile(logPath, Array(bytes[..<cut]))
                try? FileManager.default.removeItem(atPath: dir + "/t/" + cleanShutdownMarkerName)
                let logs = CapturedLogs()
                let backend = try FileLogBackend(directory: dir, logger: logs.logger)
                let log = try await backend.openTopic(name: "t", config: .test())
                #expect(log.endOffset == lastBase, "cut at \(cut)")
                Self.expectRecords(try readAll(log, from: 0), 0..<lastBase)
                if bytes[lastStart..<cut].allSatisfy({ $0 == 0 }) {
                    // Only the zero high bytes of the length arrived: the same as preallocated zeros, cut quietly.
                    let quiet = cut == lastStart || logs.contains(level: .info, "cutting preallocated zeros")
                    #expect(quiet, "cut at \(cut)")
                } else {
                    #expect(logs.contains(level: .warning, "truncating torn or corrupt tail"), "cut at \(cut)")
                    #expect(logs.all.contains { $0.metadata["brokerd.bytes_cut"] == "\(cut - lastStart)" })
                }
                #expect(
                    try await log.append(testRecords(lastBase..<lastBase + 2))
                        == AppendResult(baseOffset: lastBase, count: 2)
                )
                Self.expectRecords(try readAll(log, from: 0), 0..<lastBase + 2)
                await backend.closeAll()
            }
        }
    }

    @Test(
        "a flipped byte in the last batch of an uncleanly closed log is cut",
        arguments: [0, 4, 5, 9, 12, 25, 41, 42, -1]
    )
    func flippedByteInLastBatch(relative: Int) async throws {
        try await withTemporaryDirectory { dir in
            var (bytes, lastStart, lastBase) = try await Self.pristineSegment(dir: dir, batches: 5, codec: .lz4)
            let position = relative >= 0 ? lastStart + relative : bytes.count - 1
            bytes[position] ^= 0x40
            try writeFile(dir + "/t/00000000000000000000.log", bytes)
            try FileManager.default.removeItem(atPath: dir + "/t/" + cleanShutdownMarkerName)
            let logs = CapturedLogs()
            let backend = try FileLogBackend(directory: dir, logger: logs.logger)
            let log = try await backend.openTopic(name: "t", config: .test(compression: .lz4))
            #expect(log.endOffset == lastBase)
            #expect(logs.contains(level: .warning, "truncating torn or corrupt tail"))
            #expect(try fileBytes(dir + "/t/00000000000000000000.log").count == lastStart)
            Self.expectRecords(try readAll(log, from: 0), 0..<lastBase)
            await backend.closeAll()
        }
    }

    @Test("a flipped byte in a closed segment: read throws corruptBatch there, earlier records still readable")
    func corruptClosedSegment() async throws {
        try await withTemporaryDirectory { dir in
            let config = TopicLogConfig.test(segmentBytes: 600, indexIntervalBytes: 100)
            let bases: [Int64]
            do {
                let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
                let log = try await backend.openTopic(name: "t", config: config)
                bases = try await Self.fill(log, batches: 30)
                await backend.closeAll()
            }
            let names = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
            #expect(names.count >= 3)
            // Damage the third batch of the first (closed) segment.
            let path = dir + "/t/" + names[0]
            var bytes = try fileBytes(path)
            var position = 0
            for _ in 0..<2 { position += BatchHeader.peek(ByteBuffer(bytes: bytes[position...]))!.totalSize }
            let damagedBase = bases[2]
            bytes[position + BatchFormat.headerSize + 3] ^= 0x01
            try writeFile(path, bytes)

            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            let before = try log.read(from: 0, maxRecords: 1000, maxBytes: 1 << 20)
            Self.expectRecords(before, 0..<damagedBase)
            for from in damagedBase..<bases[3] {
                do {
                    _ = try log.read(from: from, maxRecords: 10, maxBytes: 1 << 20)
                    Issue.record("read from \(from) served a corrupt batch")
                } catch let error as LogStoreError {
                    #expect(error.kind == .corruptBatch)
                    #expect(error.message.contains(path))
                    #expect(error.message.contains("position \(position)"))
                }
            }
            let secondSegmentBase = SegmentName.baseOffset(of: names[1], suffix: "log")!
            Self.expectRecords(try readAll(log, from: secondSegmentBase), secondSegmentBase..<log.endOffset)
            await backend.closeAll()
        }
    }

    @Test(
        "a damaged header field in a closed segment never serves wrong or skipped records",
        arguments: [0, 3, 4, 13, 17, 20, 21, 29, 41]
    )
    func damagedHeaderNeverServesWrongRecords(field: Int) async throws {
        try await withTemporaryDirectory { dir in
            let config = TopicLogConfig.test(segmentBytes: 800, indexIntervalBytes: 100)
            do {
                let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 30)
                await backend.closeAll()
            }
            let names = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
            let path = dir + "/t/" + names[0]
            var bytes = try fileBytes(path)
            var position = 0
            for _ in 0..<3 { position += BatchHeader.peek(ByteBuffer(bytes: bytes[position...]))!.totalSize }
            bytes[position + field] ^= 0x02
            try writeFile(path, bytes)
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            let secondBase = SegmentName.baseOffset(of: names[1], suffix: "log")!
            var corruptSeen = false
            for from in 0..<secondBase {
                do {
                    let records = try log.read(from: from, maxRecords: 50, maxBytes: 1 << 20)
                    #expect(records.first?.offset == from, "read from \(from)")
                    Self.expectRecords(records, from..<from + Int64(records.count))
                } catch let error as LogStoreError {
                    #expect(error.kind == .corruptBatch)
                    corruptSeen = true
                }
            }
            #expect(corruptSeen)
            await backend.closeAll()
        }
    }

    enum IndexDamage: String, CaseIterable, Sendable {
        case deleted, oddSize, notMonotonic, pointsPastEnd, wrongPositions
    }

    @Test("a missing or damaged index is rebuilt identically", arguments: IndexDamage.allCases)
    func indexRebuilt(damage: IndexDamage) async throws {
        try await withTemporaryDirectory { dir in
            let config = TopicLogConfig.test(segmentBytes: 3000, indexIntervalBytes: 150)
            do {
                let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 60)
                await backend.closeAll()
            }
            let indexes = try fileNames(dir + "/t").filter { $0.hasSuffix(".index") }
            #expect(indexes.count >= 2)
            var originals: [String: [UInt8]] = [:]
            for name in indexes {
                let path = dir + "/t/" + name
                let original = try fileBytes(path)
                #expect(original.count >= 16, "\(name) has entries")
                originals[name] = original
                var damaged = original
                switch damage {
                case .deleted: try FileManager.default.removeItem(atPath: path)
                case .oddSize: try writeFile(path, original + [0x01, 0x02, 0x03])
                case .notMonotonic:
                    damaged.replaceSubrange(0..<8, with: damaged[8..<16])
                    try writeFile(path, damaged)
                case .pointsPastEnd:
                    damaged.replaceSubrange((damaged.count - 4)..<damaged.count, with: [0x7F, 0xFF, 0xFF, 0xFF])
                    try writeFile(path, damaged)
                case .wrongPositions:
                    // Well-formed and monotonic, but every position is off by one byte.
                    for entry in 0..<(damaged.count / 8) { damaged[entry * 8 + 7] &+= 1 }
                    try writeFile(path, damaged)
                }
            }
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            for name in indexes {
                #expect(try fileBytes(dir + "/t/" + name) == originals[name], "\(name) after \(damage)")
            }
            for offset in stride(from: Int64(0), to: log.endOffset, by: 3) {
                Self.expectRecords(
                    try log.read(from: offset, maxRecords: 2, maxBytes: 1 << 20),
                    offset..<min(offset + 2, log.endOffset)
                )
            }
            await backend.closeAll()
        }
    }

    @Test("retention by bytes deletes the oldest closed segments and moves startOffset")
    func retentionByBytes() async throws {
        try await withTemporaryDirectory { dir in
            var config = TopicLogConfig.test(segmentBytes: 500)
            config.retentionBytes = 1500
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            try await Self.fill(log, batches: 60)
            let names = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
            let sizes = try names.map { try fileBytes(dir + "/t/" + $0).count }
            #expect(sizes.reduce(0, +) <= 1500)
            #expect(names.first == SegmentName.stem(log.startOffset) + ".log")
            #expect(log.startOffset > 0)
            #expect(!(try fileNames(dir + "/t").contains("00000000000000000000.index")))
            #expect(throws: LogStoreError.self) { try log.read(from: 0, maxRecords: 1, maxBytes: 100) }
            Self.expectRecords(try readAll(log, from: log.startOffset), log.startOffset..<log.endOffset)
            await backend.closeAll()
        }
    }

    @Test("retention by age uses the newest record of a segment and the injected clock, on append and on open")
    func retentionByAge() async throws {
        try await withTemporaryDirectory { dir in
            let clock = ManualClock(10_000)
            var config = TopicLogConfig.test(segmentBytes: 300)
            config.retentionMillis = 5_000
            let oldEnd: Int64
            do {
                let backend = try FileLogBackend(
                    directory: dir,
                    logger: CapturedLogs().logger,
                    nowMillis: clock.function
                )
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 12, timestamp: 10_000)
                oldEnd = log.endOffset
                clock.millis = 15_000
                _ = try await log.append(testRecords(oldEnd..<oldEnd + 1, timestamp: 15_000))
                #expect(log.startOffset == 0, "exactly at the limit nothing is deleted")
                clock.millis = 15_001
                try await Self.fill(log, batches: 12, timestamp: 15_001)
                // Every segment holding only 10 000 records is gone; the one with the 15 000 record stays.
                #expect(log.startOffset > 0)
                #expect(log.startOffset <= oldEnd)
                let first = try log.read(from: log.startOffset, maxRecords: 1000, maxBytes: 1 << 20)
                #expect(first.contains { $0.record.timestamp == 15_000 })
                await backend.closeAll()
            }
            clock.millis = 100_000
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, nowMillis: clock.function)
            let log = try await backend.openTopic(name: "t", config: config)
            // On open everything but the active segment is past retention.
            let logFiles = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
            #expect(logFiles.count == 1)
            #expect(log.startOffset == SegmentName.baseOffset(of: logFiles[0], suffix: "log"))
            await backend.closeAll()
        }
    }

    @Test("fdatasync EIO fails that append and every later one, is logged, not retried; reads keep working")
    func fsyncFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let logs = CapturedLogs()
            let backend = try FileLogBackend(directory: dir, logger: logs.logger, io: io)
            let log = try await backend.openTopic(name: "t", config: .test(fsync: .always))
            try await Self.fill(log, batches: 5)
            let end = log.endOffset
            io.state.withLock { $0.failLogFdatasync = EIO }
            do {
                _ = try await log.append(testRecords(end..<end + 1))
                Issue.record("append succeeded despite fdatasync EIO")
            } catch let error as LogStoreError {
                #expect(error.kind == .storageFailure)
                #expect(error.message.contains("fdatasync"))
                #expect(error.message.contains("00000000000000000000.log"))
                #expect(error.message.contains(String(cString: strerror(EIO))))
            }
            let syncsAfterFailure = io.logFdatasyncs
            io.state.withLock { $0.failLogFdatasync = nil }
            for _ in 0..<3 {
                await #expect(throws: LogStoreError.self) { try await log.append(testRecords(end..<end + 1)) }
            }
            #expect(io.logFdatasyncs == syncsAfterFailure, "no fdatasync retried after the failure")
            #expect(log.endOffset == end)
            Self.expectRecords(try readAll(log, from: 0), 0..<end)
            #expect(
                logs.all.contains {
                    $0.level == .error && $0.metadata["brokerd.topic"] == "t"
                        && ($0.metadata["brokerd.error"] ?? "").contains("errno 5")
                }
            )
            await #expect(throws: LogStoreError.self) { try await log.close() }
            await backend.closeAll()
            // A reopen recovers; the record whose append failed may or may not have survived in the page cache.
            let reopened = try FileLogBackend(directory: dir, logger: logs.logger)
            let log2 = try await reopened.openTopic(name: "t", config: .test(fsync: .always))
            #expect(log2.endOffset >= end)
            await reopened.closeAll()
        }
    }

    @Test("no space (ENOSPC, EDQUOT, a short write) refuses that append only; appends resume once space is back")
    func writeOutOfSpace() async throws {
        for errno in [ENOSPC, EDQUOT, Int32(0)] {
            try await withTemporaryDirectory { dir in
                let io = FaultyFileIO()
                let logs = CapturedLogs()
                let backend = try FileLogBackend(directory: dir, logger: logs.logger, io: io)
                // A small index interval, so that the failed batch would also have written an index entry.
                let config = TopicLogConfig.test(fsync: .always, indexIntervalBytes: 1)
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 3)
                let end = log.endOffset
                io.state.withLock { $0.failLogWrite = errno }
                for _ in 0..<2 {
                    do {
                        _ = try await log.append(testRecords(end..<end + 5))
                        Issue.record("append succeeded without space")
                    } catch let error as LogStoreError {
                        #expect(error.kind == .storageFull)
                        #expect(error.message.contains("nothing stored"))
                    }
                }
                #expect(log.endOffset == end)
                Self.expectRecords(try readAll(log, from: 0), 0..<end)
                #expect(logs.contains(level: .warning, "no space"))
                io.state.withLock { $0.failLogWrite = nil }
                let resumed = try await log.append(testRecords(end..<end + 5))
                #expect(resumed.baseOffset == end)
                Self.expectRecords(try readAll(log, from: 0), 0..<end + 5)
                try await log.close()
                await backend.closeAll()
                // Nothing of the refused batches is on disk: a clean reopen serves exactly the acknowledged records.
                let reopened = try FileLogBackend(directory: dir, logger: logs.logger)
                let again = try await reopened.openTopic(name: "t", config: config)
                #expect(again.endOffset == end + 5)
                Self.expectRecords(try readAll(again, from: 0), 0..<end + 5)
                await reopened.closeAll()
            }
        }
    }

    @Test("a write failing with EIO fails the append and every later one")
    func writeFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, io: io)
            let log = try await backend.openTopic(name: "t", config: .test(fsync: .never))
            try await Self.fill(log, batches: 3)
            let end = log.endOffset
            io.state.withLock { $0.failLogWrite = EIO }
            await #expect(throws: LogStoreError.self) { try await log.append(testRecords(end..<end + 1)) }
            io.state.withLock { $0.failLogWrite = nil }
            do {
                _ = try await log.append(testRecords(end..<end + 1))
                Issue.record("append after a failed write succeeded")
            } catch let error as LogStoreError {
                #expect(error.kind == .storageFailure)
                #expect(error.message.contains(String(cString: strerror(EIO))))
            }
            Self.expectRecords(try readAll(log, from: 0), 0..<end)
            await backend.closeAll()
        }
    }

    @Test("concurrent appends under .always get contiguous offsets and share fdatasyncs")
    func groupCommit() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let appends = 64
            // The first fdatasync waits until every append has started, so the rest share the next ones. (That
            // first sync may run on the writer itself, when no other append had reached the writer yet.)
            io.state.withLock { $0.holdFirstSyncUntilAppends = appends }
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, io: io)
            let log = try await backend.openTopic(name: "t", config: .test(fsync: .always))
            let results = try await withThrowingTaskGroup(of: (Int, AppendResult).self) { group in
                for task in 0..<appends {
                    group.addTask {
                        let record = LogRecord(key: nil, headers: [], value: buffer("task-\(task)"), timestamp: 1)
                        io.state.withLock { $0.appendsStarted += 1 }
                        return (task, try await log.append([record]))
                    }
                }
                return try await group.reduce(into: [(Int, AppendResult)]()) { $0.append($1) }
            }
            #expect(results.map(\.1.baseOffset).sorted() == (0..<Int64(appends)).map { $0 })
            #expect(log.endOffset == Int64(appends))
            #expect(io.logFdatasyncs < appends)
            #expect(io.logFdatasyncs >= 1)
            let stored = try readAll(log, from: 0)
            for (task, result) in results {
                #expect(stored[Int(result.baseOffset)].record.value == buffer("task-\(task)"))
            }
            await backend.closeAll()
        }
    }

    @Test(
        ".interval and .never appends are readable at once and durable after close",
        arguments: [
            FsyncPolicy.interval(milliseconds: 5), .never,
        ]
    )
    func relaxedPolicies(policy: FsyncPolicy) async throws {
        try await withTemporaryDirectory { dir in
            let config = TopicLogConfig.test(segmentBytes: 1000, fsync: policy)
            do {
                let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 20)
                Self.expectRecords(try readAll(log, from: 0), 0..<50)
                await backend.closeAll()
            }
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            Self.expectRecords(try readAll(log, from: 0), 0..<50)
            await backend.closeAll()
        }
    }

    @Test("reads run safely while appends roll segments and retention deletes them")
    func readsDuringAppendsAndRetention() async throws {
        try await withTemporaryDirectory { dir in
            var config = TopicLogConfig.test(segmentBytes: 400, fsync: .never, indexIntervalBytes: 64)
            config.retentionBytes = 1200
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            let reader = Task.detached { () -> (reads: Int, skips: Int, mismatches: Int) in
                var next: Int64 = 0
                var reads = 0
                var skips = 0
                var mismatches = 0
                // Bounded: stops when the writer is done and everything up to its end was read.
                while reads < 100_000 {
                    do {
                        let page = try log.read(from: next, maxRecords: 5, maxBytes: 300)
                        reads += 1
                        for stored in page where stored.record != testRecord(stored.offset) { mismatches += 1 }
                        if let last = page.last {
                            #expect(page.map(\.offset) == Array(next...last.offset))
                            next = last.offset + 1
                        } else if next >= 400 {
                            break
                        } else {
                            await Task.yield()
                        }
                    } catch let error as LogStoreError where error.kind == .offsetOutOfRange && next < log.startOffset {
                        skips += 1
                        next = log.startOffset
                    }
                }
                return (reads, skips, mismatches)
            }
            for start in stride(from: Int64(0), to: 400, by: 4) {
                _ = try await log.append(testRecords(start..<start + 4))
            }
            let (reads, _, mismatches) = try await reader.value
            #expect(reads > 0)
            #expect(mismatches == 0)
            #expect(log.startOffset > 0)
            #expect(log.endOffset == 400)
            await backend.closeAll()
        }
    }

    @Test("an empty trailing segment and an orphan index are handled on an unclean open")
    func emptyTrailingSegment() async throws {
        try await withTemporaryDirectory { dir in
            let config = TopicLogConfig.test(segmentBytes: 500)
            let end: Int64
            do {
                let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
                let log = try await backend.openTopic(name: "t", config: config)
                try await Self.fill(log, batches: 20)
                end = log.endOffset
                await backend.closeAll()
            }
            try FileManager.default.removeItem(atPath: dir + "/t/" + cleanShutdownMarkerName)
            try writeFile(dir + "/t/" + SegmentName.stem(end) + ".log", [])
            try writeFile(dir + "/t/" + SegmentName.stem(end + 1000) + ".index", [0, 0, 0, 1, 0, 0, 0, 2])
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            #expect(log.endOffset == end)
            #expect(!(try fileNames(dir + "/t").contains(SegmentName.stem(end + 1000) + ".index")))
            #expect(try await log.append(testRecords(end..<end + 2)) == AppendResult(baseOffset: end, count: 2))
            let bytes = try fileBytes(dir + "/t/" + SegmentName.stem(end) + ".log")
            #expect(BatchHeader.peek(ByteBuffer(bytes: bytes))?.baseOffset == end)
            Self.expectRecords(try readAll(log, from: 0), 0..<end + 2)
            await backend.closeAll()
        }
    }

    @Test(".interval syncs in the background without a close, and a failed background sync fails later appends")
    func intervalBackgroundSync() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let logs = CapturedLogs()
            let backend = try FileLogBackend(directory: dir, logger: logs.logger, io: io)
            let log = try await backend.openTopic(name: "t", config: .test(fsync: .interval(milliseconds: 1)))
            _ = try await log.append(testRecords(0..<1))
            // Bounded wait for the scheduled sync (not a timing assertion: it only has to happen at all).
            for _ in 0..<5000 where io.logFdatasyncs == 0 { try await Task.sleep(for: .milliseconds(2)) }
            #expect(io.logFdatasyncs >= 1)
            io.state.withLock { $0.failLogFdatasync = EIO }
            _ = try await log.append(testRecords(1..<2))
            for _ in 0..<5000 where !logs.contains(level: .error, "topic log failed") {
                try await Task.sleep(for: .milliseconds(2))
            }
            #expect(logs.contains(level: .error, "topic log failed"))
            do {
                _ = try await log.append(testRecords(2..<3))
                Issue.record("append after a failed background sync succeeded")
            } catch let error as LogStoreError {
                #expect(error.kind == .storageFailure)
            }
            Self.expectRecords(try readAll(log, from: 0), 0..<2)
            await backend.closeAll()
        }
    }

    @Test(
        "bad topic names are refused",
        arguments: ["", ".", "..", "a/b", "a b", "ü", String(repeating: "x", count: 201)]
    )
    func badNames(name: String) async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            do {
                _ = try await backend.openTopic(name: name, config: .test())
                Issue.record("opened '\(name)'")
            } catch let error as LogStoreError {
                #expect(error.kind == .invalidArgument)
            }
        }
    }

    @Test("empty and oversized batches are refused; a closed log refuses appends and reads")
    func refusals() async throws {
        try await withTemporaryDirectory { dir in
            var config = TopicLogConfig.test()
            config.maxBatchBodyBytes = 1000
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: config)
            #expect(try log.read(from: 0, maxRecords: 10, maxBytes: 100) == [])
            await #expect(throws: LogStoreError(.invalidArgument, "a batch needs at least one record")) {
                try await log.append([])
            }
            do {
                _ = try await log.append(testRecords(0..<20, padding: 100))
                Issue.record("oversized batch accepted")
            } catch let error as LogStoreError {
                #expect(error.kind == .tooLarge)
            }
            #expect(log.endOffset == 0)
            try await log.close()
            do {
                _ = try await log.append(testRecords(0..<1))
                Issue.record("append after close")
            } catch let error as LogStoreError {
                #expect(error.kind == .closed)
            }
        }
    }

    @Test("retention never deletes a segment holding an offset at or above the floor", arguments: [false, true])
    func retentionFloor(byAge: Bool) async throws {
        try await withTemporaryDirectory { dir in
            let floor = ManualClock(0)  // used as a settable Int64
            let clock = ManualClock(1_800_000_000_000)  // every test record is older than retentionMillis
            var config = TopicLogConfig.test(segmentBytes: 300)
            if byAge { config.retentionMillis = 1 } else { config.retentionBytes = 600 }
            config.retentionFloor = floor.function
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, nowMillis: clock.function)
            let log = try await backend.openTopic(name: "t", config: config)
            try await Self.fill(log, batches: 30)
            #expect(log.startOffset == 0, "floor 0 keeps everything")
            let segments = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }
                .compactMap { SegmentName.baseOffset(of: $0, suffix: "log") }
            #expect(segments.count > 4)
            // A floor inside the third segment: the first two may go, the third (holding the floor) stays.
            floor.millis = segments[2] + 1
            try await Self.fill(log, batches: 1)
            #expect(log.startOffset == segments[2])
            // A floor exactly at a segment's base: the segment before it holds only offsets below, so it may go.
            floor.millis = segments[4]
            try await Self.fill(log, batches: 1)
            #expect(log.startOffset == segments[4])
            Self.expectRecords(try readAll(log, from: log.startOffset), log.startOffset..<log.endOffset)
            await backend.closeAll()

            // On open, too.
            floor.millis = 0
            let reopened = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, nowMillis: clock.function)
            let again = try await reopened.openTopic(name: "t", config: config)
            #expect(again.startOffset == segments[4])
            await reopened.closeAll()
        }
    }

    @Test("configs compare equal regardless of the floor function, but not when only one has a floor")
    func configEquality() {
        var a = TopicLogConfig.test()
        var b = TopicLogConfig.test()
        #expect(a == b)
        a.retentionFloor = { 1 }
        #expect(a != b)
        b.retentionFloor = { 2 }
        #expect(a == b)
        b.retentionBytes = 5
        #expect(a != b)
    }

    @Test("scan visits every record from an offset to the end in order, across segments and pages")
    func scan() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(name: "t", config: .test(segmentBytes: 400, indexIntervalBytes: 100))
            try await Self.fill(log, batches: 40)
            for start in [Int64(0), 1, 17, log.endOffset - 1, log.endOffset] {
                for page in [1, 3, 1000] {
                    var seen: [StoredRecord] = []
                    let end = try log.scan(from: start, pageRecords: page, pageBytes: page * 40) { seen.append($0) }
                    #expect(end == log.endOffset)
                    Self.expectRecords(seen, start..<log.endOffset)
                }
            }
            var partial: [Int64] = []
            #expect(try log.scan(from: 5, to: 9) { partial.append($0.offset) } == 9)
            #expect(partial == [5, 6, 7, 8])
            #expect(throws: LogStoreError.self) { try log.scan(from: log.endOffset + 1) { _ in } }
            await backend.closeAll()
        }
    }
}
