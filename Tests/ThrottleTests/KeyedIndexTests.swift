import Testing

@testable import Throttle

/// A deterministic generator (SplitMix64), so a failing sequence can be reproduced from its seed.
private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A key whose hash takes only three values: every key collides with a third of the others, so lookups probe past
/// other keys and removals move whole runs of the index.
private struct Colliding: Hashable, Sendable {
    var id: Int
    func hash(into hasher: inout Hasher) { hasher.combine(self.id % 3) }
}

@Suite("KeyedLimiter index")
struct KeyedIndexTests {
    /// Random takes and sweeps against a plain model: a key is held from its first take until a sweep finds it idle
    /// (a token bucket of 1 token per second is idle 1 s after its last successful take).
    func runAgainstModel<Key: Hashable & Sendable>(keys pool: [Key], seed: UInt64) {
        var limiter = KeyedLimiter<Key, TokenBucket>(maxKeys: pool.count) { now in
            TokenBucket(ratePerSecond: 1, burst: 1, nowNanos: now)
        }
        var lastTake: [Key: UInt64] = [:]
        var rng = SplitMix(state: seed)
        var now: UInt64 = 0
        for step in 0..<6_000 {
            now += UInt64.random(in: 0...20_000_000, using: &rng)
            if step % 500 == 499 {
                let idle = lastTake.filter { now - $0.value >= 1_000_000_000 }.map(\.key)
                #expect(limiter.evictIdle(nowNanos: now) == idle.count)
                for key in idle { lastTake[key] = nil }
            } else {
                let key = pool[Int.random(in: 0..<pool.count, using: &rng)]
                let allowed = lastTake[key].map { now - $0 >= 1_000_000_000 } ?? true
                let decision = limiter.tryTake(1, key: key, nowNanos: now)
                #expect((decision == .allowed) == allowed, "step \(step)")
                if allowed { lastTake[key] = now }
            }
            #expect(limiter.count == lastTake.count)
        }
        for key in pool {
            #expect((limiter.state(for: key) != nil) == (lastTake[key] != nil))
            #expect((limiter.heldSlot(for: key) != nil) == (lastTake[key] != nil))
        }
        #expect(Set(limiter.entries.map(\.key)) == Set(lastTake.keys))
    }

    @Test(
        "every held key is found and no forgotten one is, through growth and removals", arguments: [1, 2, 3] as [UInt64]
    )
    func model(seed: UInt64) {
        self.runAgainstModel(keys: (0..<700).map { "pt_\($0)" }, seed: seed)
    }

    @Test("the same with keys whose hashes collide", arguments: [1, 2] as [UInt64])
    func collidingModel(seed: UInt64) {
        self.runAgainstModel(keys: (0..<200).map { Colliding(id: $0) }, seed: seed)
    }

    @Test("a key is found by its hash and a comparison; a wrong hash only misses")
    func lookupByHash() {
        var limiter = KeyedLimiter<String, TokenBucket>(maxKeys: 10) { now in
            TokenBucket(ratePerSecond: 1, burst: 1, nowNanos: now)
        }
        #expect(limiter.tryTake(1, key: "pt_1", nowNanos: 0) == .allowed)
        let slot = limiter.heldSlot(for: "pt_1")
        #expect(slot != nil)
        #expect(limiter.heldSlot(hash: "pt_1".hashValue, matching: { $0 == "pt_1" }) == slot)
        #expect(limiter.heldSlot(hash: "pt_1".hashValue, matching: { _ in false }) == nil)
        #expect(limiter.heldSlot(hash: "pt_1".hashValue &+ 1, matching: { $0 == "pt_1" }) == nil)
    }
}

@Suite("LimiterSet key bytes")
struct LimiterKeyBytesTests {
    @Test("keyHash(utf8:) is the hash String gives ASCII keys, so the byte lookup finds them")
    func hashMatchesString() {
        for length in 0...40 {
            let key = String((0..<length).map { Character(UnicodeScalar(UInt8(33 + ($0 * 7) % 90))) })
            let hash = Array(key.utf8).withUnsafeBytes { LimiterSet.keyHash(utf8: $0) }
            #expect(hash == key.hashValue, "\(key)")
        }
    }

    /// Keys as bytes: ASCII, the same accented letter composed and decomposed (equal as `String`s, so one key),
    /// the Kelvin sign and K (equal as `String`s too), invalid UTF-8 and the replacement character it decodes to.
    /// 3,000 random checks from `seed`: the clock advancing 0–150 ns each time, a key from `pool`, a byte count 0–3
    /// (the same draws, in the same order, for every test that replays them).
    static func steps(seed: UInt64) -> [(now: UInt64, key: [UInt8], size: Int)] {
        var rng = SplitMix(state: seed)
        var now: UInt64 = 0
        return (0..<3_000).map { _ in
            now += UInt64.random(in: 0...150, using: &rng)
            let key = Self.pool[Int.random(in: 0..<Self.pool.count, using: &rng)]
            return (now, key, Int.random(in: 0...3, using: &rng))
        }
    }

    static let pool: [[UInt8]] = [
        Array("pt_1".utf8), Array("pt_2".utf8), Array("bench-recipient-17".utf8), Array("jos\u{E9}".utf8),
        Array("jose\u{301}".utf8), Array("K".utf8), Array("\u{212A}".utf8), [0xFF, 0x41], Array("\u{FFFD}A".utf8),
        [],
    ]

    @Test("check(keyBytes:) counts exactly as check(keys:) with the decoded string", arguments: [1, 2, 3] as [UInt64])
    func bytesEqualStrings(seed: UInt64) throws {
        let definitions = [
            LimiterDefinition(name: "w", limit: .window(cap: 2, windowNanos: 1_000), maxKeys: 6),
            LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 1_000_000, burst: 2), bytesPerSecond: 1e6),
        ]
        let byString = try LimiterSet(definitions: definitions)
        let byBytes = try LimiterSet(definitions: definitions)
        var now: UInt64 = 0
        for (step, (stepNow, key, size)) in Self.steps(seed: seed).enumerated() {
            now = stepNow
            for name in ["w", "b"] {
                let expected = try byString.check(
                    limiter: name, keys: [String(decoding: key, as: UTF8.self)], bytes: size,
                    now: LimiterNow(nanos: now)
                )
                let outcome = try key.withUnsafeBytes {
                    try byBytes.handle(name).check(keyBytes: $0, bytes: size, now: LimiterNow(nanos: now))
                }
                #expect(outcome == expected, "step \(step), limiter \(name), key \(key)")
                #expect(try byBytes.keyCount(limiter: name) == byString.keyCount(limiter: name))
            }
        }
        #expect(byBytes.snapshot(now: LimiterNow(nanos: now)) == byString.snapshot(now: LimiterNow(nanos: now)))
    }

    /// The reference for the single-key paths: the same key listed twice takes the general path (`checkKeys`: peek
    /// every key, then take), which counts it once.
    @Test(
        "a held key checked by its bytes, with its hash given (right or wrong), counts as the general path does",
        arguments: [4, 5, 6] as [UInt64]
    )
    func bytesWithHashEqualGeneralPath(seed: UInt64) throws {
        let definitions = [
            LimiterDefinition(name: "w", limit: .window(cap: 2, windowNanos: 1_000), maxKeys: 4),
            LimiterDefinition(name: "b", limit: .tokenBucket(ratePerSecond: 1_000_000, burst: 2), maxKeys: 4),
            LimiterDefinition(name: "q", limit: .tokenBucket(ratePerSecond: 1_000_000, burst: 2), bytesPerSecond: 1e6),
        ]
        let reference = try LimiterSet(definitions: definitions)
        let rightHash = try LimiterSet(definitions: definitions)
        let wrongHash = try LimiterSet(definitions: definitions)
        for (step, (now, key, size)) in Self.steps(seed: seed).enumerated() {
            let at = LimiterNow(nanos: now)
            for name in ["w", "b", "q"] {
                let string = String(decoding: key, as: UTF8.self)
                let expected = try reference.check(limiter: name, keys: [string, string], bytes: size, now: at)
                let (right, wrong) = try key.withUnsafeBytes { bytes in
                    let hash = LimiterSet.keyHash(utf8: bytes)
                    return (
                        try rightHash.handle(name).check(keyBytes: bytes, hash: hash, bytes: size, now: at),
                        try wrongHash.handle(name).check(keyBytes: bytes, hash: hash ^ 0x5A5A, bytes: size, now: at)
                    )
                }
                #expect(right == expected, "step \(step), limiter \(name), key \(key)")
                #expect(wrong == expected, "step \(step), limiter \(name), key \(key), wrong hash")
                #expect(try rightHash.keyCount(limiter: name) == reference.keyCount(limiter: name))
                #expect(try wrongHash.keyCount(limiter: name) == reference.keyCount(limiter: name))
                // Same use and retry-after for this key, in every limiter's table.
                let state = try reference.state(limiter: name, key: string, now: at)
                #expect(try rightHash.state(limiter: name, key: string, now: at) == state)
                #expect(try wrongHash.state(limiter: name, key: string, now: at) == state)
            }
            // The window limiter's keys in recency order (a refused check must not move its key).
            #expect(rightHash.snapshot(now: at) == reference.snapshot(now: at), "step \(step)")
            #expect(wrongHash.snapshot(now: at) == reference.snapshot(now: at), "step \(step)")
        }
    }
}
