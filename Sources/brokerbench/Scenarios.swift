import BrokerClient
import Foundation
import Histogram
import Locking
import NIOCore
import Synchronization
import WireProtocol

/// Monotonic nanoseconds, comparable across processes on this machine (CLOCK_MONOTONIC).
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
func makeHistogram() -> Histogram<UInt64> {
    Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
}

/// The phases of a timed run: warm-up, then the measured window.
struct RunClock: Sendable {
    let start: UInt64
    let measureFrom: UInt64
    let end: UInt64

    init(warmup: Double, duration: Double) {
        self.start = monotonicNanos()
        self.measureFrom = self.start + UInt64(warmup * 1e9)
        self.end = self.measureFrom + UInt64(duration * 1e9)
    }

    var isOver: Bool { monotonicNanos() >= self.end }
}

/// A shared counter (a class, so tasks can capture it).
final class Counter: Sendable {
    private let atomic: Atomic<Int>
    init(_ value: Int = 0) { self.atomic = Atomic(value) }
    var value: Int { self.atomic.load(ordering: .relaxed) }
    /// Adds `amount` (may be negative) and returns the new value.
    @discardableResult
    func add(_ amount: Int) -> Int { self.atomic.wrappingAdd(amount, ordering: .relaxed).newValue }
}

/// Prints the rate so far once a second (on standard error, so the table on standard output stays clean).
final class Progress: Sendable {
    let measured = Counter()
    let all = Counter()
    private let task: Locked<Task<Void, Never>?> = Locked(nil)

    func start(clock: RunClock, label: String) {
        let task = Task {
            var last = 0
            var lastTime = monotonicNanos()
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let now = monotonicNanos()
                let count = self.all.value
                let rate = Double(count - last) / (Double(now - lastTime) / 1e9)
                last = count
                lastTime = now
                let elapsed = Double(now - clock.start) / 1e9
                let total = Double(clock.end - clock.start) / 1e9
                let phase = now < clock.measureFrom ? " (warm-up)" : ""
                FileHandle.standardError.write(
                    Data(String(format: "[%5.1fs / %5.1fs] %@: %12.0f rec/s%@\n", elapsed, total, label, rate, phase).utf8)
                )
            }
        }
        self.task.withLock { $0 = task }
    }

    func stop() {
        self.task.withLock { $0?.cancel() }
    }
}

/// `count` distinct JSON events of exactly `size` bytes each, as the learning portal would send them: varying
/// account ids, times, modules and scores, and a random hex trace id as filler, so LZ4 sees realistic text
/// rather than repeated bytes (records in one batch are all different).
func makePayloads(size: Int, count: Int = 1024) -> [ByteBuffer] {
    var generator = SystemRandomNumberGenerator()
    let hex = Array("0123456789abcdef".utf8)
    return (0..<count).map { n in
        let account = String(UInt32.random(in: 0...0xFFFFFF, using: &generator), radix: 16)
        let text = #"{"event_type":"account.education.completed","source_system":"learning_portal","#
            + #""account_id":"acct_\#(account)","ts":\#(1_776_089_400_000 + n * 7919),"#
            + #""module_id":"onboarding-\#(100 + n % 37)","score":\#(n % 101),"trace_id":""#
        var bytes = Array(text.utf8)
        let tail = Array(#""}"#.utf8)
        while bytes.count + tail.count < size { bytes.append(hex[Int.random(in: 0..<16, using: &generator)]) }
        bytes = Array((bytes + tail).prefix(size))
        return ByteBuffer(bytes: bytes)
    }
}

/// The headers the broker's default topic policy requires (event_type, source_system, consent_scope).
let benchHeaders = [
    WireHeader(name: "event_type", value: ByteBuffer(string: "account.education.completed")),
    WireHeader(name: "source_system", value: ByteBuffer(string: "learning_portal")),
    WireHeader(name: "consent_scope", value: ByteBuffer(string: "educational")),
]

extension Scenario {
    func run(on target: BenchTarget, parameters: BenchParameters) async throws -> BenchResult {
        switch self {
        case .durablePublish, .pipelinedSingle:
            return try await PublishLoad(target: target, parameters: parameters, scenario: self).run()
        case .syncLatency:
            var result = try await PublishLoad(target: target, parameters: parameters, scenario: self).run()
            let fsync = try measureFdatasync(directory: target.dataDir ?? NSTemporaryDirectory(), iterations: 2000)
            result.extra["fdatasync_4k_p50_us"] = Double(fsync.valueAtPercentile(50))
            result.extra["fdatasync_4k_p99_us"] = Double(fsync.valueAtPercentile(99))
            if let p99 = result.latency?.p99 {
                result.extra["ack_p99_minus_fdatasync_p99_us"] = p99 - Double(fsync.valueAtPercentile(99))
            }
            return result
        case .e2eLatency:
            return try await EndToEndLoad(target: target, parameters: parameters).run()
        case .consume:
            return try await ConsumeLoad(target: target, parameters: parameters).run()
        case .manyConnections:
            return try await ManyConnections(target: target, parameters: parameters).run()
        case .policyOverhead:
            return try await PolicyLoad(target: target, parameters: parameters).run()
        case .recovery:
            return try await RecoveryRun(target: target, parameters: parameters).run()
        }
    }
}

/// What makes every record of a producer unique: a header (`dedupe-key`, or policy-overhead's same-records half's
/// header of the same length that no check reads) whose value is `prefix` and then a counter.
struct UniqueKeys: Sendable {
    var header: String = RecordHeaderName.dedupeKey
    var prefix: String
}

/// One producer worker's batches with a unique `dedupe-key` (or `UniqueKeys.header`) on every record, for each send.
///
/// It holds its own copy of the batches in which every record already ends with a `dedupe-key` header, and
/// rewrites those headers' values in place: a send costs one key buffer for the whole batch (each key a slice of
/// it), not a new header array and a buffer per record. (Stamping a shared batch copied every record's header
/// array; on the two cores it shares with the broker that cost the client about 1 µs per record in
/// policy-overhead's policy half.) When a batch handed out earlier is still held (a pipelined send not yet
/// encoded) the rewrite copies it first, as any Swift array would.
struct DedupeKeyStamper {
    private var batches: [[WireRecord]]
    private let prefix: [UInt8]
    private var sequence = 0

    /// - Parameters:
    ///   - batches: the records to send; each gets a `keys.header` header appended in this stamper's copy.
    ///   - keys: the header, and what every key starts with (unique per run, connection and worker); a counter
    ///     follows.
    init(batches: [[WireRecord]], keys: UniqueKeys) {
        self.batches = batches.map { batch in
            batch.map { record in
                var record = record
                record.headers.append(WireHeader(name: keys.header, value: ByteBuffer()))
                return record
            }
        }
        self.prefix = Array(keys.prefix.utf8)
    }

    /// Batch `round % count`, each record's key now `prefix` followed by the next counter value.
    mutating func batch(_ round: Int) -> [WireRecord] {
        let index = round % self.batches.count
        let count = self.batches[index].count
        let first = self.sequence
        self.sequence += count
        // All the keys first, then the slices: a write after a slice was taken would copy the buffer. One raw write
        // for all of them (a ByteBuffer write per prefix and per counter cost about 300 instructions a key).
        let prefix = self.prefix
        let room = count * (prefix.count + 20)
        var keys = ByteBufferAllocator().buffer(capacity: room)
        var ends: [Int] = []
        ends.reserveCapacity(count)
        keys.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { out in
            var at = 0
            prefix.withUnsafeBytes { prefix in
                for n in first..<(first + count) {
                    if let base = prefix.baseAddress {
                        (out.baseAddress! + at).copyMemory(from: base, byteCount: prefix.count)
                        at += prefix.count
                    }
                    at += Self.putDecimal(n, at: out.baseAddress! + at)
                    ends.append(at)
                }
            }
            return at
        }
        Self.stamp(&self.batches[index], keys: keys, ends: ends)
        return self.batches[index]
    }

    /// Writes `value` (≥ 0) in decimal at `destination` (room for 20 digits); returns the digits written. No
    /// string is made (`String(n)` took about 300 instructions a key more, callgrind).
    static func putDecimal(_ value: Int, at destination: UnsafeMutableRawPointer) -> Int {
        precondition(value >= 0, "a dedupe key counter is never negative")
        var digits = 1
        var rest = UInt(value) / 10
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        rest = UInt(value)
        for position in stride(from: digits - 1, through: 0, by: -1) {
            destination.storeBytes(of: UInt8(ascii: "0") + UInt8(rest % 10), toByteOffset: position, as: UInt8.self)
            rest /= 10
        }
        return digits
    }

    private static func stamp(_ batch: inout [WireRecord], keys: ByteBuffer, ends: [Int]) {
        var start = 0
        for i in batch.indices {
            batch[i].headers[batch[i].headers.count - 1].value = keys.getSlice(at: start, length: ends[i] - start)!
            start = ends[i]
        }
    }
}

/// Set once to end a load early (recovery ends its fill when the log is big enough).
final class StopFlag: Sendable {
    private let flag = Atomic(false)
    var isSet: Bool { self.flag.load(ordering: .relaxed) }
    func set() { self.flag.store(true, ordering: .relaxed) }
}

/// Producers publishing as fast as the in-flight window allows; latency is per PUBLISH request, send to ack.
struct PublishLoad {
    let target: BenchTarget
    let parameters: BenchParameters
    let scenario: Scenario
    /// Where to publish (default: the target's plain topics).
    var topics: [String]? = nil
    /// The headers every record carries.
    var headers: [WireHeader] = benchHeaders
    /// When > 0, records also carry a `recipient` header cycling over this many values.
    var recipients: Int = 0
    /// Whether every record carries a unique `dedupe-key` (default: `--dedupe-keys`).
    var dedupeKeys: Bool? = nil
    /// The header that carries those unique keys.
    var keyHeader = RecordHeaderName.dedupeKey
    /// Ends the run early when set.
    var stop: StopFlag? = nil
    /// The progress label (default: the scenario's name).
    var label: String? = nil

    func run() async throws -> BenchResult {
        let p = self.parameters
        var clients: [BrokerClient] = []
        for _ in 0..<p.producers { clients.append(try await self.target.connect()) }
        defer { for client in clients { Task { await client.close() } } }
        let payloads = makePayloads(size: p.recordSize)
        let headers = self.headers
        let recipients = self.recipients
        let batches = (0..<16).map { b in
            (0..<p.batch).map { n in
                let index = b * p.batch + n
                var recordHeaders = headers
                if recipients > 0 {
                    let recipient = ByteBuffer(string: "bench-recipient-\(index % recipients)")
                    recordHeaders.append(WireHeader(name: RecordHeaderName.recipient, value: recipient))
                }
                return WireRecord(headers: recordHeaders, value: payloads[index % payloads.count])
            }
        }
        let withKeys = self.dedupeKeys ?? p.dedupeKeys
        // Dedupe keys are unique per run (a random tag) and producer connection, then a counter.
        let runTag = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        let clock = RunClock(warmup: p.warmup, duration: p.duration)
        let cpu = CPUWindow(
            measureFrom: clock.measureFrom, brokerPid: self.target.brokerPid, dataDir: self.target.dataDir
        )
        let budget = p.records.map { Counter($0) }
        let progress = Progress()
        let errors = Counter(0)
        let duplicates = Counter(0)
        let stop = self.stop
        progress.start(clock: clock, label: self.label ?? self.scenario.rawValue)
        let topics = self.topics ?? self.target.topics
        var histogram = makeHistogram()
        var finishedAt = clock.measureFrom
        // Every request's acknowledgement: a histogram and the time of the last one per connection.
        var loads: [EventLoopFuture<(Histogram<UInt64>, UInt64)>] = []
        var tasks: [Task<(Histogram<UInt64>, UInt64), any Error>] = []
        let tallies = PublishTallies(
            clock: clock, budget: budget, stop: stop, progress: progress, errors: errors, duplicates: duplicates
        )
        for (index, client) in clients.enumerated() {
            let topic = topics[index % topics.count]
            let keys = withKeys ? UniqueKeys(header: self.keyHeader, prefix: "bb-\(runTag)-\(index)-0-") : nil
            if self.scenario == .pipelinedSingle {
                // A task per connection drives a pipelined publisher: it keeps up to `inFlight` requests
                // outstanding and reads their acknowledgements in order, as a real producer would (a task per
                // in-flight request awaiting each answer cost the client about as much CPU as the broker).
                let load = PipelinedLoad(
                    publisher: client.pipelinedPublisher(maxInFlight: p.inFlight), topic: topic,
                    batches: batches, keys: keys, tallies: tallies
                )
                tasks.append(Task { try await load.run() })
            } else {
                loads.append(
                    PublishSender.start(
                        on: client, inFlight: p.inFlight, topic: topic, batches: batches, keys: keys,
                        tallies: tallies
                    )
                )
            }
        }
        for future in loads {
            let (local, last) = try await future.get()
            histogram.add(local)
            finishedAt = max(finishedAt, last)
        }
        for task in tasks {
            let (local, last) = try await task.value
            histogram.add(local)
            finishedAt = max(finishedAt, last)
        }
        progress.stop()
        let seconds = Double(min(finishedAt, clock.end) - clock.measureFrom) / 1e9
        var result = BenchResult(
            scenario: self.scenario.rawValue, parameters: p, measuredSeconds: seconds,
            records: progress.measured.value, recordBytes: p.recordSize,
            errors: errors.value,
            latencyLabel: "publish ack latency per request (\(p.batch) record\(p.batch == 1 ? "" : "s"))",
            histogram: histogram
        )
        if withKeys { result.extra["dedupe_duplicates"] = Double(duplicates.value) }
        result.extra.merge(await cpu.finish(records: progress.measured.value)) { current, _ in current }
        return result
    }
}

/// What the producer connections of one `PublishLoad` share: when to stop (the clock, the budget of records, the stop
/// flag) and what they count.
struct PublishTallies: Sendable {
    let clock: RunClock
    let budget: Counter?
    let stop: StopFlag?
    let progress: Progress
    let errors: Counter
    let duplicates: Counter

    /// Whether a connection may send `records` more records now (when not, sending is over for it).
    func maySend(_ records: Int, now: UInt64) -> Bool {
        now < self.clock.end && self.stop?.isSet != true && self.budget.map { $0.add(-records) >= 0 } != false
    }

    /// Counts one request's results (sent at `sentAt`, answered at `answeredAt`; `withKeys`: its records carried
    /// dedupe keys) and, when it was sent in the measured window, records its latency in `histogram`.
    func answered(
        _ results: [PublishResult], withKeys: Bool, sentAt: UInt64, answeredAt: UInt64,
        into histogram: inout Histogram<UInt64>
    ) {
        let ok = results.reduce(0) { $0 + ($1.code == .ok ? 1 : 0) }
        if ok < results.count, let failed = results.first(where: { $0.code != .ok }) {
            reportFirstError(failed)
            self.errors.add(results.count - ok)
        }
        if withKeys { self.duplicates.add(results.reduce(0) { $0 + ($1.isDuplicate ? 1 : 0) }) }
        self.progress.all.add(ok)
        if sentAt >= self.clock.measureFrom {
            self.progress.measured.add(ok)
            histogram.record((answeredAt - sentAt) / 1000)
        }
    }
}

/// One connection's pipelined publishing (pipelined-single): up to `inFlight` PUBLISHes outstanding on a
/// `PipelinedPublisher`, each acknowledgement read in order; latency per request, send to acknowledgement.
struct PipelinedLoad: Sendable {
    let publisher: PipelinedPublisher
    let topic: String
    let batches: [[WireRecord]]
    /// With dedupe keys: this connection's.
    let keys: UniqueKeys?
    let tallies: PublishTallies

    /// Returns the latency histogram and when the last acknowledgement arrived.
    func run() async throws -> (Histogram<UInt64>, UInt64) {
        let window = self.publisher.maxInFlight
        var local = makeHistogram()
        var acknowledgements = self.publisher.acknowledgements.makeAsyncIterator()
        // When each outstanding request was sent, by sequence number modulo the window: a slot is reused only
        // after its request's acknowledgement was read.
        var sentAt = [UInt64](repeating: 0, count: window)
        var outstanding = 0
        var round = 0
        var stamper = self.keys.map { DedupeKeyStamper(batches: self.batches, keys: $0) }
        var sending = true
        var last = monotonicNanos()
        defer { self.publisher.finish() }
        while true {
            while sending, outstanding < window {
                let now = monotonicNanos()
                guard self.tallies.maySend(self.batches[round % self.batches.count].count, now: now) else {
                    sending = false
                    break
                }
                let batch = stamper?.batch(round) ?? self.batches[round % self.batches.count]
                round += 1
                let number = try await self.publisher.send(topic: self.topic, records: batch)
                sentAt[Int(number % UInt64(window))] = now
                outstanding += 1
            }
            guard outstanding > 0, let acknowledgement = await acknowledgements.next() else { break }
            outstanding -= 1
            last = monotonicNanos()
            self.tallies.answered(
                try acknowledgement.result.get(), withKeys: self.keys != nil,
                sentAt: sentAt[Int(acknowledgement.sequence % UInt64(window))], answeredAt: last, into: &local
            )
        }
        return (local, last)
    }
}

/// One PUBLISH of e2e-latency's producer, until its acknowledgement: when it was sent, whether in the measured
/// window, and how many records it carried.
struct SentPublish: Sendable {
    var at: UInt64
    var measured: Bool
    var records: Int
    /// The first record's number in the schedule (e2e-latency: its scheduled time is
    /// `EndToEndLoad.scheduled(first, ...)`).
    var first: Int = 0
}

/// e2e-latency's records, stamped in place for each PUBLISH: the scenario's headers and a last one (`stampHeader`)
/// whose 8-byte value is the record's scheduled send time.
///
/// A PUBLISH of `count` records reuses the array last sent with that count (the count varies with the pace: tens
/// of values at a steady rate), whose records, header arrays and stamp buffers are then unique, so the stamps are
/// written where they are. Building each record anew (a header array and a buffer slice per record, released after
/// the acknowledgement) cost the producer an allocation and about ten reference-count changes per record, on the two
/// cores the broker and the consumer share. Record `i` of a PUBLISH always carries payload `i` (modulo the
/// payloads): the records of one PUBLISH, which the broker compresses together, still all differ.
struct SentStamper {
    /// Arrays kept for reuse, by record count (counts up to `largestKept`).
    private var kept: [Int: [WireRecord]] = [:]
    private let payloads: [ByteBuffer]
    private let stampHeader: String
    static let largestKept = 1024

    init(payloads: [ByteBuffer], stampHeader: String) {
        precondition(!payloads.isEmpty, "SentStamper needs at least one payload")
        self.payloads = payloads
        self.stampHeader = stampHeader
    }

    /// `count` records, record `i` stamped with `stamp(i)`; hand them back with `giveBack` once sent.
    mutating func take(_ count: Int, stamp: (Int) -> UInt64) -> [WireRecord] {
        var records = self.kept.removeValue(forKey: count) ?? (0..<count).map { index in
            var value = ByteBuffer()
            value.writeInteger(UInt64(0))
            return WireRecord(
                headers: benchHeaders + [WireHeader(name: self.stampHeader, value: value)],
                value: self.payloads[index % self.payloads.count]
            )
        }
        for index in records.indices {
            let last = records[index].headers.count - 1
            records[index].headers[last].value.setInteger(stamp(index), at: 0)
        }
        return records
    }

    /// Keeps `records` (sent: the publisher encoded them and holds no reference) for the next PUBLISH of its count.
    mutating func giveBack(_ records: consuming [WireRecord]) {
        guard records.count <= Self.largestKept else { return }
        self.kept[records.count] = records
    }
}

/// What one e2e-latency consumer saw of the measured records: publish→deliver and publish→read (µs from each record's
/// scheduled send time) and the latency timeline, recorded together with each DELIVER.
struct Arrivals: Sendable {
    var deliver = makeHistogram()
    var read = makeHistogram()
    var timeline: LatencyTimeline

    init(seconds: Double, slowMicros: UInt64) {
        self.timeline = LatencyTimeline(seconds: seconds, slowMicros: slowMicros)
    }

    /// A measured record scheduled at `sent`, delivered to the handler at `deliveredAt` and read from the socket at
    /// `readAt` (all `monotonicNanos()`; `sent` at or after `measureFrom`).
    mutating func record(sent: UInt64, deliveredAt: UInt64, readAt: UInt64, measureFrom: UInt64) {
        let latency = (deliveredAt - min(sent, deliveredAt)) / 1000
        self.deliver.record(latency)
        self.read.record((readAt - min(sent, readAt)) / 1000)
        self.timeline.record(scheduledNanos: sent - measureFrom, latencyMicros: latency)
    }

    /// Adds another consumer's.
    mutating func add(_ other: Arrivals) {
        self.deliver.add(other.deliver)
        self.read.add(other.read)
        self.timeline.add(other.timeline)
    }
}

/// Publishes at a fixed rate (every `paceMicros` one PUBLISH carrying the records due) while consumers read from
/// latest; latency is from the time the schedule meant a record to be sent to its arrival at a consumer.
///
/// Both ends run on their connection's event loop, as callbacks, not as tasks: the producer's pace is a task
/// scheduled on the producer connection's event loop, which sends there and takes the acknowledgements there
/// (`pipelinedPublisher(maxInFlight:onAcknowledgement:)`), and each consumer is a handler its connection's event
/// loop calls with every DELIVER it reads (`subscribe(topic:start:credit:onBatch:)`). brokerbench shares the two
/// cores with the broker it measures: with a task per role, every PUBLISH, acknowledgement and DELIVER also crossed
/// between an event loop and the task pool (and the pace's sleep through a timer thread): about five thread
/// wake-ups per PUBLISH in brokerbench, each some 12–19 µs of CPU on this VM (docs/benchmarks/HISTORY.md, round 15).
struct EndToEndLoad {
    let target: BenchTarget
    let parameters: BenchParameters
    static let sentHeader = "bench-sent-ns"
    /// The longest wait after the send loop, first for PUBLISHes in flight, then for records still to arrive.
    static let drainSeconds: UInt64 = 30

    /// When record `n` (from 0) is due at `rate` records/s after `start` (monotonic ns): its `bench-sent-ns` stamp.
    static func scheduled(_ n: Int, start: UInt64, rate: Int) -> UInt64 {
        start + UInt64(Double(n) * 1e9 / Double(rate))
    }

    /// How many records are due `elapsedNanos` after the schedule's start: those whose ``scheduled(_:start:rate:)``
    /// time has come, record 0 at the start. (Before round 31 a record left one interval after its time, which at
    /// 2,000 records/s added 500 µs to every record's latency: docs/benchmarks/HISTORY.md, round 31.)
    static func due(elapsedNanos: UInt64, rate: Int) -> Int {
        // An estimate of the last record due, then made exact against `scheduled` (monotonic in n), whose rounding
        // the estimate's may not match.
        var last = Int(Double(elapsedNanos) * Double(rate) / 1e9)
        while last > 0, Self.scheduled(last, start: 0, rate: rate) > elapsedNanos { last -= 1 }
        while Self.scheduled(last + 1, start: 0, rate: rate) <= elapsedNanos { last += 1 }
        return last + 1
    }

    /// How long the producer waits before its next tick: a pace, or until `nextDue` (the next record's scheduled
    /// time, monotonic ns) when that is later.
    static func tickDelay(pace: TimeAmount, nextDue: UInt64, now: UInt64) -> TimeAmount {
        nextDue > now ? max(pace, .nanoseconds(Int64(clamping: nextDue - now))) : pace
    }

    /// What the measurement collects, shared by the producer's and the consumers' callbacks.
    struct Tallies: Sendable {
        let clock: RunClock
        let progress = Progress()
        let errors = Counter(0)
        let sentMeasured = Counter(0)
        let acknowledged = Counter(0)
        /// Each measured PUBLISH's send-to-acknowledgement time: beside publish-to-deliver it tells the append path's
        /// share of the latency (the ack comes once the records are durable) from the delivery path's.
        let acks = Locked(makeHistogram())
        /// How late each measured PUBLISH left: from its oldest record's scheduled time to the send (the pace, a
        /// window full of PUBLISHes in flight, and the event loop's own wake-ups on the two shared cores).
        let lateness = Locked(makeHistogram())
        /// What each outstanding PUBLISH was, by sequence number: the producer adds it when the send succeeds, the
        /// acknowledgement callback takes it out (both on the producer connection's event loop).
        let outstanding = Locked([UInt64: SentPublish]())
        /// When the schedule started (`monotonicNanos()`), set by the producer before its first send.
        let scheduleStart = Counter(0)
        /// Each measured record's acknowledgement in the window of its schedule (``BenchResult/ackTimeline``).
        let ackTimeline: Locked<LatencyTimeline>
    }

    /// The producer, confined to its connection's event loop: every pace it sends the records that came due.
    final class PacedProducer {
        private let publisher: PipelinedPublisher
        private let eventLoop: any EventLoop
        private let topic: String
        private let rate: Int
        private let pace: TimeAmount
        private let tallies: Tallies
        private var stamper: SentStamper
        private var start: UInt64 = 0
        private var sent = 0
        private var published = 0
        /// What was sent: records and PUBLISHes.
        struct Sent: Sendable {
            var records: Int
            var publishes: Int
        }
        /// Fulfilled with what was sent, once the run is over or a send failed.
        let done: EventLoopPromise<Sent>

        init(publisher: PipelinedPublisher, eventLoop: any EventLoop, topic: String, parameters: BenchParameters, payloads: [ByteBuffer], tallies: Tallies) {
            self.publisher = publisher
            self.eventLoop = eventLoop
            self.topic = topic
            self.rate = parameters.rate
            self.pace = .microseconds(Int64(parameters.paceMicros))
            self.tallies = tallies
            self.stamper = SentStamper(payloads: payloads, stampHeader: EndToEndLoad.sentHeader)
            self.done = eventLoop.makePromise()
        }

        /// On the event loop: starts the schedule now.
        func begin() {
            self.start = monotonicNanos()
            self.tallies.scheduleStart.add(Int(self.start))
            self.tick()
        }

        private func tick() {
            let clock = self.tallies.clock
            guard !clock.isOver else { return self.finish() }
            let now = monotonicNanos()
            let due = EndToEndLoad.due(elapsedNanos: now - self.start, rate: self.rate) - self.sent
            if due > 0 {
                // Each record carries the time the schedule meant it to be sent, not the time it left: a record
                // held back (the in-flight window full, the event loop late to run this tick) counts its wait too,
                // so a stall on the broker cannot hide the records it delayed ("coordinated omission").
                let count = min(due, 10_000)
                let (first, start, rate) = (self.sent, self.start, self.rate)
                var measuredRecords = 0  // counted as they are stamped: each schedule is computed once
                let records = self.stamper.take(count) {
                    let stamp = EndToEndLoad.scheduled(first + $0, start: start, rate: rate)
                    if stamp >= clock.measureFrom { measuredRecords += 1 }
                    return stamp
                }
                // With `maxInFlight` PUBLISHes outstanding nothing is sent: the records due wait for a later tick,
                // with more records, still stamped with their schedule. A send that fails (the connection closed)
                // sent nothing: its records count as errors, not as undelivered, and the producer stops.
                let sequence: UInt64?
                do {
                    sequence = try self.publisher.sendIfRoom(topic: self.topic, records: records)
                } catch {
                    FileHandle.standardError.write(Data("e2e-latency: send failed: \(error)\n".utf8))
                    self.tallies.errors.add(count)
                    return self.finish()
                }
                if let sequence {
                    precondition(sequence == UInt64(self.published), "the e2e producer is its publisher's only sender")
                    self.published += 1
                    self.sent += count
                    self.tallies.sentMeasured.add(measuredRecords)
                    let measured = now >= clock.measureFrom
                    if measured {
                        let oldest = EndToEndLoad.scheduled(first, start: start, rate: rate)
                        _ = self.tallies.lateness.withLock { $0.record((now - min(oldest, now)) / 1000) }
                    }
                    self.tallies.outstanding.withLock {
                        $0[sequence] = SentPublish(at: now, measured: measured, records: count, first: first)
                    }
                }
                self.stamper.giveBack(records)
            }
            // A record waits here for at most one pace (and the timer's overshoot) before it is sent: with the old
            // pace of 1 ms that wait was about half of publish-to-deliver's median at 50,000 records/s. A shorter
            // pace means more, smaller PUBLISHes for the same rate. When the next record is due later than a pace
            // from now (rates under one record a pace), the next tick is at its time: the producer does not wake to
            // find nothing due (4 ticks in 5 at 2,000 records/s), and the record leaves at its time.
            // Never past the run's end, so that a low rate's last wait does not stretch the run.
            let nextDue = min(EndToEndLoad.scheduled(self.sent, start: self.start, rate: self.rate), clock.end)
            let wait = EndToEndLoad.tickDelay(pace: self.pace, nextDue: nextDue, now: monotonicNanos())
            self.eventLoop.assumeIsolated().scheduleTask(in: wait) { self.tick() }
        }

        private func finish() {
            self.publisher.finish()
            self.done.succeed(Sent(records: self.sent, publishes: self.published))
        }
    }

    func run() async throws -> BenchResult {
        let p = self.parameters
        let topic = self.target.topics[0]
        // The connections are made before the clock starts (the subscriptions, a request each, after): on a busy
        // machine (a test suite beside it) connecting could otherwise take the whole warm-up and measured time, and
        // the run measure nothing.
        var clients: [BrokerClient] = []
        for _ in 0..<p.consumers { clients.append(try await self.target.connect()) }
        let producer = try await self.target.connect()
        let clock = RunClock(warmup: p.warmup, duration: p.duration)
        let tallies = Tallies(
            clock: clock, ackTimeline: Locked(LatencyTimeline(seconds: p.duration, slowMicros: UInt64(p.slowMicros)))
        )
        let progress = tallies.progress
        let sentName = Array(Self.sentHeader.utf8)
        // Per consumer: publish→deliver as its handler sees a DELIVER (on the event loop that read it),
        // publish→read, up to the moment that event loop read the DELIVER from the socket (the decode between), and
        // the latency timeline.
        var consumers: [(client: BrokerClient, subscription: BrokerSubscription, arrivals: Locked<Arrivals>)] = []
        for client in clients {
            let arrivals = Locked(Arrivals(seconds: p.duration, slowMicros: UInt64(p.slowMicros)))
            // A DELIVER at a time, read in place (what a consumer that keeps up would do): the records of one
            // DELIVER arrived together, so one clock reading serves them all.
            let subscription = try await client.subscribe(topic: topic, start: .latest, credit: UInt32(p.credit)) { batch in
                let now = monotonicNanos()
                let readAt = min(batch.receivedAtNanos, now)
                var all = 0
                var measured = 0
                // Only this handler takes the lock until the run is over: uncontended.
                arrivals.withLock { arrivals in
                    batch.forEach { record in
                        var stamp: UInt64?
                        record.forEachHeader { name, value in
                            guard value.count == 8, name.elementsEqual(sentName) else { return true }
                            stamp = UInt64(bigEndian: value.loadUnaligned(as: UInt64.self))
                            return false
                        }
                        guard let sent = stamp else { return }
                        all += 1
                        guard sent >= clock.measureFrom else { return }
                        measured += 1
                        arrivals.record(sent: sent, deliveredAt: now, readAt: readAt, measureFrom: clock.measureFrom)
                    }
                }
                progress.all.add(all)
                progress.measured.add(measured)
            }
            consumers.append((client, subscription, arrivals))
        }
        let cpu = CPUWindow(
            measureFrom: clock.measureFrom, brokerPid: self.target.brokerPid, dataDir: self.target.dataDir
        )
        progress.start(clock: clock, label: "e2e-latency delivered")
        let publisher = producer.pipelinedPublisher(maxInFlight: p.inFlight) { acknowledgement in
            defer { tallies.acknowledged.add(1) }
            let acked = monotonicNanos()
            guard let sent = tallies.outstanding.withLock({ $0.removeValue(forKey: acknowledgement.sequence) }) else {
                preconditionFailure("e2e-latency: acknowledgement \(acknowledgement.sequence) was never sent")
            }
            if sent.measured { _ = tallies.acks.withLock { $0.record((acked - min(sent.at, acked)) / 1000) } }
            switch acknowledgement.result {
            case .success(let results):
                tallies.errors.add(results.reduce(0) { $0 + ($1.code == .ok ? 0 : 1) })
                // Each measured record of the PUBLISH, from its schedule to the acknowledgement.
                let start = UInt64(tallies.scheduleStart.value)
                tallies.ackTimeline.withLock { timeline in
                    for n in sent.first..<(sent.first + sent.records) {
                        let scheduled = EndToEndLoad.scheduled(n, start: start, rate: p.rate)
                        guard scheduled >= clock.measureFrom else { continue }
                        timeline.record(
                            scheduledNanos: scheduled - clock.measureFrom, latencyMicros: (acked - min(scheduled, acked)) / 1000
                        )
                    }
                }
            case .failure: tallies.errors.add(sent.records)
            }
        }
        let loop = producer.eventLoop
        let sent = try await loop.flatSubmit {
            let paced = PacedProducer(
                publisher: publisher, eventLoop: loop, topic: topic, parameters: p,
                payloads: makePayloads(size: p.recordSize), tallies: tallies
            )
            paced.begin()
            return paced.done.futureResult
        }.get()

        // Let the last PUBLISHes be answered and every record sent reach every consumer (each wait bounded by
        // `drainSeconds`), then end the subscriptions: a record still late at the end of a run counts in the
        // histogram, and one that never arrives is reported, not silently left out.
        let drainUntil = monotonicNanos() + Self.drainSeconds * 1_000_000_000
        while tallies.acknowledged.value < sent.publishes, monotonicNanos() < drainUntil {
            try await Task.sleep(for: .milliseconds(5))
        }
        let expected = sent.records * consumers.count
        while progress.all.value < expected, monotonicNanos() < drainUntil {
            try await Task.sleep(for: .milliseconds(5))
        }
        let undelivered = max(0, expected - progress.all.value)
        // From the warm-up's end to the last delivery (or the end of the drain).
        let cpuFigures = await cpu.finish(records: progress.measured.value)
        var arrivals = Arrivals(seconds: p.duration, slowMicros: UInt64(p.slowMicros))
        for consumer in consumers {
            await consumer.client.close()
            // Ends with the connection (the handler runs no more once this returns).
            do { for try await _ in consumer.subscription.batches {} } catch {}
            consumer.arrivals.withLock { arrivals.add($0) }
        }
        progress.stop()
        await producer.close()
        var result = BenchResult(
            scenario: Scenario.e2eLatency.rawValue, parameters: p, measuredSeconds: p.duration,
            records: progress.measured.value, recordBytes: p.recordSize,
            errors: tallies.errors.value + undelivered,
            latencyLabel: "publish-to-deliver latency at \(p.rate) records/s", histogram: arrivals.deliver
        )
        result.timeline = arrivals.timeline
        result.extra.merge(arrivals.timeline.figures()) { current, _ in current }
        result.ackTimeline = tallies.ackTimeline.withLock { $0 }
        result.extra.merge(result.ackTimeline!.figures(prefix: "ack_timeline")) { current, _ in current }
        result.extra["records_sent_measured"] = Double(tallies.sentMeasured.value)
        result.extra["records_undelivered"] = Double(undelivered)
        result.extra["publish_to_client_read_p50_us"] = Double(arrivals.read.valueAtPercentile(50))
        result.extra["publish_to_client_read_p99_us"] = Double(arrivals.read.valueAtPercentile(99))
        tallies.lateness.withLock { lateness in
            result.extra["send_lateness_p50_us"] = Double(lateness.valueAtPercentile(50))
            result.extra["send_lateness_p99_us"] = Double(lateness.valueAtPercentile(99))
        }
        tallies.acks.withLock { acks in
            result.extra["publish_ack_p50_us"] = Double(acks.valueAtPercentile(50))
            result.extra["publish_ack_p99_us"] = Double(acks.valueAtPercentile(99))
            result.extra["publish_ack_max_us"] = Double(acks.max)
        }
        result.extra.merge(cpuFigures) { current, _ in current }
        return result
    }
}

/// Fills a topic, then reads it from earliest as fast as credit allows.
extension BenchParameters {
    /// The same load shaped to fill one topic: no warm-up, no time limit, stopping after `records` (nil: when the
    /// caller stops it).
    func filling(records: Int?) -> BenchParameters {
        var fill = self
        fill.topics = 1
        fill.warmup = 0
        fill.duration = 86_400
        fill.records = records
        return fill
    }
}

struct ConsumeLoad {
    let target: BenchTarget
    let parameters: BenchParameters

    func run() async throws -> BenchResult {
        let p = self.parameters
        let total = p.records ?? 1_000_000
        let topic = self.target.topics[0]
        FileHandle.standardError.write(Data("filling \(topic) with \(total) records\n".utf8))
        var fill = p.filling(records: total)
        fill.producers = 1
        _ = try await PublishLoad(target: self.target, parameters: fill, scenario: .consume).run()

        let clock = RunClock(warmup: 0, duration: 86_400)
        let progress = Progress()
        progress.start(clock: clock, label: "consume")
        let start = monotonicNanos()
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<p.consumers {
                group.addTask {
                    let client = try await self.target.connect()
                    let subscription = try await client.subscribe(topic: topic, start: .earliest, credit: UInt32(p.credit))
                    // By default a DELIVER at a time, each record read in place (its offset and value): what a
                    // consumer that processes records without keeping them would do; `--per-record` through the
                    // per-record iterator, a `DeliveredRecord` each. Offsets must ascend either way.
                    var count = 0
                    var reported = 0
                    var valueBytes = 0
                    var lastOffset: Int64 = -1
                    var outOfOrder = 0
                    if p.perRecord {
                        for try await record in subscription {
                            if record.offset <= lastOffset { outOfOrder += 1 }
                            lastOffset = record.offset
                            valueBytes += record.record.value.readableBytes
                            count += 1
                            if count % 1024 == 0 { progress.all.add(1024) }
                            if count == total { break }
                        }
                    } else {
                        batches: for try await batch in subscription.batches {
                            batch.forEach { record in
                                if record.offset <= lastOffset { outOfOrder += 1 }
                                lastOffset = record.offset
                                valueBytes += record.value.count
                            }
                            count = min(count + batch.count, total)
                            if count - reported >= 1024 {
                                progress.all.add(count - reported)
                                reported = count
                            }
                            if count == total { break batches }
                        }
                    }
                    await client.close()
                    guard outOfOrder == 0 else {
                        throw BenchError("consume: \(outOfOrder) records arrived with an offset not above the last one")
                    }
                    guard count == 0 || valueBytes > 0 else { throw BenchError("consume: every value was empty") }
                    return count
                }
            }
            var sum = 0
            for try await count in group { sum += count }
            return sum
        }
        let seconds = Double(monotonicNanos() - start) / 1e9
        progress.stop()
        return BenchResult(
            scenario: Scenario.consume.rawValue, parameters: p, measuredSeconds: seconds, records: counts,
            recordBytes: p.recordSize, errors: p.consumers * total - counts, latencyLabel: "", histogram: nil
        )
    }
}

/// Opens many authenticated idle connections and reports the broker's memory per connection.
struct ManyConnections {
    let target: BenchTarget
    let parameters: BenchParameters

    func run() async throws -> BenchResult {
        let p = self.parameters
        raiseFileLimit()
        if case .embedded = self.target.kind, p.connections * 2 + 256 > currentFileLimit() {
            throw BenchError("\(p.connections) connections need \(p.connections * 2 + 256) descriptors in one process "
                + "(limit \(currentFileLimit())); use --spawn so the broker has its own")
        }
        let pid = self.target.brokerPid ?? getpid()
        let before = ResourceSample.read(pid: pid)
        let start = monotonicNanos()
        var clients: [BrokerClient] = []
        var histogram = makeHistogram()
        clients.reserveCapacity(p.connections)
        while clients.count < p.connections {
            let wave = min(64, p.connections - clients.count)
            let opened = try await withThrowingTaskGroup(of: (BrokerClient, UInt64).self) { group in
                for _ in 0..<wave {
                    group.addTask {
                        let t0 = monotonicNanos()
                        let client = try await self.target.connect()
                        return (client, (monotonicNanos() - t0) / 1000)
                    }
                }
                var opened: [(BrokerClient, UInt64)] = []
                for try await item in group { opened.append(item) }
                return opened
            }
            for (client, micros) in opened {
                clients.append(client)
                histogram.record(micros)
            }
            if clients.count % 1000 < 64 {
                FileHandle.standardError.write(Data("\(clients.count) connections open\n".utf8))
            }
        }
        let openSeconds = Double(monotonicNanos() - start) / 1e9
        try await Task.sleep(for: .seconds(2))
        // They are alive: a sample answers PING.
        for client in clients.prefix(100) { try await client.ping() }
        let after = ResourceSample.read(pid: pid)
        var stalled: [String: Double] = [:]
        if p.stalledSubscribers > 0, let producer = clients.first {
            stalled = try await StalledSubscribers(
                target: self.target, producer: producer, count: p.stalledSubscribers, credit: p.credit,
                recordSize: p.recordSize
            ).run(pid: pid)
        }
        for client in clients { await client.close() }
        var result = BenchResult(
            scenario: Scenario.manyConnections.rawValue, parameters: p, measuredSeconds: openSeconds,
            records: clients.count, recordBytes: 0, errors: 0,
            latencyLabel: "connect + HELLO latency", histogram: histogram
        )
        if let before, let after {
            result.extra["broker_rss_before_mb"] = Double(before.rssBytes) / 1_048_576
            result.extra["broker_rss_with_connections_mb"] = Double(after.rssBytes) / 1_048_576
            result.extra["broker_bytes_per_connection"] = Double(after.rssBytes - before.rssBytes) / Double(max(1, clients.count))
        }
        result.extra.merge(stalled) { $1 }
        return result
    }
}

/// Times `iterations` 4 KiB writes each followed by fdatasync, as the disk's reference cost.
func measureFdatasync(directory: String, iterations: Int) throws -> Histogram<UInt64> {
    try withScratchFile(in: directory, named: "fdatasync") { fd, fail in
        let block = [UInt8](repeating: 0x5A, count: 4096)
        var histogram = makeHistogram()
        for index in 0..<iterations {
            let t0 = monotonicNanos()
            let written = block.withUnsafeBytes { pwrite(fd, $0.baseAddress, 4096, off_t(index * 4096)) }
            guard written == 4096, fdatasync(fd) == 0 else { throw fail("write/fdatasync") }
            histogram.record((monotonicNanos() - t0) / 1000)
        }
        return histogram
    }
}

/// Runs `body` with a new file `brokerbench-NAME-PID.tmp` in `directory`, open for reading and writing, and a maker
/// of errors naming what failed on it (with `errno`); closes and removes the file after, whatever `body` does.
func withScratchFile<T>(
    in directory: String, named name: String, _ body: (_ fd: Int32, _ fail: (String) -> BenchError) throws -> T
) throws -> T {
    let path = directory + "/brokerbench-\(name)-\(getpid()).tmp"
    let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { throw BenchError("open \(path): \(String(cString: strerror(errno)))") }
    defer {
        close(fd)
        unlink(path)
    }
    return try body(fd) { what in BenchError("\(what) \(path): \(String(cString: strerror(errno)))") }
}

func raiseFileLimit() {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

func currentFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    return Int(limit.rlim_cur)
}

private let errorReported = Locked(false)

/// Prints the first failed record result of the run (a policy or storage problem the figures would hide).
func reportFirstError(_ result: PublishResult) {
    let first = errorReported.withLock { reported in
        defer { reported = true }
        return !reported
    }
    guard first else { return }
    FileHandle.standardError.write(Data("first failed record: \(result.code.name): \(result.message)\n".utf8))
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
