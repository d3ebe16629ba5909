import NIOCore
import Testing

@testable import LogStore

@Suite("Dedupe index storage")
struct DedupeStorageTests {
    /// A digest table and the digest each of its values stands for: the table keeps only a digest's first word, and
    /// its lookups ask what the value's key is (the dedupe index answers from its items).
    struct Keyed {
        var table = DigestTable()
        var digests: [UInt64: DedupeDigest] = [:]

        func value(of digest: DedupeDigest) -> UInt64? {
            self.table.value(of: digest) { self.digests[$0]?.second == digest.second }
        }

        mutating func insert(_ digest: DedupeDigest, value: UInt64) {
            self.table.insert(digest, value: value)
            self.digests[value] = digest
        }

        mutating func remove(_ digest: DedupeDigest, value: UInt64) -> Bool {
            let removed = self.table.remove(digest, value: value)
            if removed { self.digests[value] = nil }
            return removed
        }
    }

    @Test("the digest table agrees with a dictionary under random inserts and removes, with crowded home slots")
    func digestTableModel() {
        var random = SplitMix64(seed: 11)
        var table = Keyed()
        var model: [DedupeDigest: UInt64] = [:]
        for step in 0..<30_000 {
            // First words from a small range crowd a few home slots, so probes run long and wrap around the end,
            // and backward-shift deletion has long runs to repair; second words from a small range put digests
            // with the same first word in one segment, told apart only by what their values stand for. The phases
            // let the table grow, then shrink.
            let growing = (step / 10_000) % 2 == 0
            let first = random.next() % 512 &* 0x9E37_79B9_7F4A_7C15 | (random.next() % 3 == 0 ? UInt64.max << 60 : 0)
            let digest = DedupeDigest(first: first, second: random.next() % 20)
            if random.next() % 100 < (growing ? 70 : 30) {
                // A key already held moves to the new value, as the index re-inserts one: remove, then insert.
                if let old = model[digest] {
                    let removed = table.remove(digest, value: old)
                    #expect(removed, "step \(step)")
                }
                table.insert(digest, value: UInt64(step))
                model[digest] = UInt64(step)
            } else if let value = model.removeValue(forKey: digest) {
                // The wrong value under the right digest removes nothing.
                let wrong = table.remove(digest, value: value + 100_000)
                let removed = table.remove(digest, value: value)
                #expect(!wrong && removed, "step \(step)")
            } else {
                let removed = table.remove(digest, value: UInt64(step))
                #expect(!removed, "step \(step)")
            }
            if table.table.count != model.count {
                Issue.record("step \(step): count \(table.table.count), expected \(model.count)")
            }
            if step % 1_000 == 0 {
                for (key, value) in model { #expect(table.value(of: key) == value, "step \(step)") }
            }
        }
        for (key, value) in model { #expect(table.value(of: key) == value) }
        #expect(table.value(of: DedupeDigest(first: 5, second: 99_999)) == nil)
    }

    @Test("digests that share their first word and segment are told apart by their values' keys")
    func sameFirstWord() {
        var table = Keyed()
        let a = DedupeDigest(first: 42, second: 1)
        let b = DedupeDigest(first: 42, second: 2)
        table.insert(a, value: 7)
        #expect(table.value(of: b) == nil)
        table.insert(b, value: 8)
        #expect(table.value(of: a) == 7 && table.value(of: b) == 8)
        #expect(table.table.value(of: a) { _ in false } == nil)
        let removedA = table.remove(a, value: 7)
        #expect(removedA && table.value(of: a) == nil && table.value(of: b) == 8)
        let removedAgain = table.remove(a, value: 7)
        #expect(!removedAgain && table.value(of: b) == 8 && table.table.count == 1)
    }

    @Test("an index tells apart digests that share their first word: lookups, reservations, commits and expiry")
    func indexSameFirstWord() throws {
        var index = try DedupeIndex(windowMillis: 100, maxKeys: 10, hashKey: DedupeHashKey(k0: 1, k1: 2))
        let a = DedupeDigest(first: 9, second: 1)
        let b = DedupeDigest(first: 9, second: 2)
        let c = DedupeDigest(first: 9, second: 3)
        let entryA = DedupeEntry(offset: 1, location: .topic, expiresAtMillis: 100)
        _ = index.insert(digest: a, entry: entryA, nowMillis: 0)
        #expect(index.lookup(digest: b, nowMillis: 1) == nil)
        guard case .reserved(let sequence) = index.reserve(digest: b, nowMillis: 50, tag: 7) else {
            Issue.record("b was not reserved")
            return
        }
        #expect(index.reserve(digest: b, nowMillis: 50, tag: 8) == .pending(tag: 7))
        #expect(index.reserve(digest: a, nowMillis: 50, tag: 8) == .live(entryA))
        let entryB = DedupeEntry(offset: 2, location: .topic, expiresAtMillis: 150)
        #expect(index.commit(reserved: sequence, tag: 7, digest: b, entry: entryB, nowMillis: 50).held == entryB)
        #expect(index.lookup(digest: a, nowMillis: 60) == entryA && index.lookup(digest: b, nowMillis: 60) == entryB)
        #expect(index.lookup(digest: c, nowMillis: 60) == nil)
        // a expires first and leaves b in place.
        #expect(index.lookup(digest: a, nowMillis: 120) == nil && index.lookup(digest: b, nowMillis: 120) == entryB)
        #expect(index.count == 1)
    }

    @Test("an empty table has no slots; a segment gets 16 with its first key, and a probe of an empty one misses")
    func digestTableEmptySegments() {
        var table = Keyed()
        #expect(table.table.slotCount == 0)
        let digest = DedupeDigest(first: 7, second: 3 << 58)
        #expect(table.value(of: digest) == nil)
        table.table.prefetch(digest)
        let removedFromEmpty = table.remove(digest, value: 9)
        #expect(!removedFromEmpty)
        table.insert(digest, value: 9)
        #expect(table.table.slotCount == 16)
        #expect(table.value(of: digest) == 9)
        // The same first word in another segment (the second word's top bits differ): its own 16 slots.
        let other = DedupeDigest(first: 7, second: 5 << 58)
        #expect(table.value(of: other) == nil)
        table.insert(other, value: 10)
        #expect(table.table.slotCount == 32)
        #expect(table.value(of: digest) == 9 && table.value(of: other) == 10)
        let removed = table.remove(digest, value: 9)
        #expect(removed && table.table.count == 1)
        #expect(DigestTable(capacity: 64 * 10).slotCount == 64 * 16)
    }

    @Test("segments copied before a change keep their own slots, at 16 slots and at 262,144 (4 MiB)")
    func segmentCopies() {
        // Copies of one segment share its slots until one changes (a table made with a capacity starts so).
        let shared = DigestTableSegment(capacity: 10)
        var a = shared
        var b = shared
        let any: (UInt64) -> Bool = { _ in true }
        a.insert(1, value: 1)
        b.insert(2, value: 2)
        #expect(a.value(of: 1, confirm: any) == 1 && a.value(of: 2, confirm: any) == nil)
        #expect(b.value(of: 2, confirm: any) == 2 && b.value(of: 1, confirm: any) == nil)
        #expect(shared.value(of: 1, confirm: any) == nil && shared.value(of: 2, confirm: any) == nil)
        #expect(shared.count == 0)

        var random = SplitMix64(seed: 5)
        var segment = DigestTableSegment(capacity: 100_000)
        #expect(segment.slotCount == 262_144)
        var firsts: [UInt64] = []
        for n in 0..<100_000 {
            let first = random.next()
            segment.insert(first, value: UInt64(n))
            firsts.append(first)
        }
        let copy = segment
        for (n, first) in firsts.enumerated() where n % 3 == 0 { segment.remove(first, value: UInt64(n)) }
        #expect(segment.count == 100_000 - 33_334 && copy.count == 100_000)
        for (n, first) in firsts.enumerated() {
            #expect(copy.value(of: first) { $0 == UInt64(n) } == UInt64(n))
            #expect(segment.value(of: first) { $0 == UInt64(n) } == (n % 3 == 0 ? nil : UInt64(n)))
        }
    }

    @Test("a table grown to millions of bytes agrees with a dictionary, and a copy keeps its own slots")
    func digestTableLargeAndCopied() {
        var random = SplitMix64(seed: 23)
        var table = Keyed()
        var model: [DedupeDigest: UInt64] = [:]
        // 150,000 uniform keys (2^18 slots, 4 MiB), then a copy, then removals and inserts on the original only.
        for n in 0..<150_000 {
            let digest = DedupeDigest(first: random.next(), second: random.next())
            table.insert(digest, value: UInt64(n))
            model[digest] = UInt64(n)
        }
        #expect(table.table.count == model.count)
        let copy = table
        let copiedModel = model
        var changed = 0
        for (key, value) in model where value % 3 == 0 {
            let removed = table.remove(key, value: value)
            #expect(removed)
            model[key] = nil
            changed += 1
        }
        for n in 0..<1_000 {
            let digest = DedupeDigest(first: random.next(), second: UInt64(n))
            table.insert(digest, value: UInt64(1_000_000 + n))
            model[digest] = UInt64(1_000_000 + n)
        }
        #expect(changed == 50_000)
        #expect(table.table.count == model.count)
        for (key, value) in model { if table.value(of: key) != value { Issue.record("table lost \(key)"); break } }
        #expect(copy.table.count == copiedModel.count)
        for (key, value) in copiedModel { if copy.value(of: key) != value { Issue.record("copy lost \(key)"); break } }
        #expect(copy.value(of: DedupeDigest(first: 1, second: 1)) == nil)
    }

    @Test("a segment grown from empty past 256 KiB keeps every key through its doublings, in calloc's memory and then its own mapping")
    func segmentGrownIntoItsOwnMapping() {
        var random = SplitMix64(seed: 41)
        var segment = DigestTableSegment()
        var model: [UInt64: UInt64] = [:]
        var copy: DigestTableSegment?
        var copiedModel: [UInt64: UInt64] = [:]
        var sizes: Set<Int> = []
        var firsts: [UInt64] = []
        // 120,000 inserts, a fifth removed again: doublings from 16 slots to 262,144 (4 MiB), the last four in a
        // mapping (from 16,384 slots on), each after the populating thread was asked for the half it takes.
        for n in 0..<120_000 {
            let first = random.next()
            segment.insert(first, value: UInt64(n))
            model[first] = UInt64(n)
            firsts.append(first)
            if n % 5 == 4 {
                let removed = segment.remove(firsts[n - 2], value: UInt64(n - 2))
                #expect(removed)
                model[firsts[n - 2]] = nil
            }
            if n == 30_000 {
                copy = segment
                copiedModel = model
            }
            sizes.insert(segment.slotCount)
        }
        #expect(sizes.max() == 262_144 && sizes.contains(16_384) && sizes.contains(8_192))
        #expect(segment.count == model.count)
        for (key, value) in model where segment.value(of: key, confirm: { $0 == value }) != value {
            Issue.record("segment lost \(key)")
            break
        }
        #expect(copy?.count == copiedModel.count)
        for (key, value) in copiedModel where copy?.value(of: key, confirm: { $0 == value }) != value {
            Issue.record("copy lost \(key)")
            break
        }
    }

    @Test("an item is 32 bytes and keeps its entry, state and expiry; expiries past 62 bits are never or long past")
    func itemPacking() {
        #expect(MemoryLayout<DedupeItem>.stride == 32)
        let digest = DedupeDigest(first: 1, second: 2)
        let never = Int64(1) << 61 - 1
        let cases: [(Int64, Int64)] = [
            (0, 0), (1, 1), (-5, -5), (1_767_225_600_000, 1_767_225_600_000), (never - 1, never - 1),
            (never, .max), (Int64(1) << 62, .max), (.max, .max), (-(Int64(1) << 61), -(Int64(1) << 61)),
            (.min, -(Int64(1) << 61)),
        ]
        for (given, kept) in cases {
            for location in [DedupeLocation.topic, .quarantine] {
                var item = DedupeItem(
                    digest: digest, entry: DedupeEntry(offset: -7, location: location, expiresAtMillis: given)
                )
                #expect(item.entry == DedupeEntry(offset: -7, location: location, expiresAtMillis: kept), "\(given)")
                #expect(item.current && !item.pending && item.digest == digest)
                item.location = location == .topic ? .quarantine : .topic
                #expect(item.location != location && item.expiresAtMillis == kept)
                item.drop()
                #expect(!item.current && !item.pending && item.expiresAtMillis == kept)
            }
        }
        var reserved = DedupeItem(reserving: digest, tag: .max)
        #expect(reserved.pending && reserved.current && reserved.tag == .max && reserved.expiresAtMillis == .max)
        reserved.location = .quarantine
        #expect(reserved.pending && reserved.location == .topic)
        reserved.drop()
        #expect(!reserved.pending && !reserved.current)
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
        items[UInt64(total - 1)].drop()
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
