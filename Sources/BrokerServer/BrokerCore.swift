import Logging
import LogStore
import NIOCore
import Synchronization
import TopicRouter
import WireProtocol

/// Who to wake when a topic's visible end moves. Every append goes through a `TopicAppender`, which notifies here.
final class TopicListeners: Sendable {
    private let table = Mutex<[String: [ObjectIdentifier: any TopicListener]]>([:])

    func add(_ listener: any TopicListener, topic: String) {
        self.table.withLock { $0[topic, default: [:]][ObjectIdentifier(listener)] = listener }
    }

    func remove(_ listener: any TopicListener, topic: String) {
        self.table.withLock { _ = $0[topic]?.removeValue(forKey: ObjectIdentifier(listener)) }
    }

    /// Calls every listener of `topic`, outside the lock.
    func notify(topic: String, endOffset: Int64) {
        let targets = self.table.withLock { Array(($0[topic] ?? [:]).values) }
        for target in targets { target.topicAdvanced(endOffset: endOffset) }
    }
}

/// Something that wants to hear when a topic's visible end moves.
protocol TopicListener: AnyObject, Sendable {
    /// Called from any thread after records became readable; implementations hop to their own event loop.
    func topicAdvanced(endOffset: Int64)
}

/// State shared by every connection: the policy, the open topic logs, committed offsets, the audit ledger and
/// listeners.
///
/// Immutable after start except the policy and the listener table, each behind a `Mutex`; notification runs outside
/// the lock.
final class BrokerCore: Sendable {
    private let currentPolicy: Mutex<Policy>
    let settings: ServerSettings
    let backend: any LogBackend
    let offsets: OffsetStore
    let logger: Logger
    private let logs: [String: any TopicLog]
    private let appenders: [String: TopicAppender]
    private let listeners: TopicListeners
    private let inFlightAppends = Atomic<Int>(0)
    private let shuttingDown = Atomic<Bool>(false)
    private let nextSessionID = Atomic<UInt64>(1)
    private let openConnections = Atomic<Int>(0)

    /// The ledger of every decision (`__audit`).
    let audit: AuditLedger

    /// - Parameter logs: every declared topic's log and the reserved topics' (`__quarantine`, `__audit`).
    init(policy: Policy, backend: any LogBackend, logs: [String: any TopicLog], offsets: OffsetStore, logger: Logger) {
        self.currentPolicy = Mutex(policy)
        self.settings = policy.config.server
        self.backend = backend
        self.logs = logs
        let listeners = TopicListeners()
        self.listeners = listeners
        let appenders = logs.mapValues { TopicAppender(log: $0, listeners: listeners) }
        self.appenders = appenders
        self.audit = AuditLedger(appender: appenders[ReservedTopic.audit]!, logger: logger)
        self.offsets = offsets
        self.logger = logger
    }

    /// The policy in force. Read it once per request and decide with that copy.
    var policy: Policy {
        self.currentPolicy.withLock { $0 }
    }

    /// The appender of `__quarantine`.
    var quarantine: TopicAppender {
        self.appenders[ReservedTopic.quarantine]!
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

    /// An append begun with `beginAppend` finished (successfully or not).
    func endAppend() {
        self.inFlightAppends.wrappingSubtract(1, ordering: .acquiringAndReleasing)
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
        self.listeners.add(listener, topic: topic)
    }

    func removeListener(_ listener: any TopicListener, topic: String) {
        self.listeners.remove(listener, topic: topic)
    }
}
