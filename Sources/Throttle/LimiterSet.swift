import Locking

/// One limiter as Throttle sees it: plain data the server builds from TopicRouter's `LimiterDeclaration` (Throttle
/// does not import TopicRouter). Which records a limiter applies to, and under which keys, is decided before
/// `LimiterSet.check`; here only the limit matters.
package struct LimiterDefinition: Equatable, Sendable {
    /// A limiter's limit.
    package enum Limit: Equatable, Sendable {
        /// A token bucket: `ratePerSecond` records per second on average, `burst` at once. Monotonic clock.
        case tokenBucket(ratePerSecond: Double, burst: Int)
        /// An exact sliding window: at most `cap` records in any `windowNanos`. Wall clock, so that persisted
        /// event times still mean the same after a restart.
        case window(cap: Int, windowNanos: UInt64)
    }

    /// The limiter's name, unique in a set.
    package var name: String
    /// Records per key.
    package var limit: Limit
    /// Bytes per second per key on top of the record limit (delivery quotas), nil for none. Monotonic clock.
    package var bytesPerSecond: Double?
    /// The byte burst; nil takes one second's worth of `bytesPerSecond`.
    package var burstBytes: Int?
    /// The most keys held at once (see `KeyedLimiter`: idle keys make room, active keys are never forgotten).
    package var maxKeys: Int

    /// Creates a definition.
    package init(
        name: String,
        limit: Limit,
        bytesPerSecond: Double? = nil,
        burstBytes: Int? = nil,
        maxKeys: Int = 100_000
    ) {
        self.name = name
        self.limit = limit
        self.bytesPerSecond = bytesPerSecond
        self.burstBytes = burstBytes
        self.maxKeys = maxKeys
    }

    /// The clock the record limit runs on: `.wall` for windows, `.monotonic` for token buckets.
    package var clock: LimiterClock {
        switch self.limit {
        case .tokenBucket: return .monotonic
        case .window: return .wall
        }
    }

    /// `burstBytes`, or one second's worth of `bytesPerSecond` (at least 1); nil without a byte limit.
    package var effectiveBurstBytes: Int? {
        guard let rate = self.bytesPerSecond else { return nil }
        if let burst = self.burstBytes { return burst }
        return Int(min(max(rate.rounded(.up), 1), Double(TokenBucket.maxBurst)))
    }
}

/// Which clock a limit reads.
package enum LimiterClock: Equatable, Sendable {
    /// Monotonic time (e.g. `DispatchTime.now().uptimeNanoseconds`): never steps, restarts at boot. Token buckets
    /// use it; their state is not persisted (a restart refills them, which is at most one burst).
    case monotonic
    /// Wall-clock nanoseconds since the Unix epoch. Windows use it so that persisted event times stay meaningful
    /// across a restart. A clock set back makes events look younger (the cap holds longer, never shorter); a clock
    /// set forward releases them early.
    case wall
}

/// The time of a check, on both clocks.
package struct LimiterNow: Equatable, Sendable {
    /// Monotonic nanoseconds (token buckets, byte quotas).
    package var monotonicNanos: UInt64
    /// Wall-clock nanoseconds since the Unix epoch (windows, snapshots).
    package var wallNanos: UInt64

    /// Both readings.
    package init(monotonicNanos: UInt64, wallNanos: UInt64) {
        self.monotonicNanos = monotonicNanos
        self.wallNanos = wallNanos
    }

    /// One reading for both clocks (a fake clock in tests).
    package init(nanos: UInt64) {
        self.init(monotonicNanos: nanos, wallNanos: nanos)
    }

    /// The reading of `clock`.
    package func nanos(_ clock: LimiterClock) -> UInt64 {
        clock == .wall ? self.wallNanos : self.monotonicNanos
    }
}

/// The outcome of `LimiterSet.check`.
package enum LimiterOutcome: Equatable, Sendable {
    /// Every key allowed the record; it has been counted.
    case allowed
    /// At least one key is over its limit; nothing was counted. Retry after this many nanoseconds, when every key
    /// will allow it (`UInt64.max`: never, the record is larger than the limit's burst or cap).
    case limited(retryAfterNanos: UInt64)
    /// The limiter's key table holds `maxKeys` keys that are all still limited, so a new key cannot be admitted
    /// without forgetting a cap in force: refused (fails closed). Nothing was counted.
    case tableFull(retryAfterNanos: UInt64)
}

/// What `brokerctl limits show` prints for one key.
package struct LimiterKeyState: Equatable, Sendable {
    /// How much of the limit is used.
    package enum Usage: Equatable, Sendable {
        /// A token bucket: whole records available now, out of `burst`.
        case tokens(available: Int, burst: Int)
        /// A window: records counted in the window ending now, out of `cap`.
        case window(events: Int, cap: Int, windowNanos: UInt64)
    }

    /// Whether the key is in the table (a key not held is as good as fresh).
    package var held: Bool
    /// The record limit's usage.
    package var usage: Usage
    /// Nanoseconds until one more record is allowed (0: now).
    package var retryAfterNanos: UInt64
    /// Bytes available now, for a limiter with a byte quota.
    package var bytesAvailable: Int?
}

/// Persisted window state of one key: the wall-clock times of the events still inside its window.
package struct LimiterSnapshotEntry: Equatable, Sendable {
    /// The limiter's name.
    package var limiter: String
    /// The key.
    package var key: String
    /// Wall-clock nanoseconds since the Unix epoch of each counted event, oldest first.
    package var eventTimes: [UInt64]

    /// Creates an entry.
    package init(limiter: String, key: String, eventTimes: [UInt64]) {
        self.limiter = limiter
        self.key = key
        self.eventTimes = eventTimes
    }
}

/// What `LimiterSet.restore` did.
package struct LimiterRestoreReport: Equatable, Sendable {
    /// Keys whose events were put back.
    package var restored = 0
    /// Entries of limiters that no longer exist or are no longer windows (their caps are gone from the config).
    package var skippedUnknownLimiter: [String] = []
    /// Entries whose events have all left the window (nothing to restore).
    package var expired = 0
    /// Entries that did not fit the limiter's key table (`maxKeys` lowered below the number of active keys).
    package var droppedTableFull = 0
}

/// A `LimiterSet` misuse.
package struct LimiterSetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong.
    package var message: String
    /// Creates an error.
    package init(_ message: String) { self.message = message }
    /// The message.
    package var description: String { self.message }
}

/// Every configured limiter's keyed state, shared by all connections.
///
/// Each limiter has its own lock around a `KeyedLimiter` of token buckets or windows (and, with a byte quota, a
/// second keyed table of byte buckets), so checks of different limiters never contend. A check holds one lock for
/// O(keys) work and allocates nothing once its keys exist.
///
/// Clocks: token buckets (records and bytes) read `LimiterNow.monotonicNanos`; windows read `wallNanos`, so their
/// `snapshot` can be persisted and `restore`d after a restart and a contact cap keeps holding (see `LimiterClock`).
package final class LimiterSet: Sendable {
    /// The limiters, in the order given.
    package let definitions: [LimiterDefinition]
    private let tables: [String: Table]

    fileprivate enum Table: Sendable {
        case bucket(KeyedTable<TokenBucket>)
        case window(KeyedTable<WindowCap>)
    }

    /// Builds empty state for each definition; names must be unique.
    package init(definitions: [LimiterDefinition]) throws(LimiterSetError) {
        var tables: [String: Table] = [:]
        for definition in definitions {
            guard tables[definition.name] == nil else {
                throw LimiterSetError("limiter '\(definition.name)' is defined twice; names must be unique")
            }
            switch definition.limit {
            case .tokenBucket(let rate, let burst):
                tables[definition.name] = .bucket(
                    KeyedTable(definition) { now in TokenBucket(ratePerSecond: rate, burst: burst, nowNanos: now) }
                )
            case .window(let cap, let windowNanos):
                tables[definition.name] = .window(
                    KeyedTable(definition) { _ in WindowCap(limit: cap, windowNanos: windowNanos) }
                )
            }
        }
        self.definitions = definitions
        self.tables = tables
    }

    /// Counts one record (`tokens` records, for a batch counted at once; `bytes` against a byte quota) under every
    /// key in `keys`, all or nothing: if any key refuses, none is charged, so a record with scopes a and b that b
    /// refuses does not use up a's allowance. Duplicate keys count once. No keys: allowed, nothing counted.
    ///
    /// A record larger than the byte burst takes the whole burst (it is paced, never refused forever).
    package func check(
        limiter: String,
        keys: [String],
        tokens: Int = 1,
        bytes: Int = 0,
        now: LimiterNow
    ) throws(LimiterSetError) -> LimiterOutcome {
        try self.handle(limiter).check(keys: keys, tokens: tokens, bytes: bytes, now: now)
    }

    /// One limiter of this set, looked up once (a caller checking many records against the same limiters keeps
    /// these instead of naming the limiter per record).
    ///
    /// A class: a judge keeps one per limiter and reads it for every record; copying a struct holding the table enum
    /// out of the judge cost an outlined copy and destroy (about 190 instructions per record, callgrind).
    package final class Handle: Sendable {
        fileprivate let table: Table

        fileprivate init(table: Table) {
            self.table = table
        }

        /// `LimiterSet.check(limiter:keys:tokens:bytes:now:)` on this limiter.
        package func check(keys: [String], tokens: Int = 1, bytes: Int = 0, now: LimiterNow) -> LimiterOutcome {
            switch self.table {
            case .bucket(let table): return table.check(keys: keys, tokens: tokens, bytes: bytes, now: now)
            case .window(let table): return table.check(keys: keys, tokens: tokens, bytes: bytes, now: now)
            }
        }

        /// `check(keys: [String(decoding: key, as: UTF8.self)], ...)`, the same outcome and the same counting, with
        /// the key given as its UTF-8 bytes: a key already held is found without building a `String` (the usual
        /// case: one recipient or one consent scope per record, seen before).
        package func check(
            keyBytes key: UnsafeRawBufferPointer, tokens: Int = 1, bytes: Int = 0, now: LimiterNow
        ) -> LimiterOutcome {
            self.check(keyBytes: key, hash: LimiterSet.keyHash(utf8: key), tokens: tokens, bytes: bytes, now: now)
        }

        /// `check(keyBytes:tokens:bytes:now:)` with the key's hash already computed: `hash` must be
        /// `LimiterSet.keyHash(utf8: key)` (a caller checking the same key for many records computes it once). Any
        /// other value only makes the lookup of a held key miss; the key is then found by its `String`, with the
        /// same outcome and counting.
        package func check(
            keyBytes key: UnsafeRawBufferPointer, hash: Int, tokens: Int = 1, bytes: Int = 0, now: LimiterNow
        ) -> LimiterOutcome {
            switch self.table {
            case .bucket(let table):
                return table.check(keyBytes: key, hash: hash, tokens: tokens, bytes: bytes, now: now)
            case .window(let table):
                return table.check(keyBytes: key, hash: hash, tokens: tokens, bytes: bytes, now: now)
            }
        }

        /// Whether this limiter has a byte quota (records counted with `bytes`); `check(_:now:)` is for limiters
        /// without one.
        package var hasByteQuota: Bool {
            switch self.table {
            case .bucket(let table): table.hasByteQuota
            case .window(let table): table.hasByteQuota
            }
        }

        /// Checks the records of `counts` as if each were checked on its own, in the order added
        /// (`check(keyBytes:hash:tokens: 1, bytes: 0, now:)`), with the same outcomes and the same state afterwards,
        /// but key by key under one lock: a key's records are charged at once when the limit allows all of them,
        /// otherwise one by one until one is refused. Sets `counts.allowed` (how many of each key's records were
        /// charged: the first ones), `counts.refusals` (the outcome for the rest) and `counts.someRefused`, and
        /// returns true; or returns false, with nothing checked or charged, when new keys could fill the table (then a
        /// refusal's retry time and which idle key a new one replaces depend on the order of the keys, and the caller
        /// checks record by record). For a limiter without a byte quota (`hasByteQuota` false: with one, each record's
        /// bytes would have to be clamped to the burst on its own).
        ///
        /// Why it is the same: every check has the same `now`, and with room for every new key no key's check
        /// depends on another key, so each key sees the same sequence of checks; a refused check changes nothing, so
        /// once one of a key's records is refused the rest are refused alike. What remains is the recency order of
        /// the keys, which decides which key a later new key may replace: a key goes to the recent end when it is
        /// charged, so the keys are charged in the order of their last record, and when some key had records
        /// refused, moved again in the order of their last charged record.
        package func check(_ counts: inout KeyCounts, now: LimiterNow) -> Bool {
            switch self.table {
            case .bucket(let table): table.check(&counts, now: now)
            case .window(let table): table.check(&counts, now: now)
            }
        }
    }

    /// The hash a `String` key has in a limiter's table (its `hashValue`) when `bytes` are its UTF-8, computed from
    /// the bytes alone. `String` hashes the UTF-8 of a string in normal form C followed by a 0xFF terminator; for
    /// other bytes (not UTF-8, or not in normal form C) this is not the hash of `String(decoding: bytes, as:
    /// UTF8.self)`, and a lookup with it misses (the caller then builds the `String`; nothing is counted wrongly).
    package static func keyHash(utf8 bytes: UnsafeRawBufferPointer) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        hasher.combine(0xFF as UInt8)
        return hasher.finalize()
    }

    /// The handle of the limiter called `limiter`.
    package func handle(_ limiter: String) throws(LimiterSetError) -> Handle {
        Handle(table: try self.table(limiter))
    }

    /// The state of one key, without changing it (a key not held reads as fresh).
    package func state(limiter: String, key: String, now: LimiterNow) throws(LimiterSetError) -> LimiterKeyState {
        switch try self.table(limiter) {
        case .bucket(let table): return table.state(key: key, now: now)
        case .window(let table): return table.state(key: key, now: now)
        }
    }

    /// Keys held by a limiter.
    package func keyCount(limiter: String) throws(LimiterSetError) -> Int {
        switch try self.table(limiter) {
        case .bucket(let table): return table.keyCount
        case .window(let table): return table.keyCount
        }
    }

    /// Forgets every idle key of every limiter (housekeeping; a full table also reuses idle slots on its own).
    @discardableResult
    package func evictIdle(now: LimiterNow) -> Int {
        var dropped = 0
        for table in self.tables.values {
            switch table {
            case .bucket(let table): dropped += table.evictIdle(now: now)
            case .window(let table): dropped += table.evictIdle(now: now)
            }
        }
        return dropped
    }

    /// The event times of every window limiter's active keys, to persist (token buckets are not included: they
    /// run on the monotonic clock and a restart refills them by at most one burst). Ordered by limiter, then from
    /// the least to the most recently used key.
    package func snapshot(now: LimiterNow) -> [LimiterSnapshotEntry] {
        var result: [LimiterSnapshotEntry] = []
        for definition in self.definitions {
            guard case .window(let table) = self.tables[definition.name] else { continue }
            for (key, cap) in table.entries() {
                let times = cap.eventTimes(nowNanos: now.wallNanos)
                if !times.isEmpty {
                    result.append(LimiterSnapshotEntry(limiter: definition.name, key: key, eventTimes: times))
                }
            }
        }
        return result
    }

    /// Puts persisted window events back (e.g. at start, before the first check). A limiter whose cap or window
    /// changed keeps the newest events that fit the new cap and counts them against the new window. Entries are
    /// applied in order, so a later entry for the same key replaces an earlier one.
    @discardableResult
    package func restore(_ entries: [LimiterSnapshotEntry], now: LimiterNow) -> LimiterRestoreReport {
        var report = LimiterRestoreReport()
        for entry in entries {
            guard case .window(let table) = self.tables[entry.limiter],
                case .window(let cap, let windowNanos) = table.definition.limit
            else {
                if !report.skippedUnknownLimiter.contains(entry.limiter) {
                    report.skippedUnknownLimiter.append(entry.limiter)
                }
                continue
            }
            let state = WindowCap(limit: cap, windowNanos: windowNanos, eventTimes: entry.eventTimes)
            guard !state.isIdle(nowNanos: now.wallNanos) else {
                report.expired += 1
                continue
            }
            if table.restore(key: entry.key, state: state, now: now) {
                report.restored += 1
            } else {
                report.droppedTableFull += 1
            }
        }
        return report
    }

    private func table(_ name: String) throws(LimiterSetError) -> Table {
        guard let table = self.tables[name] else {
            let known = self.definitions.map(\.name).joined(separator: ", ")
            throw LimiterSetError("unknown limiter '\(name)'; configured limiters: \(known.isEmpty ? "(none)" : known)")
        }
        return table
    }
}

/// What `KeyedTable` needs of a state beyond `LimiterState`.
protocol ReportingLimiterState: LimiterState {
    /// What `tryTake` would answer, without taking anything.
    func peek(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision
    /// The usage shown by `limits show`.
    func usage(nowNanos: UInt64) -> LimiterKeyState.Usage
}

extension TokenBucket: ReportingLimiterState {
    func peek(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        var copy = self  // a plain struct: copying allocates nothing
        return copy.tryConsume(tokens, nowNanos: nowNanos)
    }

    func usage(nowNanos: UInt64) -> LimiterKeyState.Usage {
        var copy = self
        return .tokens(available: copy.available(nowNanos: nowNanos), burst: Int(self.capacity / Self.scale))
    }
}

extension WindowCap: ReportingLimiterState {
    func peek(_ tokens: Int, nowNanos: UInt64) -> ThrottleDecision {
        self.wouldRecord(tokens, nowNanos: nowNanos)
    }

    func usage(nowNanos: UInt64) -> LimiterKeyState.Usage {
        .window(events: self.count(nowNanos: nowNanos), cap: self.limit, windowNanos: self.windowNanos)
    }
}

/// One limiter's tables behind its lock.
final class KeyedTable<State: ReportingLimiterState>: Sendable {
    let definition: LimiterDefinition
    private let clock: LimiterClock
    private let byteBurst: Int?
    private let makeState: @Sendable (UInt64) -> State
    private let tables: Locked<Tables>

    private struct Tables: Sendable {
        var records: KeyedLimiter<String, State>
        var bytes: KeyedLimiter<String, TokenBucket>?
    }

    init(_ definition: LimiterDefinition, makeState: @escaping @Sendable (UInt64) -> State) {
        self.definition = definition
        self.clock = definition.clock
        self.makeState = makeState
        let byteBurst = definition.effectiveBurstBytes
        self.byteBurst = byteBurst
        var bytes: KeyedLimiter<String, TokenBucket>? = nil
        if let rate = definition.bytesPerSecond, let burst = byteBurst {
            bytes = KeyedLimiter(maxKeys: definition.maxKeys) { now in
                TokenBucket(ratePerSecond: rate, burst: burst, nowNanos: now)
            }
        }
        self.tables = Locked(
            Tables(records: KeyedLimiter(maxKeys: definition.maxKeys, makeState: makeState), bytes: bytes)
        )
    }

    var keyCount: Int { self.tables.withLock { $0.records.count } }

    var hasByteQuota: Bool { self.byteBurst != nil }

    /// `LimiterSet.Handle.check(_:now:)`.
    func check(_ counts: inout KeyCounts, now: LimiterNow) -> Bool {
        precondition(!self.hasByteQuota, "a grouped check of a limiter with a byte quota")
        let recordNow = now.nanos(self.clock)
        // A copy to read the keys from (one per batch): reading them from `counts` itself while it is `inout` made
        // Swift copy it for every key.
        let keys = counts
        var allowed = [Int](repeating: 0, count: keys.count)
        var refusals = [LimiterOutcome](repeating: .allowed, count: keys.count)
        var someRefused = false
        let checked = self.tables.withLock { tables -> Bool in
            // Room for every new key without replacing one: at most `keys.count` of them are new, else count them.
            if tables.records.count + keys.count > tables.records.maxKeys {
                var new = 0
                for index in 0..<keys.count {
                    let held = keys.withKey(index) { key in
                        tables.records.heldSlot(hash: keys.hashes[index]) { Self.utf8($0, equals: key) } != nil
                    }
                    if !held { new += 1 }
                }
                guard tables.records.count + new <= tables.records.maxKeys else { return false }
            }
            // Charged in the order of each key's last record, as record by record would leave their recency.
            for index in keys.keys(inOrderOfRecord: keys.records) {
                let records = keys.records[index]
                let hash = keys.hashes[index]
                keys.withKey(index) { key in
                    func take(_ tokens: Int) -> LimiterOutcome {
                        self.check(
                            keyBytes: key, hash: hash, tokens: tokens, byteTokens: 0, recordNow: recordNow, byteNow: 0,
                            in: &tables
                        )
                    }
                    if take(records) == .allowed {
                        allowed[index] = records
                        return
                    }
                    // Not all at once: one by one, until one is refused.
                    while allowed[index] < records {
                        let outcome = take(1)
                        guard outcome == .allowed else {
                            refusals[index] = outcome
                            someRefused = true
                            return
                        }
                        allowed[index] += 1
                    }
                }
            }
            if someRefused {
                // Recency as record by record: each charged key in the order of its last charged record.
                for index in keys.keys(inOrderOfRecord: allowed) {
                    keys.withKey(index) { key in
                        _ = tables.records.touch(heldHash: keys.hashes[index], matching: { Self.utf8($0, equals: key) })
                    }
                }
            }
            return true
        }
        guard checked else { return false }
        counts.allowed = allowed
        counts.refusals = refusals
        counts.someRefused = someRefused
        return true
    }

    func check(keys: [String], tokens: Int, bytes: Int, now: LimiterNow) -> LimiterOutcome {
        let recordNow = now.nanos(self.clock)
        let byteNow = now.monotonicNanos
        let byteTokens = min(max(bytes, 0), self.byteBurst ?? 0)
        return self.tables.withLock { tables -> LimiterOutcome in
            if keys.count == 1, let outcome = Self.checkHeld(
                hash: keys[0].hashValue, matching: { $0 == keys[0] }, tokens: tokens, byteTokens: byteTokens,
                recordNow: recordNow, byteNow: byteNow, in: &tables
            ) {
                return outcome
            }
            return self.checkKeys(
                keys, tokens: tokens, byteTokens: byteTokens, recordNow: recordNow, byteNow: byteNow, in: &tables
            )
        }
    }

    /// `check(keys: [String(decoding: key, as: UTF8.self)], ...)` with the key's bytes (`Handle.check(keyBytes:)`).
    /// `hash` is `LimiterSet.keyHash(utf8: key)` (`Handle.check(keyBytes:hash:tokens:bytes:now:)`).
    func check(
        keyBytes key: UnsafeRawBufferPointer, hash: Int, tokens: Int, bytes: Int, now: LimiterNow
    ) -> LimiterOutcome {
        let recordNow = now.nanos(self.clock)
        let byteNow = now.monotonicNanos
        let byteTokens = min(max(bytes, 0), self.byteBurst ?? 0)
        return self.tables.withLock { tables in
            self.check(
                keyBytes: key, hash: hash, tokens: tokens, byteTokens: byteTokens, recordNow: recordNow,
                byteNow: byteNow, in: &tables
            )
        }
    }

    /// One key given by its bytes, under the lock: a held key whose UTF-8 is exactly these bytes is the key
    /// `String(decoding:)` would give; any other goes the general way.
    private func check(
        keyBytes key: UnsafeRawBufferPointer, hash: Int, tokens: Int, byteTokens: Int, recordNow: UInt64,
        byteNow: UInt64, in tables: inout Tables
    ) -> LimiterOutcome {
        if let outcome = Self.checkHeld(
            hash: hash, matching: { Self.utf8($0, equals: key) }, tokens: tokens, byteTokens: byteTokens,
            recordNow: recordNow, byteNow: byteNow, in: &tables
        ) {
            return outcome
        }
        return self.checkKeys(
            [String(decoding: key, as: UTF8.self)], tokens: tokens, byteTokens: byteTokens, recordNow: recordNow,
            byteNow: byteNow, in: &tables
        )
    }

    /// Whether `key`'s UTF-8 is exactly `bytes`.
    private static func utf8(_ key: String, equals bytes: UnsafeRawBufferPointer) -> Bool {
        guard key.utf8.count == bytes.count else { return false }
        var key = key  // `withUTF8` is mutating: it would make a non-native string native (a Swift string is)
        return key.withUTF8 { sameBytes(UnsafeRawBufferPointer($0), bytes) }
    }

    /// The general check, under the lock: any number of keys, held or not.
    private func checkKeys(
        _ keys: [String], tokens: Int, byteTokens: Int, recordNow: UInt64, byteNow: UInt64, in tables: inout Tables
    ) -> LimiterOutcome {
        func isRepeat(_ index: Int) -> Bool { keys[..<index].contains(keys[index]) }
        // 1. Would every key allow it? Nothing is changed yet.
        var retry: UInt64? = nil
        var newRecordKeys = 0
        var newByteKeys = 0
        for index in keys.indices where !isRepeat(index) {
            let key = keys[index]
            let decision: ThrottleDecision
            if let state = tables.records.state(for: key) {
                decision = state.peek(tokens, nowNanos: recordNow)
            } else {
                newRecordKeys += 1
                decision = self.makeState(recordNow).peek(tokens, nowNanos: recordNow)
            }
            if case .limited(let wait) = decision { retry = max(retry ?? 0, wait) }
            if let byteTable = tables.bytes, byteTokens > 0 {
                if let bucket = byteTable.state(for: key) {
                    if case .limited(let wait) = bucket.peek(byteTokens, nowNanos: byteNow) {
                        retry = max(retry ?? 0, wait)
                    }
                } else {
                    newByteKeys += 1
                }
            }
        }
        if let retry { return .limited(retryAfterNanos: retry) }
        // 2. Is there room for the new keys without forgetting a key that is still limited?
        if newRecordKeys > 0 {
            let room = tables.records.insertableKeys(
                needed: newRecordKeys,
                excluding: { keys.contains($0) },
                nowNanos: recordNow
            )
            if room.count < newRecordKeys { return .tableFull(retryAfterNanos: room.retryAfterNanos) }
        }
        if newByteKeys > 0, let byteTable = tables.bytes {
            let room = byteTable.insertableKeys(
                needed: newByteKeys,
                excluding: { keys.contains($0) },
                nowNanos: byteNow
            )
            if room.count < newByteKeys { return .tableFull(retryAfterNanos: room.retryAfterNanos) }
        }
        // 3. Take. Held keys first, so that they move to the recent end before new keys reuse idle slots
        // from the old end (the slots step 2 counted).
        for pass in 0..<2 {
            for index in keys.indices where !isRepeat(index) {
                let key = keys[index]
                let held = tables.records.state(for: key) != nil
                if held == (pass == 0) {
                    _ = tables.records.tryTake(tokens, key: key, nowNanos: recordNow)
                }
                if byteTokens > 0, let byteHeld = tables.bytes.map({ $0.state(for: key) != nil }),
                    byteHeld == (pass == 0)
                {
                    _ = tables.bytes?.tryTake(byteTokens, key: key, nowNanos: byteNow)
                }
            }
        }
        return .allowed
    }

    /// The usual case, one key already held (in the byte table too, when counted there): each table is searched
    /// once instead of three times. The key is the held one whose hash is `hash` and which `matching` accepts. nil
    /// when it is not held; then the general path decides.
    private static func checkHeld(
        hash: Int, matching: (String) -> Bool, tokens: Int, byteTokens: Int, recordNow: UInt64, byteNow: UInt64,
        in tables: inout Tables
    ) -> LimiterOutcome? {
        if byteTokens == 0 {
            // No byte quota to charge (`byteTokens` is 0 without a byte table): one take in place decides.
            // `tryTake` charges nothing when it refuses (a token bucket only brings its level up to date, which a
            // later take would do the same way), and the key moves to the recent end only when it was charged, as
            // below. (Found and taken by one mutating call: reading the table through a non-mutating one copied it,
            // about 300 instructions, callgrind.)
            switch tables.records.tryTake(tokens, heldHash: hash, matching: matching, nowNanos: recordNow) {
            case nil: return nil
            case .allowed: return .allowed
            case .limited(let retry), .tableFull(let retry): return .limited(retryAfterNanos: retry)
            }
        }
        guard let slot = tables.records.heldSlot(hash: hash, matching: matching) else { return nil }
        var byteSlot: Int? = nil
        if let byteTable = tables.bytes {
            guard let held = byteTable.heldSlot(hash: hash, matching: matching) else { return nil }
            byteSlot = held
        }
        var retry: UInt64? = nil
        if case .limited(let wait) = tables.records.state(held: slot).peek(tokens, nowNanos: recordNow) {
            retry = wait
        }
        if let byteSlot,
            case .limited(let wait) = tables.bytes!.state(held: byteSlot).peek(byteTokens, nowNanos: byteNow)
        {
            retry = max(retry ?? 0, wait)
        }
        if let retry { return .limited(retryAfterNanos: retry) }
        _ = tables.records.tryTake(tokens, held: slot, nowNanos: recordNow)
        if let byteSlot { _ = tables.bytes!.tryTake(byteTokens, held: byteSlot, nowNanos: byteNow) }
        return .allowed
    }

    func state(key: String, now: LimiterNow) -> LimiterKeyState {
        let recordNow = now.nanos(self.clock)
        return self.tables.withLock { tables in
            let held = tables.records.state(for: key)
            let state = held ?? self.makeState(recordNow)
            var retry: UInt64 = 0
            if case .limited(let wait) = state.peek(1, nowNanos: recordNow) { retry = wait }
            var bytesAvailable: Int? = nil
            if let byteTable = tables.bytes, let burst = self.byteBurst {
                if var bucket = byteTable.state(for: key) {
                    bytesAvailable = bucket.available(nowNanos: now.monotonicNanos)
                } else {
                    bytesAvailable = burst
                }
            }
            return LimiterKeyState(
                held: held != nil,
                usage: state.usage(nowNanos: recordNow),
                retryAfterNanos: retry,
                bytesAvailable: bytesAvailable
            )
        }
    }

    func evictIdle(now: LimiterNow) -> Int {
        self.tables.withLock { tables in
            let dropped = tables.records.evictIdle(nowNanos: now.nanos(self.clock))
            _ = tables.bytes?.evictIdle(nowNanos: now.monotonicNanos)
            return dropped
        }
    }

    func entries() -> [(key: String, state: State)] {
        self.tables.withLock { $0.records.entries }
    }

    func restore(key: String, state: State, now: LimiterNow) -> Bool {
        self.tables.withLock { $0.records.restore(key, state: state, nowNanos: now.nanos(self.clock)) }
    }
}
