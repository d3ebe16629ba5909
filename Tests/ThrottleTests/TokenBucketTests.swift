import Testing

@testable import Throttle

/// A fake monotonic clock: tests pass time by hand.
private let second: UInt64 = 1_000_000_000
private let day: UInt64 = 86_400 * second

@Suite("TokenBucket")
struct TokenBucketTests {
    @Test("starts full: burst is allowed at once, the next is limited")
    func burstThenLimited() {
        var bucket = TokenBucket(ratePerSecond: 10, burst: 5, nowNanos: 0)
        for _ in 0..<5 { #expect(bucket.tryConsume(1, nowNanos: 0) == .allowed) }
        // 1 token at 10/s takes 100 ms.
        #expect(bucket.tryConsume(1, nowNanos: 0) == .limited(retryAfterNanos: 100_000_000))
    }

    @Test("refills at the rate and never beyond the burst")
    func refill() {
        var bucket = TokenBucket(ratePerSecond: 10, burst: 5, nowNanos: 0)
        #expect(bucket.tryConsume(5, nowNanos: 0) == .allowed)
        #expect(bucket.available(nowNanos: 250_000_000) == 2)
        #expect(bucket.available(nowNanos: 60 * second) == 5)
        #expect(bucket.tryConsume(6, nowNanos: 60 * second) == .limited(retryAfterNanos: .max))
    }

    @Test("retry-after is exact: waiting that long allows, one nanosecond less does not")
    func retryAfterIsExact() {
        for rate in [0.5, 3.0, 7.0, 1000.0, 123_456.789] {
            var bucket = TokenBucket(ratePerSecond: rate, burst: 2, nowNanos: 1_000)
            #expect(bucket.tryConsume(2, nowNanos: 1_000) == .allowed)
            guard case .limited(let wait) = bucket.tryConsume(1, nowNanos: 1_000) else {
                Issue.record("rate \(rate): expected a limit")
                continue
            }
            var early = bucket
            #expect(early.tryConsume(1, nowNanos: 1_000 + wait - 1) != .allowed, "rate \(rate)")
            #expect(bucket.tryConsume(1, nowNanos: 1_000 + wait) == .allowed, "rate \(rate)")
        }
    }

    @Test("a cap of 3 per 24 h: three pass, the fourth waits 8 h, and frequent checks lose no fraction")
    func longWindow() {
        var bucket = TokenBucket(ratePerSecond: 3.0 / 86_400, burst: 3, nowNanos: 0)
        for _ in 0..<3 { #expect(bucket.tryConsume(1, nowNanos: 0) == .allowed) }
        guard case .limited(let wait) = bucket.tryConsume(1, nowNanos: 0) else {
            Issue.record("fourth must be limited")
            return
        }
        // 3/86400 tokens/s is stored as 34,722 nano-tokens/s, so one token takes 28,800.18 s (8 h).
        #expect(wait >= 8 * 3600 * second && wait < 8 * 3600 * second + second)
        // Checking every 10 ms for 8 h must accumulate the same as one check at the end.
        var polled = bucket
        var now: UInt64 = 0
        var allowedAt: UInt64?
        while now < day, allowedAt == nil {
            now += 10_000_000
            if polled.tryConsume(1, nowNanos: now) == .allowed { allowedAt = now }
        }
        #expect(allowedAt == (wait + 9_999_999) / 10_000_000 * 10_000_000)
    }

    @Test("very high rates: a million per second refills a million in one second, exactly")
    func highRate() {
        var bucket = TokenBucket(ratePerSecond: 1_000_000, burst: 1_000_000, nowNanos: 0)
        #expect(bucket.tryConsume(1_000_000, nowNanos: 0) == .allowed)
        #expect(bucket.available(nowNanos: 1) == 0)
        #expect(bucket.available(nowNanos: 500_000_000) == 500_000)
        #expect(bucket.tryConsume(1, nowNanos: 500_001_000) == .allowed)
        var empty = TokenBucket(ratePerSecond: 1_000_000, burst: 1, nowNanos: 0)
        #expect(empty.tryConsume(1, nowNanos: 0) == .allowed)
        #expect(empty.tryConsume(1, nowNanos: 0) == .limited(retryAfterNanos: 1_000))
    }

    @Test("very low rates are not rounded to zero; huge elapsed times saturate without overflow")
    func extremes() {
        var slow = TokenBucket(ratePerSecond: 1e-9, burst: 1, nowNanos: 0)
        #expect(slow.tryConsume(1, nowNanos: 0) == .allowed)
        #expect(slow.tryConsume(1, nowNanos: UInt64.max / 2) == .allowed)
        var zero = TokenBucket(ratePerSecond: 0, burst: 1, nowNanos: 0)
        #expect(zero.tryConsume(1, nowNanos: 0) == .allowed)
        guard case .limited(let wait) = zero.tryConsume(1, nowNanos: 0) else {
            Issue.record("must be limited")
            return
        }
        #expect(wait > 900_000_000 * second)  // the minimum rate: one token per 10⁹ s
        var fast = TokenBucket(ratePerSecond: 1e12, burst: Int.max, nowNanos: 0)
        #expect(fast.capacity == UInt64(TokenBucket.maxBurst) * TokenBucket.scale)
        #expect(fast.tryConsume(TokenBucket.maxBurst, nowNanos: 0) == .allowed)
        #expect(fast.tryConsume(TokenBucket.maxBurst, nowNanos: UInt64.max) == .allowed)
    }

    @Test("time that does not move or goes back adds nothing")
    func clockGoesBack() {
        var bucket = TokenBucket(ratePerSecond: 1, burst: 1, nowNanos: 10 * second)
        #expect(bucket.tryConsume(1, nowNanos: 10 * second) == .allowed)
        #expect(bucket.available(nowNanos: 5 * second) == 0)
        #expect(bucket.available(nowNanos: 10 * second) == 0)
        #expect(bucket.available(nowNanos: 11 * second) == 1)
    }
}
