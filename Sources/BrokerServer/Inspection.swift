import LogStore
import TopicRouter
import WireProtocol

/// The release of this brokerd build, reported by `brokerd --version` and in BROKER_STATS.
package enum BrokerVersion {
    /// The version string.
    package static let current = "0.1.0"
}

/// The operator views — DESCRIBE_TOPICS, GROUPS_QUERY, STATS_QUERY — as pure functions of the policy, the open
/// logs and the committed offsets, so the rules of who sees what are testable without sockets.
///
/// Who may ask (docs/SECURITY.md, "Operator views"): a role with capability `admin` or `audit.read` sees every topic,
/// group and figure. Any other role may describe only the topics it may publish to or subscribe to; a topic it may
/// not see is answered exactly like one that does not exist, so no name leaks. GROUPS_QUERY and STATS_QUERY name
/// topics and groups of every consumer, so they need `admin` or `audit.read` (else CAPABILITY_REQUIRED).
enum Inspection {
    /// Either of these capabilities opens every view.
    static let viewCapabilities: [Capability] = [.admin, .auditRead]

    /// Whether the principal's role holds `admin` or `audit.read`.
    static func seesEverything(_ principal: Principal, policy: Policy) -> Bool {
        Self.viewCapabilities.contains { policy.hasCapability(principal, $0) }
    }

    /// The CAPABILITY_REQUIRED refusal of GROUPS_QUERY and STATS_QUERY.
    static func capabilityRefusal(_ principal: Principal, request: Opcode) -> ErrorFrame {
        ErrorFrame(
            code: .capabilityRequired,
            message: "\(request) needs capability 'admin' or 'audit.read'; role '\(principal.role)' has neither"
        )
    }

    /// TOPIC_LIST's access bits: bit 0 publish, bit 1 subscribe (the whole SUBSCRIBE check).
    static func access(_ principal: Principal, topic: String, policy: Policy) -> UInt8 {
        var access: UInt8 = 0
        if policy.publishDecision(principal: principal, topic: topic) == .allow { access |= 1 }
        if policy.subscribeDecision(principal: principal, topic: topic) == .allow { access |= 2 }
        return access
    }

    /// The answer to DESCRIBE_TOPICS, as the frame to send: TOPIC_DESCRIPTIONS with the declared topics in config
    /// order, then the reserved ones, limited to those the principal may see; with a non-empty `topic`, that one
    /// topic. A topic that is not declared, or that the principal may not see, is ERROR UNKNOWN_TOPIC with the same
    /// message either way.
    static func describe(
        topic filter: String,
        principal: Principal,
        policy: Policy,
        log: (String) -> (any TopicLog)?
    ) -> Frame {
        let everything = Self.seesEverything(principal, policy: policy)
        var described: [TopicDescription] = []
        for topic in policy.config.topics + policy.reservedTopics {
            guard filter.isEmpty || topic.name == filter else { continue }
            let access = Self.access(principal, topic: topic.name, policy: policy)
            guard everything || access != 0 else { continue }
            let reserved = Policy.isReserved(topic.name)
            described.append(Self.description(topic, access: access, reserved: reserved, log: log(topic.name)))
        }
        if !filter.isEmpty && described.isEmpty {
            let message = "no topic '\(filter)' that role '\(principal.role)' may see"
            return .error(ErrorFrame(code: .unknownTopic, message: message))
        }
        return .topicDescriptions(described)
    }

    /// One topic's settings and its log's figures (-1 bytes and zero offsets when it has no open log).
    static func description(
        _ topic: TopicPolicy, access: UInt8, reserved: Bool, log: (any TopicLog)?
    ) -> TopicDescription {
        let storage = log?.storage
        return TopicDescription(
            name: topic.name,
            sensitivity: topic.sensitivity,
            access: access,
            purposes: reserved ? [] : topic.purposes,
            consentScopes: reserved ? [] : topic.consentScopes,
            retentionBytes: topic.retentionBytes ?? -1,
            retentionMillis: topic.retentionMillis ?? -1,
            fsync: Self.fsyncText(topic.fsync),
            compression: topic.compression.rawValue,
            segmentBytes: topic.segmentBytes,
            logBytes: storage?.bytes ?? -1,
            segmentCount: UInt32(clamping: storage?.segments ?? 0),
            startOffset: log?.startOffset ?? 0,
            endOffset: log?.endOffset ?? 0
        )
    }

    /// The fsync setting in config syntax.
    static func fsyncText(_ setting: FsyncSetting) -> String {
        switch setting {
        case .always: "always"
        case .never: "never"
        case .interval(let milliseconds): "interval:\(milliseconds)"
        }
    }

    /// The answer to GROUPS_QUERY: every committed (group, topic) — only `group`'s when it is not empty — with the
    /// topic's offsets and the lag `end - committed`; -1 for start, end and lag when the topic has no open log.
    static func groups(
        group filter: String,
        committed: [(group: String, topic: String, offset: Int64)],
        log: (String) -> (any TopicLog)?
    ) -> [GroupOffset] {
        committed.filter { filter.isEmpty || $0.group == filter }.map { entry in
            guard let topicLog = log(entry.topic) else {
                return GroupOffset(
                    group: entry.group, topic: entry.topic, committedOffset: entry.offset, startOffset: -1,
                    endOffset: -1, lag: -1
                )
            }
            // Read the end once, so that lag = end - committed holds exactly for the figures sent.
            let end = topicLog.endOffset
            return GroupOffset(
                group: entry.group, topic: entry.topic, committedOffset: entry.offset,
                startOffset: topicLog.startOffset, endOffset: end, lag: end - entry.offset
            )
        }
    }

    /// What STATS_QUERY needs besides the policy and the logs.
    struct Runtime {
        /// When the broker started, ms since the epoch.
        var startedAtMillis: Int64
        /// Now, ms since the epoch.
        var nowMillis: Int64
        /// The listening address.
        var listenAddress: String
        /// Connections open now.
        var connections: Int
    }

    /// The answer to STATS_QUERY.
    static func stats(
        runtime: Runtime,
        policy: Policy,
        committed: [(group: String, topic: String, offset: Int64)],
        log: (String) -> (any TopicLog)?
    ) -> BrokerStats {
        let logBytes = (policy.config.topics + policy.reservedTopics).reduce(Int64(0)) { total, topic in
            total + max(0, log(topic.name)?.storage.bytes ?? 0)
        }
        let quarantine = log(ReservedTopic.quarantine)
        let audit = log(ReservedTopic.audit)
        let lags = Self.groups(group: "", committed: committed, log: log).filter { $0.endOffset >= 0 }
        // The largest lag; among equal lags the first in (group, topic) order, so the answer is stable.
        let worst = lags.reduce(nil as GroupOffset?) { worst, entry in
            guard let worst else { return entry }
            return entry.lag > worst.lag ? entry : worst
        }
        return BrokerStats(
            brokerVersion: BrokerVersion.current,
            startedAtMillis: runtime.startedAtMillis,
            uptimeMillis: max(0, runtime.nowMillis - runtime.startedAtMillis),
            listenAddress: runtime.listenAddress,
            policyVersion: policy.policyVersion,
            connections: UInt32(clamping: runtime.connections),
            topicCount: UInt32(clamping: policy.config.topics.count),
            logBytes: logBytes,
            quarantineRecords: quarantine.map { $0.endOffset - $0.startOffset } ?? 0,
            quarantineBytes: quarantine?.storage.bytes ?? 0,
            auditRecords: audit.map { $0.endOffset - $0.startOffset } ?? 0,
            groupCount: UInt32(clamping: Set(committed.map(\.group)).count),
            commitCount: UInt32(clamping: committed.count),
            worstLag: worst?.lag ?? -1,
            worstLagGroup: worst?.group ?? "",
            worstLagTopic: worst?.topic ?? ""
        )
    }
}
