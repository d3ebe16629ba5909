/// The distinct keys of a batch of records for one limiter, each with how many of the records count under it
/// (`add`), and, after `LimiterSet.Handle.check(_:now:)`, how many of those the limiter allowed.
///
/// A publish request's records are all judged at one instant, so checking a key once for all its records is the
/// same as checking it record by record (see `Handle.check(_:now:)`): one lock and one table lookup per key instead
/// of per record. Keys are grouped by their bytes in an open-addressing table of the batch's size; storage is
/// allocated once per batch, nothing per record.
package struct KeyCounts {
    /// The keys' bytes, one after another; key `n` ends at `ends[n]`.
    private var storage: [UInt8] = []
    private var ends: [Int] = []
    /// A cheap hash of each key's bytes (`quickHash`), for grouping only.
    private var quickHashes: [UInt64] = []
    /// Each key's `LimiterSet.keyHash(utf8:)`, for the limiter's table.
    package private(set) var hashes: [Int] = []
    /// How many records count under each key.
    package private(set) var records: [Int] = []
    /// The key of each record added, in the order added.
    package private(set) var sequence: [Int32] = []
    /// After a check: how many of each key's records (the first ones, in the order added) were allowed.
    package internal(set) var allowed: [Int] = []
    /// After a check: the outcome for each key's records past `allowed` (`.allowed` when there are none).
    package internal(set) var refusals: [LimiterOutcome] = []
    /// After a check: whether some key had records refused (`allowed` below its `records`). Usually not, and then
    /// there is nothing to read in `allowed` and `refusals`.
    package internal(set) var someRefused = false
    /// Open addressing by `quickHashes`: key index + 1, 0 for an empty slot. Twice as many slots as keys, at least.
    private var slots: [Int32] = []
    /// The key added last.
    private var last: Int? = nil

    /// No keys; room for the keys of `records` records without growing.
    package init(records: Int) {
        var size = 8
        while size < 2 * records { size <<= 1 }
        self.slots = [Int32](repeating: 0, count: size)
        self.ends.reserveCapacity(records)
        self.quickHashes.reserveCapacity(records)
        self.hashes.reserveCapacity(records)
        self.records.reserveCapacity(records)
        self.sequence.reserveCapacity(records)
    }

    /// The number of distinct keys.
    package var count: Int { self.ends.count }

    /// Counts one more record under `key`; returns the key's index.
    package mutating func add(_ key: UnsafeRawBufferPointer) -> Int {
        // The same key as the record before (one consent scope for a whole request): no hash, no probe.
        if let last = self.last, self.withKey(last, { sameBytes($0, key) }) {
            self.counted(last)
            return last
        }
        let quick = Self.quickHash(key)
        if 2 * (self.count + 1) > self.slots.count { self.grow() }
        let mask = self.slots.count - 1
        var slot = Int(truncatingIfNeeded: quick) & mask
        while true {
            let entry = Int(self.slots[slot])
            if entry == 0 { break }
            let index = entry - 1
            if self.quickHashes[index] == quick && self.withKey(index, { sameBytes($0, key) }) {
                self.counted(index)
                self.last = index
                return index
            }
            slot = (slot + 1) & mask
        }
        let index = self.count
        self.storage.append(contentsOf: key)
        self.ends.append(self.storage.count)
        self.quickHashes.append(quick)
        self.hashes.append(LimiterSet.keyHash(utf8: key))
        self.records.append(0)
        self.slots[slot] = Int32(index + 1)
        self.last = index
        self.counted(index)
        return index
    }

    /// Counts one more record under key `index` (one `add` returned), as `add` with that key's bytes would.
    package mutating func addAgain(_ index: Int) {
        precondition(index >= 0 && index < self.count, "no key \(index)")
        self.counted(index)
        self.last = index
    }

    private mutating func counted(_ index: Int) {
        self.records[index] += 1
        self.sequence.append(Int32(index))
    }

    /// The keys in the order of their `nth[key]`-th record (counted from 1) in `sequence`; keys with `nth` 0 are
    /// left out. With `records`: the order of each key's last record.
    package func keys(inOrderOfRecord nth: [Int]) -> [Int] {
        var seen = [Int](repeating: 0, count: self.count)
        var keys: [Int] = []
        keys.reserveCapacity(self.count)
        for key in self.sequence {
            let index = Int(key)
            seen[index] += 1
            if seen[index] == nth[index] { keys.append(index) }
        }
        return keys
    }

    /// A process-wide random seed for `quickHash`, so that no producer can choose keys that all land in one slot.
    private static let seed = UInt64.random(in: .min ... .max)

    /// A cheap hash of `key`'s bytes, eight at a time, for grouping only (the limiter's table has its own).
    private static func quickHash(_ key: UnsafeRawBufferPointer) -> UInt64 {
        var hash = Self.seed ^ UInt64(key.count)
        var offset = 0
        while offset + 8 <= key.count {
            hash = (hash ^ key.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) &* 0xff51_afd7_ed55_8ccd
            hash ^= hash >> 32
            offset += 8
        }
        var tail: UInt64 = 0
        var shift: UInt64 = 0
        while offset < key.count {
            tail |= UInt64(key[offset]) << shift
            shift += 8
            offset += 1
        }
        hash = (hash ^ tail) &* 0xc4ce_b9fe_1a85_ec53
        return hash ^ (hash >> 29)
    }

    /// Calls `body` with key `index`'s bytes (valid only for the call).
    package func withKey<Result>(_ index: Int, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        let start = index == 0 ? 0 : self.ends[index - 1]
        return self.storage.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start..<self.ends[index]])) }
    }

    private mutating func grow() {
        self.slots = [Int32](repeating: 0, count: self.slots.count * 2)
        let mask = self.slots.count - 1
        for index in 0..<self.count {
            let quick = self.quickHashes[index]
            var slot = Int(truncatingIfNeeded: quick) & mask
            while self.slots[slot] != 0 { slot = (slot + 1) & mask }
            self.slots[slot] = Int32(index + 1)
        }
    }
}

/// Whether `a` and `b` hold the same bytes (eight at a time, then the rest).
func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
    guard a.count == b.count else { return false }
    var offset = 0
    while offset + 8 <= a.count {
        guard a.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            == b.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        else { return false }
        offset += 8
    }
    while offset < a.count {
        guard a[offset] == b[offset] else { return false }
        offset += 1
    }
    return true
}
