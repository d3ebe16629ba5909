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

    /// The file content.
    /// The file's bytes (docs/STORAGE.md "Dedupe snapshot").
    package func encode() -> ByteBuffer {
        Self.encode(
            topicEnd: self.topicEnd, quarantineEnd: self.quarantineEnd, takenAtMillis: self.takenAtMillis,
            hashKey: self.hashKey, count: self.entries.count
        ) { write in
            for saved in self.entries { write(saved.digest, saved.entry) }
        }
    }

    /// The bytes of a snapshot of `entries` (an index's entries at one moment), without building a
    /// ``DedupeSnapshot`` value first: what the server writes.
    package static func encode(
        entries: DedupeEntries, hashKey: DedupeHashKey, topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64
    ) -> ByteBuffer {
        Self.encode(
            topicEnd: topicEnd, quarantineEnd: quarantineEnd, takenAtMillis: takenAtMillis, hashKey: hashKey,
            count: entries.count
        ) { write in
            entries.forEach(write)
        }
    }

    /// Header, `count` entries from `entries` (which must yield exactly `count`), CRC.
    private static func encode(
        topicEnd: Int64, quarantineEnd: Int64, takenAtMillis: Int64, hashKey: DedupeHashKey, count: Int,
        entries: ((DedupeDigest, DedupeEntry) -> Void) -> Void
    ) -> ByteBuffer {
        let size = Self.headerSize + count * Self.entrySize + Self.trailerSize
        var buffer = ByteBufferAllocator().buffer(capacity: size)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size - Self.trailerSize) { raw in
            var writer = RawWriter(UnsafeMutableRawBufferPointer(rebasing: raw[..<(size - Self.trailerSize)]))
            Self.magic.withUnsafeBytes { writer.put($0) }
            writer.put(hashKey.k0)
            writer.put(hashKey.k1)
            writer.put(topicEnd)
            writer.put(quarantineEnd)
            writer.put(takenAtMillis)
            writer.put(UInt32(count))
            entries { digest, entry in
                writer.put(digest.first)
                writer.put(digest.second)
                writer.put(entry.offset)
                writer.put(entry.location.rawValue)
                writer.put(entry.expiresAtMillis)
            }
            precondition(writer.position == size - Self.trailerSize, "dedupe snapshot entries differ from count")
            return writer.position
        }
        buffer.writeInteger(buffer.withUnsafeReadableBytes { CRC32C.checksum($0) })
        return buffer
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
        try Self.write(self.encode(), directory: directory, io: io)
    }

    /// `write` hands the snapshot to the file in pieces of this size, each written out before the next.
    static let writePieceBytes = 4 << 20

    /// ``write(directory:io:)`` for bytes already encoded (the server encodes an index's ``DedupeEntries``).
    package static func write(_ content: ByteBuffer, directory: String, io: any FileIO = PosixFileIO())
        throws(LogStoreError)
    {
        let path = directory + "/" + Self.fileName
        let temp = path + ".tmp"
        do {
            // Owner-only: the file holds the secret digest key. A leftover temp file may have other permissions.
            try? io.unlink(temp)
            let fd = try io.open(temp, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
            do {
                // In pieces, each written out to the device before the next (`writeOut`), so that the fsync below
                // does not push a whole snapshot (about 100 MB for 3 M keys) to the device at once, ahead of the
                // logs' fdatasyncs that wait behind it.
                var at = 0
                while at < content.readableBytes {
                    let count = min(Self.writePieceBytes, content.readableBytes - at)
                    let piece = content.getSlice(at: content.readerIndex + at, length: count)!
                    try io.writeAll(fd, piece, at: Int64(at), path: temp)
                    if count == Self.writePieceBytes {
                        try io.writeOut(fd, offset: Int64(at), count: Int64(count), path: temp)
                    }
                    at += count
                }
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
