#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import LogStore
import NIOCore
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
        switch topic.fsync {
        case .always: self.fsync = .always
        case .interval(let milliseconds): self.fsync = .interval(milliseconds: milliseconds)
        case .never: self.fsync = .never
        }
        self.compression = topic.compression == .lz4 ? .lz4 : .none
    }
}

/// Wall-clock milliseconds since the Unix epoch.
func currentTimeMillis() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}
