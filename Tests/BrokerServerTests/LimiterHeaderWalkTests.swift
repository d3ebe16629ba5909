import LogStore
import NIOCore
import Testing
import Throttle
import TopicRouter
import WireProtocol

@testable import BrokerServer

/// The publish limiters' header walk: `PublishSorter.sort` notes where the limiters' headers are, and the walk over
/// those alone visits exactly what a walk over every header visits.
@Suite("Limiter header walk")
struct LimiterHeaderWalkTests {
    /// Every (name, value) a walk by `named` visits, until `stopAfter` visits.
    func visits(
        _ walk: (String?, (String, UnsafeRawBufferPointer) -> Bool) -> Void, named: String?, stopAfter: Int = .max
    ) -> [String] {
        var seen: [String] = []
        walk(named) { name, value in
            seen.append(name + "=" + String(decoding: value, as: UTF8.self))
            return seen.count < stopAfter
        }
        return seen
    }

    @Test("the noted headers give the same visits as a full walk, for 3 to 70 headers, with provenance read too")
    func sameVisits() throws {
        let policy = try Policy(config: TestBroker.makeConfig(dataDir: "/nonexistent"))
        let names = ["recipient", "consent_scope", "broker-producer"]
        for extra in [0, 1, 40, 61, 62, 63, 67] {
            var record = educationEvent(extra)
            for n in 0..<extra {
                let (name, value) =
                    n % 7 == 3
                    ? ("recipient", "pt_\(n)") : n % 11 == 5 ? ("consent_scope", "educational") : ("x-\(n)", "v\(n)")
                record.headers.append(WireHeader(name: name, value: ByteBuffer(string: value)))
            }
            record.headers.append(WireHeader(name: "recipient", value: ByteBuffer(string: "pt_\(extra)")))
            let sorted = PublishSorter.sort(
                Publish(topic: "education.completed", records: [record]),
                principal: Principal(clientID: "p", role: "r", clearance: "phi"), policy: policy,
                receivedAtMillis: 1, limiterHeaderNames: names
            )
            #expect(sorted.accepted.count == 1, "\(extra) extra headers")
            guard let entry = sorted.accepted.first else { continue }
            // Up to four of the limiters' headers are noted by their values, more by their positions alone.
            let limiterHeaderCount = record.headers.filter { names.contains($0.name) }.count
            #expect(entry.limiterValues.isKnown == (limiterHeaderCount <= PublishSorter.LimiterValues.capacity))
            // The stored record's headers (the record's, then the provenance headers), walked one by one, against
            // the walk the limiters get over the frame's bytes.
            let headers = sorted.storedRecord(entry).headers
            #expect(headers.count == record.headers.count + 3)
            for named in names + ["event_type", "x-1"] as [String?] + [nil] {
                for stop in [1, 2, Int.max] {
                    let full = self.visits({ headers.visitHeaders(named: $0, $1) }, named: named, stopAfter: stop)
                    let noted = self.visits(
                        { sorted.visitHeaders(of: entry, named: $0, limiterHeaderNames: names, $1) },
                        named: named, stopAfter: stop
                    )
                    #expect(noted == full, "\(extra) extra headers, walk by \(named ?? "nil"), stop after \(stop)")
                    var everything = entry
                    everything.limiterHeaders = .max
                    everything.limiterValues = .unknown
                    let unnoted = self.visits(
                        { sorted.visitHeaders(of: everything, named: $0, limiterHeaderNames: names, $1) },
                        named: named, stopAfter: stop
                    )
                    #expect(unnoted == full, "\(extra) extra headers, walk by \(named ?? "nil"), stop after \(stop)")
                }
            }
            let producer = self.visits(
                { sorted.visitHeaders(of: entry, named: $0, limiterHeaderNames: names, $1) }, named: "broker-producer"
            )
            #expect(producer == ["broker-producer=p"])
        }
    }
}

/// The judge's per-limiter memo of the last key's hash.
@Suite("Publish judge key hash")
struct PublishJudgeKeyHashTests {
    @Test("a limiter's remembered hash is always the hash of the key asked about, repeated or not")
    func rememberedHashIsTheKeys() throws {
        let policy = try Policy(config: TestBroker.makeConfig(dataDir: "/nonexistent"))
        let declaration = LimiterDeclaration(
            name: "r", direction: .publish, key: .recipient, limit: .window(cap: 3, windowMillis: 1_000)
        )
        let limiter = PublishJudge.Limiter(
            declaration: declaration,
            reader: policy.limiterKeyReader(
                declaration, topic: "education.completed",
                principal: Principal(clientID: "p", role: "r", clearance: "phi"), connectionID: 1
            ),
            handle: nil
        )
        // Repeats, keys of the same length that differ in one byte (first, middle, last), a prefix, and empty.
        let keys = ["pt_1", "pt_1", "pt_2", "pt_2", "qt_2", "pt_2", "pu_2", "pt_22", "pt_2", "", "", "pt_1", "pt_1"]
        for key in keys {
            let bytes = Array(key.utf8)
            // `LimiterSet.keyHash(utf8:)` is the hash `String` gives an ASCII key (ThrottleTests check it).
            let remembered = bytes.withUnsafeBytes { limiter.keyHash($0) }
            #expect(remembered == key.hashValue, "\(key)")
        }
    }
}

/// `PublishJudge.judgeRequest` (limiter by limiter, each key checked once for all its records) against `judge` (record
/// by record): the same decisions for every record and the same limiter state afterwards, request after request.
@Suite("Publish judge by request")
struct PublishJudgeRequestTests {
    /// Deterministic pseudo-random numbers (SplitMix64), so that a failure can be replayed.
    struct Numbers {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            self.state &+= 0x9e37_79b9_7f4a_7c15
            var z = self.state
            z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
            z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
            return Int((z ^ (z >> 31)) % UInt64(bound))
        }
    }

    /// Limiters that refuse often under the load below, one of each kind of path: a window per recipient (grouped),
    /// a token bucket per consent scope filtered to two scopes (grouped; a record with both scopes has two keys and
    /// sends the limiter record by record), a recipient window with room for 3 keys (table full), one with room
    /// for 6 (checked by key, or record by record when a new key needs a held one's slot), a window per producer
    /// filtered to one scope (grouped), and a token bucket per producer with a byte quota (record by record; the
    /// policy allows byte quotas on delivery limiters only, so this one's definition is made by hand).
    static let declarations: [LimiterDeclaration] = {
        var recipient = LimiterDeclaration(
            name: "recipient_window", direction: .publish, key: .recipient,
            limit: .window(cap: 7, windowMillis: 1_000), action: .reject
        )
        recipient.topics = ["education.completed"]
        var scope = LimiterDeclaration(
            name: "scope_bucket", direction: .publish, key: .consentScope,
            limit: .tokenBucket(ratePerSecond: 20, burst: 30), action: .quarantine
        )
        scope.consentScopes = ["educational", "operational_notice"]
        var few = LimiterDeclaration(
            name: "few_recipients", direction: .publish, key: .recipient,
            limit: .window(cap: 50, windowMillis: 300), action: .delay
        )
        few.maxKeys = 3
        // Seven recipients in six slots: requests to the six held ones are checked by key; one with the seventh
        // replaces the least recently used idle key, so the keys' recency order after each request must be exact.
        var six = LimiterDeclaration(
            name: "six_recipients", direction: .publish, key: .recipient,
            limit: .window(cap: 12, windowMillis: 100), action: .reject
        )
        six.maxKeys = 6
        // Keyed by producer (one key whatever the record) for the records with one consent scope: grouped, the
        // key read once per run of records with the same consent_scope value.
        var notices = LimiterDeclaration(
            name: "producer_notices", direction: .publish, key: .producer,
            limit: .window(cap: 4, windowMillis: 1_000), action: .reject
        )
        notices.consentScopes = ["operational_notice"]
        var bytes = LimiterDeclaration(
            name: "producer_bytes", direction: .publish, key: .producer,
            limit: .tokenBucket(ratePerSecond: 1_000, burst: 1_000), action: .reject
        )
        bytes.bytesPerSecond = 20_000
        bytes.burstBytes = 30_000
        return [recipient, scope, few, six, notices, bytes]
    }()

    func judge(
        _ declarations: [LimiterDeclaration], set: LimiterSet, now: LimiterNow, policy: Policy, principal: Principal
    ) throws -> PublishJudge {
        PublishJudge(
            limiters: try declarations.map {
                PublishJudge.Limiter(
                    declaration: $0,
                    reader: policy.limiterKeyReader($0, topic: "education.completed", principal: principal, connectionID: 7),
                    handle: try set.handle($0.name)
                )
            },
            now: now, topic: "education.completed", principal: principal, connectionID: 7, policy: policy
        )
    }

    @Test("the same decisions and state as judging record by record, over 400 requests with refusals of every kind")
    func sameAsRecordByRecord() throws {
        let policy = try Policy(config: TestBroker.makeConfig(dataDir: "/nonexistent"))
        let principal = Principal(clientID: "learning-portal", role: "producer", clearance: "phi")
        var allRefusals: [String: Int] = [:]
        for declarations in [Self.declarations, Array(Self.declarations.prefix(2)), [Self.declarations[3]]] {
            let definitions = LimiterEngine.definitions(
                try Policy(config: {
                    var config = TestBroker.makeConfig(dataDir: "/nonexistent")
                    config.limiters = declarations.filter { $0.bytesPerSecond == nil }
                    return config
                }())
            ) + declarations.filter { $0.bytesPerSecond != nil }.map {
                LimiterDefinition(
                    name: $0.name, limit: .tokenBucket(ratePerSecond: 1_000, burst: 1_000),
                    bytesPerSecond: $0.bytesPerSecond, burstBytes: $0.burstBytes, maxKeys: $0.maxKeys
                )
            }
            let byRecord = try LimiterSet(definitions: definitions)
            let byRequest = try LimiterSet(definitions: definitions)
            let names = LimiterEngine.headerNames(declarations)
            var numbers = Numbers(state: 42)
            var now = LimiterNow(monotonicNanos: 1_000_000_000, wallNanos: 1_776_000_000_000_000_000)
            var refusals: [String: Int] = [:]
            for request in 0..<400 {
                var records: [WireRecord] = []
                // A request in twenty may carry recipients that are not ASCII (its limiters are then judged record by
                // record); in all, some records have no recipient, an empty one or two recipient headers.
                let foreign = numbers.next(20) == 0
                for n in 0..<(1 + numbers.next(40)) {
                    var record = educationEvent(request * 100 + n)
                    record.headers.removeAll { $0.name == "consent_scope" }
                    let scopes = ["educational", "operational_notice", "educational,operational_notice", "treatment_support"]
                    record.headers.append(WireHeader(name: "consent_scope", value: ByteBuffer(string: scopes[numbers.next(4)])))
                    let recipients: [String] = switch numbers.next(30) {
                    case 0, 1, 2: []
                    case 3: [""]
                    case 4: ["pt_\(numbers.next(7))", "pt_\(numbers.next(7))"]
                    // Two spellings of one name: equal as strings, not as bytes.
                    case 5 where foreign: [["pt_\u{e9}", "pt_e\u{301}"][numbers.next(2)]]
                    default: ["pt_\(numbers.next(7))"]
                    }
                    for recipient in recipients {
                        record.headers.append(WireHeader(name: "recipient", value: ByteBuffer(string: recipient)))
                    }
                    // JSON of 0.2 to 2 KB (the byte quota's share).
                    let json = String(buffer: record.value).dropLast()
                    record.value = ByteBuffer(string: json + #","pad":""# + String(repeating: "x", count: numbers.next(2_000)) + #""}"#)
                    records.append(record)
                }
                let sorted = PublishSorter.sort(
                    Publish(topic: "education.completed", records: records), principal: principal, policy: policy,
                    receivedAtMillis: 1, limiterHeaderNames: names
                )
                #expect(sorted.accepted.count == records.count, "request \(request)")
                let one = try self.judge(declarations, set: byRecord, now: now, policy: policy, principal: principal)
                let expected = sorted.accepted.map { entry in
                    one.judge(bytes: entry.valueBytes) { sorted.visitHeaders(of: entry, named: $0, limiterHeaderNames: names, $1) }
                }
                let all = try self.judge(declarations, set: byRequest, now: now, policy: policy, principal: principal)
                let got = all.judgeRequest(sorted, limiterHeaderNames: names) ?? Array(repeating: .pass, count: sorted.accepted.count)
                #expect(got == expected, "request \(request)")
                // The same state, keys in the same recency order (the snapshot lists them least recently used first).
                #expect(byRequest.snapshot(now: now) == byRecord.snapshot(now: now), "request \(request)")
                for decision in expected {
                    switch decision {
                    case .pass: refusals["pass", default: 0] += 1
                    case .reject(let limiter, _, _), .quarantine(let limiter, _, _), .delay(let limiter, _, _):
                        refusals[limiter, default: 0] += 1
                    }
                }
                // Mostly the same instant as the request before, sometimes later.
                let step = UInt64([0, 0, 0, 5, 40, 400][numbers.next(6)]) * 1_000_000
                now = LimiterNow(monotonicNanos: now.monotonicNanos + step, wallNanos: now.wallNanos + step)
            }
            #expect(byRequest.snapshot(now: now) == byRecord.snapshot(now: now))
            for declaration in declarations {
                #expect(try byRequest.keyCount(limiter: declaration.name) == byRecord.keyCount(limiter: declaration.name))
            }
            #expect(refusals["pass", default: 0] > 300, "\(refusals)")
            allRefusals.merge(refusals, uniquingKeysWith: +)
        }
        // Every limiter refused records in some set (and let others through), so every path ran.
        for declaration in Self.declarations {
            #expect(allRefusals[declaration.name, default: 0] > 20, "\(declaration.name): \(allRefusals)")
        }
    }
}
