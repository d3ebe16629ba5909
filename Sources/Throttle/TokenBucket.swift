// SKELETON: the Throttle helper fills in the implementation. Signatures are the contract.

/// The outcome of a rate-limit check.
package enum ThrottleDecision: Equatable, Sendable {
    case allowed
    /// Retry after this many nanoseconds.
    case limited(retryAfterNanos: UInt64)
}

/// A token bucket in fixed-point integer arithmetic; time is an input (monotonic nanoseconds).
package struct TokenBucket: Sendable {
    /// - Parameters: ratePerSecond tokens added per second; burst is the capacity.
    package init(ratePerSecond: Double, burst: Int, nowNanos: UInt64) {
        fatalError("unimplemented")
    }
    /// Takes `tokens` if available.
    package mutating func tryConsume(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        fatalError("unimplemented")
    }
}
