import NIOCore

/// One record header as stored.
package struct LogHeader: Equatable, Sendable {
    package var name: String
    package var value: ByteBuffer
    package init(name: String, value: ByteBuffer) {
        self.name = name
        self.value = value
    }
}

/// A record as stored in a batch.
package struct LogRecord: Equatable, Sendable {
    package var key: ByteBuffer?
    package var headers: [LogHeader]
    package var value: ByteBuffer
    /// Milliseconds since the Unix epoch.
    package var timestamp: Int64
    package init(key: ByteBuffer?, headers: [LogHeader], value: ByteBuffer, timestamp: Int64) {
        self.key = key
        self.headers = headers
        self.value = value
        self.timestamp = timestamp
    }
}

/// A record read back with its offset.
package struct StoredRecord: Equatable, Sendable {
    package var offset: Int64
    package var record: LogRecord
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
    case none = 0
    case lz4 = 1
}

/// Per-topic storage settings.
package struct TopicLogConfig: Equatable, Sendable {
    package var segmentBytes: Int64 = 64 * 1024 * 1024
    /// Roll the active segment when its first batch is older than this; nil disables.
    package var segmentMaxAgeMillis: Int64? = nil
    /// Delete oldest closed segments while the topic is larger than this; nil keeps everything.
    package var retentionBytes: Int64? = nil
    /// Delete closed segments whose newest record is older than this; nil keeps everything.
    package var retentionMillis: Int64? = nil
    package var fsync: FsyncPolicy = .always
    package var compression: CompressionCodec = .lz4
    /// One sparse index entry per this many log bytes.
    package var indexIntervalBytes: Int = 4096
    /// Largest uncompressed records body of one batch; larger appends fail with `.tooLarge`. Capped by the
    /// format's own limit, ``BatchFormat/maxBodyBytes``.
    package var maxBatchBodyBytes: Int = BatchFormat.maxBodyBytes
    package init() {}
}

/// Offsets assigned to an appended batch: `baseOffset ..< baseOffset + count`.
package struct AppendResult: Equatable, Sendable {
    package var baseOffset: Int64
    package var count: Int
    package init(baseOffset: Int64, count: Int) {
        self.baseOffset = baseOffset
        self.count = count
    }
}

/// A storage failure, with what an operator needs to act on it.
package struct LogStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    package enum Kind: Equatable, Sendable {
        /// An I/O call failed (write, fsync, open...). The log refuses appends after a failed fsync.
        case storageFailure
        /// A stored batch failed its CRC or length check and is not served.
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
    package var kind: Kind
    package var message: String
    package init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    package var description: String { "\(self.kind): \(self.message)" }
}

/// A topic's log. Implementations are thread-safe. This protocol is the seam for another backend.
package protocol TopicLog: AnyObject, Sendable {
    /// The topic name.
    var name: String { get }
    /// The oldest offset still stored.
    var startOffset: Int64 { get }
    /// The next offset to be assigned; records below it are readable (and, under `.always`, synced).
    var endOffset: Int64 { get }
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
