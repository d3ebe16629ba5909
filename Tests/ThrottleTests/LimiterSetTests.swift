import Testing

@testable import Throttle

private let second: UInt64 = 1_000_000_000
private let hour: UInt64 = 3_600 * second
private let day: UInt64 = 24 * hour
/// A wall-clock start: 2026-01-01T00:00:00Z in nanoseconds.
private let start: UInt64 = 1_767_225_600 * second

private func at(_ nanos: UInt64) -> LimiterNow { LimiterNow(nanos: nanos) }

/// "At most 3 promotional outreach records per recipient per 24 h".
private let outreach = LimiterDefinition(name: "outreach_per_recipient", limit: .window(cap: 3, windowNanos: day))

@Suite("LimiterSet")
struct LimiterSetTests {
    @Test("the 4th outreach record for one recipient in 24 h is limited with the exact retry-after; others are not")
    func outreachCap() throws {
        let set = try LimiterSet(definitions: [outreach])
        let name = outreach.name
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start)) == .allowed)
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start + 1 * hour)) == .allowed)
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start + 2 * hour)) == .allowed)
        // The first record leaves the window at start + 24 h.
        #expect(
            try set.check(limiter: name, keys: ["pt_1"], now: at(start + 3 * hour))
                == .limited(retryAfterNanos: 21 * hour)
        )
        #expect(try set.check(limiter: name, keys: ["pt_2"], now: at(start + 3 * hour)) == .allowed)
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start + day - 1)) == .limited(retryAfterNanos: 1))
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start + day)) == .allowed)
        // Sliding, not fixed: the next slot opens when the second record leaves, one hour later.
        #expect(try set.check(limiter: name, keys: ["pt_1"], now: at(start + day)) == .limited(retryAfterNanos: hour))
        #expect(try set.keyCount(limiter: name) == 2)
    }

    @Test("all or nothing across the keys of one record: a refusal by one key charges none")
    func allOrNothing() throws {
        let scope = LimiterDefinition(name: "per_scope", limit: .tokenBucket(ratePerSecond: 1, burst: 1))
        let set = try LimiterSet(definitions: [scope, outreach])
        #expect(try set.check(limiter: "per_scope", keys: ["b"], now: at(0)) == .allowed)
        // b has no token until 1 s; a must not be charged for the refused record.
        #expect(try set.check(limiter: "per_scope", keys: ["a", "b"], now: at(0)) == .limited(retryAfterNanos: second))
        #expect(try set.state(limiter: "per_scope", key: "a", now: at(0)).usage == .tokens(available: 1, burst: 1))
        #expect(try set.state(limiter: "per_scope", key: "a", now: at(0)).held == false)
        #expect(try set.check(limiter: "per_scope", keys: ["a"], now: at(0)) == .allowed)
        // Both limited: the retry-after is when both allow it (the later one).
        #expect(
            try set.check(limiter: "per_scope", keys: ["b"], now: at(second / 2))
                == .limited(retryAfterNanos: second / 2)
        )
        #expect(try set.check(limiter: "per_scope", keys: ["a", "b"], now: at(second)) == .allowed)

        // The same with windows: pt_2 full, pt_1 not; a record for both charges neither.
        for offset in 0..<3 {
            #expect(try set.check(limiter: outreach.name, keys: ["pt_2"], now: at(start + UInt64(offset))) == .allowed)
        }
        #expect(
            try set.check(limiter: outreach.name, keys: ["pt_1", "pt_2"], now: at(start + 10))
                == .limited(retryAfterNanos: day - 10)
        )
        let pt1 = try set.state(limiter: outreach.name, key: "pt_1", now: at(start + 10))
        #expect(pt1.usage == .window(events: 0, cap: 3, windowNanos: day))
    }

    @Test("a key listed twice counts once; no keys is allowed and counts nothing")
    func duplicateAndNoKeys() throws {
        let set = try LimiterSet(definitions: [outreach])
        #expect(try set.check(limiter: outreach.name, keys: ["pt_1", "pt_1", "pt_1"], now: at(start)) == .allowed)
        let state = try set.state(limiter: outreach.name, key: "pt_1", now: at(start))
        #expect(state.usage == .window(events: 1, cap: 3, windowNanos: day))
        #expect(try set.check(limiter: outreach.name, keys: [], now: at(start)) == .allowed)
        #expect(try set.keyCount(limiter: outreach.name) == 1)
    }

    @Test("a batch larger than the burst or cap can never pass")
    func largerThanLimit() throws {
        let bucket = LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 10, burst: 5))
        let set = try LimiterSet(definitions: [bucket, outreach])
        #expect(try set.check(limiter: "b", keys: ["k"], tokens: 6, now: at(0)) == .limited(retryAfterNanos: .max))
        #expect(
            try set.check(limiter: outreach.name, keys: ["k"], tokens: 4, now: at(0)) == .limited(retryAfterNanos: .max)
        )
        #expect(try set.check(limiter: "b", keys: ["k"], tokens: 5, now: at(0)) == .allowed)
        #expect(try set.check(limiter: outreach.name, keys: ["k"], tokens: 3, now: at(0)) == .allowed)
    }

    @Test("snapshot and restore keep a contact cap across a restart")
    func snapshotRestore() throws {
        let before = try LimiterSet(definitions: [outreach])
        for offset in [0, 1, 2] {
            #expect(
                try before.check(limiter: outreach.name, keys: ["pt_1"], now: at(start + UInt64(offset) * hour))
                    == .allowed
            )
        }
        #expect(try before.check(limiter: outreach.name, keys: ["pt_2"], now: at(start)) == .allowed)
        let snapshot = before.snapshot(now: at(start + 3 * hour))
        #expect(
            snapshot == [
                LimiterSnapshotEntry(
                    limiter: outreach.name,
                    key: "pt_1",
                    eventTimes: [start, start + hour, start + 2 * hour]
                ),
                LimiterSnapshotEntry(limiter: outreach.name, key: "pt_2", eventTimes: [start]),
            ]
        )

        // The restarted broker: a new set, restored from the snapshot at a later wall-clock time.
        let after = try LimiterSet(definitions: [outreach])
        let report = after.restore(snapshot, now: at(start + 4 * hour))
        #expect(report == LimiterRestoreReport(restored: 2))
        #expect(
            try after.check(limiter: outreach.name, keys: ["pt_1"], now: at(start + 4 * hour))
                == .limited(retryAfterNanos: 20 * hour)
        )
        #expect(try after.check(limiter: outreach.name, keys: ["pt_2"], now: at(start + 4 * hour)) == .allowed)
        #expect(try after.check(limiter: outreach.name, keys: ["pt_2"], now: at(start + 4 * hour)) == .allowed)
        #expect(
            try after.check(limiter: outreach.name, keys: ["pt_2"], now: at(start + 4 * hour))
                == .limited(retryAfterNanos: 20 * hour)
        )
        // Without the restore the cap would have been lifted.
        let forgetful = try LimiterSet(definitions: [outreach])
        #expect(try forgetful.check(limiter: outreach.name, keys: ["pt_1"], now: at(start + 4 * hour)) == .allowed)
    }

    @Test("restore: a lowered cap keeps the newest events; unknown, expired and overflowing entries are reported")
    func restoreEdges() throws {
        let snapshot = [
            LimiterSnapshotEntry(
                limiter: outreach.name,
                key: "pt_1",
                eventTimes: [start + 2 * hour, start, start + hour]
            ),
            LimiterSnapshotEntry(limiter: "gone", key: "pt_1", eventTimes: [start]),
            LimiterSnapshotEntry(limiter: outreach.name, key: "pt_old", eventTimes: [start - day]),
            LimiterSnapshotEntry(limiter: outreach.name, key: "pt_2", eventTimes: [start]),
        ]
        var lowered = outreach
        lowered.limit = .window(cap: 2, windowNanos: day)
        lowered.maxKeys = 1
        let set = try LimiterSet(definitions: [lowered])
        let report = set.restore(snapshot, now: at(start + 3 * hour))
        #expect(
            report
                == LimiterRestoreReport(restored: 1, skippedUnknownLimiter: ["gone"], expired: 1, droppedTableFull: 1)
        )
        // The newest two events (start + 1 h, start + 2 h) were kept: the next slot opens at start + 25 h.
        #expect(
            try set.check(limiter: outreach.name, keys: ["pt_1"], now: at(start + 3 * hour))
                == .limited(retryAfterNanos: 22 * hour)
        )
        #expect(set.snapshot(now: at(start + 3 * hour)).first?.eventTimes == [start + hour, start + 2 * hour])
    }

    @Test("a full table of active keys refuses a new key (fails closed) until the oldest idles")
    func tableFull() throws {
        let cap = LimiterDefinition(name: "c", limit: .window(cap: 1, windowNanos: 1_000), maxKeys: 2)
        let set = try LimiterSet(definitions: [cap])
        #expect(try set.check(limiter: "c", keys: ["a"], now: at(100)) == .allowed)
        #expect(try set.check(limiter: "c", keys: ["b"], now: at(200)) == .allowed)
        // "a" idles at 1_100: until then a third key would have to forget a cap in force.
        #expect(try set.check(limiter: "c", keys: ["c"], now: at(300)) == .tableFull(retryAfterNanos: 800))
        // A record with a held key and a new one: nothing charged.
        #expect(try set.check(limiter: "c", keys: ["c", "b"], now: at(1_150)) == .limited(retryAfterNanos: 50))
        #expect(try set.check(limiter: "c", keys: ["c"], now: at(1_100)) == .allowed)
        #expect(try set.keyCount(limiter: "c") == 2)
        #expect(try set.state(limiter: "c", key: "a", now: at(1_100)).held == false)
        // Two new keys but only one idle slot: refused whole, after "b" idles at 1_200.
        #expect(try set.check(limiter: "c", keys: ["d", "e"], now: at(1_150)) == .tableFull(retryAfterNanos: 50))
        #expect(try set.state(limiter: "c", key: "d", now: at(1_150)).held == false)
        #expect(try set.check(limiter: "c", keys: ["d", "e"], now: at(2_100)) == .allowed)
    }

    @Test("a byte quota paces delivery alongside the record limit, all or nothing")
    func byteQuota() throws {
        let quota = LimiterDefinition(
            name: "q",
            limit: .tokenBucket(ratePerSecond: 1_000, burst: 1_000),
            bytesPerSecond: 100,
            burstBytes: 100
        )
        let set = try LimiterSet(definitions: [quota])
        #expect(try set.check(limiter: "q", keys: ["sub"], bytes: 60, now: at(0)) == .allowed)
        // 40 bytes left; 60 more need 20 bytes at 100 bytes/s = 0.2 s.
        #expect(
            try set.check(limiter: "q", keys: ["sub"], bytes: 60, now: at(0)) == .limited(retryAfterNanos: second / 5)
        )
        let state = try set.state(limiter: "q", key: "sub", now: at(0))
        #expect(state.bytesAvailable == 40)
        #expect(state.usage == .tokens(available: 999, burst: 1_000))  // the refused record took no record token
        #expect(try set.check(limiter: "q", keys: ["sub"], bytes: 60, now: at(second / 5)) == .allowed)
        // A record larger than the byte burst takes the whole burst instead of waiting forever.
        #expect(try set.check(limiter: "q", keys: ["big"], bytes: 5_000, now: at(0)) == .allowed)
        #expect(try set.state(limiter: "q", key: "big", now: at(0)).bytesAvailable == 0)
        let defaulted = LimiterDefinition(
            name: "d",
            limit: .tokenBucket(ratePerSecond: 1, burst: 1),
            bytesPerSecond: 2.5
        )
        #expect(defaulted.effectiveBurstBytes == 3)
    }

    @Test("windows read the wall clock, token buckets the monotonic clock")
    func clocks() throws {
        let bucket = LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 1, burst: 1))
        #expect(bucket.clock == .monotonic)
        #expect(outreach.clock == .wall)
        let set = try LimiterSet(definitions: [bucket, outreach])
        let first = LimiterNow(monotonicNanos: 5 * second, wallNanos: start)
        #expect(try set.check(limiter: "b", keys: ["k"], now: first) == .allowed)
        #expect(try set.check(limiter: outreach.name, keys: ["k"], tokens: 3, now: first) == .allowed)
        // The wall clock moved a day, the monotonic clock half a second: the window has reopened, the bucket not.
        let later = LimiterNow(monotonicNanos: 5 * second + second / 2, wallNanos: start + day)
        #expect(try set.check(limiter: "b", keys: ["k"], now: later) == .limited(retryAfterNanos: second / 2))
        #expect(try set.check(limiter: outreach.name, keys: ["k"], now: later) == .allowed)
    }

    @Test("state shows tokens or window use and the retry-after without changing anything")
    func state() throws {
        let bucket = LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 2, burst: 4))
        let set = try LimiterSet(definitions: [bucket, outreach])
        let fresh = try set.state(limiter: "b", key: "k", now: at(0))
        #expect(fresh == LimiterKeyState(held: false, usage: .tokens(available: 4, burst: 4), retryAfterNanos: 0))
        #expect(try set.check(limiter: "b", keys: ["k"], tokens: 4, now: at(0)) == .allowed)
        let empty = try set.state(limiter: "b", key: "k", now: at(0))
        #expect(
            empty == LimiterKeyState(held: true, usage: .tokens(available: 0, burst: 4), retryAfterNanos: second / 2)
        )
        #expect(try set.state(limiter: "b", key: "k", now: at(0)) == empty)
        #expect(try set.check(limiter: outreach.name, keys: ["pt"], tokens: 3, now: at(start)) == .allowed)
        let capped = try set.state(limiter: outreach.name, key: "pt", now: at(start + hour))
        #expect(capped.usage == .window(events: 3, cap: 3, windowNanos: day))
        #expect(capped.retryAfterNanos == day - hour)
        #expect(capped.bytesAvailable == nil)
    }

    @Test("evictIdle forgets keys whose limit is back to fresh")
    func evictIdle() throws {
        let bucket = LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 1, burst: 1))
        let set = try LimiterSet(definitions: [bucket, outreach])
        #expect(try set.check(limiter: "b", keys: ["x", "y"], now: at(0)) == .allowed)
        #expect(try set.check(limiter: outreach.name, keys: ["pt"], now: at(0)) == .allowed)
        #expect(set.evictIdle(now: at(second / 2)) == 0)
        #expect(set.evictIdle(now: at(second)) == 2)
        #expect(try set.keyCount(limiter: "b") == 0)
        #expect(try set.keyCount(limiter: outreach.name) == 1)
        #expect(set.evictIdle(now: at(day)) == 1)
    }

    @Test("unknown and duplicate limiter names are errors")
    func misuse() throws {
        let error = #expect(throws: LimiterSetError.self) { try LimiterSet(definitions: [outreach, outreach]) }
        #expect(error?.message == "limiter 'outreach_per_recipient' is defined twice; names must be unique")
        let set = try LimiterSet(definitions: [outreach])
        let unknown = #expect(throws: LimiterSetError.self) {
            try set.check(limiter: "nope", keys: ["k"], now: at(0))
        }
        #expect(unknown?.message == "unknown limiter 'nope'; configured limiters: outreach_per_recipient")
    }

    @Test("WindowCap restored from event times behaves like the original")
    func windowCapRestore() {
        var original = WindowCap(limit: 3, windowNanos: 1_000)
        for time: UInt64 in [10, 20, 30, 1_015] { _ = original.tryRecord(nowNanos: time) }
        let times = original.eventTimes(nowNanos: 1_018)
        #expect(times == [20, 30, 1_015])
        var restored = WindowCap(limit: 3, windowNanos: 1_000, eventTimes: times.reversed())
        #expect(restored.count(nowNanos: 1_018) == 3)
        #expect(restored.count(nowNanos: 1_020) == original.count(nowNanos: 1_020))
        // wouldRecord answers like tryRecord and changes nothing: the event at 20 leaves the window at 1_020.
        #expect(restored.wouldRecord(1, nowNanos: 1_019) == .limited(retryAfterNanos: 1))
        #expect(restored.wouldRecord(1, nowNanos: 1_019) == .limited(retryAfterNanos: 1))
        #expect(restored.wouldRecord(4, nowNanos: 1_019) == .limited(retryAfterNanos: .max))
        #expect(restored.tryRecord(nowNanos: 1_019) == original.tryRecord(nowNanos: 1_019))
        #expect(restored.tryRecord(nowNanos: 1_020) == original.tryRecord(nowNanos: 1_020))
        #expect(restored.eventTimes(nowNanos: 1_020) == original.eventTimes(nowNanos: 1_020))
    }
}

@Suite("Key counts")
struct KeyCountsTests {
    @Test("records are grouped by their key's exact bytes, past the room sized at the start")
    func groupsByBytes() {
        var counts = KeyCounts(records: 1)
        // Repeats in a row and apart, same length differing in one byte, prefixes, the empty key, long keys.
        var keys = ["pt_1", "pt_1", "pt_2", "pt_1", "qt_1", "pt_10", "pt_1", "", "", "pt_", "a-long-recipient-id-0001"]
        keys += (0..<300).map { "recipient-\($0 % 150)" }
        var expected: [String: Int] = [:]
        var firstSeen: [String] = []
        var lastRecord: [Int: Int] = [:]
        for (position, key) in keys.enumerated() {
            let index = Array(key.utf8).withUnsafeBytes { counts.add($0) }
            if expected[key] == nil {
                expected[key] = firstSeen.count
                firstSeen.append(key)
            }
            #expect(index == expected[key], "\(key) at \(position)")
            #expect(counts.sequence.last.map(Int.init) == index)
            lastRecord[index] = position
        }
        // Each key's last record is where the model saw it last: the keys in that order.
        #expect(counts.keys(inOrderOfRecord: counts.records) == lastRecord.sorted { $0.value < $1.value }.map(\.key))
        #expect(counts.count == firstSeen.count)
        for (index, key) in firstSeen.enumerated() {
            #expect(counts.withKey(index) { String(decoding: $0, as: UTF8.self) } == key)
            #expect(counts.records[index] == keys.filter { $0 == key }.count, "\(key)")
            #expect(counts.hashes[index] == key.hashValue, "\(key)")
        }
        #expect(counts.sequence.count == keys.count)
    }
}
