import Foundation
import Glibc
import MetricsTestKit
import Testing

@testable import LogStore

/// `TopicLogConfig.pageCacheBytes`: the log leaves only its newest writes in the page cache (docs/STORAGE.md,
/// "Page cache").
@Suite("Page cache window")
struct PageCacheWindowTests {
    final class File: Sendable {
        let name: String
        init(_ name: String) { self.name = name }
    }

    static let mebibyte: Int64 = 1 << 20

    @Test("drops nothing until the window is a step over its limit, then the oldest bytes, in whole pages")
    func dropsOldestInSteps() {
        var window = PageCacheWindow<File>(limit: 16 * Self.mebibyte, step: 4 * Self.mebibyte, pageBytes: 4096)
        let file = File("a")
        var at: Int64 = 0
        var dropped: [Range<Int64>] = []
        // Writes of 1 MiB and 100 bytes: their ends are never on a page boundary.
        let write = Self.mebibyte + 100
        for _ in 0..<60 {
            let drops = window.wrote(file, at..<(at + write))
            at += write
            for drop in drops {
                #expect(drop.file === file)
                #expect(drop.range.lowerBound % 4096 == 0 && drop.range.upperBound % 4096 == 0, "\(drop.range)")
                dropped.append(drop.range)
            }
            // Never more than a step and one write over the limit; never under it once it dropped.
            #expect(window.cachedBytes < 16 * Self.mebibyte + 4 * Self.mebibyte + write)
            if !drops.isEmpty { #expect(window.cachedBytes >= 16 * Self.mebibyte) }
        }
        #expect(!dropped.isEmpty)
        // The drops are contiguous from 0, each of at least a step, and what is left is the newest bytes.
        #expect(dropped.first?.lowerBound == 0)
        for (earlier, later) in zip(dropped, dropped.dropFirst()) { #expect(earlier.upperBound == later.lowerBound) }
        #expect(dropped.allSatisfy { $0.count >= 4 << 20 })
        #expect(dropped.last!.upperBound + window.cachedBytes == at)
    }

    @Test("a rolled file's bytes go first, whole, then the next file's")
    func acrossFiles() {
        var window = PageCacheWindow<File>(limit: 16 * Self.mebibyte, step: 4 * Self.mebibyte, pageBytes: 4096)
        let (first, second) = (File("00000"), File("00100"))
        // 10 MiB and 10 bytes in the first file (its last page partial), then 1 MiB writes in the second.
        #expect(window.wrote(first, 0..<(10 * Self.mebibyte + 10)).isEmpty)
        var drops: [(file: File, range: Range<Int64>)] = []
        var at: Int64 = 0
        while drops.isEmpty {
            drops = window.wrote(second, at..<(at + Self.mebibyte))
            at += Self.mebibyte
        }
        for _ in 0..<20 {
            drops += window.wrote(second, at..<(at + Self.mebibyte))
            at += Self.mebibyte
        }
        // All of the first file goes, contiguous from 0 to its end as written (the kernel keeps its partial last
        // page), before anything of the second.
        let firstDrops = drops.prefix { $0.file === first }.map(\.range)
        #expect(firstDrops.first?.lowerBound == 0 && firstDrops.last?.upperBound == 10 * Self.mebibyte + 10)
        for (earlier, later) in zip(firstDrops, firstDrops.dropFirst()) { #expect(earlier.upperBound == later.lowerBound) }
        let rest = drops.dropFirst(firstDrops.count)
        #expect(!rest.isEmpty && rest.allSatisfy { $0.file === second })
        #expect(rest.first?.range.lowerBound == 0)
    }

    @Test("a file retention deleted leaves the window without a drop, and its bytes no longer count")
    func forgetsDeletedFiles() {
        var window = PageCacheWindow<File>(limit: 16 * Self.mebibyte, step: 4 * Self.mebibyte, pageBytes: 4096)
        let (old, active) = (File("00000"), File("00100"))
        #expect(window.wrote(old, 0..<(12 * Self.mebibyte)).isEmpty)
        #expect(window.wrote(active, 0..<(6 * Self.mebibyte)).isEmpty)
        window.forget(old)
        #expect(window.cachedBytes == 6 * Self.mebibyte)
        // 13 MiB more before the active file is over the limit by a step: then only its own bytes are dropped.
        var drops: [(file: File, range: Range<Int64>)] = []
        var at = 6 * Self.mebibyte
        for _ in 0..<14 {
            drops += window.wrote(active, at..<(at + Self.mebibyte))
            at += Self.mebibyte
        }
        #expect(drops.count == 1 && drops[0].file === active && drops[0].range == 0..<(4 * Self.mebibyte))
    }

    /// Over a real file: after 40 MiB written with a window of 16 MiB, the segment's older pages are out of the page
    /// cache (`mincore` on a mapping of the file reads the cache), its newest 16 MiB in, the bytes dropped counted,
    /// and every record reads back.
    @Test("a log with a 16 MiB window leaves its older pages out of the page cache and reads them back from the file")
    func realFile() async throws {
        try await withTemporaryDirectory { dir in
            let metrics = TestMetrics()
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, metrics: metrics)
            var config = TopicLogConfig.test(segmentBytes: 256 * Self.mebibyte, fsync: .always)
            config.pageCacheBytes = 16 * Self.mebibyte
            let log = try await backend.openTopic(name: "t", config: config)
            // 20 batches of 128 records of 16 KiB: about 2 MiB each.
            for _ in 0..<20 {
                let start = log.endOffset
                _ = try await log.append(testRecords(start..<(start + 128), padding: 16 << 10))
            }
            let name = try #require(try fileNames(dir + "/t").first { $0.hasSuffix(".log") })
            let path = dir + "/t/" + name
            let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
            #expect(size > 40 << 20)
            // The drops run on the log's cache queue: wait (at most 5 s) until the oldest MiB is out.
            let deadline = ContinuousClock.now.advanced(by: .seconds(5))
            while try Self.residentFraction(path, 0..<(1 << 20)) > 0.1, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let older = try Self.residentFraction(path, 0..<(size - (16 << 20) - (4 << 20)))
            let newest = try Self.residentFraction(path, (size - (16 << 20))..<size)
            #expect(older < 0.1, "\(Int(older * 100))% of the older pages in the page cache")
            // And counted, as each drop is made: all but the newest 16-20 MiB.
            let counter = try metrics.expectCounter(LogMetrics.pageCacheDroppedName, [("topic", "t")])
            while counter.totalValue < Int64(size) - (20 << 20), ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            let dropped = counter.totalValue
            #expect(dropped >= Int64(size) - (20 << 20) && dropped <= Int64(size) - (16 << 20), "\(dropped) bytes dropped")
            #expect(newest > 0.9, "\(Int(newest * 100))% of the newest 16 MiB in the page cache")
            FileTopicLogTests.expectRecords(try readAll(log, from: 0), 0..<log.endOffset, padding: 16 << 10)
            await backend.closeAll()
        }
    }

    /// The fraction of the file's pages in `range` that the page cache holds.
    static func residentFraction(_ path: String, _ range: Range<Int>) throws -> Double {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        defer { close(fd) }
        let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / pageBytes * pageBytes
        let length = range.upperBound - start
        guard let mapping = mmap(nil, length, PROT_READ, MAP_SHARED, fd, off_t(start)), mapping != MAP_FAILED else {
            throw POSIXError(.init(rawValue: errno) ?? .EIO)
        }
        defer { munmap(mapping, length) }
        var vector = [UInt8](repeating: 0, count: (length + pageBytes - 1) / pageBytes)
        guard mincore(mapping, length, &vector) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
        return Double(vector.filter { $0 & 1 == 1 }.count) / Double(vector.count)
    }
}
