import Metrics

/// The metrics one topic's log reports (docs/METRICS.md), created once when the log is opened and updated where
/// the facts happen: around each fdatasync, each append, each roll and each retention pass, and as the log drops its
/// older pages from the page cache.
///
/// Why here and not around `append` in the broker: an append's duration mixes encoding, the write, the wait for a
/// group commit and the fdatasync itself; only the log knows which fdatasync covered how many records, and how
/// many bytes and segments it holds after a roll or a retention pass.
package struct LogMetrics: Sendable {
    /// Histogram (seconds) of each fdatasync of a segment's log file made to acknowledge appends.
    package static let fsyncDurationName = "brokerd_log_fsync_duration_seconds"
    /// Histogram of how many records one group-commit fdatasync made durable (`fsync = "always"` only).
    package static let groupCommitRecordsName = "brokerd_log_group_commit_records"
    /// Histogram (seconds) of one `append` call: encoding, write and, under `always`, the fdatasync that covers it.
    package static let appendDurationName = "brokerd_log_append_duration_seconds"
    /// Gauge: bytes of all segment log files of the topic.
    package static let bytesName = "brokerd_log_bytes"
    /// Gauge: segments the topic holds.
    package static let segmentsName = "brokerd_log_segments"
    /// Counter: bytes of the log's older writes it asked the kernel to drop from the page cache
    /// (`TopicLogConfig.pageCacheBytes`).
    package static let pageCacheDroppedName = "brokerd_log_page_cache_dropped_bytes_total"

    let fsyncDuration: Timer
    let groupCommitRecords: Recorder
    let appendDuration: Timer
    let bytes: Gauge
    let segments: Gauge
    let pageCacheDropped: Counter

    /// Creates the topic's metric objects with `factory` (each labelled `topic`).
    package init(topic: String, factory: any MetricsFactory) {
        let dimensions = [("topic", topic)]
        self.fsyncDuration = Timer(label: Self.fsyncDurationName, dimensions: dimensions, factory: factory)
        self.groupCommitRecords = Recorder(
            label: Self.groupCommitRecordsName, dimensions: dimensions, aggregate: true, factory: factory
        )
        self.appendDuration = Timer(label: Self.appendDurationName, dimensions: dimensions, factory: factory)
        self.bytes = Gauge(label: Self.bytesName, dimensions: dimensions, factory: factory)
        self.segments = Gauge(label: Self.segmentsName, dimensions: dimensions, factory: factory)
        self.pageCacheDropped = Counter(label: Self.pageCacheDroppedName, dimensions: dimensions, factory: factory)
    }

    /// The size of the log after a change: called under no lock, with values read together.
    func sizeChanged(bytes: Int64, segments: Int) {
        self.bytes.record(bytes)
        self.segments.record(segments)
    }
}
