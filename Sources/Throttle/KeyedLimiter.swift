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
/// A check of an existing key is O(1) and allocates nothing: one probe of the hash index, the state mutated in place
/// in a slot array, and an intrusive list relink.
///
/// The index is the table's own (open addressing, linear probing, at most half full) rather than a `Dictionary`, so
/// that a key can be found by its hash and a comparison the caller supplies (`heldSlot(hash:matching:)`): a caller
/// holding only a key's bytes finds it without building the key. The hash is always the key's `hashValue`
/// (`Hasher`, seeded at random per process, so keys a producer chooses cannot be made to collide).
package struct KeyedLimiter<Key: Hashable & Sendable, State: LimiterState>: Sendable {
    private struct Slot: Sendable {
        var key: Key
        /// `key.hashValue`.
        var hash: Int
        var state: State
        /// Neighbours in recency order (-1: none). `older` towards `oldest`, `newer` towards `newest`.
        var older: Int
        var newer: Int
    }

    package let maxKeys: Int
    private let makeState: @Sendable (_ nowNanos: UInt64) -> State
    /// The hash index: slot number + 1 per bucket, 0 for an empty bucket; a power of two long, at most half full.
    private var buckets: [Int] = []
    /// Keys held (live slots).
    private var held = 0
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
    package var count: Int { self.held }

    /// The state of a key, if held.
    package func state(for key: Key) -> State? {
        self.heldSlot(for: key).map { self.slots[$0].state }
    }

    /// Every key with its state, least recently used first.
    package var entries: [(key: Key, state: State)] {
        var result: [(key: Key, state: State)] = []
        result.reserveCapacity(self.held)
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
        var count = self.maxKeys - self.held
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
        self.heldSlot(hash: key.hashValue) { $0 == key }
    }

    /// `heldSlot(for:)` for the key whose `hashValue` is `hash` and which `matching` accepts (it is asked only
    /// about held keys with that hash). A caller that has a key's hash without the key (computed from its bytes)
    /// looks it up this way; a hash that is not the key's `hashValue` only makes the lookup miss.
    package func heldSlot(hash: Int, matching: (Key) -> Bool) -> Int? {
        guard !self.buckets.isEmpty else { return nil }
        let mask = self.buckets.count - 1
        var position = hash & mask
        while true {
            let entry = self.buckets[position]
            guard entry != 0 else { return nil }
            if self.slots[entry - 1].hash == hash && matching(self.slots[entry - 1].key) { return entry - 1 }
            position = (position + 1) & mask
        }
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

    /// Takes `tokens` from the held key `heldSlot(hash:matching:)` finds, or returns nil (nothing changed) when
    /// there is none. Unlike `tryTake(_:held:nowNanos:)`, the key moves to the recent end only when the take is
    /// allowed (a refused take leaves the recency order as it was); the state is read and changed in its slot.
    package mutating func tryTake(
        _ tokens: Int, heldHash hash: Int, matching: (Key) -> Bool, nowNanos: UInt64
    ) -> KeyedDecision? {
        guard let slot = self.heldSlot(hash: hash, matching: matching) else { return nil }
        switch self.slots[slot].state.tryTake(tokens, nowNanos: nowNanos) {
        case .allowed:
            self.touch(slot)
            return .allowed
        case .limited(let retry):
            return .limited(retryAfterNanos: retry)
        }
    }

    /// Takes `tokens` from `key`'s limit.
    package mutating func tryTake(_ tokens: Int, key: Key, nowNanos: UInt64) -> KeyedDecision {
        let hash = key.hashValue
        let slot: Int
        if let existing = self.heldSlot(hash: hash, matching: { $0 == key }) {
            slot = existing
            self.touch(slot)
        } else {
            switch self.insert(key, hash: hash, nowNanos: nowNanos) {
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
        let hash = key.hashValue
        if let existing = self.heldSlot(hash: hash, matching: { $0 == key }) {
            self.slots[existing].state = state
            self.touch(existing)
            return true
        }
        guard case .success(let slot) = self.insert(key, hash: hash, nowNanos: nowNanos) else { return false }
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
                self.removeFromIndex(current)
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

    private mutating func insert(_ key: Key, hash: Int, nowNanos: UInt64) -> Result<Int, TableFull> {
        let slot: Int
        if self.held < self.maxKeys {
            if let reused = self.free.popLast() {
                slot = reused
                self.slots[slot] = Slot(key: key, hash: hash, state: self.makeState(nowNanos), older: -1, newer: -1)
            } else {
                slot = self.slots.count
                self.slots.append(Slot(key: key, hash: hash, state: self.makeState(nowNanos), older: -1, newer: -1))
            }
        } else {
            let victim = self.oldest
            let wait = self.slots[victim].state.nanosUntilIdle(nowNanos: nowNanos)
            guard wait == 0 else { return .failure(TableFull(retryAfterNanos: wait)) }
            self.removeFromIndex(victim)
            self.unlink(victim)
            slot = victim
            self.slots[slot].key = key
            self.slots[slot].hash = hash
            self.slots[slot].state = self.makeState(nowNanos)
        }
        self.addToIndex(slot)
        self.linkNewest(slot)
        return .success(slot)
    }

    /// Puts a slot's key in the index (it is not there yet), growing the index first when it would be over half full.
    private mutating func addToIndex(_ slot: Int) {
        if (self.held + 1) * 2 > self.buckets.count {
            let old = self.buckets
            self.buckets = [Int](repeating: 0, count: max(16, self.buckets.count * 2))
            for entry in old where entry != 0 { self.place(entry) }
        }
        self.place(slot + 1)
        self.held += 1
    }

    /// Puts a bucket entry (slot + 1) in the first empty bucket from its slot's home bucket on.
    private mutating func place(_ entry: Int) {
        let mask = self.buckets.count - 1
        var position = self.slots[entry - 1].hash & mask
        while self.buckets[position] != 0 { position = (position + 1) & mask }
        self.buckets[position] = entry
    }

    /// Takes a held slot's key out of the index. Linear probing without tombstones: the entries after the emptied
    /// bucket, up to the next empty one, move back into it when that is no earlier than their home bucket, so every
    /// key stays reachable from its home bucket without passing an empty one.
    private mutating func removeFromIndex(_ slot: Int) {
        let mask = self.buckets.count - 1
        var hole = self.slots[slot].hash & mask
        while self.buckets[hole] != slot + 1 { hole = (hole + 1) & mask }
        var next = (hole + 1) & mask
        while self.buckets[next] != 0 {
            let home = self.slots[self.buckets[next] - 1].hash & mask
            // Distance from its home to where it is, against from the hole to where it is (both going forward).
            if (next &- home) & mask >= (next &- hole) & mask {
                self.buckets[hole] = self.buckets[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        self.buckets[hole] = 0
        self.held -= 1
    }

    /// Moves the held key `heldSlot(hash:matching:)` finds to the recent end, as an allowed take would; false when
    /// it is not held.
    package mutating func touch(heldHash hash: Int, matching: (Key) -> Bool) -> Bool {
        guard let slot = self.heldSlot(hash: hash, matching: matching) else { return false }
        self.touch(slot)
        return true
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
