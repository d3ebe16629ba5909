import BrokerClient
import Foundation
import NIOCore
import Testing
import WireProtocol

/// Dedupe keys over TCP, on the embedded default scenario: a retry storm appends once.
@Suite("Dedupe keys over TCP")
struct DedupeOverTCPTests {
    static func keyed(_ n: Int, key: String, payload: String = "") -> WireRecord {
        var record = PolicyPlaneTests.event(n, payload: payload)
        record.headers.append(WireHeader(name: RecordHeaderName.dedupeKey, value: ByteBuffer(string: key)))
        return record
    }

    @Test("a second record with the same key is not appended: OK, DUPLICATE, the original offset; also after a restart")
    func duplicateAcrossRestart() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let first = try await producer.publish(topic: "education.completed", records: [Self.keyed(0, key: "evt-0001"), Self.keyed(1, key: "evt-0002")])
        #expect(first.map(\.offset) == [0, 1])
        #expect(first.allSatisfy { !$0.isDuplicate })
        // A retry of both, plus a new key repeated inside the same request.
        let retry = try await producer.publish(
            topic: "education.completed",
            records: [Self.keyed(0, key: "evt-0001"), Self.keyed(1, key: "evt-0002"), Self.keyed(2, key: "evt-0003"), Self.keyed(3, key: "evt-0003")]
        )
        #expect(retry.map(\.code) == [.ok, .ok, .ok, .ok])
        #expect(retry.map(\.offset) == [0, 1, 2, 2])
        #expect(retry.map(\.isDuplicate) == [true, true, false, true])
        await producer.close()
        await broker.stop()

        let restarted = try await TestBroker.startScenario(dataDir: broker.dataDir, configText: config)
        let again = try await restarted.client("learning-portal")
        let afterRestart = try await again.publish(topic: "education.completed", records: [Self.keyed(0, key: "evt-0001"), Self.keyed(9, key: "evt-0009")])
        #expect(afterRestart.map(\.offset) == [0, 3])
        #expect(afterRestart.map(\.isDuplicate) == [true, false])
        let topics = try await again.listTopics()
        #expect(topics.first { $0.name == "education.completed" }?.endOffset == 4)
        await again.close()
        await restarted.stop()
    }

    @Test("a key whose record was quarantined stays known; after a replay it points at the topic record")
    func quarantinedKeyStaysKnown() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let leaking = Self.keyed(0, key: "evt-0100", payload: #""note":"called back""#)
        let first = try await producer.publish(topic: "education.completed", records: [leaking])
        #expect(first[0].code == .quarantined)
        #expect(first[0].isDuplicate == false)
        // The producer "fixes" the record but reuses the key: still the quarantined original answers.
        let second = try await producer.publish(topic: "education.completed", records: [Self.keyed(0, key: "evt-0100")])
        #expect(second[0].code == .quarantined)
        #expect(second[0].isDuplicate)
        #expect(second[0].offset == first[0].offset)
        let crm = try await broker.client("crm-automation")
        #expect(try await crm.listTopics().first { $0.name == "education.completed" }?.endOffset == 0)

        config.edit(after: #"name = "education.completed""#, replacing: ReplayAndReloadTests.forbidden, with: ReplayAndReloadTests.forbiddenWithoutNote)
        let admin = try await broker.client("ops-admin")
        _ = try await admin.reload()
        let operator_ = try await broker.client("quarantine-operator")
        let replayed = try await operator_.replay(offsets: [first[0].offset])
        #expect(replayed[0].outcome == .replayed)
        let third = try await producer.publish(topic: "education.completed", records: [Self.keyed(0, key: "evt-0100")])
        #expect(third[0].code == .ok)
        #expect(third[0].isDuplicate)
        #expect(third[0].offset == replayed[0].newOffset)
        for client in [producer, crm, admin, operator_] { await client.close() }
        await broker.stop()
    }

    @Test("many connections retrying one key at once append it exactly once")
    func concurrentRetries() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        var clients: [BrokerClient] = []
        for _ in 0..<8 { clients.append(try await broker.client("learning-portal")) }
        let results = try await withThrowingTaskGroup(of: [PublishResult].self) { group in
            for client in clients {
                group.addTask {
                    var results: [PublishResult] = []
                    for _ in 0..<5 { results += try await client.publish(topic: "education.completed", records: [Self.keyed(0, key: "storm")]) }
                    return results
                }
            }
            var all: [PublishResult] = []
            for try await batch in group { all += batch }
            return all
        }
        #expect(results.count == 40)
        #expect(Set(results.map(\.offset)) == [0])
        #expect(results.filter { !$0.isDuplicate }.count == 1)
        #expect(try await clients[0].listTopics().first { $0.name == "education.completed" }?.endOffset == 1)
        for client in clients { await client.close() }
        await broker.stop()
    }
}

@Suite("Storage faults over TCP")
struct StorageFaultTests {
    @Test("when __quarantine cannot sync, records appended to the topic are still acknowledged, and their keys kept")
    func quarantineSyncFails() async throws {
        let io = FailingSyncIO()
        let broker = try await TestBroker.startScenario(io: io)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        io.failSyncs(ofPathsContaining: "/\(ReservedTopic.quarantine)/")
        let records = [
            DedupeOverTCPTests.keyed(0, key: "evt-1"),
            DedupeOverTCPTests.keyed(1, key: "evt-2", payload: #""dob":"1961-02-03""#),
        ]
        let results = try await producer.publish(topic: "education.completed", records: records)
        #expect(results[0] == .ok(offset: 0))
        #expect(results[1].code == .storageFailure)
        // The appended record's key is known; the failed one's is not (a retry may append it once storage is back).
        let retry = try await producer.publish(topic: "education.completed", records: [records[0]])
        #expect(retry[0].offset == 0 && retry[0].isDuplicate)
        // The topic keeps working and its record is readable.
        let more = try await producer.publish(topic: "education.completed", records: [DedupeOverTCPTests.keyed(2, key: "evt-3")])
        #expect(more[0] == .ok(offset: 1))
        let crm = try await broker.client("crm-automation")
        #expect(try await PolicyPlaneTests.readAll(crm, "education.completed").map(\.offset) == [0, 1])
        await producer.close()
        await crm.close()
        await broker.stop()
    }

    @Test("fdatasync EIO: that topic answers STORAGE_FAILURE and is not synced again; reads and other topics keep working")
    func topicSyncFails() async throws {
        let io = FailingSyncIO()
        let broker = try await TestBroker.startScenario(io: io)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        let outreach = try await broker.client("support-portal")
        let before = try await producer.publish(topic: "education.completed", records: (0..<3).map { PolicyPlaneTests.event($0) })
        #expect(before.map(\.offset) == [0, 1, 2])
        io.failSyncs(ofPathsContaining: "/education.completed/")
        let failed = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(3)])
        #expect(failed[0].code == .storageFailure)
        #expect(failed[0].message.contains("fdatasync"))
        let syncs = io.syncCalls(ofPathsContaining: "/education.completed/")
        // The failure is sticky: no later append is acknowledged, even once the disk would sync again.
        io.failSyncs(ofPathsContaining: nil)
        for n in 4..<7 {
            let later = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(n)])
            #expect(later[0].code == .storageFailure)
        }
        #expect(io.syncCalls(ofPathsContaining: "/education.completed/") == syncs, "a failed fdatasync is not retried")
        // Other topics, including __quarantine, keep taking records; the failed topic still serves what it acknowledged.
        let elsewhere = try await outreach.publish(topic: "support.outreach", records: [LimiterOverTCPTests.outreach(0, recipient: "pt_1")])
        #expect(elsewhere[0] == .ok(offset: 0))
        let quarantined = try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(9, payload: #""dob":"1961-02-03""#)])
        #expect(quarantined[0].code == .quarantined)
        let crm = try await broker.client("crm-automation")
        #expect(try await PolicyPlaneTests.readAll(crm, "education.completed").map(\.offset) == [0, 1, 2])
        await producer.close()
        await outreach.close()
        await crm.close()
        await broker.stop()
    }

    @Test("no space: PUBLISH gets STORAGE_FULL, nothing is stored, reads keep working, and publishing resumes once space is back")
    func diskFull() async throws {
        let io = FailingSyncIO()
        let broker = try await TestBroker.startScenario(io: io)
        defer { broker.removeData() }
        let producer = try await broker.client("learning-portal")
        #expect(try await producer.publish(topic: "education.completed", records: [DedupeOverTCPTests.keyed(0, key: "evt-0")])[0] == .ok(offset: 0))
        io.failWrites(ofPathsContaining: "/education.completed/", errno: ENOSPC)
        let full = try await producer.publish(topic: "education.completed", records: [DedupeOverTCPTests.keyed(1, key: "evt-1"), DedupeOverTCPTests.keyed(2, key: "evt-2")])
        #expect(full.map(\.code) == [.storageFull, .storageFull])
        #expect(full[0].message.contains(String(cString: strerror(ENOSPC))))
        let crm = try await broker.client("crm-automation")
        #expect(try await PolicyPlaneTests.readAll(crm, "education.completed").map(\.offset) == [0])
        io.failWrites(ofPathsContaining: nil)
        // The same records, retried with the same keys, are appended once: the refused attempt left no key behind.
        let retried = try await producer.publish(topic: "education.completed", records: [DedupeOverTCPTests.keyed(1, key: "evt-1"), DedupeOverTCPTests.keyed(2, key: "evt-2")])
        #expect(retried == [.ok(offset: 1), .ok(offset: 2)])
        #expect(try await PolicyPlaneTests.readAll(crm, "education.completed").map(\.offset) == [0, 1, 2])
        await producer.close()
        await crm.close()
        await broker.stop()
    }
}
