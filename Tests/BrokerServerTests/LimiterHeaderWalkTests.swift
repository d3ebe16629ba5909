import LogStore
import NIOCore
import Testing
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
