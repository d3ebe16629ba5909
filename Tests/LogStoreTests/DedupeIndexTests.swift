import NIOCore
import Testing

@testable import LogStore

@Suite("DedupeIndex")
struct DedupeIndexTests {
    static let key = DedupeHashKey(bytes: Array(0..<16))

    static func index(window: Int64 = 1000, maxKeys: Int = 100) throws -> DedupeIndex {
        try DedupeIndex(windowMillis: window, maxKeys: maxKeys, hashKey: Self.key)
    }

    static func hex(_ string: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = string.startIndex
        while index < string.endIndex {
            let next = string.index(index, offsetBy: 2)
            bytes.append(UInt8(string[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    /// `vectors_sip128` of the SipHash reference (github.com/veorq/SipHash, vectors.h): key 00...0f, message
    /// 00 01 ... (length - 1).
    @Test(
        "SipHash-2-4-128 matches the reference vectors",
        arguments: [
            (0, "a3817f04ba25a8e66df67214c7550293"),
            (1, "da87c1d86b99af44347659119b22fc45"),
            (7, "a1f1ebbed8dbc153c0b84aa61ff08239"),
            (8, "3b62a9ba6258f5610f83e264f31497b4"),
            (9, "264499060ad9baabc47f8b02bb6d71ed"),
            (15, "5493e99933b0a8117e08ec0f97cfc3d9"),
            (16, "6ee2a4ca67b054bbfd3315bf85230577"),
            (17, "473d06e8738db89854c066c47ae47740"),
            (63, "5150d1772f50834a503e069a973fbd7c"),
        ]
    )
    func sipHashVectors(length: Int, expected: String) {
        let message = (0..<length).map { UInt8($0) }
        let digest = SipHash128.digest(message, key: Self.key)
        #expect(digest.bytes == Self.hex(expected))
        #expect(digest.description == expected)
    }

    @Test("digests depend on the hash key; ByteBuffer and array keys agree")
    func digestKeying() throws {
        let a = try Self.index()
        let b = try DedupeIndex(windowMillis: 1000, maxKeys: 10, hashKey: DedupeHashKey(k0: 1, k1: 2))
        #expect(try a.digest(buffer("order-17")) == a.digest(Array("order-17".utf8)))
        #expect(try a.digest(buffer("order-17")) != b.digest(buffer("order-17")))
        #expect(try a.digest(buffer("order-17")) != a.digest(buffer("order-18")))
        #expect(DedupeHashKey.random() != DedupeHashKey.random())
    }

    @Test("keys must have 1...256 bytes", arguments: [(0, false), (1, true), (256, true), (257, false), (1000, false)])
    func keyLength(length: Int, valid: Bool) throws {
        var index = try Self.index()
        let key = ByteBuffer(repeating: 0x41, count: length)
        if valid {
            #expect(try index.insert(key, offset: 1, location: .topic, nowMillis: 0) == nil)
            #expect(try index.lookup(key, nowMillis: 1)?.offset == 1)
        } else {
            #expect(
                throws: LogStoreError(.invalidArgument, "dedupe key of \(length) bytes; a dedupe key has 1...256 bytes")
            ) {
                try index.lookup(key, nowMillis: 0)
            }
            #expect(throws: LogStoreError.self) { try index.insert(key, offset: 1, location: .topic, nowMillis: 0) }
            #expect(index.count == 0)
        }
    }

    @Test("bad window or bound is refused")
    func badConfig() {
        #expect(throws: LogStoreError.self) { try DedupeIndex(windowMillis: 0, maxKeys: 1) }
        #expect(throws: LogStoreError.self) { try DedupeIndex(windowMillis: 1, maxKeys: 0) }
    }

    @Test("a key is found within its window and not at exactly insert time + window")
    func window() throws {
        var index = try Self.index(window: 1000)
        #expect(try index.insert(buffer("k"), offset: 7, location: .topic, nowMillis: 5000) == nil)
        let expected = DedupeEntry(offset: 7, location: .topic, expiresAtMillis: 6000)
        #expect(try index.lookup(buffer("k"), nowMillis: 5000) == expected)
        #expect(try index.lookup(buffer("k"), nowMillis: 5999) == expected)
        #expect(try index.lookup(buffer("other"), nowMillis: 5999) == nil)
        #expect(try index.lookup(buffer("k"), nowMillis: 6000) == nil)
        #expect(index.count == 0, "dropped lazily by the lookup")
        #expect(index.expired == 1)
        #expect(index.evictedBeforeExpiry == 0)
        // The key can be used again once its window ended, with a fresh window.
        #expect(try index.insert(buffer("k"), offset: 9, location: .topic, nowMillis: 6000) == nil)
        #expect(try index.lookup(buffer("k"), nowMillis: 6999)?.offset == 9)
    }

    @Test("expired entries are dropped oldest first, stopping at the first live one")
    func lazyExpiry() throws {
        var index = try Self.index(window: 100)
        for i in 0..<10 {
            _ = try index.insert(buffer("k\(i)"), offset: Int64(i), location: .topic, nowMillis: Int64(i * 10))
        }
        #expect(index.removeExpired(nowMillis: 140) == 5)  // inserted at 0...40 expire at 100...140
        #expect(index.count == 5)
        #expect(try index.lookup(buffer("k4"), nowMillis: 140) == nil)
        #expect(try index.lookup(buffer("k5"), nowMillis: 140)?.offset == 5)
        #expect(index.entriesInInsertionOrder.map(\.entry.offset) == [5, 6, 7, 8, 9])
    }

    @Test("a full index evicts the oldest entry before its window ends, reports and counts it")
    func boundEviction() throws {
        var index = try Self.index(window: 1000, maxKeys: 3)
        for (i, name) in ["a", "b", "c"].enumerated() {
            #expect(try index.insert(buffer(name), offset: Int64(i), location: .topic, nowMillis: Int64(i)) == nil)
        }
        let evictedA = try index.insert(buffer("d"), offset: 3, location: .quarantine, nowMillis: 10)
        #expect(
            evictedA
                == DedupeEviction(
                    digest: try index.digest(buffer("a")),
                    entry: DedupeEntry(offset: 0, location: .topic, expiresAtMillis: 1000),
                    remainingMillis: 990
                )
        )
        #expect(index.evictedBeforeExpiry == 1)
        #expect(try index.lookup(buffer("a"), nowMillis: 11) == nil)
        #expect(try index.lookup(buffer("b"), nowMillis: 11)?.offset == 1)
        // A lookup does not refresh: b is still the oldest.
        let evictedB = try index.insert(buffer("e"), offset: 4, location: .topic, nowMillis: 12)
        #expect(evictedB?.digest == (try index.digest(buffer("b"))))
        #expect(index.evictedBeforeExpiry == 2)
        #expect(index.count == 3)
        #expect(index.entriesInInsertionOrder.map(\.entry.offset) == [2, 3, 4])
        // When the oldest has expired it is dropped as expired, not evicted: no report.
        #expect(try index.insert(buffer("f"), offset: 5, location: .topic, nowMillis: 1002) == nil)
        #expect(index.evictedBeforeExpiry == 2)
    }

    @Test("update moves a key from quarantine to topic and keeps its expiry")
    func update() throws {
        var index = try Self.index(window: 1000)
        _ = try index.insert(buffer("k"), offset: 17, location: .quarantine, nowMillis: 100)
        let updated = try index.update(buffer("k"), offset: 900, location: .topic)
        #expect(updated == DedupeEntry(offset: 900, location: .topic, expiresAtMillis: 1100))
        #expect(try index.lookup(buffer("k"), nowMillis: 500) == updated)
        #expect(try index.update(buffer("unknown"), offset: 1, location: .topic) == nil)
    }

    @Test("inserting a live key keeps its expiry and position; quarantine never overwrites topic")
    func insertLiveKey() throws {
        var index = try Self.index(window: 1000, maxKeys: 2)
        _ = try index.insert(buffer("k"), offset: 17, location: .quarantine, nowMillis: 0)
        _ = try index.insert(buffer("j"), offset: 1, location: .topic, nowMillis: 10)
        #expect(try index.insert(buffer("k"), offset: 900, location: .topic, nowMillis: 500) == nil)
        #expect(
            try index.lookup(buffer("k"), nowMillis: 500)
                == DedupeEntry(offset: 900, location: .topic, expiresAtMillis: 1000)
        )
        #expect(try index.insert(buffer("k"), offset: 18, location: .quarantine, nowMillis: 501) == nil)
        #expect(try index.lookup(buffer("k"), nowMillis: 501)?.offset == 900)
        #expect(index.count == 2)
        // k is still the oldest.
        let eviction = try index.insert(buffer("x"), offset: 5, location: .topic, nowMillis: 502)
        #expect(eviction?.digest == (try index.digest(buffer("k"))))
        // An explicit entry for a new key.
        let explicit = DedupeEntry(offset: 40, location: .quarantine, expiresAtMillis: 700)
        _ = try index.insert(buffer("y"), entry: explicit, nowMillis: 503)
        #expect(try index.lookup(buffer("y"), nowMillis: 699) == explicit)
        #expect(try index.lookup(buffer("y"), nowMillis: 700) == nil)
        // An entry already expired is not stored.
        let digest = try index.digest(buffer("late"))
        #expect(
            index.insert(
                digest: digest,
                entry: DedupeEntry(offset: 1, location: .topic, expiresAtMillis: 502),
                nowMillis: 502
            ) == nil
        )
        #expect(index.lookup(digest: digest, nowMillis: 0) == nil)
    }

    @Test("a clock that steps back: a later insert that expires earlier is treated as absent")
    func nonMonotonicClock() throws {
        var index = try Self.index(window: 100)
        _ = try index.insert(buffer("a"), offset: 1, location: .topic, nowMillis: 1000)  // expires 1100
        _ = try index.insert(buffer("b"), offset: 2, location: .topic, nowMillis: 500)  // expires 600
        #expect(try index.lookup(buffer("b"), nowMillis: 700) == nil)
        #expect(try index.lookup(buffer("a"), nowMillis: 700)?.offset == 1)
        // Re-inserting b replaces the expired entry.
        _ = try index.insert(buffer("b"), offset: 3, location: .topic, nowMillis: 700)
        #expect(try index.lookup(buffer("b"), nowMillis: 799)?.offset == 3)
        #expect(index.entriesInInsertionOrder.map(\.entry.offset) == [1, 3])
        #expect(index.removeExpired(nowMillis: 10_000) == 2)
        #expect(index.count == 0)
    }

    @Test("random operations agree with a simple model", arguments: [UInt64(1), 2, 3])
    func model(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        let window: Int64 = 50
        let maxKeys = 20
        var index = try Self.index(window: window, maxKeys: maxKeys)
        // Model: key -> (entry, insertion number), evicting the smallest insertion number among live entries.
        var model: [Int: (entry: DedupeEntry, order: Int)] = [:]
        var now: Int64 = 0
        var evictions = 0
        for step in 0..<20_000 {
            now += Int64.random(in: 0...2, using: &random)
            model = model.filter { $0.value.entry.expiresAtMillis > now }
            let k = Int.random(in: 0..<60, using: &random)
            let key = buffer("key-\(k)")
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                #expect(try index.lookup(key, nowMillis: now) == model[k]?.entry, "step \(step)")
            case 1:
                let offset = Int64(step)
                let eviction = try index.insert(key, offset: offset, location: .topic, nowMillis: now)
                if var existing = model[k] {
                    existing.entry.offset = offset
                    existing.entry.location = .topic
                    model[k] = existing
                    #expect(eviction == nil)
                } else {
                    var expected: DedupeEntry?
                    if model.count >= maxKeys, let oldest = model.min(by: { $0.value.order < $1.value.order }) {
                        expected = oldest.value.entry
                        model[oldest.key] = nil
                        evictions += 1
                    }
                    #expect(eviction?.entry == expected, "step \(step)")
                    model[k] = (DedupeEntry(offset: offset, location: .topic, expiresAtMillis: now + window), step)
                }
            default:
                let updated = try index.update(key, offset: -Int64(step), location: .quarantine)
                if model[k] != nil {
                    model[k]!.entry.offset = -Int64(step)
                    model[k]!.entry.location = .quarantine
                }
                // An expired entry not yet dropped may still be updated; only live ones are compared.
                if let live = model[k] { #expect(updated == live.entry) }
            }
        }
        #expect(index.evictedBeforeExpiry == evictions)
        index.removeExpired(nowMillis: now)
        let expectedOrder = model.sorted { $0.value.order < $1.value.order }.map(\.value.entry)
        #expect(index.entriesInInsertionOrder.map(\.entry) == expectedOrder)
    }

    @Test("insertReporting holds what a lookup right after returns, and evicts what insert evicts", arguments: [UInt64(4), 5])
    func insertReportingAgreesWithLookup(seed: UInt64) throws {
        var random = SplitMix64(seed: seed)
        var index = try Self.index(window: 50, maxKeys: 12)
        var now: Int64 = 1_000
        for step in 0..<5_000 {
            // Mostly forward, sometimes back (entries that expired but were not dropped yet), keys repeating.
            now += Int64.random(in: -3...4, using: &random)
            let digest = try index.digest(buffer("key-\(Int.random(in: 0..<30, using: &random))"))
            let entry = DedupeEntry(
                offset: Int64(step), location: Bool.random(using: &random) ? .topic : .quarantine,
                expiresAtMillis: now + Int64.random(in: -5...60, using: &random)
            )
            var copy = index
            let expectedEviction = copy.insert(digest: digest, entry: entry, nowMillis: now)
            let inserted = index.insertReporting(digest: digest, entry: entry, nowMillis: now)
            #expect(inserted.eviction == expectedEviction, "step \(step)")
            #expect(index.entriesInInsertionOrder.map(\.entry) == copy.entriesInInsertionOrder.map(\.entry))
            // A lookup drops expired entries from the front (after an eviction, more of them): on a copy.
            var probe = index
            #expect(inserted.held == probe.lookup(digest: digest, nowMillis: now), "step \(step)")
        }
    }
}
