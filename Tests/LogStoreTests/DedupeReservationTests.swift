import NIOCore
import Testing

@testable import LogStore

/// `DedupeIndex.reserve` / `commit(reserved:...)` / `abandon(reserved:...)`: the dedupe gate reserves a new key in
/// the same probe that looks it up, and the commit writes the entry into the reservation's item.
@Suite("DedupeIndex reservations")
struct DedupeReservationTests {
    static func index(window: Int64 = 100, maxKeys: Int = 100) throws -> DedupeIndex {
        try DedupeIndex(windowMillis: window, maxKeys: maxKeys, hashKey: DedupeIndexTests.key)
    }

    static func reserved(_ reservation: DedupeIndex.Reservation) -> UInt64? {
        if case .reserved(let sequence) = reservation { return sequence }
        return nil
    }

    @Test("a reserved key is not an entry until committed; a second reservation finds the first one's tag")
    func reserveThenCommit() throws {
        var index = try Self.index()
        let digest = try index.digest(buffer("k"))
        let sequence = try #require(Self.reserved(index.reserve(digest: digest, nowMillis: 0, tag: 7)))
        #expect(index.reserve(digest: digest, nowMillis: 1, tag: 8) == .pending(tag: 7))
        #expect(index.lookup(digest: digest, nowMillis: 1) == nil)
        #expect(index.update(digest: digest, offset: 3, location: .topic) == nil)
        #expect(index.count == 0)
        #expect(index.entries.count == 0)
        #expect(index.entriesInInsertionOrder.isEmpty)

        let entry = DedupeEntry(offset: 42, location: .quarantine, expiresAtMillis: 102)
        let committed = index.commit(reserved: sequence, tag: 7, digest: digest, entry: entry, nowMillis: 2)
        #expect(committed.eviction == nil && committed.held == entry)
        #expect(index.lookup(digest: digest, nowMillis: 101) == entry)
        #expect(index.reserve(digest: digest, nowMillis: 101, tag: 9) == .live(entry))
        #expect(index.count == 1)
        #expect(index.entries.count == 1)
        #expect(index.entriesInInsertionOrder.map(\.entry) == [entry])
        // Its window ends at the committed expiry: the key can be reserved again.
        #expect(Self.reserved(index.reserve(digest: digest, nowMillis: 102, tag: 10)) != nil)
    }

    @Test("an abandoned reservation frees the key; a stale tag or sequence changes nothing")
    func abandon() throws {
        var index = try Self.index()
        let digest = try index.digest(buffer("k"))
        let first = try #require(Self.reserved(index.reserve(digest: digest, nowMillis: 0, tag: 1)))
        index.abandon(reserved: first, tag: 2, digest: digest)  // not its tag
        #expect(index.reserve(digest: digest, nowMillis: 0, tag: 3) == .pending(tag: 1))
        index.abandon(reserved: first, tag: 1, digest: digest)
        #expect(index.lookup(digest: digest, nowMillis: 0) == nil)
        let second = try #require(Self.reserved(index.reserve(digest: digest, nowMillis: 1, tag: 4)))
        #expect(second != first)
        index.abandon(reserved: first, tag: 1, digest: digest)  // already abandoned: the new one stays
        #expect(index.reserve(digest: digest, nowMillis: 1, tag: 5) == .pending(tag: 4))
        // A commit of the abandoned reservation inserts as a plain insert would.
        let entry = DedupeEntry(offset: 9, location: .topic, expiresAtMillis: 101)
        #expect(index.commit(reserved: first, tag: 1, digest: digest, entry: entry, nowMillis: 1).held == entry)
        #expect(index.lookup(digest: digest, nowMillis: 1) == entry)
        // ...which superseded the second reservation: its own commit finds the key live, an insert of a live key
        // (a quarantine location never replaces a topic one, and the expiry stays).
        let later = DedupeEntry(offset: 10, location: .quarantine, expiresAtMillis: 102)
        #expect(index.commit(reserved: second, tag: 4, digest: digest, entry: later, nowMillis: 2).held == entry)
        #expect(index.count == 1)
    }

    @Test("a reservation at the front does not stop expiry after its commit")
    func frontReservationThenExpiry() throws {
        var index = try Self.index(window: 100)
        let a = try index.digest(buffer("a"))
        let sequence = try #require(Self.reserved(index.reserve(digest: a, nowMillis: 0, tag: 1)))
        let b = try index.digest(buffer("b"))
        _ = index.insert(digest: b, entry: DedupeEntry(offset: 1, location: .topic, expiresAtMillis: 105), nowMillis: 5)
        #expect(index.removeExpired(nowMillis: 50) == 0)  // the reservation is the live front
        let entry = DedupeEntry(offset: 0, location: .topic, expiresAtMillis: 110)
        _ = index.commit(reserved: sequence, tag: 1, digest: a, entry: entry, nowMillis: 10)
        #expect(index.removeExpired(nowMillis: 200) == 2)
        #expect(index.count == 0)
    }

    @Test("a full index evicts the oldest entry at a commit, never a reservation")
    func boundAtCommit() throws {
        var index = try Self.index(window: 1000, maxKeys: 2)
        let (a, b, c, d) = try (
            index.digest(buffer("a")), index.digest(buffer("b")), index.digest(buffer("c")), index.digest(buffer("d"))
        )
        let entryA = DedupeEntry(offset: 0, location: .topic, expiresAtMillis: 1000)
        #expect(index.insert(digest: a, entry: entryA, nowMillis: 0) == nil)
        let reservedB = try #require(Self.reserved(index.reserve(digest: b, nowMillis: 1, tag: 1)))
        #expect(index.insert(digest: c, entry: DedupeEntry(offset: 2, location: .topic, expiresAtMillis: 1002), nowMillis: 2) == nil)
        let reservedD = try #require(Self.reserved(index.reserve(digest: d, nowMillis: 3, tag: 2)))
        #expect(index.count == 2)
        // d's commit needs room: a, the oldest, goes; b is next and reserved, so eviction stops there.
        let entryD = DedupeEntry(offset: 3, location: .topic, expiresAtMillis: 1003)
        let committedD = index.commit(reserved: reservedD, tag: 2, digest: d, entry: entryD, nowMillis: 4)
        #expect(committedD.eviction == DedupeEviction(digest: a, entry: entryA, remainingMillis: 996))
        #expect(index.evictedBeforeExpiry == 1)
        // b's commit finds a reservation at the front (its own): nothing to evict, the bound is passed by one.
        let entryB = DedupeEntry(offset: 1, location: .topic, expiresAtMillis: 1005)
        #expect(index.commit(reserved: reservedB, tag: 1, digest: b, entry: entryB, nowMillis: 5).eviction == nil)
        #expect(index.count == 3)
        #expect(index.entriesInInsertionOrder.map(\.entry.offset) == [1, 2, 3])
    }

    @Test("random reservations, commits, abandons, inserts and lookups agree with a simple model", arguments: [UInt64(6), 7, 8])
    func model(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let window: Int64 = 40
        var index = try Self.index(window: window, maxKeys: 10_000)
        var entries: [Int: DedupeEntry] = [:]
        var reservations: [Int: (tag: UInt64, sequence: UInt64)] = [:]
        var now: Int64 = 0
        var tag: UInt64 = 0
        for step in 0..<20_000 {
            now += Int64.random(in: 0...1, using: &random)
            entries = entries.filter { $0.value.expiresAtMillis > now }
            let k = Int.random(in: 0..<40, using: &random)
            let digest = try index.digest(buffer("key-\(k)"))
            let entry = DedupeEntry(offset: Int64(step), location: .topic, expiresAtMillis: now + window)
            switch Int.random(in: 0..<5, using: &random) {
            case 0:
                #expect(index.lookup(digest: digest, nowMillis: now) == entries[k], "step \(step)")
            case 1:
                tag += 1
                let found = index.reserve(digest: digest, nowMillis: now, tag: tag)
                if let live = entries[k] {
                    #expect(found == .live(live), "step \(step)")
                } else if let held = reservations[k] {
                    #expect(found == .pending(tag: held.tag), "step \(step)")
                } else {
                    let sequence = try #require(Self.reserved(found), "step \(step)")
                    reservations[k] = (tag, sequence)
                }
            case 2:
                guard let held = reservations.removeValue(forKey: k) else { continue }
                let committed = index.commit(
                    reserved: held.sequence, tag: held.tag, digest: digest, entry: entry, nowMillis: now
                )
                entries[k] = entry
                #expect(committed.held == entry && committed.eviction == nil, "step \(step)")
            case 3:
                guard let held = reservations.removeValue(forKey: k) else { continue }
                index.abandon(reserved: held.sequence, tag: held.tag, digest: digest)
            default:
                // An insert of a reserved key supersedes the reservation (the gate never does this: one ticket
                // per key); the reservation's later commit is then an insert of a live key.
                let inserted = index.insertReporting(digest: digest, entry: entry, nowMillis: now)
                if let live = entries[k] {
                    entries[k]!.offset = entry.offset
                    #expect(inserted.held == DedupeEntry(offset: entry.offset, location: .topic, expiresAtMillis: live.expiresAtMillis), "step \(step)")
                } else {
                    entries[k] = entry
                    #expect(inserted.held == entry, "step \(step)")
                }
                if let held = reservations.removeValue(forKey: k) {
                    let later = DedupeEntry(offset: -Int64(step) - 1, location: .topic, expiresAtMillis: now + window)
                    let committed = index.commit(
                        reserved: held.sequence, tag: held.tag, digest: digest, entry: later, nowMillis: now
                    )
                    // An insert of a live key: the offset is replaced, the expiry kept.
                    entries[k]!.offset = later.offset
                    #expect(committed.held == entries[k], "step \(step)")
                }
            }
        }
        index.removeExpired(nowMillis: now)
        let live = index.entriesInInsertionOrder.map(\.entry).filter { $0.expiresAtMillis > now }
        #expect(live.sorted { $0.offset < $1.offset } == entries.values.sorted { $0.offset < $1.offset })
        #expect(index.entries.count == index.count)
        var walked = 0
        index.entries.forEach { _, _ in walked += 1 }
        #expect(walked == index.count)
    }
}
