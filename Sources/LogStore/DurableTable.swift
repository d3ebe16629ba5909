import Glibc
import Locking
import Logging
import NIOCore

/// A small durable map `String → [UInt8]` in one append-only file (layout in docs/STORAGE.md, "Durable table").
///
/// Every change is one CRC-protected entry holding one or more operations (put or delete); `put`, `delete` and
/// `apply` write the entry and fdatasync it before they return, and only then change the in-memory map, so `get`
/// never answers a value that is not durable. A batch (`apply` / `put(_:)` of several entries) is one entry, so it
/// is applied whole or not at all after a crash, with a single fdatasync.
///
/// Opening replays the file and truncates a torn or corrupt tail (logged as a warning with the file, position,
/// bytes cut and reason). A file that does not start with the table's magic is refused, never truncated. The file
/// is compacted (live entries to `<path>.compact`, fsync, rename, directory fsync) once it is larger than
/// `compactionFactor` times its live size and at least `compactionMinimumBytes`. A failed write or sync puts the
/// table in a failed state: later changes fail with that error; `get` keeps answering the last durable values.
///
/// Thread-safe. Changes are serialised (the file lock is held across write and fdatasync); reads only take the
/// value lock, so they never wait for an fdatasync.
package final class DurableTable: Sendable {
    /// One change of a batch.
    package enum Change: Equatable, Sendable {
        /// Sets `key` to `value`.
        case put(key: String, value: [UInt8])
        /// Removes `key` (a no-op for the map if it is absent, but still written).
        case delete(key: String)

        /// The key the change is about.
        package var key: String {
            switch self {
            case .put(let key, _), .delete(let key): return key
            }
        }
    }

    private struct FileState {
        var fd: Int32
        /// Bytes of valid content (the header and complete entries).
        var size: Int64
        /// Bytes a compacted file would have: the header plus one single-operation entry per live key.
        var liveBytes: Int64
        var failure: LogStoreError?
    }

    /// The file magic, `"BRKDTBL1"`: identifies a durable table file and its format version.
    package static let magic: [UInt8] = Array("BRKDTBL1".utf8)
    /// Size of the file header (the magic).
    package static let fileHeaderSize = 8
    /// Size of the fixed entry header (payload length and CRC).
    package static let entryHeaderSize = 8
    /// Longest key, in UTF-8 bytes.
    package static let maxKeyBytes = 256 * 1024
    /// Longest value, in bytes.
    package static let maxValueBytes = 16 * 1024 * 1024
    /// Largest entry payload (one batch); larger batches are refused with `.tooLarge`.
    package static let maxPayloadBytes = 64 * 1024 * 1024
    /// Most operations in one entry.
    package static let maxOperations = Int(UInt16.max)

    /// Operation code of a put.
    static let putCode: UInt8 = 1
    /// Operation code of a delete.
    static let deleteCode: UInt8 = 2

    /// The table file.
    package let path: String
    /// What the table is called in log lines and errors ("offset store", "durable table").
    package let label: String
    private let directory: String
    private let io: any FileIO
    private let logger: Logger
    private let compactionMinimumBytes: Int64
    private let compactionFactor: Int64
    private let file: Locked<FileState>
    private let values: Locked<[String: [UInt8]]>

    /// Opens (or creates) the table file at `path`, recovering from a torn tail.
    /// - Parameters:
    ///   - logger: where recovery, compaction and failures are reported.
    ///   - io: the file-system seam.
    ///   - compactionMinimumBytes: the file is never compacted below this size.
    ///   - compactionFactor: the file is compacted when larger than this many times its live size (at least 2).
    ///   - label: what the table is called in log lines and errors.
    package init(
        path: String,
        label: String = "durable table",
        logger: Logger,
        io: any FileIO = PosixFileIO(),
        compactionMinimumBytes: Int64 = 64 * 1024,
        compactionFactor: Int64 = 4
    ) throws(LogStoreError) {
        guard compactionFactor >= 2 else {
            throw LogStoreError(.invalidArgument, "\(label) \(path): compactionFactor \(compactionFactor) < 2")
        }
        self.path = path
        self.label = label
        self.directory = parentDirectory(of: path)
        self.io = io
        self.logger = logger
        self.compactionMinimumBytes = compactionMinimumBytes
        self.compactionFactor = compactionFactor
        var state = FileState(fd: -1, size: 0, liveBytes: Int64(Self.fileHeaderSize))
        var values: [String: [UInt8]] = [:]
        do {
            try? io.unlink(path + ".compact")
            state.fd = try io.open(path, flags: O_RDWR | O_CREAT, mode: 0o644)
            let content = try Self.readWholeFile(state.fd, path: path, io: io)
            let size = Int64(content.readableBytes)
            if try Self.needsHeader(content, path: path) {
                // New file, or a creation torn inside the header: start it (again) with a durable header.
                if size > 0 {
                    logger.warning(
                        "\(label): rewriting a torn file header",
                        metadata: ["brokerd.file": "\(path)", "brokerd.bytes_cut": "\(size)"]
                    )
                }
                try io.ftruncate(state.fd, to: 0, path: path)
                try io.writeAll(state.fd, ByteBuffer(bytes: Self.magic), at: 0, path: path)
                try io.fdatasync(state.fd, path: path)
                state.size = Int64(Self.fileHeaderSize)
            } else {
                var body = content
                body.moveReaderIndex(forwardBy: Self.fileHeaderSize)
                let (validEnd, problem) = Self.replay(body, into: &values)
                if validEnd < size {
                    logger.warning(
                        "\(label): truncating torn or corrupt tail",
                        metadata: [
                            "brokerd.file": "\(path)", "brokerd.position": "\(validEnd)",
                            "brokerd.bytes_cut": "\(size - validEnd)", "brokerd.reason": "\(problem ?? "?")",
                        ]
                    )
                    try io.ftruncate(state.fd, to: validEnd, path: path)
                    try io.fdatasync(state.fd, path: path)
                }
                state.size = validEnd
            }
            state.liveBytes += values.reduce(0) { $0 + Self.singleEntrySize(key: $1.key, valueCount: $1.value.count) }
            try io.syncDirectory(self.directory)
        } catch let error as LogStoreError {
            if state.fd >= 0 { try? io.close(state.fd, path: path) }
            throw error
        } catch {
            if state.fd >= 0 { try? io.close(state.fd, path: path) }
            throw LogStoreError(.storageFailure, "opening \(label) \(path) failed: \(error)")
        }
        self.file = Locked(state)
        self.values = Locked(values)
        self.file.withLock { state in self.compactIfDue(&state) }
    }

    deinit {
        let fd = self.file.withLock { $0.fd }
        try? self.io.close(fd, path: self.path)
    }

    // MARK: Reading

    /// The value of `key`, if any.
    package func get(_ key: String) -> [UInt8]? {
        self.values.withLock { $0[key] }
    }

    /// Number of keys.
    package var count: Int {
        self.values.withLock { $0.count }
    }

    /// A copy of the whole map.
    package func snapshot() -> [String: [UInt8]] {
        self.values.withLock { $0 }
    }

    /// The keys starting with `prefix` and their values, sorted by key.
    package func entries(withPrefix prefix: String) -> [(key: String, value: [UInt8])] {
        self.values.withLock { values in
            values.filter { $0.key.hasPrefix(prefix) }.map { (key: $0.key, value: $0.value) }
        }.sorted { $0.key < $1.key }
    }

    /// The current file size in bytes (header and entries), for tests and metrics.
    package var fileBytes: Int64 {
        self.file.withLock { $0.size }
    }

    // MARK: Changing

    /// Durably sets `key` to `value` (fdatasynced before it returns).
    package func put(_ key: String, _ value: [UInt8]) throws(LogStoreError) {
        try self.apply([.put(key: key, value: value)])
    }

    /// Durably sets several keys with one entry and one fdatasync; after a crash either all or none are set.
    package func put(_ entries: [(key: String, value: [UInt8])]) throws(LogStoreError) {
        try self.apply(entries.map { .put(key: $0.key, value: $0.value) })
    }

    /// Durably removes `key` (fdatasynced before it returns).
    package func delete(_ key: String) throws(LogStoreError) {
        try self.apply([.delete(key: key)])
    }

    /// Durably applies `changes` in order as one entry with one fdatasync: after a crash either all or none are
    /// applied. An empty list does nothing.
    package func apply(_ changes: [Change]) throws(LogStoreError) {
        guard !changes.isEmpty else { return }
        let entry = try Self.encodeEntry(changes, path: self.path)
        try self.file.withLock { (state: inout FileState) throws(LogStoreError) in
            if let failure = state.failure { throw failure }
            do {
                try self.io.writeAll(state.fd, entry, at: state.size, path: self.path)
                try self.io.fdatasync(state.fd, path: self.path)
            } catch {
                try? self.io.ftruncate(state.fd, to: state.size, path: self.path)
                let failure = LogStoreError(.storageFailure, "\(self.label) \(self.path): write failed: \(error)")
                state.failure = failure
                self.logger.error(
                    "\(self.label) failed; refusing changes until reopened",
                    metadata: ["brokerd.file": "\(self.path)", "brokerd.error": "\(error)"]
                )
                throw failure
            }
            state.size += Int64(entry.readableBytes)
            let delta = self.values.withLock { values in
                var delta: Int64 = 0
                for change in changes {
                    switch change {
                    case .put(let key, let value):
                        if let old = values.updateValue(value, forKey: key) {
                            delta -= Self.singleEntrySize(key: key, valueCount: old.count)
                        }
                        delta += Self.singleEntrySize(key: key, valueCount: value.count)
                    case .delete(let key):
                        if let old = values.removeValue(forKey: key) {
                            delta -= Self.singleEntrySize(key: key, valueCount: old.count)
                        }
                    }
                }
                return delta
            }
            state.liveBytes += delta
            self.compactIfDue(&state)
        }
    }

    // MARK: Format

    /// Size of an entry holding one put of `key` with a value of `valueCount` bytes.
    static func singleEntrySize(key: String, valueCount: Int) -> Int64 {
        Int64(Self.entryHeaderSize + 2 + 1 + 4 + key.utf8.count + 4 + valueCount)
    }

    /// Encodes one entry: payload length, CRC-32C of the payload, payload (operation count, operations).
    package static func encodeEntry(_ changes: [Change], path: String = "") throws(LogStoreError) -> ByteBuffer {
        guard changes.count <= Self.maxOperations else {
            throw LogStoreError(
                .tooLarge,
                "durable table \(path): \(changes.count) changes in one batch, limit \(Self.maxOperations)"
            )
        }
        var payloadBytes = 2
        for change in changes {
            let keyBytes = change.key.utf8.count
            guard keyBytes <= Self.maxKeyBytes else {
                throw LogStoreError(
                    .invalidArgument,
                    "durable table \(path): key of \(keyBytes) bytes, limit \(Self.maxKeyBytes)"
                )
            }
            payloadBytes += 1 + 4 + keyBytes
            if case .put(_, let value) = change {
                guard value.count <= Self.maxValueBytes else {
                    throw LogStoreError(
                        .tooLarge,
                        "durable table \(path): value of \(value.count) bytes for key '\(change.key)', "
                            + "limit \(Self.maxValueBytes)"
                    )
                }
                payloadBytes += 4 + value.count
            }
        }
        guard payloadBytes <= Self.maxPayloadBytes else {
            throw LogStoreError(
                .tooLarge,
                "durable table \(path): batch of \(payloadBytes) bytes, limit \(Self.maxPayloadBytes)"
            )
        }
        var entry = ByteBufferAllocator().buffer(capacity: Self.entryHeaderSize + payloadBytes)
        entry.writeInteger(UInt32(payloadBytes))
        entry.writeInteger(UInt32(0))  // CRC, filled in below
        entry.writeInteger(UInt16(changes.count))
        for change in changes {
            switch change {
            case .put(let key, let value):
                entry.writeInteger(Self.putCode)
                entry.writeInteger(UInt32(key.utf8.count))
                entry.writeString(key)
                entry.writeInteger(UInt32(value.count))
                entry.writeBytes(value)
            case .delete(let key):
                entry.writeInteger(Self.deleteCode)
                entry.writeInteger(UInt32(key.utf8.count))
                entry.writeString(key)
            }
        }
        let crc = entry.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[Self.entryHeaderSize...]))
        }
        entry.setInteger(crc, at: 4)
        return entry
    }

    /// Decodes one entry's payload (after its CRC was checked); nil when it is malformed.
    static func decodePayload(_ payload: ByteBuffer) -> [Change]? {
        var payload = payload
        guard let count = payload.readInteger(as: UInt16.self), count >= 1 else { return nil }
        var changes: [Change] = []
        changes.reserveCapacity(Int(count))
        for _ in 0..<count {
            guard let code = payload.readInteger(as: UInt8.self),
                let keyLength = payload.readInteger(as: UInt32.self), keyLength <= UInt32(Self.maxKeyBytes),
                let key = payload.readString(length: Int(keyLength))
            else { return nil }
            switch code {
            case Self.putCode:
                guard let valueLength = payload.readInteger(as: UInt32.self),
                    valueLength <= UInt32(Self.maxValueBytes),
                    let value = payload.readBytes(length: Int(valueLength))
                else { return nil }
                changes.append(.put(key: key, value: value))
            case Self.deleteCode:
                changes.append(.delete(key: key))
            default:
                return nil
            }
        }
        return payload.readableBytes == 0 ? changes : nil
    }

    /// True when the file is empty or holds only a prefix of the magic (a creation torn before its sync); throws
    /// when it is not a durable table file, so a wrong path is never truncated.
    private static func needsHeader(_ content: ByteBuffer, path: String) throws(LogStoreError) -> Bool {
        let head = content.getBytes(at: content.readerIndex, length: min(content.readableBytes, Self.fileHeaderSize))!
        guard head == Array(Self.magic.prefix(head.count)) else {
            throw LogStoreError(
                .corruptBatch,
                "durable table \(path): the file does not start with the magic \"BRKDTBL1\"; refusing to touch it"
            )
        }
        return head.count < Self.fileHeaderSize
    }

    /// Applies every valid entry of `body` (the file after its header); returns the file position where the valid
    /// prefix ends and why it ends there.
    private static func replay(_ body: ByteBuffer, into values: inout [String: [UInt8]]) -> (Int64, String?) {
        var buffer = body
        func position() -> Int64 { Int64(Self.fileHeaderSize + buffer.readerIndex - body.readerIndex) }
        while buffer.readableBytes > 0 {
            let start = position()
            guard let (length, crc) = buffer.readMultipleIntegers(as: (UInt32, UInt32).self) else {
                return (start, "torn entry header")
            }
            guard length >= 2 + 1 + 4, length <= UInt32(Self.maxPayloadBytes) else {
                return (start, "entry length \(length) out of range")
            }
            guard let payload = buffer.readSlice(length: Int(length)) else {
                return (start, "torn entry of \(length) bytes")
            }
            guard payload.withUnsafeReadableBytes({ CRC32C.checksum($0) }) == crc else {
                return (start, "CRC mismatch")
            }
            guard let changes = Self.decodePayload(payload) else {
                return (start, "malformed entry payload")
            }
            for change in changes {
                switch change {
                case .put(let key, let value): values[key] = value
                case .delete(let key): values[key] = nil
                }
            }
        }
        return (position(), nil)
    }

    private static func readWholeFile(_ fd: Int32, path: String, io: any FileIO) throws -> ByteBuffer {
        let size = Int(try io.fileSize(fd, path: path))
        var content = ByteBufferAllocator().buffer(capacity: size)
        var readFailure: FileIOError?
        content.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            do throws(FileIOError) {
                return try io.readFully(
                    fd,
                    into: UnsafeMutableRawBufferPointer(rebasing: raw[..<size]),
                    at: 0,
                    path: path
                )
            } catch {
                readFailure = error
                return 0
            }
        }
        if let readFailure { throw readFailure }
        return content
    }

    // MARK: Compaction

    private func compactionDue(_ state: FileState) -> Bool {
        state.failure == nil && state.size > max(self.compactionFactor * state.liveBytes, self.compactionMinimumBytes)
    }

    /// Rewrites the file with only the live entries when due. A failure before the rename keeps the old file in
    /// use; after it, the table enters the failed state.
    private func compactIfDue(_ state: inout FileState) {
        guard self.compactionDue(state) else { return }
        let values = self.values.withLock { $0 }
        var content = ByteBufferAllocator().buffer(capacity: Int(state.liveBytes))
        content.writeBytes(Self.magic)
        for key in values.keys.sorted() {
            // Each single put was accepted before, so it cannot exceed a limit now.
            guard var entry = try? Self.encodeEntry([.put(key: key, value: values[key]!)], path: self.path) else {
                continue
            }
            content.writeBuffer(&entry)
        }
        let live = Int64(content.readableBytes)
        let temp = self.path + ".compact"
        do {
            let fd = try self.io.open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
            do {
                try self.io.writeAll(fd, content, at: 0, path: temp)
                try self.io.fsync(fd, path: temp)
                try self.io.close(fd, path: temp)
            } catch {
                try? self.io.close(fd, path: temp)
                throw error
            }
            try self.io.rename(temp, to: self.path)
        } catch {
            try? self.io.unlink(temp)
            self.logger.error(
                "\(self.label) compaction failed; keeping the old file",
                metadata: ["brokerd.file": "\(self.path)", "brokerd.error": "\(error)"]
            )
            return
        }
        do {
            try self.io.syncDirectory(self.directory)
            let fd = try self.io.open(self.path, flags: O_RDWR, mode: 0)
            try? self.io.close(state.fd, path: self.path)
            state.fd = fd
            state.size = live
            state.liveBytes = live
            self.logger.debug(
                "\(self.label) compacted",
                metadata: ["brokerd.file": "\(self.path)", "brokerd.bytes": "\(live)"]
            )
        } catch {
            state.failure = LogStoreError(.storageFailure, "\(self.label) \(self.path): after compaction: \(error)")
            self.logger.error(
                "\(self.label) failed after compaction",
                metadata: ["brokerd.file": "\(self.path)", "brokerd.error": "\(error)"]
            )
        }
    }
}
