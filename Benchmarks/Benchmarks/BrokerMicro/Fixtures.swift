import Benchmark
import Foundation
import LogStore
import NIOCore
import WireProtocol

// Shared test data. Global `let`s are initialised lazily, so each benchmark process builds only what it uses, and
// outside the measured iterations (the runner's warm-up touches them first).

/// `BROKERD_BENCH_SMOKE=1`: run every benchmark a few iterations only (`make bench-smoke`), to prove they work.
let smokeMode: Bool = ProcessInfo.processInfo.environment["BROKERD_BENCH_SMOKE"] == "1"

/// Records per PUBLISH / DELIVER / stored batch in these benchmarks.
let recordsPerBatch = 100

/// A SplitMix64 generator: the same "random" offsets and keys in every run, so runs are comparable.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Holds a fixture that a benchmark's setup hook creates and its iterations mutate.
///
/// `@unchecked Sendable`: the runner calls setup, the measured iterations and teardown one after the other, never
/// concurrently, so the value is never touched from two threads at once. A lock here would be measured too.
final class Fixture<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// Thrown when a fixture cannot be built; the runner reports it and the benchmark fails.
struct FixtureError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

let allocator = ByteBufferAllocator()

/// The JSON value of the `n`th education-completed event, about 256 bytes, as the learning portal sends it
/// (only the topic's `allowed_fields`, none of its `forbidden_fields`).
func educationEvent(_ n: Int) -> String {
    let account = String(0x7F_3A9C &+ n &* 7919, radix: 16)
    let minute = n % 60
    let score = 60 + n % 40
    return #"{"event_type":"account.education.completed","source_system":"learning_portal","#
        + #""account_id":"acct_\#(account)","timestamp":"2026-12-01T09:\#(minute < 10 ? "0" : "")\#(minute):17Z","#
        + #""sensitivity":"non_phi","consent_scope":"educational","allowed_recipients":["crm-automation"],"#
        + #""payload":{"module_id":"hcp-edu-\#(100 + n % 37)","score":\#(score)}}"#
}

/// The producer headers every education event carries (the topic's required headers plus a dedupe key).
func eventHeaders(_ n: Int) -> [(name: String, value: String)] {
    [
        ("event_type", "account.education.completed"),
        ("source_system", "learning_portal"),
        ("consent_scope", "educational"),
        ("dedupe-key", "learning_portal:evt-\(1_000_000 + n)"),
    ]
}

/// The headers the broker adds before storing and delivering a record.
let brokerHeaders: [(name: String, value: String)] = [
    ("broker-received-at", "1764579422123"),
    ("broker-producer", "learning-portal"),
    ("broker-policy-version", "pv-3f9a0c12be47"),
]

func buffer(_ string: String) -> ByteBuffer { allocator.buffer(string: string) }

/// What the learning portal PUBLISHes: 100 records with key, headers and a JSON value.
let publishRecords: [WireRecord] = (0..<recordsPerBatch).map { n in
    WireRecord(
        key: buffer("acct_\(n)"),
        headers: eventHeaders(n).map { WireHeader(name: $0.name, value: buffer($0.value)) },
        value: buffer(educationEvent(n)),
        timestamp: 1_764_579_422_000 + Int64(n)
    )
}

let publishFrame = TaggedFrame(
    correlationID: 42,
    frame: .publish(Publish(topic: "education.completed", records: publishRecords))
)

/// What a subscriber receives: the same records with offsets and the broker's headers.
let deliverFrame = TaggedFrame(
    correlationID: 0,
    frame: .deliver(
        Deliver(
            subscriptionID: 7,
            records: publishRecords.enumerated().map { index, record in
                var record = record
                record.headers += brokerHeaders.map { WireHeader(name: $0.name, value: buffer($0.value)) }
                return DeliveredRecord(offset: 1_000_000 + Int64(index), record: record)
            }
        )
    )
)

func encoded(_ frame: TaggedFrame) -> ByteBuffer {
    var out = allocator.buffer(capacity: 64 * 1024)
    FrameCodec.encode(frame, into: &out)
    return out
}

let encodedPublish = encoded(publishFrame)
let encodedDeliver = encoded(deliverFrame)

/// The records as the log stores them: producer headers plus the broker's.
func storedRecords(count: Int = recordsPerBatch, from first: Int = 0) -> [LogRecord] {
    (first..<(first + count)).map { n in
        LogRecord(
            key: buffer("acct_\(n)"),
            headers: (eventHeaders(n) + brokerHeaders).map { LogHeader(name: $0.name, value: buffer($0.value)) },
            value: buffer(educationEvent(n)),
            timestamp: 1_764_579_422_000 + Int64(n)
        )
    }
}

let logRecords = storedRecords()

func encodedBatch(_ codec: CompressionCodec) -> ByteBuffer {
    do {
        return try BatchCodec.encode(logRecords, baseOffset: 1_000_000, codec: codec)
    } catch {
        fatalError("encoding the fixture batch failed: \(error)")
    }
}

let batchUncompressed = encodedBatch(.none)
let batchLZ4 = encodedBatch(.lz4)

/// A fresh directory under /tmp for one benchmark's log; removed by `removeTemporaryDirectory`.
func makeTemporaryDirectory(_ label: String) throws -> String {
    var template = Array("/tmp/brokerd-bench-\(label)-XXXXXX".utf8CString)
    guard let made = mkdtemp(&template) else { throw FixtureError("mkdtemp failed, errno \(errno)") }
    return String(cString: made)
}

func removeTemporaryDirectory(_ path: String) {
    guard path.hasPrefix("/tmp/brokerd-bench-") else { return }
    try? FileManager.default.removeItem(atPath: path)
}
