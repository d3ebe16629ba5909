import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One record header as stored.
package struct LogHeader: Equatable, Sendable {
    /// Header name (UTF-8 on disk).
    package var name: String
    /// Header value bytes.
    package var value: ByteBuffer
    /// Creates a header.
    package init(name: String, value: ByteBuffer) {
        self.name = name
        self.value = value
    }
}

/// A record as stored in a batch.
package struct LogRecord: Equatable, Sendable {
    /// Optional key; nil and empty are distinct.
    package var key: ByteBuffer?
    /// Headers in order; names may repeat.
    package var headers: [LogHeader]
    /// The payload.
    package var value: ByteBuffer
    /// Milliseconds since the Unix epoch.
    package var timestamp: Int64
    /// Creates a record.
    package init(key: ByteBuffer?, headers: [LogHeader], value: ByteBuffer, timestamp: Int64) {
        self.key = key
        self.headers = headers
        self.value = value
        self.timestamp = timestamp
    }
}

/// A record read back with its offset.
package struct StoredRecord: Equatable, Sendable {
    /// The record's offset in its topic.
    package var offset: Int64
    /// The record.
    package var record: LogRecord
    /// Creates a stored record.
    package init(offset: Int64, record: LogRecord) {
        self.offset = offset
        self.record = record
    }
}

/// When appended bytes are made durable.
package enum FsyncPolicy: Equatable, Sendable {
    /// The append completes only after fdatasync; concurrent appends share one fdatasync.
    case always
    /// fdatasync at most every `milliseconds`; the append completes after the write.
    case interval(milliseconds: Int)
    /// Never fdatasync explicitly (the OS decides); the append completes after the write.
    case never
}

/// Batch body compression.
package enum CompressionCodec: UInt8, Equatable, Sendable {
    /// Bodies are stored as is.
    case none = 0
    /// Bodies are LZ4-compressed (block format) when that makes them smaller.
    case lz4 = 1
}

/// Per-topic storage settings.
package struct TopicLogConfig: Equatable, Sendable {
    /// Roll the active segment once it holds at least this many bytes (1...Int32.max).
    package var segmentBytes: Int64 = 64 * 1024 * 1024
    /// Roll the active segment when its first batch is older than this; nil disables.
    package var segmentMaxAgeMillis: Int64? = nil
    /// Delete oldest closed segments while the topic is larger than this; nil keeps everything.
    package var retentionBytes: Int64? = nil
    /// Delete closed segments whose newest record is older than this; nil keeps everything.
    package var retentionMillis: Int64? = nil
    /// When appends are made durable.
    package var fsync: FsyncPolicy = .always
    /// Codec for new batch bodies.
    package var compression: CompressionCodec = .lz4
    /// One sparse index entry per this many log bytes.
    package var indexIntervalBytes: Int = 4096
    /// Largest uncompressed records body of one batch; larger appends fail with `.tooLarge`. Capped by the
    /// format's own limit, ``BatchFormat/maxBodyBytes``.
    package var maxBatchBodyBytes: Int = BatchFormat.maxBodyBytes
    /// Bytes of zeros kept written and synced ahead of the active segment's end (0: none). Batches then overwrite
    /// space the file already has, so an fdatasync flushes their data without a file-system journal commit. A
    /// background thread extends the space by this much once less than half of it is left (see docs/STORAGE.md,
    /// "Preallocation"). Meant for `.always` topics; the broker sets it for those.
    package var preallocateBytes: Int = 0
    /// Preallocation runs while the active segment grows at most this fast, in bytes per second (0: at any rate).
    /// The zeros are written to the device as well as the batches that overwrite them: at a high append rate that
    /// doubles the writes the appends' fdatasyncs wait behind, while the journal commit the zeros save is shared
    /// by the many batches of each fdatasync. Measured on the reference machine (docs/benchmarks/HISTORY.md, round 12).
    /// Applies only to zeros written through the page cache: once the log has written them with direct I/O (where
    /// the file system has it), preallocation runs at any rate (round 20).
    package var preallocateUpToBytesPerSecond: Int64 = 0
    /// With preallocation: the next segment's `.log` file is zeroed ahead too, in a spare file of the topic
    /// directory (`next-segment.zeros`) that keeps `preallocateBytes` ahead of the active segment's size and is
    /// renamed into place at the roll (see docs/STORAGE.md, "Spare segment"). The zeros then go to another file than
    /// the one being appended to, so they neither hold its inode lock nor change its size while appends write and
    /// sync it, and a segment born from a spare needs no zeros of its own.
    package var spareSegment: Bool = false
    /// Bytes of the newest batches kept in memory as written (at least the newest one), so that reads of the end
    /// of the log (consumers that keep up) need no file read (0: none).
    package var recentBatchBytes: Int = 1 << 20
    /// Bytes of the newest writes the log leaves in the kernel's page cache; the log drops older ones as it writes
    /// (``PageCacheWindow``, docs/STORAGE.md "Page cache"). 0: the kernel keeps what it likes.
    package var pageCacheBytes: Int64 = 0
    /// Retention never deletes a segment that contains an offset at or above `retentionFloor()` (for example the
    /// `topicEnd` of the topic's latest dedupe snapshot, so keys not yet in a snapshot stay rebuildable). nil: no
    /// floor. Called once per retention pass (on open and after each write), on the writer queue and outside the
    /// log's locks; it must be cheap and must not wait for this log.
    package var retentionFloor: (@Sendable () -> Int64)? = nil
    /// The defaults above.
    package init() {}

    /// Equal when every setting is equal; two floors count as equal when both are set or both nil (functions
    /// cannot be compared), so reopening a topic with another floor function keeps the first one.
    package static func == (lhs: TopicLogConfig, rhs: TopicLogConfig) -> Bool {
        lhs.segmentBytes == rhs.segmentBytes && lhs.segmentMaxAgeMillis == rhs.segmentMaxAgeMillis
            && lhs.retentionBytes == rhs.retentionBytes && lhs.retentionMillis == rhs.retentionMillis
            && lhs.fsync == rhs.fsync && lhs.compression == rhs.compression
            && lhs.indexIntervalBytes == rhs.indexIntervalBytes && lhs.maxBatchBodyBytes == rhs.maxBatchBodyBytes
            && lhs.preallocateBytes == rhs.preallocateBytes
            && lhs.preallocateUpToBytesPerSecond == rhs.preallocateUpToBytesPerSecond
            && lhs.spareSegment == rhs.spareSegment
            && lhs.recentBatchBytes == rhs.recentBatchBytes
            && (lhs.retentionFloor == nil) == (rhs.retentionFloor == nil)
    }
}

/// Offsets assigned to an appended batch: `baseOffset ..< baseOffset + count`.
package struct AppendResult: Equatable, Sendable {
    /// Offset of the first appended record.
    package var baseOffset: Int64
    /// Number of records appended.
    package var count: Int
    /// Creates a result.
    package init(baseOffset: Int64, count: Int) {
        self.baseOffset = baseOffset
        self.count = count
    }
}

/// A storage failure, with what an operator needs to act on it.
package struct LogStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    package enum Kind: Equatable, Sendable {
        /// An I/O call failed (write, fsync, open...). The log refuses appends after a failed fsync.
        case storageFailure
        /// A write found no space (ENOSPC, EDQUOT, EFBIG, or a short write). Nothing of the batch was kept; the log
        /// stays healthy and the next append tries again, so appends resume once space is back.
        case storageFull
        /// Stored data failed its CRC, length or structure check: a log batch (not served), a durable table file that
        /// is not one, or a dedupe snapshot (the caller rebuilds it from the logs).
        case corruptBatch
        /// The requested offset is outside `startOffset...endOffset`.
        case offsetOutOfRange
        /// The log was closed or has failed.
        case closed
        /// A record or batch is too large to store.
        case tooLarge
        /// The topic name or configuration is not acceptable.
        case invalidArgument
    }
    /// The kind of failure.
    package var kind: Kind
    /// What failed, naming the topic, file, position, limit or errno as applicable.
    package var message: String
    /// Creates an error.
    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    /// `"<kind>: <message>"`.
    package var description: String { "\(self.kind): \(self.message)" }
}

/// A topic log's size on disk, for operators (`brokerctl topics --describe`).
package struct LogStorage: Equatable, Sendable {
    /// Bytes of all segment files (batches as written, headers included; index files not counted).
    package var bytes: Int64
    /// Number of segment files.
    package var segments: Int
    /// Creates a figure.
    package init(bytes: Int64, segments: Int) {
        self.bytes = bytes
        self.segments = segments
    }
}

/// A topic's log. Implementations are thread-safe. This protocol is the seam for another backend.
package protocol TopicLog: AnyObject, Sendable {
    /// The topic name.
    var name: String { get }
    /// The oldest offset still stored.
    var startOffset: Int64 { get }
    /// The next offset to be assigned; records below it are readable (and, under `.always`, synced).
    var endOffset: Int64 { get }
    /// The log's size on disk now: bytes and count of its segments (zero once closed).
    var storage: LogStorage { get }
    /// Appends a batch. `completion` runs once, on one of the log's own threads (never the caller's), when the
    /// records are written (and synced under `.always`) or with why they were not. Batches are stored in the order
    /// of the calls.
    func append(_ records: [LogRecord], completion: @escaping AppendCompletion)
    /// `parts` (records already in their stored layout, ``StoredRecordBytes``, in order) encoded as one batch body
    /// the way this log stores it (its codec, its body limit), on the caller's thread: what
    /// ``append(bodiesBy:completion:)`` takes, so a caller can compress while the log writes and syncs the batch
    /// before.
    func encodeBody(_ parts: [StoredRecordBytes]) throws(LogStoreError) -> EncodedBatchBody
    /// Appends one batch per body `encode` returns (called once, where the log writes: on its own thread, for a log
    /// that has one), at consecutive offsets, in one write covered by one fdatasync under `.always`; the result
    /// spans them all. The same outcomes as `append(_:completion:)`, for all of them together: an error from
    /// `encode`, or none returned, fails the append.
    func append(
        bodiesBy encode: @escaping @Sendable () throws(LogStoreError) -> [EncodedBatchBody],
        completion: @escaping AppendCompletion
    )
    /// Reads records from `offset` (at most `maxRecords`, about `maxBytes`; at least one record when any exists).
    /// Blocking file I/O: call it off the event loop. Returns [] when `offset == endOffset`.
    func read(from offset: Int64, maxRecords: Int, maxBytes: Int) throws(LogStoreError) -> [StoredRecord]
    /// The records `read` returns, kept as their stored bytes (see ``RawRecords``), and after them the rest of
    /// the last batch read (below the end at the time of the read): for delivery, which copies records onto the
    /// wire without building a `LogRecord` per record and keeps what it cannot send yet instead of decoding that
    /// batch again. Same errors as `read`.
    func readRaw(from offset: Int64, maxRecords: Int, maxBytes: Int) throws(LogStoreError) -> RawRecords
    /// True when a read from `offset` would be served from memory, with no file I/O (the newest batches, as
    /// written: see `TopicLogConfig.recentBatchBytes`), so it may run on an event loop. A hint: the answer may be
    /// stale by the time of the read, which then reads the file as usual.
    func readsFromMemory(from offset: Int64) -> Bool
    /// Flushes, syncs and closes; a clean close lets the next open skip recovery.
    func close() async throws(LogStoreError)
}

extension TopicLog {
    /// A log that keeps nothing in memory.
    package func readsFromMemory(from offset: Int64) -> Bool { false }
}

/// Called once with an append's outcome.
package typealias AppendCompletion = @Sendable (Result<AppendResult, LogStoreError>) -> Void

extension TopicLog {
    /// Appends a batch; returns once the records are written (and synced under `.always`).
    package func append(_ records: [LogRecord]) async throws(LogStoreError) -> AppendResult {
        let result: Result<AppendResult, LogStoreError> = await withCheckedContinuation { continuation in
            self.append(records) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }
}

/// Opens topic logs. The seam where another storage backend plugs in.
package protocol LogBackend: Sendable {
    func openTopic(name: String, config: TopicLogConfig) async throws(LogStoreError) -> any TopicLog
    /// Closes every open topic cleanly.
    func closeAll() async
}

/// Records read back as the stored bytes of their batches, without a `LogRecord` per record: what a subscription
/// delivers from. A read decompresses and checks each batch (CRC and every record's structure, exactly as
/// ``BatchCodec/decode(_:)`` does) and keeps, per record, only where it is; the fields are read from the bytes when
/// asked for. ``storedRecord(at:)`` builds the `StoredRecord` a `read` would have returned.
package struct RawRecords: Sendable {
    /// One batch's uncompressed records body, with the header names its records use.
    package struct Batch: Sendable {
        /// The records body (reader index at its first byte).
        var body: ByteBuffer
        /// Distinct header names (at most ``RawRecords/maxNames``), in first-seen order.
        var names: [String]
        /// For every header of every record, in order: its index in `names`, or `uncachedName`.
        var nameIDs: [UInt16]
    }

    /// Where one record is.
    struct Location: Sendable {
        /// The record's offset in its topic.
        var offset: Int64
        /// Index of its batch in `batches`.
        var batch: Int32
        /// First byte of the record in the batch body.
        var position: Int32
        /// Bytes of the record in the batch body.
        var length: Int32
        /// Index of its first header in the batch's `nameIDs`.
        var firstHeader: Int32
    }

    /// A name id meaning "not in the batch's name table: decode it from the bytes".
    static let uncachedName = UInt16.max
    /// Distinct names kept per batch; a batch repeats a few names, and a longer table would cost a longer search.
    static let maxNames = 32

    var batches: [Batch] = []
    var locations: [Location] = []
    /// True while every header name read is valid UTF-8 (so a name's `String` has exactly its stored bytes).
    package private(set) var namesAreValidUTF8 = true
    /// The longest header name read, in bytes.
    package private(set) var longestName = 0

    /// No records.
    package init() {}

    /// Number of records.
    package var count: Int { self.locations.count }
    /// True when there are no records.
    package var isEmpty: Bool { self.locations.isEmpty }

    /// Offset of record `index`.
    package func offset(at index: Int) -> Int64 { self.locations[index].offset }

    /// Stored bytes of record `index` (timestamp, key, value, headers with their length fields).
    package func storedSize(at index: Int) -> Int { Int(self.locations[index].length) }

    /// The records after the first `count` (the read-ahead a subscription keeps); batches no record is left in
    /// are let go.
    package func dropFirst(_ count: Int) -> RawRecords {
        var rest = self
        rest.locations = Array(self.locations.dropFirst(count))
        if let first = rest.locations.first, first.batch > 0 {
            rest.batches.removeFirst(Int(first.batch))
            for index in rest.locations.indices { rest.locations[index].batch -= first.batch }
        }
        return rest
    }

    /// Bytes of the uncompressed batch bodies these records keep in memory.
    package var retainedBytes: Int { self.batches.reduce(0) { $0 + $1.body.readableBytes } }

    /// The first `count` records.
    package func prefix(_ count: Int) -> RawRecords {
        var first = self
        first.locations = Array(self.locations.prefix(count))
        return first
    }

    /// Records that a batch was indexed: its name facts.
    mutating func noteNames(validUTF8: Bool, longest: Int) {
        if !validUTF8 { self.namesAreValidUTF8 = false }
        self.longestName = max(self.longestName, longest)
    }

    /// Calls `body` with the name and value bytes of each header of record `index` (only those called `named`, when
    /// given), in order, until it returns false.
    package func visitHeaders(
        at index: Int, named: String? = nil, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) {
        if let named, self.visitHeaders(at: index, named: named, body) { return }
        let location = self.locations[index]
        let batch = Int(location.batch)
        self.batches[batch].body.withUnsafeReadableBytes { raw in
            let start = Int(location.position)
            let view = RawRecordView(bytes: UnsafeRawBufferPointer(rebasing: raw[start..<start + Int(location.length)]))
            var headerIndex = Int(location.firstHeader)
            var headers = view.headers
            while let (name, value) = headers.next() {
                let id = self.batches[batch].nameIDs[headerIndex]
                headerIndex += 1
                let headerName =
                    id == Self.uncachedName ? String(decoding: name, as: UTF8.self) : self.batches[batch].names[Int(id)]
                if let named, headerName != named { continue }
                guard body(headerName, value) else { return }
            }
        }
    }

    /// `visitHeaders(at:named:_:)` for one name: a header's stored name bytes are compared with `named`'s UTF-8 (the
    /// length first), so no `String` is looked up or compared per header. The delivery decision visits only
    /// `consent_scope` this way, once per record read (comparing names as `String`s was about 900 instructions per
    /// record with the headers the broker adds).
    ///
    /// Only for names of `[a-z0-9_.-]`: `String` equality is canonical equivalence, and no other character sequence
    /// is canonically equivalent to one of those (a few other ASCII characters have one-character equivalents, such
    /// as U+212A KELVIN SIGN for "K"), so there comparing bytes gives the same answer.
    /// Returns false, having visited nothing, for any other name.
    private func visitHeaders(
        at index: Int, named: String, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) -> Bool {
        var wanted = named
        return wanted.withUTF8 { wanted in
            guard Self.comparesAsBytes(wanted) else { return false }
            let location = self.locations[index]
            self.batches[Int(location.batch)].body.withUnsafeReadableBytes { raw in
                let start = Int(location.position)
                let end = start + Int(location.length)
                let view = RawRecordView(bytes: UnsafeRawBufferPointer(rebasing: raw[start..<end]))
                var headers = view.headers
                while let (name, value) = headers.next() {
                    guard name.count == wanted.count,
                        wanted.count == 0 || memcmp(name.baseAddress!, wanted.baseAddress!, wanted.count) == 0
                    else { continue }
                    // A stored name that is not valid UTF-8 never equals `named`'s bytes, so `named` is its name.
                    guard body(named, value) else { return }
                }
            }
            return true
        }
    }

    /// Whether `name` is made only of `[a-z0-9_.-]` (see `visitHeaders(at:named:_:)`).
    static func comparesAsBytes(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
        for byte in name {
            let letterOrDigit =
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            guard letterOrDigit || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
            else { return false }
        }
        return true
    }

    /// Calls `body` with each record of `indices` (ascending) and its offset; each batch's bytes are opened once.
    /// The views are valid only inside `body`.
    package func forEach(_ indices: [Int], _ body: (_ offset: Int64, _ record: RawRecordView) -> Void) {
        var next = 0
        while next < indices.count {
            let batchIndex = self.locations[indices[next]].batch
            self.batches[Int(batchIndex)].body.withUnsafeReadableBytes { raw in
                while next < indices.count {
                    let location = self.locations[indices[next]]
                    guard location.batch == batchIndex else { return }
                    let start = Int(location.position)
                    let bytes = UnsafeRawBufferPointer(rebasing: raw[start..<start + Int(location.length)])
                    body(location.offset, RawRecordView(bytes: bytes))
                    next += 1
                }
            }
        }
    }

    /// Total value bytes of records `indices` (ascending).
    package func valueBytes(_ indices: [Int]) -> Int {
        var total = 0
        self.forEach(indices) { _, record in total += record.value.count }
        return total
    }

    /// Record `index` as `read(from:maxRecords:maxBytes:)` returns it (slices of the batch body, names decoded).
    package func storedRecord(at index: Int) -> StoredRecord {
        let location = self.locations[index]
        let batch = self.batches[Int(location.batch)]
        let start = batch.body.readerIndex + Int(location.position)
        var key: ByteBuffer? = nil
        var value = ByteBuffer()
        var headers: [LogHeader] = []
        var timestamp: Int64 = 0
        batch.body.withUnsafeReadableBytes { raw in
            let base = raw.baseAddress! + Int(location.position)
            let view = RawRecordView(bytes: UnsafeRawBufferPointer(start: base, count: Int(location.length)))
            timestamp = view.timestamp
            if let keyBytes = view.key {
                key = batch.body.getSlice(at: start + (keyBytes.baseAddress! - base), length: keyBytes.count)
            }
            let valueBytes = view.value
            value = batch.body.getSlice(at: start + (valueBytes.baseAddress! - base), length: valueBytes.count)!
            headers.reserveCapacity(view.headerCount)
            var headerIndex = Int(location.firstHeader)
            view.forEachHeader { name, headerValue in
                let id = batch.nameIDs[headerIndex]
                headerIndex += 1
                let string = id == Self.uncachedName ? String(decoding: name, as: UTF8.self) : batch.names[Int(id)]
                let at = start + (headerValue.baseAddress! - base)
                let slice = batch.body.getSlice(at: at, length: headerValue.count)!
                headers.append(LogHeader(name: string, value: slice))
                return true
            }
        }
        return StoredRecord(
            offset: location.offset,
            record: LogRecord(key: key, headers: headers, value: value, timestamp: timestamp)
        )
    }
}

/// The stored bytes of one record of a checked batch (see ``RawRecords``), read in place: big-endian timestamp
/// (8), key length (i32, -1 = no key) and key, value length (u32) and value, header count (u32), then each header's
/// name length (u32), name, value length (u32) and value. Only valid while the bytes it points at are.
///
/// `public` and `@inlinable` (like RawBytes' RawWriter), so the field reads inline into the module that copies
/// records onto the wire: with `package` access they were calls, one closure call per header.
@frozen
public struct RawRecordView {
    /// The record's bytes, exactly.
    public let bytes: UnsafeRawBufferPointer

    /// A view of `bytes`, which must be one whole record of a batch `BatchCodec.index` checked.
    @inlinable
    public init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    @inlinable @inline(__always)
    func load<T: FixedWidthInteger>(_ position: Int, as type: T.Type) -> T {
        T(bigEndian: self.bytes.loadUnaligned(fromByteOffset: position, as: T.self))
    }

    /// Milliseconds since the Unix epoch.
    @inlinable
    public var timestamp: Int64 { self.load(0, as: Int64.self) }

    @inlinable
    var keyLength: Int { Int(self.load(8, as: Int32.self)) }

    @inlinable
    var valueLengthPosition: Int { 12 + max(self.keyLength, 0) }

    @inlinable
    var headerCountPosition: Int {
        let position = self.valueLengthPosition
        return position + 4 + Int(self.load(position, as: UInt32.self))
    }

    /// The key, or nil (no key).
    @inlinable
    public var key: UnsafeRawBufferPointer? {
        let length = self.keyLength
        guard length >= 0 else { return nil }
        return UnsafeRawBufferPointer(rebasing: self.bytes[12..<12 + length])
    }

    /// The value.
    @inlinable
    public var value: UnsafeRawBufferPointer {
        let position = self.valueLengthPosition
        let length = Int(self.load(position, as: UInt32.self))
        return UnsafeRawBufferPointer(rebasing: self.bytes[position + 4..<position + 4 + length])
    }

    /// Number of headers.
    @inlinable
    public var headerCount: Int { Int(self.load(self.headerCountPosition, as: UInt32.self)) }

    /// The headers, in order.
    @inlinable
    public var headers: RawHeaderIterator {
        let position = self.headerCountPosition
        let count = Int(self.load(position, as: UInt32.self))
        return RawHeaderIterator(bytes: self.bytes, position: position + 4, remaining: count)
    }

    /// Calls `body` with each header's name and value bytes, in order, until it returns false.
    @inlinable
    public func forEachHeader(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) {
        var headers = self.headers
        while let (name, value) = headers.next() {
            guard body(name, value) else { return }
        }
    }
}

/// The headers of a ``RawRecordView``: name and value bytes, in order.
@frozen
public struct RawHeaderIterator: IteratorProtocol {
    @usableFromInline let bytes: UnsafeRawBufferPointer
    @usableFromInline var position: Int
    @usableFromInline var remaining: Int

    @inlinable
    init(bytes: UnsafeRawBufferPointer, position: Int, remaining: Int) {
        self.bytes = bytes
        self.position = position
        self.remaining = remaining
    }

    @inlinable @inline(__always)
    func length(at position: Int) -> Int {
        Int(UInt32(bigEndian: self.bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
    }

    /// The next header's name and value bytes, or nil after the last.
    @inlinable
    public mutating func next() -> (name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)? {
        guard self.remaining > 0 else { return nil }
        self.remaining -= 1
        let nameLength = self.length(at: self.position)
        let name = UnsafeRawBufferPointer(rebasing: self.bytes[self.position + 4..<self.position + 4 + nameLength])
        self.position += 4 + nameLength
        let valueLength = self.length(at: self.position)
        let value = UnsafeRawBufferPointer(rebasing: self.bytes[self.position + 4..<self.position + 4 + valueLength])
        self.position += 4 + valueLength
        return (name, value)
    }
}
