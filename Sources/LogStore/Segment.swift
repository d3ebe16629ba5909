import Glibc
import Locking
import NIOCore

/// One sparse index entry: the batch starting at `relativeOffset` (from the segment base) is at `position`.
///
/// Stored as 8 bytes, big-endian: `relativeOffset: UInt32`, `position: UInt32`.
package struct IndexEntry: Equatable, Sendable {
    /// Size of an entry in the `.index` file.
    package static let size = 8
    /// Base offset of the indexed batch minus the segment's base offset.
    package var relativeOffset: UInt32
    /// File position of the indexed batch in the segment's `.log` file.
    package var position: UInt32
    /// Creates an entry.
    package init(relativeOffset: UInt32, position: UInt32) {
        self.relativeOffset = relativeOffset
        self.position = position
    }

    /// Encodes entries as the `.index` file content.
    package static func encode(_ entries: [IndexEntry]) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: entries.count * Self.size)
        for entry in entries { buffer.writeMultipleIntegers(entry.relativeOffset, entry.position) }
        return buffer
    }

    /// Decodes and validates an `.index` file; nil (with the reason) when it is damaged: size not a multiple of 8,
    /// offsets or positions not strictly increasing, or a position at or past `logSize`.
    package static func decode(_ buffer: ByteBuffer, logSize: Int64) -> (entries: [IndexEntry]?, problem: String?) {
        guard buffer.readableBytes % Self.size == 0 else {
            return (nil, "size \(buffer.readableBytes) is not a multiple of \(Self.size)")
        }
        var buffer = buffer
        var entries: [IndexEntry] = []
        entries.reserveCapacity(buffer.readableBytes / Self.size)
        while let pair = buffer.readMultipleIntegers(as: (UInt32, UInt32).self) {
            let entry = IndexEntry(relativeOffset: pair.0, position: pair.1)
            if let last = entries.last, entry.relativeOffset <= last.relativeOffset || entry.position <= last.position {
                return (nil, "entry \(entries.count) is not after the previous one")
            }
            if Int64(entry.position) >= logSize {
                return (nil, "entry \(entries.count) points at \(entry.position), past the log end \(logSize)")
            }
            entries.append(entry)
        }
        return (entries, nil)
    }
}

/// File names of segments: the 20-digit zero-padded base offset plus `.log` / `.index`.
package enum SegmentName {
    /// `00000000000000000042` for 42.
    package static func stem(_ baseOffset: Int64) -> String {
        let digits = String(baseOffset)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }
    /// The base offset named by `name` when it is `<20 digits>.<suffix>`.
    package static func baseOffset(of name: String, suffix: String) -> Int64? {
        guard name.hasSuffix("." + suffix) else { return nil }
        let stem = name.dropLast(suffix.count + 1)
        guard stem.count == 20, stem.allSatisfy({ $0 >= "0" && $0 <= "9" }) else { return nil }
        return Int64(stem)
    }
}

/// One segment: its `.log` and `.index` files and what is known about them.
///
/// Reference-counted: the topic log drops it from its list on retention or close, and the descriptors are closed
/// in `deinit`, so a reader still holding the segment keeps reading an unlinked file safely.
final class Segment: Sendable {
    /// Mutable facts, written only by the topic's writer queue (and recovery), read by readers.
    struct State {
        /// Bytes of complete batches in the `.log` file.
        var size: Int64
        /// One past the last record's offset.
        var nextOffset: Int64
        /// The sparse index, as in the `.index` file.
        var index: [IndexEntry]
        /// Log bytes appended since the last index entry (or the segment start).
        var bytesSinceIndexEntry: Int64
        /// First record timestamp of the first batch (drives the age roll).
        var firstTimestamp: Int64?
        /// Newest record timestamp seen (drives age retention).
        var maxTimestamp: Int64?
        /// Preallocation (active segment, `TopicLogConfig.preallocateBytes`): the `.log` file holds zeros, written
        /// and fdatasynced, from `size` up to here (nothing when `allocated <= size`), so a batch written there
        /// changes no file metadata and its fdatasync needs no journal commit. While `extending`, the preallocator
        /// is writing zeros from `allocated` on, moving it up after each piece it has written out to the device
        /// (fdatasynced with the rest at the end), and the writer waits rather than write past `allocated`.
        var allocated: Int64 = 0
        /// A preallocation is running (see `allocated`).
        var extending = false
        /// Preallocated zeros from here to `allocated` were written with direct I/O: on the device, not in the
        /// page cache (`Int64.max`: none were).
        var directZerosFrom: Int64 = .max
        /// A preallocation failed to write (no space): this segment grows batch by batch from then on.
        var preallocationStopped = false
        /// Where and when the preallocator last judged how fast this segment grows (`size`, uptime in ns); nil
        /// before its first preallocation (`TopicLogConfig.preallocateUpToBytesPerSecond`).
        var growthMark: (size: Int64, uptimeNanos: UInt64)?
        /// The segment grew too fast to preallocate: no preallocation until `size` reaches this.
        var preallocationPausedUntil: Int64 = 0
    }

    let baseOffset: Int64
    let logPath: String
    let indexPath: String
    let logFD: Int32
    let indexFD: Int32
    let io: any FileIO
    let state: Locked<State>

    init(
        baseOffset: Int64,
        logPath: String,
        indexPath: String,
        logFD: Int32,
        indexFD: Int32,
        io: any FileIO,
        state: State
    ) {
        self.baseOffset = baseOffset
        self.logPath = logPath
        self.indexPath = indexPath
        self.logFD = logFD
        self.indexFD = indexFD
        self.io = io
        self.state = Locked(state)
    }

    deinit {
        try? self.io.close(self.logFD, path: self.logPath)
        try? self.io.close(self.indexFD, path: self.indexPath)
    }

    /// Current size and the index entry to start a scan for `relativeOffset` from, for a reader. Searching under
    /// the lock (instead of copying the index out) keeps the writer's appends to the index from copying it.
    func lookup(relativeOffset: Int64) -> (size: Int64, entry: IndexEntry?) {
        self.state.withLock { ($0.size, Self.floorEntry($0.index, relativeOffset: relativeOffset)) }
    }

    /// Reads `count` bytes at `position` (fewer at end of file).
    func read(at position: Int64, count: Int) throws(FileIOError) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        var failure: FileIOError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            do throws(FileIOError) {
                return try self.io.readFully(
                    self.logFD,
                    into: UnsafeMutableRawBufferPointer(rebasing: raw[..<count]),
                    at: position,
                    path: self.logPath
                )
            } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
        return buffer
    }

    /// The batch header at `position`, or nil when fewer than a header's bytes remain before `limit`.
    func readHeader(at position: Int64, limit: Int64) throws(FileIOError) -> BatchHeader? {
        guard limit - position >= Int64(BatchFormat.headerSize) else { return nil }
        return BatchHeader.peek(try self.read(at: position, count: BatchFormat.headerSize))
    }

    /// The index entry to start a scan for `offset` from: the last with a relative offset at or below it.
    static func floorEntry(_ index: [IndexEntry], relativeOffset: Int64) -> IndexEntry? {
        var low = 0
        var high = index.count
        while low < high {
            let mid = (low + high) / 2
            if Int64(index[mid].relativeOffset) <= relativeOffset { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : index[low - 1]
    }
}
