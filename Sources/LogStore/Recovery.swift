import Glibc
import Logging
import NIOCore

/// Opening a topic directory: finding segments, validating what may be torn, rebuilding indexes.
///
/// The algorithm is described step by step in docs/STORAGE.md ("Recovery").
struct Recovery {
    let directory: String
    let io: any FileIO
    let logger: Logger
    let indexIntervalBytes: Int

    /// What a scan of batches found.
    struct Scan {
        /// Position after the last good batch.
        var validEnd: Int64
        /// Offset after the last good batch.
        var nextOffset: Int64
        /// Index entries the scan produced.
        var entries: [IndexEntry] = []
        /// Bytes since the last index entry at `validEnd`.
        var bytesSinceIndexEntry: Int64
        /// Newest record timestamp among scanned batches.
        var maxTimestamp: Int64?
        /// Why the scan stopped before the end, if it did.
        var problem: String?
        /// The scan stopped at preallocated space: every byte from `validEnd` to the end is zero (not a problem).
        var zeroTail = false
    }

    private func wrap<T>(_ what: String, _ body: () throws(FileIOError) -> T) throws(LogStoreError) -> T {
        do {
            return try body()
        } catch {
            throw LogStoreError(.storageFailure, "opening topic directory \(self.directory): \(what) failed: \(error)")
        }
    }

    /// Recovers the directory and returns its segments, oldest first (at least one: the active segment).
    func run() throws(LogStoreError) -> [Segment] {
        try self.wrap("mkdir") { () throws(FileIOError) in
            try self.io.mkdir(self.directory)
            // Make a new topic directory's own entry durable.
            try self.io.syncDirectory(parentDirectory(of: self.directory))
        }
        let names = try self.wrap("listing") { () throws(FileIOError) in try self.io.listDirectory(self.directory) }
        let clean = names.contains(cleanShutdownMarkerName)
        let bases = names.compactMap { SegmentName.baseOffset(of: $0, suffix: "log") }.sorted()
        let logBases = Set(bases)
        for name in names {
            if let base = SegmentName.baseOffset(of: name, suffix: "index"), !logBases.contains(base) {
                self.logger.notice("removing index without a log", metadata: ["brokerd.file": "\(name)"])
                try self.wrap("unlink of orphan index") { () throws(FileIOError) in
                    try self.io.unlink(self.directory + "/" + name)
                }
            }
        }
        if names.contains(spareSegmentName) {
            // Zeros for a segment that was never made (TopicLogConfig.spareSegment): never data.
            self.logger.info("removing spare segment", metadata: ["brokerd.file": "\(spareSegmentName)"])
            try self.wrap("unlink of spare segment") { () throws(FileIOError) in
                try self.io.unlink(self.directory + "/" + spareSegmentName)
            }
        }
        var segments: [Segment] = []
        if bases.isEmpty {
            segments.append(try Self.createSegment(directory: self.directory, baseOffset: 0, io: self.io))
        } else {
            if !clean {
                self.logger.notice(
                    "no clean-shutdown marker: validating the active segment",
                    metadata: ["brokerd.directory": "\(self.directory)"]
                )
            }
            for (i, base) in bases.enumerated() {
                let isActive = i == bases.count - 1
                segments.append(
                    try self.openSegment(
                        base: base,
                        isActive: isActive,
                        nextBase: isActive ? nil : bases[i + 1],
                        clean: clean
                    )
                )
            }
        }
        // The next shutdown must prove itself clean again: the marker goes, durably, before any append.
        if clean {
            try self.wrap("unlink of clean marker") { () throws(FileIOError) in
                try self.io.unlink(self.directory + "/" + cleanShutdownMarkerName)
            }
        }
        try self.wrap("fsync of directory") { () throws(FileIOError) in try self.io.syncDirectory(self.directory) }
        return segments
    }

    /// The `.log` and `.index` paths of the segment at `baseOffset`.
    static func segmentPaths(directory: String, baseOffset: Int64) -> (log: String, index: String) {
        let stem = directory + "/" + SegmentName.stem(baseOffset)
        return (stem + ".log", stem + ".index")
    }

    /// Creates the empty `.log` and `.index` files of a new segment (the caller makes the directory entry durable).
    /// `logExists`: the `.log` file is already in place (a spare file renamed there) and is opened, not created.
    static func createSegment(
        directory: String, baseOffset: Int64, io: any FileIO, logExists: Bool = false
    ) throws(LogStoreError) -> Segment {
        let (logPath, indexPath) = Self.segmentPaths(directory: directory, baseOffset: baseOffset)
        do {
            let logFD = try io.open(logPath, flags: logExists ? O_RDWR : O_RDWR | O_CREAT | O_EXCL, mode: 0o644)
            let indexFD: Int32
            do {
                indexFD = try io.open(indexPath, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o644)
            } catch {
                try? io.close(logFD, path: logPath)
                throw error
            }
            return Segment(
                baseOffset: baseOffset,
                logPath: logPath,
                indexPath: indexPath,
                logFD: logFD,
                indexFD: indexFD,
                io: io,
                state: Segment.State(size: 0, nextOffset: baseOffset, index: [], bytesSinceIndexEntry: 0)
            )
        } catch {
            throw LogStoreError(.storageFailure, "creating segment \(logPath) failed: \(error)")
        }
    }

    /// Writes the clean-shutdown marker and makes it durable (file fsync, then directory fsync).
    static func writeCleanMarker(directory: String, endOffset: Int64, io: any FileIO) throws(FileIOError) {
        let path = directory + "/" + cleanShutdownMarkerName
        let fd = try io.open(path, flags: O_WRONLY | O_CREAT | O_TRUNC, mode: 0o644)
        defer { try? io.close(fd, path: path) }
        var content = ByteBuffer()
        content.writeString("brokerd clean shutdown v1 end=\(endOffset)\n")
        try io.writeAll(fd, content, at: 0, path: path)
        try io.fsync(fd, path: path)
        try io.syncDirectory(directory)
    }

    private func openSegment(base: Int64, isActive: Bool, nextBase: Int64?, clean: Bool) throws(LogStoreError)
        -> Segment
    {
        let stem = self.directory + "/" + SegmentName.stem(base)
        let logPath = stem + ".log"
        let indexPath = stem + ".index"
        let logFD = try self.wrap("open \(logPath)") { () throws(FileIOError) in
            try self.io.open(logPath, flags: isActive ? O_RDWR : O_RDONLY, mode: 0)
        }
        let indexFD: Int32
        do {
            indexFD = try self.io.open(indexPath, flags: O_RDWR | O_CREAT, mode: 0o644)
        } catch {
            try? self.io.close(logFD, path: logPath)
            throw LogStoreError(.storageFailure, "opening \(indexPath) failed: \(error)")
        }
        // From here the segment owns the descriptors and closes them if recovery throws.
        let segment = Segment(
            baseOffset: base,
            logPath: logPath,
            indexPath: indexPath,
            logFD: logFD,
            indexFD: indexFD,
            io: self.io,
            state: Segment.State(size: 0, nextOffset: base, index: [], bytesSinceIndexEntry: 0)
        )
        do {
            try self.recover(segment, isActive: isActive, nextBase: nextBase, clean: clean)
        } catch {
            throw LogStoreError(.storageFailure, "recovering \(logPath) failed: \(error)")
        }
        return segment
    }

    private func recover(_ segment: Segment, isActive: Bool, nextBase: Int64?, clean: Bool) throws(FileIOError) {
        var fileSize = try self.io.fileSize(segment.logFD, path: segment.logPath)
        if isActive && !clean {
            try self.validateActive(segment, fileSize: fileSize)
            return
        }
        var entries: [IndexEntry]
        let indexSize = try self.io.fileSize(segment.indexFD, path: segment.indexPath)
        let indexBytes = try segment.readIndexFile(size: Int(indexSize))
        let (decoded, problem) = IndexEntry.decode(indexBytes, logSize: fileSize)
        if let decoded {
            entries = decoded
        } else {
            self.logger.warning(
                "index damaged; rebuilding it from the log",
                metadata: ["brokerd.file": "\(segment.indexPath)", "brokerd.reason": "\(problem ?? "?")"]
            )
            entries = []
        }
        var rebuilt = decoded == nil
        let scanStart = entries.last.map { Int64($0.position) } ?? 0
        let expected = segment.baseOffset + Int64(entries.last?.relativeOffset ?? 0)
        var scan = try self.scan(segment, from: scanStart, to: fileSize, expectedOffset: expected, validateCRC: false)
        if scan.problem != nil && scan.validEnd == scanStart && !entries.isEmpty {
            self.logger.warning(
                "last index entry does not point at its batch; rebuilding the index from the log",
                metadata: ["brokerd.file": "\(segment.indexPath)", "brokerd.reason": "\(scan.problem ?? "?")"]
            )
            entries = []
            rebuilt = true
            scan = try self.scan(segment, from: 0, to: fileSize, expectedOffset: segment.baseOffset, validateCRC: false)
        }
        if scan.zeroTail {
            // Only the active segment is ever preallocated (a roll cuts the zeros before the next segment
            // exists); closed segments are opened read-only and never truncated, so zeros there are skipped.
            if isActive {
                try self.cutZeroTail(segment, scan: scan, fileSize: fileSize)
            } else {
                self.logger.notice(
                    "closed segment has zeros after its last batch; reads end there",
                    metadata: ["brokerd.file": "\(segment.logPath)", "brokerd.position": "\(scan.validEnd)"]
                )
            }
            fileSize = scan.validEnd
        }
        if scan.problem != nil && isActive {
            self.logger.warning(
                "clean marker present but the active segment does not parse; validating it",
                metadata: ["brokerd.file": "\(segment.logPath)", "brokerd.reason": "\(scan.problem ?? "?")"]
            )
            try self.validateActive(segment, fileSize: fileSize)
            return
        }
        if let problem = scan.problem {
            self.logger.error(
                "closed segment has unreadable bytes; reads stop there with corruptBatch",
                metadata: [
                    "brokerd.file": "\(segment.logPath)", "brokerd.position": "\(scan.validEnd)",
                    "brokerd.reason": "\(problem)",
                ]
            )
        }
        if let nextBase, scan.problem == nil, scan.nextOffset != nextBase {
            self.logger.warning(
                "segment does not end where the next one starts",
                metadata: [
                    "brokerd.file": "\(segment.logPath)", "brokerd.end": "\(scan.nextOffset)",
                    "brokerd.next": "\(nextBase)",
                ]
            )
        }
        if rebuilt || !scan.entries.isEmpty {
            entries += scan.entries
            try self.writeIndex(segment, entries)
        }
        scan.entries = []
        let first = try segment.readHeader(at: 0, limit: fileSize)
        segment.state.withLock { state in
            state.size = fileSize
            state.nextOffset = nextBase ?? scan.nextOffset
            state.index = entries
            state.bytesSinceIndexEntry = scan.bytesSinceIndexEntry
            state.firstTimestamp = first?.firstTimestamp
            state.maxTimestamp = scan.maxTimestamp
        }
    }

    /// Full validation of the active segment: every batch by length, continuity and CRC; the tail from the first bad
    /// batch is cut; the index is rewritten from the scan.
    private func validateActive(_ segment: Segment, fileSize: Int64) throws(FileIOError) {
        let scan = try self.scan(segment, from: 0, to: fileSize, expectedOffset: segment.baseOffset, validateCRC: true)
        if scan.zeroTail {
            try self.cutZeroTail(segment, scan: scan, fileSize: fileSize)
        } else if scan.validEnd < fileSize {
            self.logger.warning(
                "truncating torn or corrupt tail",
                metadata: [
                    "brokerd.file": "\(segment.logPath)", "brokerd.position": "\(scan.validEnd)",
                    "brokerd.bytes_cut": "\(fileSize - scan.validEnd)", "brokerd.reason": "\(scan.problem ?? "?")",
                ]
            )
            try self.io.ftruncate(segment.logFD, to: scan.validEnd, path: segment.logPath)
            try self.io.fdatasync(segment.logFD, path: segment.logPath)
        }
        try self.writeIndex(segment, scan.entries)
        let first = try segment.readHeader(at: 0, limit: scan.validEnd)
        segment.state.withLock { state in
            state.size = scan.validEnd
            state.nextOffset = scan.nextOffset
            state.index = scan.entries
            state.bytesSinceIndexEntry = scan.bytesSinceIndexEntry
            state.firstTimestamp = first?.firstTimestamp
            state.maxTimestamp = scan.maxTimestamp
        }
    }

    /// Cuts the zeros preallocation left after the last batch (an unclean stop, or one before the roll or close
    /// that cuts them): the file ends at its last batch again, and the writer preallocates anew.
    private func cutZeroTail(_ segment: Segment, scan: Scan, fileSize: Int64) throws(FileIOError) {
        self.logger.info(
            "cutting preallocated zeros after the last batch",
            metadata: [
                "brokerd.file": "\(segment.logPath)", "brokerd.position": "\(scan.validEnd)",
                "brokerd.bytes_cut": "\(fileSize - scan.validEnd)",
            ]
        )
        try self.io.ftruncate(segment.logFD, to: scan.validEnd, path: segment.logPath)
        try self.io.fdatasync(segment.logFD, path: segment.logPath)
    }

    /// Replaces the `.index` file content and syncs it.
    private func writeIndex(_ segment: Segment, _ entries: [IndexEntry]) throws(FileIOError) {
        try self.io.ftruncate(segment.indexFD, to: 0, path: segment.indexPath)
        try self.io.writeAll(segment.indexFD, IndexEntry.encode(entries), at: 0, path: segment.indexPath)
        try self.io.fdatasync(segment.indexFD, path: segment.indexPath)
    }

    /// Walks batches from `from`, producing index entries by the append rule (an entry before a batch once
    /// `indexIntervalBytes` were appended since the last one), and stops at the first batch that is cut short,
    /// structurally wrong, out of sequence or (with `validateCRC`) fails its CRC.
    func scan(_ segment: Segment, from: Int64, to end: Int64, expectedOffset: Int64, validateCRC: Bool)
        throws(FileIOError) -> Scan
    {
        var scan = Scan(validEnd: from, nextOffset: expectedOffset, bytesSinceIndexEntry: 0)
        var position = from
        while position < end {
            guard position <= Int64(UInt32.max) else {
                scan.problem = "batch position \(position) beyond the 32-bit index range"
                break
            }
            // Preallocation leaves zeros after the last batch of the active segment. A batch never has a zero
            // length (its header is 38 bytes after the length), so zeros from there to the end are the end of the
            // batches, not damage.
            guard let header = try segment.readHeader(at: position, limit: end) else {
                if try segment.isZero(from: position, to: end) {
                    scan.zeroTail = true
                } else {
                    scan.problem = "\(end - position) bytes, shorter than a batch header"
                }
                break
            }
            if header.length == 0, try segment.isZero(from: position, to: end) {
                scan.zeroTail = true
                break
            }
            if let problem = header.structuralProblem {
                scan.problem = problem
                break
            }
            guard header.baseOffset == scan.nextOffset else {
                scan.problem = "batch base offset \(header.baseOffset), expected \(scan.nextOffset)"
                break
            }
            guard position + Int64(header.totalSize) <= end else {
                scan.problem = "batch of \(header.totalSize) bytes cut short at \(end - position)"
                break
            }
            guard header.nextOffset - segment.baseOffset <= Int64(UInt32.max) else {
                scan.problem = "relative offset beyond 32 bits"
                break
            }
            if validateCRC {
                let batch = try segment.read(at: position, count: header.totalSize)
                do {
                    _ = try BatchCodec.verify(batch)
                } catch {
                    scan.problem = error.reason
                    break
                }
            }
            if scan.bytesSinceIndexEntry >= Int64(self.indexIntervalBytes) {
                scan.entries.append(
                    IndexEntry(
                        relativeOffset: UInt32(header.baseOffset - segment.baseOffset),
                        position: UInt32(position)
                    )
                )
                scan.bytesSinceIndexEntry = 0
            }
            scan.bytesSinceIndexEntry += Int64(header.totalSize)
            scan.maxTimestamp = max(scan.maxTimestamp ?? header.maxTimestamp, header.maxTimestamp)
            scan.nextOffset = header.nextOffset
            position += Int64(header.totalSize)
            scan.validEnd = position
        }
        return scan
    }
}

/// The directory containing `path` (`.` for a bare name, `/` for a top-level entry).
func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}

extension Segment {
    /// Whether every byte of the `.log` file in `from..<to` is zero (read 1 MiB at a time).
    func isZero(from: Int64, to end: Int64) throws(FileIOError) -> Bool {
        var position = from
        while position < end {
            let piece = try self.read(at: position, count: Int(min(end - position, 1 << 20)))
            guard !piece.readableBytesView.isEmpty else { return false }
            guard piece.readableBytesView.allSatisfy({ $0 == 0 }) else { return false }
            position += Int64(piece.readableBytes)
        }
        return true
    }

    /// Reads the whole `.index` file.
    func readIndexFile(size: Int) throws(FileIOError) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: size)
        var failure: FileIOError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { raw in
            do throws(FileIOError) {
                return try self.io.readFully(
                    self.indexFD,
                    into: UnsafeMutableRawBufferPointer(rebasing: raw[..<size]),
                    at: 0,
                    path: self.indexPath
                )
            } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
        return buffer
    }
}
