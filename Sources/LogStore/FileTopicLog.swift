import Dispatch
import Glibc
import Locking
import Logging
import NIOCore
import Synchronization

/// The name of the clean-shutdown marker file in a topic directory.
package let cleanShutdownMarkerName = "clean-shutdown"

/// The name of the spare file in a topic directory: the next segment's `.log` file, zeroed ahead
/// (`TopicLogConfig.spareSegment`). It never holds a batch; recovery deletes one left behind.
package let spareSegmentName = "next-segment.zeros"

/// A topic's segmented log on disk (see docs/STORAGE.md).
///
/// Appends are serialised on a per-topic writer `DispatchQueue` (never the cooperative pool); fdatasync runs on a
/// second per-topic queue so that, under `.always`, appends written while one fdatasync runs share the next one
/// (group commit). When nothing else waits for the writer and no sync runs, the writer syncs the append itself:
/// nothing could share that fdatasync, and one thread hand-off fewer is tens of microseconds of the append's
/// latency. Reads are synchronous and run on the caller's thread against reference-counted segments.
final class FileTopicLog: TopicLog {
    /// An append written but waiting for the fdatasync that covers it (`.always`).
    private struct PendingSync {
        var segment: Segment
        var result: AppendResult
        var completion: AppendCompletion
    }

    private struct State {
        var segments: [Segment]
        /// Bytes of all segments.
        var totalBytes: Int64
        /// Set once a write or sync failed; every later append fails with it.
        var failure: LogStoreError?
        /// No new appends are accepted.
        var closing = false
        /// `close()` finished; reads fail with `.closed`.
        var closed = false
        /// `.always`: appends written and waiting for a sync.
        var pendingSyncs: [PendingSync] = []
        /// `.always`: a sync loop is running or queued on the sync queue.
        var syncRunning = false
        /// `.interval`: segments written since the last sync.
        var dirtySegments: [Segment] = []
        /// `.interval`: a sync is scheduled.
        var syncScheduled = false
        /// `.interval`: when the last sync started (uptime nanoseconds).
        var lastSyncUptime: UInt64 = 0
    }

    let name: String
    let directory: String
    let config: TopicLogConfig
    private let io: any FileIO
    private let logger: Logger
    private let clock: @Sendable () -> Int64
    private let writeQueue: DispatchQueue
    private let syncQueue: DispatchQueue
    /// Writes the zeros of preallocation (`TopicLogConfig.preallocateBytes`), off the writer's path.
    private let preallocateQueue: DispatchQueue
    /// Entered by the writer when it starts a preallocation, left when the preallocation is done: the writer, a
    /// roll and close wait on it before they write past, or truncate, the space being zeroed.
    private let preallocations = DispatchGroup()
    private let start: Atomic<Int64>
    private let end: Atomic<Int64>
    /// Appends handed to the writer queue and not started yet (`.always`: the writer syncs inline only at 0).
    private let queuedAppends = Atomic<Int>(0)
    private let state: Locked<State>
    private let metrics: LogMetrics
    /// The newest batches as written (`TopicLogConfig.recentBatchBytes`): reads near the end come from here.
    private let recent = Locked(RecentBatches())
    /// What the writer left in the page cache (`TopicLogConfig.pageCacheBytes`); nil: the kernel decides.
    private let cacheWindow: Locked<PageCacheWindow<Segment>>?
    /// Drops the pages `cacheWindow` gives up, off the writer's path.
    private let cacheQueue: DispatchQueue
    /// The preallocator writes its zeros with direct I/O (set at the first preallocation that could): they cost
    /// no page-cache copy, so the segment's growth rate no longer pauses preallocation.
    private let zerosDirect = Atomic<Bool>(false)
    /// The next segment's file, zeroed ahead (`TopicLogConfig.spareSegment`); the writer decides when, the
    /// preallocator writes the zeros, the roll takes the file.
    private let spare = Locked(SpareState())

    /// `(closing, closed)`: `close()` was called / has finished.
    var closeState: (closing: Bool, closed: Bool) { self.state.withLock { ($0.closing, $0.closed) } }

    var startOffset: Int64 { self.start.load(ordering: .acquiring) }
    var endOffset: Int64 { self.end.load(ordering: .acquiring) }
    var storage: LogStorage {
        self.state.withLock { state in
            state.segments.isEmpty ? LogStorage(bytes: 0, segments: 0)  // closed: the segments were released
                : LogStorage(bytes: state.totalBytes, segments: state.segments.count)
        }
    }

    private init(
        name: String,
        directory: String,
        config: TopicLogConfig,
        io: any FileIO,
        logger: Logger,
        clock: @escaping @Sendable () -> Int64,
        metrics: LogMetrics,
        segments: [Segment]
    ) {
        self.metrics = metrics
        self.name = name
        self.directory = directory
        self.config = config
        self.io = io
        self.logger = logger
        self.clock = clock
        self.writeQueue = DispatchQueue(label: "brokerd.logstore.write.\(name)")
        self.syncQueue = DispatchQueue(label: "brokerd.logstore.sync.\(name)")
        self.preallocateQueue = DispatchQueue(label: "brokerd.logstore.preallocate.\(name)")
        self.cacheQueue = DispatchQueue(label: "brokerd.logstore.cache.\(name)", qos: .utility)
        self.cacheWindow = config.pageCacheBytes > 0 ? Locked(PageCacheWindow(limit: config.pageCacheBytes)) : nil
        let total = segments.reduce(Int64(0)) { $0 + $1.state.withLock { $0.size } }
        self.start = Atomic(segments[0].baseOffset)
        self.end = Atomic(segments[segments.count - 1].state.withLock { $0.nextOffset })
        self.state = Locked(State(segments: segments, totalBytes: total))
        metrics.sizeChanged(bytes: total, segments: segments.count)
    }

    // MARK: Open and recovery

    /// Opens (creating if needed) the topic directory and recovers it. Blocking: call it off the cooperative pool.
    static func open(
        name: String,
        directory: String,
        config: TopicLogConfig,
        io: any FileIO,
        logger: Logger,
        clock: @escaping @Sendable () -> Int64,
        metrics: LogMetrics
    ) throws(LogStoreError) -> FileTopicLog {
        var logger = logger
        logger[metadataKey: "brokerd.topic"] = "\(name)"
        let recovery = Recovery(
            directory: directory,
            io: io,
            logger: logger,
            indexIntervalBytes: config.indexIntervalBytes
        )
        let segments = try recovery.run()
        let log = FileTopicLog(
            name: name,
            directory: directory,
            config: config,
            io: io,
            logger: logger,
            clock: clock,
            metrics: metrics,
            segments: segments
        )
        log.enforceRetention()
        return log
    }

    // MARK: Append

    /// Encodes and writes on the writer queue; `completion` runs on the writer queue (`.never`, `.interval`, or a
    /// failure) or on the sync queue once the fdatasync covering the batch returns (`.always`). No task or
    /// continuation sits between the fdatasync and the caller's completion: on a publish's path every thread
    /// hand-off costs tens of microseconds on a busy machine.
    func append(_ records: [LogRecord], completion: @escaping AppendCompletion) {
        self.append(encoding: { () throws(LogStoreError) -> [EncodedBatchBody] in
            [try BatchCodec.encodeBody(records, codec: self.config.compression, maxBodyBytes: self.config.maxBatchBodyBytes)]
        }, completion: completion)
    }

    /// The topic's codec and batch body limit, on the caller's thread.
    func encodeBody(_ parts: [StoredRecordBytes]) throws(LogStoreError) -> EncodedBatchBody {
        try BatchCodec.encodeBody(parts: parts, codec: self.config.compression, maxBodyBytes: self.config.maxBatchBodyBytes)
    }

    func append(
        bodiesBy encode: @escaping @Sendable () throws(LogStoreError) -> [EncodedBatchBody],
        completion: @escaping AppendCompletion
    ) {
        self.append(encoding: encode, completion: completion)
    }

    private func append(
        encoding encode: @escaping @Sendable () throws(LogStoreError) -> [EncodedBatchBody],
        completion: @escaping AppendCompletion
    ) {
        let started = DispatchTime.now().uptimeNanoseconds
        let metrics = self.metrics
        let timed: AppendCompletion = { result in
            metrics.appendDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- started))
            completion(result)
        }
        self.queuedAppends.add(1, ordering: .relaxed)
        self.writeQueue.async {
            self.queuedAppends.subtract(1, ordering: .relaxed)
            let bodies: [EncodedBatchBody]
            do throws(LogStoreError) {
                bodies = try encode()
                guard !bodies.isEmpty else {
                    throw LogStoreError(.invalidArgument, "an append needs at least one batch")
                }
            } catch {
                timed(.failure(error))
                return
            }
            self.writeBatches(bodies, completion: timed)
        }
    }

    /// Why an append is refused now, if it is.
    private func refusal(_ state: State) -> LogStoreError? {
        if let failure = state.failure { return failure }
        if state.closing { return LogStoreError(.closed, "topic '\(self.name)' log is closed") }
        return nil
    }

    /// Writer queue: rolls if needed, writes the batches (one or more, at consecutive offsets) in one write, then
    /// completes them per the fsync policy.
    private func writeBatches(_ bodies: [EncodedBatchBody], completion: @escaping AppendCompletion) {
        dispatchPrecondition(condition: .onQueue(self.writeQueue))
        if let refusal = self.state.withLock({ self.refusal($0) }) {
            completion(.failure(refusal))
            return
        }
        let segment: Segment
        do {
            segment = try self.rollIfNeeded(incomingRecords: bodies.reduce(0) { $0 + Int64($1.recordCount) })
        } catch {
            self.fail(error)
            completion(.failure(error))
            return
        }
        let (position, baseOffset, sinceIndex) = segment.state.withLock {
            ($0.size, $0.nextOffset, $0.bytesSinceIndexEntry)
        }
        let batchEnd = position + Int64(bodies.reduce(0) { $0 + $1.batchSize })
        self.waitForPreallocation(segment, through: batchEnd)
        let pad = self.zeroPad(segment, after: batchEnd)
        // The batches back to back, each with its index entry when one is due at its start.
        var batches = ByteBufferAllocator().buffer(capacity: Int(batchEnd - position))
        var starts: [(base: Int64, at: Int)] = []
        starts.reserveCapacity(bodies.count)
        var newEntries: [IndexEntry] = []
        var bytesSinceIndexEntry = sinceIndex
        var base = baseOffset
        for body in bodies {
            let at = batches.writerIndex
            if bytesSinceIndexEntry >= Int64(self.config.indexIntervalBytes) {
                newEntries.append(
                    IndexEntry(relativeOffset: UInt32(base - segment.baseOffset), position: UInt32(position + Int64(at)))
                )
                bytesSinceIndexEntry = 0
            }
            BatchCodec.assemble(body, baseOffset: base, into: &batches)
            bytesSinceIndexEntry += Int64(body.batchSize)
            starts.append((base, at))
            base += Int64(body.recordCount)
        }
        let indexCount = segment.state.withLock { $0.index.count }
        do {
            // With the padding (see `zeroPad`) in the same write: the page must be whole when the kernel sees it.
            try self.io.writeAll(segment.logFD, batches, zeros: pad, at: position, path: segment.logPath)
            if !newEntries.isEmpty {
                try self.io.writeAll(
                    segment.indexFD,
                    IndexEntry.encode(newEntries),
                    at: Int64(indexCount * IndexEntry.size),
                    path: segment.indexPath
                )
            }
        } catch {
            // Leave no half-written batch behind; recovery truncates it otherwise. (A preallocation still writing
            // zeros past `position` would lengthen the file again: it finishes first.)
            self.preallocations.wait()
            let cut: Bool
            do {
                try self.io.ftruncate(segment.logFD, to: position, path: segment.logPath)
                segment.state.withLock { $0.allocated = min($0.allocated, position) }
                if !newEntries.isEmpty {
                    try self.io.ftruncate(segment.indexFD, to: Int64(indexCount * IndexEntry.size), path: segment.indexPath)
                }
                cut = true
            } catch {
                cut = false
            }
            if cut, error.isOutOfSpace {
                // Nothing of these batches remains and nothing acknowledged was touched: refuse this append only.
                let full = LogStoreError(
                    .storageFull,
                    "topic '\(self.name)': write of batch at offset \(baseOffset) failed: \(error); nothing stored, "
                        + "appends resume once space is freed"
                )
                self.logger.warning("append refused: no space", metadata: ["brokerd.error": "\(error)"])
                completion(.failure(full))
                return
            }
            let failure = self.storageFailure("write of batch at offset \(baseOffset)", error)
            self.fail(failure)
            completion(.failure(failure))
            return
        }
        let size = Int64(batches.readableBytes)
        let firstTimestamp = bodies[0].firstTimestamp
        let maxTimestamp = bodies.lazy.map(\.maxTimestamp).max()!
        segment.state.withLock { state in
            state.size += size
            state.nextOffset = base
            state.index.append(contentsOf: newEntries)
            state.bytesSinceIndexEntry = bytesSinceIndexEntry
            if state.firstTimestamp == nil { state.firstTimestamp = firstTimestamp }
            state.maxTimestamp = max(state.maxTimestamp ?? maxTimestamp, maxTimestamp)
        }
        if self.config.recentBatchBytes > 0 {
            self.recent.withLock { recent in
                for (index, start) in starts.enumerated() {
                    let next = index + 1 < starts.count ? starts[index + 1] : (base: base, at: batches.readableBytes)
                    let batch = batches.getSlice(at: batches.readerIndex + start.at, length: next.at - start.at)!
                    recent.add(batch, base: start.base, next: next.base, limit: self.config.recentBatchBytes)
                }
            }
        }
        let (totalBytes, segmentCount) = self.state.withLock { state in
            state.totalBytes += size
            return (state.totalBytes, state.segments.count)
        }
        self.metrics.sizeChanged(bytes: totalBytes, segments: segmentCount)
        self.dropOldPages(segment, position..<(position + size))
        self.preallocateIfDue(segment)
        self.zeroSpareIfDue(segmentSize: position + size)
        // Before completing the append, so a caller sees retention's effect of its own append.
        self.enforceRetention()
        let result = AppendResult(baseOffset: baseOffset, count: Int(base - baseOffset))
        switch self.config.fsync {
        case .always:
            enum Sync { case failed, joined, onSyncQueue, inline }
            let sync: Sync = self.state.withLock { state in
                if state.failure != nil { return .failed }
                state.pendingSyncs.append(PendingSync(segment: segment, result: result, completion: completion))
                if state.syncRunning { return .joined }
                state.syncRunning = true
                // Nothing queued behind this append: no one could join the sync, so run it here. Appends that
                // arrive meanwhile wait for the writer and, once written, find the sync done and start the next.
                return self.queuedAppends.load(ordering: .relaxed) == 0 ? .inline : .onSyncQueue
            }
            switch sync {
            case .failed:
                completion(.failure(self.state.withLock { $0.failure! }))
            case .inline:
                self.runGroupCommitLoop()
            case .onSyncQueue:
                self.syncQueue.async { self.runGroupCommitLoop() }
            case .joined:
                break
            }
        case .interval(let milliseconds):
            let schedule: UInt64? = self.state.withLock { state in
                if !state.dirtySegments.contains(where: { $0 === segment }) { state.dirtySegments.append(segment) }
                if state.syncScheduled { return nil }
                state.syncScheduled = true
                let due = state.lastSyncUptime &+ UInt64(milliseconds) * 1_000_000
                let now = DispatchTime.now().uptimeNanoseconds
                return due > now ? due - now : 0
            }
            self.end.store(base, ordering: .releasing)
            completion(.success(result))
            if let delay = schedule {
                self.syncQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(delay))) { self.runIntervalSync() }
            }
        case .never:
            self.end.store(base, ordering: .releasing)
            completion(.success(result))
        }
    }

    /// Writer queue, after a batch at `written`: tells the page-cache window, and drops what it gives up on the cache
    /// queue. The pages dropped lie `pageCacheBytes` behind the writer, long synced under `.always`; of a dirty one
    /// (another fsync policy) the kernel starts the write-back, and it stays cached.
    private func dropOldPages(_ segment: Segment, _ written: Range<Int64>) {
        guard let window = self.cacheWindow else { return }
        let drops = window.withLock { $0.wrote(segment, written) }
        guard !drops.isEmpty else { return }
        self.cacheQueue.async {
            for drop in drops {
                self.io.dropCachedPages(drop.file.logFD, range: drop.range)
                self.metrics.pageCacheDropped.increment(by: drop.range.count)
            }
        }
    }

    /// Sync queue (or the writer, when nothing waits for it), `.always`: one fdatasync for everything written so
    /// far, repeated while appends keep arriving.
    private func runGroupCommitLoop() {
        while true {
            let group: [PendingSync] = self.state.withLock { state in
                if state.pendingSyncs.isEmpty {
                    state.syncRunning = false
                    return []
                }
                defer { state.pendingSyncs.removeAll(keepingCapacity: true) }
                return state.pendingSyncs
            }
            guard let last = group.last else { return }
            var synced: [Segment] = []
            var failure: LogStoreError?
            for pending in group where !synced.contains(where: { $0 === pending.segment }) {
                let started = DispatchTime.now().uptimeNanoseconds
                do {
                    try self.io.fdatasync(pending.segment.logFD, path: pending.segment.logPath)
                } catch {
                    failure = self.storageFailure("fdatasync", error)
                    break
                }
                self.metrics.fsyncDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- started))
                synced.append(pending.segment)
            }
            if let failure {
                self.fail(failure)
                for pending in group { pending.completion(.failure(failure)) }
                continue
            }
            self.metrics.groupCommitRecords.record(group.reduce(0) { $0 + $1.result.count })
            self.end.store(last.result.baseOffset + Int64(last.result.count), ordering: .releasing)
            for pending in group { pending.completion(.success(pending.result)) }
        }
    }

    /// Sync queue, `.interval`: fdatasync every segment written since the last sync.
    private func runIntervalSync() {
        let dirty: [Segment]? = self.state.withLock { state in
            state.syncScheduled = false
            if state.closed || state.failure != nil { return nil }
            state.lastSyncUptime = DispatchTime.now().uptimeNanoseconds
            defer { state.dirtySegments = [] }
            return state.dirtySegments
        }
        for segment in dirty ?? [] {
            let started = DispatchTime.now().uptimeNanoseconds
            do {
                try self.io.fdatasync(segment.logFD, path: segment.logPath)
            } catch {
                self.fail(self.storageFailure("fdatasync", error))
                return
            }
            self.metrics.fsyncDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- started))
        }
    }

    /// Writer queue: the active segment, after rolling to a new one if it is full, too old, or would overflow the
    /// 32-bit relative offsets of its index.
    private func rollIfNeeded(incomingRecords: Int64) throws(LogStoreError) -> Segment {
        let active = self.state.withLock { $0.segments[$0.segments.count - 1] }
        let (size, nextOffset, firstTimestamp) = active.state.withLock { ($0.size, $0.nextOffset, $0.firstTimestamp) }
        guard size > 0 else { return active }
        var reason: String?
        if size >= self.config.segmentBytes {
            reason = "size \(size) >= \(self.config.segmentBytes)"
        } else if let maxAge = self.config.segmentMaxAgeMillis, let first = firstTimestamp,
            self.clock() - first >= maxAge
        {
            reason = "first batch older than \(maxAge) ms"
        } else if nextOffset - active.baseOffset + incomingRecords > Int64(UInt32.max) {
            reason = "relative offsets would exceed 32 bits"
        }
        guard let reason else { return active }
        // A closed segment is durable before the next one exists: recovery checkpoints at the active segment.
        // It ends at its last batch: preallocated zeros after it are cut first.
        do {
            try self.cutPreallocation(active)
            try self.io.fdatasync(active.logFD, path: active.logPath)
            try self.io.fdatasync(active.indexFD, path: active.indexPath)
        } catch {
            throw self.storageFailure("fdatasync before roll", error)
        }
        let segment: Segment
        if let spare = try self.takeSpare(baseOffset: nextOffset) {
            segment = spare
        } else {
            segment = try Recovery.createSegment(directory: self.directory, baseOffset: nextOffset, io: self.io)
        }
        do {
            try self.io.syncDirectory(self.directory)
        } catch {
            throw self.storageFailure("fsync of directory after roll", error)
        }
        self.state.withLock { $0.segments.append(segment) }
        self.logger.debug(
            "segment rolled",
            metadata: ["brokerd.segment": "\(segment.logPath)", "brokerd.reason": "\(reason)"]
        )
        return segment
    }

    // MARK: Preallocation

    /// Zeros for preallocation, written from slices of this one buffer, one piece at a time.
    private static let zeros = ByteBuffer(repeating: 0, count: 128 << 10)

    /// Zeros for direct-I/O preallocation: as many as `zeros`, in a read-only anonymous mapping of their own
    /// (page-aligned, as direct I/O needs; never written, so its pages are the kernel's one zero page and take no
    /// memory), never unmapped.
    // Read-only memory (only read, by the kernel, as the source of direct writes): sharing the pointer between
    // threads is safe.
    private nonisolated(unsafe) static let directZeros: UnsafeRawBufferPointer = {
        let count = 128 << 10
        let memory = mmap(nil, count, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        guard let memory, memory != MAP_FAILED else { fatalError("mmap of \(count) bytes of zeros failed: \(errno)") }
        return UnsafeRawBufferPointer(start: memory, count: count)
    }()

    /// Writer queue: before writing a batch that ends at `end`, waits while a preallocation has not yet zeroed the
    /// space it would write to (the writer never writes where zeros are still to come). The preallocator moves
    /// `allocated` up as each piece is on the device, so the batch waits for the pieces it overwrites, not for the
    /// whole preallocation and its fdatasync: the first preallocation of every new segment starts right after the
    /// segment's first batch, and waiting for all of it stalled the topic's appends at every roll (4-12 ms for
    /// brokerd's 4 MiB in durable-publish and e2e-latency, docs/benchmarks/HISTORY.md "Round 14").
    private func waitForPreallocation(_ segment: Segment, through end: Int64) {
        guard self.config.preallocateBytes > 0 else { return }
        while segment.state.withLock({ $0.extending && end > $0.allocated }) {
            _ = self.preallocations.wait(timeout: .now() + .microseconds(100))
        }
    }

    /// The page size the zeros of direct-I/O preallocation and the writer's padding keep to.
    static let pageBytes: Int64 = 4096

    /// Writer queue: how many zero bytes to write after a batch that ends at `end` so that its write ends on a
    /// page boundary, when the page holding `end` lies in zeros the preallocator wrote with direct I/O. Those zeros
    /// are on the device but not in the page cache, and a write that ends inside a page the cache does not hold
    /// makes the kernel read that page from the device first (about 100 µs here, docs/benchmarks/HISTORY.md round 20);
    /// writing the rest of the page with the zeros it already holds on the device fills the page without the
    /// read. The next batch starts inside that page, now cached. 0 otherwise.
    private func zeroPad(_ segment: Segment, after end: Int64) -> Int {
        let pageEnd = (end + Self.pageBytes - 1) / Self.pageBytes * Self.pageBytes
        guard pageEnd > end else { return 0 }
        let direct = segment.state.withLock { $0.directZerosFrom <= end && pageEnd <= $0.allocated }
        return direct ? Int(pageEnd - end) : 0
    }

    /// Writer queue, after a batch: starts zeroing the next `preallocateBytes` (up to `segmentBytes`, where the
    /// segment rolls) once less than half of them is left ahead of the segment's end, unless the segment grows
    /// faster than `preallocateUpToBytesPerSecond`: then none until it has grown by another `preallocateBytes`,
    /// when its rate is judged again (the batches extend the file meanwhile).
    private func preallocateIfDue(_ segment: Segment) {
        let chunk = Int64(self.config.preallocateBytes)
        guard chunk > 0 else { return }
        let limit = self.config.preallocateUpToBytesPerSecond
        let range: Range<Int64>? = segment.state.withLock { state in
            guard !state.extending, !state.preallocationStopped, state.allocated - state.size < chunk / 2,
                state.size >= state.preallocationPausedUntil
            else {
                return nil
            }
            let from = max(state.allocated, state.size)
            let to = min(from + chunk, self.config.segmentBytes)
            guard to > from else { return nil }
            // The rate since the last judgement, at least half a preallocation's bytes ago (the first preallocation
            // of a segment is not judged, so a new segment starts with zeros ahead). The clock is read only here,
            // not for every batch.
            let now = DispatchTime.now().uptimeNanoseconds
            if limit > 0, !self.zerosDirect.load(ordering: .relaxed), let mark = state.growthMark {
                let grown = Double(state.size - mark.size)
                let seconds = Double(now &- mark.uptimeNanos) / 1e9
                state.growthMark = (state.size, now)
                if grown > Double(limit) * seconds {
                    state.preallocationPausedUntil = state.size + chunk
                    return nil
                }
            } else {
                state.growthMark = (state.size, now)
            }
            state.allocated = from
            state.extending = true
            return from..<to
        }
        guard let range else { return }
        self.preallocations.enter()
        self.preallocateQueue.async {
            defer { self.preallocations.leave() }
            self.preallocate(segment, range)
        }
    }

    /// Preallocate queue: zeros over `range` of the active segment (``writeZeros(_:_:path:onDirect:onPiece:)``),
    /// `allocated` following the pieces, so the writer may fill one while the next is zeroed. A write that fails
    /// (no space, say) only stops preallocation in this segment: appends then extend the file as they go.
    private func preallocate(_ segment: Segment, _ range: Range<Int64>) {
        let outcome = self.writeZeros(
            segment.logFD, range, path: segment.logPath,
            onDirect: { from in segment.state.withLock { $0.directZerosFrom = min($0.directZerosFrom, from) } },
            onPiece: { zeroedTo in segment.state.withLock { $0.allocated = zeroedTo } }
        )
        segment.state.withLock {
            $0.extending = false
            switch outcome {
            case .zeroed: $0.allocated = range.upperBound
            case .writeFailed: $0.preallocationStopped = true
            case .syncFailed, .logFailed: break
            }
        }
        switch outcome {
        case .writeFailed(let error):
            self.logger.notice(
                "preallocation stopped; the segment grows batch by batch",
                metadata: ["brokerd.segment": "\(segment.logPath)", "brokerd.error": "\(error)"]
            )
        case .syncFailed(let error):
            // It may have lost dirty pages of written batches (the same file), and a later fdatasync of the file
            // would not report it again: the log fails, as for every failed fdatasync of a segment.
            self.fail(self.storageFailure("fdatasync of preallocated space", error))
        case .zeroed, .logFailed: break
        }
    }

    // MARK: Spare segment

    /// The next segment's file while the active segment fills (`TopicLogConfig.spareSegment`).
    private struct SpareState {
        /// The open spare file; nil until the preallocator creates it (after a roll took the last one).
        var file: SpareFile?
        /// Zeros written and synced from the start of the file up to here.
        var zeroed: Int64 = 0
        /// Zeros from here to `zeroed` were written with direct I/O (`Int64.max`: none were).
        var directFrom: Int64 = .max
        /// The preallocator is zeroing the next part (or creating the file).
        var busy = false
        /// Creating or zeroing it failed (no space, say): no more zeros until the next roll.
        var stopped = false
    }

    /// The spare file's descriptor, closed once the file is renamed into place (the segment opens its own) or
    /// removed.
    private final class SpareFile: Sendable {
        let path: String
        let fd: Int32
        let io: any FileIO

        init(path: String, fd: Int32, io: any FileIO) {
            self.path = path
            self.fd = fd
            self.io = io
        }

        deinit { try? self.io.close(self.fd, path: self.path) }
    }

    private var sparePath: String { self.directory + "/" + spareSegmentName }

    /// Writer queue, after a batch: with `spareSegment`, has the next `preallocateBytes` of the spare zeroed once
    /// it is less than that ahead of the active segment's size (so it is whole, `segmentBytes` of zeros, about when
    /// the active segment is full). Zeros through the page cache follow preallocation's growth-rate limit: none
    /// while the log has not written zeros directly and a limit is set.
    private func zeroSpareIfDue(segmentSize size: Int64) {
        let chunk = Int64(self.config.preallocateBytes)
        guard self.config.spareSegment, chunk > 0,
            self.config.preallocateUpToBytesPerSecond == 0 || self.zerosDirect.load(ordering: .relaxed)
        else { return }
        let range: Range<Int64>? = self.spare.withLock { spare in
            guard !spare.busy, !spare.stopped, spare.zeroed < self.config.segmentBytes, spare.zeroed - size < chunk
            else { return nil }
            spare.busy = true
            return spare.zeroed..<min(spare.zeroed + chunk, self.config.segmentBytes)
        }
        guard let range else { return }
        self.preallocations.enter()
        self.preallocateQueue.async {
            defer { self.preallocations.leave() }
            self.zeroSpare(range)
        }
    }

    /// Preallocate queue: creates the spare file if there is none, then zeros `range` of it and syncs it. A failure
    /// to create, write or sync it removes it (its space may be what appends need) and stops the spare until the
    /// next roll, which then creates the segment as without a spare (it zeroes its own space).
    private func zeroSpare(_ range: Range<Int64>) {
        var file = self.spare.withLock { $0.file }
        if file == nil {
            let path = self.sparePath
            do {
                let fd = try self.io.open(path, flags: O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode: 0o644)
                file = SpareFile(path: path, fd: fd, io: self.io)
            } catch {
                self.spareStopped(error)
                return
            }
            self.spare.withLock { $0.file = file }
        }
        guard let file else { return }
        let outcome = self.writeZeros(
            file.fd, range, path: file.path,
            onDirect: { from in self.spare.withLock { $0.directFrom = min($0.directFrom, from) } },
            onPiece: { _ in }
        )
        switch outcome {
        case .zeroed:
            self.spare.withLock {
                $0.zeroed = range.upperBound
                $0.busy = false
            }
        case .writeFailed(let error), .syncFailed(let error): self.spareStopped(error)
        case .logFailed: self.spare.withLock { $0.busy = false }
        }
    }

    /// Preallocate queue: the spare failed; it is removed and gets no zeros until the next roll.
    private func spareStopped(_ error: FileIOError) {
        self.logger.notice(
            "spare segment stopped; the next segment zeroes its own space",
            metadata: ["brokerd.file": "\(self.sparePath)", "brokerd.error": "\(error)"]
        )
        self.removeSpare()
    }

    /// Writer queue, at a roll (no preallocation in flight): the spare file renamed into place as the new segment's
    /// `.log` file, with its synced zeros as the segment's preallocated space; nil when there is no spare. The name
    /// is claimed first with an exclusive create, so an existing file is never replaced. The caller makes the
    /// directory entry durable before the first append.
    private func takeSpare(baseOffset: Int64) throws(LogStoreError) -> Segment? {
        // The next segment starts a new spare, also after one that stopped.
        let taken: SpareState? = self.spare.withLock { spare in
            guard !spare.busy else { return nil }
            defer { spare = SpareState() }
            return spare
        }
        guard let taken, let file = taken.file else { return nil }
        let logPath = Recovery.segmentPaths(directory: self.directory, baseOffset: baseOffset).log
        do {
            try self.io.close(try self.io.open(logPath, flags: O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode: 0o644), path: logPath)
            try self.io.rename(file.path, to: logPath)
        } catch {
            throw LogStoreError(.storageFailure, "creating segment \(logPath) from \(file.path) failed: \(error)")
        }
        let segment = try Recovery.createSegment(
            directory: self.directory, baseOffset: baseOffset, io: self.io, logExists: true
        )
        segment.state.withLock {
            $0.allocated = taken.zeroed
            $0.directZerosFrom = taken.directFrom
        }
        return segment
    }

    /// Close (after the last preallocation) or a failed spare (on the preallocate queue): the spare file is removed
    /// (recovery would remove it otherwise) and gets no more zeros until the next roll.
    private func removeSpare() {
        guard let file = self.spare.withLock({ spare -> SpareFile? in
            defer { spare = SpareState(stopped: true) }
            return spare.file
        }) else { return }
        do {
            try self.io.unlink(file.path)
        } catch {
            // Recovery removes it at the next open.
            self.logger.notice("spare segment not removed", metadata: ["brokerd.file": "\(file.path)", "brokerd.error": "\(error)"])
        }
    }

    /// How a ``writeZeros(_:_:path:onDirect:onPiece:)`` ended.
    private enum ZerosOutcome {
        /// The whole range is zero on the device and synced.
        case zeroed
        /// A write failed; the pieces before it are on the device, not synced.
        case writeFailed(FileIOError)
        /// Every piece was written; their fdatasync failed.
        case syncFailed(FileIOError)
        /// The log has failed (elsewhere): nothing more was written or synced.
        case logFailed
    }

    /// Preallocate queue: writes zeros over `range` of the file `fd` and fdatasyncs them. Where the file system has
    /// direct I/O (``FileIO/enableDirectIO(_:maxAlignment:path:)``, through a second descriptor of the file), the
    /// whole pages of the range go from one zeroed mapping straight to the device: no copy into the page cache,
    /// no fresh page-cache pages, no writeback; the writer then pads each batch to its page's end (`zeroPad`), and
    /// `onDirect` is told where the first direct piece starts. Otherwise, and for the range's parts before its first
    /// and after its last page boundary, zeros are written through the page cache and each 128 KiB piece is written
    /// out to the device before the next (`FileIO.writeOut`): an append's fdatasync of the same file waits for every
    /// page of it still dirty or in flight, and must not wait for megabytes of zeros. `onPiece` is told the end of
    /// each piece once it is on the device. Once the log has failed (on any queue), writing stops before the next
    /// piece and makes no fdatasync: nothing of a failed log is synced again.
    private func writeZeros(
        _ fd: Int32, _ range: Range<Int64>, path: String, onDirect: (Int64) -> Void, onPiece: (Int64) -> Void
    ) -> ZerosOutcome {
        let page = Self.pageBytes
        // The whole pages of the range, for direct I/O.
        let pagesFrom = (range.lowerBound + page - 1) / page * page
        let pagesTo = range.upperBound / page * page
        var directFD: Int32 = -1
        if pagesTo > pagesFrom, let direct = try? self.io.open(path, flags: O_WRONLY | O_CLOEXEC, mode: 0) {
            if self.io.enableDirectIO(direct, maxAlignment: Int(page), path: path) != 0 {
                directFD = direct
                self.zerosDirect.store(true, ordering: .relaxed)
            } else {
                try? self.io.close(direct, path: path)
            }
        }
        defer { if directFD >= 0 { try? self.io.close(directFD, path: path) } }
        var at = range.lowerBound
        do throws(FileIOError) {
            while at < range.upperBound {
                if self.hasFailed { return .logFailed }
                let piece = Int64(Self.zeros.readableBytes)
                if directFD >= 0 && at >= pagesFrom && at < pagesTo {
                    let count = Int(min(piece, pagesTo - at))
                    if at == pagesFrom { onDirect(at) }
                    try self.io.writeAll(
                        directFD, UnsafeRawBufferPointer(rebasing: Self.directZeros[0..<count]), at: at, path: path
                    )
                    at += Int64(count)
                } else {
                    // Buffered: all of it, or (direct) the bytes before the first page boundary or after the last.
                    let stop = directFD >= 0 && at < pagesFrom ? pagesFrom : range.upperBound
                    let count = Int(min(piece, stop - at))
                    let zeros = Self.zeros.getSlice(at: 0, length: count)!
                    try self.io.writeAll(fd, zeros, at: at, path: path)
                    try self.io.writeOut(fd, offset: at, count: Int64(count), path: path)
                    at += Int64(count)
                }
                // On the device: a batch may now be written up to here while the rest is zeroed.
                onPiece(at)
            }
        } catch {
            return .writeFailed(error)
        }
        if self.hasFailed { return .logFailed }
        do {
            try self.io.fdatasync(fd, path: path)
        } catch {
            return .syncFailed(error)
        }
        return .zeroed
    }

    /// Before a roll or close: waits for a preallocation in flight, then cuts the file back to its last batch.
    private func cutPreallocation(_ segment: Segment) throws(FileIOError) {
        guard self.config.preallocateBytes > 0 else { return }
        self.preallocations.wait()
        let size = segment.state.withLock { $0.size }
        if try self.io.fileSize(segment.logFD, path: segment.logPath) > size {
            try self.io.ftruncate(segment.logFD, to: size, path: segment.logPath)
        }
        segment.state.withLock { $0.allocated = size }
    }

    // MARK: Failure

    private func storageFailure(_ what: String, _ error: FileIOError) -> LogStoreError {
        LogStoreError(.storageFailure, "topic '\(self.name)': \(what) failed: \(error)")
    }

    /// Whether the log has failed (appends are refused until it is reopened).
    private var hasFailed: Bool { self.state.withLock { $0.failure != nil } }

    /// Enters the failed state (first failure wins) and fails every append waiting for a sync.
    private func fail(_ error: LogStoreError) {
        let (first, pending): (Bool, [PendingSync]) = self.state.withLock { state in
            let first = state.failure == nil
            if first { state.failure = error }
            defer { state.pendingSyncs = [] }
            return (first, state.pendingSyncs)
        }
        if first {
            self.logger.error(
                "topic log failed; refusing appends until reopened",
                metadata: ["brokerd.error": "\(error.message)"]
            )
        }
        let failure = self.state.withLock { $0.failure! }
        for pending in pending { pending.completion(.failure(failure)) }
    }

    // MARK: Retention

    /// Deletes the oldest closed segments while the topic exceeds `retentionBytes` or the segment's newest record
    /// is older than `retentionMillis`, but never a segment holding an offset at or above `retentionFloor()`.
    /// O(1) when nothing is due.
    private func enforceRetention() {
        guard self.config.retentionBytes != nil || self.config.retentionMillis != nil else { return }
        let now = self.clock()
        // Called outside the state lock: the floor may take the caller's own locks.
        let floor = self.config.retentionFloor?()
        var deleted = false
        defer {
            if deleted {
                let (total, count) = self.state.withLock { ($0.totalBytes, $0.segments.count) }
                self.metrics.sizeChanged(bytes: total, segments: count)
            }
        }
        while true {
            let victim: Segment? = self.state.withLock { state in
                guard state.segments.count > 1 else { return nil }
                // The oldest segment holds offsets below the next segment's base.
                if let floor, state.segments[1].baseOffset > floor { return nil }
                let oldest = state.segments[0]
                let (size, newest) = oldest.state.withLock { ($0.size, $0.maxTimestamp) }
                let overBytes = self.config.retentionBytes.map { state.totalBytes > $0 } ?? false
                let tooOld =
                    self.config.retentionMillis.map { limit in newest.map { now - $0 > limit } ?? true } ?? false
                guard overBytes || tooOld else { return nil }
                state.segments.removeFirst()
                state.totalBytes -= size
                self.start.store(state.segments[0].baseOffset, ordering: .releasing)
                return oldest
            }
            guard let victim else { return }
            deleted = true
            self.cacheWindow?.withLock { $0.forget(victim) }
            self.logger.info(
                "retention deleted segment",
                metadata: ["brokerd.segment": "\(victim.logPath)", "brokerd.start": "\(self.startOffset)"]
            )
            for path in [victim.logPath, victim.indexPath] {
                do {
                    try self.io.unlink(path)
                } catch {
                    self.logger.error("retention could not unlink", metadata: ["brokerd.error": "\(error)"])
                }
            }
        }
    }

    // MARK: Read

    func read(from offset: Int64, maxRecords: Int, maxBytes: Int) throws(LogStoreError) -> [StoredRecord] {
        var records: [StoredRecord] = []
        try self.readBatches(from: offset, maxRecords: maxRecords, maxBytes: maxBytes, count: { records.count }) {
            batch, end throws(BatchDecodeError) in
            let (header, decoded) = try BatchCodec.decode(batch)
            for (i, record) in decoded.enumerated() {
                let recordOffset = header.baseOffset + Int64(i)
                if recordOffset < offset { continue }
                if recordOffset >= end || records.count >= maxRecords { return true }
                records.append(StoredRecord(offset: recordOffset, record: record))
            }
            return false
        }
        return records
    }

    func readRaw(from offset: Int64, maxRecords: Int, maxBytes: Int) throws(LogStoreError) -> RawRecords {
        var records = RawRecords()
        try self.readBatches(from: offset, maxRecords: maxRecords, maxBytes: maxBytes, count: { records.count }) {
            batch, end throws(BatchDecodeError) in
            // The whole batch: `readBatches` stops after it once `maxRecords` are there.
            let header = try BatchCodec.index(batch, into: &records, from: offset, end: end, maxRecords: .max)
            return header.nextOffset > end
        }
        return records
    }

    /// The batch walk of `read` and `readRaw`: calls `take` with each whole stored batch from the one holding
    /// `offset` on, and the read's end offset; `take` adds the batch's records from `offset` (before `end`, up to
    /// `maxRecords` in all) and returns true when it reached `end`. `count` is the number of records taken so far.
    private func readBatches(
        from offset: Int64,
        maxRecords: Int,
        maxBytes: Int,
        count: () -> Int,
        take: (_ batch: ByteBuffer, _ end: Int64) throws(BatchDecodeError) -> Bool
    ) throws(LogStoreError) {
        let end = self.endOffset
        let (segments, closed) = self.state.withLock { ($0.segments, $0.closed) }
        if closed { throw LogStoreError(.closed, "topic '\(self.name)' log is closed") }
        let start = segments[0].baseOffset
        guard offset >= start, offset <= end else {
            throw LogStoreError(
                .offsetOutOfRange,
                "offset \(offset) is outside \(start)...\(end) of topic '\(self.name)'"
            )
        }
        guard offset < end, maxRecords > 0 else { return }
        if let batches = self.recent.withLock({ $0.batches(from: offset, maxBytes: maxBytes) }) {
            // The same walk as over a segment's file below, over the batches as written.
            var bytes = 0
            for batch in batches {
                let header = BatchHeader.peek(batch)!  // written by this log
                if header.baseOffset >= end { return }
                if count() > 0 && bytes + header.totalSize > maxBytes { return }
                do {
                    if try take(batch, end) { return }
                } catch {
                    let at = "topic '\(self.name)': batch at offset \(header.baseOffset) in memory"
                    throw LogStoreError(.corruptBatch, "\(at): \(error.reason)")
                }
                bytes += header.totalSize
                if count() >= maxRecords || bytes >= maxBytes { return }
            }
            return
        }
        // Last segment whose base is at or below the offset.
        var low = 0
        var high = segments.count
        while low < high {
            let mid = (low + high) / 2
            if segments[mid].baseOffset <= offset { low = mid + 1 } else { high = mid }
        }
        var bytes = 0
        for segmentIndex in max(low - 1, 0)..<segments.count {
            let segment = segments[segmentIndex]
            if segment.baseOffset >= end { break }
            let done = try self.read(
                segment,
                isActive: segmentIndex == segments.count - 1,
                from: offset,
                end: end,
                maxRecords: maxRecords,
                maxBytes: maxBytes,
                bytes: &bytes,
                count: count,
                take: take
            )
            if done { break }
        }
    }

    /// Reads batches of one segment into `records`; true when the read is complete.
    private func read(
        _ segment: Segment,
        isActive: Bool,
        from offset: Int64,
        end: Int64,
        maxRecords: Int,
        maxBytes: Int,
        bytes: inout Int,
        count: () -> Int,
        take: (_ batch: ByteBuffer, _ end: Int64) throws(BatchDecodeError) -> Bool
    ) throws(LogStoreError) -> Bool {
        let (size, startEntry) = segment.lookup(relativeOffset: offset - segment.baseOffset)
        var position: Int64 = 0
        // Batches must follow each other without gaps, so a damaged header can never make a scan skip records.
        var expected = segment.baseOffset
        var previous: Int64?
        do {
            if let entry = startEntry {
                let header = try segment.readHeader(at: Int64(entry.position), limit: size)
                if let header, header.structuralProblem == nil,
                    header.baseOffset == segment.baseOffset + Int64(entry.relativeOffset)
                {
                    position = Int64(entry.position)
                    expected = header.baseOffset
                } else {
                    self.logger.warning(
                        "index entry does not point at its batch; scanning the segment",
                        metadata: ["brokerd.segment": "\(segment.indexPath)", "brokerd.position": "\(entry.position)"]
                    )
                }
            }
            while position < size {
                guard let header = try segment.readHeader(at: position, limit: size) else {
                    throw self.corrupt(segment, position, "fewer than \(BatchFormat.headerSize) bytes before the end")
                }
                if let problem = header.structuralProblem { throw self.corrupt(segment, position, problem) }
                guard header.baseOffset == expected else {
                    // The previous header's count (or this base offset) is damaged; blame the earlier batch.
                    throw self.corrupt(
                        segment,
                        previous ?? position,
                        "batch at \(position) starts at offset \(header.baseOffset), expected \(expected)"
                    )
                }
                if header.baseOffset >= end { return true }
                let total = Int64(header.totalSize)
                guard position + total <= size else {
                    throw self.corrupt(segment, position, "batch of \(total) bytes runs past the end \(size)")
                }
                if header.nextOffset <= offset {
                    previous = position
                    expected = header.nextOffset
                    position += total
                    continue
                }
                if count() > 0 && bytes + header.totalSize > maxBytes { return true }
                let batch = try segment.read(at: position, count: header.totalSize)
                let reachedEnd: Bool
                do {
                    reachedEnd = try take(batch, end)
                } catch {
                    throw self.corrupt(segment, position, error.reason)
                }
                if reachedEnd { return true }
                bytes += header.totalSize
                if count() >= maxRecords || bytes >= maxBytes { return true }
                previous = position
                expected = header.nextOffset
                position += total
            }
        } catch let error as FileIOError {
            throw self.storageFailure("read", error)
        } catch let error as LogStoreError {
            if error.kind == .corruptBatch && count() > 0 {
                // Serve what precedes the corrupt batch; the next read starting there reports it.
                return true
            }
            throw error
        } catch {
            throw LogStoreError(.storageFailure, "topic '\(self.name)': read failed: \(error)")
        }
        return false
    }

    func readsFromMemory(from offset: Int64) -> Bool {
        self.recent.withLock { $0.covers(offset) }
    }

    private func corrupt(_ segment: Segment, _ position: Int64, _ reason: String) -> LogStoreError {
        LogStoreError(
            .corruptBatch,
            "topic '\(self.name)': corrupt batch at position \(position) of \(segment.logPath): \(reason)"
        )
    }

    // MARK: Close

    func close() async throws(LogStoreError) {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<Void, LogStoreError>, Never>) in
            self.writeQueue.async {
                let first = self.state.withLock { state in
                    defer { state.closing = true }
                    return !state.closing
                }
                guard first else {
                    continuation.resume(returning: .success(()))
                    return
                }
                // Everything queued before the close is written; the sync queue finishes its group commits first.
                self.syncQueue.async { continuation.resume(returning: self.finishClose()) }
            }
        }
        try result.get()
    }

    /// Sync queue: final sync, clean marker, release of the segments.
    private func finishClose() -> Result<Void, LogStoreError> {
        let (segments, failure) = self.state.withLock { state in
            defer {
                state.closed = true
                state.segments = []
                state.dirtySegments = []
            }
            return (state.segments, state.failure)
        }
        self.recent.withLock { $0 = RecentBatches() }
        if let failure {
            // A preallocation under way stops at its next piece (it sees the failure); none outlives the close.
            if self.config.preallocateBytes > 0 { self.preallocations.wait() }
            self.removeSpare()
            self.logger.warning("failed topic log closed without a clean marker; the next open recovers it")
            return .failure(failure)
        }
        let active = segments[segments.count - 1]
        do {
            try self.cutPreallocation(active)
            self.removeSpare()
            try self.io.fdatasync(active.logFD, path: active.logPath)
            try self.io.fdatasync(active.indexFD, path: active.indexPath)
            try Recovery.writeCleanMarker(directory: self.directory, endOffset: self.endOffset, io: self.io)
        } catch {
            let failure = self.storageFailure("close", error)
            self.fail(failure)
            return .failure(failure)
        }
        return .success(())
    }
}

/// The newest batches of a log as written, oldest first, at most a byte limit (but always the newest one).
private struct RecentBatches {
    private var entries: [(base: Int64, next: Int64, batch: ByteBuffer)] = []
    /// Entries before this index were dropped (compacted away now and then).
    private var head = 0
    private var bytes = 0

    mutating func add(_ batch: ByteBuffer, base: Int64, next: Int64, limit: Int) {
        // Batches are written in offset order; after a gap (none is expected) only the new one is kept.
        if let last = self.entries.last, last.next != base { self = RecentBatches() }
        self.entries.append((base, next, batch))
        self.bytes += batch.readableBytes
        while self.bytes > limit, self.entries.count - self.head > 1 {
            self.bytes -= self.entries[self.head].batch.readableBytes
            self.entries[self.head].batch = ByteBuffer()
            self.head += 1
        }
        if self.head >= 64, self.head * 2 >= self.entries.count {
            self.entries.removeFirst(self.head)
            self.head = 0
        }
    }

    func covers(_ offset: Int64) -> Bool {
        self.head < self.entries.count && self.entries[self.head].base <= offset
    }

    /// The batches from the one holding `offset` on, as many as a read of `maxBytes` can take (at least one), or
    /// nil when `offset` is older than the oldest kept.
    func batches(from offset: Int64, maxBytes: Int) -> [ByteBuffer]? {
        guard self.covers(offset) else { return nil }
        var low = self.head
        var high = self.entries.count
        while low < high {  // the first batch that ends after `offset`
            let mid = (low + high) / 2
            if self.entries[mid].next <= offset { low = mid + 1 } else { high = mid }
        }
        var batches: [ByteBuffer] = []
        var bytes = 0
        for entry in self.entries[low...] {
            batches.append(entry.batch)
            bytes += entry.batch.readableBytes
            if bytes >= maxBytes { break }
        }
        return batches
    }
}
