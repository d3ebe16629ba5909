/// One limiter's state for one key: a token bucket or a window cap.
package protocol LimiterState: Sendable {
    /// Takes `tokens` (records) if the limit allows all of them, none otherwise.
    mutating func tryTake(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision
    /// Nanoseconds until this state is the same as a fresh one (0 when it already is), so dropping it loses nothing.
    func nanosUntilIdle(nowNanos: UInt64) -> UInt64
}

extension TokenBucket: LimiterState {
    package mutating func tryTake(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        self.tryConsume(tokens, nowNanos: nowNanos)
    }
}

extension WindowCap: LimiterState {
    package mutating func tryTake(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        self.tryRecord(tokens, nowNanos: nowNanos)
    }
}

/// The outcome of a keyed check.
package enum KeyedDecision: Equatable, Sendable {
    case allowed
    /// This key is over its limit; retry after this many nanoseconds (`UInt64.max`: never, larger than the burst).
    case limited(retryAfterNanos: UInt64)
    /// The table holds `maxKeys` keys and none of them is idle: a new key is refused rather than forgetting a key
    /// that is still limited (which would silently lift its cap). Retry after the least recently used key idles.
    case tableFull(retryAfterNanos: UInt64)
}

/// A bounded table of limiter states keyed by, say, recipient or consent scope.
///
/// Bound and eviction: at most `maxKeys` keys. Keys are kept in least-recently-used order. A new key that finds
/// the table full takes the least recently used key's slot when that state is idle (a full bucket or an empty
/// window is indistinguishable from a fresh one, so nothing is lost). When even that key is not idle the new key is
/// refused with `.tableFull`: the table fails closed. `evictIdle(nowNanos:)` releases idle keys eagerly.
///
/// A check of an existing key is O(1) and allocates nothing: one dictionary lookup, the state mutated in place in
/// a slot array, and an intrusive list relink.
package struct KeyedLimiter<Key: Hashable & Sendable, State: LimiterState>: Sendable {
    private struct Slot: Sendable {
        var key: Key
        var state: State
        /// Neighbours in recency order (-1: none). `older` towards `oldest`, `newer` towards `newest`.
        var older: Int
        var newer: Int
    }

    package let maxKeys: Int
    private let makeState: @Sendable (_ nowNanos: UInt64) -> State
    private var index: [Key: Int] = [:]
    private var slots: [Slot] = []
    private var free: [Int] = []
    private var oldest = -1
    private var newest = -1

    /// - Parameters: maxKeys the bound (at least 1); makeState builds the state of a key seen for the first time.
    package init(maxKeys: Int, makeState: @escaping @Sendable (_ nowNanos: UInt64) -> State) {
        self.maxKeys = max(1, maxKeys)
        self.makeState = makeState
    }

    /// Keys currently held.
    package var count: Int { self.index.count }

    /// The state of a key, if held.
    package func state(for key: Key) -> State? {
        self.index[key].map { self.slots[$0].state }
    }

    /// Every key with its state, least recently used first.
    package var entries: [(key: Key, state: State)] {
        var result: [(key: Key, state: State)] = []
        result.reserveCapacity(self.index.count)
        var current = self.oldest
        while current >= 0 {
            result.append((self.slots[current].key, self.slots[current].state))
            current = self.slots[current].newer
        }
        return result
    }

    /// Keys that can be added now without refusing one: free slots, plus the idle keys at the old end of the recency
    /// order (which a new key would take over), not counting `excluding` keys and stopping after `needed` slots.
    /// When fewer than `needed` are found, the second value is how long until the first blocking key is idle.
    package func insertableKeys(
        needed: Int,
        excluding: (Key) -> Bool,
        nowNanos: UInt64
    ) -> (count: Int, retryAfterNanos: UInt64) {
        var count = self.maxKeys - self.index.count
        guard count < needed else { return (count, 0) }
        var excludedWait = UInt64.max
        var current = self.oldest
        while current >= 0 && count < needed {
            let wait = self.slots[current].state.nanosUntilIdle(nowNanos: nowNanos)
            let skip = excluding(self.slots[current].key)
            current = self.slots[current].newer
            if skip {
                excludedWait = min(excludedWait, max(wait, 1))
                continue
            }
            guard wait == 0 else { return (count, wait) }
            count += 1
        }
        // Only the excluded keys (in use by the same request) are left: the soonest of them to idle frees a slot.
        return (count, count < needed ? excludedWait : 0)
    }

    /// Where `key`'s state is held, if it is: valid until the next insert or eviction (a check that found its keys
    /// held uses it to look each up once, see `tryTake(_:held:nowNanos:)`).
    package func heldSlot(for key: Key) -> Int? {
        self.index[key]
    }

    /// The state in a slot `heldSlot(for:)` gave.
    package func state(held slot: Int) -> State {
        self.slots[slot].state
    }

    /// `tryTake(_:key:nowNanos:)` for a key `heldSlot(for:)` found: no lookup.
    package mutating func tryTake(_ tokens: Int, held slot: Int, nowNanos: UInt64) -> KeyedDecision {
        self.touch(slot)
        switch self.slots[slot].state.tryTake(tokens, nowNanos: nowNanos) {
        case .allowed: return .allowed
        case .limited(let retry): return .limited(retryAfterNanos: retry)
        }
    }

    /// Takes `tokens` from `key`'s limit.
    package mutating func tryTake(_ tokens: Int, key: Key, nowNanos: UInt64) -> KeyedDecision {
        let slot: Int
        if let existing = self.index[key] {
            slot = existing
            self.touch(slot)
        } else {
            switch self.insert(key, nowNanos: nowNanos) {
            case .success(let inserted): slot = inserted
            case .failure(let full): return .tableFull(retryAfterNanos: full.retryAfterNanos)
            }
        }
        switch self.slots[slot].state.tryTake(tokens, nowNanos: nowNanos) {
        case .allowed: return .allowed
        case .limited(let retry): return .limited(retryAfterNanos: retry)
        }
    }

    /// Puts a key's state in place (restoring persisted state); same bound and eviction as a new key.
    @discardableResult
    package mutating func restore(_ key: Key, state: State, nowNanos: UInt64) -> Bool {
        if let existing = self.index[key] {
            self.slots[existing].state = state
            self.touch(existing)
            return true
        }
        guard case .success(let slot) = self.insert(key, nowNanos: nowNanos) else { return false }
        self.slots[slot].state = state
        return true
    }

    /// Drops every idle key, oldest first; returns how many were dropped.
    @discardableResult
    package mutating func evictIdle(nowNanos: UInt64) -> Int {
        var dropped = 0
        var current = self.oldest
        while current >= 0 {
            let next = self.slots[current].newer
            if self.slots[current].state.nanosUntilIdle(nowNanos: nowNanos) == 0 {
                self.index[self.slots[current].key] = nil
                self.unlink(current)
                self.free.append(current)
                dropped += 1
            }
            current = next
        }
        return dropped
    }

    private struct TableFull: Error {
        var retryAfterNanos: UInt64
    }

    private mutating func insert(_ key: Key, nowNanos: UInt64) -> Result<Int, TableFull> {
        let slot: Int
        if self.index.count < self.maxKeys {
            if let reused = self.free.popLast() {
                slot = reused
                self.slots[slot] = Slot(key: key, state: self.makeState(nowNanos), older: -1, newer: -1)
            } else {
                slot = self.slots.count
                self.slots.append(Slot(key: key, state: self.makeState(nowNanos), older: -1, newer: -1))
            }
        } else {
            let victim = self.oldest
            let wait = self.slots[victim].state.nanosUntilIdle(nowNanos: nowNanos)
            guard wait == 0 else { return .failure(TableFull(retryAfterNanos: wait)) }
            self.index[self.slots[victim].key] = nil
            self.unlink(victim)
            slot = victim
            self.slots[slot].key = key
            self.slots[slot].state = self.makeState(nowNanos)
        }
        self.index[key] = slot
        self.linkNewest(slot)
        return .success(slot)
    }

    private mutating func touch(_ slot: Int) {
        guard slot != self.newest else { return }
        self.unlink(slot)
        self.linkNewest(slot)
    }

    private mutating func unlink(_ slot: Int) {
        let older = self.slots[slot].older
        let newer = self.slots[slot].newer
        if older >= 0 { self.slots[older].newer = newer } else { self.oldest = newer }
        if newer >= 0 { self.slots[newer].older = older } else { self.newest = older }
        self.slots[slot].older = -1
        self.slots[slot].newer = -1
    }

    private mutating func linkNewest(_ slot: Int) {
        self.slots[slot].older = self.newest
        self.slots[slot].newer = -1
        if self.newest >= 0 { self.slots[self.newest].newer = slot } else { self.oldest = slot }
        self.newest = slot
    }
}
