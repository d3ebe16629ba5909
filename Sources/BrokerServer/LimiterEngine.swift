#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Locking
import LogStore
import Logging
import Metrics
import NIOCore
import Throttle
import TopicRouter
import WireProtocol

/// What a limiter decided for one record.
enum LimitDecision: Equatable, Sendable {
    case pass
    /// Refused: answer RATE_LIMITED with this retry-after.
    case reject(limiter: String, key: LimiterKeyKind, retryAfterMillis: UInt32)
    /// Send it to `__quarantine` (reason RATE_LIMITED, rule `limiter.<name>`).
    case quarantine(limiter: String, key: LimiterKeyKind, retryAfterMillis: UInt32)
    /// Hold it this long, then judge it again.
    case delay(limiter: String, key: LimiterKeyKind, nanos: UInt64)
}

/// The broker's limiters: one `LimiterSet` built from the policy's `[[limiters]]`, the clocks they read, the
/// persisted event times of window caps (so a restart never resets a contact cap), and the visibility of every
/// refusal: a metric per limiter and decision, and `limiter.exceeded` audit entries aggregated per limiter and
/// decision (written at most every 10 s, and at shutdown).
///
/// Persistence: window caps (`cap` + `window_ms`) write their event times to `<dataDir>/limiters.snapshot` every few
/// seconds and at shutdown, and read them back at start. A crash loses the events of at most the last interval; a
/// clean restart loses none. Token buckets (rates) start full after a restart.
final class LimiterEngine: Sendable {
    private let current: Locked<LimiterSet>
    private let snapshotPath: String
    private let logger: Logger
    private let metrics: any MetricsFactory
    private let counters = Locked<[String: Counter]>([:])
    private let pendingAudit = Locked<[AuditKey: Int]>([:])
    private let lastAuditFlush = Locked<Int64>(0)
    /// Serialises `persist` (its value counts the snapshots written).
    private let persisting = Locked<Int>(0)

    /// The metric counting limiter decisions other than pass, by limiter and decision.
    static let decisionsMetric = "brokerd_limiter_decisions_total"
    /// Aggregated audit entries are written at most this often.
    static let auditIntervalMillis: Int64 = 10_000

    private struct AuditKey: Hashable {
        var limiter: String
        var decision: String
    }

    init(policy: Policy, dataDir: String, logger: Logger, metrics: any MetricsFactory = MetricsSystem.factory) throws {
        self.snapshotPath = dataDir + "/limiters.snapshot"
        self.logger = logger
        self.metrics = metrics
        let set = try LimiterSet(definitions: Self.definitions(policy))
        self.current = Locked(set)
        self.lastAuditFlush.withLock { $0 = currentTimeMillis() }
        if let text = try readBytesIfPresent(self.snapshotPath) {
            // A damaged file stops the start (fail closed: contact caps would silently reset); the operator decides.
            let entries: [LimiterSnapshotEntry]
            do {
                entries = try LimiterSnapshotCodec.decode(text, file: self.snapshotPath)
            } catch {
                throw ConfigError(
                    "\(error); the contact caps it holds cannot be restored. Move the file away to start with every "
                        + "window cap empty (recipients may then be contacted again within their windows)"
                )
            }
            let report = set.restore(entries, now: Self.now())
            logger.info("limiter windows restored", metadata: ["brokerd.detail": "\(report)"])
        }
    }

    /// Throttle's view of the declarations.
    static func definitions(_ policy: Policy) -> [LimiterDefinition] {
        policy.limiters.map { declaration in
            let limit: LimiterDefinition.Limit =
                switch declaration.limit {
                case .tokenBucket(let rate, let burst): .tokenBucket(ratePerSecond: rate, burst: burst)
                case .window(let cap, let windowMillis): .window(cap: cap, windowNanos: UInt64(windowMillis) * 1_000_000)
                }
            return LimiterDefinition(
                name: declaration.name, limit: limit, bytesPerSecond: declaration.bytesPerSecond,
                burstBytes: declaration.burstBytes, maxKeys: declaration.maxKeys
            )
        }
    }

    /// Both clocks, read once.
    static func now() -> LimiterNow {
        var monotonic = timespec()
        var wall = timespec()
        clock_gettime(CLOCK_MONOTONIC, &monotonic)
        clock_gettime(CLOCK_REALTIME, &wall)
        return LimiterNow(
            monotonicNanos: UInt64(monotonic.tv_sec) * 1_000_000_000 + UInt64(monotonic.tv_nsec),
            wallNanos: UInt64(wall.tv_sec) * 1_000_000_000 + UInt64(wall.tv_nsec)
        )
    }

    /// The publish limiters of `topic`, ready to judge the records of one PUBLISH; nil when the topic has none (then
    /// every record passes and nothing is counted). Read once per request: the limiter set, the topic's limiters
    /// and the clocks (the records of a request arrive together).
    func publishJudge(topic: String, principal: Principal, connectionID: UInt64, policy: Policy) -> PublishJudge? {
        let limiters = policy.limiters(for: topic, direction: .publish)
        guard !limiters.isEmpty else { return nil }
        let set = self.current.withLock { $0 }
        return PublishJudge(
            limiters: limiters.map {
                PublishJudge.Limiter(
                    declaration: $0,
                    reader: policy.limiterKeyReader($0, topic: topic, principal: principal, connectionID: connectionID),
                    handle: try? set.handle($0.name)
                )
            },
            now: Self.now(), topic: topic, principal: principal, connectionID: connectionID, policy: policy
        )
    }

    /// The header names the publish limiters `limiters` read (each one's `keyHeaderNames`, once).
    /// `PublishSorter.sort` notes where they are.
    static func headerNames(_ limiters: [LimiterDeclaration]) -> [String] {
        var names: [String] = []
        for limiter in limiters {
            for name in limiter.keyHeaderNames where !names.contains(name) { names.append(name) }
        }
        return names
    }

    /// How many of `sizes` (records about to be delivered, in order) the delivery limiters let through now; when
    /// fewer than all, how long until the next may go. Each record passed is counted.
    func paceDelivery(
        topic: String, sizes: [Int], principal: Principal, connectionID: UInt64, group: String, policy: Policy
    ) -> (allowed: Int, retryAfterNanos: UInt64) {
        let limiters = policy.limiters(for: topic, direction: .delivery)
        guard !limiters.isEmpty else { return (sizes.count, 0) }
        let set = self.current.withLock { $0 }
        let keyed = limiters.map {
            ($0, policy.limiterKeys($0, topic: topic, headers: [PolicyHeader](), principal: principal, connectionID: connectionID, group: group.isEmpty ? nil : group))
        }
        for (index, size) in sizes.enumerated() {
            let now = Self.now()
            for (limiter, keys) in keyed where !keys.isEmpty {
                let outcome = (try? set.check(limiter: limiter.name, keys: keys, tokens: 1, bytes: size, now: now))
                    ?? .limited(retryAfterNanos: 1_000_000_000)
                switch outcome {
                case .allowed: continue
                case .limited(let nanos), .tableFull(let nanos):
                    self.count(limiter.name, "delay")
                    return (index, max(nanos, 1_000_000))
                }
            }
        }
        return (sizes.count, 0)
    }

    /// Counts a decision other than pass: a metric at once, an aggregated audit entry later.
    func count(_ limiter: String, _ decision: String) {
        let counter = self.counters.withLock { counters in
            let key = limiter + "\u{0}" + decision
            if let counter = counters[key] { return counter }
            let counter = Counter(
                label: Self.decisionsMetric, dimensions: [("limiter", limiter), ("decision", decision)],
                factory: self.metrics
            )
            counters[key] = counter
            return counter
        }
        counter.increment()
        self.pendingAudit.withLock { $0[AuditKey(limiter: limiter, decision: decision), default: 0] += 1 }
    }

    /// Writes the aggregated `limiter.exceeded` entries when due (or now, with `force`).
    func flushAudit(to audit: AuditLedger, policyVersion: String, force: Bool = false) {
        let now = currentTimeMillis()
        let due = self.lastAuditFlush.withLock { last in
            guard force || now - last >= Self.auditIntervalMillis else { return false }
            last = now
            return true
        }
        guard due else { return }
        let pending = self.pendingAudit.withLock { pending in
            defer { pending.removeAll() }
            return pending
        }
        for (key, count) in pending.sorted(by: { ($0.key.limiter, $0.key.decision) < ($1.key.limiter, $1.key.decision) }) {
            audit.record(AuditEntry(
                time: now, principal: "brokerd", action: AuditAction.limiterExceeded, topic: "", decision: key.decision,
                reason: "RATE_LIMITED", rule: "limiter.\(key.limiter)", policyVersion: policyVersion, count: count,
                detail: "limiter '\(key.limiter)': \(count) record\(count == 1 ? "" : "s") \(key.decision == "reject" ? "rejected" : key.decision == "quarantine" ? "quarantined" : "delayed")"
            ))
        }
    }

    /// A reload: a new set for the new declarations, keeping the window events of limiters that still exist.
    func reload(_ policy: Policy) throws {
        let next = try LimiterSet(definitions: Self.definitions(policy))
        let now = Self.now()
        let previous = self.current.withLock { $0 }
        _ = next.restore(previous.snapshot(now: now), now: now)
        self.current.withLock { $0 = next }
    }

    /// LIMITS_STATE entries for these limiters, with the state of `key` when it is not empty.
    func states(_ declarations: [LimiterDeclaration], key: String) -> [LimitState] {
        let set = self.current.withLock { $0 }
        let now = Self.now()
        return declarations.map { declaration in
            let (limit, capacity): (String, Int64) =
                switch declaration.limit {
                case .tokenBucket(let rate, let burst): ("\(rate)/s burst \(burst)", Int64(burst))
                case .window(let cap, let windowMillis): ("\(cap) per \(windowMillis) ms", Int64(cap))
                }
            var state = LimitState(
                limiter: declaration.name, direction: declaration.direction == .publish ? 0 : 1,
                keyKind: declaration.key.rawValue, action: declaration.action.rawValue, limit: limit,
                keysHeld: UInt32(clamping: (try? set.keyCount(limiter: declaration.name)) ?? 0), capacity: capacity
            )
            if !key.isEmpty, let keyState = try? set.state(limiter: declaration.name, key: key, now: now) {
                state.stateKey = key
                switch keyState.usage {
                case .tokens(let available, let burst): state.used = Int64(burst - available)
                case .window(let events, _, _): state.used = Int64(events)
                }
                state.retryAfterMillis = UInt32(min((keyState.retryAfterNanos + 999_999) / 1_000_000, UInt64(UInt32.max)))
            }
            return state
        }
    }

    /// Writes the window caps' event times (temp file, fsync, rename). One writer at a time: the periodic writer and
    /// the one at shutdown share the temp file.
    func persist() {
        self.persisting.withLock { written in
            let entries = self.current.withLock { $0 }.snapshot(now: Self.now())
            do {
                try writeBytesAtomically(self.snapshotPath, bytes: LimiterSnapshotCodec.encode(entries), mode: 0o600)
                written += 1
            } catch {
                self.logger.error("limiter windows not persisted", metadata: ["brokerd.error": "\(error)"])
            }
        }
    }
}

/// One PUBLISH request's view of its topic's publish limiters (`LimiterEngine.publishJudge`).
final class PublishJudge {
    /// A limiter with its key reader and its handle in the limiter set (nil: the set does not know it, a reload
    /// raced us). A class: the judge visits each for every record, and copying a tuple of them out of the array
    /// cost about 500 instructions of retains and releases per record.
    final class Limiter {
        let declaration: LimiterDeclaration
        let reader: LimiterKeyReader
        let handle: LimiterSet.Handle?
        /// The last single key this limiter checked by its bytes, and its `LimiterSet.keyHash(utf8:)`: a key that
        /// repeats from one record to the next (the one consent scope of a whole request, say) is hashed once.
        /// Unchecked exclusivity for the reason `PublishJudge.keys` gives.
        @exclusivity(unchecked) private var lastKey: [UInt8] = []
        @exclusivity(unchecked) private var lastKeyHash = 0
        @exclusivity(unchecked) private var hasLastKey = false

        init(declaration: LimiterDeclaration, reader: LimiterKeyReader, handle: LimiterSet.Handle?) {
            self.declaration = declaration
            self.reader = reader
            self.handle = handle
        }

        /// `LimiterSet.keyHash(utf8: key)`, remembered for the next call.
        func keyHash(_ key: UnsafeRawBufferPointer) -> Int {
            if self.hasLastKey, key.count == self.lastKey.count, self.lastKey.withUnsafeBytes({ last in
                key.isEmpty || memcmp(last.baseAddress!, key.baseAddress!, key.count) == 0
            }) {
                return self.lastKeyHash
            }
            let hash = LimiterSet.keyHash(utf8: key)
            self.lastKey.removeAll(keepingCapacity: true)
            self.lastKey.append(contentsOf: key)
            self.lastKeyHash = hash
            self.hasLastKey = true
            return hash
        }
    }

    let limiters: [Limiter]
    let now: LimiterNow
    let topic: String
    let principal: Principal
    let connectionID: UInt64
    let policy: Policy
    /// One record's keys for one limiter, as bytes; reused for every record and limiter (no allocation per record).
    /// Unchecked exclusivity: only `judge` touches it, on one event loop, never re-entrantly (the header walk it
    /// passes `keys` to does not call back into the judge), so the run-time access checks are pure cost.
    @exclusivity(unchecked) private var keys = LimiterKeyBytes()

    /// A class, not a struct: the per-record judge closure holds it, and copying a struct of this many references
    /// out of the closure's context for every record cost about 800 instructions of retains and releases.
    init(
        limiters: [Limiter],
        now: LimiterNow, topic: String, principal: Principal, connectionID: UInt64, policy: Policy
    ) {
        self.limiters = limiters
        self.now = now
        self.topic = topic
        self.principal = principal
        self.connectionID = connectionID
        self.policy = policy
    }

    /// Judges one record, first refusal wins. A refusal of a later limiter does not give back what earlier ones
    /// counted (a refused record may use up allowance: the limits err on the side of fewer contacts, never more).
    func judge(bytes: Int, eachHeader: HeaderVisitor) -> LimitDecision {
        for entry in self.limiters {
            if let refusal = self.verdict(entry, bytes: bytes, eachHeader: eachHeader) { return refusal }
        }
        return .pass
    }

    /// Judges the records `sorter` accepted from one request (their headers walked as `PublishSorter.visitHeaders`
    /// does, by the limiters' header names `limiterHeaderNames`): the decisions `judge` would give them one after
    /// another, one per record of `sorter.accepted`, or nil when every record passes (the usual case).
    ///
    /// Limiter by limiter instead of record by record: a limiter sees the same records in the same order either
    /// way (those no earlier limiter refused), since limiters share no state. For each limiter the records are
    /// grouped by key and each key is checked once for all its records (`LimiterSet.Handle.check(_:now:)`, exact
    /// because the request has one `now`), under one lock. Judged record by record instead: a limiter with a byte
    /// quota, one whose key table the request's new keys could fill, and one for which a record has more than one
    /// key (two consent scopes) or keys the reader declines to read as bytes.
    func judgeRequest(_ sorter: PublishSorter, limiterHeaderNames: [String]) -> [LimitDecision]? {
        let accepted = sorter.accepted
        var places: [PublishSorter.HeaderPlace] = []
        places.reserveCapacity(accepted.count)
        for index in accepted.indices { places.append(accepted[index].place) }
        let records = sorter.records
        let provenance = sorter.provenance
        return records.bytes.withUnsafeReadableBytes { raw in
            self.judgeRequest(
                accepted, places: places, records: records, raw: raw, provenance: provenance,
                limiterHeaderNames: limiterHeaderNames
            )
        }
    }

    /// `judgeRequest(_:limiterHeaderNames:)` given the sorter's parts; `raw`: the records' bytes (the noted header
    /// values' offsets are in it).
    private func judgeRequest(
        _ accepted: [PublishSorter.Accepted], places: [PublishSorter.HeaderPlace], records: EncodedPublishRecords,
        raw: UnsafeRawBufferPointer, provenance: [LogHeader], limiterHeaderNames: [String]
    ) -> [LimitDecision]? {
        let count = accepted.count
        // Calls `body` with a walk over record `record`'s headers (a closure literal: nothing allocated per record).
        func visit<Result>(_ record: Int, _ body: (HeaderVisitor) -> Result) -> Result {
            body {
                PublishSorter.visitHeaders(
                    of: places[record], in: records, provenance: provenance, named: $0,
                    limiterHeaderNames: limiterHeaderNames, $1
                )
            }
        }
        // Decisions other than pass, allocated at the first one. (No nested function reads or writes it: a
        // captured variable is checked for exclusive access at run time on every use.)
        var decisions: [LimitDecision]? = nil
        for entry in self.limiters {
            if count > 1, let handle = entry.handle, !handle.hasByteQuota,
                var grouped = self.groupByKey(
                    entry, count: count, decided: decisions, places: places, raw: raw,
                    slots: Self.valueSlots(entry.reader, limiterHeaderNames: limiterHeaderNames, provenance: provenance),
                    visit: visit
                ),
                handle.check(&grouped.counts, now: self.now)
            {
                // Each key's first `allowed` records passed; the rest get the key's refusal (usually every record
                // passed: nothing to set).
                guard grouped.counts.someRefused else { continue }
                var seen = [Int](repeating: 0, count: grouped.counts.count)
                for record in 0..<count {
                    let key = grouped.keyOf[record]
                    guard key >= 0 else { continue }
                    seen[key] += 1
                    guard seen[key] > grouped.counts.allowed[key],
                        let refusal = self.decision(entry, grouped.counts.refusals[key])
                    else { continue }
                    Self.set(&decisions, record, refusal, count: count)
                }
                continue
            }
            for record in 0..<count where Self.passes(decisions, record) {
                let bytes = accepted[record].valueBytes
                if let refusal = visit(record, { self.verdict(entry, bytes: bytes, eachHeader: $0) }) {
                    Self.set(&decisions, record, refusal, count: count)
                }
            }
        }
        return decisions
    }

    /// Whether no limiter has refused record `record` so far (`decisions` nil: none refused any).
    private static func passes(_ decisions: [LimitDecision]?, _ record: Int) -> Bool {
        guard let decisions else { return true }
        if case .pass = decisions[record] { return true }
        return false
    }

    /// Sets record `record`'s decision, making the array (of `count`) at the first.
    private static func set(_ decisions: inout [LimitDecision]?, _ record: Int, _ decision: LimitDecision, count: Int) {
        if decisions == nil { decisions = [LimitDecision](repeating: .pass, count: count) }
        decisions![record] = decision
    }

    /// The records no limiter refused so far (`decided`) grouped by their one key for `entry` (`keyOf`: the key's
    /// index in `counts`, -1 for a record with no key or refused); nil when some record has more than one key or
    /// keys the reader declines to give as bytes.
    ///
    /// With `slots` (the reader's header names among the values `sort` noted, `raw` the records' bytes), a record
    /// whose values of those headers are the bytes of the last record read has that record's key (the one consent
    /// scope of a whole request), and a key that is one header's value is read straight from the noted value: no
    /// walk over the headers for either. The others are read by the reader through `visit`.
    private func groupByKey(
        _ entry: Limiter, count: Int, decided: [LimitDecision]?, places: [PublishSorter.HeaderPlace],
        raw: UnsafeRawBufferPointer, slots: ValueSlots?, visit: (Int, (HeaderVisitor) -> Bool) -> Bool
    ) -> (counts: KeyCounts, keyOf: [Int])? {
        var counts = KeyCounts(records: count)
        var keyOf = [Int](repeating: -1, count: count)
        // The last record whose key was read with its values noted, and that key (-1: none).
        var memo = -1
        for record in 0..<count where Self.passes(decided, record) {
            let values = places[record].limiterValues
            let noted = slots != nil && values.isKnown
            if let slots, noted {
                // A key that is one header's value is read from it (`add` itself remembers the last key); the
                // memo is for keys the reader has to work out.
                if slots.sole >= 0, let value = Self.soleValue(values, slot: slots.sole, raw) {
                    if !value.isEmpty {
                        guard LimiterKeyReader.isASCII(value) else { return nil }  // the reader declines it
                        keyOf[record] = counts.add(value)
                    }
                    memo = -1
                    continue
                }
                if memo >= 0, Self.sameValues(values, places[memo].limiterValues, mask: slots.mask, raw) {
                    let key = keyOf[memo]
                    if key >= 0 { counts.addAgain(key) }
                    keyOf[record] = key
                    memo = record
                    continue
                }
            }
            guard visit(record, { entry.reader.keys(eachHeader: $0, into: &self.keys) }) else { return nil }
            switch self.keys.count {
            case 0: break
            case 1: self.keys.withKey(0) { keyOf[record] = counts.add($0) }
            default: return nil
            }
            memo = noted ? record : -1
        }
        return (counts, keyOf)
    }

    /// Where a limiter's key headers are among the header values `PublishSorter.sort` notes for each record: a bit
    /// per slot (index in the limiters' header names) of the reader's `keyHeaderNames`, and the slot of its
    /// `soleKeyHeader` (-1: none).
    private struct ValueSlots {
        var mask: UInt64
        var sole: Int
    }

    /// `reader`'s `ValueSlots`; nil when the noted values do not decide its keys: a provenance header has one of its
    /// names (`sort` notes the record's own headers only), or a name has no slot below 64.
    private static func valueSlots(
        _ reader: LimiterKeyReader, limiterHeaderNames: [String], provenance: [LogHeader]
    ) -> ValueSlots? {
        var mask: UInt64 = 0
        for name in reader.keyHeaderNames {
            guard !provenance.contains(where: { $0.name == name }),
                let slot = limiterHeaderNames.firstIndex(of: name), slot < 64
            else { return nil }
            mask |= 1 << UInt64(slot)
        }
        let sole = reader.soleKeyHeader.flatMap { limiterHeaderNames.firstIndex(of: $0) } ?? -1
        return ValueSlots(mask: mask, sole: sole)
    }

    /// Whether the values in slots `mask` of `a` and `b` are the same bytes (in `raw`) in the same order.
    private static func sameValues(
        _ a: PublishSorter.LimiterValues, _ b: PublishSorter.LimiterValues, mask: UInt64, _ raw: UnsafeRawBufferPointer
    ) -> Bool {
        // The next value in a slot of `mask` from position `index` of `values` (slot -1: none left).
        func next(
            _ values: PublishSorter.LimiterValues, _ index: inout Int
        ) -> (slot: Int, bytes: UnsafeRawBufferPointer) {
            while index < Int(values.count) {
                let value = values.value(index, in: raw)
                index += 1
                if mask & (1 << UInt64(value.slot)) != 0 { return value }
            }
            return (-1, UnsafeRawBufferPointer(start: nil, count: 0))
        }
        var (i, j) = (0, 0)
        while true {
            let (x, y) = (next(a, &i), next(b, &j))
            guard x.slot == y.slot, x.bytes.count == y.bytes.count else { return false }
            guard x.slot >= 0 else { return true }
            guard x.bytes.isEmpty || memcmp(x.bytes.baseAddress!, y.bytes.baseAddress!, x.bytes.count) == 0
            else { return false }
        }
    }

    /// The one value in slot `slot` of `values` (in `raw`); empty when there is none; nil when there are several.
    private static func soleValue(
        _ values: PublishSorter.LimiterValues, slot: Int, _ raw: UnsafeRawBufferPointer
    ) -> UnsafeRawBufferPointer? {
        var found: UnsafeRawBufferPointer? = nil
        for index in 0..<Int(values.count) {
            let value = values.value(index, in: raw)
            guard value.slot == slot else { continue }
            guard found == nil else { return nil }
            found = value.bytes
        }
        return found ?? UnsafeRawBufferPointer(start: nil, count: 0)
    }

    /// One limiter's verdict on one record: nil when it passes. The keys are `Policy.limiterKeys`'s; the key reader
    /// finds them as bytes, and a single key (the usual case) is checked by its bytes, so no `String` is built for a
    /// key the limiter already holds. When the reader declines (a key that is not ASCII), `limiterKeys` gives them
    /// as strings.
    private func verdict(_ entry: Limiter, bytes: Int, eachHeader: HeaderVisitor) -> LimitDecision? {
        // The declaration is read only on the rare paths below: copying it out for every record and limiter cost
        // about 530 instructions of retains and releases (its strings).
        let handle = entry.handle
        var strings: [String]? = nil
        if !entry.reader.keys(eachHeader: eachHeader, into: &self.keys) {
            strings = self.policy.limiterKeys(
                entry.declaration, topic: self.topic, principal: self.principal, connectionID: self.connectionID,
                group: nil, eachHeader: eachHeader
            )
        }
        let count = strings?.count ?? self.keys.count
        guard count > 0 else { return nil }
        // A limiter the set does not know (a reload raced us): refuse rather than let the record through.
        guard let handle else { return self.decision(entry, .limited(retryAfterNanos: 1_000_000_000)) }
        if strings == nil && count == 1 {
            var checked = LimiterOutcome.allowed
            self.keys.withKey(0) {
                checked = handle.check(keyBytes: $0, hash: entry.keyHash($0), tokens: 1, bytes: bytes, now: self.now)
            }
            return self.decision(entry, checked)
        }
        return self.decision(
            entry, handle.check(keys: strings ?? self.keys.strings, tokens: 1, bytes: bytes, now: self.now)
        )
    }

    /// What `entry`'s action makes of `outcome`: nil for allowed.
    private func decision(_ entry: Limiter, _ outcome: LimiterOutcome) -> LimitDecision? {
        let retry: UInt64
        switch outcome {
        case .allowed: return nil
        case .limited(let nanos), .tableFull(let nanos): retry = nanos
        }
        let millis = UInt32(min(retry / 1_000_000 + (retry % 1_000_000 == 0 ? 0 : 1), UInt64(UInt32.max)))
        let limiter = entry.declaration
        switch limiter.action {
        case .reject: return .reject(limiter: limiter.name, key: limiter.key, retryAfterMillis: millis)
        case .quarantine: return .quarantine(limiter: limiter.name, key: limiter.key, retryAfterMillis: millis)
        case .delay: return .delay(limiter: limiter.name, key: limiter.key, nanos: retry)
        }
    }
}
