import NIOCore

/// Where the record that first carried a dedupe key was stored.
package enum DedupeLocation: UInt8, Equatable, Sendable {
    /// In the topic itself, at the entry's offset.
    case topic = 0
    /// In `__quarantine`, at the entry's offset.
    case quarantine = 1
}

/// What a dedupe index knows about one key.
package struct DedupeEntry: Equatable, Sendable {
    /// Offset of the original record (in the topic or in `__quarantine`, per ``location``).
    package var offset: Int64
    /// Which log ``offset`` is in.
    package var location: DedupeLocation
    /// The entry is no longer a duplicate guard at and after this time (ms since the epoch).
    package var expiresAtMillis: Int64

    /// Creates an entry.
    package init(offset: Int64, location: DedupeLocation, expiresAtMillis: Int64) {
        self.offset = offset
        self.location = location
        self.expiresAtMillis = expiresAtMillis
    }
}

/// An entry dropped before its window ended because the index was full. The caller must log it and count it
/// (a metric): from now on a record with that key is no longer recognised as a duplicate.
package struct DedupeEviction: Equatable, Sendable {
    /// Digest of the evicted key (the key itself is not kept).
    package var digest: DedupeDigest
    /// The evicted entry.
    package var entry: DedupeEntry
    /// How much of its window the entry still had, in ms (> 0).
    package var remainingMillis: Int64
}

/// A topic's dedupe keys: digest → ``DedupeEntry``, with window expiry and a bound on the number of keys.
///
/// Pure (no I/O, time is an input). Keys are 1...256 bytes and are kept only as a 128-bit keyed digest
/// (SipHash-2-4-128, see ``DedupeHashKey`` and docs/STORAGE.md for the collision bound and memory per key).
///
/// * **Window.** An entry inserted at `now` expires at `now + windowMillis`: a lookup at exactly that time no
///   longer finds it. Expired entries are dropped lazily, oldest insertion first, by every mutating call — O(1)
///   amortised. An entry's expiry is fixed when it is first inserted; re-inserting a live key keeps it.
/// * **Bound.** At most `maxKeys` entries. Inserting a new key into a full index first evicts the **oldest**
///   entry (by insertion), even though its window has not ended; the insert returns it as a ``DedupeEviction``
///   and ``evictedBeforeExpiry`` counts it. Nothing is dropped silently.
/// * **Not thread-safe** (a value type): keep it behind the caller's lock.
package struct DedupeIndex: Sendable {
    /// Longest dedupe key in bytes.
    package static let maxKeyBytes = 256
    /// The record header that carries a record's dedupe key.
    package static let headerName = "dedupe-key"

    /// How long a key guards against duplicates, in ms.
    package let windowMillis: Int64
    /// Most entries kept.
    package let maxKeys: Int
    /// The secret key of the digests.
    package let hashKey: DedupeHashKey
    /// Entries evicted by the bound before their window ended, since the index was created.
    package private(set) var evictedBeforeExpiry: Int = 0
    /// Entries dropped because their window ended, since the index was created.
    package private(set) var expired: Int = 0

    /// Digest → sequence of the key's current item in ``items``.
    private var table: DigestTable
    /// Every key inserted and not popped yet, oldest first; an item is `current` while the table maps its digest
    /// to it.
    private var items = DedupeItems()
    /// The front item last found live by `removeExpired`, and its expiry: until then nothing can expire, so the
    /// next calls answer without looking. Exact: the front changes only by being popped (a new sequence), and its
    /// key leaves only by being popped too (`insert` supersedes only items already expired, which the front's is
    /// not), except a reservation's, whose commit or abandonment clears this.
    private var liveFront: (sequence: UInt64, expiresAtMillis: Int64)? = nil
    /// Keys reserved and not yet committed or abandoned (``reserve(digest:nowMillis:tag:)``): in the table, not
    /// counted as entries.
    private var pendingCount = 0

    /// Creates an empty index.
    /// - Parameters:
    ///   - windowMillis: how long a key guards against duplicates (at least 1 ms).
    ///   - maxKeys: most keys kept (1...UInt32.max, the snapshot's count field).
    ///   - hashKey: the digest key; a fresh random one unless restoring from a snapshot.
    package init(windowMillis: Int64, maxKeys: Int, hashKey: DedupeHashKey = .random()) throws(LogStoreError) {
        guard windowMillis >= 1 else {
            throw LogStoreError(.invalidArgument, "dedupe window \(windowMillis) ms must be at least 1 ms")
        }
        guard maxKeys >= 1, maxKeys <= Int(UInt32.max) else {
            throw LogStoreError(.invalidArgument, "dedupe maxKeys \(maxKeys) must be in 1...\(UInt32.max)")
        }
        self.windowMillis = windowMillis
        self.maxKeys = maxKeys
        self.hashKey = hashKey
        self.table = DigestTable()
    }

    /// Number of entries held, including expired ones not dropped yet (call ``removeExpired(nowMillis:)`` first
    /// for an exact count of live ones); reserved keys are not entries.
    package var count: Int { self.table.count - self.pendingCount }

    // MARK: Digests

    /// The digest of `key` under this index's hash key; throws `.invalidArgument` unless it has 1...256 bytes.
    package func digest(_ key: ByteBuffer) throws(LogStoreError) -> DedupeDigest {
        try Self.validate(keyLength: key.readableBytes)
        return key.withUnsafeReadableBytes { SipHash128.digest($0, key: self.hashKey) }
    }

    /// The digest of `key` under this index's hash key; throws `.invalidArgument` unless it has 1...256 bytes.
    package func digest(_ key: [UInt8]) throws(LogStoreError) -> DedupeDigest {
        try Self.validate(keyLength: key.count)
        return SipHash128.digest(key, key: self.hashKey)
    }

    private static func validate(keyLength: Int) throws(LogStoreError) {
        guard keyLength >= 1, keyLength <= Self.maxKeyBytes else {
            throw LogStoreError(
                .invalidArgument,
                "dedupe key of \(keyLength) bytes; a dedupe key has 1...\(Self.maxKeyBytes) bytes"
            )
        }
    }

    // MARK: Lookup and insert

    /// The sequence of `digest`'s current item, if the table holds it. The table keeps only a digest's first word
    /// (``DigestTable``): a slot whose first word matches is `digest`'s when its item has the same second word.
    @inline(__always)
    private func sequence(of digest: DedupeDigest) -> UInt64? {
        self.table.value(of: digest) { self.items[$0].second == digest.second }
    }

    /// The live entry of `key`, or nil when it is unknown or its window has ended at `nowMillis`.
    package mutating func lookup(_ key: ByteBuffer, nowMillis: Int64) throws(LogStoreError) -> DedupeEntry? {
        self.lookup(digest: try self.digest(key), nowMillis: nowMillis)
    }

    /// The live entry of `digest`, or nil when it is unknown or its window has ended at `nowMillis`.
    package mutating func lookup(digest: DedupeDigest, nowMillis: Int64) -> DedupeEntry? {
        self.removeExpired(nowMillis: nowMillis)
        guard let sequence = self.sequence(of: digest) else { return nil }
        let item = self.items[sequence]
        return !item.pending && item.expiresAtMillis > nowMillis ? item.entry : nil
    }

    /// Records that the record with `key` was stored at `offset` in `location` at `nowMillis`; the entry expires at
    /// `nowMillis + windowMillis`. See ``insert(digest:entry:nowMillis:)`` for a key that is already live and for
    /// the eviction this may cause.
    package mutating func insert(
        _ key: ByteBuffer,
        offset: Int64,
        location: DedupeLocation,
        nowMillis: Int64
    ) throws(LogStoreError) -> DedupeEviction? {
        let digest = try self.digest(key)
        let entry = DedupeEntry(
            offset: offset,
            location: location,
            expiresAtMillis: nowMillis.addingReportingOverflow(self.windowMillis).overflow
                ? Int64.max : nowMillis + self.windowMillis
        )
        return self.insert(digest: digest, entry: entry, nowMillis: nowMillis)
    }

    /// Records `entry` (with its own expiry) for `key`; see ``insert(digest:entry:nowMillis:)``.
    package mutating func insert(_ key: ByteBuffer, entry: DedupeEntry, nowMillis: Int64) throws(LogStoreError)
        -> DedupeEviction?
    {
        self.insert(digest: try self.digest(key), entry: entry, nowMillis: nowMillis)
    }

    /// Adds an entry with an explicit expiry (restoring a snapshot, rebuilding from a log where the expiry comes
    /// from the record's time).
    ///
    /// * An entry already expired at `nowMillis` is not stored; returns nil.
    /// * If `digest` is live, its expiry and age are kept and its offset and location are replaced — except that a
    ///   `.quarantine` entry never replaces a `.topic` one (a replayed record enters the topic after its quarantine
    ///   entry, so the topic location is the newer fact whatever order a rebuild sees them in).
    /// * Otherwise, when the index is full, the oldest entry is evicted first and returned (and counted in
    ///   ``evictedBeforeExpiry``).
    /// * A reservation of `digest` (``reserve(digest:nowMillis:tag:)``) is superseded: the key holds this entry,
    ///   and the reservation's commit is an insert of a live key.
    package mutating func insert(digest: DedupeDigest, entry: DedupeEntry, nowMillis: Int64) -> DedupeEviction? {
        self.insertReporting(digest: digest, entry: entry, nowMillis: nowMillis).eviction
    }

    /// ``insert(digest:entry:nowMillis:)``, also giving the entry the index holds for `digest` afterwards: what
    /// ``lookup(digest:nowMillis:)`` would return right after it (the dedupe gate reports it to waiting records),
    /// without a second lookup.
    package mutating func insertReporting(
        digest: DedupeDigest, entry: DedupeEntry, nowMillis: Int64
    ) -> (eviction: DedupeEviction?, held: DedupeEntry?) {
        self.removeExpired(nowMillis: nowMillis)
        if let sequence = self.sequence(of: digest) {
            let item = self.items[sequence]
            if item.pending {
                self.dropReservation(sequence, digest: digest)
            } else if item.expiresAtMillis > nowMillis {
                if !(item.location == .topic && entry.location == .quarantine) {
                    self.items[sequence].offset = entry.offset
                    self.items[sequence].location = entry.location
                }
                return (nil, self.items[sequence].entry)
            } else {
                self.dropExpired(sequence, digest: digest)
            }
        }
        guard entry.expiresAtMillis > nowMillis else { return (nil, nil) }
        let eviction = self.makeRoom(nowMillis: nowMillis)
        let sequence = self.items.append(DedupeItem(digest: digest, entry: entry))
        self.table.insert(digest, value: sequence)
        return (eviction, entry)
    }

    /// Evicts the oldest entries (returning the last one evicted) until one more fits under ``maxKeys``. It stops at
    /// a reservation at the front: a key being appended is not evicted, so the index can hold more than `maxKeys`
    /// entries by the keys committed while older ones were still being appended.
    private mutating func makeRoom(nowMillis: Int64) -> DedupeEviction? {
        var eviction: DedupeEviction?
        while self.count >= self.maxKeys, let oldest = self.items.first, !oldest.pending {
            let sequence = self.items.firstSequence!
            self.items.removeFirst()
            guard oldest.current else { continue }
            self.table.remove(oldest.digest, value: sequence)
            if oldest.expiresAtMillis > nowMillis {
                self.evictedBeforeExpiry += 1
                eviction = DedupeEviction(
                    digest: oldest.digest,
                    entry: oldest.entry,
                    remainingMillis: oldest.expiresAtMillis - nowMillis
                )
            } else {
                self.expired += 1
            }
        }
        return eviction
    }

    // MARK: Reservations

    /// What ``reserve(digest:nowMillis:tag:)`` found.
    package enum Reservation: Equatable, Sendable {
        /// The key is live: a record carrying it is a duplicate of this entry.
        case live(DedupeEntry)
        /// The key is reserved already, under this tag: its record is being appended.
        case pending(tag: UInt64)
        /// The key was absent and is now reserved under the caller's tag at this sequence: call
        /// ``commit(reserved:tag:digest:entry:nowMillis:)`` or ``abandon(reserved:tag:digest:)`` with both.
        case reserved(sequence: UInt64)
    }

    /// Looks `digest` up and, when it is absent, reserves it under `tag` in the same probe: the key's record is about
    /// to be appended. A reserved key is in the table but is not an entry (lookups, ``count`` and snapshots skip
    /// it), never expires and is not evicted; its commit later writes its entry in place, without probing the
    /// table again (with millions of keys each probe is a cache miss). Drops expired entries first, like ``insert``.
    package mutating func reserve(digest: DedupeDigest, nowMillis: Int64, tag: UInt64) -> Reservation {
        self.removeExpired(nowMillis: nowMillis)
        if let sequence = self.sequence(of: digest) {
            let item = self.items[sequence]
            if item.pending { return .pending(tag: item.tag) }
            if item.expiresAtMillis > nowMillis { return .live(item.entry) }
            self.dropExpired(sequence, digest: digest)
        }
        let sequence = self.items.append(DedupeItem(reserving: digest, tag: tag))
        self.table.insert(digest, value: sequence)
        self.pendingCount += 1
        return .reserved(sequence: sequence)
    }

    /// The record of the reservation at `sequence` under `tag` was stored: the key now holds `entry` (its
    /// expiry included), as ``insertReporting(digest:entry:nowMillis:)`` would add it, evicting the oldest entry
    /// when the index is full. When the reservation is no longer there (an insert superseded it) this is that
    /// insert. Returns the eviction and the entry the key holds afterwards.
    package mutating func commit(
        reserved sequence: UInt64, tag: UInt64, digest: DedupeDigest, entry: DedupeEntry, nowMillis: Int64
    ) -> (eviction: DedupeEviction?, held: DedupeEntry?) {
        guard self.isReserved(sequence, tag: tag) else {
            return self.insertReporting(digest: digest, entry: entry, nowMillis: nowMillis)
        }
        self.removeExpired(nowMillis: nowMillis)
        guard entry.expiresAtMillis > nowMillis else {
            // Its window ended already (a record time far back): not stored, as insert does.
            self.dropReservation(sequence, digest: digest)
            return (nil, nil)
        }
        // Room first, while the reservation is not counted as an entry (and stops the eviction at itself).
        let eviction = self.makeRoom(nowMillis: nowMillis)
        self.endReservation(sequence)
        self.items[sequence] = DedupeItem(digest: digest, entry: entry)
        return (eviction, entry)
    }

    /// The record of the reservation at `sequence` under `tag` was not stored: the key is absent again. Nothing
    /// happens when the reservation is no longer there.
    package mutating func abandon(reserved sequence: UInt64, tag: UInt64, digest: DedupeDigest) {
        guard self.isReserved(sequence, tag: tag) else { return }
        self.dropReservation(sequence, digest: digest)
    }

    private func isReserved(_ sequence: UInt64, tag: UInt64) -> Bool {
        guard let first = self.items.firstSequence, sequence >= first, sequence < self.items.nextSequence else {
            return false
        }
        let item = self.items[sequence]
        return item.pending && item.tag == tag
    }

    /// The reservation at `sequence` is no longer pending; the caller makes its item an entry or drops it. (Its
    /// item may be the front `removeExpired` found live: it is not, or no longer with that expiry.)
    private mutating func endReservation(_ sequence: UInt64) {
        self.pendingCount -= 1
        if self.liveFront?.sequence == sequence { self.liveFront = nil }
    }

    /// Removes the reservation at `sequence` (its item stays, not current, until popped).
    private mutating func dropReservation(_ sequence: UInt64, digest: DedupeDigest) {
        self.endReservation(sequence)
        self.items[sequence].drop()
        self.table.remove(digest, value: sequence)
    }

    /// Drops the entry at `sequence`, expired but not dropped yet because its item is not at the front (its item
    /// stays, not current, until popped).
    private mutating func dropExpired(_ sequence: UInt64, digest: DedupeDigest) {
        self.items[sequence].drop()
        self.table.remove(digest, value: sequence)
        self.expired += 1
    }

    /// Moves a key's record (a quarantined record replayed into its topic): replaces offset and location, keeps
    /// the expiry. Returns the updated entry, or nil when the key is not held (unknown, expired and dropped, or only
    /// reserved).
    package mutating func update(_ key: ByteBuffer, offset: Int64, location: DedupeLocation) throws(LogStoreError)
        -> DedupeEntry?
    {
        self.update(digest: try self.digest(key), offset: offset, location: location)
    }

    /// See ``update(_:offset:location:)``.
    package mutating func update(digest: DedupeDigest, offset: Int64, location: DedupeLocation) -> DedupeEntry? {
        guard let sequence = self.sequence(of: digest), !self.items[sequence].pending else { return nil }
        self.items[sequence].offset = offset
        self.items[sequence].location = location
        return self.items[sequence].entry
    }

    /// Drops entries whose window has ended, oldest insertion first, stopping at the first live one. Returns how
    /// many were dropped. (With a wall clock that stepped back, a later insertion can expire earlier; it is then
    /// dropped when it reaches the front, and lookups already treat it as absent.)
    @discardableResult
    package mutating func removeExpired(nowMillis: Int64) -> Int {
        if let live = self.liveFront, live.expiresAtMillis > nowMillis, self.items.firstSequence == live.sequence {
            return 0
        }
        var dropped = 0
        while let front = self.items.first {
            if front.current {
                guard front.expiresAtMillis <= nowMillis else {
                    self.liveFront = (self.items.firstSequence!, front.expiresAtMillis)
                    break
                }
                self.table.remove(front.digest, value: self.items.firstSequence!)
                dropped += 1
            }
            self.items.removeFirst()
        }
        self.expired += dropped
        return dropped
    }

    /// Starts loading what a lookup or insert of `digest` probes first (a cache hint, no effect on results). With
    /// millions of keys every probe is a cache miss; issuing the hints for all keys of a request before the first
    /// probe overlaps the misses.
    package func prefetch(_ digest: DedupeDigest) {
        self.table.prefetch(digest)
    }

    /// Starts loading the table slots that ``removeExpired(nowMillis:)`` at `nowMillis` will clear, for at most
    /// `limit` entries (a cache hint, like ``prefetch(_:)``): the entries are read in order from the front.
    package func prefetchExpired(nowMillis: Int64, limit: Int) {
        var left = limit
        self.items.forEachOldest { item in
            guard left > 0, item.expiresAtMillis <= nowMillis || !item.current else { return false }
            if item.current {
                self.table.prefetch(item.digest)
                left -= 1
            }
            return true
        }
    }

    /// Every entry held, oldest insertion first (what a snapshot stores; restoring in this order keeps the
    /// eviction order).
    package var entriesInInsertionOrder: [(digest: DedupeDigest, entry: DedupeEntry)] {
        var result: [(digest: DedupeDigest, entry: DedupeEntry)] = []
        result.reserveCapacity(self.table.count)
        self.entries.forEach { result.append(($0, $1)) }
        return result
    }

    /// The entries held, oldest insertion first, as a value that shares the index's storage: O(keys / 4096) to
    /// take, and the index's next change copies at most one chunk of 4096 entries. What the gate hands to a
    /// snapshot write on another thread.
    package var entries: DedupeEntries { DedupeEntries(items: self.items, count: self.count) }
}

/// A dedupe index's entries at one moment, oldest insertion first (``DedupeIndex/entries``).
package struct DedupeEntries: Sendable {
    fileprivate let items: DedupeItems
    /// Number of entries.
    package let count: Int

    /// Calls `body` with each entry's digest and entry, oldest insertion first.
    package func forEach(_ body: (DedupeDigest, DedupeEntry) throws -> Void) rethrows {
        try self.items.forEach { item in
            if item.current && !item.pending { try body(item.digest, item.entry) }
        }
    }
}
