import Glibc
import Logging
import NIOCore
import Synchronization

/// Durable committed offsets of consumer groups, keyed by (group, topic).
///
/// An append-only file of CRC-protected entries (layout in docs/STORAGE.md, "Offset store"); every commit is
/// written and fdatasynced before `commit` returns. Opening replays the file, truncating a torn or corrupt tail,
/// and the file is compacted (snapshot to a temp file, fsync, rename, directory fsync) once it is larger than
/// four times its live entries and at least `compactionMinimumBytes`. A failed write or sync puts the store in a
/// failed state: later commits fail; `committed` keeps answering from memory.
package final class OffsetStore: Sendable {
    private struct Key: Hashable, Sendable {
        var group: String
        var topic: String
    }

    private struct FileState {
        var fd: Int32
        var size: Int64
        /// Bytes a compacted file would have: one entry per key.
        var liveBytes: Int64 = 0
        var failure: LogStoreError?
    }

    /// Size of the fixed entry header (length and CRC).
    package static let entryHeaderSize = 8
    /// Longest group or topic name, in UTF-8 bytes.
    package static let maxNameBytes = Int(UInt16.max)

    /// The offsets file.
    package let path: String
    private let directory: String
    private let io: any FileIO
    private let logger: Logger
    private let compactionMinimumBytes: Int64
    private let file: Mutex<FileState>
    private let offsets: Mutex<[Key: Int64]>

    /// Opens (or creates) the offset file at `path`, recovering from a torn tail.
    package convenience init(path: String) throws(LogStoreError) {
        try self.init(path: path, logger: Logger(label: "brokerd.offsets"))
    }

    /// Opens (or creates) the offset file at `path`, recovering from a torn tail.
    /// - Parameters:
    ///   - logger: where recovery and failures are reported.
    ///   - io: the file-system seam.
    ///   - compactionMinimumBytes: the file is never compacted below this size.
    package init(
        path: String,
        logger: Logger,
        io: any FileIO = PosixFileIO(),
        compactionMinimumBytes: Int64 = 64 * 1024
    ) throws(LogStoreError) {
        self.path = path
        self.directory = parentDirectory(of: path)
        self.io = io
        self.logger = logger
        self.compactionMinimumBytes = compactionMinimumBytes
        var state = FileState(fd: -1, size: 0)
        var offsets: [Key: Int64] = [:]
        do {
            try? io.unlink(path + ".compact")
            state.fd = try io.open(path, flags: O_RDWR | O_CREAT, mode: 0o644)
            let size = try io.fileSize(state.fd, path: path)
            var content = ByteBufferAllocator().buffer(capacity: Int(size))
            var readFailure: FileIOError?
            let fd = state.fd
            content.writeWithUnsafeMutableBytes(minimumWritableBytes: Int(size)) { raw in
                do throws(FileIOError) {
                    return try io.readFully(
                        fd,
                        into: UnsafeMutableRawBufferPointer(rebasing: raw[..<Int(size)]),
                        at: 0,
                        path: path
                    )
                } catch {
                    readFailure = error
                    return 0
                }
            }
            if let readFailure { throw readFailure }
            let (validEnd, problem) = Self.replay(content, into: &offsets)
            if validEnd < size {
                logger.warning(
                    "offset store: truncating torn or corrupt tail",
                    metadata: [
                        "brokerd.file": "\(path)", "brokerd.position": "\(validEnd)",
                        "brokerd.bytes_cut": "\(size - validEnd)", "brokerd.reason": "\(problem ?? "?")",
                    ]
                )
                try io.ftruncate(state.fd, to: validEnd, path: path)
                try io.fdatasync(state.fd, path: path)
            }
            state.size = validEnd
            state.liveBytes = offsets.keys.reduce(0) { $0 + Self.entrySize($1) }
            try io.syncDirectory(self.directory)
        } catch {
            if state.fd >= 0 { try? io.close(state.fd, path: path) }
            throw LogStoreError(.storageFailure, "opening offset store failed: \(error)")
        }
        self.file = Mutex(state)
        self.offsets = Mutex(offsets)
        let snapshot = offsets
        self.file.withLock { state in self.compactIfNeeded(&state, offsets: snapshot) }
    }

    deinit {
        let (fd, path) = self.file.withLock { ($0.fd, self.path) }
        try? self.io.close(fd, path: path)
    }

    /// The committed next-offset for the group on the topic, if any.
    package func committed(group: String, topic: String) -> Int64? {
        self.offsets.withLock { $0[Key(group: group, topic: topic)] }
    }

    /// Durably records the group's next offset (fsynced before it returns). A lower offset than before is stored as
    /// given; the caller validates.
    package func commit(group: String, topic: String, offset: Int64) throws(LogStoreError) {
        guard group.utf8.count <= Self.maxNameBytes, topic.utf8.count <= Self.maxNameBytes else {
            throw LogStoreError(.invalidArgument, "group and topic names are limited to \(Self.maxNameBytes) bytes")
        }
        let key = Key(group: group, topic: topic)
        let entry = Self.encodeEntry(key, offset: offset)
        try self.file.withLock { (state: inout FileState) throws(LogStoreError) in
            if let failure = state.failure { throw failure }
            do {
                try self.io.writeAll(state.fd, entry, at: state.size, path: self.path)
                try self.io.fdatasync(state.fd, path: self.path)
            } catch {
                try? self.io.ftruncate(state.fd, to: state.size, path: self.path)
                let failure = LogStoreError(.storageFailure, "offset store: commit failed: \(error)")
                state.failure = failure
                self.logger.error(
                    "offset store failed; refusing commits until reopened",
                    metadata: ["brokerd.error": "\(error)"]
                )
                throw failure
            }
            state.size += Int64(entry.readableBytes)
            let isNew = self.offsets.withLock { offsets in offsets.updateValue(offset, forKey: key) == nil }
            if isNew { state.liveBytes += Int64(entry.readableBytes) }
            if self.compactionDue(state) {
                self.compactIfNeeded(&state, offsets: self.offsets.withLock { $0 })
            }
        }
    }

    private static func entrySize(_ key: Key) -> Int64 {
        Int64(Self.entryHeaderSize + 2 + key.group.utf8.count + 2 + key.topic.utf8.count + 8)
    }

    private func compactionDue(_ state: FileState) -> Bool {
        state.failure == nil && state.size > max(4 * state.liveBytes, self.compactionMinimumBytes)
    }

    /// Encodes one entry: length, CRC-32C of the payload, payload (group, topic, offset).
    package static func encodeEntry(group: String, topic: String, offset: Int64) -> ByteBuffer {
        self.encodeEntry(Key(group: group, topic: topic), offset: offset)
    }

    private static func encodeEntry(_ key: Key, offset: Int64) -> ByteBuffer {
        var payload = ByteBuffer()
        payload.writeInteger(UInt16(key.group.utf8.count))
        payload.writeString(key.group)
        payload.writeInteger(UInt16(key.topic.utf8.count))
        payload.writeString(key.topic)
        payload.writeInteger(offset)
        var entry = ByteBufferAllocator().buffer(capacity: Self.entryHeaderSize + payload.readableBytes)
        entry.writeInteger(UInt32(payload.readableBytes))
        entry.writeInteger(payload.withUnsafeReadableBytes { CRC32C.checksum($0) })
        entry.writeImmutableBuffer(payload)
        return entry
    }

    /// Applies every valid entry; returns where the valid prefix ends and why it ends there.
    private static func replay(_ content: ByteBuffer, into offsets: inout [Key: Int64]) -> (Int64, String?) {
        var buffer = content
        while buffer.readableBytes > 0 {
            let start = buffer.readerIndex
            guard let (length, crc) = buffer.readMultipleIntegers(as: (UInt32, UInt32).self) else {
                return (Int64(start), "torn entry header")
            }
            guard length >= 12, length <= UInt32(2 * (2 + Self.maxNameBytes) + 8) else {
                return (Int64(start), "entry length \(length) out of range")
            }
            guard var payload = buffer.readSlice(length: Int(length)) else {
                return (Int64(start), "torn entry of \(length) bytes")
            }
            guard payload.withUnsafeReadableBytes({ CRC32C.checksum($0) }) == crc else {
                return (Int64(start), "CRC mismatch")
            }
            guard let groupLength = payload.readInteger(as: UInt16.self),
                let group = payload.readString(length: Int(groupLength)),
                let topicLength = payload.readInteger(as: UInt16.self),
                let topic = payload.readString(length: Int(topicLength)),
                let offset = payload.readInteger(as: Int64.self),
                payload.readableBytes == 0
            else {
                return (Int64(start), "malformed entry payload")
            }
            offsets[Key(group: group, topic: topic)] = offset
        }
        return (Int64(buffer.readerIndex), nil)
    }

    /// Rewrites the file with only the live entries when it is more than 4x their size (and above the minimum).
    /// A failure before the rename leaves the old file in use; after it, the store enters the failed state.
    private func compactIfNeeded(_ state: inout FileState, offsets: [Key: Int64]) {
        guard self.compactionDue(state) else { return }
        var snapshot = ByteBuffer()
        for (key, offset) in offsets.sorted(by: { ($0.key.group, $0.key.topic) < ($1.key.group, $1.key.topic) }) {
            var entry = Self.encodeEntry(key, offset: offset)
            snapshot.writeBuffer(&entry)
        }
        let live = Int64(snapshot.readableBytes)
        let temp = self.path + ".compact"
        do {
            let fd = try self.io.open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
            do {
                try self.io.writeAll(fd, snapshot, at: 0, path: temp)
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
                "offset store compaction failed; keeping the old file",
                metadata: ["brokerd.error": "\(error)"]
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
                "offset store compacted",
                metadata: ["brokerd.file": "\(self.path)", "brokerd.bytes": "\(live)"]
            )
        } catch {
            state.failure = LogStoreError(.storageFailure, "offset store: after compaction: \(error)")
            self.logger.error("offset store failed after compaction", metadata: ["brokerd.error": "\(error)"])
        }
    }
}
