import BrokerClient
@testable import BrokerServer
import Foundation
import NIOCore
import Testing
import TopicRouter
import WireProtocol

/// DESCRIBE_TOPICS, GROUPS_QUERY and STATS_QUERY over real sockets, on the embedded default scenario.
@Suite("Operator views over TCP")
struct InspectionOverTCPTests {
    /// The declared topics of the embedded default config, in config order, then the reserved ones.
    static let everyTopic = [
        "education.completed", "support.milestone", "support.notice", "support.outreach", "analytics.deidentified",
        "clinical.referral", "__quarantine", "__audit",
    ]

    /// The broker's answer to `body` as the error it threw, or nil.
    static func refusal(_ body: () async throws -> Void) async -> BrokerClientError? {
        do {
            try await body()
            return nil
        } catch {
            return error as? BrokerClientError
        }
    }

    @Test("DESCRIBE_TOPICS: admin and auditor see every topic's settings and its log's real size; others only theirs")
    func describe() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let portal = try await broker.client("learning-portal")
        let results = try await portal.publish(topic: "education.completed", records: (0..<3).map(educationEvent))
        #expect(results.map(\.offset) == [0, 1, 2])

        let admin = try await broker.client("ops-admin")
        let described = try await admin.describeTopics()
        #expect(described.map(\.name) == Self.everyTopic)
        let education = try #require(described.first { $0.name == "education.completed" })
        #expect(education.sensitivity == "non_phi" && education.access == 3)
        #expect(education.purposes == ["commercial_analytics", "operations"])
        #expect(education.consentScopes == ["hcp_commercial_engagement", "educational", "operational_notice"])
        #expect(education.retentionBytes == -1 && education.retentionMillis == -1)
        #expect(education.fsync == "always" && education.compression == "lz4" && education.segmentBytes == 67_108_864)
        #expect(education.startOffset == 0 && education.endOffset == 3)
        let onDisk = try broker.segmentBatchBytes(topic: "education.completed")
        #expect(education.logBytes > 0)
        #expect(education.logBytes == onDisk.bytes)
        #expect(Int(education.segmentCount) == onDisk.count && onDisk.count == 1)
        let milestone = try #require(described.first { $0.name == "support.milestone" })
        #expect(milestone.retentionMillis == 7_776_000_000 && milestone.retentionBytes == -1)
        #expect(milestone.logBytes == 0 && milestone.endOffset == 0)
        let analytics = try #require(described.first { $0.name == "analytics.deidentified" })
        #expect(analytics.fsync == "interval:50" && analytics.retentionBytes == 10_737_418_240)
        let quarantine = try #require(described.first { $0.name == "__quarantine" })
        #expect(quarantine.sensitivity == "phi" && quarantine.purposes.isEmpty && quarantine.consentScopes.isEmpty)
        #expect(quarantine.access == 2)  // operators read it (quarantine.read), nobody publishes to it

        // One topic by name.
        #expect(try await admin.describeTopics(topic: "clinical.referral").map(\.name) == ["clinical.referral"])

        // The auditor (audit.read only, no subscribe patterns) sees every topic too, with its own access bits.
        let auditor = try await broker.client("compliance-auditor")
        let audited = try await auditor.describeTopics()
        #expect(audited.map(\.name) == Self.everyTopic)
        #expect(audited.first { $0.name == "__audit" }?.access == 2)
        #expect(audited.first { $0.name == "education.completed" }?.access == 0)

        // CRM automation sees only the topic it may read; the others are not even named.
        let crm = try await broker.client("crm-automation")
        let visible = try await crm.describeTopics()
        #expect(visible.map(\.name) == ["education.completed"])
        #expect(visible.first?.access == 2 && visible.first?.endOffset == 3)
        // The learning portal sees the topic it publishes to.
        #expect(try await portal.describeTopics().map { "\($0.name) \($0.access)" } == ["education.completed 1"])

        // A hidden topic is answered exactly like one that does not exist.
        let hidden = await Self.refusal { _ = try await crm.describeTopics(topic: "clinical.referral") }
        let missing = await Self.refusal { _ = try await crm.describeTopics(topic: "no.such.topic") }
        #expect(hidden?.code == .unknownTopic && missing?.code == .unknownTopic)
        #expect(hidden?.message == "no topic 'clinical.referral' that role 'crm' may see")
        #expect(missing?.message == "no topic 'no.such.topic' that role 'crm' may see")
        try await crm.ping()  // the refusal left the connection open

        for client in [portal, admin, auditor, crm] { await client.close() }
        await broker.stop()
    }

    @Test("GROUPS_QUERY and STATS_QUERY: committed offset, end and lag per group; CAPABILITY_REQUIRED without admin or audit.read")
    func groupsAndStats() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let portal = try await broker.client("learning-portal")
        _ = try await portal.publish(topic: "education.completed", records: (0..<5).map(educationEvent))
        // A record with a forbidden field goes to __quarantine.
        var leaking = educationEvent(9)
        leaking.value = ByteBuffer(string: #"{"event_type":"account.education.completed","source_system":"learning_portal","dob":"1961-02-03"}"#)
        #expect(try await portal.publish(topic: "education.completed", records: [leaking]).first?.code == .quarantined)
        let crm = try await broker.client("crm-automation")
        try await crm.commit(group: "crm-notes", topic: "education.completed", offset: 2)
        let lake = try await broker.client("analytics-lake")
        try await lake.commit(group: "lake", topic: "education.completed", offset: 5)
        try await lake.commit(group: "lake", topic: "analytics.deidentified", offset: 0)

        let admin = try await broker.client("ops-admin")
        let groups = try await admin.groups()
        #expect(groups.map { "\($0.group) \($0.topic)" } == [
            "crm-notes education.completed", "lake analytics.deidentified", "lake education.completed",
        ])
        for entry in groups {
            #expect(entry.lag == entry.endOffset - entry.committedOffset, "\(entry)")
            #expect(entry.startOffset == 0)
        }
        let notes = try #require(groups.first)
        #expect(notes.committedOffset == 2 && notes.endOffset == 5 && notes.lag == 3)
        #expect(groups.last?.lag == 0)
        #expect(try await admin.groups(group: "lake").map(\.group) == ["lake", "lake"])
        #expect(try await admin.groups(group: "nobody").isEmpty)

        // The audit ledger is written just after each decision: read the figures while it stands still.
        var described = try await admin.describeTopics()
        var stats = try await admin.stats()
        for _ in 0..<100 {
            let again = try await admin.describeTopics()
            if again == described { break }
            try await Task.sleep(for: .milliseconds(20))
            described = again
            stats = try await admin.stats()
        }
        #expect(stats.brokerVersion == BrokerVersion.current)
        #expect(stats.listenAddress == "127.0.0.1:\(broker.port)")
        #expect(stats.policyVersion.hasPrefix("pv-"))
        #expect(stats.connections == 4)  // portal, crm, lake, admin
        #expect(stats.topicCount == 6)
        #expect(stats.logBytes == described.reduce(0) { $0 + $1.logBytes })
        #expect(stats.quarantineRecords == 1)
        #expect(stats.quarantineBytes == described.first { $0.name == "__quarantine" }?.logBytes)
        #expect(stats.auditRecords == described.first { $0.name == "__audit" }.map { $0.endOffset - $0.startOffset })
        #expect(stats.groupCount == 2 && stats.commitCount == 3)
        #expect(stats.worstLag == 3 && stats.worstLagGroup == "crm-notes" && stats.worstLagTopic == "education.completed")
        #expect(stats.uptimeMillis >= 0 && stats.startedAtMillis > 1_700_000_000_000)

        // The auditor may watch too.
        let auditor = try await broker.client("compliance-auditor")
        #expect(try await auditor.groups().count == 3)
        #expect(try await auditor.stats().commitCount == 3)

        // Any other role is refused with the stable code, and learns no group or topic name.
        for client in [crm, portal] {
            let groupsRefusal = await Self.refusal { _ = try await client.groups() }
            let statsRefusal = await Self.refusal { _ = try await client.stats() }
            #expect(groupsRefusal?.code == .capabilityRequired && statsRefusal?.code == .capabilityRequired)
            #expect(groupsRefusal?.message.contains("'admin' or 'audit.read'") == true)
            #expect(groupsRefusal?.message.contains("crm-notes") == false)
            try await client.ping()
        }
        for client in [portal, crm, lake, admin, auditor] { await client.close() }
        await broker.stop()
    }

    @Test("a commit on a topic without an open log reports -1 for its figures; the worst lag ignores it")
    func commitWithoutLog() throws {
        let committed: [(group: String, topic: String, offset: Int64)] = [("g", "gone", 7)]
        let groups = Inspection.groups(group: "", committed: committed, log: { _ in nil })
        #expect(groups == [GroupOffset(group: "g", topic: "gone", committedOffset: 7, startOffset: -1, endOffset: -1, lag: -1)])
        let policy = try Policy(config: TestBroker.makeConfig(dataDir: "/nonexistent"))
        let runtime = Inspection.Runtime(startedAtMillis: 1000, nowMillis: 4000, listenAddress: "127.0.0.1:1", connections: 2)
        let stats = Inspection.stats(runtime: runtime, policy: policy, committed: committed, log: { _ in nil })
        #expect(stats.worstLag == -1 && stats.worstLagGroup.isEmpty && stats.worstLagTopic.isEmpty)
        #expect(stats.groupCount == 1 && stats.commitCount == 1 && stats.uptimeMillis == 3000 && stats.logBytes == 0)
    }
}
