import CFileIO
import Foundation
import Glibc
import Locking
import Logging
import NIOCore
import Synchronization
import Testing

@testable import LogStore

/// A fresh directory under the system temp dir, removed when the test body returns.
func withTemporaryDirectory<T>(_ body: (String) async throws -> T) async throws -> T {
    let path = NSTemporaryDirectory() + "logstore-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: path) }
    return try await body(path)
}

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let now: Atomic<Int64>
    init(_ start: Int64) { self.now = Atomic(start) }
    var millis: Int64 {
        get { self.now.load(ordering: .relaxed) }
        set { self.now.store(newValue, ordering: .relaxed) }
    }
    func advance(by millis: Int64) { self.now.add(millis, ordering: .relaxed) }
    var function: @Sendable () -> Int64 { { self.now.load(ordering: .relaxed) } }
}

/// Log lines captured in memory.
final class CapturedLogs: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }
    private let lines = Locked<[Line]>([])
    var all: [Line] { self.lines.withLock { $0 } }
    func append(_ line: Line) { self.lines.withLock { $0.append(line) } }
    var logger: Logger {
        Logger(label: "test") { _ in CapturingHandler(sink: self) }
    }
    func contains(level: Logger.Level, _ fragment: String) -> Bool {
        self.all.contains { $0.level == level && $0.message.contains(fragment) }
    }
}

struct CapturingHandler: LogHandler {
    let sink: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }
    func log(
        level: Logger.Level,
        message: Logger.Message,
        metadata: Logger.Metadata?,
        source: String,
        file: String,
        function: String,
        line: UInt
    ) {
        var merged: [String: String] = [:]
        for (key, value) in self.metadata { merged[key] = "\(value)" }
        for (key, value) in metadata ?? [:] { merged[key] = "\(value)" }
        self.sink.append(.init(level: level, message: "\(message)", metadata: merged))
    }
}

/// Real POSIX I/O with counters and injectable faults.
final class FaultyFileIO: FileIO {
    struct State {
        var logFdatasyncs = 0
        var logWrites = 0
        /// fdatasync of `.log` files fails with this errno while set.
        var failLogFdatasync: Int32?
        /// pwrite of `.log` files fails with this errno while set.
        var failLogWrite: Int32?
        /// pwrite of zeros only (preallocation) to `.log` files fails with this errno while set.
        var failZeroWrite: Int32?
        /// pwrite of zeros with direct I/O only to `.log` files fails with this errno while set.
        var failDirectZeroWrite: Int32?
        /// pwrite of zeros to `.log` files waits while this is set (at most 60 s, only so that a test that fails
        /// before clearing it still ends: on a loaded machine a test's task can go unscheduled for more than 5 s, and
        /// a held write let go meanwhile let the next be held too), counted in `zeroWritesHeld`; a failing `.log`
        /// fdatasync meanwhile first waits (at most 5 s) for a zero write to be held.
        var holdZeroWrites = false
        var zeroWritesHeld = 0
        /// With `holdZeroWrites`: this many zero writes pass first (counted in `zeroWritesPassed`), the next is held.
        var zeroWritesBeforeHold = 0
        var zeroWritesPassed = 0
        /// preads of segment `.log` files.
        var logReads = 0
        /// fdatasync of the offsets file fails with this errno while set.
        var failOtherFdatasync: Int32?
        /// fdatasyncs of files other than segment logs (offset store, durable tables).
        var otherFdatasyncs = 0
        /// rename fails with this errno while set.
        var failRename: Int32?
        /// The first `.log` fdatasync waits until this many appends were started (group commit test): counted by
        /// the test in `appendsStarted`, since the writer may run that sync itself and write nothing meanwhile.
        var holdFirstSyncUntilAppends: Int?
        /// Appends the test has started (see `holdFirstSyncUntilAppends`).
        var appendsStarted = 0
        /// `writeOut` calls, in order (recorded only: like the default, they write nothing early).
        var writeOuts: [(path: String, offset: Int64, count: Int64)] = []
        /// pwrite of a dedupe snapshot's temp file fails with `errno` once `after` of them succeeded.
        var failSnapshotWrite: (after: Int, errno: Int32)?
        /// pwrites of dedupe snapshot temp files.
        var snapshotWrites = 0
        /// While set, `enableDirectIO` is the real one's (otherwise files stay buffered, the protocol's default).
        var directIO = false
        /// What the last `enableDirectIO` granted.
        var directIOAlignment: Int?
        /// Each pwrite of a dedupe snapshot temp file, with whether its fd had `O_DIRECT` set.
        var snapshotWriteLog: [(offset: Int64, count: Int, address: Int, direct: Bool)] = []
        /// ftruncate sizes of dedupe snapshot temp files.
        var snapshotTruncations: [Int64] = []
        /// Every write to a segment's `.log` file: where, how many bytes, whether all zeros, whether direct I/O.
        var logWriteLog: [(offset: Int64, count: Int, zeros: Bool, direct: Bool)] = []
        /// pwrite of the spare segment file (`spareSegmentName`) fails with this errno while set.
        var failSpareWrite: Int32?
        /// Writes to the spare segment file that had `O_DIRECT` set.
        var spareDirectWrites = 0
    }
    let state = Locked(State())
    private let posix = PosixFileIO()

    var logFdatasyncs: Int { self.state.withLock { $0.logFdatasyncs } }

    /// True for a dedupe snapshot's temp file.
    static func isSnapshotTemp(_ path: String) -> Bool { path.hasSuffix("/" + DedupeSnapshot.fileName + ".tmp") }

    /// True for a segment's `.log` file (not, say, `consumer-offsets.log`).
    static func isSegmentLog(_ path: String) -> Bool {
        SegmentName.baseOffset(of: String(path.split(separator: "/").last ?? ""), suffix: "log") != nil
    }

    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
        try self.posix.open(path, flags: flags, mode: mode)
    }
    func close(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.close(fd, path: path) }
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(FileIOError) -> Int
    {
        if Self.isSegmentLog(path) {
            let zeros = bytes.allSatisfy { $0 == 0 }
            let direct = fcntl(fd, F_GETFL) & brokerd_o_direct_flag() != 0
            let fail = self.state.withLock { state -> Int32? in
                if let errno = state.failLogWrite { return errno }
                if zeros, let errno = state.failZeroWrite { return errno }
                if zeros, direct, let errno = state.failDirectZeroWrite { return errno }
                state.logWrites += 1
                state.logWriteLog.append((offset, bytes.count, zeros, direct))
                return nil
            }
            if let fail { throw FileIOError(operation: "pwrite", path: path, errno: fail) }
            if zeros, self.state.withLock({ state in
                guard state.holdZeroWrites else { return false }
                if state.zeroWritesPassed < state.zeroWritesBeforeHold {
                    state.zeroWritesPassed += 1
                    return false
                }
                state.zeroWritesHeld += 1
                return true
            }) {
                let deadline = Date().addingTimeInterval(60)
                while self.state.withLock({ $0.holdZeroWrites }), Date() < deadline { usleep(1000) }
            }
        }
        if path.hasSuffix("/" + spareSegmentName), let fail = self.state.withLock({ state -> Int32? in
            if let fail = state.failSpareWrite { return fail }
            if fcntl(fd, F_GETFL) & brokerd_o_direct_flag() != 0 { state.spareDirectWrites += 1 }
            return nil
        }) {
            throw FileIOError(operation: "pwrite", path: path, errno: fail)
        }
        if Self.isSnapshotTemp(path), let fail = self.state.withLock({ state -> Int32? in
            if let fail = state.failSnapshotWrite, state.snapshotWrites >= fail.after { return fail.errno }
            state.snapshotWrites += 1
            let direct = fcntl(fd, F_GETFL) & brokerd_o_direct_flag() != 0
            state.snapshotWriteLog.append((offset, bytes.count, Int(bitPattern: bytes.baseAddress), direct))
            return nil
        }) {
            throw FileIOError(operation: "pwrite", path: path, errno: fail)
        }
        return try self.posix.pwrite(fd, bytes, at: offset, path: path)
    }
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        if Self.isSegmentLog(path) { self.state.withLock { $0.logReads += 1 } }
        return try self.posix.pread(fd, into: buffer, at: offset, path: path)
    }
    func fdatasync(_ fd: Int32, path: String) throws(FileIOError) {
        if Self.isSegmentLog(path) {
            let (fail, hold, first) = self.state.withLock { state in
                state.logFdatasyncs += 1
                return (state.failLogFdatasync, state.holdFirstSyncUntilAppends, state.logFdatasyncs == 1)
            }
            if let fail {
                for _ in 0..<5000 where self.state.withLock({ $0.holdZeroWrites && $0.zeroWritesHeld == 0 }) {
                    usleep(1000)
                }
                throw FileIOError(operation: "fdatasync", path: path, errno: fail)
            }
            if first, let hold {
                // Bounded wait: the test's appends are all queued long before this runs out.
                for _ in 0..<10_000 where self.state.withLock({ $0.appendsStarted }) < hold { usleep(1000) }
                usleep(20_000)  // the last started appends reach the writer queue
            }
        } else if let fail = self.state.withLock({ state in
            state.otherFdatasyncs += 1
            return state.failOtherFdatasync
        }) {
            throw FileIOError(operation: "fdatasync", path: path, errno: fail)
        }
        try self.posix.fdatasync(fd, path: path)
    }
    func fsync(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.fsync(fd, path: path) }
    func writeOut(_ fd: Int32, offset: Int64, count: Int64, path: String) throws(FileIOError) {
        self.state.withLock { $0.writeOuts.append((path, offset, count)) }
    }
    func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError) {
        if Self.isSnapshotTemp(path) { self.state.withLock { $0.snapshotTruncations.append(size) } }
        try self.posix.ftruncate(fd, to: size, path: path)
    }
    func enableDirectIO(_ fd: Int32, maxAlignment: Int, path: String) -> Int {
        guard self.state.withLock({ $0.directIO }) else { return 0 }
        let alignment = self.posix.enableDirectIO(fd, maxAlignment: maxAlignment, path: path)
        self.state.withLock { $0.directIOAlignment = alignment }
        return alignment
    }
    func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64 { try self.posix.fileSize(fd, path: path) }
    func rename(_ from: String, to: String) throws(FileIOError) {
        if let fail = self.state.withLock({ $0.failRename }) {
            throw FileIOError(operation: "rename to \(to)", path: from, errno: fail)
        }
        try self.posix.rename(from, to: to)
    }
    func unlink(_ path: String) throws(FileIOError) { try self.posix.unlink(path) }
    func mkdir(_ path: String) throws(FileIOError) { try self.posix.mkdir(path) }
    func listDirectory(_ path: String) throws(FileIOError) -> [String] { try self.posix.listDirectory(path) }
}

func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

func buffer(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

/// Record `i` of a test stream: a recognisable value, a key on even records, a header on every third.
func testRecord(_ i: Int64, timestamp: Int64 = 1_700_000_000_000, padding: Int = 0) -> LogRecord {
    LogRecord(
        key: i % 2 == 0 ? buffer("key-\(i)") : nil,
        headers: i % 3 == 0 ? [LogHeader(name: "seq", value: buffer("\(i)"))] : [],
        value: buffer("value-\(i)" + String(repeating: "x", count: padding)),
        timestamp: timestamp
    )
}

func testRecords(_ range: Range<Int64>, timestamp: Int64 = 1_700_000_000_000, padding: Int = 0) -> [LogRecord] {
    range.map { testRecord($0, timestamp: timestamp, padding: padding) }
}

extension TopicLogConfig {
    static func test(
        segmentBytes: Int64 = 64 * 1024,
        fsync: FsyncPolicy = .never,
        compression: CompressionCodec = .none,
        indexIntervalBytes: Int = 4096,
        preallocateBytes: Int = 0,
        recentBatchBytes: Int = 0
    ) -> TopicLogConfig {
        var config = TopicLogConfig()
        config.recentBatchBytes = recentBatchBytes
        config.preallocateBytes = preallocateBytes
        config.segmentBytes = segmentBytes
        config.fsync = fsync
        config.compression = compression
        config.indexIntervalBytes = indexIntervalBytes
        return config
    }
}

func fileNames(_ directory: String) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
}

func fileBytes(_ path: String) throws -> [UInt8] {
    Array(try Data(contentsOf: URL(fileURLWithPath: path)))
}

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// The batch headers of a segment's `.log` file, in order, up to the first that does not parse (the zeros after the
/// last batch), where they end, and the file's size.
func segmentBatches(_ path: String) throws -> (headers: [BatchHeader], end: Int, size: Int) {
    let bytes = try fileBytes(path)
    var headers: [BatchHeader] = []
    var position = 0
    while let header = BatchHeader.peek(ByteBuffer(bytes: bytes[position...])), header.length > 0,
        position + header.totalSize <= bytes.count
    {
        headers.append(header)
        position += header.totalSize
    }
    return (headers, position, bytes.count)
}

/// Reads everything from `offset` to the end in small pages.
func readAll(_ log: any TopicLog, from offset: Int64) throws -> [StoredRecord] {
    var result: [StoredRecord] = []
    var next = offset
    while next < log.endOffset {
        let page = try log.read(from: next, maxRecords: 1000, maxBytes: 1 << 20)
        guard let last = page.last else { break }
        result += page
        next = last.offset + 1
    }
    return result
}

/// A small deterministic generator (SplitMix64), so a failing random test can be reproduced from its seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
