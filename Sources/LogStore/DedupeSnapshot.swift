import Glibc
import NIOCore
import RawBytes

/// A topic's dedupe index as saved in `<topic dir>/dedupe.snapshot` (layout in docs/STORAGE.md, "Dedupe
/// snapshot"), with the log positions it covers.
///
/// `topicEnd`: every record of the topic below this offset had its dedupe key applied to the index before the
/// snapshot was taken; `quarantineEnd` likewise for `__quarantine`. Recovery loads the snapshot and rebuilds the
/// rest by scanning both logs from there (docs/STORAGE.md, "Dedupe recovery"). The file is written atomically
/// (temp file, fsync, rename, directory fsync) and protected by a CRC-32C over all of it.
package struct DedupeSnapshot: Equatable, Sendable {
    /// One saved entry.
    package struct Entry: Equatable, Sendable {
        /// Digest of the dedupe key.
        package var digest: DedupeDigest
        /// What the index knew about it.
        package var entry: DedupeEntry
        /// Creates an entry.
        package init(digest: DedupeDigest, entry: DedupeEntry) {
            self.digest = digest
            self.entry = entry
        }
    }

    /// The snapshot file's name in the topic directory.
    package static let fileName = "dedupe.snapshot"
    /// The file magic, `"BRKDDDS1"` (brokerd dedupe snapshot, format 1).
    package static let magic: [UInt8] = Array("BRKDDDS1".utf8)
    /// Bytes before the first entry.
    package static let headerSize = 8 + 16 + 8 + 8 + 8 + 4
    /// Bytes of one entry.
    package static let entrySize = 16 + 8 + 1 + 8
    /// Bytes of the trailing CRC.
    package static let trailerSize = 4

    /// Every topic record below this offset is reflected in the entries.
    package var topicEnd: Int64
    /// Every `__quarantine` record below this offset is reflected in the entries.
    package var quarantineEnd: Int64
    /// When the snapshot was taken (ms since the epoch; informational).
    package var takenAtMillis: Int64
    /// The digest key of the index the entries come from.
    package var hashKey: DedupeHashKey
    /// The entries, oldest insertion first.
    package var entries: [Entry]

    /// Creates a snapshot.
    package init(
        topicEnd: Int64,
        quarantineEnd: Int64,
        takenAtMillis: Int64,
        hashKey: DedupeHashKey,
        entries: [Entry]
    ) {
        self.topicEnd = topicEnd
        self.quarantineEnd = quarantineEnd
        self.takenAtMillis = takenAtMillis
        self.hashKey = hashKey
        self.entries = entries
    }

    // MARK: Codec

    /// The file's bytes (docs/STORAGE.md "Dedupe snapshot").
    package func encode() -> ByteBuffer {
        Self.collect(self.streamer)
    }

    /// The bytes of a snapshot of `entries` (an index's entries at one moment), without building a
    /// ``DedupeSnapshot`` value first.
    package static func encode(
        entries: DedupeEntries, hashKey: DedupeHashKey, topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64
    ) -> ByteBuffer {
        Self.collect(
            Self.streamer(
                entries: entries, hashKey: hashKey, topicEnd: topicEnd, quarantineEnd: quarantineEnd,
                takenAtMillis: takenAtMillis
            )
        )
    }

    /// Hands a snapshot's bytes, piece by piece, to the `emit` it is called with (`stream`).
    private typealias Streamer = ((UnsafeRawBufferPointer) throws -> Void) throws -> Void

    /// This snapshot's bytes, piece by piece.
    private var streamer: Streamer {
        { emit in
            try Self.stream(
                topicEnd: self.topicEnd, quarantineEnd: self.quarantineEnd, takenAtMillis: self.takenAtMillis,
                hashKey: self.hashKey, count: self.entries.count,
                entries: { write in for saved in self.entries { try write(saved.digest, saved.entry) } }, emit: emit
            )
        }
    }

    /// The bytes of a snapshot of `entries`, piece by piece.
    private static func streamer(
        entries: DedupeEntries, hashKey: DedupeHashKey, topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64
    ) -> Streamer {
        { emit in
            try Self.stream(
                topicEnd: topicEnd, quarantineEnd: quarantineEnd, takenAtMillis: takenAtMillis, hashKey: hashKey,
                count: entries.count, entries: { try entries.forEach($0) }, emit: emit
            )
        }
    }

    /// The pieces `stream` gives, in one buffer.
    private static func collect(_ stream: Streamer) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: 0)
        // This `emit` does not throw; `stream` throws otherwise only when no memory is left for its 4 MiB buffer,
        // and a snapshot built whole in memory has nowhere to go then either.
        try! stream { buffer.writeBytes($0) }
        return buffer
    }

    /// Encodes a snapshot (header, `count` entries from `entries`, which must yield exactly `count`, CRC) and hands
    /// its bytes to `emit` in order, in pieces of `writePieceBytes` (the last one shorter, ending with the CRC),
    /// all from one buffer of that size. Built whole, a snapshot of 3 M keys took a fresh 100 MB buffer, whose pages
    /// the kernel zeroed, every time (perf, policy-overhead's policy half: 2.7% of all CPU time). Rethrows what
    /// `emit` throws.
    private static func stream(
        topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64, hashKey: DedupeHashKey, count: Int,
        entries: ((DedupeDigest, DedupeEntry) throws -> Void) throws -> Void,
        emit: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        var pieces = try Pieces(size: Self.writePieceBytes)
        defer { pieces.deallocate() }
        pieces.put(Self.headerSize) { writer in
            Self.magic.withUnsafeBytes { writer.put($0) }
            writer.put(hashKey.k0)
            writer.put(hashKey.k1)
            writer.put(topicEnd)
            writer.put(quarantineEnd)
            writer.put(takenAtMillis)
            writer.put(UInt32(count))
        }
        var written = 0
        // `emit` does not escape: `entries` calls the closure below only before it returns.
        try withoutActuallyEscaping(emit) { emit in
            try entries { digest, entry in
                pieces.put(Self.entrySize) { writer in
                    writer.put(digest.first)
                    writer.put(digest.second)
                    writer.put(entry.offset)
                    writer.put(entry.location.rawValue)
                    writer.put(entry.expiresAtMillis)
                }
                written += 1
                try pieces.emitFull(emit)
            }
        }
        precondition(written == count, "dedupe snapshot entries differ from count")
        try pieces.finish(emit)
    }

    /// The buffer `stream` encodes into: a piece of `size` bytes, then room for what crosses its end (one entry at
    /// most, or the CRC), carried to the front when the piece is handed on.
    private struct Pieces {
        let size: Int
        let buffer: UnsafeMutableRawBufferPointer
        /// Bytes in the buffer.
        var used = 0
        /// The CRC-32C of the bytes handed on so far.
        var crc: UInt32 = 0

        /// The buffer is a mapping of its own, not `malloc`'s: a free of 4 MiB from `malloc` raises glibc's
        /// threshold for using mappings to 4 MiB (and for trimming its heap to 8 MiB), and the broker's large
        /// buffers (a stalled subscriber's unsent deliveries) then stay in its resident memory after they are
        /// freed (many-connections: 1.6–2.0 MB per stalled subscriber instead of 0.2–0.3). Only the pages a
        /// snapshot writes become resident.
        /// Throws `.storageFailure` when the kernel gives no memory for it (the snapshot is then not written; the
        /// gate logs it and keeps retention at the previous one).
        init(size: Int) throws(LogStoreError) {
            self.size = size
            let room = size + DedupeSnapshot.headerSize + DedupeSnapshot.entrySize
            guard let memory = mmap(nil, room, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                memory != MAP_FAILED
            else {
                throw LogStoreError(
                    .storageFailure, "dedupe snapshot: no memory for its \(room)-byte buffer (errno \(errno))"
                )
            }
            self.buffer = UnsafeMutableRawBufferPointer(start: memory, count: room)
        }

        func deallocate() { munmap(self.buffer.baseAddress, self.buffer.count) }

        /// Writes `count` bytes with `body` (there is always room for a header or an entry: `emitFull` runs after
        /// each entry).
        mutating func put(_ count: Int, _ body: (inout RawWriter) -> Void) {
            let region = UnsafeMutableRawBufferPointer(rebasing: self.buffer[self.used..<(self.used + count)])
            var writer = RawWriter(region)
            body(&writer)
            precondition(writer.position == count, "dedupe snapshot field sizes")
            self.used += count
        }

        /// Hands on the piece once it is full, keeping what crosses its end.
        mutating func emitFull(_ emit: (UnsafeRawBufferPointer) throws -> Void) throws {
            guard self.used >= self.size else { return }
            let piece = UnsafeRawBufferPointer(rebasing: self.buffer[..<self.size])
            self.crc = CRC32C.update(self.crc, piece)
            try emit(piece)
            let rest = self.used - self.size
            self.buffer.baseAddress!.copyMemory(from: self.buffer.baseAddress! + self.size, byteCount: rest)
            self.used = rest
        }

        /// Appends the CRC and hands on the rest.
        mutating func finish(_ emit: (UnsafeRawBufferPointer) throws -> Void) throws {
            self.crc = CRC32C.update(self.crc, UnsafeRawBufferPointer(rebasing: self.buffer[..<self.used]))
            let crc = self.crc
            self.put(DedupeSnapshot.trailerSize) { $0.put(crc) }
            try emit(UnsafeRawBufferPointer(rebasing: self.buffer[..<self.used]))
            self.used = 0
        }
    }

    package static func decode(_ content: ByteBuffer, path: String) throws(LogStoreError) -> DedupeSnapshot {
        func corrupt(_ problem: String) -> LogStoreError {
            LogStoreError(.corruptBatch, "dedupe snapshot \(path) is corrupt: \(problem)")
        }
        var buffer = content
        let size = buffer.readableBytes
        guard size >= Self.headerSize + Self.trailerSize else {
            throw corrupt("\(size) bytes, shorter than header and CRC (\(Self.headerSize + Self.trailerSize))")
        }
        guard buffer.readBytes(length: 8) == Self.magic else { throw corrupt("bad magic") }
        let stored = content.getInteger(at: content.readerIndex + size - Self.trailerSize, as: UInt32.self)!
        let computed = content.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[..<(size - Self.trailerSize)]))
        }
        guard stored == computed else {
            throw corrupt(
                "CRC mismatch (stored 0x\(String(stored, radix: 16)), computed 0x\(String(computed, radix: 16)))"
            )
        }
        let (k0, k1) = buffer.readMultipleIntegers(as: (UInt64, UInt64).self)!
        let (topicEnd, quarantineEnd, takenAt) = buffer.readMultipleIntegers(as: (Int64, Int64, Int64).self)!
        let count = Int(buffer.readInteger(as: UInt32.self)!)
        guard size == Self.headerSize + count * Self.entrySize + Self.trailerSize else {
            throw corrupt("\(size) bytes do not hold \(count) entries")
        }
        guard topicEnd >= 0, quarantineEnd >= 0 else {
            throw corrupt("negative covered offsets \(topicEnd), \(quarantineEnd)")
        }
        var entries: [Entry] = []
        entries.reserveCapacity(count)
        for i in 0..<count {
            let (first, second, offset, rawLocation, expiresAt) = buffer.readMultipleIntegers(
                as: (UInt64, UInt64, Int64, UInt8, Int64).self
            )!
            guard let location = DedupeLocation(rawValue: rawLocation) else {
                throw corrupt("entry \(i) has unknown location \(rawLocation)")
            }
            entries.append(
                Entry(
                    digest: DedupeDigest(first: first, second: second),
                    entry: DedupeEntry(offset: offset, location: location, expiresAtMillis: expiresAt)
                )
            )
        }
        return DedupeSnapshot(
            topicEnd: topicEnd,
            quarantineEnd: quarantineEnd,
            takenAtMillis: takenAt,
            hashKey: DedupeHashKey(k0: k0, k1: k1),
            entries: entries
        )
    }

    // MARK: Files

    /// Atomically replaces `<directory>/dedupe.snapshot`: writes `dedupe.snapshot.tmp`, fsyncs it, renames it over
    /// the old file and fsyncs the directory. On failure the previous snapshot (if any) is still in place.
    package func write(directory: String, io: any FileIO = PosixFileIO()) throws(LogStoreError) {
        try Self.write(directory: directory, io: io, stream: self.streamer)
    }

    /// ``write(directory:io:)`` for a snapshot of `entries` (an index's entries at one moment, as the server takes
    /// them), encoded piece by piece as the file is written: no copy of the whole snapshot in memory.
    package static func write(
        entries: DedupeEntries, hashKey: DedupeHashKey, topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64,
        directory: String, io: any FileIO = PosixFileIO()
    ) throws(LogStoreError) {
        try Self.write(
            directory: directory, io: io,
            stream: Self.streamer(
                entries: entries, hashKey: hashKey, topicEnd: topicEnd, quarantineEnd: quarantineEnd,
                takenAtMillis: takenAtMillis
            )
        )
    }

    /// `write` hands the snapshot to the file in pieces of this size, each on the device before the next.
    static let writePieceBytes = 4 << 20

    /// The largest direct I/O alignment `write` keeps: a page, the alignment of its piece buffer (a mapping).
    static let directIOMaxAlignment = 4096

    /// Writes the pieces `stream` gives to the temp file, each on the device before the next, so that the fsync
    /// does not push a whole snapshot (about 100 MB for 3 M keys) to the device at once, ahead of the logs'
    /// fdatasyncs that wait behind it; then fsync, rename, directory fsync.
    ///
    /// With direct I/O (where the file system has it, ``FileIO/enableDirectIO(_:maxAlignment:path:)``) each piece
    /// goes from the piece buffer to the device, not through the page cache: the kernel's copy of snapshots into
    /// the cache cost 0.12–0.16 µs of CPU per record in policy-overhead's policy half (perf, docs/benchmarks/HISTORY.md
    /// round 13), and the cache then held pages nobody reads. The last piece, whose size is not a multiple of the
    /// alignment, is written padded with zeros from a buffer of its own and the file cut back to its end.
    /// Buffered, each whole piece is written out (`writeOut`) instead.
    private static func write(
        directory: String, io: any FileIO, stream: Streamer
    ) throws(LogStoreError) {
        let path = directory + "/" + Self.fileName
        let temp = path + ".tmp"
        do {
            // Owner-only: the file holds the secret digest key. A leftover temp file may have other permissions.
            try? io.unlink(temp)
            let fd = try io.open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            do {
                let alignment = io.enableDirectIO(fd, maxAlignment: Self.directIOMaxAlignment, path: temp)
                var at: Int64 = 0
                try stream { piece in
                    if alignment == 0 {
                        try io.writeAll(fd, piece, at: at, path: temp)
                        if piece.count == Self.writePieceBytes {
                            try io.writeOut(fd, offset: at, count: Int64(piece.count), path: temp)
                        }
                    } else {
                        try Self.writeDirect(piece, at: at, alignment: alignment, fd: fd, io: io, path: temp)
                    }
                    at += Int64(piece.count)
                }
                if alignment != 0 && at % Int64(alignment) != 0 { try io.ftruncate(fd, to: at, path: temp) }
                try io.fsync(fd, path: temp)
                try io.close(fd, path: temp)
            } catch {
                try? io.close(fd, path: temp)
                throw error
            }
            try io.rename(temp, to: path)
        } catch {
            try? io.unlink(temp)
            throw LogStoreError(.storageFailure, "writing dedupe snapshot \(path) failed: \(error)")
        }
        do {
            try io.syncDirectory(directory)
        } catch {
            throw LogStoreError(.storageFailure, "dedupe snapshot \(path): directory fsync failed: \(error)")
        }
    }

    /// One piece to a file with direct I/O at `at`, a multiple of `alignment`: as it lies when its address and
    /// size keep the alignment (the whole pieces: the piece buffer is a mapping, pieces are 4 MiB), otherwise
    /// copied into a zeroed buffer of its size rounded up (the last piece, after which the caller cuts the file
    /// back to the piece's end). `stream` gives at most one such piece, its last.
    private static func writeDirect(
        _ piece: UnsafeRawBufferPointer, at: Int64, alignment: Int, fd: Int32, io: any FileIO, path: String
    ) throws(FileIOError) {
        precondition(at % Int64(alignment) == 0, "only a snapshot's last piece may end unaligned")
        if Int(bitPattern: piece.baseAddress) % alignment == 0 && piece.count % alignment == 0 {
            try io.writeAll(fd, piece, at: at, path: path)
            return
        }
        let padded = (piece.count + alignment - 1) / alignment * alignment
        // A mapping: page-aligned and zeroed.
        guard let memory = mmap(nil, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            memory != MAP_FAILED
        else {
            throw FileIOError(operation: "mmap (\(padded) bytes for the last piece)", path: path, errno: errno)
        }
        defer { munmap(memory, padded) }
        if let base = piece.baseAddress { memory.copyMemory(from: base, byteCount: piece.count) }
        try io.writeAll(fd, UnsafeRawBufferPointer(start: memory, count: padded), at: at, path: path)
    }

    /// Reads `<directory>/dedupe.snapshot`: nil when there is none, the snapshot when it is intact, and
    /// `.corruptBatch` when it is damaged (the caller then rebuilds from the logs).
    package static func load(directory: String, io: any FileIO = PosixFileIO()) throws(LogStoreError)
        -> DedupeSnapshot?
    {
        let path = directory + "/" + Self.fileName
        let fd: Int32
        do {
            fd = try io.open(path, flags: O_RDONLY, mode: 0)
        } catch {
            if error.errno == ENOENT { return nil }
            throw LogStoreError(.storageFailure, "reading dedupe snapshot failed: \(error)")
        }
        defer { try? io.close(fd, path: path) }
        var content = ByteBuffer()
        do {
            let size = Int(try io.fileSize(fd, path: path))
            content.reserveCapacity(size)
            var failure: FileIOError?
            let read = content.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
                do throws(FileIOError) {
                    return try io.readFully(
                        fd,
                        into: UnsafeMutableRawBufferPointer(rebasing: raw[..<size]),
                        at: 0,
                        path: path
                    )
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            guard read == size else {
                throw FileIOError(operation: "pread (short read, \(read) of \(size) bytes)", path: path, errno: 0)
            }
        } catch {
            throw LogStoreError(.storageFailure, "reading dedupe snapshot failed: \(error)")
        }
        return try Self.decode(content, path: path)
    }
}

extension DedupeIndex {
    /// The index as a snapshot covering the logs below `topicEnd` and `quarantineEnd`. Only the caller knows
    /// those: they must be positions whose every record's key was already applied to this index.
    package func snapshot(topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64) -> DedupeSnapshot {
        DedupeSnapshot(
            topicEnd: topicEnd,
            quarantineEnd: quarantineEnd,
            takenAtMillis: takenAtMillis,
            hashKey: self.hashKey,
            entries: self.entriesInInsertionOrder.map { DedupeSnapshot.Entry(digest: $0.digest, entry: $0.entry) }
        )
    }

    /// An index holding the snapshot's live entries (same hash key, same insertion order). Entries already
    /// expired at `nowMillis` are skipped; if the snapshot holds more than `maxKeys` live entries (the bound was
    /// lowered), the oldest are evicted and returned so the caller can log and count them.
    package static func restoring(
        _ snapshot: DedupeSnapshot,
        windowMillis: Int64,
        maxKeys: Int,
        nowMillis: Int64
    ) throws(LogStoreError) -> (index: DedupeIndex, evictions: [DedupeEviction]) {
        var index = try DedupeIndex(windowMillis: windowMillis, maxKeys: maxKeys, hashKey: snapshot.hashKey)
        var evictions: [DedupeEviction] = []
        for saved in snapshot.entries {
            if let eviction = index.insert(digest: saved.digest, entry: saved.entry, nowMillis: nowMillis) {
                evictions.append(eviction)
            }
        }
        return (index, evictions)
    }
}
