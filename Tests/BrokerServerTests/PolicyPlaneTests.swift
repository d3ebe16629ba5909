import BrokerClient
import Foundation
import NIOCore
import Testing
import WireProtocol

/// Every record that crosses has a recorded reason; every refusal is explained. Over TCP, on the embedded default
/// config (the closed-loop scenario).
@Suite("Policy plane over TCP")
struct PolicyPlaneTests {
    /// An education event with the given consent scopes and extra payload fields (JSON text without braces).
    static func event(_ n: Int, scope: String = "educational", payload: String = "", extraHeaders: [(String, String)] = []) -> WireRecord {
        let inner = #""module_id":"onboarding-101""# + (payload.isEmpty ? "" : "," + payload)
        let json = #"{"event_type":"account.education.completed","source_system":"learning_portal","account_id":"acct_\#(n)","payload":{\#(inner)}}"#
        var headers = [
            WireHeader(name: "event_type", value: ByteBuffer(string: "account.education.completed")),
            WireHeader(name: "source_system", value: ByteBuffer(string: "learning_portal")),
            WireHeader(name: "consent_scope", value: ByteBuffer(string: scope)),
        ]
        headers += extraHeaders.map { WireHeader(name: $0.0, value: ByteBuffer(string: $0.1)) }
        return WireRecord(key: ByteBuffer(string: "acct_\(n)"), headers: headers, value: ByteBuffer(string: json), timestamp: 1_776_000_000_000 + Int64(n))
    }

    /// Every record of `topic` from its start to its end now.
    static func readAll(_ client: BrokerClient, _ topic: String) async throws -> [DeliveredRecord] {
        let subscription = try await client.subscribe(topic: topic, start: .earliest, credit: 64)
        let count = Int(subscription.info.endOffset - subscription.info.startOffset)
        let records = count == 0 ? [] : try await collect(subscription, count: count)
        try await client.unsubscribe(subscription.info.subscriptionID)
        return records
    }

    /// The audit entries, as JSON objects, polled until one satisfies `match` (the ledger is written asynchronously).
    static func auditEntry(
        _ broker: TestBroker,
        timeout: Duration = .seconds(10),
        where match: ([String: Any]) -> Bool
    ) async throws -> [String: Any]? {
        let auditor = try await broker.client("compliance-auditor")
        defer { Task { await auditor.close() } }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            for record in try await self.readAll(auditor, ReservedTopic.audit) {
                let entry = try JSONSerialization.jsonObject(with: Data(record.record.value.readableBytesView)) as? [String: Any]
                if let entry, match(entry) { return entry }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        return nil
    }

    @Test("a record with a forbidden field goes to __quarantine with its reason, never to its topic")
    func forbiddenFieldQuarantined() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let good = Self.event(1)
        let leaking = Self.event(2, payload: #""dob":"1961-02-03""#)
        let results = try await producer.publish(topic: "education.completed", records: [good, leaking])
        #expect(results[0] == .ok(offset: 0))
        #expect(results[1].code == .quarantined)
        #expect(results[1].offset == 0)  // its offset in __quarantine
        #expect(results[1].message.hasPrefix("FORBIDDEN_FIELD: "))

        let crm = try await broker.client("crm-automation")
        let delivered = try await Self.readAll(crm, "education.completed")
        #expect(delivered.map(\.record.producerPart) == [good])
        do {
            _ = try await crm.subscribe(topic: ReservedTopic.quarantine, start: .earliest)
            Issue.record("crm must not read the quarantine")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }

        let operator_ = try await broker.client("quarantine-operator")
        let quarantined = try await Self.readAll(operator_, ReservedTopic.quarantine)
        #expect(quarantined.count == 1)
        let record = try #require(quarantined.first).record
        #expect(record.header(RecordHeaderName.quarantineTopic) == "education.completed")
        #expect(record.header(RecordHeaderName.quarantineProducer) == "learning-portal")
        #expect(record.header(RecordHeaderName.quarantineReason) == "FORBIDDEN_FIELD")
        #expect(record.header(RecordHeaderName.quarantineRule)?.isEmpty == false)
        #expect(record.header(RecordHeaderName.quarantinePolicyVersion)?.hasPrefix("pv-") == true)
        #expect(record.value == leaking.value)
        #expect(record.key == leaking.key)
        #expect(Array(record.headers.prefix(leaking.headers.count)) == leaking.headers)

        let entry = try await Self.auditEntry(broker) { $0["action"] as? String == AuditAction.publishQuarantine }
        #expect(entry?["principal"] as? String == "learning-portal")
        #expect(entry?["reason"] as? String == "FORBIDDEN_FIELD")
        #expect(entry?["topic"] as? String == "education.completed")
        for client in [producer, crm, operator_] { await client.close() }
        await broker.stop()
    }

    @Test("a refused subscription delivers nothing and is audited with its reason and rule")
    func refusedSubscriptionAudited() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let crm = try await broker.client("crm-automation")
        do {
            _ = try await crm.subscribe(topic: "clinical.referral", start: .earliest)
            Issue.record("crm must not read the PHI topic")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        let analytics = try await broker.client("analytics-lake")
        do {
            _ = try await analytics.subscribe(topic: "support.notice", start: .earliest)
            Issue.record("analytics shares no purpose with support.notice")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
            #expect(error.message.contains("purpose"))
        }
        let entry = try await Self.auditEntry(broker) {
            $0["action"] as? String == AuditAction.subscribeRefuse && $0["principal"] as? String == "crm-automation"
        }
        #expect(entry?["topic"] as? String == "clinical.referral")
        #expect(entry?["decision"] as? String == "refuse")
        #expect(entry?["reason"] as? String == "NOT_CLEARED")
        #expect((entry?["rule"] as? String)?.isEmpty == false)
        #expect((entry?["policy_version"] as? String)?.hasPrefix("pv-") == true)
        await crm.close()
        await analytics.close()
        await broker.stop()
    }

    @Test("consent is checked at delivery: a scope the role may not receive is withheld, counted and audited")
    func consentAtDelivery() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        // crm receives hcp_commercial_engagement and educational; analytics also operational_notice.
        let records = [
            Self.event(0, scope: "educational"), Self.event(1, scope: "operational_notice"),
            Self.event(2, scope: "operational_notice,educational"),
        ]
        let results = try await producer.publish(topic: "education.completed", records: records)
        #expect(results.map(\.code) == [.ok, .ok, .ok])

        let crm = try await broker.client("crm-automation")
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest, credit: 1)
        let first = try await collect(subscription, count: 2)
        #expect(first.map(\.offset) == [0, 2])
        // Offset 1 was skipped, not delayed: the next record crm gets is the next one published.
        _ = try await producer.publish(topic: "education.completed", records: [Self.event(3)])
        let next = try await collect(subscription, count: 1)
        #expect(next.map(\.offset) == [3])
        await crm.close()  // ends the subscription: its withheld count is audited

        let analytics = try await broker.client("analytics-lake")
        #expect(try await Self.readAll(analytics, "education.completed").map(\.offset) == [0, 1, 2, 3])
        let entry = try await Self.auditEntry(broker) { $0["action"] as? String == AuditAction.deliveryWithhold }
        #expect(entry?["principal"] as? String == "crm-automation")
        #expect(entry?["decision"] as? String == "withhold")
        #expect(entry?["count"] == nil)  // exactly one record withheld: count is omitted when 1
        #expect((entry?["detail"] as? String)?.contains("operational_notice") == true)
        await producer.close()
        await analytics.close()
        await broker.stop()
    }

    @Test("one read of many records judges each record's consent on its own (the topic and role looked up once)")
    func consentPerRecordWithinOneRead() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        // 60 records in one PUBLISH (one batch), so the subscription below reads them in one read: receivable and
        // not receivable scopes for crm interleaved, in a pattern that is not periodic in the batch.
        let scopes = [
            "educational", "operational_notice", "hcp_commercial_engagement", "operational_notice,educational",
        ]
        let pattern = (0..<60).map { ($0 * 7 + $0 / 5) % 4 }
        let results = try await producer.publish(
            topic: "education.completed", records: pattern.enumerated().map { Self.event($0, scope: scopes[$1]) }
        )
        #expect(results.allSatisfy { $0.code == .ok })
        let expected = pattern.enumerated().filter { $0.element != 1 }.map { Int64($0.offset) }

        let crm = try await broker.client("crm-automation")
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest, credit: 1000)
        var offsets: [Int64] = []
        var scopesSeen: [String] = []
        for try await batch in subscription.batches {
            batch.forEach { record in
                offsets.append(record.offset)
                let scope = record.headerValue(named: "consent_scope") ?? UnsafeRawBufferPointer(start: nil, count: 0)
                scopesSeen.append(String(decoding: scope, as: UTF8.self))
            }
            if offsets.count >= expected.count { break }
        }
        #expect(offsets == expected)
        #expect(!scopesSeen.contains("operational_notice"))
        await crm.close()  // ends the subscription: its withheld count is audited
        let withheld = pattern.filter { $0 == 1 }.count
        let entry = try await Self.auditEntry(broker) { $0["action"] as? String == AuditAction.deliveryWithhold }
        #expect(entry?["principal"] as? String == "crm-automation")
        #expect(entry?["count"] as? Int == withheld)
        await producer.close()
        await broker.stop()
    }

    @Test("accepted records carry provenance; a producer cannot forge it")
    func provenance() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let before = Int64(Date().timeIntervalSince1970 * 1000)
        let forged = Self.event(1, extraHeaders: [("broker-producer", "crm-automation")])
        let results = try await producer.publish(topic: "education.completed", records: [Self.event(0), forged])
        let after = Int64(Date().timeIntervalSince1970 * 1000)
        #expect(results[0] == .ok(offset: 0))
        #expect(results[1].code == .quarantined)
        #expect(results[1].message.hasPrefix("RESERVED_HEADER"))

        let analytics = try await broker.client("analytics-lake")
        let delivered = try #require(try await Self.readAll(analytics, "education.completed").first).record
        #expect(delivered.header(RecordHeaderName.sourceSystem) == "learning_portal")  // the producer's own, kept
        #expect(delivered.header(RecordHeaderName.brokerProducer) == "learning-portal")
        let received = try #require(Int64(delivered.header(RecordHeaderName.brokerReceivedAt) ?? ""))
        #expect((before...after).contains(received))
        #expect(delivered.header(RecordHeaderName.brokerPolicyVersion)?.hasPrefix("pv-") == true)
        await producer.close()
        await analytics.close()
        await broker.stop()
    }

    @Test("nobody publishes to a reserved topic, not even a role that may publish everywhere")
    func reservedTopicsNotPublishable() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let admin = try await broker.client("ops-admin")
        for topic in [ReservedTopic.audit, ReservedTopic.quarantine] {
            do {
                _ = try await admin.publish(topic: topic, records: [Self.event(0)])
                Issue.record("published to \(topic)")
            } catch let error as BrokerClientError {
                #expect(error.code == .notAuthorized)
            }
        }
        let topics = try await admin.listTopics()
        #expect(topics.filter { $0.name.hasPrefix("__") }.allSatisfy { $0.access & 1 == 0 })
        await admin.close()
        await broker.stop()
    }
}
