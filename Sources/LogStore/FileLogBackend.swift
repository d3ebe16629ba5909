import Dispatch
import Glibc
import Locking
import Logging
import Metrics

/// Wall-clock milliseconds since the Unix epoch; the default clock of ``FileLogBackend``.
package func wallClockMillis() -> Int64 {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
}

/// The on-disk segmented log: one directory per topic under `directory`.
///
/// Opening a topic that is already open returns the same log when the configuration is the same, and fails with
/// `.invalidArgument` when it differs. After `close()` (or `closeAll()`) a topic can be opened again.
package final class FileLogBackend: LogBackend {
    /// The directory holding one sub-directory per topic.
    package let directory: String
    private let logger: Logger
    private let io: any FileIO
    private let nowMillis: @Sendable () -> Int64
    private let metrics: any MetricsFactory
    /// Opens run here, one at a time, off the cooperative pool (recovery is blocking I/O).
    private let openQueue = DispatchQueue(label: "brokerd.logstore.open")
    private let logs = Locked<[String: FileTopicLog]>([:])

    /// Creates the backend, creating `directory` (one level) if it does not exist.
    /// - Parameters:
    ///   - io: the file-system seam; tests inject faults through it.
    ///   - nowMillis: the clock for age-based roll and retention (ms since the epoch).
    ///   - metrics: creates each topic's ``LogMetrics`` once, when the topic is first opened.
    package init(
        directory: String,
        logger: Logger,
        io: any FileIO = PosixFileIO(),
        nowMillis: @escaping @Sendable () -> Int64 = wallClockMillis,
        metrics: any MetricsFactory = MetricsSystem.factory
    ) throws(LogStoreError) {
        self.metrics = metrics
        self.directory = directory
        self.logger = logger
        self.io = io
        self.nowMillis = nowMillis
        do {
            try io.mkdir(directory)
        } catch {
            throw LogStoreError(.storageFailure, "creating log directory failed: \(error)")
        }
    }

    /// The directory of a topic's files (segments, clean marker, `dedupe.snapshot`).
    package func topicDirectory(name: String) -> String {
        self.directory + "/" + name
    }

    /// Opens (creating and recovering as needed) the topic's log; see the type's note on opening twice.
    package func openTopic(name: String, config: TopicLogConfig) async throws(LogStoreError) -> any TopicLog {
        try Self.validate(name: name)
        try Self.validate(config, topic: name)
        // The opened log crosses from the open queue to this task through a lock as well as the continuation. The
        // continuation alone orders the two threads, but when it is resumed before this task has suspended, the
        // concurrency runtime hands over without telling ThreadSanitizer, which then reports the log's fields as a
        // race (`make tsan`); the lock's release and acquire it sees.
        let handover = Locked<Result<FileTopicLog, LogStoreError>?>(nil)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            self.openQueue.async {
                let result = Result { () throws(LogStoreError) -> FileTopicLog in
                    try self.openOnQueue(name: name, config: config)
                }
                handover.withLock { $0 = result }
                continuation.resume()
            }
        }
        return try handover.withLock { $0! }.get()  // set before the continuation was resumed
    }

    private func openOnQueue(name: String, config: TopicLogConfig) throws(LogStoreError) -> FileTopicLog {
        if let existing = self.logs.withLock({ $0[name] }) {
            switch existing.closeState {
            case (false, _):
                guard existing.config == config else {
                    throw LogStoreError(
                        .invalidArgument,
                        "topic '\(name)' is already open with a different configuration"
                    )
                }
                return existing
            case (true, false):
                // Its close may still write the clean marker; opening now could leave a stale one behind.
                throw LogStoreError(.closed, "topic '\(name)' is still closing; open it again once close() returned")
            case (true, true):
                break
            }
        }
        let log = try FileTopicLog.open(
            name: name,
            directory: self.topicDirectory(name: name),
            config: config,
            io: self.io,
            logger: self.logger,
            clock: self.nowMillis,
            metrics: LogMetrics(topic: name, factory: self.metrics)
        )
        self.logs.withLock { $0[name] = log }
        return log
    }

    /// Closes every topic this backend opened; failures are logged at error level.
    package func closeAll() async {
        let logs = self.logs.withLock { Array($0.values) }
        for log in logs {
            do {
                try await log.close()
            } catch {
                self.logger.error(
                    "closing topic log failed",
                    metadata: ["brokerd.topic": "\(log.name)", "brokerd.error": "\(error)"]
                )
            }
        }
        // Entries go only once closed, so an open racing with closeAll sees "still closing", never a second log.
        self.logs.withLock { open in
            for log in logs where open[log.name] === log { open[log.name] = nil }
        }
    }

    /// Topic names become directory names: 1...200 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    package static func validate(name: String) throws(LogStoreError) {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z"))
                || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || byte == UInt8(ascii: ".")
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        guard !name.isEmpty, name.utf8.count <= 200, allowed, name != ".", name != ".." else {
            throw LogStoreError(
                .invalidArgument,
                "topic name '\(name)' must be 1...200 characters of [A-Za-z0-9._-] and not '.' or '..'"
            )
        }
    }

    /// Limits the format imposes on a configuration.
    package static func validate(_ config: TopicLogConfig, topic: String) throws(LogStoreError) {
        func refuse(_ what: String) -> LogStoreError {
            LogStoreError(.invalidArgument, "topic '\(topic)': \(what)")
        }
        guard config.segmentBytes >= 1, config.segmentBytes <= Int64(Int32.max) else {
            throw refuse("segmentBytes \(config.segmentBytes) must be in 1...\(Int32.max)")
        }
        guard config.indexIntervalBytes >= 1 else {
            throw refuse("indexIntervalBytes \(config.indexIntervalBytes) must be at least 1")
        }
        guard config.maxBatchBodyBytes >= 1 else {
            throw refuse("maxBatchBodyBytes \(config.maxBatchBodyBytes) must be at least 1")
        }
        guard config.preallocateBytes >= 0, config.preallocateBytes <= 1 << 30 else {
            throw refuse("preallocateBytes \(config.preallocateBytes) must be in 0...\(1 << 30)")
        }
        guard config.preallocateUpToBytesPerSecond >= 0 else {
            throw refuse("preallocateUpToBytesPerSecond \(config.preallocateUpToBytesPerSecond) must not be negative")
        }
        guard config.recentBatchBytes >= 0 else {
            throw refuse("recentBatchBytes \(config.recentBatchBytes) must not be negative")
        }
        if let age = config.segmentMaxAgeMillis, age < 1 {
            throw refuse("segmentMaxAgeMillis \(age) must be at least 1")
        }
        if let bytes = config.retentionBytes, bytes < 0 { throw refuse("retentionBytes \(bytes) must not be negative") }
        if let millis = config.retentionMillis, millis < 0 {
            throw refuse("retentionMillis \(millis) must not be negative")
        }
        if case .interval(let milliseconds) = config.fsync, milliseconds < 1 {
            throw refuse("fsync interval \(milliseconds) ms must be at least 1")
        }
    }
}
