import Foundation
import Locking
import LogStore
import Logging
import NIOCore
import Synchronization
import MetricsTestKit
import Testing

@testable import BrokerServer

/// A clock the test moves by hand.
private final class GateClock: Sendable {
    private let now: Atomic<Int64>
    init(_ start: Int64) { self.now = Atomic(start) }
    var millis: Int64 { self.now.load(ordering: .relaxed) }
    func set(_ millis: Int64) { self.now.store(millis, ordering: .relaxed) }
    func advance(by millis: Int64) { self.now.add(millis, ordering: .relaxed) }
    var function: @Sendable () -> Int64 { { self.now.load(ordering: .relaxed) } }
}

/// Log lines captured in memory.
private final class GateLogs: Sendable {
    struct Line: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    private let lines = Locked<[Line]>([])
    var all: [Line] { self.lines.withLock { $0 } }
    func append(_ line: Line) { self.lines.withLock { $0.append(line) } }
    var logger: Logger { Logger(label: "dedupe-gate-test") { _ in GateLogHandler(sink: self) } }
    func lines(_ level: Logger.Level, containing fragment: String) -> [Line] {
        self.all.filter { $0.level == level && $0.message.contains(fragment) }
    }
}

private struct GateLogHandler: LogHandler {
    let sink: GateLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        var merged: [String: String] = [:]
        for (key, value) in self.metadata { merged[key] = "\(value)" }
        for (key, value) in event.metadata ?? [:] { merged[key] = "\(value)" }
        self.sink.append(.init(level: event.level, message: "\(event.message)", metadata: merged))
    }
}

/// A real FileLogBackend in a fresh temp directory with the topic `orders` and `__quarantine`; removed afterwards.
private final class GateFixture: Sendable {
    static let topic = "orders"
    static let window: Int64 = 60_000

    let root: String
    let clock = GateClock(1_000_000)
    let logs = GateLogs()
    let metrics = TestMetrics()
    let floor = DedupeFloor()
    let backend: FileLogBackend
    let topicLog: any TopicLog
    let quarantineLog: any TopicLog

    private init(root: String, backend: FileLogBackend, topicLog: any TopicLog, quarantineLog: any TopicLog) {
        self.root = root
        self.backend = backend
        self.topicLog = topicLog
        self.quarantineLog = quarantineLog
    }

    static func make(root: String? = nil, topicConfig: TopicLogConfig? = nil) async throws -> GateFixture {
        let root = root ?? (NSTemporaryDirectory() + "dedupe-gate-tests-" + UUID().uuidString)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let backend = try FileLogBackend(
            directory: root + "/topics",
            logger: Logger(label: "unused") { _ in
                SwiftLogNoOpLogHandler()
            }
        )
        var config = topicConfig ?? TopicLogConfig()
        config.fsync = .never
        let topicLog = try await backend.openTopic(name: Self.topic, config: config)
        var quarantineConfig = TopicLogConfig()
        quarantineConfig.fsync = .never
        let quarantineLog = try await backend.openTopic(name: "__quarantine", config: quarantineConfig)
        return GateFixture(root: root, backend: backend, topicLog: topicLog, quarantineLog: quarantineLog)
    }

    var directory: String { self.backend.topicDirectory(name: Self.topic) }

    func makeGate(maxKeys: Int = 1000, policy: DedupeGate.SnapshotPolicy = .init()) throws -> DedupeGate {
        try DedupeGate(
            topic: Self.topic,
            windowMillis: Self.window,
            maxKeys: maxKeys,
            directory: self.directory,
            topicLog: self.topicLog,
            quarantineLog: self.quarantineLog,
            floor: self.floor,
            snapshotPolicy: policy,
            logger: self.logs.logger,
            nowMillis: self.clock.function,
            metrics: self.metrics
        )
    }

    func openGate(
        maxKeys: Int = 1000,
        windowMillis: Int64 = GateFixture.window,
        floor: DedupeFloor? = nil
    ) async throws -> DedupeGate {
        try await DedupeGate.open(
            topic: Self.topic,
            windowMillis: windowMillis,
            maxKeys: maxKeys,
            directory: self.directory,
            topicLog: self.topicLog,
            quarantineLog: self.quarantineLog,
            floor: floor ?? DedupeFloor(),
            logger: self.logs.logger,
            nowMillis: self.clock.function
        )
    }

    /// A record as the publish path stores it in the topic.
    func topicRecord(key: String?, receivedAt: Int64? = nil, timestamp: Int64? = nil) -> LogRecord {
        let at = receivedAt ?? self.clock.millis
        var headers = [LogHeader(name: "event_type", value: ByteBuffer(string: "order.placed"))]
        if let key { headers.append(LogHeader(name: "dedupe-key", value: ByteBuffer(string: key))) }
        headers.append(LogHeader(name: "broker-received-at", value: ByteBuffer(string: String(at))))
        return LogRecord(key: nil, headers: headers, value: ByteBuffer(string: "{}"), timestamp: timestamp ?? at)
    }

    /// A record as the publish path stores it in `__quarantine`.
    func quarantineRecord(key: String, topic: String = GateFixture.topic, at: Int64? = nil) -> LogRecord {
        let at = at ?? self.clock.millis
        let headers = [
            LogHeader(name: "dedupe-key", value: ByteBuffer(string: key)),
            LogHeader(name: "quarantine-topic", value: ByteBuffer(string: topic)),
            LogHeader(name: "quarantine-time", value: ByteBuffer(string: String(at))),
            LogHeader(name: "quarantine-reason", value: ByteBuffer(string: "FORBIDDEN_FIELD")),
        ]
        return LogRecord(key: nil, headers: headers, value: ByteBuffer(string: "{\"mrn\":1}"), timestamp: at)
    }

    /// Appends one record and returns its offset.
    @discardableResult
    func append(_ record: LogRecord, to log: any TopicLog) async throws -> Int64 {
        try await log.append([record]).baseOffset
    }

    /// The publish path for one record: reserve, append on admission, commit. Returns the reservation outcome.
    func publish(_ gate: DedupeGate, key: String, quarantined: Bool = false) async throws -> DedupeAdmission {
        let admission = try await gate.admit(key: Array(key.utf8))
        if case .admitted(let ticket) = admission {
            if quarantined {
                let offset = try await self.append(self.quarantineRecord(key: key), to: self.quarantineLog)
                gate.commit(ticket, offset: offset, location: .quarantine)
            } else {
                let offset = try await self.append(self.topicRecord(key: key), to: self.topicLog)
                gate.commit(ticket, offset: offset, location: .topic)
            }
        }
        return admission
    }

    func close() async {
        await self.backend.closeAll()
        try? FileManager.default.removeItem(atPath: self.root)
    }
}

private func withFixture(
    topicConfig: TopicLogConfig? = nil,
    _ body: (GateFixture) async throws -> Void
) async throws {
    let fixture = try await GateFixture.make(topicConfig: topicConfig)
    do {
        try await body(fixture)
    } catch {
        await fixture.close()
        throw error
    }
    await fixture.close()
}

private func key(_ text: String) -> [UInt8] { Array(text.utf8) }

private func admittedTicket(_ reservation: DedupeReservation) -> DedupeTicket? {
    if case .admitted(let ticket) = reservation { return ticket }
    return nil
}

private func waiter(_ reservation: DedupeReservation) -> DedupeWaiter? {
    if case .inFlight(let waiter) = reservation { return waiter }
    return nil
}

private func duplicateEntry(_ reservation: DedupeReservation) -> DedupeEntry? {
    if case .duplicate(let entry) = reservation { return entry }
    return nil
}

@Suite("DedupeGate")
struct DedupeGateTests {
    // MARK: Reserve, commit, release

    @Test("admitted, committed, then a duplicate answers the original offset")
    func admittedThenDuplicate() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            try await fixture.append(fixture.topicRecord(key: nil), to: fixture.topicLog)  // offset 0, no key
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("order-1"))))
            let offset = try await fixture.append(fixture.topicRecord(key: "order-1"), to: fixture.topicLog)
            #expect(offset == 1)
            let committed = try #require(gate.commit(ticket, offset: offset, location: .topic))
            #expect(
                committed == DedupeEntry(offset: 1, location: .topic, expiresAtMillis: fixture.clock.millis + 60_000)
            )

            let again = try gate.reserve(key: key("order-1"))
            #expect(duplicateEntry(again) == committed)
            // The same key given as the stored header value.
            #expect(duplicateEntry(try gate.reserve(key: ByteBuffer(string: "order-1"))) == committed)
            #expect(try gate.lookup(key: key("order-1")) == committed)
            #expect(try gate.lookup(key: ByteBuffer(string: "order-1")) == committed)
            // Another key is independent.
            let other = try #require(admittedTicket(try gate.reserve(key: key("order-2"))))
            gate.release(other)
            #expect(gate.unsettledCount == 0)
        }
    }

    @Test("the window starts at the record's receive time when given")
    func commitAtReceiveTime() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            let entry = try #require(
                gate.commit(ticket, offset: 0, location: .topic, atMillis: fixture.clock.millis - 10)
            )
            #expect(entry.expiresAtMillis == fixture.clock.millis - 10 + GateFixture.window)
        }
    }

    @Test("a key is a duplicate until its window ends, then new again", arguments: [Int64(1), 59_999, 60_000, 120_000])
    func windowExpiry(after elapsed: Int64) async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            gate.commit(ticket, offset: 7, location: .topic)
            fixture.clock.advance(by: elapsed)
            let reservation = try gate.reserve(key: key("k"))
            if elapsed < GateFixture.window {
                #expect(duplicateEntry(reservation)?.offset == 7)
            } else {
                #expect(admittedTicket(reservation) != nil)
                #expect(try gate.lookup(key: key("k")) == nil)
            }
        }
    }

    @Test("keys outside 1...256 bytes are refused", arguments: [0, 257])
    func invalidKey(length: Int) async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            #expect(throws: LogStoreError.self) { try gate.reserve(key: [UInt8](repeating: 0x41, count: length)) }
            #expect(throws: LogStoreError.self) { try gate.beginReplay(key: [UInt8](repeating: 0x41, count: length)) }
            #expect(admittedTicket(try gate.reserve(key: [UInt8](repeating: 0x41, count: 256))) != nil)
        }
    }

    @Test("a concurrent reserve of an in-flight key is resolved as a duplicate after the commit")
    func inFlightThenDuplicate() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            let first = try #require(waiter(try gate.reserve(key: key("k"))))
            let second = try #require(waiter(try gate.reserve(key: key("k"))))
            #expect(first === second)  // one waiter per in-flight append
            let heard = Locked<[DedupeResolution]>([])
            first.whenResolved { resolution in heard.withLock { $0.append(resolution) } }
            #expect(heard.withLock { $0.isEmpty })

            let offset = try await fixture.append(fixture.topicRecord(key: "k"), to: fixture.topicLog)
            let entry = try #require(gate.commit(ticket, offset: offset, location: .topic))
            #expect(heard.withLock { $0 } == [.duplicate(entry)])
            // Registering after the outcome is known calls back at once; the async form agrees.
            second.whenResolved { resolution in heard.withLock { $0.append(resolution) } }
            #expect(heard.withLock { $0 } == [.duplicate(entry), .duplicate(entry)])
            #expect(await second.resolution == .duplicate(entry))
            #expect(duplicateEntry(try gate.reserve(key: key("k"))) == entry)
        }
    }

    @Test("a failed append releases the key: waiters retry and one of them is admitted")
    func inFlightThenRetry() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            let waiting = try #require(waiter(try gate.reserve(key: key("k"))))
            gate.release(ticket)
            #expect(await waiting.resolution == .retry)
            let retried = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            #expect(retried != ticket)
            #expect(waiter(try gate.reserve(key: key("k"))) != nil)
            gate.commit(retried, offset: 3, location: .topic)
            #expect(duplicateEntry(try gate.reserve(key: key("k")))?.offset == 3)
        }
    }

    @Test("settling a ticket twice is logged and ignored")
    func settleTwice() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let ticket = try #require(admittedTicket(try gate.reserve(key: key("k"))))
            #expect(gate.commit(ticket, offset: 4, location: .topic) != nil)
            #expect(gate.commit(ticket, offset: 9, location: .topic) == nil)
            gate.release(ticket)
            #expect(duplicateEntry(try gate.reserve(key: key("k")))?.offset == 4)
            #expect(fixture.logs.lines(.error, containing: "already settled").count == 2)
        }
    }

    @Test("one request's keys in one call: a repeated key waits on the first, commits and releases settle in a batch")
    func batchReserveCommitRelease() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            gate.commit(try #require(admittedTicket(try gate.reserve(key: key("old")))), offset: 1, location: .topic)
            let digests = try ["a", "b", "a", "old", "c"].map { try gate.digest(of: ByteBuffer(bytes: key($0))) }
            let reservations = gate.reserve(digests: digests)
            let a = try #require(admittedTicket(reservations[0]))
            let b = try #require(admittedTicket(reservations[1]))
            let repeated = try #require(waiter(reservations[2]))
            #expect(duplicateEntry(reservations[3])?.offset == 1)
            let c = try #require(admittedTicket(reservations[4]))

            let commits: [(ticket: DedupeTicket, offset: Int64)] = [(a, 10), (c, 12)]
            let held = gate.commit(commits, location: .quarantine)
            #expect(held.map { $0?.offset } == [10, 12])
            #expect(await repeated.resolution == .duplicate(try #require(held[0])))
            #expect(duplicateEntry(try gate.reserve(key: key("c")))?.location == .quarantine)
            // Settling again is refused per ticket (logged), while the other tickets of the batch settle.
            gate.release([a, b])
            #expect(fixture.logs.lines(.error, containing: "already settled").count == 1)
            #expect(admittedTicket(try gate.reserve(key: key("b"))) != nil)
            #expect(duplicateEntry(try gate.reserve(key: key("a")))?.offset == 10)
        }
    }

    @Test("many concurrent publishers of one key: exactly one append, everyone else gets its offset")
    func concurrentPublishers() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            let outcomes = try await withThrowingTaskGroup(of: DedupeAdmission.self) { group in
                for _ in 0..<32 {
                    group.addTask { try await fixture.publish(gate, key: "shared") }
                }
                var all: [DedupeAdmission] = []
                for try await outcome in group { all.append(outcome) }
                return all
            }
            let admitted = outcomes.filter { if case .admitted = $0 { return true } else { return false } }
            #expect(admitted.count == 1)
            #expect(fixture.topicLog.endOffset == 1)
            let entry = try #require(try gate.lookup(key: key("shared")))
            #expect(entry.offset == 0)
            #expect(outcomes.filter { $0 == .duplicate(entry) }.count == 31)
        }
    }

    // MARK: Quarantine and replay

    @Test("a key whose record was quarantined answers its __quarantine offset")
    func quarantineLocation() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            try await fixture.append(fixture.quarantineRecord(key: "x", topic: "elsewhere"), to: fixture.quarantineLog)
            let admission = try await fixture.publish(gate, key: "bad", quarantined: true)
            guard case .admitted = admission else {
                Issue.record("expected the first record to be admitted, got \(admission)")
                return
            }
            let entry = try #require(duplicateEntry(try gate.reserve(key: key("bad"))))
            #expect(entry.location == .quarantine)
            #expect(entry.offset == 1)
        }
    }

    @Test("a replayed key points at its new topic offset and keeps its expiry")
    func replayed() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            _ = try await fixture.publish(gate, key: "a", quarantined: true)
            _ = try await fixture.publish(gate, key: "b", quarantined: true)
            let before = try #require(try gate.lookup(key: key("a")))
            fixture.clock.advance(by: 1000)

            // The ticket form.
            let ticket = try gate.beginReplay(key: ByteBuffer(string: "a"))
            #expect(duplicateEntry(try gate.reserve(key: key("a")))?.location == .quarantine)  // still quarantined
            let offset = try await fixture.append(fixture.topicRecord(key: "a"), to: fixture.topicLog)
            let moved = try #require(gate.replayed(ticket, newOffset: offset))
            #expect(moved == DedupeEntry(offset: offset, location: .topic, expiresAtMillis: before.expiresAtMillis))
            #expect(duplicateEntry(try gate.reserve(key: key("a"))) == moved)
            #expect(gate.replayed(ticket, newOffset: 99) == nil)  // settled already

            // The key form.
            let movedB = try #require(try gate.replayed(key: key("b"), newOffset: 5))
            #expect(movedB.location == .topic && movedB.offset == 5)
            // An unknown key is not invented.
            #expect(try gate.replayed(key: key("never"), newOffset: 6) == nil)
        }
    }

    // MARK: Bound

    @Test("at the bound the oldest key is evicted, logged with its remaining window, and counted")
    func boundEviction() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate(maxKeys: 2)
            _ = try await fixture.publish(gate, key: "k1")
            fixture.clock.advance(by: 1000)
            _ = try await fixture.publish(gate, key: "k2")
            #expect(gate.evictedBeforeExpiry == 0)
            _ = try await fixture.publish(gate, key: "k3")
            #expect(gate.evictedBeforeExpiry == 1)
            #expect(gate.keyCount == 2)
            let warnings = fixture.logs.lines(.warning, containing: "evicted a key before its window ended")
            #expect(warnings.count == 1)
            #expect(warnings.first?.metadata["brokerd.remaining_window_ms"] == "59000")
            #expect(warnings.first?.metadata["brokerd.original_offset"] == "0")
            #expect(warnings.first?.metadata["brokerd.topic"] == GateFixture.topic)
            // ...and exported as a metric, once per eviction.
            let counter = try fixture.metrics.expectCounter(DedupeGate.evictionMetric, [("topic", GateFixture.topic)])
            #expect(counter.totalValue == 1)
            // k1 is forgotten (accepted again); k2 and k3 are still guarded.
            #expect(admittedTicket(try gate.reserve(key: key("k1"))) != nil)
            #expect(duplicateEntry(try gate.reserve(key: key("k3"))) != nil)
        }
    }

    // MARK: Snapshots and retention floor

    @Test("snapshot, then reopen: keys come from the snapshot, nothing to rescan")
    func snapshotAndReopen() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            _ = try await fixture.publish(gate, key: "a")
            _ = try await fixture.publish(gate, key: "q", quarantined: true)
            _ = try await fixture.publish(gate, key: "b")
            let coverage = try await gate.snapshot()
            #expect(coverage == DedupeSnapshotCoverage(topicEnd: 2, quarantineEnd: 1, keys: 3))
            #expect(gate.retentionFloor == 2)
            #expect(fixture.floor.quarantineEnd == 1)

            let reopened = try await fixture.openGate()
            let report = try #require(reopened.recovery)
            #expect(report.snapshot == .loaded)
            #expect(report.restoredKeys == 3)
            #expect(report.topicScan.applied == 0 && report.quarantineScan.applied == 0)
            #expect(try reopened.lookup(key: key("a"))?.offset == 0)
            #expect(try reopened.lookup(key: key("b"))?.offset == 1)
            #expect(
                try reopened.lookup(key: key("q"))
                    == DedupeEntry(offset: 0, location: .quarantine, expiresAtMillis: fixture.clock.millis + 60_000)
            )
            #expect(reopened.retentionFloor == 2)
            #expect(admittedTicket(try reopened.reserve(key: key("c"))) != nil)
        }
    }

    @Test("reopening with a lower window or bound applies them to the restored keys, evictions logged and counted")
    func reopenWithLowerLimits() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            for name in ["a", "b", "c"] {
                _ = try await fixture.publish(gate, key: name)
                fixture.clock.advance(by: 10)
            }
            try await gate.snapshot()
            let reopened = try await fixture.openGate(maxKeys: 2, windowMillis: 1000)
            #expect(reopened.recovery?.evictedWhileRestoring == 1)
            #expect(reopened.evictedBeforeExpiry == 1)
            #expect(fixture.logs.lines(.warning, containing: "more live keys than max_keys").count == 1)
            #expect(try reopened.lookup(key: key("a")) == nil)  // the oldest went
            #expect(try reopened.lookup(key: key("c"))?.expiresAtMillis == fixture.clock.millis + 1000)
            fixture.clock.advance(by: 1000)
            #expect(try reopened.lookup(key: key("b")) == nil)
            #expect(try reopened.lookup(key: key("c")) == nil)
        }
    }

    @Test("snapshotIfDue: only when something changed and the commit count or the interval is reached")
    func snapshotIfDue() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate(policy: .init(everyCommits: 3, intervalMillis: 10_000))
            #expect(gate.snapshotIfDue() == false)  // nothing changed
            _ = try await fixture.publish(gate, key: "a")
            _ = try await fixture.publish(gate, key: "b")
            #expect(gate.snapshotIfDue() == false)  // 2 commits, interval not reached
            _ = try await fixture.publish(gate, key: "c")  // the third commit starts one itself
            #expect(gate.snapshotIfDue() == false)
            try await gate.close()  // waits for the queued write too (serial queue)
            #expect(gate.retentionFloor == 3)
            // Records without keys move the covered end; the interval then triggers a snapshot.
            try await fixture.append(fixture.topicRecord(key: nil), to: fixture.topicLog)
            #expect(gate.snapshotIfDue() == false)
            fixture.clock.advance(by: 10_000)
            #expect(gate.snapshotIfDue() == true)
            #expect(gate.snapshotIfDue() == false)
            try await gate.snapshot()
            #expect(gate.retentionFloor == 4)
            let saved = try #require(try DedupeSnapshot.load(directory: fixture.directory))
            #expect(saved.topicEnd == 4)
            #expect(saved.entries.count == 3)
        }
    }

    @Test("a large index waits for half as many commits as it has keys before the next snapshot")
    func snapshotScalesWithKeys() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate(policy: .init(everyCommits: 2, intervalMillis: 10_000))
            for n in 0..<8 { _ = try await fixture.publish(gate, key: "k\(n)") }
            try await gate.snapshot()  // 8 keys: the next snapshot is due after max(2, 8 / 2) = 4 commits
            for n in 8..<11 { _ = try await fixture.publish(gate, key: "k\(n)") }
            #expect(gate.snapshotIfDue() == false)
            // 3 commits: none started a snapshot (a fixed count of 2 would have written one with 10 keys by now).
            try await Task.sleep(for: .milliseconds(200))
            #expect(try #require(try DedupeSnapshot.load(directory: fixture.directory)).entries.count == 8)
            _ = try await fixture.publish(gate, key: "k11")  // the 4th commit starts one itself
            try await gate.close()
            #expect(try #require(try DedupeSnapshot.load(directory: fixture.directory)).entries.count == 12)
        }
    }

    @Test("the snapshot never covers a record whose append has not committed, whatever order appends complete in")
    func retentionFloorWatermark() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            #expect(gate.retentionFloor == 0)  // before the first snapshot
            _ = try await fixture.publish(gate, key: "a")  // topic offset 0
            // "slow" is admitted first but its append completes after later ones.
            let slow = try #require(admittedTicket(try gate.reserve(key: key("slow"))))
            let quick = try #require(admittedTicket(try gate.reserve(key: key("quick"))))
            let quickOffset = try await fixture.append(fixture.topicRecord(key: "quick"), to: fixture.topicLog)
            gate.commit(quick, offset: quickOffset, location: .topic)
            let slowOffset = try await fixture.append(fixture.topicRecord(key: "slow"), to: fixture.topicLog)
            _ = try await fixture.publish(gate, key: "later")  // offset 3, committed
            #expect(fixture.topicLog.endOffset == 4)

            let early = try await gate.snapshot()
            #expect(early.topicEnd == 1)  // "slow" was admitted when the topic ended at 1
            #expect(early.topicEnd <= slowOffset)
            #expect(gate.retentionFloor == early.topicEnd)
            let saved = try #require(try DedupeSnapshot.load(directory: fixture.directory))
            #expect(saved.topicEnd == gate.retentionFloor)

            // A crash now: the reopened gate rescans from 1 and finds "slow" in the log.
            let recovered = try await fixture.openGate()
            #expect(try recovered.lookup(key: key("slow"))?.offset == slowOffset)
            #expect(recovered.recovery?.topicScan.applied == 3)

            gate.commit(slow, offset: slowOffset, location: .topic)
            let late = try await gate.snapshot()
            #expect(late.topicEnd == 4)
            #expect(gate.retentionFloor == 4)
            #expect(DedupeFloor.quarantineFloor([gate.floor, DedupeFloor()]) == 0)
            #expect(DedupeFloor.quarantineFloor([]) == Int64.max)
        }
    }

    @Test("a replay ticket holds the covered end below the replayed record")
    func replayTicketHoldsWatermark() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            _ = try await fixture.publish(gate, key: "q", quarantined: true)
            let ticket = try gate.beginReplay(key: key("q"))
            let offset = try await fixture.append(fixture.topicRecord(key: "q"), to: fixture.topicLog)
            #expect(try await gate.snapshot().topicEnd == offset)  // not past the replayed record
            gate.replayed(ticket, newOffset: offset)
            #expect(try await gate.snapshot().topicEnd == offset + 1)
        }
    }

    // MARK: Recovery

    @Test("crash without any snapshot: keys are rebuilt from the topic and __quarantine with their offsets")
    func crashRecoveryWithoutSnapshot() async throws {
        try await withFixture { fixture in
            let now = fixture.clock.millis
            // What a broker wrote before crashing, with no gate snapshot ever taken.
            try await fixture.append(fixture.topicRecord(key: nil), to: fixture.topicLog)  // 0
            try await fixture.append(fixture.topicRecord(key: "t1"), to: fixture.topicLog)  // 1
            try await fixture.append(fixture.quarantineRecord(key: "q1"), to: fixture.quarantineLog)  // q0
            try await fixture.append(
                fixture.quarantineRecord(key: "other", topic: "billing"),
                to: fixture.quarantineLog
            )  // q1
            try await fixture.append(fixture.quarantineRecord(key: "r1"), to: fixture.quarantineLog)  // q2
            try await fixture.append(fixture.topicRecord(key: "t2"), to: fixture.topicLog)  // 2
            // r1 was replayed into the topic (window from its original time): the topic location wins.
            try await fixture.append(fixture.topicRecord(key: "r1", receivedAt: now), to: fixture.topicLog)  // 3
            // A producer-set ancient timestamp does not shorten the window: broker-received-at counts.
            try await fixture.append(fixture.topicRecord(key: "old-ts", timestamp: 1), to: fixture.topicLog)  // 4
            // A key whose window already ended is not restored.
            try await fixture.append(
                fixture.topicRecord(key: "expired", receivedAt: now - GateFixture.window),
                to: fixture.topicLog
            )  // 5

            let gate = try await fixture.openGate(floor: fixture.floor)
            let report = try #require(gate.recovery)
            #expect(report.snapshot == .missing)
            #expect(report.topicScan.applied == 5)
            #expect(report.quarantineScan.applied == 2)
            #expect(report.topicScan.missing == nil && report.quarantineScan.missing == nil)
            let expiry = now + GateFixture.window
            #expect(
                try gate.lookup(key: key("t1")) == DedupeEntry(offset: 1, location: .topic, expiresAtMillis: expiry)
            )
            #expect(
                try gate.lookup(key: key("t2")) == DedupeEntry(offset: 2, location: .topic, expiresAtMillis: expiry)
            )
            #expect(
                try gate.lookup(key: key("q1"))
                    == DedupeEntry(offset: 0, location: .quarantine, expiresAtMillis: expiry)
            )
            #expect(
                try gate.lookup(key: key("r1")) == DedupeEntry(offset: 3, location: .topic, expiresAtMillis: expiry)
            )
            #expect(try gate.lookup(key: key("old-ts"))?.offset == 4)
            #expect(try gate.lookup(key: key("other")) == nil)
            #expect(try gate.lookup(key: key("expired")) == nil)
            // The open wrote a fresh snapshot and raised the floors to the logs' ends.
            #expect(gate.retentionFloor == 6)
            #expect(fixture.floor.quarantineEnd == 3)
            #expect(try DedupeSnapshot.load(directory: fixture.directory)?.topicEnd == 6)
            // And the gate answers duplicates with the original offsets.
            #expect(duplicateEntry(try gate.reserve(key: key("q1")))?.location == .quarantine)
        }
    }

    @Test("crash with a stale snapshot: snapshot keys plus the keys appended after it")
    func crashRecoveryWithStaleSnapshot() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            _ = try await fixture.publish(gate, key: "a")  // 0
            _ = try await fixture.publish(gate, key: "qa", quarantined: true)  // q0
            try await gate.snapshot()
            _ = try await fixture.publish(gate, key: "b")  // 1, after the snapshot
            _ = try await fixture.publish(gate, key: "qb", quarantined: true)  // q1
            // An append that was admitted and written but never committed (crash in between).
            _ = try #require(admittedTicket(try gate.reserve(key: key("c"))))
            try await fixture.append(fixture.topicRecord(key: "c"), to: fixture.topicLog)  // 2
            // Drop the gate without another snapshot and reopen.
            let reopened = try await fixture.openGate()
            let report = try #require(reopened.recovery)
            #expect(report.snapshot == .loaded)
            #expect(report.restoredKeys == 2)
            #expect(report.topicScan.applied == 2)
            #expect(report.quarantineScan.applied == 1)
            for (name, offset, location) in [
                ("a", Int64(0), DedupeLocation.topic), ("b", 1, .topic), ("c", 2, .topic), ("qa", 0, .quarantine),
                ("qb", 1, .quarantine),
            ] {
                let entry = try reopened.lookup(key: key(name))
                #expect(entry?.offset == offset && entry?.location == location, "key \(name)")
            }
        }
    }

    @Test("a corrupt snapshot is logged at error level and the keys are rebuilt from the logs")
    func corruptSnapshot() async throws {
        try await withFixture { fixture in
            let gate = try fixture.makeGate()
            _ = try await fixture.publish(gate, key: "a")
            try await gate.snapshot()
            let path = fixture.directory + "/" + DedupeSnapshot.fileName
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[bytes.count / 2] ^= 0xFF
            try bytes.write(to: URL(fileURLWithPath: path))

            let reopened = try await fixture.openGate()
            guard case .corrupt(let message) = reopened.recovery?.snapshot else {
                Issue.record("expected a corrupt snapshot, got \(String(describing: reopened.recovery?.snapshot))")
                return
            }
            #expect(message.contains("CRC mismatch"))
            #expect(fixture.logs.lines(.error, containing: "dedupe snapshot is corrupt").count == 1)
            #expect(try reopened.lookup(key: key("a"))?.offset == 0)
            // The rebuild wrote a good snapshot again.
            #expect(try DedupeSnapshot.load(directory: fixture.directory)?.entries.count == 1)
        }
    }

    @Test("snapshot entries beyond the logs' ends (a lost tail) are forgotten, not trusted")
    func snapshotBeyondLogEnd() async throws {
        try await withFixture { fixture in
            try await fixture.append(fixture.topicRecord(key: "kept"), to: fixture.topicLog)  // 0
            // A snapshot that claims records the log no longer has (written before a crash lost the tail).
            var index = try DedupeIndex(windowMillis: GateFixture.window, maxKeys: 10)
            let now = fixture.clock.millis
            _ = try index.insert(ByteBuffer(string: "kept"), offset: 0, location: .topic, nowMillis: now)
            _ = try index.insert(ByteBuffer(string: "lost"), offset: 5, location: .topic, nowMillis: now)
            try index.snapshot(topicEnd: 6, quarantineEnd: 0, takenAtMillis: now).write(directory: fixture.directory)

            let gate = try await fixture.openGate()
            #expect(gate.recovery?.droppedBeyondLogEnd == 1)
            #expect(try gate.lookup(key: key("kept"))?.offset == 0)
            #expect(try gate.lookup(key: key("lost")) == nil)
            #expect(gate.retentionFloor == 1)
            #expect(fixture.logs.lines(.warning, containing: "beyond the logs' ends").count == 1)
        }
    }

    @Test("records deleted by retention before any snapshot: the lost range is logged; the rest is rebuilt")
    func lostToRetention() async throws {
        var config = TopicLogConfig()
        config.segmentBytes = 256
        config.retentionBytes = 600  // keeps about two segments, no floor on purpose
        try await withFixture(topicConfig: config) { fixture in
            for i in 0..<20 {
                try await fixture.append(fixture.topicRecord(key: "k\(i)"), to: fixture.topicLog)
            }
            let start = fixture.topicLog.startOffset
            #expect(start > 0)
            let gate = try await fixture.openGate()
            #expect(gate.recovery?.topicScan.missing == 0..<start)
            let lost = fixture.logs.lines(.error, containing: "dedupe keys lost")
            #expect(lost.count == 1)
            #expect(lost.first?.metadata["brokerd.lost_to"] == "\(start)")
            #expect(try gate.lookup(key: key("k19"))?.offset == 19)
            #expect(try gate.lookup(key: key("k0")) == nil)
        }
    }

    @Test("with the floor in the topic's config, retention keeps every record not covered by a snapshot")
    func floorBlocksRetention() async throws {
        let floor = DedupeFloor()
        var config = TopicLogConfig()
        config.segmentBytes = 256
        config.retentionBytes = 600
        config.retentionFloor = floor.topicFloor
        try await withFixture(topicConfig: config) { fixture in
            let gate = try await fixture.openGate(floor: floor)
            for i in 0..<20 { _ = try await fixture.publish(gate, key: "k\(i)") }
            #expect(fixture.topicLog.startOffset == 0)  // floor 0 holds every segment back
            try await gate.snapshot()
            #expect(floor.topicEnd == 20)
            try await fixture.append(fixture.topicRecord(key: nil), to: fixture.topicLog)  // a retention pass
            #expect(fixture.topicLog.startOffset > 0)
            #expect(fixture.topicLog.startOffset <= floor.topicEnd)
            // Reopening after retention ran loses nothing: the snapshot holds the deleted records' keys.
            let reopened = try await fixture.openGate()
            #expect(reopened.recovery?.topicScan.missing == nil)
            #expect(try reopened.lookup(key: key("k0"))?.offset == 0)
        }
    }
}
