import Foundation
import Glibc
import Locking
import Logging
import NIOCore
import Testing

@testable import LogStore

/// Simulated power loss through the `FileIO` seam.
///
/// Every file's content is modelled as what the last fdatasync/fsync made durable plus the writes and truncations
/// made since. `powerLoss` stops all I/O (every later call fails with EIO, so writers still running touch nothing),
/// then rewrites each file as the disk could hold it after a crash: the durable content, a random number of the
/// later operations applied in order, and the next write torn at a random byte. Directory entries (creates,
/// renames, unlinks) count as durable at once; the log fsyncs its directory after creating a segment anyway.
final class PowerLossFileIO: FileIO {
    private enum Operation {
        case write(offset: Int64, bytes: [UInt8])
        case truncate(size: Int64)
    }

    private struct FileModel {
        var durable: [UInt8]
        var pending: [Operation] = []
    }

    private struct State {
        var files: [String: FileModel] = [:]
        var paths: [Int32: String] = [:]
        var crashed = false
        var syncs = 0
        var renames = 0
    }

    private let posix = PosixFileIO()
    private let state = Locked(State())

    var syncs: Int { self.state.withLock { $0.syncs } }
    /// Renames made (a spare segment renamed at a roll).
    var renames: Int { self.state.withLock { $0.renames } }

    private func crashedError(_ operation: String, _ path: String) -> FileIOError {
        FileIOError(operation: operation, path: path, errno: EIO)
    }

    private func readWhole(_ fd: Int32, path: String) throws(FileIOError) -> [UInt8] {
        let size = Int(try self.posix.fileSize(fd, path: path))
        var bytes = [UInt8](repeating: 0, count: size)
        let read: Result<Int, FileIOError> = bytes.withUnsafeMutableBytes { raw in
            do throws(FileIOError) {
                return .success(try self.posix.readFully(fd, into: raw, at: 0, path: path))
            } catch {
                return .failure(error)
            }
        }
        return Array(bytes.prefix(try read.get()))
    }

    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
        try self.state.withLock { (state) throws(FileIOError) -> Int32 in
            if state.crashed { throw self.crashedError("open", path) }
            let fd = try self.posix.open(path, flags: flags, mode: mode)
            var info = stat()
            let isDirectory = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
            if !isDirectory, state.files[path] == nil {
                state.files[path] = FileModel(durable: try self.readWhole(fd, path: path))
            }
            state.paths[fd] = path
            return fd
        }
    }

    func close(_ fd: Int32, path: String) throws(FileIOError) {
        // Descriptors are released even after the crash, so a test leaks none.
        self.state.withLock { _ = $0.paths.removeValue(forKey: fd) }
        try self.posix.close(fd, path: path)
    }

    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(FileIOError) -> Int
    {
        try self.state.withLock { (state) throws(FileIOError) -> Int in
            if state.crashed { throw self.crashedError("pwrite", path) }
            let written = try self.posix.pwrite(fd, bytes, at: offset, path: path)
            if let name = state.paths[fd] {
                state.files[name]?.pending.append(.write(offset: offset, bytes: Array(bytes.prefix(written))))
            }
            return written
        }
    }

    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        if self.state.withLock({ $0.crashed }) { throw self.crashedError("pread", path) }
        return try self.posix.pread(fd, into: buffer, at: offset, path: path)
    }

    private func sync(_ fd: Int32, path: String, operation: String) throws(FileIOError) {
        try self.state.withLock { (state) throws(FileIOError) in
            if state.crashed { throw self.crashedError(operation, path) }
            state.syncs += 1
            guard let name = state.paths[fd], state.files[name] != nil else { return }  // a directory
            state.files[name] = FileModel(durable: try self.readWhole(fd, path: path))
        }
    }

    func fdatasync(_ fd: Int32, path: String) throws(FileIOError) { try self.sync(fd, path: path, operation: "fdatasync") }
    func fsync(_ fd: Int32, path: String) throws(FileIOError) { try self.sync(fd, path: path, operation: "fsync") }

    func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError) {
        try self.state.withLock { (state) throws(FileIOError) in
            if state.crashed { throw self.crashedError("ftruncate", path) }
            try self.posix.ftruncate(fd, to: size, path: path)
            if let name = state.paths[fd] { state.files[name]?.pending.append(.truncate(size: size)) }
        }
    }

    func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64 {
        if self.state.withLock({ $0.crashed }) { throw self.crashedError("fstat", path) }
        return try self.posix.fileSize(fd, path: path)
    }

    func rename(_ from: String, to: String) throws(FileIOError) {
        try self.state.withLock { (state) throws(FileIOError) in
            if state.crashed { throw self.crashedError("rename", from) }
            try self.posix.rename(from, to: to)
            state.renames += 1
            state.files[to] = state.files.removeValue(forKey: from)
            for (fd, path) in state.paths where path == from { state.paths[fd] = to }
        }
    }

    func unlink(_ path: String) throws(FileIOError) {
        try self.state.withLock { (state) throws(FileIOError) in
            if state.crashed { throw self.crashedError("unlink", path) }
            try self.posix.unlink(path)
            state.files[path] = nil
        }
    }

    func mkdir(_ path: String) throws(FileIOError) {
        if self.state.withLock({ $0.crashed }) { throw self.crashedError("mkdir", path) }
        try self.posix.mkdir(path)
    }

    func listDirectory(_ path: String) throws(FileIOError) -> [String] {
        if self.state.withLock({ $0.crashed }) { throw self.crashedError("opendir", path) }
        return try self.posix.listDirectory(path)
    }

    /// Cuts the power: from now on every call fails; each file is rewritten as a crash could have left it.
    /// Returns how many bytes of unsynced writes were lost in all.
    @discardableResult
    func powerLoss<R: RandomNumberGenerator>(using rng: inout R) throws -> Int {
        let files = self.state.withLock { state in
            state.crashed = true
            return state.files
        }
        var lost = 0
        for (path, model) in files where FileManager.default.fileExists(atPath: path) {
            var content = model.durable
            let kept = Int.random(in: 0...model.pending.count, using: &rng)
            for (index, operation) in model.pending.enumerated() {
                switch operation {
                case .truncate(let size) where index < kept:
                    content = Array(content.prefix(Int(size)))
                    if content.count < Int(size) { content += [UInt8](repeating: 0, count: Int(size) - content.count) }
                case .write(let offset, let bytes) where index <= kept:
                    // The first operation not kept whole is torn at a random byte (possibly all of it lost).
                    let length = index < kept ? bytes.count : Int.random(in: 0...bytes.count, using: &rng)
                    lost += bytes.count - length
                    let end = Int(offset) + length
                    if content.count < end { content += [UInt8](repeating: 0, count: end - content.count) }
                    content.replaceSubrange(Int(offset)..<end, with: bytes.prefix(length))
                case .write(_, let bytes):
                    lost += bytes.count
                case .truncate:
                    break
                }
            }
            try Data(content).write(to: URL(fileURLWithPath: path))
        }
        return lost
    }
}

@Suite("Simulated power loss")
struct PowerLossTests {
    /// Values the appenders tried to store, and the offset each acknowledged one got.
    final class Ledger: Sendable {
        private let state = Locked<(attempted: Set<String>, acknowledged: [Int64: String])>(([], [:]))
        func attempt(_ values: [String]) { self.state.withLock { $0.attempted.formUnion(values) } }
        func acknowledge(_ values: [String], base: Int64) {
            self.state.withLock { state in
                for (i, value) in values.enumerated() { state.acknowledged[base + Int64(i)] = value }
            }
        }
        var snapshot: (attempted: Set<String>, acknowledged: [Int64: String]) { self.state.withLock { $0 } }
    }

    static func record(_ value: String) -> LogRecord {
        LogRecord(
            key: buffer("k-\(value)"),
            headers: [LogHeader(name: "source_system", value: buffer("power-loss-test"))],
            value: buffer(#"{"event":"\#(value)","padding":"\#(String(repeating: "p", count: 40))"}"#),
            timestamp: 1_776_000_000_000
        )
    }

    static func value(of record: LogRecord) -> String? {
        guard let key = record.key else { return nil }
        return String(buffer: key).dropFirst(2).description
    }

    @Test(
        "after power loss at a random moment, recovery keeps every acknowledged record, in place, and nothing else",
        arguments: 0..<24
    )
    func powerLoss(seed: Int) async throws {
        var rng = SplitMix64(seed: UInt64(seed) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        try await withTemporaryDirectory { dir in
            let io = PowerLossFileIO()
            let compression: CompressionCodec = seed % 2 == 0 ? .lz4 : .none
            // Small segments and index intervals, so crashes land in rolls and index writes too; half the seeds
            // preallocate (zeros ahead of the last batch, cut at rolls), so crashes land in those as well, and half
            // of those zero the next segment ahead in a spare file renamed at each roll.
            var config = TopicLogConfig.test(
                segmentBytes: 2048, fsync: .always, compression: compression, indexIntervalBytes: 256,
                preallocateBytes: (seed / 2) % 2 == 0 ? 1024 : 0
            )
            config.spareSegment = (seed / 4) % 2 == 0
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger, io: io)
            let log = try await backend.openTopic(name: "t", config: config)
            let ledger = Ledger()
            let crashAfter = Int.random(in: 5...60, using: &rng)
            let writers = 4
            let batchSizes = (0..<writers).map { _ in Int.random(in: 1...8, using: &rng) }
            let crashSeed = rng.next()
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        for batch in 0..<200 {
                            let values = (0..<batchSizes[writer]).map { "w\(writer)-b\(batch)-r\($0)" }
                            ledger.attempt(values)
                            do {
                                // Odd writers append their records as batches of up to 3 encoded beforehand, in one
                                // write (as the broker's appender does): a crash may keep a prefix of those batches.
                                let result: AppendResult
                                if writer % 2 == 1 {
                                    let records = values.map(Self.record)
                                    let bodies = try stride(from: 0, to: records.count, by: 3).map { start in
                                        let part = Array(records[start..<min(start + 3, records.count)])
                                        return try log.encodeBody([try BatchCodec.storedRecords(part)])
                                    }
                                    result = try await MultiBatchAppendTests.append(log) { bodies }.get()
                                } else {
                                    result = try await log.append(values.map(Self.record))
                                }
                                ledger.acknowledge(values, base: result.baseOffset)
                            } catch {
                                return  // the power is off
                            }
                        }
                    }
                }
                group.addTask {
                    // Bounded: at most 5 s of waiting for enough acknowledgements.
                    for _ in 0..<5_000 where ledger.snapshot.acknowledged.count < crashAfter {
                        try? await Task.sleep(for: .milliseconds(1))
                    }
                    var crashRNG = SplitMix64(seed: crashSeed)
                    _ = try? io.powerLoss(using: &crashRNG)
                }
            }
            await backend.closeAll()
            #expect(!FileManager.default.fileExists(atPath: dir + "/t/" + cleanShutdownMarkerName))
            // With a spare, every roll renamed it into place (each segment after the first).
            let segments = try fileNames(dir + "/t").filter { $0.hasSuffix(".log") }.count
            if config.spareSegment && config.preallocateBytes > 0 {
                #expect(io.renames == segments - 1, "\(segments) segments, \(io.renames) spares renamed")
            } else {
                #expect(io.renames == 0)
            }

            let (attempted, acknowledged) = ledger.snapshot
            #expect(!acknowledged.isEmpty)
            let reopened = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let recovered = try await reopened.openTopic(name: "t", config: config)
            let records = try readAll(recovered, from: recovered.startOffset)
            #expect(records.map(\.offset) == Array(0..<recovered.endOffset), "a contiguous prefix from offset 0")
            var seen = Set<String>()
            for stored in records {
                let value = Self.value(of: stored.record)
                #expect(value.map { attempted.contains($0) } == true, "offset \(stored.offset) holds a record never sent")
                #expect(value.map { seen.insert($0).inserted } == true, "offset \(stored.offset) is a duplicate")
                if let value { #expect(stored.record == Self.record(value)) }
            }
            for (offset, value) in acknowledged {
                #expect(offset < recovered.endOffset, "acknowledged offset \(offset) lost")
                if offset < Int64(records.count) {
                    #expect(Self.value(of: records[Int(offset)].record) == value, "offset \(offset) changed")
                }
            }
            // The recovered log takes appends at its end.
            let next = try await recovered.append([Self.record("after")])
            #expect(next.baseOffset == Int64(records.count))
            await reopened.closeAll()
        }
    }
}
