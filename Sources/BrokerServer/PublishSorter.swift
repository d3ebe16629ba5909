import LogStore
import NIOCore
import TopicRouter
import WireProtocol

/// Splits one PUBLISH by the policy's verdicts into records for its topic (stamped with provenance headers) and
/// records for `__quarantine` (with the quarantine headers), then maps the two appends' base offsets back to one
/// result per record, in the request's order. Pure: no I/O.
struct PublishSorter {
    /// A record the policy accepted: record `index` of `records`, read from the frame's bytes (its stored form, with
    /// the provenance headers, is written from there when it is appended).
    struct Accepted {
        var index: Int
        /// Bytes of the record's value (what the publish limiters count).
        var valueBytes: Int
        var dedupeKey: KeySpan?
        var ticket: DedupeTicket? = nil
        /// Bit `n` is set when header `n` (the record's headers, then the provenance headers) is called by one of
        /// the names `sort` was given as the publish limiters' (`.max`: not known, every header may be): the
        /// limiters' header walk visits only those.
        var limiterHeaders: UInt64 = .max
        /// The values of those headers among the record's own, as offsets in the records' bytes: the limiters'
        /// walk reads them from there without walking the record (`.unknown`: walk by `limiterHeaders`).
        var limiterValues = LimiterValues.unknown

        /// Where its headers are, for `visitHeaders`.
        var place: HeaderPlace {
            HeaderPlace(index: self.index, limiterHeaders: self.limiterHeaders, limiterValues: self.limiterValues)
        }
    }

    /// Where an accepted record's headers are (`Accepted`'s record index, `limiterHeaders` and `limiterValues`):
    /// what `visitHeaders` reads. Nothing in it is reference-counted, so the limiters' walk over each record copies
    /// it for free (copying an `Accepted` retains its dedupe key's storage).
    struct HeaderPlace {
        var index: Int
        var limiterHeaders: UInt64
        var limiterValues: LimiterValues
    }

    /// Where the values of up to four headers that the publish limiters read are, in header order, each with the
    /// index of its name in the limiters' header names; and the record's header count (the provenance headers'
    /// positions follow it). Fixed fields, not an array: no allocation per record.
    struct LimiterValues {
        static let capacity = 4
        /// Not noted: more than `capacity` such headers, or the sorter was not given the names.
        static let unknown = LimiterValues(count: UInt8.max)

        /// How many are noted; `UInt8.max`: unknown.
        private(set) var count: UInt8
        private(set) var headerCount: UInt32 = 0
        /// Byte `n` is the name index of value `n`.
        private var slots: UInt32 = 0
        private var starts: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)
        private var lengths: (UInt32, UInt32, UInt32, UInt32) = (0, 0, 0, 0)

        private init(count: UInt8) { self.count = count }

        /// None noted yet, for a record of `headerCount` headers.
        init(headerCount: Int) {
            self.count = 0
            self.headerCount = UInt32(clamping: headerCount)
        }

        var isKnown: Bool { self.count != UInt8.max }

        /// Notes the value at `start` (`length` bytes) of a header called by name `slot`; past the capacity the
        /// values become unknown.
        mutating func append(slot: Int, start: Int, length: Int) {
            guard self.isKnown else { return }
            guard Int(self.count) < Self.capacity, slot < 256, let start = UInt32(exactly: start),
                let length = UInt32(exactly: length)
            else {
                self = .unknown
                return
            }
            let index = Int(self.count)
            self.slots |= UInt32(slot) << UInt32(8 * index)
            switch index {
            case 0: (self.starts.0, self.lengths.0) = (start, length)
            case 1: (self.starts.1, self.lengths.1) = (start, length)
            case 2: (self.starts.2, self.lengths.2) = (start, length)
            default: (self.starts.3, self.lengths.3) = (start, length)
            }
            self.count += 1
        }

        /// Value `index`: its name index and its bytes in `raw`, the records' bytes.
        @inline(__always)
        func value(_ index: Int, in raw: UnsafeRawBufferPointer) -> (slot: Int, bytes: UnsafeRawBufferPointer) {
            let value = self.value(index)
            return (value.slot, UnsafeRawBufferPointer(rebasing: raw[value.start..<value.start + value.length]))
        }

        /// Value `index`: its name index, offset and length.
        @inline(__always)
        func value(_ index: Int) -> (slot: Int, start: Int, length: Int) {
            let slot = Int((self.slots >> UInt32(8 * index)) & 0xff)
            switch index {
            case 0: return (slot, Int(self.starts.0), Int(self.lengths.0))
            case 1: return (slot, Int(self.starts.1), Int(self.lengths.1))
            case 2: return (slot, Int(self.starts.2), Int(self.lengths.2))
            default: return (slot, Int(self.starts.3), Int(self.lengths.3))
            }
        }
    }

    /// Where a record's one `dedupe-key` value is in the records' bytes (`records.bytes`' readable bytes): read in
    /// place by `reserveKeys`, so an `Accepted` holds no reference (a slice of the frame's buffer was a retain when
    /// the record was sorted and at each copy, and a release at each destroy).
    struct KeySpan {
        var start: UInt32
        var count: UInt32

        /// The key's bytes in `raw`, the records' readable bytes.
        func bytes(in raw: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
            UnsafeRawBufferPointer(rebasing: raw[Int(self.start)..<Int(self.start) + Int(self.count)])
        }
    }

    struct Quarantined {
        var index: Int
        var record: LogRecord
        var reason: String
        var rule: String
        var message: String
        var dedupeKey: KeySpan?
        var ticket: DedupeTicket? = nil
    }

    /// A record refused on its own (the request as a whole was allowed): not appended anywhere.
    struct Refused {
        var index: Int
        var code: ErrorCode
        var message: String
    }

    /// The request's records, in wire form (the frame's bytes).
    let records: EncodedPublishRecords
    /// The headers stamped on every accepted record (receive time, producer, policy version), in order.
    let provenance: [LogHeader]
    /// The broker's receive time: the timestamp of a record that came with 0.
    let receivedAtMillis: Int64
    private(set) var accepted: [Accepted] = []
    private(set) var quarantined: [Quarantined] = []
    private(set) var refused: [Refused] = []
    /// Records not appended because their dedupe key is known: the original's entry.
    private(set) var duplicates: [Int: DedupeEntry] = [:]
    /// Records whose dedupe key is being appended by another request right now: wait, then answer.
    private(set) var waiting: [Int: DedupeWaiter] = [:]
    /// Records a publish limiter refused (RATE_LIMITED results).
    private(set) var rateLimited: [Int: PublishResult] = [:]
    /// Records a publish limiter with action "delay" holds, with the limiter and the wait.
    private(set) var delayed: [(entry: Accepted, limiter: String, nanos: UInt64)] = []
    var count: Int { self.records.count }

    /// The headers the broker stamps on every accepted record of a request: receive time, producer, policy version.
    static func provenance(receivedAtMillis: Int64, principal: Principal, policy: Policy) -> [LogHeader] {
        [
            LogHeader(RecordHeaderName.brokerReceivedAt, String(receivedAtMillis)),
            LogHeader(RecordHeaderName.brokerProducer, principal.clientID),
            LogHeader(RecordHeaderName.brokerPolicyVersion, policy.policyVersion),
        ]
    }

    /// Sorts `publish`, whose topic the principal may publish to (the caller checked `publishDecision`).
    /// `limiterHeaderNames` are the header names its topic's publish limiters read (`LimiterEngine.headerNames`):
    /// each accepted record notes where they are (`Accepted.limiterHeaders`), found in the pass that finds its
    /// dedupe key. The records are read in place from the frame's bytes: no header array per record.
    /// `provenance`: the request's ``provenance(receivedAtMillis:principal:policy:)`` headers when the caller has
    /// them (a connection keeps them for all its requests of one millisecond); nil: built here.
    /// `memo`: the caller's ``Memo`` for this topic under this policy with these `limiterHeaderNames` (a connection
    /// keeps one per publish route); nil: worked out here for this request alone.
    static func sort(
        _ publish: Publish, principal: Principal, policy: Policy, receivedAtMillis: Int64,
        limiterHeaderNames: [String] = [], provenance given: [LogHeader]? = nil, memo: Memo? = nil
    ) -> PublishSorter {
        // The same for every record of the request: built once.
        let provenance = given ?? Self.provenance(receivedAtMillis: receivedAtMillis, principal: principal, policy: policy)
        let records = publish.encodedRecords
        var provenanceForLimiters: UInt64 = 0
        for (offset, header) in provenance.enumerated() where Self.isAny(header.name, of: limiterHeaderNames) {
            provenanceForLimiters |= 1 << UInt64(offset)
        }
        // What each distinct header name of the frame means here, found once per frame: its role in the record
        // checks, whether it is the dedupe key, which of the limiters' names it is.
        let checks: RecordChecks? = if let memo { memo.checks } else { policy.recordChecks(topic: publish.topic) }
        let names = records.headerNames
        let roles: [NameRole]
        if let memo, memo.names == names {
            roles = memo.roles  // the usual case: the same table as the last request (the same array, compared by identity)
        } else {
            roles = names.map { Self.role(of: $0, checks: checks, limiterHeaderNames: limiterHeaderNames) }
            memo?.names = names
            memo?.roles = roles
        }
        // The sorter lives inside the closure (not captured by it), and the header loop is an iterator: variables
        // a closure captures and updates pay a run-time exclusivity check on every access.
        return roles.withUnsafeBufferPointer { roles in
            records.withViews { view -> PublishSorter in
            var sorter = PublishSorter(records: records, provenance: provenance, receivedAtMillis: receivedAtMillis)
            sorter.accepted.reserveCapacity(records.count)
            for index in 0..<records.count {
                let record = view(index)
                // One pass feeds the record checks and finds the dedupe key (exactly one `dedupe-key` header makes a
                // key; the checks quarantine a repeated or malformed one) and the limiters' headers.
                var findings = RecordHeaderFindings()
                var checking = checks != nil
                var key: UnsafeRawBufferPointer? = nil
                var keyCount = 0
                var limiterHeaders: UInt64 = 0
                var headerCount = 0
                var limiterValues = LimiterValues(headerCount: record.headerCount)
                var headers = record.headers
                while let (position, nameID, nameBytes, value) = headers.nextByID() {
                    headerCount += 1
                    let role =
                        nameID != EncodedPublishRecords.uncachedNameID
                        ? roles[Int(nameID)]
                        : Self.role(
                            of: String(decoding: nameBytes, as: UTF8.self), checks: checks,
                            limiterHeaderNames: limiterHeaderNames
                        )
                    if checking {
                        checking = checks!.see(
                            role.check,
                            name: nameID != EncodedPublishRecords.uncachedNameID
                                ? names[Int(nameID)] : String(decoding: nameBytes, as: UTF8.self),
                            value: value, into: &findings
                        )
                    }
                    if role.isDedupeKey {
                        key = value
                        keyCount += 1
                    }
                    if role.limiterSlot >= 0 {
                        limiterHeaders |= position < 64 ? 1 << UInt64(position) : .max
                        limiterValues.append(
                            slot: role.limiterSlot, start: record.offset(of: value), length: value.count
                        )
                    }
                }
                let verdict =
                    checks.map { policy.recordVerdict($0, findings: findings, value: record.value) }
                    ?? policy.recordVerdict(topic: publish.topic, value: record.value) {
                        record.visitHeaders(named: $0, $1)
                    }
                if provenanceForLimiters != 0 {
                    limiterHeaders |=
                        headerCount + provenance.count <= 64 ? provenanceForLimiters << UInt64(headerCount) : .max
                }
                let dedupeKey =
                    keyCount == 1 ? key.map { KeySpan(start: UInt32(record.offset(of: $0)), count: UInt32($0.count)) } : nil
                switch verdict {
                case .accept:
                    sorter.accepted.append(
                        Accepted(
                            index: index, valueBytes: record.value.count, dedupeKey: dedupeKey,
                            limiterHeaders: limiterHeaders, limiterValues: limiterValues
                        )
                    )
                case .quarantine(let reason, let rule, let message):
                    var stored = sorter.logRecord(record)
                    stored.headers += Self.quarantineHeaders(
                        topic: publish.topic, producer: principal.clientID, time: String(receivedAtMillis),
                        reason: reason.rawValue, rule: rule, policyVersion: policy.policyVersion, message: message
                    )
                    sorter.quarantined.append(
                        Quarantined(
                            index: index, record: stored, reason: reason.rawValue, rule: rule, message: message,
                            dedupeKey: dedupeKey
                        )
                    )
                case .refuse(let code, let reason, _):
                    sorter.refused.append(Refused(index: index, code: ErrorCode(code), message: reason))
                }
            }
            return sorter
        } }
    }

    /// A record as values, in its stored form without the provenance headers (a zero timestamp stamped with the
    /// receive time): for the records that go to `__quarantine` (rare), appended as `LogRecord`s.
    private func logRecord(_ view: PublishRecordView) -> LogRecord {
        var headers: [LogHeader] = []
        headers.reserveCapacity(view.headerCount + RecordHeaderName.quarantineSet.count)
        view.forEachHeader { _, name, value in
            headers.append(LogHeader(name: name, value: self.records.slice(value, of: view)))
            return true
        }
        let timestamp = view.timestamp
        return LogRecord(
            key: view.key.map { self.records.slice($0, of: view) }, headers: headers,
            value: self.records.slice(view.value, of: view),
            timestamp: timestamp == 0 ? self.receivedAtMillis : timestamp
        )
    }

    /// Record `index` as `logRecord(_:)` gives it.
    private func logRecord(at index: Int) -> LogRecord {
        self.records.withRecord(at: index) { self.logRecord($0) }
    }

    /// The stored form of accepted record `entry` (its headers, then the provenance headers): what its append
    /// writes. For tests and tools; the append itself writes the bytes straight from the frame.
    func storedRecord(_ entry: Accepted) -> LogRecord {
        var record = self.logRecord(at: entry.index)
        record.headers += self.provenance
        return record
    }

    /// Walks accepted record `entry`'s headers, then the provenance headers, for the publish limiters (a
    /// `HeaderVisitor`): with `named` one of `limiterHeaderNames` only the positions noted in `entry.limiterHeaders`
    /// are looked at.
    func visitHeaders(
        of entry: Accepted, named: String?, limiterHeaderNames: [String],
        _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) {
        Self.visitHeaders(
            of: entry.place, in: self.records, provenance: self.provenance, named: named,
            limiterHeaderNames: limiterHeaderNames, body
        )
    }

    /// `visitHeaders(of:named:limiterHeaderNames:_:)` given the sorter's records and provenance headers.
    static func visitHeaders(
        of entry: HeaderPlace, in records: EncodedPublishRecords, provenance: [LogHeader], named: String?,
        limiterHeaderNames: [String], _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) {
        var candidates = UInt64.max
        var slot: Int? = nil
        if let named { slot = Self.index(of: named, in: limiterHeaderNames) }
        if entry.limiterHeaders != .max, slot != nil {
            candidates = entry.limiterHeaders
        }
        var headerCount = 0
        var going = true
        if let slot, let named, entry.limiterValues.isKnown {
            // The values noted by `sort`: read in place, no walk over the record.
            headerCount = Int(entry.limiterValues.headerCount)
            let count = Int(entry.limiterValues.count)
            if count > 0 {
                // The result, not a captured variable: a variable the closure writes is checked for exclusive
                // access at run time on every use.
                going = records.bytes.withUnsafeReadableBytes { raw in
                    for index in 0..<count {
                        let value = entry.limiterValues.value(index, in: raw)
                        guard value.slot == slot else { continue }
                        guard body(named, value.bytes) else { return false }
                    }
                    return true
                }
            }
        } else {
            Self.walkHeaders(
                of: entry, in: records, named: named, candidates: candidates, headerCount: &headerCount,
                going: &going, body
            )
        }
        guard going else { return }
        // By index, the candidate bit first: a header that is not a candidate is not read (nor copied).
        for offset in provenance.indices {
            let position = headerCount + offset
            if position < 64 && candidates & (1 << UInt64(position)) == 0 { continue }
            if let named, provenance[offset].name != named { continue }
            guard provenance[offset].value.withUnsafeReadableBytes({ body(provenance[offset].name, $0) }) else {
                return
            }
        }
    }

    /// The record's part of `visitHeaders`: a walk over its headers (those in `candidates`).
    private static func walkHeaders(
        of entry: HeaderPlace, in records: EncodedPublishRecords, named: String?, candidates: UInt64,
        headerCount: inout Int, going: inout Bool, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) {
        records.withRecord(at: entry.index) { view in
            headerCount = view.headerCount
            guard candidates & (headerCount >= 64 ? .max : (1 << UInt64(headerCount)) &- 1) != 0 else { return }
            var headers = view.headers
            while let (position, name, value) = headers.next() {
                if position < 64 && candidates & (1 << UInt64(position)) == 0 { continue }
                if let named, name != named { continue }
                guard body(name, value) else {
                    going = false
                    return
                }
            }
        }
    }

    /// What `sort` works out per topic and per header-name table rather than per request: a connection keeps one
    /// for its publish route (one topic under one policy), so its requests share the topic's record checks (and
    /// their memory of the last consent scope without a problem) and the roles of the header names its PUBLISHes
    /// repeat. Callgrind, pipelined-single: about 2,000 instructions per request on the event loop without it.
    ///
    /// Not Sendable: one connection's, on its event loop. Unchecked exclusivity: only `sort` reads and writes the
    /// fields, never re-entrantly (nothing it calls reaches the memo), so the run-time checks are pure cost.
    final class Memo {
        fileprivate let checks: RecordChecks?
        @exclusivity(unchecked) fileprivate var names: [String] = []
        @exclusivity(unchecked) fileprivate var roles: [NameRole] = []

        /// A memo for `topic` under `policy`.
        init(topic: String, policy: Policy) {
            self.checks = policy.recordChecks(topic: topic)
        }
    }

    /// What a header name means to `sort`.
    fileprivate struct NameRole {
        /// Its role in the record checks (unused without them).
        var check: HeaderNameRole
        var isDedupeKey: Bool
        /// Its index in the limiters' header names, or -1.
        var limiterSlot: Int
    }

    fileprivate static func role(of name: String, checks: RecordChecks?, limiterHeaderNames: [String]) -> NameRole {
        NameRole(
            check: checks?.role(of: name) ?? HeaderNameRole.none, isDedupeKey: name == RecordHeaderName.dedupeKey,
            limiterSlot: limiterHeaderNames.isEmpty ? -1 : Self.index(of: name, in: limiterHeaderNames) ?? -1
        )
    }

    /// Whether `name` is one of `names` (lengths compared first: most names differ in length).
    private static func isAny(_ name: String, of names: [String]) -> Bool {
        Self.index(of: name, in: names) != nil
    }

    /// The index of `name` in `names` (lengths compared first: most names differ in length).
    private static func index(of name: String, in names: [String]) -> Int? {
        let length = name.utf8.count
        return names.firstIndex { $0.utf8.count == length && $0 == name }
    }

    /// The headers the broker adds to a record it puts in `__quarantine` (docs/PROTOCOL.md 8.3), in order.
    static func quarantineHeaders(
        topic: String, producer: String, time: String, reason: String, rule: String, policyVersion: String,
        message: String
    ) -> [LogHeader] {
        [
            LogHeader(RecordHeaderName.quarantineTopic, topic),
            LogHeader(RecordHeaderName.quarantineProducer, producer),
            LogHeader(RecordHeaderName.quarantineTime, time),
            LogHeader(RecordHeaderName.quarantineReason, reason),
            LogHeader(RecordHeaderName.quarantineRule, rule),
            LogHeader(RecordHeaderName.quarantinePolicyVersion, policyVersion),
            LogHeader(RecordHeaderName.quarantineMessage, message),
        ]
    }

    /// Applies the publish limiters' decisions (`PublishJudge.judgeRequest`, one per accepted record, made after
    /// `reserveKeys`, so duplicates never count): refused records are answered RATE_LIMITED (their dedupe
    /// reservation released), quarantined ones move to `quarantined` (reason RATE_LIMITED, rule
    /// `limiter.<name>`), delayed ones wait in `delayed`. Returns every decision other than pass, for metrics and the
    /// audit ledger.
    mutating func applyLimits(
        topic: String, producer: String, receivedAtMillis: Int64, policyVersion: String, gate: DedupeGate?,
        decisions limits: [LimitDecision]
    ) -> [(limiter: String, decision: String)] {
        precondition(limits.count == self.accepted.count, "one limit decision per accepted record")
        var decisions: [(limiter: String, decision: String)] = []
        // The records kept are copied into a new array from the first one that does not pass.
        var kept: [Accepted]? = nil
        let accepted = self.accepted
        for position in accepted.indices {
            let entry = accepted[position]
            let decision = limits[position]
            if case .pass = decision {
                kept?.append(entry)
                continue
            }
            if kept == nil { kept = Array(accepted[..<position]) }
            switch decision {
            case .pass:
                break
            case .reject(let limiter, let key, let retry):
                if let gate, let ticket = entry.ticket { gate.release(ticket) }
                self.rateLimited[entry.index] = PublishResult(
                    code: .rateLimited, offset: -1, retryAfterMillis: retry,
                    message: "limiter '\(limiter)' (\(key.rawValue)): limit reached; retry in \(retry) ms"
                )
                decisions.append((limiter, "reject"))
            case .quarantine(let limiter, let key, let retry):
                // The record without the provenance headers (it never had other `broker-` headers: the router
                // quarantines those), then the quarantine headers.
                var record = self.logRecord(at: entry.index)
                let message = "limiter '\(limiter)' (\(key.rawValue)): limit reached (it allows more in \(retry) ms)"
                record.headers += Self.quarantineHeaders(
                    topic: topic, producer: producer, time: String(receivedAtMillis), reason: "RATE_LIMITED",
                    rule: "limiter.\(limiter)", policyVersion: policyVersion, message: message
                )
                self.quarantined.append(Quarantined(
                    index: entry.index, record: record, reason: "RATE_LIMITED", rule: "limiter.\(limiter)",
                    message: message, dedupeKey: entry.dedupeKey, ticket: entry.ticket
                ))
                decisions.append((limiter, "quarantine"))
            case .delay(let limiter, _, let nanos):
                self.delayed.append((entry, limiter, nanos))
                decisions.append((limiter, "delay"))
            }
        }
        if let kept {
            self.accepted = kept
            self.quarantined.sort { $0.index < $1.index }
        }
        return decisions
    }

    /// The longest wait a delayed record asks for (0: none delayed).
    var longestDelayNanos: UInt64 { self.delayed.map(\.nanos).max() ?? 0 }

    /// Puts the delayed records back among the accepted ones (in request order) after their wait, judged again;
    /// a record still limited then is rejected.
    mutating func resumeDelayed(gate: DedupeGate?, judge: (Accepted) -> LimitDecision) {
        let waiting = self.delayed
        self.delayed.removeAll()
        for (entry, limiter, nanos) in waiting {
            switch judge(entry) {
            case .pass:
                self.accepted.append(entry)
            case .reject(_, let key, let retry), .quarantine(_, let key, let retry):
                if let gate, let ticket = entry.ticket { gate.release(ticket) }
                self.rateLimited[entry.index] = PublishResult(
                    code: .rateLimited, offset: -1, retryAfterMillis: retry,
                    message: "limiter '\(limiter)' (\(key.rawValue)): still limited after a delay; retry in \(retry) ms"
                )
            case .delay(_, let key, let again):
                if let gate, let ticket = entry.ticket { gate.release(ticket) }
                let retry = UInt32(min(max(again, nanos) / 1_000_000 + 1, UInt64(UInt32.max)))
                self.rateLimited[entry.index] = PublishResult(
                    code: .rateLimited, offset: -1, retryAfterMillis: retry,
                    message: "limiter '\(limiter)' (\(key.rawValue)): still limited after a delay; retry in \(retry) ms"
                )
            }
        }
        self.accepted.sort { $0.index < $1.index }
        self.quarantined.sort { $0.index < $1.index }
    }

    /// Reserves every dedupe key with the topic's gate: records whose key is known or in flight leave the append
    /// lists (answered as duplicates, or after the other append settles); the others carry their ticket.
    mutating func reserveKeys(_ gate: DedupeGate) {
        // One gate call for the whole request (one lock, one clock reading). A key the gate refuses (not 1...256
        // bytes; the router quarantines those first) leaves its record without a ticket, as a record without a key.
        // By index, not `enumerated()`: that copies each record's entry out (a retain and a release of its key).
        // The arrays get their room with the first key (most requests to most topics carry none).
        var digests: [DedupeDigest] = []
        var owners: [(quarantined: Bool, position: Int)] = []
        let room = self.accepted.count + self.quarantined.count
        self.records.bytes.withUnsafeReadableBytes { raw in
            for position in self.accepted.indices {
                guard let key = self.accepted[position].dedupeKey, let digest = try? gate.digest(of: key.bytes(in: raw))
                else { continue }
                if digests.isEmpty { Self.reserve(room, &digests, &owners) }
                digests.append(digest)
                owners.append((false, position))
            }
            for position in self.quarantined.indices {
                guard let key = self.quarantined[position].dedupeKey,
                    let digest = try? gate.digest(of: key.bytes(in: raw))
                else { continue }
                if digests.isEmpty { Self.reserve(room, &digests, &owners) }
                digests.append(digest)
                owners.append((true, position))
            }
        }
        guard !digests.isEmpty else { return }
        var keepAccepted = [Bool](repeating: true, count: self.accepted.count)
        var keepQuarantined = [Bool](repeating: true, count: self.quarantined.count)
        for (owner, reservation) in zip(owners, gate.reserve(digests: digests)) {
            let index = owner.quarantined ? self.quarantined[owner.position].index : self.accepted[owner.position].index
            switch reservation {
            case .admitted(let ticket):
                if owner.quarantined {
                    self.quarantined[owner.position].ticket = ticket
                } else {
                    self.accepted[owner.position].ticket = ticket
                }
                continue
            case .duplicate(let entry): self.duplicates[index] = entry
            case .inFlight(let waiter): self.waiting[index] = waiter
            }
            if owner.quarantined {
                keepQuarantined[owner.position] = false
            } else {
                keepAccepted[owner.position] = false
            }
        }
        if keepAccepted.contains(false) {
            self.accepted = zip(self.accepted, keepAccepted).compactMap { $1 ? $0 : nil }
        }
        if keepQuarantined.contains(false) {
            self.quarantined = zip(self.quarantined, keepQuarantined).compactMap { $1 ? $0 : nil }
        }
    }

    /// Room for `count` keys in `reserveKeys`' arrays.
    private static func reserve(
        _ count: Int, _ digests: inout [DedupeDigest], _ owners: inout [(quarantined: Bool, position: Int)]
    ) {
        digests.reserveCapacity(count)
        owners.reserveCapacity(count)
    }

    /// The two appends settled (each on its own: one may fail while the other succeeded). Keys of records that
    /// were appended are remembered (the window starts at the receive time); the others' reservations are released.
    func settleKeys(
        _ gate: DedupeGate,
        accepted: Result<Int64, LogStoreError>,
        quarantined: Result<Int64, LogStoreError>,
        receivedAtMillis: Int64
    ) {
        // One gate call per log and outcome (one lock each) for the whole request.
        // By index, not `enumerated()`, as in `reserveKeys`.
        var commits: [(ticket: DedupeTicket, offset: Int64)] = []
        var quarantineCommits: [(ticket: DedupeTicket, offset: Int64)] = []
        var releases: [DedupeTicket] = []
        for position in self.accepted.indices {
            guard let ticket = self.accepted[position].ticket else { continue }
            switch accepted {
            case .success(let base):
                if commits.isEmpty { commits.reserveCapacity(self.accepted.count - position) }
                commits.append((ticket, base + Int64(position)))
            case .failure: releases.append(ticket)
            }
        }
        for position in self.quarantined.indices {
            guard let ticket = self.quarantined[position].ticket else { continue }
            switch quarantined {
            case .success(let base): quarantineCommits.append((ticket, base + Int64(position)))
            case .failure: releases.append(ticket)
            }
        }
        gate.commit(commits, location: .topic, atMillis: receivedAtMillis)
        gate.commit(quarantineCommits, location: .quarantine, atMillis: receivedAtMillis)
        gate.release(releases)
    }

    /// The answer for a record that waited on another append of its key.
    static func result(after resolution: DedupeResolution) -> PublishResult {
        switch resolution {
        case .duplicate(let entry):
            return Self.duplicate(of: entry)
        case .retry:
            return PublishResult(
                code: .storageFailure, offset: -1,
                message: "another record with this dedupe-key was being appended and failed; retry"
            )
        }
    }

    private static func duplicate(of entry: DedupeEntry) -> PublishResult {
        switch entry.location {
        case .topic:
            return PublishResult(code: .ok, offset: entry.offset, flags: PublishResult.duplicateFlag)
        case .quarantine:
            return PublishResult(
                code: .quarantined, offset: entry.offset, flags: PublishResult.duplicateFlag,
                message: "DUPLICATE: the record with this dedupe-key was quarantined at offset \(entry.offset)"
            )
        }
    }

    /// One result per record: OK with its topic offset, QUARANTINED with its `__quarantine` offset and the reason,
    /// the refusal, the duplicate's original, or the storage error of the append it was part of. The bases are the
    /// first offsets the two appends were given (ignored when nothing was sent).
    func results(accepted: Result<Int64, LogStoreError>, quarantined: Result<Int64, LogStoreError>) -> [PublishResult] {
        var results = [PublishResult](repeating: PublishResult(code: .internal, offset: -1), count: self.count)
        for (position, entry) in self.accepted.enumerated() {
            results[entry.index] = accepted.map { PublishResult.ok(offset: $0 + Int64(position)) }.failed
        }
        for (position, entry) in self.quarantined.enumerated() {
            results[entry.index] = quarantined.map {
                PublishResult(
                    code: .quarantined,
                    offset: $0 + Int64(position),
                    message: "\(entry.reason): \(entry.message) (rule \(entry.rule))"
                )
            }.failed
        }
        for entry in self.refused {
            results[entry.index] = PublishResult(code: entry.code, offset: -1, message: entry.message)
        }
        for (index, entry) in self.duplicates { results[index] = Self.duplicate(of: entry) }
        for (index, result) in self.rateLimited { results[index] = result }
        return results
    }
}

extension Result where Success == PublishResult, Failure == LogStoreError {
    /// The result, or the storage error as a record result.
    fileprivate var failed: PublishResult {
        switch self {
        case .success(let result): result
        case .failure(let error): PublishResult(code: ErrorCode(error), offset: -1, message: error.message)
        }
    }
}
