/// At most `limit` events in any window of `windowNanos`: an exact sliding window.
///
/// A token bucket with burst N and rate N/W lets up to 2N events through in some windows of length W (a full burst,
/// then the refill). A contact cap such as "3 promotional texts per patient per 24 h" must hold in every window,
/// so this keeps the times of the last `limit` allowed events in a ring and allows a new one only when the oldest
/// of them is at least a window old. A check is O(1) and allocates nothing; the ring is allocated once.
package struct WindowCap: Sendable, Equatable {
    /// Largest `limit` accepted; caps are small numbers of contacts, and the ring costs 8 bytes per slot.
    package static let maxLimit = 4096

    package let limit: Int
    package let windowNanos: UInt64
    /// Times of the allowed events, oldest at `head` once the ring is full.
    private var times: ContiguousArray<UInt64>
    private var head = 0

    /// - Parameters: limit events (1…`maxLimit`) per window of `windowNanos` (at least 1).
    package init(limit: Int, windowNanos: UInt64) {
        self.limit = min(max(limit, 1), Self.maxLimit)
        self.windowNanos = max(windowNanos, 1)
        self.times = []
        self.times.reserveCapacity(self.limit)
    }

    /// A cap holding previously allowed events (from `eventTimes(nowNanos:)`, e.g. persisted across a restart).
    ///
    /// Only the newest `limit` times are kept (older ones can no longer decide anything); times need not be sorted.
    package init(limit: Int, windowNanos: UInt64, eventTimes: [UInt64]) {
        self.init(limit: limit, windowNanos: windowNanos)
        for time in eventTimes.sorted().suffix(self.limit) { self.times.append(time) }
    }

    /// Events allowed within the window that ends at `nowNanos`.
    package func count(nowNanos: UInt64) -> Int {
        self.times.reduce(0) { $0 + (self.isInWindow($1, nowNanos: nowNanos) ? 1 : 0) }
    }

    /// Records one event if the cap allows it; otherwise says when the oldest event leaves the window.
    package mutating func tryRecord(nowNanos: UInt64) -> ThrottleDecision {
        self.tryRecord(1, nowNanos: nowNanos)
    }

    /// Records `events` events at once if the cap allows all of them, none otherwise.
    package mutating func tryRecord(_ events: Int, nowNanos: UInt64) -> ThrottleDecision {
        guard events > 0 else { return .allowed }
        if case .limited(let retry) = self.wouldRecord(events, nowNanos: nowNanos) {
            return .limited(retryAfterNanos: retry)
        }
        let free = self.limit - self.times.count
        let mustExpire = events - free
        for _ in 0..<min(free, events) { self.times.append(nowNanos) }
        for _ in 0..<max(mustExpire, 0) {
            self.times[self.head] = nowNanos
            self.head = (self.head + 1) % self.limit
        }
        return .allowed
    }

    /// What `tryRecord(events, nowNanos:)` would answer, without recording anything.
    package func wouldRecord(_ events: Int, nowNanos: UInt64) -> ThrottleDecision {
        guard events > 0 else { return .allowed }
        guard events <= self.limit else { return .limited(retryAfterNanos: .max) }
        let mustExpire = events - (self.limit - self.times.count)
        if mustExpire > 0 {
            // The `mustExpire` oldest events make room; the youngest of them decides. (Until the ring is full,
            // head is 0 and the ring is in time order, so the same index arithmetic holds.)
            let youngest = self.times[(self.head + mustExpire - 1) % self.times.count]
            if self.isInWindow(youngest, nowNanos: nowNanos) {
                return .limited(retryAfterNanos: self.nanosUntilOutside(youngest, nowNanos: nowNanos))
            }
        }
        return .allowed
    }

    /// Nanoseconds until every event has left the window (0 when idle).
    package func nanosUntilIdle(nowNanos: UInt64) -> UInt64 {
        guard !self.times.isEmpty else { return 0 }
        let newest = self.times[(self.head + self.times.count - 1) % self.times.count]
        return self.isInWindow(newest, nowNanos: nowNanos) ? self.nanosUntilOutside(newest, nowNanos: nowNanos) : 0
    }

    private func nanosUntilOutside(_ time: UInt64, nowNanos: UInt64) -> UInt64 {
        let (end, overflow) = time.addingReportingOverflow(self.windowNanos)
        return overflow ? .max : end - nowNanos
    }

    /// True when no event is inside the window any more, so forgetting this cap loses nothing.
    package func isIdle(nowNanos: UInt64) -> Bool {
        self.nanosUntilIdle(nowNanos: nowNanos) == 0
    }

    /// The times of the events still inside the window, oldest first (for persisting and restoring the cap).
    package func eventTimes(nowNanos: UInt64) -> [UInt64] {
        let ordered =
            self.times.count < self.limit
            ? Array(self.times) : Array(self.times[self.head...] + self.times[..<self.head])
        return ordered.filter { self.isInWindow($0, nowNanos: nowNanos) }
    }

    /// An event at `time` still counts at `nowNanos`. Events stamped in the future (a clock set back) count.
    private func isInWindow(_ time: UInt64, nowNanos: UInt64) -> Bool {
        time > nowNanos || nowNanos - time < self.windowNanos
    }
}
