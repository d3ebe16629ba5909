import NIOCore

extension TopicLog {
    /// Calls `body` with every record from `offset` up to `end` (default: the `endOffset` when the scan starts), in
    /// offset order, reading pages of at most `pageRecords` records / about `pageBytes` bytes. Each page costs one
    /// index lookup; inside a page batches are read sequentially, so a scan reads every batch once. Returns the
    /// offset after the last record visited (the end scanned to).
    ///
    /// Blocking file I/O: call it off the event loop. Throws `.offsetOutOfRange` when `offset` is below
    /// `startOffset` (retention deleted it) or above `endOffset`, and whatever `read` or `body` throws.
    package func scan(
        from offset: Int64,
        to end: Int64? = nil,
        pageRecords: Int = 4096,
        pageBytes: Int = 4 << 20,
        _ body: (StoredRecord) throws(LogStoreError) -> Void
    ) throws(LogStoreError) -> Int64 {
        let end = min(end ?? self.endOffset, self.endOffset)
        var next = offset
        if next >= end {
            // Validates the offset (and the log being open) like a read would.
            _ = try self.read(from: next, maxRecords: 0, maxBytes: 0)
            return next
        }
        while next < end {
            let page = try self.read(from: next, maxRecords: max(pageRecords, 1), maxBytes: max(pageBytes, 1))
            guard !page.isEmpty else { break }
            for stored in page {
                if stored.offset >= end { return end }
                try body(stored)
                next = stored.offset + 1
            }
        }
        return next
    }
}

extension LogRecord {
    /// The value of the last header called `name`, if any.
    package func header(named name: String) -> ByteBuffer? {
        self.headers.last { $0.name == name }?.value
    }
}

/// What ``DedupeIndex/apply(log:from:location:nowMillis:key:)`` did.
package struct DedupeRebuildResult: Equatable, Sendable {
    /// The scan covered the log from its start offset up to here (exclusive).
    package var scannedTo: Int64
    /// Offsets that should have been scanned but were already deleted by retention: their keys are lost. The
    /// caller must log this (with a metric); it cannot happen while the retention floor is the snapshot's end.
    package var missing: Range<Int64>?
    /// Records whose keys were applied.
    package var applied: Int = 0
    /// Records with a dedupe key outside 1...256 bytes (never stored by a correct broker); skipped.
    package var invalidKeys: Int = 0
    /// Live entries evicted by the key bound during the rebuild (also counted in `evictedBeforeExpiry`).
    package var evicted: Int = 0
}

extension DedupeIndex {
    /// The dedupe key of a record of the topic itself: its `dedupe-key` header, inserted at the record's timestamp.
    package static func topicRecordKey(_ stored: StoredRecord) -> (key: ByteBuffer, atMillis: Int64)? {
        stored.record.header(named: Self.headerName).map { (key: $0, atMillis: stored.record.timestamp) }
    }

    /// Rebuilds the tail of the index from a log: for every record from `offset` to the log's end for which `key`
    /// returns a dedupe key, inserts (record offset, `location`) expiring at `atMillis + windowMillis`. Use
    /// ``topicRecordKey(_:)`` for the topic; for `__quarantine`, a function that returns the key only for records
    /// whose original topic is this one. If `offset` is below the log's start, the scan starts there and the gap is
    /// reported in ``DedupeRebuildResult/missing``.
    package mutating func apply(
        log: any TopicLog,
        from offset: Int64,
        location: DedupeLocation,
        nowMillis: Int64,
        key: (StoredRecord) -> (key: ByteBuffer, atMillis: Int64)?
    ) throws(LogStoreError) -> DedupeRebuildResult {
        let start = log.startOffset
        var result = DedupeRebuildResult(scannedTo: offset)
        var from = offset
        if from < start {
            result.missing = from..<start
            from = start
        }
        result.scannedTo = try log.scan(from: from) { stored in
            guard let (keyBytes, atMillis) = key(stored) else { return }
            guard keyBytes.readableBytes >= 1, keyBytes.readableBytes <= Self.maxKeyBytes else {
                result.invalidKeys += 1
                return
            }
            let (expiry, overflow) = atMillis.addingReportingOverflow(self.windowMillis)
            let entry = DedupeEntry(
                offset: stored.offset,
                location: location,
                expiresAtMillis: overflow ? Int64.max : expiry
            )
            let digest = keyBytes.withUnsafeReadableBytes { SipHash128.digest($0, key: self.hashKey) }
            if self.insert(digest: digest, entry: entry, nowMillis: nowMillis) != nil { result.evicted += 1 }
            result.applied += 1
        }
        return result
    }
}
