// The two structures behind `DedupeIndex`, laid out for an index of millions of keys, where each random memory
// access is a cache miss (docs/STORAGE.md "Dedupe index", docs/BENCHMARKS.md): a hash table from digest to
// insertion sequence whose probes touch one or two cache lines, and the entries themselves in insertion order,
// in fixed-size chunks, so that expiry, eviction and snapshots walk memory in order and a snapshot can hold the
// entries without copying them.

import CPrefetch

/// One key of a dedupe index, in insertion order: its digest, its entry, whether it is still the key's current
/// entry, and whether it is only reserved. 40 bytes (the digest and the entry's fields are stored flat so the flags
/// share the padding).
struct DedupeItem: Sendable {
    var first: UInt64
    var second: UInt64
    /// The entry's offset; while `pending`, the reservation's tag.
    var offset: Int64
    /// The entry's expiry; `Int64.max` while `pending` (a reserved key never expires).
    var expiresAtMillis: Int64
    var location: DedupeLocation
    /// False once the key was dropped (expired, evicted, its reservation abandoned) or re-inserted under a later
    /// sequence: the item is then skipped by snapshots and popped without touching the table.
    var current: Bool
    /// Reserved (``DedupeIndex/reserve(digest:nowMillis:tag:)``): the key's record is being appended and has no
    /// entry yet. Lookups and snapshots skip it; only a current item is pending.
    var pending: Bool

    init(digest: DedupeDigest, entry: DedupeEntry) {
        self.first = digest.first
        self.second = digest.second
        self.offset = entry.offset
        self.expiresAtMillis = entry.expiresAtMillis
        self.location = entry.location
        self.current = true
        self.pending = false
    }

    /// A reservation of `digest` under `tag`.
    init(reserving digest: DedupeDigest, tag: UInt64) {
        self.first = digest.first
        self.second = digest.second
        self.offset = Int64(bitPattern: tag)
        self.expiresAtMillis = .max
        self.location = .topic
        self.current = true
        self.pending = true
    }

    /// The tag of a pending item.
    var tag: UInt64 { UInt64(bitPattern: self.offset) }

    var digest: DedupeDigest { DedupeDigest(first: self.first, second: self.second) }

    var entry: DedupeEntry {
        DedupeEntry(offset: self.offset, location: self.location, expiresAtMillis: self.expiresAtMillis)
    }
}

/// Digest → a 64-bit value (the index: the key's insertion sequence; the server's dedupe gate: the ticket of the
/// key's append in flight), in 64 segments chosen by the top bits of the digest's second word, each an
/// open-addressing table (``DigestTableSegment``) that grows on its own.
///
/// Segments, because a table grows by doubling: allocating and zeroing the new slots and moving every key into
/// them, all at once under the caller's lock. With one table of millions of keys (about 3 M in the policy-overhead
/// benchmark: 8 M slots, 192 MB) the topic's publishers stopped for up to 0.6–0.8 s; a segment holds a sixty-fourth
/// of the keys, so each doubling moves a sixty-fourth, and the segments double at different moments.
package struct DigestTable: Sendable {
    /// log2 of the number of segments.
    static let segmentBits = 6
    private var segments: [DigestTableSegment]
    /// Keys held.
    package private(set) var count = 0

    /// Slots allocated in all segments (24 bytes each).
    package var slotCount: Int { self.segments.reduce(0) { $0 + $1.slotCount } }

    /// An empty table with room for `capacity` keys before it grows (spread evenly, as uniform digests are); with
    /// 0, a segment allocates its first 16 slots with its first key.
    package init(capacity: Int = 0) {
        let segments = 1 << Self.segmentBits
        self.segments = Array(
            repeating: DigestTableSegment(capacity: (capacity + segments - 1) / segments), count: segments
        )
    }

    /// The segment of `digest`: the top bits of its second word (its home slot in the segment comes from the low
    /// bits of its first word).
    @inline(__always)
    private static func segment(_ digest: DedupeDigest) -> Int {
        Int(truncatingIfNeeded: digest.second >> UInt64(64 - Self.segmentBits))
    }

    /// The value `digest` maps to, or nil.
    package func value(of digest: DedupeDigest) -> UInt64? {
        self.segments[Self.segment(digest)].value(of: digest)
    }

    /// Starts loading `digest`'s home slot into the cache, so that a probe soon after finds it there. Issued for
    /// every key of a request before the first probe, the misses overlap instead of each probe waiting for its own.
    package func prefetch(_ digest: DedupeDigest) {
        self.segments[Self.segment(digest)].prefetch(digest)
    }

    /// Maps `digest` to `value` (replacing any mapping it had); `value` must be below `UInt64.max`.
    package mutating func set(_ digest: DedupeDigest, to value: UInt64) {
        if self.segments[Self.segment(digest)].set(digest, to: value) { self.count += 1 }
    }

    /// Removes `digest`'s mapping; returns whether there was one.
    @discardableResult
    package mutating func remove(_ digest: DedupeDigest) -> Bool {
        guard self.segments[Self.segment(digest)].remove(digest) else { return false }
        self.count -= 1
        return true
    }
}

/// One segment of a ``DigestTable``: open addressing with linear probing over 24-byte slots, deletion by backward
/// shift (no tombstones), at most 5/8 full.
///
/// The home slot of a digest is its first word masked to the segment's size, with no further hashing: a digest is
/// the output of SipHash keyed with a secret (``DedupeHashKey``), so its words are already uniform and no
/// producer can choose keys that crowd one region of the table — the reason the keyed digest exists (docs/
/// STORAGE.md "Collision bound"). Swift's `Dictionary` would hash the digest again with its own SipHash-1-3 and
/// keep keys, values and occupancy in three separate arrays (three cache misses per probe in a large table).
struct DigestTableSegment: Sendable {
    private struct Slot {
        var first: UInt64
        var second: UInt64
        /// The value + 1; 0 marks an empty slot.
        var tag: UInt64
    }

    private var slots: [Slot]
    private var mask: Int
    /// Keys held.
    private(set) var count = 0

    /// An empty segment with room for `capacity` keys before it grows; with 0, no slots until the first key (a
    /// table's segments cost nothing until they hold keys: most topics' tables stay small or empty).
    init(capacity: Int = 0) {
        guard capacity > 0 else {
            self.slots = []
            self.mask = 0
            return
        }
        var size = 16
        while size * 5 / 8 < capacity { size *= 2 }
        self.slots = Array(repeating: Slot(first: 0, second: 0, tag: 0), count: size)
        self.mask = size - 1
    }

    /// Slots allocated.
    var slotCount: Int { self.slots.count }

    @inline(__always)
    private func home(_ first: UInt64) -> Int { Int(truncatingIfNeeded: first) & self.mask }

    /// The slot holding `digest`, or nil.
    private func slotIndex(of digest: DedupeDigest) -> Int? {
        guard !self.slots.isEmpty else { return nil }
        return self.slots.withUnsafeBufferPointer { slots in
            var i = self.home(digest.first)
            while true {
                let slot = slots[i]
                if slot.tag == 0 { return nil }
                if slot.first == digest.first && slot.second == digest.second { return i }
                i = (i + 1) & self.mask
            }
        }
    }

    /// The value `digest` maps to, or nil.
    func value(of digest: DedupeDigest) -> UInt64? {
        guard let i = self.slotIndex(of: digest) else { return nil }
        return self.slots[i].tag - 1
    }

    /// Starts loading `digest`'s home slot into the cache, so that a probe soon after finds it there. Issued for
    /// every key of a request before the first probe, the misses overlap instead of each probe waiting for its own.
    func prefetch(_ digest: DedupeDigest) {
        guard !self.slots.isEmpty else { return }
        self.slots.withUnsafeBufferPointer { brokerd_prefetch($0.baseAddress! + self.home(digest.first)) }
    }

    /// Maps `digest` to `value` (replacing any mapping it had); `value` must be below `UInt64.max`. Returns
    /// whether the digest was new.
    @discardableResult
    mutating func set(_ digest: DedupeDigest, to value: UInt64) -> Bool {
        if (self.count + 1) * 8 > self.slots.count * 5 { self.grow() }
        precondition(value < UInt64.max, "a digest table value must be below UInt64.max")
        let tag = value + 1
        let mask = self.mask
        let added = self.slots.withUnsafeMutableBufferPointer { slots in
            var i = Int(truncatingIfNeeded: digest.first) & mask
            while slots[i].tag != 0 {
                if slots[i].first == digest.first && slots[i].second == digest.second {
                    slots[i].tag = tag
                    return false
                }
                i = (i + 1) & mask
            }
            slots[i] = Slot(first: digest.first, second: digest.second, tag: tag)
            return true
        }
        if added { self.count += 1 }
        return added
    }

    /// Removes `digest`'s mapping; returns whether there was one.
    @discardableResult
    mutating func remove(_ digest: DedupeDigest) -> Bool {
        guard var hole = self.slotIndex(of: digest) else { return false }
        let mask = self.mask
        self.slots.withUnsafeMutableBufferPointer { slots in
            // Backward shift: move each later slot of the run back into the hole unless its home lies cyclically
            // in (hole, j], where it would become unreachable from its home if moved before it.
            var j = hole
            while true {
                j = (j + 1) & mask
                if slots[j].tag == 0 { break }
                let home = Int(truncatingIfNeeded: slots[j].first) & mask
                let stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j)
                if stays { continue }
                slots[hole] = slots[j]
                hole = j
            }
            slots[hole].tag = 0
        }
        self.count -= 1
        return true
    }

    private mutating func grow() {
        let old = self.slots
        let size = max(old.count * 2, 16)
        self.slots = Array(repeating: Slot(first: 0, second: 0, tag: 0), count: size)
        self.mask = size - 1
        let mask = self.mask
        self.slots.withUnsafeMutableBufferPointer { slots in
            for slot in old where slot.tag != 0 {
                var i = Int(truncatingIfNeeded: slot.first) & mask
                while slots[i].tag != 0 { i = (i + 1) & mask }
                slots[i] = slot
            }
        }
    }
}

/// The items of a dedupe index in insertion order, addressed by sequence number: a FIFO of fixed-size chunks.
///
/// Appends go to the last chunk; pops advance a head in the first and drop it once consumed. A copy shares the
/// chunks (each an `Array`, copied on write), so taking one for a snapshot is O(chunks) and a later append copies
/// at most the last chunk (``chunkSize`` items), not the index.
struct DedupeItems: Sendable {
    /// Items per chunk (160 KiB of 40-byte items).
    static let chunkSize = 4096

    private var chunks: [[DedupeItem]] = []
    /// Items of `chunks[0]` already popped.
    private var head = 0
    /// The sequence of `chunks[0][0]`.
    private var base: UInt64 = 0
    /// The sequence the next append gets.
    private(set) var nextSequence: UInt64 = 0

    /// Items held, current or not.
    var count: Int { Int(self.nextSequence - self.base) - self.head }

    /// The sequence of the oldest item, if any.
    var firstSequence: UInt64? { self.count > 0 ? self.base + UInt64(self.head) : nil }

    /// The oldest item, if any.
    var first: DedupeItem? { self.count > 0 ? self.chunks[0][self.head] : nil }

    /// Appends `item`; returns its sequence.
    mutating func append(_ item: DedupeItem) -> UInt64 {
        if self.chunks.isEmpty || self.chunks[self.chunks.count - 1].count == Self.chunkSize {
            var chunk: [DedupeItem] = []
            chunk.reserveCapacity(Self.chunkSize)
            self.chunks.append(chunk)
        }
        self.chunks[self.chunks.count - 1].append(item)
        let sequence = self.nextSequence
        self.nextSequence += 1
        return sequence
    }

    /// Removes the oldest item.
    mutating func removeFirst() {
        precondition(self.count > 0, "removeFirst on empty dedupe items")
        self.head += 1
        if self.head == Self.chunkSize {
            self.chunks.removeFirst()
            self.head = 0
            self.base += UInt64(Self.chunkSize)
        }
    }

    private func position(_ sequence: UInt64) -> (chunk: Int, index: Int) {
        precondition(sequence >= self.base + UInt64(self.head) && sequence < self.nextSequence, "stale sequence")
        let offset = Int(sequence - self.base)
        return (offset / Self.chunkSize, offset % Self.chunkSize)
    }

    /// The item of `sequence`, which must be held.
    subscript(sequence: UInt64) -> DedupeItem {
        get {
            let at = self.position(sequence)
            return self.chunks[at.chunk][at.index]
        }
        set {
            let at = self.position(sequence)
            self.chunks[at.chunk][at.index] = newValue
        }
    }

    /// Calls `body` with the items held, oldest first, current or not, until it returns false.
    func forEachOldest(_ body: (DedupeItem) -> Bool) {
        for c in self.chunks.indices {
            let more = self.chunks[c].withUnsafeBufferPointer { chunk in
                for item in chunk[(c == 0 ? self.head : 0)...] where !body(item) { return false }
                return true
            }
            if !more { return }
        }
    }

    /// Calls `body` with every item held, oldest first, current or not.
    func forEach(_ body: (DedupeItem) throws -> Void) rethrows {
        for c in self.chunks.indices {
            try self.chunks[c].withUnsafeBufferPointer { chunk in
                for item in chunk[(c == 0 ? self.head : 0)...] { try body(item) }
            }
        }
    }
}
