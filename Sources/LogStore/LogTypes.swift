import NIOCore

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
    /// Appends a batch; returns once the records are written (and synced under `.always`).
    func append(_ records: [LogRecord]) async throws(LogStoreError) -> AppendResult
    /// Reads records from `offset` (at most `maxRecords`, about `maxBytes`; at least one record when any exists).
    /// Blocking file I/O: call it off the event loop. Returns [] when `offset == endOffset`.
    func read(from offset: Int64, maxRecords: Int, maxBytes: Int) throws(LogStoreError) -> [StoredRecord]
    /// Flushes, syncs and closes; a clean close lets the next open skip recovery.
    func close() async throws(LogStoreError)
}

/// Opens topic logs. The seam where another storage backend plugs in.
package protocol LogBackend: Sendable {
    func openTopic(name: String, config: TopicLogConfig) async throws(LogStoreError) -> any TopicLog
    /// Closes every open topic cleanly.
    func closeAll() async
}
