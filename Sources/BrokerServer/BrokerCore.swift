import Locking
import Logging
import LogStore
import NIOCore
import Synchronization
import TopicRouter
import WireProtocol

/// Who to wake when a topic's visible end moves. Every append goes through a `TopicAppender`, which notifies here.
final class TopicListeners: Sendable {
    private let table = Locked<[String: [ObjectIdentifier: any TopicListener]]>([:])

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

/// A reload that changed nothing, and why (CONFIG_REJECTED on the wire).
package struct ReloadRejected: Error, Equatable, CustomStringConvertible {
    package var message: String
    package var description: String { self.message }
}

/// The open topics: each log with its appender and, for declared topics, its dedupe gate. Topics are added by a
/// config reload, never removed while running.
final class TopicTable: Sendable {
    struct Entry: Sendable {
        let log: any TopicLog
        let appender: TopicAppender
        /// The topic's metric objects (also the appender's).
        var metrics: TopicMetrics { self.appender.metrics }
        /// Declared topics only; reserved topics are written by the broker and carry no producer keys.
        let gate: DedupeGate?
    }

    let listeners = TopicListeners()
    private let entries = Locked<[String: Entry]>([:])
    /// Every declared topic's dedupe floor: `__quarantine` keeps what any of them has not yet snapshotted.
    private let floors = Locked<[DedupeFloor]>([])
    private let backend: FileLogBackend
    private let logger: Logger
    /// Makes each topic's metric objects when its log opens.
    let metrics: BrokerMetrics

    init(backend: FileLogBackend, logger: Logger, metrics: BrokerMetrics) {
        self.backend = backend
        self.logger = logger
        self.metrics = metrics
    }

    func log(for topic: String) -> (any TopicLog)? { self.entries.withLock { $0[topic]?.log } }
    func appender(for topic: String) -> TopicAppender? { self.entries.withLock { $0[topic]?.appender } }
    func gate(for topic: String) -> DedupeGate? { self.entries.withLock { $0[topic]?.gate } }
    /// The metric objects of an open topic; nil for a topic with no open log (nothing is counted for it).
    func metrics(for topic: String) -> TopicMetrics? { self.entries.withLock { $0[topic]?.metrics } }
    var gates: [DedupeGate] { self.entries.withLock { $0.values.compactMap(\.gate) } }
    /// The sum of every open log's end offset: it grows with every append (``QuietTrim``'s activity).
    var appendActivity: Int64 { self.entries.withLock { $0.values.reduce(0) { $0 &+ $1.log.endOffset } } }

    /// Opens `__quarantine` and `__audit` (first: the gates of declared topics read `__quarantine`).
    func openReserved(_ topics: [TopicPolicy]) async throws {
        for topic in topics {
            var config = TopicLogConfig(topic)
            if topic.name == ReservedTopic.quarantine {
                // Weak: the table owns the log that owns this closure. Without the table, retention keeps everything.
                config.retentionFloor = { [weak self] in
                    self.map { table in DedupeFloor.quarantineFloor(table.floors.withLock { $0 }) } ?? 0
                }
            }
            self.add(try await self.open(topic, config: config), gate: nil)
        }
    }

    /// Opens a declared topic's log and its dedupe gate, recovering both; retention waits for the gate's snapshots.
    func openDeclared(_ topic: TopicPolicy) async throws {
        guard self.log(for: topic.name) == nil, let quarantine = self.log(for: ReservedTopic.quarantine) else { return }
        let floor = DedupeFloor()
        var config = TopicLogConfig(topic)
        config.retentionFloor = floor.topicFloor
        let log = try await self.open(topic, config: config)
        let gate = try await DedupeGate.open(
            topic: topic.name, windowMillis: topic.dedupeWindowMillis, maxKeys: topic.dedupeMaxKeys,
            directory: self.backend.topicDirectory(name: topic.name), topicLog: log, quarantineLog: quarantine,
            floor: floor, logger: self.logger, metrics: self.metrics.factory
        )
        self.floors.withLock { $0.append(floor) }
        self.add(log, gate: gate)
    }

    private func open(_ topic: TopicPolicy, config: TopicLogConfig) async throws -> any TopicLog {
        let log = try await self.backend.openTopic(name: topic.name, config: config)
        self.logger.info("topic open", metadata: [
            "brokerd.topic": "\(topic.name)", "brokerd.class": "\(topic.sensitivity)",
            "brokerd.start": "\(log.startOffset)", "brokerd.end": "\(log.endOffset)",
        ])
        return log
    }

    private func add(_ log: any TopicLog, gate: DedupeGate?) {
        let metrics = self.metrics.makeTopicMetrics(topic: log.name)
        let appender = TopicAppender(log: log, metrics: metrics, listeners: self.listeners)
        let entry = Entry(log: log, appender: appender, gate: gate)
        self.entries.withLock { entries in
            if entries[log.name] == nil { entries[log.name] = entry }
        }
    }
}

/// State shared by every connection: the policy, the open topic logs, committed offsets, the audit ledger,
/// the connections to tell when the policy changes, and topic listeners.
///
/// Shared mutable parts (policy, topic table, connection registry, listeners) each sit behind a `Mutex`; callbacks
/// run outside the locks.
final class BrokerCore: Sendable {
    private let currentPolicy: Locked<(policy: Policy, generation: UInt64)>
    let settings: ServerSettings
    let backend: any LogBackend
    let offsets: OffsetStore
    let logger: Logger
    let topics: TopicTable
    /// Connection id → how to tell that connection the policy changed (it hops to its own event loop).
    private let policyWatchers = Locked<[UInt64: @Sendable () -> Void]>([:])
    private let inFlightAppends = Atomic<Int>(0)
    private let shuttingDown = Atomic<Bool>(false)
    private let nextSessionID = Atomic<UInt64>(1)
    private let openConnections = Atomic<Int>(0)
    private let refusedConnections = Atomic<Int>(0)

    /// The ledger of every decision (`__audit`).
    let audit: AuditLedger

    /// Replays quarantined records, at most once each.
    let replayer: QuarantineReplayer

    /// The rate limiters and contact caps.
    let limits: LimiterEngine

    /// The broker-wide metric objects (each topic's are on its appender).
    let metrics: BrokerMetrics

    /// Re-reads the config for a reload; nil when there is nothing to re-read (the embedded default).
    let reloadSource: (@Sendable () throws -> BrokerConfig)?
    /// One reload at a time.
    private let reloading = Locked(false)

    /// When this core was created (the broker's start), ms since the Unix epoch.
    let startedAtMillis = currentTimeMillis()
    /// The address the broker listens on, set once it is bound (BROKER_STATS).
    private let boundAddress = Locked("")

    /// - Parameters:
    ///   - topics: every declared topic and the reserved topics (`__quarantine`, `__audit`), open.
    ///   - replays: the durable record of quarantine replays.
    ///   - reloadSource: produces the new config on SIGHUP or ADMIN_RELOAD.
    init(
        policy: Policy, backend: any LogBackend, topics: TopicTable, offsets: OffsetStore,
        replays: DurableTable, limits: LimiterEngine, reloadSource: (@Sendable () throws -> BrokerConfig)?,
        logger: Logger
    ) {
        self.limits = limits
        self.metrics = topics.metrics
        self.currentPolicy = Locked((policy, 1))
        self.settings = policy.config.server
        self.backend = backend
        self.topics = topics
        self.audit = AuditLedger(
            appender: topics.appender(for: ReservedTopic.audit)!, metrics: topics.metrics, logger: logger
        )
        self.replayer = QuarantineReplayer(
            table: replays, quarantineLog: topics.log(for: ReservedTopic.quarantine)!, topics: topics,
            metrics: topics.metrics
        )
        self.reloadSource = reloadSource
        self.offsets = offsets
        self.logger = logger
    }

    /// The policy in force. Read it once per request and decide with that copy.
    var policy: Policy {
        self.currentPolicy.withLock { $0.policy }
    }

    /// The policy in force and its generation, which grows by one with every applied reload.
    var policyState: (policy: Policy, generation: UInt64) {
        self.currentPolicy.withLock { $0 }
    }

    /// The appender of `__quarantine`.
    var quarantine: TopicAppender {
        self.topics.appender(for: ReservedTopic.quarantine)!
    }

    /// The open log of a topic.
    func log(for topic: String) -> (any TopicLog)? {
        self.topics.log(for: topic)
    }

    /// The ordered, batching appender of a topic.
    func appender(for topic: String) -> TopicAppender? {
        self.topics.appender(for: topic)
    }

    /// The dedupe gate of a declared topic.
    func gate(for topic: String) -> DedupeGate? {
        self.topics.gate(for: topic)
    }

    // MARK: reload

    /// Tell this connection (by calling `notify`, from any thread) whenever the policy changes.
    func watchPolicy(connectionID: UInt64, _ notify: @escaping @Sendable () -> Void) {
        self.policyWatchers.withLock { $0[connectionID] = notify }
    }

    func unwatchPolicy(connectionID: UInt64) {
        self.policyWatchers.withLock { _ = $0.removeValue(forKey: connectionID) }
    }

    /// Re-reads the config and applies it atomically: validated first (a bad config changes nothing), new topics'
    /// logs opened, then the policy swapped and every connection told, so subscriptions the new policy refuses end
    /// at once. Audited either way. Storage and `[server]` settings of running topics apply at the next start.
    func reload(requestedBy principal: String) async -> Result<ReloadOK, ReloadRejected> {
        let claimed = self.reloading.withLock { busy in
            defer { busy = true }
            return !busy
        }
        guard claimed else {
            return .failure(ReloadRejected(message: "a reload is already in progress; try again"))
        }
        defer { self.reloading.withLock { $0 = false } }
        let old = self.policy
        func reject(_ message: String) -> Result<ReloadOK, ReloadRejected> {
            self.logger.error("config reload rejected; the running policy stays", metadata: ["brokerd.reason": "\(message)"])
            self.audit.record(AuditEntry(
                time: currentTimeMillis(), principal: principal, action: AuditAction.configReloadReject, topic: "",
                decision: "refuse", reason: "CONFIG_REJECTED", policyVersion: old.policyVersion, detail: message
            ))
            return .failure(ReloadRejected(message: message))
        }
        guard let source = self.reloadSource else {
            return reject("brokerd runs on the embedded default config; start it with --config FILE to reload")
        }
        let policy: Policy
        do {
            policy = try Policy(config: try source())
        } catch {
            return reject("\(error)")
        }
        do {
            try self.limits.reload(policy)
        } catch {
            return reject("limiters: \(error)")
        }
        var added: [String] = []
        var notes: [String] = []
        for topic in policy.config.topics {
            if let running = old.topic(named: topic.name) {
                if TopicLogConfig(running) != TopicLogConfig(topic) || running.dedupeWindowMillis != topic.dedupeWindowMillis
                    || running.dedupeMaxKeys != topic.dedupeMaxKeys
                {
                    notes.append("storage and dedupe settings of '\(topic.name)' apply at the next start")
                }
                continue
            }
            guard self.log(for: topic.name) == nil else { continue }
            do {
                try await self.topics.openDeclared(topic)
                added.append(topic.name)
            } catch {
                return reject("cannot open the log of new topic '\(topic.name)': \(error)")
            }
        }
        if policy.config.server != old.config.server { notes.append("[server] settings apply at the next start") }
        if policy.config.metrics != old.config.metrics { notes.append("[metrics] settings apply at the next start") }
        self.currentPolicy.withLock { $0 = (policy, $0.generation + 1) }
        let message = "policy \(policy.policyVersion) replaces \(old.policyVersion)"
            + (added.isEmpty ? "" : "; topics opened: \(added.joined(separator: ", "))")
            + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; "))
        self.logger.notice("config reloaded", metadata: ["brokerd.policy_version": "\(policy.policyVersion)", "brokerd.detail": "\(message)"])
        self.audit.record(AuditEntry(
            time: currentTimeMillis(), principal: principal, action: AuditAction.configReloadAccept, topic: "",
            decision: "allow", policyVersion: policy.policyVersion, detail: message
        ))
        let watchers = self.policyWatchers.withLock { Array($0.values) }
        for notify in watchers { notify() }
        return .success(ReloadOK(policyVersion: policy.policyVersion, message: message))
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
            self.refusedConnections.wrappingAdd(1, ordering: .relaxed)
            return false
        }
        return true
    }

    /// Connections refused at the limit since start.
    var refusedConnectionCount: Int { self.refusedConnections.load(ordering: .relaxed) }

    func connectionClosed() {
        self.openConnections.wrappingSubtract(1, ordering: .relaxed)
    }

    var connectionCount: Int { self.openConnections.load(ordering: .relaxed) }

    /// The address the broker listens on (`HOST:PORT`); empty until it is bound.
    var listenAddress: String {
        get { self.boundAddress.withLock { $0 } }
        set { self.boundAddress.withLock { $0 = newValue } }
    }

    // MARK: metrics

    /// Sets the state gauges from the state itself, right before a scrape: open connections, the records held in
    /// `__quarantine` and how many of them were never replayed, and every committed (group, topic)'s lag (the
    /// topic's end offset minus the committed offset). The lag gauge of a (group, topic) is created at the first
    /// scrape after its first commit.
    func refreshMetrics() {
        self.metrics.connectionsOpen.record(self.connectionCount)
        if let heap = AllocatorTuning.heapUsage() {
            self.metrics.memoryAllocated.record(heap.allocated)
            self.metrics.memoryFreeHeld.record(heap.freeHeld)
        }
        if let quarantine = self.log(for: ReservedTopic.quarantine) {
            let (start, end) = (quarantine.startOffset, quarantine.endOffset)
            let replayed = self.replayer.replayedCount(in: start..<end)
            self.metrics.quarantineRecords.record(end - start)
            self.metrics.quarantinePending.record(max(0, end - start - Int64(replayed)))
        }
        for (group, topic, committed) in self.offsets.allCommitted() {
            guard let log = self.log(for: topic) else { continue }
            self.metrics.consumerLag(group: group, topic: topic, records: max(0, log.endOffset - committed))
        }
    }

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
        self.topics.listeners.add(listener, topic: topic)
    }

    func removeListener(_ listener: any TopicListener, topic: String) {
        self.topics.listeners.remove(listener, topic: topic)
    }
}
