import DequeModule
import Dispatch
import Locking
import LogStore
import Logging
import Metrics
import NIOCore
import Synchronization

// The broker's dedupe gate (issue 3, "Dedupe keys"; docs/PROTOCOL.md section 8.1; docs/STORAGE.md "Dedupe index",
// "Dedupe snapshot", "Dedupe recovery"). One gate per topic sits in front of that topic's appends:
//
//     reserve(key) ── .duplicate(entry) ─────────────▶ answer OK/QUARANTINED + DUPLICATE, original offset
//          │     └─── .inFlight(waiter) ── resolved ─▶ .duplicate(entry) as above, or .retry: reserve again
//          └───────── .admitted(ticket) ──▶ append to the topic or `__quarantine`
//                                              ├─ succeeded ─▶ commit(ticket, offset:, location:)
//                                              └─ failed ────▶ release(ticket)  (waiters retry)

/// What ``DedupeGate/reserve(key:)`` answers.
package enum DedupeReservation: Sendable {
    /// The key is new: the caller appends the record, then calls ``DedupeGate/commit(_:offset:location:atMillis:)``
    /// (success) or ``DedupeGate/release(_:)`` (failure). Exactly one of the two, exactly once.
    case admitted(DedupeTicket)
    /// The key was seen within the window: do not append; answer with the original record's offset and location
    /// (`.topic`: OK; `.quarantine`: QUARANTINED) and the DUPLICATE flag.
    case duplicate(DedupeEntry)
    /// A record with this key is being appended by someone else right now. Wait for ``DedupeWaiter/whenResolved(_:)``
    /// (or ``DedupeWaiter/resolution``): `.duplicate` → answer as for ``duplicate(_:)``; `.retry` → call `reserve`
    /// again (that append failed).
    case inFlight(DedupeWaiter)
}

/// How an in-flight append that a ``DedupeWaiter`` waits for ended.
package enum DedupeResolution: Equatable, Sendable {
    /// It was committed: the waiting record is a duplicate of this entry.
    case duplicate(DedupeEntry)
    /// It failed and was released: reserve the key again.
    case retry
}

/// What ``DedupeGate/admit(key:)`` answers: ``DedupeReservation`` with the waiting already done.
package enum DedupeAdmission: Equatable, Sendable {
    /// The key is new; see ``DedupeReservation/admitted(_:)``.
    case admitted(DedupeTicket)
    /// The key was seen within the window; see ``DedupeReservation/duplicate(_:)``.
    case duplicate(DedupeEntry)
}

/// The right (and duty) to settle one reservation: commit or release a publish, finish or release a replay.
package struct DedupeTicket: Hashable, Sendable {
    enum Kind: Hashable, Sendable {
        case publish
        case replay
    }

    /// Unique within its gate.
    package let id: UInt64
    let digest: DedupeDigest
    let kind: Kind
    /// A publish's reservation in the index (``DedupeIndex/reserve(digest:nowMillis:tag:)``, tagged with `id`).
    let sequence: UInt64
}

/// Waits for another connection's append of the same dedupe key. Thread-safe; callbacks run on the thread that
/// settles the append (``DedupeGate/commit(_:offset:location:atMillis:)`` or ``DedupeGate/release(_:)``), or at once
/// on the registering thread when that already happened. Hop to your own event loop inside the callback.
package final class DedupeWaiter: Sendable {
    private enum State {
        case waiting([@Sendable (DedupeResolution) -> Void])
        case resolved(DedupeResolution)
    }

    private let state = Locked(State.waiting([]))

    init() {}

    /// Calls `body` once with the outcome: now if it is known, otherwise when the append is settled.
    package func whenResolved(_ body: @escaping @Sendable (DedupeResolution) -> Void) {
        let known: DedupeResolution? = self.state.withLock { state in
            switch state {
            case .waiting(var callbacks):
                callbacks.append(body)
                state = .waiting(callbacks)
                return nil
            case .resolved(let resolution):
                return resolution
            }
        }
        if let known { body(known) }
    }

    /// The outcome, for async callers.
    package var resolution: DedupeResolution {
        get async {
            await withCheckedContinuation { continuation in
                self.whenResolved { continuation.resume(returning: $0) }
            }
        }
    }

    /// Settles the waiter (first call wins) and runs the callbacks, outside the lock.
    func resolve(_ resolution: DedupeResolution) {
        let callbacks: [@Sendable (DedupeResolution) -> Void] = self.state.withLock { state in
            guard case .waiting(let callbacks) = state else { return [] }
            state = .resolved(resolution)
            return callbacks
        }
        for callback in callbacks { callback(resolution) }
    }
}

/// The retention floors a topic's dedupe gate publishes, created **before** the topic log is opened so that
/// `TopicLogConfig.retentionFloor` can read it (``topicFloor``). Both values are the ends of the newest snapshot
/// written to disk (0 before the first one, which blocks retention): retention must never delete a record whose
/// dedupe key exists only in the log (docs/STORAGE.md, "Dedupe recovery", step 1).
package final class DedupeFloor: Sendable {
    private let topic = Atomic<Int64>(0)
    private let quarantine = Atomic<Int64>(0)

    /// A floor at 0 (nothing may be deleted yet).
    package init() {}

    /// The durable snapshot's `topicEnd`: the topic's retention floor.
    package var topicEnd: Int64 { self.topic.load(ordering: .acquiring) }

    /// The durable snapshot's `quarantineEnd`: this topic's contribution to `__quarantine`'s floor.
    package var quarantineEnd: Int64 { self.quarantine.load(ordering: .acquiring) }

    /// For `TopicLogConfig.retentionFloor` of the topic: cheap, lock-free, never waits for the log.
    package var topicFloor: @Sendable () -> Int64 { { self.topicEnd } }

    /// `__quarantine`'s retention floor: the lowest ``quarantineEnd`` of the topics' floors (`Int64.max`, no limit,
    /// when there are none). Pass a closure over this to `__quarantine`'s `TopicLogConfig.retentionFloor`.
    package static func quarantineFloor(_ floors: [DedupeFloor]) -> Int64 {
        floors.reduce(Int64.max) { min($0, $1.quarantineEnd) }
    }

    /// Moves the floors up (never down).
    func raise(topicEnd: Int64, quarantineEnd: Int64) {
        Self.raise(self.topic, to: topicEnd)
        Self.raise(self.quarantine, to: quarantineEnd)
    }

    private static func raise(_ atomic: borrowing Atomic<Int64>, to value: Int64) {
        var current = atomic.load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = atomic.compareExchange(
                expected: current,
                desired: value,
                ordering: .acquiringAndReleasing
            )
            if exchanged { return }
            current = original
        }
    }
}

/// What a snapshot write covered.
package struct DedupeSnapshotCoverage: Equatable, Sendable {
    /// Every record of the topic below this offset had its key in the snapshot.
    package var topicEnd: Int64
    /// Likewise for `__quarantine`.
    package var quarantineEnd: Int64
    /// Entries written.
    package var keys: Int
}

/// What `DedupeGate.open` found and did (``DedupeGate/recovery``).
package struct DedupeRecoveryReport: Equatable, Sendable {
    /// The state `dedupe.snapshot` was in.
    package enum SnapshotState: Equatable, Sendable {
        /// No file: full rebuild from the logs.
        case missing
        /// Loaded and restored.
        case loaded
        /// Damaged (the message says how): logged at error level, full rebuild from the logs.
        case corrupt(String)
    }

    /// The state `dedupe.snapshot` was in.
    package var snapshot: SnapshotState
    /// Live entries restored from the snapshot.
    package var restoredKeys: Int = 0
    /// Snapshot entries dropped because their record is at or beyond its log's end (a tail lost in a crash under a
    /// non-`always` fsync policy): the key is forgotten rather than pointing at an offset another record will get.
    package var droppedBeyondLogEnd: Int = 0
    /// Live entries evicted by `maxKeys` while restoring (a lowered bound); logged and counted.
    package var evictedWhileRestoring: Int = 0
    /// The scan of `__quarantine` from the snapshot's `quarantineEnd`.
    package var quarantineScan: DedupeRebuildResult
    /// The scan of the topic from the snapshot's `topicEnd`.
    package var topicScan: DedupeRebuildResult
}

/// One topic's dedupe gate: decides whether a published record with a `dedupe-key` is new, a duplicate, or must wait
/// for a concurrent append of the same key; remembers committed keys in a bounded ``DedupeIndex``; writes
/// `dedupe.snapshot` and publishes the retention floors; recovers from the snapshot and the logs.
///
/// Thread-safe (`Mutex`); no I/O and no waiting under the lock. Snapshot writes and recovery run on the gate's own
/// serial `DispatchQueue`, never on an event loop or the cooperative pool.
///
/// **Contract.** Every record of this topic that carries a dedupe key and is appended to the topic or to
/// `__quarantine` goes through the gate: `reserve` → `.admitted` → append → `commit`/`release`, or for a quarantine
/// replay `beginReplay` → append → `replayed(_:newOffset:)`/`release`. The snapshot's covered ends rely on it.
/// A caller that reserves several records of one PUBLISH must start their appends before waiting on any
/// `.inFlight` waiter: two records of one PUBLISH with the same key make the second wait for the first.
///
/// **Keys** are the raw `dedupe-key` header bytes, 1...256 (the router quarantines others); only a 128-bit keyed
/// digest is kept (docs/STORAGE.md).
package final class DedupeGate: Sendable {
    /// When ``snapshotIfDue(nowMillis:)`` writes a snapshot: something changed since the last one (keys, or the
    /// logs' covered ends, which raise the retention floors), and either `max(everyCommits, keys / 2)` commits
    /// happened or `intervalMillis` passed since the last snapshot.
    package struct SnapshotPolicy: Equatable, Sendable {
        /// Snapshot after this many commits (at least 1).
        package var everyCommits: Int
        /// Snapshot when this much time passed since the last one.
        package var intervalMillis: Int64
        /// Creates a policy; the defaults keep the rebuild after a crash short and retention moving.
        package init(everyCommits: Int = 10_000, intervalMillis: Int64 = 30_000) {
            self.everyCommits = max(everyCommits, 1)
            self.intervalMillis = intervalMillis
        }
    }

    /// The header that carries a record's dedupe key.
    package static let keyHeader = DedupeIndex.headerName
    /// On an accepted record: the broker's receive time (ms, decimal); the key's window starts there.
    static let receivedAtHeader = "broker-received-at"
    /// On a `__quarantine` record: the topic it was published to.
    static let quarantineTopicHeader = "quarantine-topic"
    /// On a `__quarantine` record: when it was quarantined (ms, decimal); the key's window starts there.
    static let quarantineTimeHeader = "quarantine-time"

    /// Offsets below which an unsettled ticket's record cannot be (the logs' ends when it was issued).
    private struct PendingFloor {
        var topic: Int64
        var quarantine: Int64
    }

    /// The unsettled tickets with their floors, by ticket id, without hashing: ids are issued in order, so a
    /// ticket's place is its id minus the oldest id held. Settled tickets leave a hole until every older one is
    /// settled too.
    ///
    /// Floors never decrease with the id (each is the logs' ends read under the gate's lock when the ticket was
    /// issued, and a log's end only grows), so the lowest floor of all unsettled tickets is the oldest unsettled
    /// ticket's: ``lowest`` is O(1), where `coveredEnds` used to walk every ticket.
    private struct PendingTickets {
        private var floors = Deque<PendingFloor?>()
        /// The id of `floors.first`.
        private var firstID: UInt64 = 1
        /// Unsettled tickets.
        private(set) var count = 0

        /// Adds the ticket issued next (ids are consecutive, starting at 1).
        mutating func issue(_ id: UInt64, floor: PendingFloor) {
            precondition(id == self.firstID + UInt64(self.floors.count), "dedupe tickets are issued in order")
            self.floors.append(floor)
            self.count += 1
        }

        /// Settles `id`; false when it is unknown or already settled.
        mutating func settle(_ id: UInt64) -> Bool {
            guard id >= self.firstID, id - self.firstID < UInt64(self.floors.count) else { return false }
            let position = Int(id - self.firstID)
            guard self.floors[position] != nil else { return false }
            self.floors[position] = nil
            self.count -= 1
            while let first = self.floors.first, first == nil {
                self.floors.removeFirst()
                self.firstID += 1
            }
            return true
        }

        /// The oldest unsettled ticket's floor, the lowest of all (see above); nil when none is unsettled.
        var lowest: PendingFloor? { self.floors.first ?? nil }
    }

    private struct State {
        /// The keys, and those whose publish is in flight as reservations tagged with their ticket's id.
        var index: DedupeIndex
        /// Ticket id → the waiter of an in-flight key someone else tried to reserve (rare: kept apart so the usual
        /// reserve and commit never hash into it).
        var waiters: [UInt64: DedupeWaiter] = [:]
        var pending = PendingTickets()
        var nextTicketID: UInt64 = 1
        /// Bumped by every change to the index other than expiry.
        var changes: UInt64 = 0
        var commitsSinceSnapshot = 0
        /// What the last snapshot taken (maybe still being written) captured.
        var snapshotChanges: UInt64 = 0
        var snapshotTopicEnd: Int64 = 0
        var snapshotQuarantineEnd: Int64 = 0
        var snapshotAtMillis: Int64
        /// A snapshot is owed whatever changed (after recovery, or after a failed write).
        var snapshotOwed = false
    }

    private struct Capture: Sendable {
        var entries: DedupeEntries
        var topicEnd: Int64
        var quarantineEnd: Int64
        var takenAtMillis: Int64
    }

    /// The topic this gate guards.
    package let topic: String
    /// The topic's directory (holds `dedupe.snapshot`).
    package let directory: String
    /// The topic's log.
    package let topicLog: any TopicLog
    /// `__quarantine`'s log.
    package let quarantineLog: any TopicLog
    /// The retention floors this gate raises after each durable snapshot.
    package let floor: DedupeFloor
    /// What `open` found; nil for a gate made with `init`.
    package let recovery: DedupeRecoveryReport?
    /// How long a key guards against duplicates, in ms.
    package let windowMillis: Int64
    /// Most keys remembered.
    package let maxKeys: Int
    private let hashKey: DedupeHashKey
    private let snapshotPolicy: SnapshotPolicy
    private let io: any FileIO
    private let logger: Logger
    private let nowMillis: @Sendable () -> Int64
    private let queue: DispatchQueue
    private let state: Locked<State>
    /// Counts keys evicted before their window ended (`brokerd_dedupe_evicted_before_expiry_total{topic}`).
    private let evictions: Counter
    /// The metric that counts keys forgotten before their window ended, per topic.
    package static let evictionMetric = "brokerd_dedupe_evicted_before_expiry_total"

    /// A gate with an empty index and a fresh digest key, for a topic whose logs hold no keyed record of it yet (a new
    /// topic). Anything else must use `open`, which recovers the keys; this initializer does no I/O.
    package convenience init(
        topic: String,
        windowMillis: Int64,
        maxKeys: Int,
        directory: String,
        topicLog: any TopicLog,
        quarantineLog: any TopicLog,
        floor: DedupeFloor = DedupeFloor(),
        snapshotPolicy: SnapshotPolicy = SnapshotPolicy(),
        io: any FileIO = PosixFileIO(),
        logger: Logger,
        nowMillis: @escaping @Sendable () -> Int64 = wallClockMillis,
        metrics: any MetricsFactory = MetricsSystem.factory
    ) throws(LogStoreError) {
        self.init(
            topic: topic,
            directory: directory,
            topicLog: topicLog,
            quarantineLog: quarantineLog,
            floor: floor,
            snapshotPolicy: snapshotPolicy,
            io: io,
            logger: logger,
            nowMillis: nowMillis,
            metrics: metrics,
            queue: Self.makeQueue(topic: topic),
            index: try DedupeIndex(windowMillis: windowMillis, maxKeys: maxKeys),
            recovery: nil,
            snapshotOwed: false
        )
    }

    private init(
        topic: String,
        directory: String,
        topicLog: any TopicLog,
        quarantineLog: any TopicLog,
        floor: DedupeFloor,
        snapshotPolicy: SnapshotPolicy,
        io: any FileIO,
        logger: Logger,
        nowMillis: @escaping @Sendable () -> Int64,
        metrics: any MetricsFactory,
        queue: DispatchQueue,
        index: DedupeIndex,
        recovery: DedupeRecoveryReport?,
        snapshotOwed: Bool
    ) {
        self.topic = topic
        self.directory = directory
        self.topicLog = topicLog
        self.quarantineLog = quarantineLog
        self.floor = floor
        self.recovery = recovery
        self.windowMillis = index.windowMillis
        self.maxKeys = index.maxKeys
        self.hashKey = index.hashKey
        self.snapshotPolicy = snapshotPolicy
        self.io = io
        var logger = logger
        logger[metadataKey: "brokerd.topic"] = "\(topic)"
        self.logger = logger
        self.nowMillis = nowMillis
        self.evictions = Counter(label: Self.evictionMetric, dimensions: [("topic", topic)], factory: metrics)
        self.queue = queue
        var state = State(index: index, snapshotAtMillis: nowMillis())
        state.snapshotOwed = snapshotOwed
        state.snapshotTopicEnd = floor.topicEnd
        state.snapshotQuarantineEnd = floor.quarantineEnd
        self.state = Locked(state)
    }

    private static func makeQueue(topic: String) -> DispatchQueue {
        DispatchQueue(label: "brokerd.dedupe.\(topic)")
    }

    // MARK: Observation

    /// Keys held (including expired ones not dropped yet).
    package var keyCount: Int { self.state.withLock { $0.index.count } }

    /// Live keys evicted by the `maxKeys` bound before their window ended (each one logged at warning level), since
    /// the gate was opened, including evictions while recovering. Export it as a metric.
    package var evictedBeforeExpiry: Int { self.state.withLock { $0.index.evictedBeforeExpiry } }

    /// The topic's retention floor: the `topicEnd` of the newest durable snapshot (0 before the first).
    package var retentionFloor: Int64 { self.floor.topicEnd }

    /// Appends reserved and not settled yet (publishes and replays).
    package var unsettledCount: Int { self.state.withLock { $0.pending.count } }

    /// The live entry of `key`, if any (no reservation).
    package func lookup(key: [UInt8]) throws(LogStoreError) -> DedupeEntry? {
        let digest = try self.digest(key)
        let now = self.nowMillis()
        return self.state.withLock { $0.index.lookup(digest: digest, nowMillis: now) }
    }

    /// The lookup of ``lookup(key:)`` for a header value as stored.
    package func lookup(key: ByteBuffer) throws(LogStoreError) -> DedupeEntry? {
        let digest = try self.digest(key)
        let now = self.nowMillis()
        return self.state.withLock { $0.index.lookup(digest: digest, nowMillis: now) }
    }

    // MARK: Reserve, commit, release

    /// Decides what to do with a record carrying `key` (the `dedupe-key` header's bytes); see ``DedupeReservation``.
    /// Throws `.invalidArgument` unless the key has 1...256 bytes.
    package func reserve(key: [UInt8]) throws(LogStoreError) -> DedupeReservation {
        self.reserve(digest: try self.digest(key))
    }

    /// ``reserve(key:)`` for a header value as stored.
    package func reserve(key: ByteBuffer) throws(LogStoreError) -> DedupeReservation {
        self.reserve(digest: try self.digest(key))
    }

    private func reserve(digest: DedupeDigest) -> DedupeReservation {
        let now = self.nowMillis()
        return self.state.withLock { self.reserve(&$0, digest: digest, now: now) }
    }

    /// ``reserve(key:)`` for every record of one request, in order, under one lock and one clock reading: the
    /// reservation of each digest (``digest(of:)``). A key repeated in the request finds the first one in flight.
    package func reserve(digests: [DedupeDigest]) -> [DedupeReservation] {
        let now = self.nowMillis()
        return self.state.withLock { state in
            for digest in digests { state.index.prefetch(digest) }
            // The first reservation drops the keys whose window ended; their slots are as far apart as new keys'.
            state.index.prefetchExpired(nowMillis: now, limit: digests.count)
            return digests.map { self.reserve(&state, digest: $0, now: now) }
        }
    }

    private func reserve(_ state: inout State, digest: DedupeDigest, now: Int64) -> DedupeReservation {
        // Tagged with the id the ticket issued below gets.
        switch state.index.reserve(digest: digest, nowMillis: now, tag: state.nextTicketID) {
        case .live(let entry):
            return .duplicate(entry)
        case .pending(let ticketID):
            if let waiter = state.waiters[ticketID] { return .inFlight(waiter) }
            let waiter = DedupeWaiter()
            state.waiters[ticketID] = waiter
            return .inFlight(waiter)
        case .reserved(let sequence):
            return .admitted(self.issueTicket(&state, digest: digest, kind: .publish, sequence: sequence))
        }
    }

    /// ``reserve(key:)`` with the waiting done (for async callers): `.admitted` or `.duplicate`.
    package func admit(key: [UInt8]) async throws(LogStoreError) -> DedupeAdmission {
        while true {
            switch try self.reserve(key: key) {
            case .admitted(let ticket):
                return .admitted(ticket)
            case .duplicate(let entry):
                return .duplicate(entry)
            case .inFlight(let waiter):
                switch await waiter.resolution {
                case .duplicate(let entry): return .duplicate(entry)
                case .retry: continue
                }
            }
        }
    }

    /// The admitted record was appended at `offset` in `location`: remember the key and tell the waiters it is a
    /// duplicate. The window starts at `atMillis` (the record's `broker-received-at`, which recovery also uses) or
    /// now. An eviction this causes (index full) is logged at warning level and counted in ``evictedBeforeExpiry``.
    /// Returns the entry the waiters got; nil (logged at error level) when the ticket was already settled.
    @discardableResult
    package func commit(
        _ ticket: DedupeTicket,
        offset: Int64,
        location: DedupeLocation,
        atMillis: Int64? = nil
    ) -> DedupeEntry? {
        let one = CollectionOfOne((ticket: ticket, offset: offset))
        return self.commit(one, location: location, atMillis: atMillis).first ?? nil
    }

    /// ``commit(_:offset:location:atMillis:)`` for the admitted records of one append (each ticket with its
    /// record's offset), under one lock and one clock reading. Returns what the single commit returns, per ticket.
    @discardableResult
    package func commit(
        _ tickets: some Collection<(ticket: DedupeTicket, offset: Int64)>,
        location: DedupeLocation,
        atMillis: Int64? = nil
    ) -> [DedupeEntry?] {
        guard !tickets.isEmpty else { return [] }
        let now = self.nowMillis()
        let start = atMillis ?? now
        let (sum, overflow) = start.addingReportingOverflow(self.windowMillis)
        let expiresAtMillis = overflow ? Int64.max : sum
        var evictions: [DedupeEviction] = []
        var waiters: [(DedupeWaiter, DedupeEntry)] = []
        let held: [DedupeEntry?] = self.state.withLock { state in
            // The keys' reservations are written in place (their items, in insertion order); only the expired keys
            // the commits drop are probed in the table.
            state.index.prefetchExpired(nowMillis: now, limit: tickets.count)
            return tickets.map { ticket, offset in
                guard ticket.kind == .publish, state.pending.settle(ticket.id) else { return nil }
                let waiter = state.waiters.isEmpty ? nil : state.waiters.removeValue(forKey: ticket.id)
                let entry = DedupeEntry(offset: offset, location: location, expiresAtMillis: expiresAtMillis)
                let inserted = state.index.commit(
                    reserved: ticket.sequence, tag: ticket.id, digest: ticket.digest, entry: entry, nowMillis: now
                )
                if let eviction = inserted.eviction { evictions.append(eviction) }
                state.changes &+= 1
                state.commitsSinceSnapshot += 1
                // A live entry that was already there keeps its expiry; report what the index holds.
                let held = inserted.held ?? entry
                if let waiter { waiters.append((waiter, held)) }
                return held
            }
        }
        for (ticket, entry) in zip(tickets, held) where entry == nil { self.misuse(ticket.ticket, "committed") }
        for eviction in evictions { self.logEviction(eviction, cause: "commit") }
        for (waiter, entry) in waiters { waiter.resolve(.duplicate(entry)) }
        self.snapshotIfDue(nowMillis: now)
        return held
    }

    /// The admitted record (or replay) was not appended: forget the reservation; waiters are told to retry.
    package func release(_ ticket: DedupeTicket) {
        self.release(CollectionOfOne(ticket))
    }

    /// ``release(_:)`` for several tickets under one lock.
    package func release(_ tickets: some Collection<DedupeTicket>) {
        guard !tickets.isEmpty else { return }
        let outcomes: [(settled: Bool, waiter: DedupeWaiter?)] = self.state.withLock { state in
            tickets.map { ticket in
                guard state.pending.settle(ticket.id) else { return (false, nil) }
                guard ticket.kind == .publish else { return (true, nil) }
                state.index.abandon(reserved: ticket.sequence, tag: ticket.id, digest: ticket.digest)
                return (true, state.waiters.isEmpty ? nil : state.waiters.removeValue(forKey: ticket.id))
            }
        }
        for (ticket, outcome) in zip(tickets, outcomes) {
            if outcome.settled {
                outcome.waiter?.resolve(.retry)
            } else {
                self.misuse(ticket, "released")
            }
        }
    }

    // MARK: Replay

    /// A quarantined record with `key` is about to be appended to the topic by a replay. The ticket keeps the
    /// snapshot's covered ends below the replayed record until ``replayed(_:newOffset:)`` or ``release(_:)``.
    /// Reservations of the key are unaffected (until the replay lands it is still quarantined).
    package func beginReplay(key: [UInt8]) throws(LogStoreError) -> DedupeTicket {
        let digest = try self.digest(key)
        return self.state.withLock { self.issueTicket(&$0, digest: digest, kind: .replay) }
    }

    /// ``beginReplay(key:)`` for a header value as stored (the quarantined record's `dedupe-key`).
    package func beginReplay(key: ByteBuffer) throws(LogStoreError) -> DedupeTicket {
        let digest = try self.digest(key)
        return self.state.withLock { self.issueTicket(&$0, digest: digest, kind: .replay) }
    }

    /// The replay of ``beginReplay(key:)`` appended the record at `newOffset` in the topic: the key now points there
    /// (``DedupeIndex/update(digest:offset:location:)``, keeping its expiry). Returns the updated entry; nil when the
    /// key is no longer held (its window ended, or it was evicted) or the ticket was already settled.
    @discardableResult
    package func replayed(_ ticket: DedupeTicket, newOffset: Int64) -> DedupeEntry? {
        let outcome: (settled: Bool, entry: DedupeEntry?) = self.state.withLock { state in
            guard ticket.kind == .replay, state.pending.settle(ticket.id) else {
                return (false, nil)
            }
            return (true, self.move(&state, digest: ticket.digest, to: newOffset))
        }
        if !outcome.settled { self.misuse(ticket, "finished as a replay") }
        return outcome.entry
    }

    /// A quarantined record with `key` was replayed into the topic at `newOffset`: the key now points there. Without
    /// a ``beginReplay(key:)`` ticket, a snapshot taken between the append and this call records the old
    /// (quarantine) location, which a crash right then would keep; prefer the ticket form. Returns the updated entry,
    /// or nil when the key is not held.
    @discardableResult
    package func replayed(key: [UInt8], newOffset: Int64) throws(LogStoreError) -> DedupeEntry? {
        let digest = try self.digest(key)
        return self.state.withLock { self.move(&$0, digest: digest, to: newOffset) }
    }

    private func move(_ state: inout State, digest: DedupeDigest, to offset: Int64) -> DedupeEntry? {
        guard let entry = state.index.update(digest: digest, offset: offset, location: .topic) else { return nil }
        state.changes &+= 1
        return entry
    }

    // MARK: Snapshots

    /// Starts a snapshot write (on the gate's queue) when one is due under the ``SnapshotPolicy``; returns whether
    /// it did. Commits call it; the server should also call it periodically (every few seconds) so that a quiet
    /// topic's floor still moves. Never blocks; a failed write is logged at error level and retried when next due.
    @discardableResult
    package func snapshotIfDue(nowMillis: Int64? = nil) -> Bool {
        let now = nowMillis ?? self.nowMillis()
        return self.state.withLock { state in
            // A snapshot encodes and writes every key: O(keys). Waiting for at least half as many commits as there
            // are keys keeps that O(1) per commit however large the index grows (at a fixed 10,000 commits, 700,000
            // keys cost a 4x throughput loss when each snapshot also copied the index); a crash rebuild then rescans
            // at most that many records after the snapshot.
            let dueCommits = max(self.snapshotPolicy.everyCommits, state.index.count / 2)
            guard
                state.commitsSinceSnapshot >= dueCommits
                    || now - state.snapshotAtMillis >= self.snapshotPolicy.intervalMillis
            else { return false }
            let ends = self.coveredEnds(state)
            let changed =
                state.snapshotOwed || state.changes != state.snapshotChanges
                || ends.topic > state.snapshotTopicEnd || ends.quarantine > state.snapshotQuarantineEnd
            guard changed else { return false }
            self.startSnapshot(&state, now: now) { _ in }
            return true
        }
    }

    /// Writes a snapshot now (whether or not anything changed) and returns what it covers once it is durable and
    /// the floors were raised. Runs on the gate's queue; waits for earlier snapshot writes first.
    @discardableResult
    package func snapshot() async throws(LogStoreError) -> DedupeSnapshotCoverage {
        let now = self.nowMillis()
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<DedupeSnapshotCoverage, LogStoreError>, Never>) in
            self.state.withLock { state in
                self.startSnapshot(&state, now: now) { continuation.resume(returning: $0) }
            }
        }
        return try result.get()
    }

    /// The final snapshot at shutdown: call it after the topic's appends drained and before its logs are closed.
    package func close() async throws(LogStoreError) {
        try await self.snapshot()
    }

    // Why these ends are safe (the commit watermark). Appends complete out of order: the topic's appender and the
    // shared `__quarantine` appender run independently, and a commit arrives some time after its append finished.
    // A snapshot may claim `topicEnd = T` only if every keyed record of this topic below T is in the index.
    //  * Offsets are assigned in increasing order and `endOffset` never exceeds the next offset to be assigned, so a
    //    record appended after a moment t gets an offset >= endOffset(t).
    //  * Every keyed record is appended only after its ticket was issued (contract), and the ticket remembers both
    //    logs' endOffset at issue time (`PendingFloor`). So an unsettled ticket's record has offset >= its floor.
    //  * Under the lock we take T = min(topicLog.endOffset now, floors of all unsettled tickets), and copy the index.
    //    A keyed record below T was appended (it is below endOffset) and its ticket is not unsettled (else T would be
    //    at most its floor, which is at most its offset), so it was committed — before this moment, since commits
    //    take the lock — and is in the copy. A released ticket's record never became visible below endOffset (a
    //    failed append never advances it; see docs/STORAGE.md "Failures"), and a reopen rescans from T anyway.
    //  * Records without a key, other topics' `__quarantine` records and duplicates (never appended) do not matter.
    //  Likewise for `__quarantine` with the quarantine floors. T never decreases: a new ticket's floor is at least
    //  the endOffset already seen. Only the durable snapshot's T becomes the retention floor.
    private func coveredEnds(_ state: State) -> (topic: Int64, quarantine: Int64) {
        var topic = self.topicLog.endOffset
        var quarantine = self.quarantineLog.endOffset
        if let floor = state.pending.lowest {
            topic = min(topic, floor.topic)
            quarantine = min(quarantine, floor.quarantine)
        }
        return (topic, quarantine)
    }

    /// Captures the index's entries and the covered ends (O(keys / 4096): ``DedupeIndex/entries`` shares the
    /// index's chunks, and its next change copies one chunk) and queues the write. Called under the lock so captures
    /// reach the serial queue in order.
    private func startSnapshot(
        _ state: inout State,
        now: Int64,
        completion: @escaping @Sendable (Result<DedupeSnapshotCoverage, LogStoreError>) -> Void
    ) {
        state.index.removeExpired(nowMillis: now)
        let ends = self.coveredEnds(state)
        let capture = Capture(
            entries: state.index.entries,
            topicEnd: ends.topic,
            quarantineEnd: ends.quarantine,
            takenAtMillis: now
        )
        state.snapshotChanges = state.changes
        state.snapshotTopicEnd = ends.topic
        state.snapshotQuarantineEnd = ends.quarantine
        state.snapshotAtMillis = now
        state.commitsSinceSnapshot = 0
        state.snapshotOwed = false
        self.queue.async {
            completion(self.writeSnapshot(capture))
        }
    }

    /// On the gate's queue: writes the snapshot (encoded as it is written), then raises the floors.
    private func writeSnapshot(_ capture: Capture) -> Result<DedupeSnapshotCoverage, LogStoreError> {
        do throws(LogStoreError) {
            try DedupeSnapshot.write(
                entries: capture.entries, hashKey: self.hashKey, topicEnd: capture.topicEnd,
                quarantineEnd: capture.quarantineEnd, takenAtMillis: capture.takenAtMillis,
                directory: self.directory, io: self.io
            )
        } catch {
            self.state.withLock { $0.snapshotOwed = true }
            self.logger.error(
                "dedupe snapshot write failed; retention stays at the previous snapshot until a write succeeds",
                metadata: ["brokerd.error": "\(error)", "brokerd.retention_floor": "\(self.floor.topicEnd)"]
            )
            return .failure(error)
        }
        self.floor.raise(topicEnd: capture.topicEnd, quarantineEnd: capture.quarantineEnd)
        self.logger.debug(
            "dedupe snapshot written",
            metadata: [
                "brokerd.keys": "\(capture.entries.count)", "brokerd.topic_end": "\(capture.topicEnd)",
                "brokerd.quarantine_end": "\(capture.quarantineEnd)",
            ]
        )
        return .success(
            DedupeSnapshotCoverage(
                topicEnd: capture.topicEnd,
                quarantineEnd: capture.quarantineEnd,
                keys: capture.entries.count
            )
        )
    }

    // MARK: Helpers

    private func digest(_ key: [UInt8]) throws(LogStoreError) -> DedupeDigest {
        try Self.validate(keyLength: key.count)
        return key.withUnsafeBytes { SipHash128.digest($0, key: self.hashKey) }
    }

    /// The digest of a `dedupe-key` header's value under this gate's key, for ``reserve(digests:)``. Throws
    /// `.invalidArgument` unless the key has 1...256 bytes.
    package func digest(of key: ByteBuffer) throws(LogStoreError) -> DedupeDigest {
        try self.digest(key)
    }

    /// ``digest(of:)`` for a key's bytes read in place (valid for the call).
    package func digest(of key: UnsafeRawBufferPointer) throws(LogStoreError) -> DedupeDigest {
        try Self.validate(keyLength: key.count)
        return SipHash128.digest(key, key: self.hashKey)
    }

    private func digest(_ key: ByteBuffer) throws(LogStoreError) -> DedupeDigest {
        try Self.validate(keyLength: key.readableBytes)
        return key.withUnsafeReadableBytes { SipHash128.digest($0, key: self.hashKey) }
    }

    private static func validate(keyLength: Int) throws(LogStoreError) {
        guard keyLength >= 1, keyLength <= DedupeIndex.maxKeyBytes else {
            throw LogStoreError(
                .invalidArgument,
                "dedupe key of \(keyLength) bytes; a \(Self.keyHeader) header has 1...\(DedupeIndex.maxKeyBytes) bytes"
            )
        }
    }

    private func issueTicket(
        _ state: inout State, digest: DedupeDigest, kind: DedupeTicket.Kind, sequence: UInt64 = 0
    ) -> DedupeTicket {
        let id = state.nextTicketID
        state.nextTicketID += 1
        // endOffset is an atomic load: cheap, no I/O under the lock.
        state.pending.issue(
            id, floor: PendingFloor(topic: self.topicLog.endOffset, quarantine: self.quarantineLog.endOffset)
        )
        return DedupeTicket(id: id, digest: digest, kind: kind, sequence: sequence)
    }

    private func misuse(_ ticket: DedupeTicket, _ what: String) {
        self.logger.error(
            "dedupe ticket \(what) but it is unknown or already settled (a bug in the caller); ignored",
            metadata: ["brokerd.ticket": "\(ticket.id)", "brokerd.digest": "\(ticket.digest)"]
        )
    }

    private func logEviction(_ eviction: DedupeEviction, cause: String) {
        self.evictions.increment()
        self.logger.warning(
            "dedupe index full: evicted a key before its window ended; its duplicates are no longer detected",
            metadata: [
                "brokerd.digest": "\(eviction.digest)",
                "brokerd.original_offset": "\(eviction.entry.offset)",
                "brokerd.location": "\(eviction.entry.location)",
                "brokerd.remaining_window_ms": "\(eviction.remainingMillis)",
                "brokerd.max_keys": "\(self.maxKeys)",
                "brokerd.cause": "\(cause)",
            ]
        )
    }
}

// MARK: - Recovery

extension DedupeGate {
    /// Opens the gate of `topic`, recovering its keys (docs/STORAGE.md, "Dedupe recovery"): loads `dedupe.snapshot`
    /// from `directory` (missing: empty; corrupt: logged at error level, full rebuild), forgets snapshot entries whose
    /// record is beyond its log's end, restores the live entries, then applies `__quarantine` from the snapshot's
    /// `quarantineEnd` (only records whose `quarantine-topic` is this topic) and the topic from its `topicEnd`. Keys
    /// whose records retention already deleted and the snapshot lacks are lost: logged at error level with the range.
    /// Finally writes a fresh snapshot when anything was rebuilt (a failure there is logged, not thrown).
    ///
    /// Open `topicLog` with `TopicLogConfig.retentionFloor = floor.topicFloor` (and `__quarantine` with
    /// ``DedupeFloor/quarantineFloor(_:)``) **before** calling this. The blocking I/O runs on the gate's queue.
    /// Throws `.invalidArgument` for a bad window or bound, and `.storageFailure` when the snapshot cannot be read or
    /// a log cannot be scanned.
    package static func open(
        topic: String,
        windowMillis: Int64,
        maxKeys: Int,
        directory: String,
        topicLog: any TopicLog,
        quarantineLog: any TopicLog,
        floor: DedupeFloor = DedupeFloor(),
        snapshotPolicy: SnapshotPolicy = SnapshotPolicy(),
        io: any FileIO = PosixFileIO(),
        logger: Logger,
        nowMillis: @escaping @Sendable () -> Int64 = wallClockMillis,
        metrics: any MetricsFactory = MetricsSystem.factory
    ) async throws(LogStoreError) -> DedupeGate {
        var topicLogger = logger
        topicLogger[metadataKey: "brokerd.topic"] = "\(topic)"
        let recoveryLogger = topicLogger
        let queue = Self.makeQueue(topic: topic)
        let recovered = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<Recovered, LogStoreError>, Never>) in
            queue.async {
                continuation.resume(
                    returning: Result { () throws(LogStoreError) -> Recovered in
                        try Self.recover(
                            topic: topic,
                            windowMillis: windowMillis,
                            maxKeys: maxKeys,
                            directory: directory,
                            topicLog: topicLog,
                            quarantineLog: quarantineLog,
                            io: io,
                            logger: recoveryLogger,
                            now: nowMillis()
                        )
                    }
                )
            }
        }
        let state = try recovered.get()
        // The loaded snapshot is durable: its (clamped) ends may become the floors at once.
        if let ends = state.durableEnds { floor.raise(topicEnd: ends.topic, quarantineEnd: ends.quarantine) }
        let gate = DedupeGate(
            topic: topic,
            directory: directory,
            topicLog: topicLog,
            quarantineLog: quarantineLog,
            floor: floor,
            snapshotPolicy: snapshotPolicy,
            io: io,
            logger: logger,
            nowMillis: nowMillis,
            metrics: metrics,
            queue: queue,
            index: state.index,
            recovery: state.report,
            snapshotOwed: state.rebuilt
        )
        if state.rebuilt {
            do {
                try await gate.snapshot()
            } catch {
                // Already logged by the write; the gate works, retention waits for the next successful snapshot.
            }
        }
        return gate
    }

    private struct Recovered: Sendable {
        var index: DedupeIndex
        var report: DedupeRecoveryReport
        var durableEnds: (topic: Int64, quarantine: Int64)?
        var rebuilt: Bool
    }

    /// Blocking: runs on the gate's queue.
    private static func recover(
        topic: String,
        windowMillis: Int64,
        maxKeys: Int,
        directory: String,
        topicLog: any TopicLog,
        quarantineLog: any TopicLog,
        io: any FileIO,
        logger: Logger,
        now: Int64
    ) throws(LogStoreError) -> Recovered {
        var loaded: DedupeSnapshot?
        var snapshotState = DedupeRecoveryReport.SnapshotState.missing
        do throws(LogStoreError) {
            loaded = try DedupeSnapshot.load(directory: directory, io: io)
            if loaded != nil { snapshotState = .loaded }
        } catch where error.kind == .corruptBatch {
            logger.error(
                "dedupe snapshot is corrupt; rebuilding the topic's dedupe keys from the logs",
                metadata: ["brokerd.error": "\(error.message)"]
            )
            snapshotState = .corrupt(error.message)
        }

        var index: DedupeIndex
        var topicFrom: Int64 = 0
        var quarantineFrom: Int64 = 0
        var restored = 0
        var dropped = 0
        var evictedWhileRestoring = 0
        var durableEnds: (topic: Int64, quarantine: Int64)?
        if var snapshot = loaded {
            let topicEnd = topicLog.endOffset
            let quarantineEnd = quarantineLog.endOffset
            let before = snapshot.entries.count
            snapshot.entries.removeAll {
                $0.entry.offset >= ($0.entry.location == .topic ? topicEnd : quarantineEnd)
            }
            dropped = before - snapshot.entries.count
            // A window lowered since the snapshot applies to restored keys too (a raised one cannot: the first
            // sighting's time is not stored, only its expiry).
            let (latest, overflow) = now.addingReportingOverflow(windowMillis)
            if !overflow {
                for i in snapshot.entries.indices where snapshot.entries[i].entry.expiresAtMillis > latest {
                    snapshot.entries[i].entry.expiresAtMillis = latest
                }
            }
            if dropped > 0 || snapshot.topicEnd > topicEnd || snapshot.quarantineEnd > quarantineEnd {
                logger.warning(
                    "dedupe snapshot covers records beyond the logs' ends (tail lost in a crash); keys forgotten",
                    metadata: [
                        "brokerd.snapshot_topic_end": "\(snapshot.topicEnd)", "brokerd.topic_end": "\(topicEnd)",
                        "brokerd.snapshot_quarantine_end": "\(snapshot.quarantineEnd)",
                        "brokerd.quarantine_end": "\(quarantineEnd)", "brokerd.keys_forgotten": "\(dropped)",
                    ]
                )
            }
            topicFrom = min(snapshot.topicEnd, topicEnd)
            quarantineFrom = min(snapshot.quarantineEnd, quarantineEnd)
            durableEnds = (topicFrom, quarantineFrom)
            let (restoredIndex, evictions) = try DedupeIndex.restoring(
                snapshot,
                windowMillis: windowMillis,
                maxKeys: maxKeys,
                nowMillis: now
            )
            index = restoredIndex
            restored = index.count
            evictedWhileRestoring = evictions.count
            if let largest = evictions.max(by: { $0.remainingMillis < $1.remainingMillis }) {
                logger.warning(
                    "dedupe snapshot holds more live keys than max_keys; evicted the oldest before their window ended",
                    metadata: [
                        "brokerd.evicted": "\(evictions.count)", "brokerd.max_keys": "\(maxKeys)",
                        "brokerd.largest_remaining_window_ms": "\(largest.remainingMillis)",
                    ]
                )
            }
        } else {
            index = try DedupeIndex(windowMillis: windowMillis, maxKeys: maxKeys)
        }

        let topicBytes = Array(topic.utf8)
        let quarantineScan = try index.apply(
            log: quarantineLog,
            from: quarantineFrom,
            location: .quarantine,
            nowMillis: now
        ) {
            Self.quarantineRecordKey($0, topic: topicBytes)
        }
        let topicScan = try index.apply(log: topicLog, from: topicFrom, location: .topic, nowMillis: now) {
            Self.topicRecordKey($0)
        }
        for (name, scan) in [("__quarantine", quarantineScan), (topic, topicScan)] {
            if let missing = scan.missing {
                logger.error(
                    "dedupe keys lost: retention deleted records no snapshot covered; duplicates go undetected",
                    metadata: [
                        "brokerd.log": "\(name)", "brokerd.lost_from": "\(missing.lowerBound)",
                        "brokerd.lost_to": "\(missing.upperBound)",
                    ]
                )
            }
            if scan.evicted > 0 {
                logger.warning(
                    "dedupe index full while rebuilding: evicted keys before their window ended",
                    metadata: [
                        "brokerd.log": "\(name)", "brokerd.evicted": "\(scan.evicted)",
                        "brokerd.max_keys": "\(maxKeys)",
                    ]
                )
            }
            if scan.invalidKeys > 0 {
                logger.warning(
                    "records with an invalid dedupe key were skipped while rebuilding",
                    metadata: ["brokerd.log": "\(name)", "brokerd.records": "\(scan.invalidKeys)"]
                )
            }
        }
        let report = DedupeRecoveryReport(
            snapshot: snapshotState,
            restoredKeys: restored,
            droppedBeyondLogEnd: dropped,
            evictedWhileRestoring: evictedWhileRestoring,
            quarantineScan: quarantineScan,
            topicScan: topicScan
        )
        logger.info(
            "dedupe keys recovered",
            metadata: [
                "brokerd.snapshot": "\(snapshotState)", "brokerd.restored": "\(restored)",
                "brokerd.applied_topic": "\(topicScan.applied)",
                "brokerd.applied_quarantine": "\(quarantineScan.applied)",
                "brokerd.keys": "\(index.count)",
            ]
        )
        let rebuilt =
            loaded == nil || dropped > 0 || topicScan.scannedTo > topicFrom || quarantineScan.scannedTo > quarantineFrom
        return Recovered(index: index, report: report, durableEnds: durableEnds, rebuilt: rebuilt)
    }

    /// A topic record's dedupe key: its single `dedupe-key` header, with the window starting at the broker's
    /// `broker-received-at` (the record's timestamp may be the producer's). A record with more than one `dedupe-key`
    /// has none (policy quarantines it; the publish path never reserves for it).
    static func topicRecordKey(_ stored: StoredRecord) -> (key: ByteBuffer, atMillis: Int64)? {
        guard let key = Self.singleKey(stored.record) else { return nil }
        let at = Self.decimal(stored.record.header(named: Self.receivedAtHeader)) ?? stored.record.timestamp
        return (key, at)
    }

    /// A `__quarantine` record's dedupe key for `topic`: only when its (broker-appended, hence last)
    /// `quarantine-topic` is `topic`; the window starts at `quarantine-time`.
    static func quarantineRecordKey(_ stored: StoredRecord, topic: [UInt8]) -> (key: ByteBuffer, atMillis: Int64)? {
        guard let original = stored.record.header(named: Self.quarantineTopicHeader),
            original.readableBytesView.elementsEqual(topic),
            let key = Self.singleKey(stored.record)
        else { return nil }
        let at = Self.decimal(stored.record.header(named: Self.quarantineTimeHeader)) ?? stored.record.timestamp
        return (key, at)
    }

    private static func singleKey(_ record: LogRecord) -> ByteBuffer? {
        var found: ByteBuffer?
        for header in record.headers where header.name == Self.keyHeader {
            if found != nil { return nil }
            found = header.value
        }
        return found
    }

    private static func decimal(_ value: ByteBuffer?) -> Int64? {
        guard let value, let text = value.getString(at: value.readerIndex, length: value.readableBytes) else {
            return nil
        }
        return Int64(text)
    }
}
