import BrokerClient
import BrokerServer
import Foundation
import Locking
import LogStore
import Metrics
import NIOCore
import NIOPosix
import Prometheus
import Synchronization
import Testing
import WireProtocol

/// The Prometheus endpoint over real sockets: a broker on the embedded default scenario with an injected registry
/// (never the global MetricsSystem), driven through every decision the metrics count, then scraped over HTTP.
@Suite("Metrics over HTTP")
struct MetricsOverHTTPTests {
    /// A registry and a factory that counts the metric handlers it makes, as a test broker's `metrics`.
    struct Instrumented {
        let registry: PrometheusCollectorRegistry
        let factory: CountingMetricsFactory

        init() {
            self.registry = PrometheusCollectorRegistry()
            var prometheus = PrometheusMetricsFactory(registry: self.registry)
            prometheus.durationHistogramBuckets = BrokerMetrics.durationBuckets
            prometheus.valueHistogramBuckets = BrokerMetrics.valueBuckets
            self.factory = CountingMetricsFactory(prometheus)
        }

        var injected: (factory: any MetricsFactory, exposition: MetricsExposition) {
            let registry = self.registry
            return (self.factory, { registry.emit(into: &$0) })
        }
    }

    @Test("connections refused at max_connections are counted")
    func refusedConnections() async throws {
        let metrics = Instrumented()
        let config = ConfigText()
        config.edit(after: "[server]", replacing: "max_connections = 10000", with: "max_connections = 1")
        let broker = try await TestBroker.startScenario(configText: config, metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        let admitted = try await broker.client("ops-admin")
        for _ in 0..<3 {
            let (frames, closed) = try await RawConnection.connect(port: broker.port).exchange([])
            #expect(closed)
            #expect(HostileClientTests.errors(frames).first?.code == .connectionLimit)
        }
        let scrape = try await MetricsScrape.until(port: port) { $0.value(BrokerMetrics.connectionsRefused) == 3 }
        #expect(scrape.exposition.value(BrokerMetrics.connectionsRefused) == 3)
        #expect(scrape.exposition.value(BrokerMetrics.connectionsOpen) == 1)
        await admitted.close()
        await broker.stop()
    }

    /// The broker shares this test process's allocator, so memory the test holds shows in the gauges. Other tests
    /// allocate and free meanwhile (one run of `make test` saw 87 MB more allocated between two scrapes, where the
    /// test held 256 MiB and allowed 64 MiB of noise): 512 MiB held, with 128 MiB of room, stands clear of them.
    @Test(
        "the allocator's gauges: memory held shows as allocated, and stops showing once freed",
        .enabled(if: AllocatorTuning.isGlibcMalloc, "malloc is a sanitizer's: glibc's counts do not reach it")
    )
    func allocatorGauges() async throws {
        let metrics = Instrumented()
        let broker = try await TestBroker.startScenario(metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        let held = 512 << 20
        let before = try #require(try await MetricsScrape.get(port: port).exposition.value(BrokerMetrics.memoryAllocated))
        #expect(try await MetricsScrape.get(port: port).exposition.value(BrokerMetrics.memoryFreeHeld) != nil)
        let block = try #require(malloc(held))
        memset(block, 1, held)
        let holding = try #require(try await MetricsScrape.get(port: port).exposition.value(BrokerMetrics.memoryAllocated))
        free(block)
        let after = try #require(try await MetricsScrape.get(port: port).exposition.value(BrokerMetrics.memoryAllocated))
        #expect(holding - before > Double(held) * 3 / 4, "allocated \(before) before, \(holding) holding 512 MiB")
        #expect(holding - after > Double(held) * 3 / 4, "allocated \(holding) holding 512 MiB, \(after) after freeing it")
        await broker.stop()
    }

    /// brokerd gives the allocator's kept memory back once no log has grown for two ticks, once per quiet spell.
    @Test(
        "a quiet broker trims its heap once, and again only after appends resume and stop",
        .enabled(if: AllocatorTuning.isGlibcMalloc, "malloc is a sanitizer's: there is nothing of glibc's to trim")
    )
    func quietTrim() async throws {
        let metrics = Instrumented()
        let tick = Duration.milliseconds(50)
        let broker = try await TestBroker.startScenario(metrics: metrics.injected, quietTrimTick: tick)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        func trims() async throws -> Double {
            try await MetricsScrape.get(port: port).exposition.value(BrokerMetrics.memoryTrims) ?? 0
        }
        /// Polls until the counter reaches at least `count` (at most 10 s: a trim comes 2-3 ticks after the last
        /// append), then waits 4 ticks more, so that no trim is still due; returns the counter.
        func settled(atLeast count: Double) async throws -> Double {
            let deadline = ContinuousClock.now.advanced(by: .seconds(10))
            while try await trims() < count, ContinuousClock.now < deadline { try await Task.sleep(for: tick) }
            try await Task.sleep(for: tick * 4)
            return try await trims()
        }
        // The start and the producer's HELLO (an audit record) were appends: one or two trims after them.
        let producer = try await broker.client("learning-portal")
        let base = try await settled(atLeast: 1)
        #expect(base >= 1)
        #expect(try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(0)]) == [.ok(offset: 0)])
        #expect(try await settled(atLeast: base + 1) == base + 1)
        // Still quiet: no second trim however long it stays so.
        try await Task.sleep(for: tick * 8)
        #expect(try await trims() == base + 1)
        #expect(try await producer.publish(topic: "education.completed", records: [PolicyPlaneTests.event(1)]) == [.ok(offset: 1)])
        #expect(try await settled(atLeast: base + 2) == base + 2)
        await producer.close()
        await broker.stop()
    }

    @Test("every decision is counted with its labels; lag is end minus committed; more records make no new metric objects")
    func scrapeAfterEveryDecision() async throws {
        let metrics = Instrumented()
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config, metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        #expect(port != 9420 && port != broker.port)
        let education = "education.completed"

        // An auth failure first: its connection is closed by the broker.
        await #expect(throws: BrokerClientError.self) {
            _ = try await BrokerClient.connect(host: "127.0.0.1", port: broker.port, clientID: "learning-portal", token: "wrong-token-0123456789")
        }

        // Publish: ok, quarantined (a forbidden field), ok with a dedupe key; then the key again (duplicate); then a
        // record whose consent scope crm may not receive.
        let producer = try await broker.client("learning-portal")
        let plain = PolicyPlaneTests.event(0)
        let withNote = PolicyPlaneTests.event(1, payload: #""note":"called back, prefers email""#)
        let keyed = DedupeOverTCPTests.keyed(2, key: "evt-metrics-1")
        let first = try await producer.publish(topic: education, records: [plain, withNote, keyed])
        #expect(first.map(\.code) == [.ok, .quarantined, .ok])
        let quarantineOffset = first[1].offset
        let retry = try await producer.publish(topic: education, records: [keyed])
        #expect(retry[0].isDuplicate && retry[0].offset == 1)
        let operational = PolicyPlaneTests.event(3, scope: "operational_notice")
        #expect(try await producer.publish(topic: education, records: [operational])[0] == .ok(offset: 2))

        // A contact cap: the 4th outreach record for one recipient is rejected.
        let portal = try await broker.client("support-portal")
        var outreach: [PublishResult] = []
        for n in 0..<4 {
            outreach += try await portal.publish(topic: "support.outreach", records: [LimiterOverTCPTests.outreach(n, recipient: "pt_1")])
        }
        #expect(outreach.map(\.code) == [.ok, .ok, .ok, .rateLimited])

        // A refused subscription, then a consumer reading 0 and 1 (2 is withheld) and committing 2.
        let crm = try await broker.client("crm-automation")
        await #expect(throws: BrokerClientError.self) {
            _ = try await crm.subscribe(topic: "clinical.referral", start: .earliest)
        }
        let subscription = try await crm.subscribe(topic: education, group: "crm-sync", start: .earliest, credit: 64)
        #expect(try await collect(subscription, count: 2).map(\.offset) == [0, 1])
        try await crm.commit(group: "crm-sync", topic: education, offset: 2)
        try await crm.unsubscribe(subscription.info.subscriptionID)

        // Replay: refused under the current policy; after a reload that allows `note`, appended at offset 3.
        let operator_ = try await broker.client("quarantine-operator")
        #expect(try await operator_.replay(offsets: [quarantineOffset]).map(\.outcome) == [.stillQuarantined])
        config.edit(after: #"name = "education.completed""#, replacing: ReplayAndReloadTests.forbidden, with: ReplayAndReloadTests.forbiddenWithoutNote)
        let admin = try await broker.client("ops-admin")
        _ = try await admin.reload()
        let replayed = try await operator_.replay(offsets: [quarantineOffset])
        #expect(replayed.map(\.outcome) == [.replayed] && replayed[0].newOffset == 3)

        // Five clients are open now (the failed one was closed by the broker); audit entries are written
        // asynchronously: wait until both are visible, bounded.
        let scrape = try await MetricsScrape.until(port: port) { exposition in
            exposition.value(BrokerMetrics.connectionsOpen) == 5
                && exposition.value(BrokerMetrics.auditEntries, ["action": "quarantine.replay"]) == 2
                && exposition.value(BrokerMetrics.auditEntries, ["action": "auth.failure"]) == 1
        }
        #expect(scrape.status == 200)
        #expect(scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let m = scrape.exposition
        func bytes(_ records: [WireRecord]) -> Double { Double(records.reduce(0) { $0 + $1.value.readableBytes }) }

        let results = ["ok": 3.0, "duplicate": 1, "quarantined": 1, "rate_limited": 0, "refused": 0, "failed": 0]
        for (outcome, count) in results {
            #expect(m.value(BrokerMetrics.publishResults, ["topic": education, "outcome": outcome]) == count, "\(outcome)")
        }
        #expect(m.value(BrokerMetrics.publishResults, ["topic": "support.outreach", "outcome": "ok"]) == 3)
        #expect(m.value(BrokerMetrics.publishResults, ["topic": "support.outreach", "outcome": "rate_limited"]) == 1)
        // Appended: three published and one replayed; the replayed record keeps its value.
        #expect(m.value(BrokerMetrics.publishedRecords, ["topic": education]) == 4)
        #expect(m.value(BrokerMetrics.publishedBytes, ["topic": education]) == bytes([plain, keyed, operational, withNote]))
        #expect(m.value(BrokerMetrics.publishedRecords, ["topic": ReservedTopic.quarantine]) == 1)
        #expect(m.value(BrokerMetrics.publishedRecords, ["topic": "support.outreach"]) == 3)
        #expect(m.value(BrokerMetrics.deliveredRecords, ["topic": education]) == 2)
        #expect(m.value(BrokerMetrics.deliveredBytes, ["topic": education]) == bytes([plain, keyed]))
        #expect(m.value(BrokerMetrics.withheld, ["topic": education]) == 1)
        #expect(m.value(BrokerMetrics.blocked, ["topic": education, "decision": "withhold"]) == 1)
        #expect(m.value(BrokerMetrics.blocked, ["topic": education, "decision": "quarantine"]) == 1)
        #expect(m.value(BrokerMetrics.blocked, ["topic": "support.outreach", "decision": "rate_limit"]) == 1)
        #expect(m.value(BrokerMetrics.subscriptionsRefused, ["reason": "NOT_CLEARED"]) == 1)
        #expect(m.value("brokerd_limiter_decisions_total", ["limiter": "outreach_per_recipient", "decision": "reject"]) == 1)
        #expect(m.value(BrokerMetrics.authFailures) == 1)
        #expect(m.value(BrokerMetrics.auditEntries, ["action": "subscribe.refuse"]) == 1)
        #expect(m.value(BrokerMetrics.auditEntries, ["action": "publish.quarantine"]) == 1)
        #expect(m.value(BrokerMetrics.auditFailures) == 0)
        #expect(m.value(BrokerMetrics.quarantineReplays, ["outcome": "still_quarantined"]) == 1)
        #expect(m.value(BrokerMetrics.quarantineReplays, ["outcome": "replayed"]) == 1)
        #expect(m.value(BrokerMetrics.quarantineReplays, ["outcome": "already_replayed"]) == 0)
        #expect(m.value(BrokerMetrics.quarantineAgeAtReplay + "_count") == 1)
        #expect(m.value(BrokerMetrics.quarantineRecords) == 1)
        #expect(m.value(BrokerMetrics.quarantinePending) == 0)
        // Lag: end offset 4 (three published, one replayed) minus committed 2.
        #expect(m.value(BrokerMetrics.consumerLag, ["group": "crm-sync", "topic": education]) == 2)
        // Log facts: every record of the topic was made durable by a group commit (fsync "always").
        #expect(m.value(LogMetrics.groupCommitRecordsName + "_sum", ["topic": education]) == 4)
        let fsyncs = try #require(m.value(LogMetrics.fsyncDurationName + "_count", ["topic": education]))
        #expect(fsyncs >= 1 && fsyncs <= 4)
        let appends = try #require(m.value(LogMetrics.appendDurationName + "_count", ["topic": education]))
        #expect(appends >= 1 && appends <= 4)
        #expect(m.value(LogMetrics.segmentsName, ["topic": education]) == 1)
        let batchBytes = try broker.segmentBatchBytes(topic: education).bytes
        #expect(m.value(LogMetrics.bytesName, ["topic": education]) == Double(batchBytes))

        // N more records published and delivered: the counters move, no metric object is made.
        let made = metrics.factory.made
        let n = 50
        let more = (100..<(100 + n)).map { PolicyPlaneTests.event($0) }
        let published = try await producer.publish(topic: education, records: more)
        #expect(published.allSatisfy { $0.code == .ok })
        let again = try await crm.subscribe(topic: education, start: .offset(4), credit: 64)
        #expect(try await collect(again, count: n).count == n)
        let after = try await MetricsScrape.get(port: port).exposition
        #expect(after.value(BrokerMetrics.publishResults, ["topic": education, "outcome": "ok"]) == 3 + Double(n))
        #expect(after.value(BrokerMetrics.publishedRecords, ["topic": education]) == 4 + Double(n))
        #expect(after.value(BrokerMetrics.deliveredRecords, ["topic": education]) == 2 + Double(n))
        // Lag follows the end offset without a new commit.
        #expect(after.value(BrokerMetrics.consumerLag, ["group": "crm-sync", "topic": education]) == 2 + Double(n))
        #expect(metrics.factory.made == made)

        for client in [producer, portal, crm, operator_, admin] { await client.close() }
        await broker.stop()
    }

    /// One request (or DELIVER) timed in each stage of `metric` (`stages`, in path order, `total` last): each
    /// stage has one sample, a positive sum and the 2 ms bucket; the stages are read from one clock at their
    /// boundaries, so the others add up to the total.
    static func expectTimedOnce(_ exposition: Exposition, metric: String, stages: [String]) {
        let (count, sum) = (metric + "_count", metric + "_sum")
        for stage in stages {
            #expect(exposition.value(count, ["stage": stage]) == 1, "\(stage)")
            #expect((exposition.value(sum, ["stage": stage]) ?? 0) > 0, "\(stage)")
            #expect(exposition.value(metric + "_bucket", ["stage": stage, "le": "0.002"]) != nil, "\(stage)")
        }
        let parts = stages.dropLast().map { exposition.value(sum, ["stage": $0]) ?? 0 }.reduce(0, +)
        #expect(stages.last == "total")
        #expect(abs(parts - (exposition.value(sum, ["stage": "total"]) ?? 0)) < 1e-6)
    }

    @Test("the first PUBLISH of each millisecond per connection is timed through each stage, which add up to its total")
    func publishStages() async throws {
        let metrics = Instrumented()
        let broker = try await TestBroker.startScenario(metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        let count = BrokerMetrics.publishStage + "_count"
        let topic = "education.completed"
        // One request, answered: it is timed (no other request of its connection in its millisecond).
        let producer = try await broker.client("learning-portal")
        #expect(try await producer.publish(topic: topic, records: [PolicyPlaneTests.event(0)])[0].code == .ok)
        let first = try await MetricsScrape.until(port: port) { $0.value(count, ["stage": "total"]) == 1 }.exposition
        Self.expectTimedOnce(first, metric: BrokerMetrics.publishStage, stages: PublishStageTimers.stages)

        // 400 requests pipelined on another connection: at most one per millisecond they took is timed.
        let pipelined = try await broker.client("learning-portal")
        let answered = Locked(0)
        let publisher = pipelined.pipelinedPublisher(maxInFlight: 400) { _ in answered.withLock { $0 += 1 } }
        let started = ContinuousClock.now
        for n in 0..<400 { try await publisher.send(topic: topic, records: [PolicyPlaneTests.event(1 + n)]) }
        let deadline = started.advanced(by: .seconds(20))
        while answered.withLock({ $0 }) < 400, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(1)) }
        #expect(answered.withLock { $0 } == 400)
        let milliseconds = (ContinuousClock.now - started) / .milliseconds(1)
        let after = try await MetricsScrape.until(port: port) { ($0.value(count, ["stage": "total"]) ?? 0) > 1 }.exposition
        let timed = try #require(after.value(count, ["stage": "total"])) - 1
        #expect(timed >= 1 && timed <= milliseconds + 2, "\(timed) timed in \(milliseconds) ms")
        #expect(after.value(count, ["stage": "to_durable"]) == timed + 1)
        // An interval whose end was read before its start (another core's clock) counts as 0, never traps.
        #expect(PublishStageTimers.nanoseconds(from: 4, to: 10) == 6)
        #expect(PublishStageTimers.nanoseconds(from: 10, to: 4) == 0)
        #expect(PublishStageTimers.nanoseconds(from: 5_000_000_500, to: 5_000_000_000) == 0)
        for client in [producer, pipelined] { await client.close() }
        await broker.stop()
    }

    @Test("the first wake-up of each millisecond per subscription is timed through the delivery stages, which add up")
    func deliveryStages() async throws {
        let metrics = Instrumented()
        let broker = try await TestBroker.startScenario(metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        let count = BrokerMetrics.deliveryStage + "_count"
        let topic = "education.completed"
        let consumer = try await broker.client("crm-automation")
        let received = Locked(0)
        let subscription = try await consumer.subscribe(topic: topic, start: .latest, credit: 1000) { batch in
            received.withLock { $0 += batch.count }
        }
        func waitFor(_ records: Int) async throws {
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while received.withLock({ $0 }) < records, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(1))
            }
            #expect(received.withLock { $0 } == records)
        }
        // One record: the log's report wakes the subscription, whose DELIVER is timed through every stage.
        let producer = try await broker.client("learning-portal")
        #expect(try await producer.publish(topic: topic, records: [PolicyPlaneTests.event(0)])[0].code == .ok)
        try await waitFor(1)
        let first = try await MetricsScrape.until(port: port) { $0.value(count, ["stage": "total"]) == 1 }.exposition
        Self.expectTimedOnce(first, metric: BrokerMetrics.deliveryStage, stages: DeliveryStageTimers.stages)

        // 300 requests one after another: each wakes the subscription, and at most one wake-up per millisecond they
        // took is timed.
        let started = ContinuousClock.now
        for n in 0..<300 {
            #expect(try await producer.publish(topic: topic, records: [PolicyPlaneTests.event(1 + n)])[0].code == .ok)
        }
        try await waitFor(301)
        let milliseconds = (ContinuousClock.now - started) / .milliseconds(1)
        let after = try await MetricsScrape.until(port: port) { ($0.value(count, ["stage": "total"]) ?? 0) > 1 }
            .exposition
        let timed = try #require(after.value(count, ["stage": "total"])) - 1
        #expect(timed >= 1 && timed <= milliseconds + 2, "\(timed) timed in \(milliseconds) ms")
        #expect(after.value(count, ["stage": "to_event_loop"]) == timed + 1)
        _ = subscription
        for client in [producer, consumer] { await client.close() }
        await broker.stop()
    }

    @Test("GET /metrics only: another path is 404, another method 405 with Allow: GET; keep-alive serves several")
    func routes() async throws {
        let metrics = Instrumented()
        let broker = try await TestBroker.startScenario(metrics: metrics.injected)
        defer { broker.removeData() }
        let port = try #require(broker.server.metricsAddress?.port)
        let missing = try await MetricsScrape.get(port: port, path: "/")
        #expect(missing.status == 404)
        #expect(try await MetricsScrape.get(port: port, path: "/metricsx").status == 404)
        let post = try await MetricsScrape.get(port: port, method: "POST")
        #expect(post.status == 405)
        #expect(post.headers["allow"] == "GET")
        #expect(try await MetricsScrape.get(port: port, method: "HEAD").status == 405)
        let query = try await MetricsScrape.get(port: port, path: "/metrics?name=x")
        #expect(query.status == 200 && query.exposition.value(BrokerMetrics.connectionsOpen) == 0)
        // Two requests on one connection (HTTP/1.1 keep-alive), the second closing it.
        let twice = try await MetricsScrape.raw(
            port: port,
            "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        #expect(twice.components(separatedBy: "HTTP/1.1 200 OK").count == 2)
        #expect(twice.components(separatedBy: "HTTP/1.1 404 Not Found").count == 2)
        await broker.stop()
    }

    @Test("a broker with metrics off serves no endpoint; a taken metrics port stops the start with advice")
    func offAndTaken() async throws {
        let off = try await TestBroker.startScenario()
        defer { off.removeData() }
        #expect(off.server.metricsAddress == nil)

        let metrics = Instrumented()
        let first = try await TestBroker.startScenario(metrics: metrics.injected)
        defer { first.removeData() }
        let taken = try #require(first.server.metricsAddress?.port)
        var config = TestBroker.makeConfig(dataDir: TestBroker.makeTempDir())
        defer { try? FileManager.default.removeItem(atPath: config.server.dataDir) }
        config.metrics.enabled = true
        config.metrics.listenHost = "127.0.0.1"
        config.metrics.listenPort = taken
        do {
            let second = try await TestBroker.start(config: config, metrics: Instrumented().injected)
            await second.stop()
            Issue.record("a second broker must not start on a metrics port in use")
        } catch let error as MetricsListenError {
            #expect(error.message.contains("127.0.0.1:\(taken)"))
            #expect(error.message.contains("--no-metrics"))
        }
        #expect(try await MetricsScrape.get(port: taken).status == 200)  // the first still serves
        await off.stop()
        await first.stop()
    }
}

/// A `MetricsFactory` that forwards to another and counts the handlers it was asked to make.
final class CountingMetricsFactory: MetricsFactory {
    private let base: PrometheusMetricsFactory
    private let count = Atomic<Int>(0)

    init(_ base: PrometheusMetricsFactory) {
        self.base = base
    }

    /// How many handlers were made so far.
    var made: Int { self.count.load(ordering: .relaxed) }

    private func counted<T>(_ make: () -> T) -> T {
        self.count.wrappingAdd(1, ordering: .relaxed)
        return make()
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        self.counted { self.base.makeCounter(label: label, dimensions: dimensions) }
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        self.counted { self.base.makeFloatingPointCounter(label: label, dimensions: dimensions) }
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        self.counted { self.base.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate) }
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        self.counted { self.base.makeMeter(label: label, dimensions: dimensions) }
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        self.counted { self.base.makeTimer(label: label, dimensions: dimensions) }
    }

    func destroyCounter(_ handler: any CounterHandler) { self.base.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        self.base.destroyFloatingPointCounter(handler)
    }
    func destroyRecorder(_ handler: any RecorderHandler) { self.base.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { self.base.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { self.base.destroyTimer(handler) }
}

/// One HTTP exchange with the metrics endpoint over a raw TCP connection, and the parsed text exposition.
struct MetricsScrape {
    var status: Int
    /// Header names lowercased.
    var headers: [String: String]
    var body: String
    var exposition: Exposition { Exposition(text: self.body) }

    /// Sends `METHOD path` with `Connection: close` and parses the answer.
    static func get(port: Int, method: String = "GET", path: String = "/metrics") async throws -> MetricsScrape {
        let text = try await self.raw(port: port, "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        guard let split = text.range(of: "\r\n\r\n") else { throw TimeoutError(what: "a complete HTTP answer; got \(text)") }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return MetricsScrape(status: status, headers: headers, body: String(text[split.upperBound...]))
    }

    /// Scrapes until `done` holds for the exposition, at most 100 times over about 10 s; returns the last scrape.
    static func until(port: Int, _ done: (Exposition) -> Bool) async throws -> MetricsScrape {
        var scrape = try await self.get(port: port)
        for _ in 0..<100 where !done(scrape.exposition) {
            try await Task.sleep(for: .milliseconds(100))
            scrape = try await self.get(port: port)
        }
        return scrape
    }

    /// Writes `request` and reads until the server closes the connection (at most 10 s).
    static func raw(port: Int, _ request: String) async throws -> String {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            return try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask {
                    var received = ByteBuffer()
                    for try await var chunk in inbound { received.writeBuffer(&chunk) }
                    return String(buffer: received)
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(10))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                guard let first else { throw TimeoutError(what: "the metrics endpoint to answer and close") }
                return first
            }
        }
    }
}

/// The samples of a Prometheus text exposition, looked up by metric name and exact label set.
struct Exposition {
    private var samples: [String: Double] = [:]

    init(text: String) {
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            let name: Substring
            var labels: [String: String] = [:]
            if let brace = series.firstIndex(of: "{") {
                name = series[..<brace]
                let inner = series[series.index(after: brace)..<(series.lastIndex(of: "}") ?? series.endIndex)]
                for pair in inner.split(separator: ",") {
                    let parts = pair.split(separator: "=", maxSplits: 1)
                    guard parts.count == 2 else { continue }
                    labels[String(parts[0])] = String(parts[1].dropFirst().dropLast())
                }
            } else {
                name = series
            }
            self.samples[Self.key(String(name), labels)] = value
        }
    }

    /// The value of the series `name{labels}` (exactly those labels), nil when absent.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        self.samples[Self.key(name, labels)]
    }

    private static func key(_ name: String, _ labels: [String: String]) -> String {
        name + "{" + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",") + "}"
    }
}
