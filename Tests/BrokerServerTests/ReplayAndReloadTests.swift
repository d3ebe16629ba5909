import BrokerClient
import Foundation
import Locking
import NIOCore
import Testing
import TopicRouter
import WireProtocol

/// Quarantine replay and config reload over TCP, on the embedded default scenario.
@Suite("Replay and reload over TCP")
struct ReplayAndReloadTests {
    /// The education topic's forbidden fields in the embedded default, and the same list without `note`.
    static let forbidden = #"forbidden_fields = ["patient_name", "dob", "mrn", "ssn", "diagnosis", "note"]"#
    static let forbiddenWithoutNote = #"forbidden_fields = ["patient_name", "dob", "mrn", "ssn", "diagnosis"]"#

    @Test("replay after the policy is fixed appends the record once, with provenance; a second replay reports the first")
    func replayOnceAfterFix() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let withNote = PolicyPlaneTests.event(7, payload: #""note":"called back, prefers email""#)
        let published = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(6), withNote])
        #expect(published[1].code == .quarantined)
        let quarantineOffset = published[1].offset

        let operator_ = try await broker.client("quarantine-operator")
        // Still refused under the current policy: nothing appended, nothing recorded, the reason is current.
        let refused = try await operator_.replay(offsets: [quarantineOffset])
        #expect(refused.map(\.outcome) == [.stillQuarantined])
        #expect(refused[0].reason == "FORBIDDEN_FIELD")
        #expect(refused[0].isEarlier == false)

        // The compliance office decides `note` is acceptable on this topic; the policy is reloaded.
        config.edit(after: #"name = "education.completed""#, replacing: Self.forbidden, with: Self.forbiddenWithoutNote)
        let admin = try await broker.client("ops-admin")
        let reloaded = try await admin.reload()
        #expect(reloaded.policyVersion.hasPrefix("pv-"))

        let replayed = try await operator_.replay(offsets: [quarantineOffset, quarantineOffset])
        #expect(replayed[0].outcome == .replayed)
        #expect(replayed[0].topic == "education.completed")
        #expect(replayed[0].newOffset == 1)
        #expect(replayed[0].isEarlier == false)
        #expect(replayed[1].outcome == .replayed && replayed[1].isEarlier && replayed[1].newOffset == 1)
        let again = try await operator_.replay(offsets: [quarantineOffset])
        #expect(again[0].isEarlier && again[0].newOffset == 1)

        let crm = try await broker.client("crm-automation")
        let records = try await PolicyPlaneTests.readAll(crm, "education.completed")
        #expect(records.count == 2)  // appended exactly once
        let record = try #require(records.last).record
        #expect(record.producerPart.headers.filter { !$0.name.hasPrefix("replay") } == withNote.headers)
        #expect(record.value == withNote.value)
        #expect(record.header(RecordHeaderName.replayedFrom) == "\(quarantineOffset)")
        #expect(record.header(RecordHeaderName.replayedBy) == "quarantine-operator")
        #expect(record.header(RecordHeaderName.replayPolicyVersion) == reloaded.policyVersion)
        #expect(record.header(RecordHeaderName.brokerProducer) == "learning-portal")

        let entry = try await PolicyPlaneTests.auditEntry(broker) {
            $0["action"] as? String == AuditAction.quarantineReplay && $0["decision"] as? String == "REPLAYED"
        }
        #expect(entry?["principal"] as? String == "quarantine-operator")
        #expect(entry?["policy_version"] as? String == reloaded.policyVersion)
        for client in [producer, operator_, admin, crm] { await client.close() }
        await broker.stop()

        // The replay record is durable: after a restart the same request still reports the first replay.
        let restarted = try await TestBroker.startScenario(dataDir: broker.dataDir, configText: config)
        let operatorAgain = try await restarted.client("quarantine-operator")
        let afterRestart = try await operatorAgain.replay(offsets: [quarantineOffset])
        #expect(afterRestart[0].outcome == .replayed && afterRestart[0].isEarlier && afterRestart[0].newOffset == 1)
        await operatorAgain.close()
        await restarted.stop()
    }

    @Test("replay needs quarantine.replay; unknown offsets are NOT_FOUND; a record that still fails says why")
    func replayGuards() async throws {
        let config = ConfigText()
        config.set(config.text.replacingOccurrences(of: Self.forbidden, with: Self.forbiddenWithoutNote))
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        // Missing consent_scope: quarantined; with the header added by no one, it stays quarantined.
        var missing = PolicyPlaneTests.event(1)
        missing.headers.removeAll { $0.name == "consent_scope" }
        let results = try await producer.publish(topic: "education.completed", records: [missing])
        #expect(results[0].message.hasPrefix("MISSING_HEADER"))
        let crm = try await broker.client("crm-automation")
        do {
            _ = try await crm.replay(offsets: [0])
            Issue.record("crm may not replay")
        } catch let error as BrokerClientError {
            #expect(error.code == .capabilityRequired)
        }
        let operator_ = try await broker.client("quarantine-operator")
        let answers = try await operator_.replay(offsets: [0, 99])
        #expect(answers.map(\.outcome) == [.stillQuarantined, .notFound])
        #expect(answers[0].reason == "MISSING_HEADER")
        for client in [producer, crm, operator_] { await client.close() }
        await broker.stop()
    }

    @Test("a reload that revokes a live subscription ends it at once with NOT_CLEARED; nothing more arrives")
    func reloadRevokes() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let crm = try await broker.client("crm-automation")
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest, credit: 100)
        _ = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(0)])
        let seen = OutputOffsets()
        let received = Task { () -> BrokerClientError? in
            do {
                for try await record in subscription { seen.append(record.offset) }
                return nil
            } catch let error as BrokerClientError {
                return error
            }
        }
        // Wait until the first record arrived, then take crm's read access away.
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while seen.offsets.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(seen.offsets == [0])
        config.edit(after: #"name = "crm""#, replacing: #"subscribe = ["education.*"]"#, with: "subscribe = []")
        let admin = try await broker.client("ops-admin")
        _ = try await admin.reload()
        for n in 1...20 { _ = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(n)]) }
        let error = try await received.value
        #expect(seen.offsets == [0])
        #expect(error?.code == .notCleared)
        #expect(error?.message.contains("revoked") == true)
        let entry = try await PolicyPlaneTests.auditEntry(broker) { $0["action"] as? String == AuditAction.subscriptionRevoke }
        #expect(entry?["principal"] as? String == "crm-automation")
        #expect(entry?["topic"] as? String == "education.completed")
        // And a new subscription is refused.
        do {
            _ = try await crm.subscribe(topic: "education.completed", start: .earliest)
            Issue.record("crm may no longer subscribe")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        for client in [producer, crm, admin] { await client.close() }
        await broker.stop()
    }

    @Test("a reload applies to a producer already publishing: its next PUBLISH on the same connection is checked and stamped by the new policy")
    func reloadAppliesToLiveProducer() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        for n in 0..<2 {
            #expect(try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(n)]) == [.ok(offset: Int64(n))])
        }
        let admin = try await broker.client("ops-admin")
        // First a change that keeps the producer's access: its next record carries the new policy version.
        config.edit(after: #"name = "learning_portal""#, replacing: #"publish = ["education.*"]"#, with: #"publish = ["education.completed"]"#)
        let widened = try await admin.reload().policyVersion
        #expect(try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(2)]) == [.ok(offset: 2)])
        // Then one that takes it away: the same connection is refused.
        config.edit(after: #"name = "learning_portal""#, replacing: #"publish = ["education.completed"]"#, with: "publish = []")
        _ = try await admin.reload()
        do {
            _ = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(3)])
            Issue.record("the producer may no longer publish")
        } catch let error as BrokerClientError {
            #expect(error.code == .notAuthorized)
        }
        let crm = try await broker.client("crm-automation")
        let stored = try await PolicyPlaneTests.readAll(crm, "education.completed")
        #expect(stored.count == 3)
        let versions = stored.map { $0.record.header(RecordHeaderName.brokerPolicyVersion) }
        #expect(versions[0] == versions[1])
        #expect(versions[1] != widened)
        #expect(versions[2] == widened)
        for client in [producer, admin, crm] { await client.close() }
        await broker.stop()
    }

    @Test("a bad config is rejected whole: CONFIG_REJECTED, the running policy unchanged, audited")
    func badReloadRejected() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let admin = try await broker.client("ops-admin")
        let before = try await admin.reload().policyVersion
        config.edit(after: #"name = "crm""#, replacing: #"clearance = "non_phi""#, with: #"clearance = "top_secret""#)
        do {
            _ = try await admin.reload()
            Issue.record("a config with an undeclared class must be rejected")
        } catch let error as BrokerClientError {
            #expect(error.code == .configRejected)
            #expect(error.message.contains("top_secret"))
        }
        let entry = try await PolicyPlaneTests.auditEntry(broker) { $0["action"] as? String == AuditAction.configReloadReject }
        #expect(entry?["policy_version"] as? String == before)
        // The running policy still lets crm read.
        let crm = try await broker.client("crm-automation")
        _ = try await crm.subscribe(topic: "education.completed", start: .earliest)
        let learning = try await broker.client("learning-portal")
        do {
            _ = try await learning.reload()
            Issue.record("only admin may reload")
        } catch let error as BrokerClientError {
            #expect(error.code == .capabilityRequired)
        }
        for client in [admin, crm, learning] { await client.close() }
        await broker.stop()
    }
}

/// Offsets seen by a reading task, read by the test.
final class OutputOffsets: Sendable {
    private let storage = Locked<[Int64]>([])
    var offsets: [Int64] { self.storage.withLock { $0 } }
    func append(_ offset: Int64) { self.storage.withLock { $0.append(offset) } }
}
