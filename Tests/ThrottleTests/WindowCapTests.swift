import Testing

@testable import Throttle

private let hour: UInt64 = 3_600_000_000_000
private let day = 24 * hour

@Suite("WindowCap")
struct WindowCapTests {
    @Test("3 per 24 h holds in every window: the fourth waits until the first is a day old")
    func threePerDay() {
        var cap = WindowCap(limit: 3, windowNanos: day)
        #expect(cap.tryRecord(nowNanos: 0) == .allowed)
        #expect(cap.tryRecord(nowNanos: 1 * hour) == .allowed)
        #expect(cap.tryRecord(nowNanos: 2 * hour) == .allowed)
        #expect(cap.tryRecord(nowNanos: 3 * hour) == .limited(retryAfterNanos: 21 * hour))
        #expect(cap.tryRecord(nowNanos: day - 1) == .limited(retryAfterNanos: 1))
        #expect(cap.tryRecord(nowNanos: day) == .allowed)
        // Now the oldest counted event is the one at 1 h.
        #expect(cap.tryRecord(nowNanos: day + 1) == .limited(retryAfterNanos: hour - 1))
        #expect(cap.count(nowNanos: day + 1) == 3)
    }

    @Test("a token bucket of the same burst and rate lets more through; the cap does not")
    func strongerThanBucket() {
        var bucket = TokenBucket(ratePerSecond: 3.0 / 86_400, burst: 3, nowNanos: 0)
        var cap = WindowCap(limit: 3, windowNanos: day)
        var bucketAllowed = 0
        var capAllowed = 0
        // One attempt per hour for 24 h (a window of exactly one day).
        for hourIndex in 0..<24 {
            let now = UInt64(hourIndex) * hour
            if bucket.tryConsume(1, nowNanos: now) == .allowed { bucketAllowed += 1 }
            if cap.tryRecord(nowNanos: now) == .allowed { capAllowed += 1 }
        }
        #expect(capAllowed == 3)
        #expect(bucketAllowed > 3)
    }

    @Test("several events at once: all or none")
    func batch() {
        var cap = WindowCap(limit: 5, windowNanos: 100)
        #expect(cap.tryRecord(3, nowNanos: 0) == .allowed)
        #expect(cap.tryRecord(3, nowNanos: 10) == .limited(retryAfterNanos: 90))
        #expect(cap.count(nowNanos: 10) == 3)
        #expect(cap.tryRecord(2, nowNanos: 10) == .allowed)
        #expect(cap.tryRecord(3, nowNanos: 100) == .allowed)  // the three at 0 left the window
        #expect(cap.tryRecord(1, nowNanos: 100) == .limited(retryAfterNanos: 10))
        #expect(cap.tryRecord(6, nowNanos: 1_000) == .limited(retryAfterNanos: .max))
        #expect(cap.eventTimes(nowNanos: 105) == [10, 10, 100, 100, 100])
    }

    @Test("idle once the newest event left the window; persisted times restore the same cap")
    func idleAndRestore() {
        var cap = WindowCap(limit: 3, windowNanos: 100)
        #expect(cap.isIdle(nowNanos: 0))
        _ = cap.tryRecord(nowNanos: 10)
        _ = cap.tryRecord(nowNanos: 20)
        #expect(cap.nanosUntilIdle(nowNanos: 50) == 70)
        var restored = WindowCap(limit: 3, windowNanos: 100)
        for time in cap.eventTimes(nowNanos: 50) { _ = restored.tryRecord(nowNanos: time) }
        let fromRestored = restored.tryRecord(nowNanos: 50)
        let fromOriginal = cap.tryRecord(nowNanos: 50)
        #expect(fromRestored == .allowed && fromOriginal == .allowed)
        #expect(restored.tryRecord(nowNanos: 60) == .limited(retryAfterNanos: 50))
        #expect(restored.isIdle(nowNanos: 150))
    }
}

@Suite("KeyedLimiter")
struct KeyedLimiterTests {
    static func caps(maxKeys: Int) -> KeyedLimiter<String, WindowCap> {
        KeyedLimiter(maxKeys: maxKeys) { _ in WindowCap(limit: 2, windowNanos: 1_000) }
    }

    @Test("each key has its own limit")
    func perKey() {
        var limiter = Self.caps(maxKeys: 10)
        #expect(limiter.tryTake(1, key: "pt_1", nowNanos: 0) == .allowed)
        #expect(limiter.tryTake(1, key: "pt_1", nowNanos: 1) == .allowed)
        #expect(limiter.tryTake(1, key: "pt_1", nowNanos: 2) == .limited(retryAfterNanos: 998))
        #expect(limiter.tryTake(1, key: "pt_2", nowNanos: 2) == .allowed)
        #expect(limiter.count == 2)
    }

    @Test("at the bound an idle least-recently-used key makes room; a limited one is never forgotten")
    func boundAndEviction() {
        var limiter = Self.caps(maxKeys: 2)
        #expect(limiter.tryTake(2, key: "a", nowNanos: 0) == .allowed)
        #expect(limiter.tryTake(1, key: "b", nowNanos: 500) == .allowed)
        // "a" is at its cap until 1000: forgetting it would lift the cap, so "c" is refused.
        #expect(limiter.tryTake(1, key: "c", nowNanos: 600) == .tableFull(retryAfterNanos: 400))
        #expect(limiter.tryTake(1, key: "a", nowNanos: 600) == .limited(retryAfterNanos: 400))
        // "a" was touched at 600, so "b" is now the least recently used, and it is not idle until 1500.
        #expect(limiter.tryTake(1, key: "c", nowNanos: 1_200) == .tableFull(retryAfterNanos: 300))
        #expect(limiter.tryTake(1, key: "c", nowNanos: 1_500) == .allowed)
        #expect(limiter.state(for: "b") == nil)
        #expect(limiter.count == 2)
        #expect(limiter.entries.map(\.key) == ["a", "c"])
    }

    @Test("evictIdle drops exactly the idle keys and the table keeps working")
    func sweep() {
        var limiter = KeyedLimiter<Int, TokenBucket>(maxKeys: 100) { now in TokenBucket(ratePerSecond: 1, burst: 1, nowNanos: now) }
        for key in 0..<50 { #expect(limiter.tryTake(1, key: key, nowNanos: UInt64(key) * 100_000_000) == .allowed) }
        // At 5.5 s the keys that took their token at least 1 s earlier (0 ... 45) are full again.
        #expect(limiter.evictIdle(nowNanos: 5_500_000_000) == 46)
        #expect(limiter.count == 4)
        #expect(limiter.entries.map(\.key) == [46, 47, 48, 49])
        #expect(limiter.tryTake(1, key: 49, nowNanos: 5_500_000_000) == .limited(retryAfterNanos: 400_000_000))
        for key in 100..<196 { #expect(limiter.tryTake(1, key: key, nowNanos: 5_500_000_000) == .allowed) }
        #expect(limiter.count == 100)
    }

    @Test("restore puts persisted state back")
    func restore() {
        var limiter = Self.caps(maxKeys: 4)
        var cap = WindowCap(limit: 2, windowNanos: 1_000)
        _ = cap.tryRecord(2, nowNanos: 100)
        let restored = limiter.restore("pt_9", state: cap, nowNanos: 200)
        #expect(restored)
        #expect(limiter.tryTake(1, key: "pt_9", nowNanos: 200) == .limited(retryAfterNanos: 900))
    }
}
