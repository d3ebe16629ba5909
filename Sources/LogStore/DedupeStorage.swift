// The two structures behind `DedupeIndex`, laid out for an index of millions of keys, where each random memory
// access is a cache miss (docs/STORAGE.md "Dedupe index", docs/benchmarks/HISTORY.md): a hash table from digest to
// insertion sequence whose probes touch one or two cache lines, and the entries themselves in insertion order,
// in fixed-size chunks, so that expiry, eviction and snapshots walk memory in order and a snapshot can hold the
// entries without copying them.

import CFileIO
import CPrefetch
import Dispatch
import Glibc
import Locking

/// One key of a dedupe index, in insertion order: its digest, its entry, whether it is still the key's current
/// entry, and whether it is only reserved. 32 bytes: the digest's two words, the offset, and one word holding the
/// expiry (62 bits) and the item's state (2 bits).
///
/// The expiry is kept in 62 bits, -2^61 ..< 2^61 − 1 ms; `2^61 − 1` stands for `Int64.max` ("never"), and any expiry at
/// or past it is stored as never (2^61 ms after 1970 is some 73 million years away, so no record time or window
/// reaches it but the overflow to `Int64.max` the index already makes), one before -2^61 as -2^61 (long expired).
struct DedupeItem: Sendable {
    var first: UInt64
    var second: UInt64
    /// The entry's offset; while `pending`, the reservation's tag.
    var offset: Int64
    /// The state in the top 2 bits (``State``), the expiry in the low 62 (two's complement).
    private var word: UInt64

    /// What an item is: its two top bits.
    private enum State: UInt64 {
        /// No longer its key's current entry (expired, evicted, its reservation abandoned, or the key re-inserted
        /// under a later sequence): skipped by snapshots and popped without touching the table.
        case dropped = 0
        /// The current entry, in the topic.
        case topic = 1
        /// The current entry, in `__quarantine`.
        case quarantine = 2
        /// Reserved (``DedupeIndex/reserve(digest:nowMillis:tag:)``): the key's record is being appended and has no
        /// entry yet. Lookups and snapshots skip it; it never expires.
        case pending = 3

        /// The current entry's state for a record in `location`.
        init(current location: DedupeLocation) {
            self = location == .quarantine ? .quarantine : .topic
        }
    }

    private static let expiryBits: UInt64 = 62
    private static let expiryMask: UInt64 = (1 << 62) - 1
    /// The stored expiry that means `Int64.max`, the largest a 62-bit expiry holds.
    private static let never: Int64 = (1 << 61) - 1
    private static let earliest: Int64 = -(1 << 61)

    init(digest: DedupeDigest, entry: DedupeEntry) {
        self.first = digest.first
        self.second = digest.second
        self.offset = entry.offset
        self.word = Self.pack(State(current: entry.location), entry.expiresAtMillis)
    }

    /// A reservation of `digest` under `tag`.
    init(reserving digest: DedupeDigest, tag: UInt64) {
        self.first = digest.first
        self.second = digest.second
        self.offset = Int64(bitPattern: tag)
        self.word = Self.pack(.pending, .max)
    }

    private static func pack(_ state: State, _ expiresAtMillis: Int64) -> UInt64 {
        let expiry = min(max(expiresAtMillis, Self.earliest), Self.never)
        return state.rawValue << Self.expiryBits | UInt64(bitPattern: expiry) & Self.expiryMask
    }

    /// The top 2 bits; setting it keeps the expiry's bits as they are.
    private var state: State {
        get { State(rawValue: self.word >> Self.expiryBits)! }
        set { self.word = self.word & Self.expiryMask | newValue.rawValue << Self.expiryBits }
    }

    /// The entry's expiry; `Int64.max` while `pending` (a reserved key never expires).
    var expiresAtMillis: Int64 {
        // Sign-extend the low 62 bits.
        let unused = 64 - Self.expiryBits
        let expiry = Int64(bitPattern: self.word << unused) >> unused
        return expiry == Self.never ? .max : expiry
    }

    /// Where the entry's record is (`.topic` while pending or dropped); setting it on a current entry moves it.
    var location: DedupeLocation {
        get { self.state == .quarantine ? .quarantine : .topic }
        set {
            guard self.state == .topic || self.state == .quarantine else { return }
            self.state = State(current: newValue)
        }
    }

    /// False once the key was dropped (expired, evicted, its reservation abandoned) or re-inserted under a later
    /// sequence: the item is then skipped by snapshots and popped without touching the table.
    var current: Bool { self.state != .dropped }

    /// Reserved: the key's record is being appended and has no entry yet. Lookups and snapshots skip it; only a
    /// current item is pending.
    var pending: Bool { self.state == .pending }

    /// Marks the item no longer current (``current``), pending or not.
    mutating func drop() {
        self.state = .dropped
    }

    /// The tag of a pending item.
    var tag: UInt64 { UInt64(bitPattern: self.offset) }

    var digest: DedupeDigest { DedupeDigest(first: self.first, second: self.second) }

    var entry: DedupeEntry {
        DedupeEntry(offset: self.offset, location: self.location, expiresAtMillis: self.expiresAtMillis)
    }
}

/// Digest → a 64-bit value (the dedupe index: the key's insertion sequence, unique per key held), in 64 segments
/// chosen by the top bits of the digest's second word, each an open-addressing table (``DigestTableSegment``) that
/// grows on its own.
///
/// A slot holds only the digest's first word and the value (16 bytes): the second word is in the index's item at
/// that sequence, so a lookup whose first word matches asks the caller (`confirm`) whether that item's second word
/// is the digest's too, and a removal names the value it removes. With uniform 64-bit first words a lookup of a
/// new key meets a matching first word about once in 2^64 / keys lookups, so `confirm` runs for the keys that are
/// there, and the table is two thirds of the 24-byte slots it had with the whole digest: less memory to fault in
/// as it grows and more slots per cache line (docs/benchmarks/HISTORY.md, round 16).
///
/// Segments, because a table grows by doubling: allocating and zeroing the new slots and moving every key into
/// them, all at once under the caller's lock. With one table of millions of keys (about 3 M in the policy-overhead
/// benchmark: 8 M slots, 192 MB then) the topic's publishers stopped for up to 0.6–0.8 s; a segment holds a
/// sixty-fourth of the keys, so each doubling moves a sixty-fourth, and the segments double at different moments.
package struct DigestTable: Sendable {
    /// log2 of the number of segments.
    static let segmentBits = 6
    private var segments: [DigestTableSegment]
    /// Keys held.
    package private(set) var count = 0

    /// Slots allocated in all segments (16 bytes each).
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

    /// The value `digest` maps to, or nil: the first value under `digest`'s first word (and segment) for which
    /// `confirm` says the key it stands for has `digest`'s second word too.
    @inline(__always)
    package func value(of digest: DedupeDigest, confirm: (UInt64) -> Bool) -> UInt64? {
        self.segments[Self.segment(digest)].value(of: digest.first, confirm: confirm)
    }

    /// Starts loading `digest`'s home slot into the cache, so that a probe soon after finds it there. Issued for
    /// every key of a request before the first probe, the misses overlap instead of each probe waiting for its own.
    package func prefetch(_ digest: DedupeDigest) {
        self.segments[Self.segment(digest)].prefetch(digest.first)
    }

    /// Maps `digest` to `value`. `digest` must not be in the table (the index looks it up first), and `value` must
    /// be below `UInt64.max` and not held by another key.
    package mutating func insert(_ digest: DedupeDigest, value: UInt64) {
        self.segments[Self.segment(digest)].insert(digest.first, value: value)
        self.count += 1
    }

    /// Removes `digest`'s mapping to `value`; returns whether there was one.
    @discardableResult
    package mutating func remove(_ digest: DedupeDigest, value: UInt64) -> Bool {
        guard self.segments[Self.segment(digest)].remove(digest.first, value: value) else { return false }
        self.count -= 1
        return true
    }
}

/// One segment of a ``DigestTable``: open addressing with linear probing over 16-byte slots (a digest's first word
/// and its value), deletion by backward shift (no tombstones), at most 5/8 full.
///
/// The home slot of a digest is its first word masked to the segment's size, with no further hashing: a digest is
/// the output of SipHash keyed with a secret (``DedupeHashKey``), so its words are already uniform and no
/// producer can choose keys that crowd one region of the table — the reason the keyed digest exists (docs/
/// STORAGE.md "Collision bound"). Swift's `Dictionary` would hash the digest again with its own SipHash-1-3 and
/// keep keys, values and occupancy in three separate arrays (three cache misses per probe in a large table).
struct DigestTableSegment: Sendable {
    fileprivate struct Slot {
        /// The digest's first word.
        var first: UInt64
        /// The value + 1; 0 marks an empty slot.
        var tag: UInt64
    }

    /// nil until the segment's first key (or a capacity).
    private var storage: SlotStorage?
    private var mask: Int
    /// Keys held.
    private(set) var count = 0

    /// An empty segment with room for `capacity` keys before it grows; with 0, no slots until the first key (a
    /// table's segments cost nothing until they hold keys: most topics' tables stay small or empty).
    init(capacity: Int = 0) {
        guard capacity > 0 else {
            self.storage = nil
            self.mask = 0
            return
        }
        var size = 16
        while size * 5 / 8 < capacity { size *= 2 }
        self.storage = SlotStorage(count: size)
        self.mask = size - 1
    }

    /// Slots allocated.
    var slotCount: Int { self.storage?.count ?? 0 }

    @inline(__always)
    private func home(_ first: UInt64) -> Int { Int(truncatingIfNeeded: first) & self.mask }

    /// The first slot from `first`'s home that holds `first` with a value `matches` accepts, or nil (an empty slot
    /// ends the probe).
    @inline(__always)
    private func slotIndex(of first: UInt64, where matches: (UInt64) -> Bool) -> Int? {
        guard let slots = self.storage?.slots else { return nil }
        var i = self.home(first)
        while true {
            let slot = slots[i]
            if slot.tag == 0 { return nil }
            if slot.first == first && matches(slot.tag - 1) { return i }
            i = (i + 1) & self.mask
        }
    }

    /// The value of the first slot from `first`'s home that holds `first` with a value `confirm` accepts, or nil.
    @inline(__always)
    func value(of first: UInt64, confirm: (UInt64) -> Bool) -> UInt64? {
        self.slotIndex(of: first, where: confirm).map { self.storage!.slots[$0].tag - 1 }
    }

    /// Starts loading the home slot of `first` into the cache, so that a probe soon after finds it there.
    func prefetch(_ first: UInt64) {
        guard let slots = self.storage?.slots else { return }
        brokerd_prefetch(slots + self.home(first))
    }

    /// The slots, this segment's own (copied first if another copy of the segment shares them).
    private mutating func uniqueSlots() -> UnsafeMutablePointer<Slot> {
        if !isKnownUniquelyReferenced(&self.storage!) { self.storage = self.storage!.copy() }
        return self.storage!.slots
    }

    /// Puts `value` under `first` in the first empty slot from its home (the caller knows the key is absent);
    /// `value` must be below `UInt64.max`.
    mutating func insert(_ first: UInt64, value: UInt64) {
        if (self.count + 1) * 8 > self.slotCount * 5 { self.grow() }
        precondition(value < UInt64.max, "a digest table value must be below UInt64.max")
        let mask = self.mask
        let slots = self.uniqueSlots()
        var i = Int(truncatingIfNeeded: first) & mask
        while slots[i].tag != 0 { i = (i + 1) & mask }
        slots[i] = Slot(first: first, tag: value + 1)
        self.count += 1
        if self.count * 16 >= self.slotCount * 9 { self.storage!.prepareGrowth() }
    }

    /// Removes the slot holding `first` with `value`; returns whether there was one.
    @discardableResult
    mutating func remove(_ first: UInt64, value: UInt64) -> Bool {
        guard var hole = self.slotIndex(of: first, where: { $0 == value }) else { return false }
        let mask = self.mask
        let slots = self.uniqueSlots()
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
        self.count -= 1
        return true
    }

    /// Doubles the slots in place (``SlotStorage/double()``: the old slots stay where they are, only the new half
    /// is fresh memory) and moves each key whose home is now in the new half.
    ///
    /// The keys are taken in slot order from just after the first empty slot, each out of its slot and into its
    /// home under the new mask or the first empty slot after it. A key whose home stays in the old half lands
    /// between its home and its old slot (the slots before it in its run are done, its own is empty now); a key
    /// moving up lands in the new half, where only moved keys are, or, wrapping past its end, in the front run,
    /// which was taken out beforehand (it may hold keys whose probe wrapped around the old end) and is put back
    /// last. So no probe ever passes a slot that is emptied later.
    private mutating func grow() {
        guard self.storage != nil else {
            self.storage = SlotStorage(count: 16)
            self.mask = 15
            return
        }
        _ = self.uniqueSlots()
        let oldSize = self.storage!.count
        self.storage!.double()
        let slots = self.storage!.slots
        let mask = self.storage!.count - 1
        self.mask = mask
        func place(_ slot: Slot) {
            var i = Int(truncatingIfNeeded: slot.first) & mask
            while slots[i].tag != 0 { i = (i + 1) & mask }
            slots[i] = slot
        }
        var firstEmpty = 0
        while slots[firstEmpty].tag != 0 { firstEmpty += 1 }  // at most 5/8 full: there is one
        var front: [Slot] = []
        front.reserveCapacity(firstEmpty)
        for i in 0..<firstEmpty {
            front.append(slots[i])
            slots[i].tag = 0
        }
        for i in (firstEmpty + 1)..<oldSize where slots[i].tag != 0 {
            let slot = slots[i]
            slots[i].tag = 0
            place(slot)
        }
        for slot in front { place(slot) }
    }
}

/// A segment's slots: zeroed memory, doubled in place.
///
/// Below ``mappedFromSlots`` they come from `calloc` and double with `realloc`. A larger segment lives in an
/// anonymous mapping of its own (``SlotMapping``) twice its size: the upper half is address space the process has not
/// touched, so a doubling takes it (zeros, never written) and moves keys within the mapping, then doubles the mapping
/// with `mremap` (its page tables move; nothing is copied). Once the segment is 9/16 full, ``prepareGrowth()`` has a
/// background thread fault that upper half in with `madvise(MADV_POPULATE_WRITE)` (pages allocated and zeroed, their
/// contents untouched), so the doubling, which runs under the dedupe index's lock on a publisher's event loop, finds
/// the memory already there: on a VM whose host backs each new page as it is first touched, zeroing fresh pages was
/// half of a doubling's time (docs/benchmarks/HISTORY.md, round 22). (Before round 13 a doubling went into a new array
/// and unmapped the old: twice the memory touched, and up to 0.07 µs per record in `munmap`.)
///
/// `@unchecked Sendable`: the slots are mutable memory behind a class reference, so copies of a segment share
/// them; every write goes through ``DigestTableSegment``'s mutating methods, which first make the storage unique
/// (`isKnownUniquelyReferenced`, else ``copy()``), as `Array` does. A storage is therefore written only by the one
/// segment value holding it, whose own exclusivity (Swift's, and the dedupe index's lock in the server) rules out
/// a concurrent read or write, while shared storages are only read. The populating thread holds the storage's
/// ``SlotMapping``, never the storage (which would then not be unique, and be copied by the next insert).
private final class SlotStorage: @unchecked Sendable {
    /// Segments of this many slots (256 KiB) and more live in a mapping of their own.
    static let mappedFromSlots = 1 << 14
    private static let populateQueue = DispatchQueue(label: "brokerd.dedupe.populate", qos: .utility)
    fileprivate static let stride = MemoryLayout<DigestTableSegment.Slot>.stride

    private(set) var slots: UnsafeMutablePointer<DigestTableSegment.Slot>
    /// Slots (a power of two).
    private(set) var count: Int
    /// The mapping holding the slots, twice `count` of them; nil while they are `calloc`'s.
    private var mapping: SlotMapping?
    /// The `count` for which `prepareGrowth()` last asked.
    private var preparedFor = 0

    init(count: Int) {
        if count >= Self.mappedFromSlots {
            let mapping = SlotMapping(capacity: 2 * count)
            self.mapping = mapping
            self.slots = mapping.slots
        } else {
            guard let memory = calloc(count, Self.stride) else { fatalError("dedupe table: no memory for \(count) slots") }
            self.slots = memory.bindMemory(to: DigestTableSegment.Slot.self, capacity: count)
        }
        self.count = count
    }

    /// Twice the slots: the old ones where they were (the mapping moved by `mremap` when it has to move), the new
    /// half empty.
    func double() {
        if let mapping = self.mapping {
            // The upper half is zeros: never written (populating does not write). Then room for the next doubling.
            self.slots = mapping.grow()
        } else if 2 * self.count >= Self.mappedFromSlots {
            // Into a mapping of its own from here on.
            let mapping = SlotMapping(capacity: 4 * self.count)
            mapping.slots.update(from: self.slots, count: self.count)
            free(self.slots)
            self.mapping = mapping
            self.slots = mapping.slots
        } else {
            guard let memory = realloc(self.slots, 2 * self.count * Self.stride) else {
                fatalError("dedupe table: no memory for \(2 * self.count) slots")
            }
            self.slots = memory.bindMemory(to: DigestTableSegment.Slot.self, capacity: 2 * self.count)
            memset(self.slots + self.count, 0, self.count * Self.stride)
        }
        self.count *= 2
    }

    /// Has the slots the next doubling takes faulted in on a background thread, once per size (a mapped storage
    /// only; the segment calls it once it is 9/16 full).
    func prepareGrowth() {
        guard let mapping = self.mapping, self.preparedFor != self.count else { return }
        let count = self.count
        self.preparedFor = count
        Self.populateQueue.async { mapping.populateUpperHalf(whileCapacity: 2 * count) }
    }

    /// A storage of its own with the same slots.
    func copy() -> SlotStorage {
        let copy = SlotStorage(count: self.count)
        copy.slots.update(from: self.slots, count: self.count)
        return copy
    }

    deinit {
        if self.mapping == nil { free(self.slots) }  // a mapping is unmapped when its last holder lets it go
    }
}

/// An anonymous mapping of dedupe table slots: a ``SlotStorage``'s, and, while it runs, its populating task's.
///
/// `@unchecked Sendable`: where the mapping is and how large (`Region`) sit behind a lock, which `grow()` and
/// `populateUpperHalf` hold while they use them; the slots' contents are the storage's (see ``SlotStorage``), and
/// `populateUpperHalf` does not change them. Unmapped in `deinit`, so never while a populate runs on it.
private final class SlotMapping: @unchecked Sendable {
    private struct Region {
        var slots: UnsafeMutablePointer<DigestTableSegment.Slot>
        /// Slots mapped.
        var capacity: Int
    }
    private let region: Locked<Region>

    /// Where the slots are (until the next `grow()`).
    var slots: UnsafeMutablePointer<DigestTableSegment.Slot> { self.region.withLock { $0.slots } }

    init(capacity: Int) {
        let bytes = capacity * SlotStorage.stride
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let memory, memory != MAP_FAILED else { fatalError("dedupe table: no memory for \(capacity) slots") }
        let slots = memory.bindMemory(to: DigestTableSegment.Slot.self, capacity: capacity)
        self.region = Locked(Region(slots: slots, capacity: capacity))
    }

    /// Twice the capacity (`mremap`, moving the mapping if it cannot grow where it is); returns where the slots are.
    func grow() -> UnsafeMutablePointer<DigestTableSegment.Slot> {
        self.region.withLock { region in
            let bytes = region.capacity * SlotStorage.stride
            guard let moved = brokerd_mremap_grow(region.slots, bytes, 2 * bytes) else {
                fatalError("dedupe table: no memory for \(2 * region.capacity) slots")
            }
            region.slots = moved.bindMemory(to: DigestTableSegment.Slot.self, capacity: 2 * region.capacity)
            region.capacity *= 2
            return region.slots
        }
    }

    /// Faults in the upper half of the mapping (the slots the next doubling takes) as a write would, without
    /// writing them, unless the mapping no longer has `capacity` slots (it grew since: that half is in use, and the
    /// next doubling's is another). On a kernel before 5.14 `madvise` fails (EINVAL) and the doubling faults the
    /// pages in, as before.
    func populateUpperHalf(whileCapacity capacity: Int) {
        self.region.withLock { region in
            guard region.capacity == capacity else { return }
            let half = capacity / 2
            _ = brokerd_populate_write(region.slots + half, half * SlotStorage.stride)
        }
    }

    deinit {
        let region = self.region.withLock { $0 }
        munmap(region.slots, region.capacity * SlotStorage.stride)
    }
}

/// The items of a dedupe index in insertion order, addressed by sequence number: a FIFO of fixed-size chunks.
///
/// Appends go to the last chunk; pops advance a head in the first and drop it once consumed. A copy shares the
/// chunks (each an `Array`, copied on write), so taking one for a snapshot is O(chunks) and a later append copies
/// at most the last chunk (``chunkSize`` items), not the index.
struct DedupeItems: Sendable {
    /// Items per chunk (128 KiB of 32-byte items).
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
