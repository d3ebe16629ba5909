import Logging
import LogStore
import NIOCore
import Synchronization
import TopicRouter

/// Something that wants to hear when a topic's visible end moves.
protocol TopicListener: AnyObject, Sendable {
    /// Called from any thread after records became readable; implementations hop to their own event loop.
    func topicAdvanced(endOffset: Int64)
}

/// State shared by every connection: the policy, the open topic logs, committed offsets, and listeners.
///
/// Immutable after start except the listener table, which sits behind a `Mutex`; notification runs outside the lock.
final class BrokerCore: Sendable {
    let policy: Policy
    let settings: ServerSettings
    let backend: any LogBackend
    let offsets: OffsetStore
    let logger: Logger
    private let logs: [String: any TopicLog]
    private let appenders: [String: TopicAppender]
    private let listeners: Mutex<[String: [ObjectIdentifier: any TopicListener]]>
    private let inFlightAppends = Atomic<Int>(0)
    private let shuttingDown = Atomic<Bool>(false)
    private let nextSessionID = Atomic<UInt64>(1)
    private let openConnections = Atomic<Int>(0)

    init(policy: Policy, backend: any LogBackend, logs: [String: any TopicLog], offsets: OffsetStore, logger: Logger) {
        self.policy = policy
        self.settings = policy.config.server
        self.backend = backend
        self.logs = logs
        self.appenders = logs.mapValues { TopicAppender(log: $0) }
        self.offsets = offsets
        self.logger = logger
        self.listeners = Mutex([:])
    }

    /// The open log of a declared topic.
    func log(for topic: String) -> (any TopicLog)? {
        self.logs[topic]
    }

    /// The ordered, batching appender of a declared topic.
    func appender(for topic: String) -> TopicAppender? {
        self.appenders[topic]
    }

    /// A fresh session id for HELLO_OK.
    func makeSessionID() -> UInt64 {
        self.nextSessionID.wrappingAdd(1, ordering: .relaxed).oldValue
    }

    // MARK: connections

    /// Counts a new connection; false when the configured maximum is reached.
    func connectionOpened() -> Bool {
        let now = self.openConnections.wrappingAdd(1, ordering: .relaxed).newValue
        if now > self.settings.maxConnections {
            self.openConnections.wrappingSubtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func connectionClosed() {
        self.openConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    var connectionCount: Int { self.openConnections.load(ordering: .relaxed) }

    // MARK: appends and shutdown

    /// Registers an append about to start; false once shutdown began (the caller refuses the publish).
    func beginAppend() -> Bool {
        guard !self.shuttingDown.load(ordering: .acquiring) else { return false }
        self.inFlightAppends.wrappingAdd(1, ordering: .acquiringAndReleasing)
        return true
    }

    /// An append finished (successfully or not); wakes the topic's subscribers.
    func endAppend(topic: String) {
        self.inFlightAppends.wrappingSubtract(1, ordering: .acquiringAndReleasing)
        if let log = self.logs[topic] { self.notify(topic: topic, endOffset: log.endOffset) }
    }

    /// Stops new appends; returns once in-flight appends finished or `timeout` passed.
    func drainAppends(timeout: Duration) async {
        self.shuttingDown.store(true, ordering: .releasing)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while self.inFlightAppends.load(ordering: .acquiring) > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(5))
        }
    }

    var isShuttingDown: Bool { self.shuttingDown.load(ordering: .acquiring) }

    // MARK: listeners

    func addListener(_ listener: any TopicListener, topic: String) {
        self.listeners.withLock { $0[topic, default: [:]][ObjectIdentifier(listener)] = listener }
    }

    func removeListener(_ listener: any TopicListener, topic: String) {
        self.listeners.withLock { _ = $0[topic]?.removeValue(forKey: ObjectIdentifier(listener)) }
    }

    private func notify(topic: String, endOffset: Int64) {
        let targets = self.listeners.withLock { Array(($0[topic] ?? [:]).values) }
        for target in targets { target.topicAdvanced(endOffset: endOffset) }
    }
}
