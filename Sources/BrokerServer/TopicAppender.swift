import DequeModule
import Locking
import LogStore

/// Orders and batches appends to one topic.
///
/// Publishes are queued in arrival order (the event loop enqueues synchronously, so one connection's publishes keep
/// their order). One append at a time is with the log: everything queued, up to `maxBatchBytes`, goes as a single
/// append. While that append waits for its fdatasync, new publishes queue up and share the next one: group commit
/// across connections without reordering within one. The next append is handed to the log from the completion of
/// the previous one, on the log's thread: no task sits on the path (each hand-off between threads costs tens of
/// microseconds of a publish's latency on a busy machine).
///
/// Records queued in their stored layout are encoded (and compressed) as they are queued, on the queuing thread,
/// each entry its own batch: that work overlaps the log's write and fdatasync of the append before, instead of
/// lengthening the log's one-at-a-time cycle (`TopicLog.append(bodiesBy:completion:)` writes an append's batches
/// together, under one fdatasync). Deferred records are laid out and encoded together on the log's writer.
final class TopicAppender: Sendable {
    typealias Completion = @Sendable (Result<AppendResult, LogStoreError>) -> Void

    /// Records whose stored layout is written, and encoded, where the log writes their batch (the `bodiesBy`
    /// closure of `TopicLog.append(bodiesBy:completion:)`: a file log's write queue), not by whoever queued them:
    /// the event loop that serves a pipelining connection is its bottleneck, and the bytes are the same wherever
    /// they are written.
    struct DeferredRecords: Sendable {
        /// Number of records `build` lays out.
        let count: Int
        /// Exactly the bytes `build` writes.
        let storedBytes: Int
        /// Lays the records out (once).
        let build: @Sendable () -> StoredRecordBytes
    }

    private enum Records {
        /// Encoded when queued, with the bytes of the records' values.
        case encoded(EncodedBatchBody, valueBytes: Int)
        case deferred(DeferredRecords)

        var count: Int {
            switch self {
            case .encoded(let body, _): Int(body.recordCount)
            case .deferred(let deferred): deferred.count
            }
        }
    }

    private struct Pending {
        /// The records (the part of the batch body they become).
        var records: Records
        /// Their size for batching: key, header names and values, value, and 16 bytes per record (the stored size
        /// less 4 per record).
        var bytes: Int
        var completion: Completion
    }

    private struct State {
        var queue: Deque<Pending> = []
        /// A batch is with the log.
        var draining = false
    }

    let log: any TopicLog
    private let maxBatchBytes: Int
    private let listeners: TopicListeners?
    private let state = Locked(State())
    /// The topic's metric objects: appended records and bytes are counted once per batch.
    let metrics: TopicMetrics

    /// - Parameters:
    ///   - listeners: woken after every append, so subscribers of this topic read what it added.
    ///   - metrics: the topic's metric objects (created once, when the topic opened).
    init(log: any TopicLog, metrics: TopicMetrics, listeners: TopicListeners? = nil, maxBatchBytes: Int = 4 << 20) {
        self.log = log
        self.metrics = metrics
        self.listeners = listeners
        self.maxBatchBytes = maxBatchBytes
    }

    /// Queues records; `completion` runs (on any thread) once they are appended or failed. They are laid out in
    /// their stored form here (records too large for any batch fail at once, without being queued).
    func enqueue(_ records: [LogRecord], completion: @escaping Completion) {
        let stored: StoredRecordBytes
        do {
            stored = try BatchCodec.storedRecords(records)
        } catch {
            completion(.failure(error))
            return
        }
        self.enqueue(stored: stored, completion: completion)
    }

    /// Queues records already in their stored layout (a PUBLISH's accepted records, converted from the frame's
    /// bytes); `completion` runs (on any thread) once they are appended or failed. A connection's publishes that
    /// arrived together come as one entry, their records back to back: one queue entry, one batch (encoded and
    /// compressed here, on the caller's thread) and one completion for all of them (its `AppendResult` spans them
    /// all). Records the log cannot take as a batch fail at once, without being queued.
    func enqueue(stored records: StoredRecordBytes, completion: @escaping Completion) {
        let body: EncodedBatchBody
        do {
            body = try self.log.encodeBody([records])
        } catch {
            completion(.failure(error))
            return
        }
        self.enqueue(
            Pending(
                records: .encoded(body, valueBytes: records.valueBytes),
                bytes: records.bytes.readableBytes - 4 * records.count, completion: completion
            )
        )
    }

    /// ``enqueue(stored:completion:)`` for records laid out when their batch is written (see `DeferredRecords`).
    func enqueue(deferred records: DeferredRecords, completion: @escaping Completion) {
        self.enqueue(Pending(records: .deferred(records), bytes: records.storedBytes - 4 * records.count, completion: completion))
    }

    private func enqueue(_ pending: Pending) {
        let batch: [Pending]? = self.state.withLock { state in
            state.queue.append(pending)
            if state.draining { return nil }
            state.draining = true
            return self.takeBatch(&state)
        }
        if let batch { self.write(batch) }
    }

    /// Returns once everything queued so far is appended (or failed), waiting at most `timeout`.
    func flushed(timeout: Duration = .seconds(5)) async {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while self.state.withLock({ $0.draining || !$0.queue.isEmpty }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Takes the queued requests that fit one batch (at least one); clears `draining` when there are none.
    private func takeBatch(_ state: inout State) -> [Pending]? {
        var taken: [Pending] = []
        var bytes = 0
        while let next = state.queue.first, taken.isEmpty || bytes + next.bytes <= self.maxBatchBytes {
            bytes += next.bytes
            taken.append(state.queue.removeFirst())
        }
        if taken.isEmpty {
            state.draining = false
            return nil
        }
        return taken
    }

    /// Appends the entries taken together; its completion answers their requests, then hands the log the next ones.
    private func write(_ batch: [Pending]) {
        // Deferred records are laid out and encoded where the log writes (its write queue), not on this thread (an
        // event loop when the log was idle), consecutive ones as one batch. Their value bytes, for the metric, are
        // known once they are laid out.
        let valueBytes = Locked(0)
        let log = self.log
        log.append(bodiesBy: { () throws(LogStoreError) -> [EncodedBatchBody] in
            var bodies: [EncodedBatchBody] = []
            var deferred: [StoredRecordBytes] = []
            var values = 0
            for pending in batch {
                switch pending.records {
                case .encoded(let body, let bytes):
                    if !deferred.isEmpty {
                        bodies.append(try log.encodeBody(deferred))
                        deferred.removeAll()
                    }
                    bodies.append(body)
                    values += bytes
                case .deferred(let records):
                    let stored = records.build()
                    precondition(
                        stored.count == records.count && stored.bytes.readableBytes == records.storedBytes,
                        "deferred records built \(stored.count) records in \(stored.bytes.readableBytes) bytes, sized "
                            + "\(records.count) in \(records.storedBytes)"
                    )
                    deferred.append(stored)
                    values += stored.valueBytes
                }
            }
            if !deferred.isEmpty { bodies.append(try log.encodeBody(deferred)) }
            valueBytes.withLock { $0 = values }
            return bodies
        }) { result in
            switch result {
            case .success(let appended):
                self.metrics.publishedRecords.increment(by: batch.reduce(0) { $0 + $1.records.count })
                self.metrics.publishedBytes.increment(by: valueBytes.withLock { $0 })
                var base = appended.baseOffset
                for pending in batch {
                    pending.completion(.success(AppendResult(baseOffset: base, count: pending.records.count)))
                    base += Int64(pending.records.count)
                }
            case .failure(let error):
                for pending in batch { pending.completion(.failure(error)) }
            }
            self.listeners?.notify(topic: self.log.name, endOffset: self.log.endOffset)
            if let next = self.state.withLock({ self.takeBatch(&$0) }) { self.write(next) }
        }
    }
}
