#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LogStore
import NIOCore
import RawBytes
import TopicRouter
import WireProtocol

extension DeliveredRecord {
    /// The wire form of a stored record.
    init(stored: StoredRecord) {
        self.init(
            offset: stored.offset,
            record: WireRecord(
                key: stored.record.key,
                headers: stored.record.headers.map { WireHeader(name: $0.name, value: $0.value) },
                value: stored.record.value,
                timestamp: stored.record.timestamp
            )
        )
    }
}

extension EncodedDeliveredRecords {
    /// Records `indices` (ascending) of `records` in DELIVER wire form, copied from their stored bytes in one pass:
    /// no `LogRecord`, `WireRecord` or slice per record. The bytes are those `FrameCodec` writes for the
    /// `DeliveredRecord`s of ``DeliveredRecord/init(stored:)``. nil when a header name cannot go out as stored
    /// (invalid UTF-8, which a decoding read repairs, or longer than a wire string): build `DeliveredRecord`s then.
    init?(_ records: RawRecords, indices: [Int]) {
        guard records.namesAreValidUTF8, records.longestName <= FrameCodec.maxStringBytes else { return nil }
        // Stored and wire records hold the same fields; a header name's length is a u32 stored and a u16 on the
        // wire, and the offset comes first: at most 8 bytes more per record.
        var capacity = 0
        for index in indices { capacity += 8 + records.storedSize(at: index) }
        var bytes = ByteBufferAllocator().buffer(capacity: capacity)
        bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { out in
            var writer = RawWriter(out)
            // Runs of bytes that are the same stored and on the wire are copied whole (one copy each instead of a
            // length and its bytes): the key length and key, a header's name through its value (after its
            // length, a u32 stored and a u16 on the wire), the value length and value, the timestamp.
            records.forEach(indices) { offset, record in
                let stored = record.bytes
                let base = stored.baseAddress!
                let value = record.value
                let valueLengthAt = value.baseAddress! - base - 4
                writer.put(offset)
                writer.put(UnsafeRawBufferPointer(rebasing: stored[8..<valueLengthAt]))
                writer.put(UInt32(record.headerCount))
                var headers = record.headers
                while let (name, headerValue) = headers.next() {
                    writer.put(UInt16(name.count))
                    let nameAt = name.baseAddress! - base
                    let valueEnd = headerValue.baseAddress! - base + headerValue.count
                    writer.put(UnsafeRawBufferPointer(rebasing: stored[nameAt..<valueEnd]))
                }
                writer.put(UnsafeRawBufferPointer(rebasing: stored[valueLengthAt..<valueLengthAt + 4 + value.count]))
                writer.put(UnsafeRawBufferPointer(rebasing: stored[0..<8]))
            }
            return writer.position
        }
        self.init(count: indices.count, bytes: bytes)
    }
}

extension StoredRecordBytes {
    /// The accepted records of a PUBLISH in their stored layout, written straight from the frame's bytes (see
    /// ``StoredRecordsBuilder/append(_:accepted:extraHeaders:receivedAtMillis:)``).
    init(
        _ records: EncodedPublishRecords, accepted: [PublishSorter.Accepted], extraHeaders: [LogHeader],
        receivedAtMillis: Int64
    ) {
        var builder = StoredRecordsBuilder()
        builder.append(records, accepted: accepted, extraHeaders: extraHeaders, receivedAtMillis: receivedAtMillis)
        self = builder.build()
    }
}

/// The accepted records of one or more PUBLISHes, in their stored layout, back to back in one buffer (a publish
/// group's requests share it: one allocation for all of them, not one per request).
struct StoredRecordsBuilder {
    private var bytes: ByteBuffer
    private(set) var count = 0
    private var firstTimestamp: Int64 = 0
    private var maxTimestamp: Int64 = 0
    private var valueBytes = 0

    /// Starts empty, with room for `capacity` bytes (it grows as needed).
    init(capacity: Int = 0) {
        self.bytes = ByteBufferAllocator().buffer(capacity: capacity)
    }

    /// Bytes written so far.
    var byteCount: Int { self.bytes.readableBytes }

    /// What was written, as one run of stored records.
    func build() -> StoredRecordBytes {
        StoredRecordBytes(
            count: self.count, bytes: self.bytes, firstTimestamp: self.firstTimestamp, maxTimestamp: self.maxTimestamp,
            valueBytes: self.valueBytes
        )
    }

    /// Writes the accepted records of a PUBLISH in their stored layout (docs/STORAGE.md "Record"), straight from
    /// the frame's bytes in one pass: for each, the timestamp (0: `receivedAtMillis`), the key and the value fields
    /// as the wire carries them (the same bytes stored), the header count with `extraHeaders` added, each header
    /// with its name length widened from u16 to u32 (name, value length and value copied as one run), then
    /// `extraHeaders`. The bytes are those `BatchCodec.storedRecords` writes for the `LogRecord`s of
    /// `PublishSorter.storedRecord(_:)`.
    mutating func append(
        _ records: EncodedPublishRecords, accepted: [PublishSorter.Accepted], extraHeaders: [LogHeader],
        receivedAtMillis: Int64
    ) {
        self.append(
            records, indices: accepted.lazy.map(\.index), extraHeaders: extraHeaders, receivedAtMillis: receivedAtMillis
        )
    }

    /// ``append(_:accepted:extraHeaders:receivedAtMillis:)`` for every record of `records`.
    mutating func appendAll(_ records: EncodedPublishRecords, extraHeaders: [LogHeader], receivedAtMillis: Int64) {
        self.append(records, indices: 0..<records.count, extraHeaders: extraHeaders, receivedAtMillis: receivedAtMillis)
    }

    /// The bytes ``appendAll(_:extraHeaders:receivedAtMillis:)`` writes for `records`, from the frame's size: each
    /// record's stored form is its wire form with 2 more bytes per header (name lengths u32, not u16) and the extra
    /// headers; the fields move, the sizes add up the same.
    static func storedSizeOfAll(_ records: EncodedPublishRecords, extraHeaders: [LogHeader]) -> Int {
        records.bytes.readableBytes + 2 * records.headerCount + records.count * Self.size(of: extraHeaders)
    }

    /// The stored size of `headers` (u32 name length, name, u32 value length, value).
    private static func size(of headers: [LogHeader]) -> Int {
        var size = 0
        for header in headers.indices {
            size += 8 + headers[header].name.utf8.count + headers[header].value.readableBytes
        }
        return size
    }

    /// The bytes ``append(_:indices:extraHeaders:receivedAtMillis:)`` writes.
    static func storedSize(of records: EncodedPublishRecords, indices: [Int], extraHeaders: [LogHeader]) -> Int {
        let extraSize = Self.size(of: extraHeaders)
        return records.withViews { view in
            var size = 0
            for index in indices { size += Self.storedSize(of: view(index), extraSize: extraSize) }
            return size
        }
    }

    /// One record's stored size: timestamp, key field, value field, header count, its headers (2 more bytes each
    /// than on the wire), and `extraSize` bytes of extra headers.
    @inline(__always)
    private static func storedSize(of record: PublishRecordView, extraSize: Int) -> Int {
        8 + record.keyField.count + record.valueField.count + 4 + record.headerBytes + 2 * record.headerCount
            + extraSize
    }

    /// Writes records `indices` of `records` (see ``append(_:accepted:extraHeaders:receivedAtMillis:)``).
    mutating func append<Indices: Collection<Int>>(
        _ records: EncodedPublishRecords, indices accepted: Indices, extraHeaders: [LogHeader], receivedAtMillis: Int64
    ) {
        guard !accepted.isEmpty else { return }
        // The extra headers take the same bytes after every record: written once after the first, then copied from
        // there (no buffer of their own).
        let extraSize = Self.size(of: extraHeaders)
        let extraCount = UInt32(extraHeaders.count)
        // Each closure below keeps its own variables and returns what it found: variables a closure captures and
        // updates pay a run-time exclusivity check on every access.
        let (size, valueBytes) = records.withViews { view -> (Int, Int) in
            var size = 0
            var valueBytes = 0
            for index in accepted {
                let record = view(index)
                size += Self.storedSize(of: record, extraSize: extraSize)
                valueBytes += record.value.count
            }
            return (size, valueBytes)
        }
        let firstOfAll = self.count == 0
        var timestamps = (first: Int64(0), max: Int64(0))
        records.withViews { view in
            let written = self.bytes.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
                var writer = RawWriter(UnsafeMutableRawBufferPointer(rebasing: out[0..<size]))
                var first: Int64 = 0
                var maxTimestamp: Int64 = 0
                var extraAt = -1
                for (position, index) in accepted.enumerated() {
                    let record = view(index)
                    let stamped = record.timestamp
                    let timestamp = stamped == 0 ? receivedAtMillis : stamped
                    if position == 0 {
                        first = timestamp
                        maxTimestamp = timestamp
                    } else {
                        maxTimestamp = max(maxTimestamp, timestamp)
                    }
                    writer.put(timestamp)
                    writer.put(record.keyField)
                    writer.put(record.valueField)
                    writer.put(UInt32(record.headerCount) + extraCount)
                    var headers = record.headers
                    while let (nameLength, run) = headers.nextRun() {
                        writer.put(UInt32(nameLength))
                        writer.put(run)
                    }
                    if extraAt < 0 {
                        extraAt = writer.position
                        // By index: a copy of a header would retain its name and value (see `PublishGroup.build`).
                        for header in extraHeaders.indices {
                            writer.put(UInt32(extraHeaders[header].name.utf8.count))
                            writer.put(extraHeaders[header].name)
                            writer.put(UInt32(extraHeaders[header].value.readableBytes))
                            writer.put(extraHeaders[header].value)
                        }
                    } else {
                        writer.put(UnsafeRawBufferPointer(rebasing: out[extraAt..<extraAt + extraSize]))
                    }
                }
                timestamps = (first, maxTimestamp)
                return writer.position
            }
            precondition(written == size, "stored records wrote \(written) bytes, sized \(size)")
        }
        if firstOfAll {
            self.firstTimestamp = timestamps.first
            self.maxTimestamp = timestamps.max
        } else {
            self.maxTimestamp = max(self.maxTimestamp, timestamps.max)
        }
        self.count += accepted.count
        self.valueBytes += valueBytes
    }
}

extension WireHeader: PolicyHeaderView {
    package func withUnsafeValueBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try self.value.withUnsafeReadableBytes(body)
    }
}

extension LogHeader: PolicyHeaderView {
    package func withUnsafeValueBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try self.value.withUnsafeReadableBytes(body)
    }
}

extension Collection where Element: PolicyHeaderView {
    /// Walks these headers for the policy's checks (a `HeaderVisitor`: name and value bytes, in order, of the
    /// headers called `named` when given, until `body` returns false). Compiled in this module, so it is
    /// specialized for `[WireHeader]` and `[LogHeader]`.
    func visitHeaders(named: String?, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool) {
        for header in self where named == nil || header.name == named {
            guard header.withUnsafeValueBytes({ body(header.name, $0) }) else { return }
        }
    }
}

extension LogHeader {
    /// A header with a UTF-8 text value.
    init(_ name: String, _ text: String) {
        self.init(name: name, value: ByteBuffer(string: text))
    }
}

extension ErrorCode {
    /// The wire code for a policy refusal.
    init(_ refusal: RefusalCode) {
        switch refusal {
        case .unauthenticated: self = .unauthenticated
        case .notCleared: self = .notCleared
        case .notAuthorized: self = .notAuthorized
        case .unknownTopic: self = .unknownTopic
        }
    }

    /// The wire code for a storage error.
    init(_ error: LogStoreError) {
        switch error.kind {
        case .offsetOutOfRange: self = .offsetOutOfRange
        case .tooLarge, .invalidArgument: self = .invalidRequest
        case .storageFailure, .corruptBatch, .closed: self = .storageFailure
        case .storageFull: self = .storageFull
        }
    }
}

extension TopicLogConfig {
    /// Storage settings for a declared topic.
    init(_ topic: TopicPolicy) {
        self.init()
        self.segmentBytes = topic.segmentBytes
        self.segmentMaxAgeMillis = topic.segmentMaxAgeMillis
        self.retentionBytes = topic.retentionBytes
        self.retentionMillis = topic.retentionMillis
        self.pageCacheBytes = topic.pageCacheBytes
        switch topic.fsync {
        case .always:
            self.fsync = .always
            // Every append waits for an fdatasync: keep it from also waiting for a journal commit.
            self.preallocateBytes = Self.brokerPreallocateBytes
            self.preallocateUpToBytesPerSecond = Self.brokerPreallocateUpToBytesPerSecond
            // And the next segment's zeros are written ahead into a file of their own (docs/benchmarks/HISTORY.md,
            // round 27).
            self.spareSegment = true
        case .interval(let milliseconds): self.fsync = .interval(milliseconds: milliseconds)
        case .never: self.fsync = .never
        }
        self.compression = topic.compression == .lz4 ? .lz4 : .none
    }

    /// Zeros kept ahead of an `fsync = "always"` topic's active segment (docs/STORAGE.md, "Preallocation").
    static let brokerPreallocateBytes = 4 << 20
    /// Above this rate of growth a topic's active segment is not preallocated: at 447,765 records/s (about 45 MB/s
    /// stored) e2e-latency's p99 was lower without the zeros; at 100,000 (about 10 MB/s) its p50 was lower with
    /// them, and at one record at a time (0.4 MB/s) sync-latency's p50 and p99 (docs/benchmarks/HISTORY.md, round 12).
    /// Zeros written with direct I/O (where the file system has it) are not limited (round 20).
    static let brokerPreallocateUpToBytesPerSecond: Int64 = 16 << 20
}

/// Wall-clock milliseconds since the Unix epoch.
func currentTimeMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
