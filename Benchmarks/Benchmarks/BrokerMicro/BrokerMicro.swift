import Benchmark
import Foundation
import LogStore
import Logging
import NIOCore
import Throttle
import TopicRouter
import WireProtocol

// brokerd micro-benchmarks: `make bench` (full) or `make bench-smoke` (a few iterations each); docs/BENCHMARKS.md.
//
// Every benchmark reports wall clock, throughput and malloc count. Only the malloc count is gated (thresholds
// below, checked by `make bench-check` against Thresholds/): it is deterministic for the same code and toolchain,
// while wall-clock figures on a shared 2-core machine are reported, never gated.

/// The malloc-count tolerance of benchmarks whose allocations are the same every iteration: none.
var exactMallocs: [BenchmarkMetric: BenchmarkThresholds] {
    [
        .mallocCountTotal: BenchmarkThresholds(relative: [.p90: 0.0], absolute: [.p90: 0])
    ]
}

/// The malloc-count tolerance of benchmarks that go through Dispatch and Swift concurrency (log append and read),
/// whose allocation count varies a little with scheduling.
var looseMallocs: [BenchmarkMetric: BenchmarkThresholds] {
    [
        .mallocCountTotal: BenchmarkThresholds(relative: [.p90: 10.0], absolute: [.p90: 20])
    ]
}

func configuration(
    scalingFactor: BenchmarkScalingFactor = .one,
    maxDuration: Duration = .milliseconds(1500),
    maxIterations: Int = 20_000,
    thresholds: [BenchmarkMetric: BenchmarkThresholds] = exactMallocs
) -> Benchmark.Configuration {
    .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal],
        warmupIterations: smokeMode ? 0 : 5,
        scalingFactor: scalingFactor,
        maxDuration: smokeMode ? .milliseconds(50) : maxDuration,
        maxIterations: smokeMode ? 2 : maxIterations,
        thresholds: thresholds
    )
}

/// A benchmark's name with spaces made underscores. `thresholds update` writes Thresholds/<target>.<name>.p90.json
/// with spaces (and slashes) replaced by `_`, but `thresholds check` looks the file up under the raw name
/// (package-benchmark 1.38.1), so a name with a space never finds its threshold.
func named(_ title: String) -> String { title.replacingOccurrences(of: " ", with: "_") }

let benchmarks: @Sendable () -> Void = {
    wireProtocolBenchmarks()
    batchBenchmarks()
    routerBenchmarks()
    dedupeBenchmarks()
    throttleBenchmarks()
    logBenchmarks()
}

// MARK: 1. Frames

func wireProtocolBenchmarks() {
    for (label, frame, encodedFrame) in [
        ("PUBLISH", publishFrame, encodedPublish), ("DELIVER", deliverFrame, encodedDeliver),
    ] {
        let output = Fixture(allocator.buffer(capacity: 64 * 1024))
        Benchmark(named("Frame encode \(label) 100 records"), configuration: configuration()) { benchmark in
            for _ in benchmark.scaledIterations {
                output.value.clear()
                FrameCodec.encode(frame, into: &output.value)
                blackHole(output.value.writerIndex)
            }
        }

        Benchmark(named("Frame decode \(label) 100 records"), configuration: configuration()) { benchmark in
            for _ in benchmark.scaledIterations {
                var input = encodedFrame
                var decoder = FrameDecoder()
                guard let decoded = try decoder.decode(buffer: &input), input.readableBytes == 0 else {
                    throw FixtureError("\(label) frame did not decode whole")
                }
                blackHole(decoded)
            }
        }
    }
}

// MARK: 2-3. Batches and CRC32C

func batchBenchmarks() {
    for codec in [CompressionCodec.none, .lz4] {
        Benchmark(named("Batch encode 100 records, \(codec)"), configuration: configuration()) { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try BatchCodec.encode(logRecords, baseOffset: 1_000_000, codec: codec))
            }
        }

        let stored = codec == .none ? batchUncompressed : batchLZ4
        Benchmark(named("Batch verify 100 records, \(codec)"), configuration: configuration()) { benchmark in
            for _ in benchmark.scaledIterations {
                blackHole(try BatchCodec.verify(stored))
            }
        }

        Benchmark(named("Batch verify+decode 100 records, \(codec)"), configuration: configuration()) { benchmark in
            for _ in benchmark.scaledIterations {
                let (header, records) = try BatchCodec.decode(stored)
                guard records.count == recordsPerBatch else { throw FixtureError("decoded \(records.count) records") }
                blackHole(header)
            }
        }
    }

    // 64 KiB of log-like bytes: the uncompressed batch repeated.
    let block: [UInt8] = {
        let batch = Array(batchUncompressed.readableBytesView)
        return Array((0..<(65_536 / batch.count + 1)).flatMap { _ in batch }.prefix(65_536))
    }()
    Benchmark(named("CRC32C 64 KiB"), configuration: configuration()) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(block.withUnsafeBytes { CRC32C.checksum($0) })
        }
    }
}

// MARK: 5. Router decisions

/// The embedded default scenario, every principal given the token "token-of-<client id>".
let scenarioPolicy: Result<Policy, ConfigError> = Result { () throws(ConfigError) -> Policy in
    let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
    let hashes = Dictionary(
        uniqueKeysWithValues: config.principals.map {
            ($0.clientID, Credentials.hash(token: "token-of-\($0.clientID)"))
        }
    )
    return try Policy(config: config.withTokenHashes(hashes))
}

func scenarioPrincipal(_ policy: Policy, _ clientID: String) throws -> Principal {
    guard
        case .authenticated(let principal) = policy.authenticate(
            clientID: clientID,
            token: Array("token-of-\(clientID)".utf8)
        )
    else {
        throw FixtureError("\(clientID) does not authenticate in the default scenario")
    }
    return principal
}

func routerBenchmarks() {
    let headers = eventHeaders(0).map { PolicyHeader($0.name, $0.value) }
    let value = Array(educationEvent(0).utf8)

    let scaled = configuration(scalingFactor: .kilo)
    Benchmark(named("Policy publish verdict, education.completed"), configuration: scaled) { benchmark in
        let policy = try scenarioPolicy.get()
        let portal = try scenarioPrincipal(policy, "learning-portal")
        let first = policy.publishVerdict(
            principal: portal,
            topic: "education.completed",
            headers: headers,
            value: value
        )
        guard first == .accept else { throw FixtureError("the good record was not accepted: \(first)") }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(
                policy.publishVerdict(principal: portal, topic: "education.completed", headers: headers, value: value)
            )
        }
    }

    Benchmark(named("Policy subscribe verdict, education.completed"), configuration: scaled) { benchmark in
        let policy = try scenarioPolicy.get()
        let crm = try scenarioPrincipal(policy, "crm-automation")
        guard policy.subscribeDecision(principal: crm, topic: "education.completed") == .allow else {
            throw FixtureError("crm-automation may not subscribe to education.completed")
        }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(policy.subscribeVerdict(principal: crm, topic: "education.completed"))
        }
    }
}

// MARK: 6. Dedupe

func dedupeBenchmarks() {
    let keyCount = smokeMode ? 1_000 : 100_000
    let now: Int64 = 1_764_579_422_000
    let index = Fixture<DedupeIndex?>(nil)
    let probes = Fixture<[ByteBuffer]>([])
    let next = Fixture(0)
    Benchmark(
        named("Dedupe digest+lookup, existing key among 100k"),
        configuration: configuration(scalingFactor: .kilo),
        closure: { benchmark in
            guard var dedupe = index.value else { throw FixtureError("no dedupe index") }
            index.value = nil  // keep the index uniquely referenced: no copy-on-write inside the loop
            defer { index.value = dedupe }
            for _ in benchmark.scaledIterations {
                let key = probes.value[next.value]
                next.value = next.value &+ 1 == probes.value.count ? 0 : next.value &+ 1
                guard let entry = try dedupe.lookup(key, nowMillis: now) else { throw FixtureError("key not found") }
                blackHole(entry)
            }
        },
        setup: {
            var dedupe = try DedupeIndex(windowMillis: 86_400_000, maxKeys: 1_000_000, hashKey: .init(k0: 1, k1: 2))
            var keys: [ByteBuffer] = []
            keys.reserveCapacity(keyCount)
            for n in 0..<keyCount {
                let key = buffer("learning_portal:evt-\(1_000_000 + n)")
                _ = try dedupe.insert(key, offset: Int64(n), location: .topic, nowMillis: now)
                keys.append(key)
            }
            var generator = SplitMix64(seed: 7)
            probes.value = (0..<4096).map { _ in keys[Int(generator.next() % UInt64(keyCount))] }
            index.value = dedupe
        },
        teardown: { index.value = nil }
    )
}

// MARK: 7. Throttle

func throttleBenchmarks() {
    let bucket = Fixture(TokenBucket(ratePerSecond: 1_000_000, burst: 1_000, nowNanos: 0))
    let clock = Fixture<UInt64>(0)
    Benchmark(named("TokenBucket tryConsume, existing bucket"), configuration: configuration(scalingFactor: .kilo)) {
        benchmark in
        for _ in benchmark.scaledIterations {
            clock.value &+= 1_000  // 1 µs per record at 1M/s: the bucket refills as fast as it is drawn
            blackHole(bucket.value.tryConsume(1, nowNanos: clock.value))
        }
    }

    let limiters = Fixture<LimiterSet?>(nil)
    let keys = ["learning-portal"]
    Benchmark(
        named("LimiterSet check, existing key"),
        configuration: configuration(scalingFactor: .kilo),
        closure: { benchmark in
            guard let set = limiters.value else { throw FixtureError("no limiter set") }
            for _ in benchmark.scaledIterations {
                clock.value &+= 1_000
                let now = LimiterNow(nanos: clock.value)
                let outcome = try set.check(limiter: "per_producer", keys: keys, bytes: 256, now: now)
                blackHole(outcome)
            }
        },
        setup: {
            let set = try LimiterSet(definitions: [
                LimiterDefinition(
                    name: "per_producer",
                    limit: .tokenBucket(ratePerSecond: 1_000_000, burst: 1_000),
                    bytesPerSecond: 1_000_000_000
                )
            ])
            clock.value = 1_000
            guard try set.check(limiter: "per_producer", keys: keys, now: LimiterNow(nanos: clock.value)) == .allowed
            else { throw FixtureError("the first record was limited") }
            limiters.value = set
        }
    )
}

// MARK: 4 and 8. The file log: read at a random offset, append under each fsync policy

let quietLogger = Logger(label: "brokerd.bench", factory: { _ in SwiftLogNoOpLogHandler() })

/// An open file log in a temporary directory.
struct OpenLog: Sendable {
    var directory: String
    var backend: FileLogBackend
    var log: any TopicLog

    static func open(_ label: String, _ config: TopicLogConfig) async throws -> OpenLog {
        let directory = try makeTemporaryDirectory(label)
        do {
            let backend = try FileLogBackend(directory: directory + "/data", logger: quietLogger)
            let log = try await backend.openTopic(name: "education.completed", config: config)
            return OpenLog(directory: directory, backend: backend, log: log)
        } catch {
            removeTemporaryDirectory(directory)
            throw error
        }
    }

    func close() async {
        try? await self.log.close()
        await self.backend.closeAll()
        removeTemporaryDirectory(self.directory)
    }
}

func logBenchmarks() {
    // Read one record at a random offset: the sparse index lookup (one entry per batch here, 10,000 entries),
    // one pread of the batch, its CRC check and LZ4 decode.
    let batches = smokeMode ? 200 : 10_000
    let recordsPerReadBatch = 10
    let reader = Fixture<OpenLog?>(nil)
    let offsets = Fixture<[Int64]>([])
    let next = Fixture(0)
    Benchmark(
        named("Log read 1 record at a random offset, 10k-entry index"),
        configuration: configuration(maxDuration: .seconds(2), thresholds: looseMallocs),
        closure: { benchmark in
            guard let log = reader.value?.log else { throw FixtureError("no log") }
            let offset = offsets.value[next.value]
            next.value = next.value &+ 1 == offsets.value.count ? 0 : next.value &+ 1
            let records = try log.read(from: offset, maxRecords: 1, maxBytes: 1 << 20)
            guard records.first?.offset == offset else { throw FixtureError("read at \(offset) missed") }
            blackHole(records)
        },
        setup: {
            var config = TopicLogConfig()
            config.fsync = .never
            config.compression = .lz4
            config.indexIntervalBytes = 1  // an index entry for every batch
            let open = try await OpenLog.open("read", config)
            reader.value = open
            let records = storedRecords(count: recordsPerReadBatch)
            for _ in 0..<batches { _ = try await open.log.append(records) }
            var generator = SplitMix64(seed: 11)
            let end = UInt64(batches * recordsPerReadBatch)
            offsets.value = (0..<4096).map { _ in Int64(generator.next() % end) }
        },
        teardown: {
            await reader.value?.close()
            reader.value = nil
        }
    )

    // Append one 100-record batch (LZ4, as the default topics) under each fsync policy.
    for (label, fsync, iterations) in [
        ("always", FsyncPolicy.always, 300), ("interval 100 ms", .interval(milliseconds: 100), 2_000),
        ("never", .never, 2_000),
    ] {
        let appender = Fixture<OpenLog?>(nil)
        Benchmark(
            named("Log append 100 records, fsync \(label)"),
            configuration: configuration(maxDuration: .seconds(3), maxIterations: iterations, thresholds: looseMallocs),
            closure: { benchmark in
                guard let log = appender.value?.log else { throw FixtureError("no log") }
                blackHole(try await log.append(logRecords))
            },
            setup: {
                var config = TopicLogConfig()
                config.fsync = fsync
                config.compression = .lz4
                appender.value = try await OpenLog.open("append", config)
            },
            teardown: {
                await appender.value?.close()
                appender.value = nil
            }
        )
    }
}
