import Locking
import LogStore
import Metrics
import NIOCore
import WireProtocol

/// The broker's metrics (docs/METRICS.md lists each with its type, labels and the question it answers).
///
/// Every metric object is created with the injected factory once: the broker-wide ones here at start, a topic's
/// when its log opens (`TopicMetrics`), a (label value) pair's at its first use, cached. Hot paths hold references
/// and only increment; no record creates a metric object. State gauges (quarantine size, consumer lag, open
/// connections) are set by `BrokerCore.refreshMetrics()` right before each scrape, so they are exact when read.
package final class BrokerMetrics: Sendable {
    /// Records appended to a topic's log, by topic.
    package static let publishedRecords = "brokerd_published_records_total"
    /// Value bytes of the records appended to a topic's log, by topic.
    package static let publishedBytes = "brokerd_published_bytes_total"
    /// Records sent to subscribers in DELIVER frames, by topic.
    package static let deliveredRecords = "brokerd_delivered_records_total"
    /// Value bytes of the records sent to subscribers, by topic.
    package static let deliveredBytes = "brokerd_delivered_bytes_total"
    /// Published records by what became of them, by topic and outcome.
    package static let publishResults = "brokerd_publish_results_total"
    /// Records withheld from a subscriber whose role may not receive any of their consent scopes, by topic.
    package static let withheld = "brokerd_records_withheld_total"
    /// Records policy kept from their topic or from a subscriber, by topic and decision.
    package static let blocked = "brokerd_records_blocked_total"
    /// Refused SUBSCRIBE requests, by error code.
    package static let subscriptionsRefused = "brokerd_subscriptions_refused_total"
    /// Live subscriptions ended because a reload no longer allows them.
    package static let subscriptionsRevoked = "brokerd_subscriptions_revoked_total"
    /// Records held in `__quarantine`.
    package static let quarantineRecords = "brokerd_quarantine_records"
    /// Records held in `__quarantine` that were never replayed.
    package static let quarantinePending = "brokerd_quarantine_pending_records"
    /// Quarantine replay results, by outcome.
    package static let quarantineReplays = "brokerd_quarantine_replays_total"
    /// How long a record spent in `__quarantine` before a replay appended it to its topic.
    package static let quarantineAgeAtReplay = "brokerd_quarantine_age_at_replay_seconds"
    /// End offset minus committed offset, by consumer group and topic.
    package static let consumerLag = "brokerd_consumer_lag_records"
    /// Client connections open now.
    package static let connectionsOpen = "brokerd_connections_open"
    /// Bytes the allocator has handed out and not had back (``AllocatorTuning/heapUsage()``).
    package static let memoryAllocated = "brokerd_memory_allocated_bytes"
    /// Bytes the allocator holds freed, kept for the next allocations (``AllocatorTuning``).
    package static let memoryFreeHeld = "brokerd_memory_free_held_bytes"
    /// Times brokerd gave the allocator's free memory back to the system once it had gone quiet (``QuietTrim``).
    package static let memoryTrims = "brokerd_memory_trims_total"
    /// HELLOs refused (unknown client id or wrong token).
    package static let authFailures = "brokerd_auth_failures_total"
    package static let connectionsRefused = "brokerd_connections_refused_total"
    /// Audit entries made durable in `__audit`, by action.
    package static let auditEntries = "brokerd_audit_entries_total"
    /// Sampled PUBLISH requests' time in each stage of the broker's publish path, by stage (`PublishStageTimers`).
    package static let publishStage = "brokerd_publish_stage_seconds"
    /// Sampled DELIVERs' time in each stage of the broker's delivery path, by stage (`DeliveryStageTimers`).
    package static let deliveryStage = "brokerd_delivery_stage_seconds"
    /// Audit entries whose append to `__audit` failed.
    package static let auditFailures = "brokerd_audit_entries_failed_total"

    /// Histogram buckets for the duration histograms, by metric name, for the Prometheus factory
    /// (`PrometheusMetricsFactory.durationHistogramBuckets`): an fdatasync takes microseconds to tens of
    /// milliseconds; a quarantined record waits minutes to weeks for review.
    package static let durationBuckets: [String: [Duration]] = {
        let storage: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
            .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        let minute = 60
        let hour = 60 * minute
        let day = 24 * hour
        let review: [Duration] = [minute, 5 * minute, 15 * minute, hour, 4 * hour, 12 * hour, day, 3 * day, 7 * day,
            30 * day].map { .seconds($0) }
        return [
            LogMetrics.fsyncDurationName: storage,
            LogMetrics.appendDurationName: storage,
            BrokerMetrics.quarantineAgeAtReplay: review,
            BrokerMetrics.publishStage: BrokerMetrics.publishStageBuckets,
            BrokerMetrics.deliveryStage: BrokerMetrics.publishStageBuckets,
        ]
    }()

    /// A publish (or delivery) stage takes microseconds on an idle broker and milliseconds behind a busy disk or event loop; the
    /// buckets around 1-3 ms tell a 2 ms latency budget's p99 apart.
    package static let publishStageBuckets: [Duration] = [
        .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250),
        .microseconds(500), .milliseconds(1), .milliseconds(1) + .microseconds(500), .milliseconds(2),
        .milliseconds(3), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .seconds(1),
    ]

    /// Histogram buckets for the value histograms, by metric name (`PrometheusMetricsFactory.valueHistogramBuckets`).
    package static let valueBuckets: [String: [Double]] = [
        LogMetrics.groupCommitRecordsName: [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000]
    ]

    /// The factory every metric object of this broker is made with.
    package let factory: any MetricsFactory
    let authFailures: Counter
    let connectionsRefused: Counter
    let connectionsOpen: Gauge
    let memoryAllocated: Gauge
    let memoryFreeHeld: Gauge
    let subscriptionsRevoked: Counter
    let quarantineRecords: Gauge
    let quarantinePending: Gauge
    let quarantineAgeAtReplay: Timer
    let auditFailures: Counter
    let publishStages: PublishStageTimers
    let deliveryStages: DeliveryStageTimers
    private let replays: [String: Counter]
    private let auditByAction: [String: Counter]
    private let refusedByReason: KeyedMetrics<Counter>
    private let lagByGroupTopic: KeyedMetrics<Gauge>
    private let auditOtherActions: KeyedMetrics<Counter>

    /// The broker-wide metric objects, made with `factory`.
    package init(factory: any MetricsFactory) {
        self.factory = factory
        self.authFailures = Counter(label: Self.authFailures, factory: factory)
        self.connectionsRefused = Counter(label: Self.connectionsRefused, factory: factory)
        self.connectionsOpen = Gauge(label: Self.connectionsOpen, factory: factory)
        self.memoryAllocated = Gauge(label: Self.memoryAllocated, factory: factory)
        self.memoryFreeHeld = Gauge(label: Self.memoryFreeHeld, factory: factory)
        self.subscriptionsRevoked = Counter(label: Self.subscriptionsRevoked, factory: factory)
        self.quarantineRecords = Gauge(label: Self.quarantineRecords, factory: factory)
        self.quarantinePending = Gauge(label: Self.quarantinePending, factory: factory)
        self.quarantineAgeAtReplay = Timer(label: Self.quarantineAgeAtReplay, factory: factory)
        self.auditFailures = Counter(label: Self.auditFailures, factory: factory)
        self.publishStages = PublishStageTimers(factory: factory)
        self.deliveryStages = DeliveryStageTimers(factory: factory)
        self.replays = Dictionary(
            uniqueKeysWithValues: ReplayResult.metricOutcomes.map {
                ($0, Counter(label: Self.quarantineReplays, dimensions: [("outcome", $0)], factory: factory))
            }
        )
        self.auditByAction = Dictionary(
            uniqueKeysWithValues: AuditAction.all.map {
                ($0, Counter(label: Self.auditEntries, dimensions: [("action", $0)], factory: factory))
            }
        )
        self.refusedByReason = KeyedMetrics { reason in
            Counter(label: Self.subscriptionsRefused, dimensions: [("reason", reason)], factory: factory)
        }
        self.lagByGroupTopic = KeyedMetrics { key in
            let (group, topic) = OffsetStore.split(key) ?? (key, "")
            return Gauge(label: Self.consumerLag, dimensions: [("group", group), ("topic", topic)], factory: factory)
        }
        self.auditOtherActions = KeyedMetrics { action in
            Counter(label: Self.auditEntries, dimensions: [("action", action)], factory: factory)
        }
    }

    /// A SUBSCRIBE was refused with `code`.
    func subscriptionRefused(_ code: ErrorCode) {
        self.refusedByReason[code.name].increment()
    }

    /// A replay request for one offset was answered.
    func replayAnswered(_ result: ReplayResult) {
        self.replays[result.metricOutcome]?.increment()
    }

    /// An audit entry of `action` is durable.
    func auditWritten(_ action: String) {
        (self.auditByAction[action] ?? self.auditOtherActions[action]).increment()
    }

    /// Sets the lag gauge of (group, topic).
    func consumerLag(group: String, topic: String, records: Int64) {
        self.lagByGroupTopic[OffsetStore.key(group: group, topic: topic)].record(records)
    }

    /// The metric objects of one topic, made with this broker's factory.
    func makeTopicMetrics(topic: String) -> TopicMetrics {
        TopicMetrics(topic: topic, factory: self.factory)
    }

}

/// Metric objects keyed by a label value, each created at its key's first use and kept: later uses only look up.
final class KeyedMetrics<Metric: Sendable>: Sendable {
    private let make: @Sendable (String) -> Metric
    private let cache = Locked<[String: Metric]>([:])

    init(make: @escaping @Sendable (String) -> Metric) {
        self.make = make
    }

    subscript(key: String) -> Metric {
        self.cache.withLock { cache in
            if let metric = cache[key] { return metric }
            let metric = self.make(key)
            cache[key] = metric
            return metric
        }
    }
}

/// What became of one published record (`brokerd_publish_results_total{outcome}`).
enum PublishOutcome: Int, CaseIterable {
    /// Appended to its topic.
    case ok
    /// Not appended: its dedupe key was known (answered with the original's offset).
    case duplicate
    /// Appended to `__quarantine` instead of its topic (by a record rule or a limiter with action quarantine).
    case quarantined
    /// Refused by a publish limiter (RATE_LIMITED).
    case rateLimited
    /// Refused by policy or as an invalid request; stored nowhere.
    case refused
    /// Not stored because storage failed or the broker was shutting down.
    case failed

    /// The label value.
    var label: String {
        switch self {
        case .ok: "ok"
        case .duplicate: "duplicate"
        case .quarantined: "quarantined"
        case .rateLimited: "rate_limited"
        case .refused: "refused"
        case .failed: "failed"
        }
    }

    /// The outcome a PUBLISH_ACK result reports.
    init(_ result: PublishResult) {
        if result.isDuplicate {
            self = .duplicate
            return
        }
        switch result.code {
        case .ok: self = .ok
        case .quarantined: self = .quarantined
        case .rateLimited: self = .rateLimited
        case .storageFailure, .storageFull, .shuttingDown, .internal: self = .failed
        default: self = .refused
        }
    }
}

/// How many records of one PUBLISH had each outcome; counted on the stack, then added to the counters once.
struct PublishTally {
    private var counts: (Int, Int, Int, Int, Int, Int) = (0, 0, 0, 0, 0, 0)

    /// A tally of the results of one PUBLISH_ACK.
    init(_ results: [PublishResult]) {
        for result in results { self.add(PublishOutcome(result), 1) }
    }

    /// `count` records with `outcome`.
    init(_ outcome: PublishOutcome, count: Int) {
        self.add(outcome, count)
    }

    mutating func add(_ outcome: PublishOutcome, _ count: Int) {
        switch outcome {
        case .ok: self.counts.0 += count
        case .duplicate: self.counts.1 += count
        case .quarantined: self.counts.2 += count
        case .rateLimited: self.counts.3 += count
        case .refused: self.counts.4 += count
        case .failed: self.counts.5 += count
        }
    }

    subscript(outcome: PublishOutcome) -> Int {
        switch outcome {
        case .ok: self.counts.0
        case .duplicate: self.counts.1
        case .quarantined: self.counts.2
        case .rateLimited: self.counts.3
        case .refused: self.counts.4
        case .failed: self.counts.5
        }
    }
}

/// Why policy kept a record from its topic or its subscriber (`brokerd_records_blocked_total{decision}`).
enum BlockDecision: Int, CaseIterable {
    case quarantine, refuse, rateLimit, withhold

    var label: String {
        switch self {
        case .quarantine: "quarantine"
        case .refuse: "refuse"
        case .rateLimit: "rate_limit"
        case .withhold: "withhold"
        }
    }
}

/// One topic's metric objects, created once when its log opens; publishers, the appender and subscriptions hold
/// a reference and only increment.
final class TopicMetrics: Sendable {
    let publishedRecords: Counter
    let publishedBytes: Counter
    let deliveredRecords: Counter
    let deliveredBytes: Counter
    let withheld: Counter
    /// Indexed by `PublishOutcome.rawValue`.
    private let results: [Counter]
    /// Indexed by `BlockDecision.rawValue`.
    private let blocked: [Counter]

    init(topic: String, factory: any MetricsFactory) {
        let dimensions = [("topic", topic)]
        self.publishedRecords = Counter(label: BrokerMetrics.publishedRecords, dimensions: dimensions, factory: factory)
        self.publishedBytes = Counter(label: BrokerMetrics.publishedBytes, dimensions: dimensions, factory: factory)
        self.deliveredRecords = Counter(label: BrokerMetrics.deliveredRecords, dimensions: dimensions, factory: factory)
        self.deliveredBytes = Counter(label: BrokerMetrics.deliveredBytes, dimensions: dimensions, factory: factory)
        self.withheld = Counter(label: BrokerMetrics.withheld, dimensions: dimensions, factory: factory)
        self.results = PublishOutcome.allCases.map {
            Counter(
                label: BrokerMetrics.publishResults, dimensions: dimensions + [("outcome", $0.label)], factory: factory
            )
        }
        self.blocked = BlockDecision.allCases.map {
            Counter(label: BrokerMetrics.blocked, dimensions: dimensions + [("decision", $0.label)], factory: factory)
        }
    }

    /// Counts the outcomes of one PUBLISH's records, and the blocked ones among them.
    func count(_ tally: PublishTally) {
        for outcome in PublishOutcome.allCases {
            let count = tally[outcome]
            guard count > 0 else { continue }
            self.results[outcome.rawValue].increment(by: count)
            let blocked: BlockDecision? =
                switch outcome {
                case .quarantined: .quarantine
                case .refused: .refuse
                case .rateLimited: .rateLimit
                case .ok, .duplicate, .failed: nil
                }
            if let blocked { self.blocked[blocked.rawValue].increment(by: count) }
        }
    }

    /// `count` records were withheld from a subscriber for consent.
    func withheld(_ count: Int) {
        guard count > 0 else { return }
        self.withheld.increment(by: count)
        self.blocked[BlockDecision.withhold.rawValue].increment(by: count)
    }
}

extension ReplayResult {
    /// Every value of the `outcome` label of `brokerd_quarantine_replays_total`.
    static let metricOutcomes = ["replayed", "already_replayed", "still_quarantined", "not_found", "invalid"]

    /// This result's `outcome` label.
    var metricOutcome: String {
        switch self.outcome {
        case .replayed: self.isEarlier ? "already_replayed" : "replayed"
        case .stillQuarantined: "still_quarantined"
        case .notFound: "not_found"
        case .invalid: "invalid"
        }
    }
}

/// Where a PUBLISH request's time goes inside the broker, for the first request of each millisecond of a connection
/// when its records were all accepted and none held by a "delay" limiter (those go through publish groups; every
/// request of a steady producer does): `brokerd_publish_stage_seconds` by `stage`, from the moment the broker began
/// its checks, right after the frame's decode:
/// - `to_appender`: until its records were handed to the topic's appender (its own checks, and those of the
///   requests decoded with it, on the connection's event loop);
/// - `to_durable`: from there until the log reported them durable, or failed (the appender's queue, the batch's
///   encoding, compression and write, and the fdatasync under `always`);
/// - `to_ack`: from there until the event loop settled the request and encoded its PUBLISH_ACK (the hop back to
///   a busy event loop; dedupe keys committed);
/// - `total`: the three together.
/// Not timed: bytes waiting in the socket before the decode, and the write of the PUBLISH_ACK at the end of the
/// event loop's tick. At most one request per connection and millisecond keeps the clock reads and histogram updates
/// off nearly every request of a pipelining producer (pipelined-single sends a few hundred a millisecond), while a
/// connection that sends less often has every request timed.
package final class PublishStageTimers: Sendable {
    /// The label values of `stage`, in path order.
    package static let stages = ["to_appender", "to_durable", "to_ack", "total"]

    private let toAppender: Timer
    private let toDurable: Timer
    private let toAck: Timer
    private let total: Timer

    init(factory: any MetricsFactory) {
        (self.toAppender, self.toDurable, self.toAck, self.total) = Timer.stages(
            Self.stages, of: BrokerMetrics.publishStage, factory: factory
        )
    }

    /// The request decoded at `decodedAt` (monotonic nanoseconds) was handed to its appender at `handedAt`.
    func handed(decodedAt: UInt64, handedAt: UInt64) {
        self.toAppender.record(from: decodedAt, to: handedAt)
    }

    /// The request decoded at `decodedAt`, handed to its appender at `handedAt` and durable at `durableAt`, is
    /// answered now.
    func answered(decodedAt: UInt64, handedAt: UInt64, durableAt: UInt64) {
        let now = NIODeadline.now().uptimeNanoseconds
        self.toDurable.record(from: handedAt, to: durableAt)
        self.toAck.record(from: durableAt, to: now)
        self.total.record(from: decodedAt, to: now)
    }

    /// `end - start`, 0 if `end` is earlier. The times are read in that order (`durableAt` on the log's thread, the
    /// others on the event loop, each after the one before it happened), but a metric never traps the broker over
    /// a clock: `Int64(end - start)` would for an `end` read before `start` on another core.
    package static func nanoseconds(from start: UInt64, to end: UInt64) -> Int64 {
        max(0, Int64(bitPattern: end &- start))
    }
}

/// Where sampled DELIVERs spend their time inside the broker (`brokerd_delivery_stage_seconds{stage}`), the delivery
/// path's counterpart of `PublishStageTimers`: from the log reporting new records readable (durable, for
/// `fsync = "always"`) until the subscription's event loop runs the wake-up (`to_event_loop`), until the DELIVER of
/// the read that wake-up started is encoded (`to_encoded`: the read, the consent verdicts, the encoding), until its
/// bytes are written to the socket (`to_written`: the end of the event loop's tick, and a consumer that reads slowly
/// fills the socket's buffer and makes this one long), and all three (`total`).
///
/// The first wake-up of each millisecond of each subscription that starts a read is timed (a subscription that
/// keeps up is woken by every group commit of its topic); DELIVERs sent on credit or as a read's continuation are
/// not (no record of theirs was just reported readable).
package final class DeliveryStageTimers: Sendable {
    /// The label values of `stage`, in path order.
    package static let stages = ["to_event_loop", "to_encoded", "to_written", "total"]

    private let toEventLoop: Timer
    private let toEncoded: Timer
    private let toWritten: Timer
    private let total: Timer

    init(factory: any MetricsFactory) {
        (self.toEventLoop, self.toEncoded, self.toWritten, self.total) = Timer.stages(
            Self.stages, of: BrokerMetrics.deliveryStage, factory: factory
        )
    }

    /// The DELIVER of records reported readable at `notifiedAt` (monotonic nanoseconds), whose wake-up ran at
    /// `wokeAt`, was encoded at `encodedAt`.
    func encoded(notifiedAt: UInt64, wokeAt: UInt64, encodedAt: UInt64) {
        self.toEventLoop.record(from: notifiedAt, to: wokeAt)
        self.toEncoded.record(from: wokeAt, to: encodedAt)
    }

    /// That DELIVER's bytes are written to the socket now.
    func written(notifiedAt: UInt64, encodedAt: UInt64) {
        let now = NIODeadline.now().uptimeNanoseconds
        self.toWritten.record(from: encodedAt, to: now)
        self.total.record(from: notifiedAt, to: now)
    }
}

extension Timer {
    /// The timers of the stage histogram `metric`, one per label of `stages` in that order (`PublishStageTimers`,
    /// `DeliveryStageTimers`: four stages each, the last the total).
    fileprivate static func stages(
        _ stages: [String], of metric: String, factory: any MetricsFactory
    ) -> (Timer, Timer, Timer, Timer) {
        precondition(stages.count == 4, "\(metric) has four stages")
        let timers = stages.map { Timer(label: metric, dimensions: [("stage", $0)], factory: factory) }
        return (timers[0], timers[1], timers[2], timers[3])
    }

    /// Records the interval from `start` to `end` (monotonic nanoseconds), 0 if `end` is earlier
    /// (`PublishStageTimers.nanoseconds(from:to:)`).
    fileprivate func record(from start: UInt64, to end: UInt64) {
        self.recordNanoseconds(PublishStageTimers.nanoseconds(from: start, to: end))
    }
}
