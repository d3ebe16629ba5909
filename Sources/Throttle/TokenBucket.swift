/// The outcome of a rate-limit check.
package enum ThrottleDecision: Equatable, Sendable {
    case allowed
    /// Retry after this many nanoseconds. `UInt64.max` means never: the request is larger than the burst.
    case limited(retryAfterNanos: UInt64)
}

/// A token bucket in fixed-point integer arithmetic; time is an input (monotonic nanoseconds).
///
/// Tokens are counted in nano-tokens (10⁻⁹ of a token) and the rate in nano-tokens per second, both `UInt64`.
/// Refill multiplies elapsed nanoseconds by the rate in 128 bits and keeps the remainder of the division by 10⁹,
/// so no fraction of a token is ever lost, however often the bucket is checked and however low the rate (3 per
/// 24 h is 34,722 nano-tokens per second). A check is O(1) and allocates nothing.
///
/// Limits: `burst` is clamped to 1…1,000,000,000 tokens and the rate to 10⁻⁹…10⁹ tokens per second, which keeps
/// every product inside 128 bits and every stored value inside 64.
package struct TokenBucket: Sendable, Equatable {
    package static let nanosPerSecond: UInt64 = 1_000_000_000
    /// Fixed-point scale: nano-tokens per token.
    package static let scale: UInt64 = 1_000_000_000
    package static let maxBurst = 1_000_000_000
    package static let maxRatePerSecond = 1_000_000_000.0

    /// Capacity in nano-tokens.
    package let capacity: UInt64
    /// Refill rate in nano-tokens per second (at least 1).
    package let nanoTokensPerSecond: UInt64
    /// Current level in nano-tokens.
    package private(set) var level: UInt64
    /// The time the level was last brought up to date.
    private var updatedAt: UInt64
    /// Part of a nano-token owed by the last refill, in units of 1/10⁹ nano-token (always < 10⁹).
    private var carry: UInt64 = 0

    /// - Parameters: ratePerSecond tokens added per second; burst is the capacity. The bucket starts full.
    package init(ratePerSecond: Double, burst: Int, nowNanos: UInt64) {
        let burst = UInt64(min(max(burst, 1), Self.maxBurst))
        let rate = ratePerSecond.isFinite ? min(max(ratePerSecond, 0), Self.maxRatePerSecond) : 0
        self.capacity = burst * Self.scale
        self.nanoTokensPerSecond = max(1, UInt64((rate * Double(Self.scale)).rounded()))
        self.level = self.capacity
        self.updatedAt = nowNanos
    }

    /// Whole tokens available at `nowNanos` (after refill), without taking any.
    package mutating func available(nowNanos: UInt64) -> Int {
        self.refill(nowNanos: nowNanos)
        return Int(self.level / Self.scale)
    }

    /// Takes `tokens` if available; otherwise says how long until they will be.
    package mutating func tryConsume(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        self.refill(nowNanos: nowNanos)
        guard tokens > 0 else { return .allowed }
        let needed = UInt64(tokens).multipliedReportingOverflow(by: Self.scale)
        guard !needed.overflow, needed.partialValue <= self.capacity else {
            return .limited(retryAfterNanos: .max)
        }
        if self.level >= needed.partialValue {
            self.level -= needed.partialValue
            return .allowed
        }
        return .limited(retryAfterNanos: self.nanosUntil(level: needed.partialValue))
    }

    /// Nanoseconds until the bucket is full again (0 when it is): a full bucket is the same as a new one.
    package func nanosUntilIdle(nowNanos: UInt64) -> UInt64 {
        var copy = self
        copy.refill(nowNanos: nowNanos)
        return copy.level >= copy.capacity ? 0 : copy.nanosUntil(level: copy.capacity)
    }

    /// Nanoseconds until the level reaches `target` (≤ capacity), rounded up.
    private func nanosUntil(level target: UInt64) -> UInt64 {
        // Refill after t ns adds (t·rate + carry) / 10⁹ nano-tokens; solve for the smallest t.
        let deficit = UInt128(target - self.level) * UInt128(Self.nanosPerSecond) - UInt128(self.carry)
        let rate = UInt128(self.nanoTokensPerSecond)
        let nanos = (deficit + rate - 1) / rate
        return nanos > UInt128(UInt64.max - 1) ? UInt64.max - 1 : UInt64(nanos)
    }

    private mutating func refill(nowNanos: UInt64) {
        guard nowNanos > self.updatedAt else { return }  // a clock that did not move (or went back) adds nothing
        let elapsed = nowNanos - self.updatedAt
        self.updatedAt = nowNanos
        guard self.level < self.capacity else { return }
        let product = UInt128(elapsed) * UInt128(self.nanoTokensPerSecond) + UInt128(self.carry)
        let (added, remainder) = product.quotientAndRemainder(dividingBy: UInt128(Self.nanosPerSecond))
        let room = UInt128(self.capacity - self.level)
        if added >= room {
            self.level = self.capacity
            self.carry = 0
        } else {
            self.level += UInt64(added)
            self.carry = UInt64(remainder)
        }
    }
}
