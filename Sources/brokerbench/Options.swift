import ArgumentParser
import Foundation

/// The named scenarios, with the defaults each one runs with.
enum Scenario: String, CaseIterable, Sendable {
    case durablePublish = "durable-publish"
    case pipelinedSingle = "pipelined-single"
    case syncLatency = "sync-latency"
    case e2eLatency = "e2e-latency"
    case consume = "consume"
    case manyConnections = "many-connections"
    case policyOverhead = "policy-overhead"
    case recovery = "recovery"

    var summary: String {
        switch self {
        case .durablePublish: "4 producers, batches of 100 records, fsync=always, LZ4: publish throughput"
        case .pipelinedSingle: "1 connection, 1 record per PUBLISH, 1000 in flight, fsync=always: publish throughput"
        case .syncLatency: "1 record at a time waiting for its ack, fsync=always; also the cost of one fdatasync"
        case .e2eLatency: "publish at a fixed --rate while a consumer reads: publish-to-deliver latency (and publish-to-ack)"
        case .consume: "fill a topic with --records records, then read them from earliest: consume throughput"
        case .manyConnections: "open --connections authenticated idle connections: broker memory per connection"
        case .policyOverhead:
            "durable-publish on plain topics, again with the policy records' bytes, then with dedupe keys + 2 limiters + consent checks; throughput ratios"
        case .recovery:
            "--spawn only: fill a topic to --recovery-bytes, time brokerd's restart after SIGTERM and after SIGKILL"
        }
    }
}

/// Which broker to measure, and who to be.
struct TargetOptions: ParsableArguments {
    @Flag(name: .long, help: "Start a broker in this process on a temp data directory.")
    var embedded = false

    @Flag(name: .long, help: "Start the brokerd built beside brokerbench as a child process on a temp data directory.")
    var spawn = false

    @Option(name: .long, help: "Drive the broker at HOST:PORT.")
    var server: String?

    @Option(name: .long, help: "With --server: client id allowed to publish and subscribe the bench topics.")
    var clientID: String?

    @Option(name: .long, help: "With --server: its token.")
    var token: String?

    @Option(name: .long, help: "With --server: the broker's pid, to report its CPU time and RSS.")
    var brokerPid: Int32?

    @Option(name: .long, help: "Data directory for --embedded/--spawn (default: a new temp directory, removed after).")
    var dataDir: String?

    @Option(name: .long, help: "Topic names are PREFIX.0, PREFIX.1, ... (with --server they must exist).")
    var topicPrefix: String = "bench"

    func validate() throws {
        let modes = [self.embedded, self.spawn, self.server != nil].filter { $0 }.count
        guard modes == 1 else { throw ValidationError("choose exactly one of --embedded, --spawn, --server HOST:PORT") }
        if self.server != nil, self.clientID == nil || self.token == nil {
            throw ValidationError("--server needs --client-id and --token")
        }
    }
}

/// The shape of the load; unset values take the scenario's defaults.
struct LoadOptions: ParsableArguments {
    @Option(name: .long, help: "Producer connections.")
    var producers: Int?

    @Option(name: .long, help: "Consumer connections (e2e-latency, consume).")
    var consumers: Int?

    @Option(name: .long, help: "Topics the load is spread over.")
    var topics: Int = 1

    @Option(name: .long, help: "Record value size in bytes (JSON-like text).")
    var recordSize: Int = 256

    @Option(name: .long, help: "Records per PUBLISH.")
    var batch: Int?

    @Option(name: .long, help: "PUBLISH requests in flight per producer connection.")
    var inFlight: Int?

    @Option(
        name: .long,
        help: "fsync of the topics brokerbench creates: always, never, interval:MS (default always; recovery: never)."
    )
    var fsync: String?

    @Option(name: .long, help: "Compression of the topics brokerbench creates: lz4 or none.")
    var compression: String = "lz4"

    @Option(name: .long, help: "Measured seconds (after the warm-up).")
    var duration: Double = 10

    @Option(name: .long, help: "Stop after this many records (consume: how many to fill and read).")
    var records: Int?

    @Option(name: .long, help: "Warm-up seconds not counted.")
    var warmup: Double = 2

    @Option(name: .long, help: "e2e-latency: records per second to publish (default 10000).")
    var rate: Int?

    @Option(
        name: .long,
        help: """
            e2e-latency: every this many microseconds the producer sends, as one PUBLISH, the records that have come \
            due (1000 before 2026-12-03); at rates under one record a pace, at each record's time.
            """
    )
    var paceMicros: Int = 100

    @Option(
        name: .long,
        help: """
            e2e-latency: a record that arrives more than this many microseconds after its schedule counts as slow \
            in the latency timeline (windows of 100 ms: how many records each had, how many slow, the latest).
            """
    )
    var slowMicros: Int = 2000

    @Option(name: .long, help: "many-connections: how many connections to open.")
    var connections: Int = 10_000

    @Option(name: .long, help: "Records each consumer may have in flight (credit).")
    var credit: Int = 4096

    @Option(
        name: .long,
        help: "many-connections: subscribers that stop reading (each granted --credit), to measure what they cost."
    )
    var stalledSubscribers: Int = 8

    @Flag(
        name: .long,
        help: "Every published record carries a unique dedupe-key header (per-producer prefix + counter)."
    )
    var dedupeKeys = false

    @Flag(
        name: .long,
        help: "consume: read through the per-record iterator (a DeliveredRecord each), not a DELIVER at a time."
    )
    var perRecord = false

    @Option(
        name: .long,
        help: "recovery: log size to fill before restarting, bytes or with a K/M/G/T suffix (binary: 200M = 200 MiB)."
    )
    var recoveryBytes: String = "10G"

    func validate() throws {
        if let rate = self.rate, !Self.rates.contains(rate) {
            throw ValidationError("--rate wants \(Self.rates) records/s, got \(rate)")
        }
    }

    func resolved(for scenario: Scenario) throws -> BenchParameters {
        guard self.recordSize >= 16, self.recordSize <= 1 << 20 else { throw ValidationError("--record-size wants 16...1048576") }
        guard self.topics >= 1 else { throw ValidationError("--topics wants at least 1") }
        guard self.duration > 0, self.warmup >= 0 else { throw ValidationError("--duration wants > 0 and --warmup >= 0") }
        guard self.paceMicros >= 10, self.paceMicros <= 1_000_000 else { throw ValidationError("--pace-micros wants 10...1000000") }
        guard self.slowMicros >= 1, self.slowMicros <= 3_600_000_000 else {
            throw ValidationError("--slow-micros wants 1...3600000000")
        }
        guard ["lz4", "none"].contains(self.compression) else { throw ValidationError("--compression wants lz4 or none") }
        let fsync = self.fsync ?? (scenario == .recovery ? "never" : "always")
        guard fsync == "always" || fsync == "never" || fsync.hasPrefix("interval:") else {
            throw ValidationError("--fsync wants always, never or interval:MS")
        }
        var parameters = BenchParameters(
            producers: 1, consumers: 1, topics: self.topics, recordSize: self.recordSize, batch: 1, inFlight: 1,
            fsync: fsync, compression: self.compression, duration: self.duration, records: self.records,
            warmup: self.warmup, rate: self.rate ?? 10_000, connections: self.connections, credit: self.credit,
            dedupeKeys: self.dedupeKeys, perRecord: self.perRecord, stalledSubscribers: self.stalledSubscribers,
            paceMicros: self.paceMicros, slowMicros: self.slowMicros
        )
        switch scenario {
        case .durablePublish, .policyOverhead:  // policy-overhead runs the durable-publish load twice
            parameters.producers = 4
            parameters.batch = 100
            parameters.inFlight = 4
        case .pipelinedSingle:
            parameters.inFlight = 1000
        case .syncLatency:
            break
        case .e2eLatency:
            parameters.inFlight = 64
        case .consume:
            parameters.batch = 1000
            parameters.inFlight = 4
            parameters.records = self.records ?? 1_000_000
        case .manyConnections:
            break
        case .recovery:
            parameters.producers = 2
            parameters.batch = 1000
            parameters.inFlight = 4
            parameters.warmup = 0
            parameters.recoveryBytes = try Self.parseBytes(self.recoveryBytes)
        }
        if let producers = self.producers { parameters.producers = producers }
        if let consumers = self.consumers { parameters.consumers = consumers }
        if let batch = self.batch { parameters.batch = batch }
        if let inFlight = self.inFlight { parameters.inFlight = inFlight }
        guard parameters.producers >= 1, parameters.consumers >= 1, parameters.batch >= 1, parameters.inFlight >= 1 else {
            throw ValidationError("--producers, --consumers, --batch and --in-flight want at least 1")
        }
        return parameters
    }

    /// The rates e2e-latency can be asked for, records/s: the producer sends at most 10,000 records a tick, so at the
    /// default pace (100 µs) 100,000,000 would leave it no room to catch up after a late tick.
    static let rates = 1...10_000_000

    /// "10G", "200M", "1.5G", "512K", "1048576": a byte count, suffixes binary (K = 1024), an optional "iB"/"B".
    static func parseBytes(_ text: String) throws -> Int64 {
        var body = text.trimmingCharacters(in: .whitespaces).uppercased()
        for unit in ["IB", "B"] where body.hasSuffix(unit) {
            body.removeLast(unit.count)
            break
        }
        var multiplier: Double = 1
        if let last = body.last, let power = ["K": 1, "M": 2, "G": 3, "T": 4][String(last)] {
            multiplier = pow(1024, Double(power))
            body.removeLast()
        }
        guard let number = Double(body), number > 0, number * multiplier < 1e18 else {
            throw ValidationError("--recovery-bytes wants a size such as 10G, 300M or 1048576, got '\(text)'")
        }
        return Int64(number * multiplier)
    }
}

/// The resolved load of one run (recorded in the JSON result).
struct BenchParameters: Codable, Sendable {
    var producers: Int
    var consumers: Int
    var topics: Int
    var recordSize: Int
    var batch: Int
    var inFlight: Int
    var fsync: String
    var compression: String
    var duration: Double
    var records: Int?
    var warmup: Double
    var rate: Int
    var connections: Int
    var credit: Int
    /// Whether published records carry a unique dedupe key (policy-overhead's second half always does).
    var dedupeKeys: Bool
    /// consume: whether the consumer reads through the per-record iterator rather than `batches`.
    var perRecord: Bool = false
    /// recovery: how many bytes of log to fill.
    var recoveryBytes: Int64?
    /// many-connections: subscribers that stop reading.
    var stalledSubscribers: Int = 0
    /// e2e-latency: how often the producer sends the records that have come due, in µs (absent from results written
    /// before 2026-12-03, when it was 1000).
    var paceMicros: Int = 100
    /// e2e-latency: the latency timeline's slow threshold, in µs (absent from results written before round 26).
    var slowMicros: Int = 2000
}
