import ArgumentParser
import BrokerClient
import Foundation
import WireProtocol

struct TopicsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topics",
        abstract: "List topics with their class, offsets and what this principal may do.",
        discussion: """
            --describe adds each topic's purposes, consent scopes, retention, fsync policy, compression and log size \
            (DESCRIBE_TOPICS): a role with the admin or audit.read capability sees every topic, any other role the \
            topics it may publish to or subscribe to.
            """
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "Policy settings and storage figures of each topic.")
    var describe = false

    @Flag(name: .long, help: "One JSON document: {\"topics\":[...]}.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            if self.describe {
                let topics: [TopicDescription]
                do {
                    topics = try await client.describeTopics()
                } catch {
                    await client.close()
                    throw error
                }
                await client.close()
                if self.json {
                    JSON.object([("topics", .array(topics.map(describedJSON)))]).print()
                } else {
                    printTable(describedHeader, topics.map(describedRow))
                }
                return
            }
            let topics: [TopicInfo]
            do {
                topics = try await client.listTopics()
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if self.json {
                JSON.object([("topics", .array(topics.map(listedJSON)))]).print()
            } else {
                printTable(["TOPIC", "CLASS", "START", "END", "ACCESS"], topics.map(listedRow))
            }
        }
    }
}

/// "publish,subscribe", "publish", "subscribe" or "-" for TOPIC_LIST access bits.
func accessText(_ access: UInt8) -> String {
    let words = [access & 1 != 0 ? "publish" : nil, access & 2 != 0 ? "subscribe" : nil].compactMap { $0 }
    return words.isEmpty ? "-" : words.joined(separator: ",")
}

func listedRow(_ topic: TopicInfo) -> [String] {
    [topic.name, topic.sensitivity, "\(topic.startOffset)", "\(topic.endOffset)", accessText(topic.access)]
}

func listedJSON(_ topic: TopicInfo) -> JSON {
    .object([
        ("name", .string(topic.name)), ("class", .string(topic.sensitivity)),
        ("publish", .bool(topic.access & 1 != 0)), ("subscribe", .bool(topic.access & 2 != 0)),
        ("start_offset", .int(topic.startOffset)), ("end_offset", .int(topic.endOffset)),
    ])
}

/// The header of `topics --describe`.
let describedHeader = [
    "TOPIC", "CLASS", "ACCESS", "RETENTION", "FSYNC", "CODEC", "SIZE", "SEGMENTS", "START", "END", "PURPOSES",
    "CONSENT_SCOPES",
]

/// Retention for people: `forever`, `7d`, `1.0 GiB`, or `7d or 1.0 GiB` (whichever deletes first).
func retentionText(bytes: Int64, millis: Int64) -> String {
    let parts = [millis >= 0 ? durationText(millis: millis) : nil, bytes >= 0 ? byteText(bytes) : nil].compactMap { $0 }
    return parts.isEmpty ? "forever" : parts.joined(separator: " or ")
}

func describedRow(_ topic: TopicDescription) -> [String] {
    [
        topic.name, topic.sensitivity, accessText(topic.access),
        retentionText(bytes: topic.retentionBytes, millis: topic.retentionMillis), topic.fsync, topic.compression,
        topic.logBytes < 0 ? "-" : byteText(topic.logBytes), "\(topic.segmentCount)", "\(topic.startOffset)",
        "\(topic.endOffset)", topic.purposes.isEmpty ? "-" : topic.purposes.joined(separator: ","),
        topic.consentScopes.isEmpty ? "-" : topic.consentScopes.joined(separator: ","),
    ]
}

func describedJSON(_ topic: TopicDescription) -> JSON {
    .object([
        ("name", .string(topic.name)), ("class", .string(topic.sensitivity)),
        ("publish", .bool(topic.access & 1 != 0)), ("subscribe", .bool(topic.access & 2 != 0)),
        ("purposes", .strings(topic.purposes)), ("consent_scopes", .strings(topic.consentScopes)),
        ("retention_bytes", .nonNegative(topic.retentionBytes)), ("retention_ms", .nonNegative(topic.retentionMillis)),
        ("fsync", .string(topic.fsync)), ("compression", .string(topic.compression)),
        ("segment_bytes", .int(topic.segmentBytes)), ("log_bytes", .nonNegative(topic.logBytes)),
        ("segments", .int(Int64(topic.segmentCount))), ("start_offset", .int(topic.startOffset)),
        ("end_offset", .int(topic.endOffset)),
    ])
}

struct GroupsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "groups",
        abstract: "Committed offset, end offset and lag of each consumer group on each topic "
            + "(needs admin or audit.read)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: "Only this consumer group.")
    var group: String = ""

    @Flag(name: .long, help: "One JSON document: {\"groups\":[...]}.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            let groups: [GroupOffset]
            do {
                groups = try await client.groups(group: self.group)
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if self.json {
                JSON.object([("groups", .array(groups.map(groupJSON)))]).print()
            } else {
                printTable(["GROUP", "TOPIC", "COMMITTED", "START", "END", "LAG"], groups.map(groupRow))
            }
        }
    }
}

func groupRow(_ entry: GroupOffset) -> [String] {
    let noLog = entry.endOffset < 0
    return [
        entry.group, entry.topic, "\(entry.committedOffset)", noLog ? "-" : "\(entry.startOffset)",
        noLog ? "-" : "\(entry.endOffset)", noLog ? "- (no open log)" : "\(entry.lag)",
    ]
}

func groupJSON(_ entry: GroupOffset) -> JSON {
    let noLog = entry.endOffset < 0
    return .object([
        ("group", .string(entry.group)), ("topic", .string(entry.topic)),
        ("committed_offset", .int(entry.committedOffset)),
        ("start_offset", noLog ? .null : .int(entry.startOffset)),
        ("end_offset", noLog ? .null : .int(entry.endOffset)),
        ("lag", noLog ? .null : .int(entry.lag)),
    ])
}

struct StatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stat",
        abstract: "A one-screen summary of the broker (needs admin or audit.read)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "One JSON document.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            let stats: BrokerStats
            do {
                stats = try await client.stats()
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if self.json {
                statJSON(stats).print()
            } else {
                for line in statLines(stats) { print(line) }
            }
        }
    }
}

/// `stat`'s screen: one aligned line per figure.
func statLines(_ stats: BrokerStats) -> [String] {
    let started = isoTime(millis: "\(stats.startedAtMillis)")
    let worst =
        stats.worstLag < 0
        ? "-" : "\(stats.worstLag) (group \(stats.worstLagGroup) on \(stats.worstLagTopic))"
    let rows = [
        ["version", "brokerd \(stats.brokerVersion)"],
        ["uptime", "\(durationText(millis: stats.uptimeMillis)) (since \(started))"],
        ["listen", stats.listenAddress],
        ["policy", stats.policyVersion],
        ["connections", "\(stats.connections)"],
        ["topics", "\(stats.topicCount) declared, \(byteText(stats.logBytes)) of logs (reserved topics included)"],
        ["quarantine", "\(counted(stats.quarantineRecords, "record")), \(byteText(stats.quarantineBytes))"],
        ["audit", counted(stats.auditRecords, "entry", plural: "entries")],
        [
            "groups",
            "\(counted(Int64(stats.groupCount), "group")), "
                + "\(counted(Int64(stats.commitCount), "committed (group, topic) pair"))",
        ],
        ["worst lag", worst],
    ]
    return tableLines(["FIGURE", "VALUE"], rows)
}

/// `1 record`, `2 records`.
func counted(_ count: Int64, _ noun: String, plural: String? = nil) -> String {
    "\(count) " + (count == 1 ? noun : plural ?? noun + "s")
}

func statJSON(_ stats: BrokerStats) -> JSON {
    .object([
        ("version", .string(stats.brokerVersion)), ("started_at_ms", .int(stats.startedAtMillis)),
        ("uptime_ms", .int(stats.uptimeMillis)), ("listen", .string(stats.listenAddress)),
        ("policy_version", .string(stats.policyVersion)), ("connections", .int(Int64(stats.connections))),
        ("topics", .int(Int64(stats.topicCount))), ("log_bytes", .int(stats.logBytes)),
        ("quarantine_records", .int(stats.quarantineRecords)), ("quarantine_bytes", .int(stats.quarantineBytes)),
        ("audit_entries", .int(stats.auditRecords)), ("groups", .int(Int64(stats.groupCount))),
        ("commits", .int(Int64(stats.commitCount))),
        (
            "worst_lag",
            stats.worstLag < 0
                ? .null
                : .object([
                    ("group", .string(stats.worstLagGroup)), ("topic", .string(stats.worstLagTopic)),
                    ("lag", .int(stats.worstLag)),
                ])
        ),
    ])
}
