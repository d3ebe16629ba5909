import LogStore
import NIOCore
import TopicRouter
import WireProtocol

/// Replays quarantined records into their original topics under the current policy, each at most once.
///
/// At most once, across crashes: before appending, an intent (`intent:<offset>` → topic and its end offset) is put in
/// a durable table; after the append, the result (`done:<offset>`) replaces it in one fsynced batch. A later request
/// for the same offset answers the stored result with the EARLIER flag. An intent without a result means the broker
/// stopped mid-replay: the topic is scanned from the intent's end offset for a record whose `replayed-from` is this
/// offset; if one is there, that is the result; if not, the record was never appended and is replayed now.
/// A record that still fails policy is not recorded: each request re-evaluates it, so it can pass once the policy
/// or the record's topic rules change.
///
/// Requests are served one at a time (an actor); replay is an operator action, rare by nature, so its blocking file
/// I/O (a read of one record, an fsync of the table) runs here rather than on an event loop.
actor QuarantineReplayer {
    private let table: DurableTable
    private let quarantineLog: any TopicLog
    private let topics: TopicTable
    private let metrics: BrokerMetrics

    init(table: DurableTable, quarantineLog: any TopicLog, topics: TopicTable, metrics: BrokerMetrics) {
        self.table = table
        self.quarantineLog = quarantineLog
        self.topics = topics
        self.metrics = metrics
    }

    /// How many `__quarantine` offsets in `range` were replayed (for `brokerd_quarantine_pending_records`). Reads
    /// the durable table's in-memory map only; safe from any thread.
    nonisolated func replayedCount(in range: Range<Int64>) -> Int {
        self.table.entries(withPrefix: "done:").reduce(0) { count, entry in
            guard let offset = Int64(entry.key.dropFirst("done:".count)), range.contains(offset) else { return count }
            return count + 1
        }
    }

    /// One result per offset, in order; `onResult` sees each with the policy version it was decided under (for the
    /// audit ledger).
    func replay(
        _ offsets: [Int64],
        by operatorID: String,
        policy: Policy,
        onResult: @Sendable (ReplayResult) -> Void
    ) async -> [ReplayResult] {
        var results: [ReplayResult] = []
        for offset in offsets {
            let result = await self.replayOne(offset, by: operatorID, policy: policy)
            self.metrics.replayAnswered(result)
            onResult(result)
            results.append(result)
        }
        return results
    }

    private func replayOne(_ offset: Int64, by operatorID: String, policy: Policy) async -> ReplayResult {
        if let done = self.table.get(Self.doneKey(offset)), var earlier = Self.decodeDone(done, offset: offset) {
            earlier.flags |= ReplayResult.earlierFlag
            return earlier
        }
        let stored: StoredRecord
        do {
            guard offset >= self.quarantineLog.startOffset, offset < self.quarantineLog.endOffset,
                let first = try self.quarantineLog.read(from: offset, maxRecords: 1, maxBytes: 1).first,
                first.offset == offset
            else {
                return ReplayResult(quarantineOffset: offset, outcome: .notFound, message: "no record at offset \(offset) of __quarantine (it holds \(self.quarantineLog.startOffset)..<\(self.quarantineLog.endOffset))")
            }
            stored = first
        } catch {
            return ReplayResult(quarantineOffset: offset, outcome: .notFound, message: "reading __quarantine at \(offset) failed: \(error)")
        }
        let headers = stored.record.headers
        guard let topic = headers.text(RecordHeaderName.quarantineTopic) else {
            return ReplayResult(quarantineOffset: offset, outcome: .invalid, message: "the record at \(offset) has no quarantine-topic header")
        }
        if let intent = self.table.get(Self.intentKey(offset)), let found = self.findReplayed(offset, intent: intent) {
            // A replay appended it, then stopped before recording the result.
            try? self.table.apply([.put(key: Self.doneKey(offset), value: Self.encodeDone(found)), .delete(key: Self.intentKey(offset))])
            var earlier = found
            earlier.flags |= ReplayResult.earlierFlag
            return earlier
        }
        let quarantineHeaders = Set(RecordHeaderName.quarantineSet)
        var record = stored.record
        record.headers.removeAll { quarantineHeaders.contains($0.name) }
        let verdict = record.value.withUnsafeReadableBytes {
            policy.recordVerdict(topic: topic, headers: record.headers, value: $0)
        }
        switch verdict {
        case .quarantine(let reason, let rule, let message):
            return ReplayResult(quarantineOffset: offset, outcome: .stillQuarantined, topic: topic, reason: reason.rawValue, message: "\(message) (rule \(rule))")
        case .refuse(let code, let reason, _):
            return ReplayResult(quarantineOffset: offset, outcome: .stillQuarantined, topic: topic, reason: ErrorCode(code).name, message: reason)
        case .accept:
            break
        }
        guard let appender = self.topics.appender(for: topic) else {
            return ReplayResult(quarantineOffset: offset, outcome: .stillQuarantined, topic: topic, reason: "UNKNOWN_TOPIC", message: "topic '\(topic)' has no open log")
        }
        record.headers += [
            LogHeader(RecordHeaderName.brokerReceivedAt, headers.text(RecordHeaderName.quarantineTime) ?? "\(stored.record.timestamp)"),
            LogHeader(RecordHeaderName.brokerProducer, headers.text(RecordHeaderName.quarantineProducer) ?? ""),
            LogHeader(RecordHeaderName.brokerPolicyVersion, policy.policyVersion),
            LogHeader(RecordHeaderName.replayedFrom, "\(offset)"),
            LogHeader(RecordHeaderName.replayedBy, operatorID),
            LogHeader(RecordHeaderName.replayPolicyVersion, policy.policyVersion),
        ]
        // A dedupe key moves with the record: from its quarantine entry to the topic offset.
        let keys = record.headers.filter { $0.name == RecordHeaderName.dedupeKey }
        let gate = keys.count == 1 ? self.topics.gate(for: topic) : nil
        let ticket = gate.flatMap { try? $0.beginReplay(key: keys[0].value) }
        do {
            try self.table.put(Self.intentKey(offset), Array("\(topic)\t\(appender.log.endOffset)".utf8))
            let appended: AppendResult
            do {
                appended = try await appender.append([record])
            } catch {
                if let gate, let ticket { gate.release(ticket) }
                throw error
            }
            if let gate, let ticket { gate.replayed(ticket, newOffset: appended.baseOffset) }
            if let quarantinedAt = headers.text(RecordHeaderName.quarantineTime).flatMap({ Int64($0) }) {
                self.metrics.quarantineAgeAtReplay.recordMilliseconds(max(0, currentTimeMillis() - quarantinedAt))
            }
            let result = ReplayResult(quarantineOffset: offset, outcome: .replayed, topic: topic, newOffset: appended.baseOffset, message: "appended to \(topic) at offset \(appended.baseOffset)")
            try self.table.apply([.put(key: Self.doneKey(offset), value: Self.encodeDone(result)), .delete(key: Self.intentKey(offset))])
            return result
        } catch {
            return ReplayResult(quarantineOffset: offset, outcome: .stillQuarantined, topic: topic, reason: "STORAGE_FAILURE", message: "replay not completed: \(error)")
        }
    }

    /// The record a stopped replay appended, if any: scans the topic from the intent's end offset.
    private func findReplayed(_ offset: Int64, intent: [UInt8]) -> ReplayResult? {
        let parts = String(decoding: intent, as: UTF8.self).split(separator: "\t", maxSplits: 1)
        guard parts.count == 2, let from = Int64(parts[1]), let log = self.topics.log(for: String(parts[0])) else { return nil }
        var found: Int64?
        _ = try? log.scan(from: max(from, log.startOffset)) { stored in
            if found == nil, stored.record.headers.text(RecordHeaderName.replayedFrom) == "\(offset)" { found = stored.offset }
        }
        return found.map {
            ReplayResult(quarantineOffset: offset, outcome: .replayed, topic: String(parts[0]), newOffset: $0, message: "appended to \(parts[0]) at offset \($0)")
        }
    }

    private static func doneKey(_ offset: Int64) -> String { "done:\(offset)" }
    private static func intentKey(_ offset: Int64) -> String { "intent:\(offset)" }

    /// `REPLAYED \t topic \t newOffset`.
    private static func encodeDone(_ result: ReplayResult) -> [UInt8] {
        Array("\(result.outcome)\t\(result.topic)\t\(result.newOffset)".utf8)
    }

    private static func decodeDone(_ bytes: [UInt8], offset: Int64) -> ReplayResult? {
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "\(ReplayOutcome.replayed)", let newOffset = Int64(parts[2]) else { return nil }
        return ReplayResult(quarantineOffset: offset, outcome: .replayed, topic: String(parts[1]), newOffset: newOffset, message: "replayed earlier to \(parts[1]) at offset \(newOffset)")
    }
}

extension TopicAppender {
    /// Appends `records` as one queued request and returns their offsets.
    func append(_ records: [LogRecord]) async throws(LogStoreError) -> AppendResult {
        let result: Result<AppendResult, LogStoreError> = await withCheckedContinuation { continuation in
            self.enqueue(records) { continuation.resume(returning: $0) }
        }
        return try result.get()
    }
}

extension [LogHeader] {
    /// The first header with this name, as text.
    func text(_ name: String) -> String? {
        self.first { $0.name == name }.map { String(decoding: $0.value.readableBytesView, as: UTF8.self) }
    }
}
