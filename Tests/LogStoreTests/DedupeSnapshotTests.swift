import Foundation
import Glibc
import NIOCore
import Testing

@testable import LogStore

@Suite("DedupeSnapshot")
struct DedupeSnapshotTests {
    static func sampleIndex() throws -> DedupeIndex {
        var index = try DedupeIndex(windowMillis: 10_000, maxKeys: 100, hashKey: DedupeHashKey(k0: 0xABCD, k1: 42))
        for i in 0..<20 {
            _ = try index.insert(
                buffer("key-\(i)"),
                offset: Int64(i * 3),
                location: i % 4 == 0 ? .quarantine : .topic,
                nowMillis: 1_000 + Int64(i)
            )
        }
        return index
    }

    @Test("write then load returns the same snapshot, and restoring gives the same answers")
    func roundTrip() async throws {
        try await withTemporaryDirectory { dir in
            let index = try Self.sampleIndex()
            let snapshot = index.snapshot(topicEnd: 57, quarantineEnd: 12, takenAtMillis: 1_100)
            #expect(snapshot.entries.count == 20)
            try snapshot.write(directory: dir)
            #expect(try fileNames(dir) == ["dedupe.snapshot"])
            let attributes = try FileManager.default.attributesOfItem(atPath: dir + "/dedupe.snapshot")
            #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600, "it holds the digest key")
            #expect(
                try fileBytes(dir + "/dedupe.snapshot").count
                    == DedupeSnapshot.headerSize + 20 * DedupeSnapshot.entrySize + DedupeSnapshot.trailerSize
            )
            let loaded = try #require(try DedupeSnapshot.load(directory: dir))
            #expect(loaded == snapshot)
            #expect(loaded.topicEnd == 57)
            #expect(loaded.quarantineEnd == 12)

            let (restored, evictions) = try DedupeIndex.restoring(
                loaded,
                windowMillis: 10_000,
                maxKeys: 100,
                nowMillis: 1_200
            )
            #expect(evictions.isEmpty)
            #expect(restored.hashKey == index.hashKey)
            var restoredIndex = restored
            var original = index
            for i in 0..<21 {
                let key = buffer("key-\(i)")
                #expect(try restoredIndex.lookup(key, nowMillis: 1_200) == original.lookup(key, nowMillis: 1_200))
            }
            #expect(try restoredIndex.lookup(buffer("key-4"), nowMillis: 1_200)?.location == .quarantine)
            #expect(restoredIndex.entriesInInsertionOrder.map(\.digest) == index.entriesInInsertionOrder.map(\.digest))
        }
    }

    @Test("a snapshot of 300,000 keys is written in 4 MiB pieces, each written out before the next, and loads back")
    func largeSnapshotInPieces() async throws {
        try await withTemporaryDirectory { dir in
            var index = try DedupeIndex(
                windowMillis: 60_000, maxKeys: 400_000, hashKey: DedupeHashKey(k0: 7, k1: 9)
            )
            for i in 0..<300_000 {
                _ = try index.insert(buffer("patient-event-\(i)"), offset: Int64(i), location: .topic, nowMillis: 1_000)
            }
            let snapshot = index.snapshot(topicEnd: 300_000, quarantineEnd: 0, takenAtMillis: 1_000)
            let io = FaultyFileIO()
            try snapshot.write(directory: dir, io: io)
            let size = DedupeSnapshot.headerSize + 300_000 * DedupeSnapshot.entrySize + DedupeSnapshot.trailerSize
            #expect(try fileBytes(dir + "/dedupe.snapshot").count == size)
            // Every whole piece (the last, shorter one is left to the fsync), in order, of the temp file.
            let piece = Int64(DedupeSnapshot.writePieceBytes)
            let writeOuts = io.state.withLock { $0.writeOuts }
            #expect(writeOuts.map(\.offset) == (0..<Int64(size / Int(piece))).map { $0 * piece })
            #expect(writeOuts.allSatisfy { $0.count == piece && $0.path == dir + "/dedupe.snapshot.tmp" })
            #expect(try DedupeSnapshot.load(directory: dir) == snapshot)
            #expect(io.state.withLock { $0.snapshotWrites } == size / Int(piece) + 1)

            // The server's way, encoded from the index's entries as the file is written: the same bytes, the same
            // pieces.
            try FileManager.default.createDirectory(atPath: dir + "/entries", withIntermediateDirectories: false)
            let streamed = FaultyFileIO()
            try DedupeSnapshot.write(
                entries: index.entries, hashKey: index.hashKey, topicEnd: 300_000, quarantineEnd: 0,
                takenAtMillis: 1_000, directory: dir + "/entries", io: streamed
            )
            #expect(try fileBytes(dir + "/entries/dedupe.snapshot") == fileBytes(dir + "/dedupe.snapshot"))
            #expect(streamed.state.withLock { $0.writeOuts.map(\.offset) } == writeOuts.map(\.offset))
        }
    }

    @Test(
        "with direct I/O every snapshot write keeps the alignment, the last piece is padded and cut back, and the file holds a buffered write's bytes",
        arguments: [20, 300_000]
    )
    func directIO(keys: Int) async throws {
        try await withTemporaryDirectory { dir in
            var index = try DedupeIndex(windowMillis: 60_000, maxKeys: 400_000, hashKey: DedupeHashKey(k0: 7, k1: 9))
            for i in 0..<keys {
                _ = try index.insert(buffer("patient-event-\(i)"), offset: Int64(i), location: .topic, nowMillis: 1_000)
            }
            let snapshot = index.snapshot(topicEnd: Int64(keys), quarantineEnd: 0, takenAtMillis: 1_000)
            let io = FaultyFileIO()
            io.state.withLock { $0.directIO = true }
            try snapshot.write(directory: dir, io: io)
            let record = io.state.withLock { $0 }
            // The test's temporary directory is on a file system with direct I/O (ext4 here, as on CI).
            let alignment = try #require(record.directIOAlignment)
            #expect(alignment > 0 && DedupeSnapshot.directIOMaxAlignment % alignment == 0)
            let writes = record.snapshotWriteLog
            #expect(!writes.isEmpty)
            #expect(writes.allSatisfy { $0.direct && $0.offset % Int64(alignment) == 0 })
            #expect(writes.allSatisfy { $0.count % alignment == 0 && $0.address % alignment == 0 })
            let size = DedupeSnapshot.headerSize + keys * DedupeSnapshot.entrySize + DedupeSnapshot.trailerSize
            let last = try #require(writes.last)
            #expect(last.offset + Int64(last.count) > Int64(size), "the last piece was padded")
            #expect(record.snapshotTruncations == [Int64(size)])
            #expect(record.writeOuts.isEmpty, "direct writes are on the device already")

            try FileManager.default.createDirectory(atPath: dir + "/buffered", withIntermediateDirectories: false)
            try snapshot.write(directory: dir + "/buffered", io: FaultyFileIO())
            #expect(try fileBytes(dir + "/dedupe.snapshot") == fileBytes(dir + "/buffered/dedupe.snapshot"))
            #expect(try fileBytes(dir + "/dedupe.snapshot").count == size)
            #expect(try DedupeSnapshot.load(directory: dir) == snapshot)
            #expect(try fileNames(dir).sorted() == ["buffered", "dedupe.snapshot"])
        }
    }

    @Test("a snapshot write that fails after its first piece leaves the previous snapshot and no temp file")
    func failedWriteMidway() async throws {
        try await withTemporaryDirectory { dir in
            let previous = try Self.sampleIndex().snapshot(topicEnd: 57, quarantineEnd: 12, takenAtMillis: 1_100)
            try previous.write(directory: dir)
            var index = try DedupeIndex(windowMillis: 60_000, maxKeys: 400_000, hashKey: DedupeHashKey(k0: 7, k1: 9))
            for i in 0..<300_000 {
                _ = try index.insert(buffer("patient-event-\(i)"), offset: Int64(i), location: .topic, nowMillis: 1_000)
            }
            let io = FaultyFileIO()
            io.state.withLock { $0.failSnapshotWrite = (after: 1, errno: EIO) }
            let error = #expect(throws: LogStoreError.self) {
                try DedupeSnapshot.write(
                    entries: index.entries, hashKey: index.hashKey, topicEnd: 300_000, quarantineEnd: 0,
                    takenAtMillis: 1_000, directory: dir, io: io
                )
            }
            #expect(error?.kind == .storageFailure)
            #expect(io.state.withLock { $0.snapshotWrites } == 1, "the first piece was written, the second failed")
            #expect(try fileNames(dir) == ["dedupe.snapshot"])
            #expect(try DedupeSnapshot.load(directory: dir) == previous)
        }
    }

    @Test("an empty index round-trips")
    func empty() async throws {
        try await withTemporaryDirectory { dir in
            let index = try DedupeIndex(windowMillis: 5, maxKeys: 5)
            let snapshot = index.snapshot(topicEnd: 0, quarantineEnd: 0, takenAtMillis: 0)
            try snapshot.write(directory: dir)
            #expect(try DedupeSnapshot.load(directory: dir) == snapshot)
        }
    }

    @Test("a missing snapshot loads as nil")
    func missing() async throws {
        try await withTemporaryDirectory { dir in
            let loaded = try DedupeSnapshot.load(directory: dir)
            #expect(loaded == nil)
        }
    }

    @Test("every flipped byte and every truncation is detected as corrupt")
    func corruption() async throws {
        try await withTemporaryDirectory { dir in
            let snapshot = try Self.sampleIndex().snapshot(topicEnd: 57, quarantineEnd: 12, takenAtMillis: 1_100)
            let bytes = Array(snapshot.encode().readableBytesView)
            let path = dir + "/" + DedupeSnapshot.fileName
            for position in 0..<bytes.count {
                var damaged = bytes
                damaged[position] ^= 0x01
                try writeFile(path, damaged)
                do {
                    _ = try DedupeSnapshot.load(directory: dir)
                    Issue.record("flipped byte \(position) not detected")
                } catch let error as LogStoreError {
                    #expect(error.kind == .corruptBatch)
                    #expect(error.message.contains(path))
                }
            }
            for length in stride(from: 0, to: bytes.count, by: 7) {
                try writeFile(path, Array(bytes[..<length]))
                #expect(throws: LogStoreError.self, "truncated to \(length)") {
                    try DedupeSnapshot.load(directory: dir)
                }
            }
            // A well-formed CRC over a wrong count is caught by the size check.
            var wrongCount = snapshot
            wrongCount.entries.removeLast()
            var content = wrongCount.encode()
            content.setInteger(UInt32(20), at: DedupeSnapshot.headerSize - 4)
            let crcAt = content.writerIndex - 4
            let crc = content.withUnsafeReadableBytes {
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[..<crcAt]))
            }
            content.setInteger(crc, at: crcAt)
            try writeFile(path, Array(content.readableBytesView))
            #expect(throws: LogStoreError.self) { try DedupeSnapshot.load(directory: dir) }
        }
    }

    @Test("a failed write keeps the previous snapshot and leaves no temp file")
    func failedWrite() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let first = try Self.sampleIndex().snapshot(topicEnd: 1, quarantineEnd: 1, takenAtMillis: 1)
            try first.write(directory: dir, io: io)
            io.state.withLock { $0.failRename = EIO }
            let second = try Self.sampleIndex().snapshot(topicEnd: 2, quarantineEnd: 2, takenAtMillis: 2)
            #expect(throws: LogStoreError.self) { try second.write(directory: dir, io: io) }
            #expect(try fileNames(dir) == ["dedupe.snapshot"])
            #expect(try DedupeSnapshot.load(directory: dir) == first)
            io.state.withLock { $0.failRename = nil }
            try second.write(directory: dir, io: io)
            #expect(try DedupeSnapshot.load(directory: dir) == second)
        }
    }

    @Test("restoring skips expired entries and evicts the oldest when the bound was lowered")
    func restoringWithLowerBound() throws {
        let snapshot = try Self.sampleIndex().snapshot(topicEnd: 0, quarantineEnd: 0, takenAtMillis: 0)
        // Entries expire at 11_000 ... 11_019.
        let (index, evictions) = try DedupeIndex.restoring(
            snapshot,
            windowMillis: 10_000,
            maxKeys: 10,
            nowMillis: 11_005
        )
        #expect(index.count == 10)
        // i = 0...5 expire at 11_000...11_005; of the 14 live ones the oldest 4 do not fit.
        #expect(evictions.map(\.entry.offset) == [18, 21, 24, 27])
        #expect(index.evictedBeforeExpiry == 4)
        #expect(index.entriesInInsertionOrder.map(\.entry.offset) == (10..<20).map { Int64($0 * 3) })
    }

    // MARK: Rebuilding from logs

    static func record(_ key: String?, original: String? = nil, timestamp: Int64) -> LogRecord {
        var headers: [LogHeader] = []
        if let key { headers.append(LogHeader(name: DedupeIndex.headerName, value: buffer(key))) }
        if let original { headers.append(LogHeader(name: "original-topic", value: buffer(original))) }
        return LogRecord(key: nil, headers: headers, value: buffer("v"), timestamp: timestamp)
    }

    @Test("snapshot plus a scan of both logs' tails rebuilds the index after a restart")
    func recovery() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let topic = try await backend.openTopic(name: "orders", config: .test(segmentBytes: 300))
            let quarantine = try await backend.openTopic(name: "__quarantine", config: .test(segmentBytes: 300))
            var live = try DedupeIndex(windowMillis: 60_000, maxKeys: 1000)
            // Before the snapshot: k0...k9 in the topic, q0 quarantined.
            for i in 0..<10 {
                let result = try await topic.append([Self.record("k\(i)", timestamp: 1_000)])
                _ = try live.insert(buffer("k\(i)"), offset: result.baseOffset, location: .topic, nowMillis: 1_000)
            }
            _ = try await topic.append([Self.record(nil, timestamp: 1_000)])  // no key
            let q0 = try await quarantine.append([Self.record("q0", original: "orders", timestamp: 1_000)])
            _ = try live.insert(buffer("q0"), offset: q0.baseOffset, location: .quarantine, nowMillis: 1_000)
            let snapshot = live.snapshot(
                topicEnd: topic.endOffset,
                quarantineEnd: quarantine.endOffset,
                takenAtMillis: 1_000
            )
            try snapshot.write(directory: backend.topicDirectory(name: "orders"))
            // After the snapshot (lost from memory by the "crash"): k10...k29, q1 quarantined, q0 replayed, and a
            // quarantined record of another topic with the same key as k3.
            for i in 10..<30 {
                _ = try await topic.append([Self.record("k\(i)", timestamp: 2_000)])
            }
            _ = try await quarantine.append([Self.record("q1", original: "orders", timestamp: 2_000)])
            _ = try await quarantine.append([Self.record("k3", original: "other", timestamp: 2_000)])
            let replay = try await topic.append([Self.record("q0", timestamp: 3_000)])

            // Recovery.
            let loaded = try #require(try DedupeSnapshot.load(directory: backend.topicDirectory(name: "orders")))
            var (index, evictions) = try DedupeIndex.restoring(
                loaded,
                windowMillis: 60_000,
                maxKeys: 1000,
                nowMillis: 4_000
            )
            #expect(evictions.isEmpty)
            let quarantineResult = try index.apply(
                log: quarantine,
                from: loaded.quarantineEnd,
                location: .quarantine,
                nowMillis: 4_000
            ) { stored in
                guard stored.record.header(named: "original-topic") == buffer("orders") else { return nil }
                return DedupeIndex.topicRecordKey(stored)
            }
            #expect(quarantineResult == DedupeRebuildResult(scannedTo: quarantine.endOffset, missing: nil, applied: 1))
            let topicResult = try index.apply(
                log: topic,
                from: loaded.topicEnd,
                location: .topic,
                nowMillis: 4_000,
                key: DedupeIndex.topicRecordKey
            )
            #expect(topicResult == DedupeRebuildResult(scannedTo: topic.endOffset, missing: nil, applied: 21))

            for i in 0..<30 {
                let entry = try index.lookup(buffer("k\(i)"), nowMillis: 4_000)
                #expect(entry?.location == .topic, "k\(i)")
                #expect(entry?.expiresAtMillis == (i < 10 ? 61_000 : 62_000))
                #expect(
                    try topic.read(from: entry!.offset, maxRecords: 1, maxBytes: 1000).first?.record.header(
                        named: DedupeIndex.headerName
                    ) == buffer("k\(i)")
                )
            }
            // q0: replayed into the topic, keeps the window of its first sighting.
            #expect(
                try index.lookup(buffer("q0"), nowMillis: 4_000)
                    == DedupeEntry(offset: replay.baseOffset, location: .topic, expiresAtMillis: 61_000)
            )
            #expect(try index.lookup(buffer("q1"), nowMillis: 4_000)?.location == .quarantine)
            #expect(index.count == 32)
            await backend.closeAll()
        }
    }

    @Test("a rebuild from below the log start reports the missing range instead of failing silently")
    func rebuildReportsMissing() async throws {
        try await withTemporaryDirectory { dir in
            var config = TopicLogConfig.test(segmentBytes: 200)
            config.retentionBytes = 400
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let topic = try await backend.openTopic(name: "t", config: config)
            for i in 0..<40 { _ = try await topic.append([Self.record("k\(i)", timestamp: 1_000)]) }
            #expect(topic.startOffset > 0)
            var index = try DedupeIndex(windowMillis: 60_000, maxKeys: 1000)
            let result = try index.apply(
                log: topic,
                from: 0,
                location: .topic,
                nowMillis: 1_000,
                key: DedupeIndex.topicRecordKey
            )
            #expect(result.missing == 0..<topic.startOffset)
            #expect(result.applied == Int(topic.endOffset - topic.startOffset))
            #expect(result.scannedTo == topic.endOffset)
            await backend.closeAll()
        }
    }

    @Test("records with an invalid key are skipped and counted; the bound's evictions are counted")
    func rebuildInvalidAndEvicted() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let topic = try await backend.openTopic(name: "t", config: .test())
            _ = try await topic.append([Self.record("", timestamp: 1)])
            _ = try await topic.append([Self.record(String(repeating: "x", count: 257), timestamp: 1)])
            for i in 0..<5 { _ = try await topic.append([Self.record("k\(i)", timestamp: 1)]) }
            var index = try DedupeIndex(windowMillis: 60_000, maxKeys: 3)
            let result = try index.apply(
                log: topic,
                from: 0,
                location: .topic,
                nowMillis: 2,
                key: DedupeIndex.topicRecordKey
            )
            #expect(result == DedupeRebuildResult(scannedTo: 7, missing: nil, applied: 5, invalidKeys: 2, evicted: 2))
            #expect(index.evictedBeforeExpiry == 2)
            await backend.closeAll()
        }
    }
}

