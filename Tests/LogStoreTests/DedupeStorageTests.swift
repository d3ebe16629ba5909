import NIOCore
import Testing

@testable import LogStore

@Suite("Dedupe index storage")
struct DedupeStorageTests {
    @Test("the digest table agrees with a dictionary under random sets and removes, with crowded home slots")
    func digestTableModel() {
        var random = SplitMix64(seed: 11)
        var table = DigestTable()
        var model: [DedupeDigest: UInt64] = [:]
        for step in 0..<30_000 {
            // First words from a small range crowd a few home slots, so probes run long and wrap around the end,
            // and backward-shift deletion has long runs to repair. The phases let the table grow, then shrink.
            let growing = (step / 10_000) % 2 == 0
            let first = random.next() % 512 &* 0x9E37_79B9_7F4A_7C15 | (random.next() % 3 == 0 ? UInt64.max << 60 : 0)
            let digest = DedupeDigest(first: first, second: random.next() % 20)
            if random.next() % 100 < (growing ? 70 : 30) {
                table.set(digest, to: UInt64(step))
                model[digest] = UInt64(step)
            } else {
                #expect(table.remove(digest) == (model.removeValue(forKey: digest) != nil), "step \(step)")
            }
            if table.count != model.count {
                Issue.record("step \(step): count \(table.count), expected \(model.count)")
            }
            if step % 1_000 == 0 {
                for (key, value) in model { #expect(table.value(of: key) == value, "step \(step)") }
            }
        }
        for (key, value) in model { #expect(table.value(of: key) == value) }
        #expect(table.value(of: DedupeDigest(first: 5, second: 99_999)) == nil)
    }

    @Test("an empty table has no slots; a segment gets 16 with its first key, and a probe of an empty one misses")
    func digestTableEmptySegments() {
        var table = DigestTable()
        #expect(table.slotCount == 0)
        let digest = DedupeDigest(first: 7, second: 3 << 58)
        #expect(table.value(of: digest) == nil)
        table.prefetch(digest)
        let removedFromEmpty = table.remove(digest)
        #expect(!removedFromEmpty)
        table.set(digest, to: 9)
        #expect(table.slotCount == 16)
        #expect(table.value(of: digest) == 9)
        // The same first word in another segment (the second word's top bits differ): its own 16 slots.
        let other = DedupeDigest(first: 7, second: 5 << 58)
        #expect(table.value(of: other) == nil)
        table.set(other, to: 10)
        #expect(table.slotCount == 32)
        #expect(table.value(of: digest) == 9 && table.value(of: other) == 10)
        let removed = table.remove(digest)
        #expect(removed && table.count == 1)
        #expect(DigestTable(capacity: 64 * 10).slotCount == 64 * 16)
    }

    @Test("segments copied before a change keep their own slots, at 16 slots and at 262,144 (6 MiB)")
    func segmentCopies() {
        // Copies of one segment share its slots until one changes (a table made with a capacity starts so).
        let shared = DigestTableSegment(capacity: 10)
        var a = shared
        var b = shared
        let (one, two) = (DedupeDigest(first: 1, second: 1), DedupeDigest(first: 1, second: 2))
        a.set(one, to: 1)
        b.set(two, to: 2)
        #expect(a.value(of: one) == 1 && a.value(of: two) == nil)
        #expect(b.value(of: two) == 2 && b.value(of: one) == nil)
        #expect(shared.value(of: one) == nil && shared.value(of: two) == nil && shared.count == 0)

        var random = SplitMix64(seed: 5)
        var segment = DigestTableSegment(capacity: 100_000)
        #expect(segment.slotCount == 262_144)
        var digests: [DedupeDigest] = []
        for n in 0..<100_000 {
            let digest = DedupeDigest(first: random.next(), second: random.next())
            segment.set(digest, to: UInt64(n))
            digests.append(digest)
        }
        let copy = segment
        for (n, digest) in digests.enumerated() where n % 3 == 0 { segment.remove(digest) }
        #expect(segment.count == 100_000 - 33_334 && copy.count == 100_000)
        for (n, digest) in digests.enumerated() {
            #expect(copy.value(of: digest) == UInt64(n))
            #expect(segment.value(of: digest) == (n % 3 == 0 ? nil : UInt64(n)))
        }
    }

    @Test("a table grown to millions of bytes agrees with a dictionary, and a copy keeps its own slots")
    func digestTableLargeAndCopied() {
        var random = SplitMix64(seed: 23)
        var table = DigestTable()
        var model: [DedupeDigest: UInt64] = [:]
        // 150,000 uniform keys (2^18 slots, 6 MiB), then a copy, then removals and inserts on the original only.
        for n in 0..<150_000 {
            let digest = DedupeDigest(first: random.next(), second: random.next())
            table.set(digest, to: UInt64(n))
            model[digest] = UInt64(n)
        }
        #expect(table.count == model.count)
        let copy = table
        let copiedModel = model
        var changed = 0
        for (key, value) in model where value % 3 == 0 {
            let removed = table.remove(key)
            #expect(removed)
            model[key] = nil
            changed += 1
        }
        for n in 0..<1_000 {
            let digest = DedupeDigest(first: random.next(), second: UInt64(n))
            table.set(digest, to: UInt64(1_000_000 + n))
            model[digest] = UInt64(1_000_000 + n)
        }
        #expect(changed == 50_000)
        #expect(table.count == model.count)
        for (key, value) in model { if table.value(of: key) != value { Issue.record("table lost \(key)"); break } }
        #expect(copy.count == copiedModel.count)
        for (key, value) in copiedModel { if copy.value(of: key) != value { Issue.record("copy lost \(key)"); break } }
        #expect(copy.value(of: DedupeDigest(first: 1, second: 1)) == nil)
    }

    @Test("items are addressed by sequence across chunks; a copy keeps what it saw through appends, pops and edits")
    func itemsCopyOnWrite() {
        func item(_ n: Int64) -> DedupeItem {
            DedupeItem(
                digest: DedupeDigest(first: UInt64(n), second: 0),
                entry: DedupeEntry(offset: n, location: .topic, expiresAtMillis: n + 1)
            )
        }
        var items = DedupeItems()
        let total = DedupeItems.chunkSize * 3 + 17
        for n in 0..<total { #expect(items.append(item(Int64(n))) == UInt64(n)) }
        for _ in 0..<(DedupeItems.chunkSize + 5) { items.removeFirst() }
        #expect(items.firstSequence == UInt64(DedupeItems.chunkSize + 5))
        #expect(items[UInt64(total - 1)].offset == Int64(total - 1))

        let copy = items
        items[UInt64(DedupeItems.chunkSize * 2)].offset = -1
        items[UInt64(total - 1)].current = false
        for n in total..<(total + 10) { _ = items.append(item(Int64(n))) }
        for _ in 0..<DedupeItems.chunkSize { items.removeFirst() }

        var seen: [Int64] = []
        copy.forEach { seen.append($0.current ? $0.offset : -2) }
        #expect(seen == Array(Int64(DedupeItems.chunkSize + 5)..<Int64(total)))
        var now: [Int64] = []
        items.forEach { now.append($0.current ? $0.offset : -2) }
        var expected = Array(Int64(DedupeItems.chunkSize * 2 + 5)..<Int64(total + 10))
        expected[expected.firstIndex(of: Int64(total - 1))!] = -2
        #expect(now == expected)
        #expect(items.count == expected.count)
    }

    @Test("a snapshot encoded from an index's entries is byte for byte the DedupeSnapshot encoding")
    func snapshotFromEntries() throws {
        var index = try DedupeIndex(windowMillis: 100, maxKeys: 5_000, hashKey: DedupeHashKey(k0: 3, k1: 4))
        var now: Int64 = 1_000
        for n in 0..<12_000 {
            now += n % 7 == 0 ? 1 : 0
            let key = buffer("key-\(n % 9_000)")
            _ = try index.insert(key, offset: Int64(n), location: n % 5 == 0 ? .quarantine : .topic, nowMillis: now)
            if n % 11 == 0 { _ = try index.update(key, offset: Int64(-n), location: .topic) }
        }
        let entries = index.entries
        let viaValue = index.snapshot(topicEnd: 7, quarantineEnd: 3, takenAtMillis: now).encode()
        let direct = DedupeSnapshot.encode(
            entries: entries, hashKey: index.hashKey, topicEnd: 7, quarantineEnd: 3, takenAtMillis: now
        )
        #expect(direct == viaValue)
        #expect(entries.count == index.entriesInInsertionOrder.count)
        let decoded = try DedupeSnapshot.decode(direct, path: "test")
        #expect(decoded.entries.map(\.entry) == index.entriesInInsertionOrder.map(\.entry))
        // The entries taken stay as they were while the index moves on.
        for n in 0..<3_000 { _ = try index.insert(buffer("later-\(n)"), offset: 0, location: .topic, nowMillis: now) }
        #expect(DedupeSnapshot.encode(
            entries: entries, hashKey: index.hashKey, topicEnd: 7, quarantineEnd: 3, takenAtMillis: now
        ) == viaValue)
    }
}
