import BrokerClient
import BrokerServer
import Foundation
import Locking
import Logging
import LogStore
import Metrics
import Testing
import NIOCore
import NIOPosix
import TopicRouter
import WireProtocol

/// A real broker on 127.0.0.1 with an ephemeral port and a temp data directory, for integration tests.
final class TestBroker: Sendable {
    static let tokens: [String: String] = [
        "learning-portal": "tok-learning-portal-0123456789",
        "crm-automation": "tok-crm-automation-0123456789",
        "support-desk": "tok-support-desk-0123456789",
        "ops-admin": "tok-ops-admin-0123456789",
    ]

    let dataDir: String
    let config: BrokerConfig
    let server: BrokerServer
    let port: Int

    private init(dataDir: String, config: BrokerConfig, server: BrokerServer, port: Int) {
        self.dataDir = dataDir
        self.config = config
        self.server = server
        self.port = port
    }

    /// The scenario config: a non-PHI, a pseudonymous and a PHI topic; producer, CRM, support, operator.
    static func makeConfig(dataDir: String, handshakeTimeoutSeconds: Int = 10, maxFrameBytes: Int = 1 << 20) -> BrokerConfig {
        var server = ServerSettings()
        server.listenHost = "127.0.0.1"
        server.listenPort = 0
        server.dataDir = dataDir
        server.handshakeTimeoutSeconds = handshakeTimeoutSeconds
        server.maxFrameBytes = maxFrameBytes
        var education = TopicPolicy(name: "education.completed", sensitivity: "non_phi")
        education.segmentBytes = 4096  // several segments even in small tests
        let milestone = TopicPolicy(name: "support.milestone", sensitivity: "pseudonymous")
        var referral = TopicPolicy(name: "clinical.referral", sensitivity: "phi")
        referral.compression = .none
        let roles = [
            RolePolicy(name: "producer", clearance: "phi", publish: ["*"], subscribe: []),
            RolePolicy(name: "crm", clearance: "non_phi", publish: [], subscribe: ["education.*", "support.*"]),
            RolePolicy(name: "patient_support", clearance: "phi", publish: [], subscribe: ["support.*", "clinical.*"]),
            RolePolicy(name: "operator", clearance: "phi", publish: ["*"], subscribe: ["*"]),
        ]
        let roleOf = ["learning-portal": "producer", "crm-automation": "crm", "support-desk": "patient_support", "ops-admin": "operator"]
        let principals = self.tokens.keys.sorted().map {
            PrincipalEntry(clientID: $0, role: roleOf[$0]!, tokenHash: Credentials.hash(token: self.tokens[$0]!))
        }
        var config = BrokerConfig(
            server: server,
            classes: ["non_phi", "deidentified", "pseudonymous", "phi"],
            topics: [education, milestone, referral],
            roles: roles,
            principals: principals
        )
        // Never the users' default 127.0.0.1:9420: tests run in parallel next to a running brokerd.
        config.metrics.enabled = false
        return config
    }

    /// A new `brokerd-test-*` directory, removed when the test process exits (not at `stop()`: tests restart
    /// brokers on their directory, and most never call `removeData()`).
    static func makeTempDir() -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("brokerd-test-\(UUID().uuidString)").path
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        removeTempDirsAtExit.register(path)
        return path
    }

    /// Starts a broker; reuse `dataDir` to restart on the same files.
    static func start(dataDir: String? = nil, configure: (inout BrokerConfig) -> Void = { _ in }) async throws -> TestBroker {
        let dir = dataDir ?? self.makeTempDir()
        var config = self.makeConfig(dataDir: dir)
        configure(&config)
        return try await self.start(config: config)
    }

    /// A broker on the embedded default config (the closed-loop scenario: purposes, scopes, field rules,
    /// capabilities), every principal's token being `token(for:)`. A reload re-reads `configText`.
    static func startScenario(
        dataDir: String? = nil,
        configText: ConfigText = ConfigText(),
        io: any FileIO = PosixFileIO(),
        metrics: (factory: any MetricsFactory, exposition: MetricsExposition)? = nil,
        quietTrimTick: Duration? = nil
    ) async throws -> TestBroker {
        let dir = dataDir ?? self.makeTempDir()
        let load: @Sendable () throws -> BrokerConfig = {
            var config = try ConfigLoader.parse(configText.text)
            config = config.withTokenHashes(
                Dictionary(uniqueKeysWithValues: config.principals.map { ($0.clientID, Credentials.hash(token: TestBroker.token(for: $0.clientID))) })
            )
            config.server.listenHost = "127.0.0.1"
            config.server.listenPort = 0
            config.server.dataDir = dir
            // Metrics on an ephemeral port when a test asks for them, otherwise off (never 9420 in a test).
            config.metrics.enabled = metrics != nil
            config.metrics.listenHost = "127.0.0.1"
            config.metrics.listenPort = 0
            return config
        }
        return try await self.start(
            config: try load(), reloadSource: load, io: io, metrics: metrics, quietTrimTick: quietTrimTick
        )
    }

    /// Starts a broker on `config`; with `metrics`, its metric objects come from that factory and, when
    /// `config.metrics` is enabled, it serves `GET /metrics` rendered by the exposition.
    static func start(
        config: BrokerConfig,
        reloadSource: (@Sendable () throws -> BrokerConfig)? = nil,
        io: any FileIO = PosixFileIO(),
        metrics: (factory: any MetricsFactory, exposition: MetricsExposition)? = nil,
        quietTrimTick: Duration? = nil
    ) async throws -> TestBroker {
        var logger = Logger(label: "brokerd-test")
        logger.logLevel = .critical  // storage-fault tests log errors on purpose
        let server = BrokerServer(
            config: config, logger: logger, eventLoopThreads: 2, reloadSource: reloadSource, io: io,
            metrics: metrics?.factory ?? NOOPMetricsHandler.instance, metricsExposition: metrics?.exposition,
            quietTrimTick: quietTrimTick
        )
        do {
            try await server.start()
        } catch {
            await server.shutdown()
            throw error
        }
        guard let port = server.localAddress?.port else { fatalError("no port") }
        return TestBroker(dataDir: config.server.dataDir, config: config, server: server, port: port)
    }

    /// The token tests use for a principal.
    static func token(for clientID: String) -> String {
        self.tokens[clientID] ?? "tok-\(clientID)-0123456789"
    }

    func client(_ clientID: String) async throws -> BrokerClient {
        try await BrokerClient.connect(host: "127.0.0.1", port: self.port, clientID: clientID, token: Self.token(for: clientID))
    }

    func stop() async {
        await self.server.shutdown()
    }

    func removeData() {
        try? FileManager.default.removeItem(atPath: self.dataDir)
    }
}

/// The data directories this test process made, removed by an `atexit` handler installed with the first one.
private final class TempDirsAtExit: Sendable {
    private let paths = Locked<[String]>([])
    private let installed = Locked(false)

    func register(_ path: String) {
        self.paths.withLock { $0.append(path) }
        let install = self.installed.withLock { installed in
            defer { installed = true }
            return !installed
        }
        if install {
            atexit {
                for path in removeTempDirsAtExit.paths.withLock({ $0 }) {
                    try? FileManager.default.removeItem(atPath: path)
                }
            }
        }
    }
}

private let removeTempDirsAtExit = TempDirsAtExit()

/// An education-completed event as the learning portal sends it.
func educationEvent(_ n: Int) -> WireRecord {
    let json = #"{"event_type":"account.education.completed","source_system":"learning_portal","account_id":"acct_\#(n)","payload":{"module_id":"onboarding-101","completion_status":"completed"}}"#
    return WireRecord(
        key: ByteBuffer(string: "acct_\(n)"),
        headers: [
            WireHeader(name: "event_type", value: ByteBuffer(string: "account.education.completed")),
            WireHeader(name: "source_system", value: ByteBuffer(string: "learning_portal")),
            WireHeader(name: "consent_scope", value: ByteBuffer(string: "educational")),
        ],
        value: ByteBuffer(string: json),
        timestamp: 1_776_000_000_000 + Int64(n)
    )
}

/// Publishes `batches` PUBLISHes of `perBatch` education events (numbered from 0, each batch passed through `adjust`
/// first) to a fresh `education.completed`, expecting every record stored at the next offset; returns them in order.
func publishEducationEvents(
    _ producer: BrokerClient, batches: Int = 5, perBatch: Int = 40, adjust: (inout [WireRecord]) -> Void = { _ in }
) async throws -> [WireRecord] {
    var published: [WireRecord] = []
    for batch in 0..<batches {
        var records = (0..<perBatch).map { educationEvent(batch * perBatch + $0) }
        adjust(&records)
        let results = try await producer.publish(topic: "education.completed", records: records)
        #expect(results.map(\.code) == Array(repeating: .ok, count: perBatch))
        #expect(results.map(\.offset) == (0..<perBatch).map { Int64(batch * perBatch + $0) })
        published += records
    }
    return published
}

/// Collects `count` records from a subscription, failing after `timeout`.
func collect(_ subscription: BrokerSubscription, count: Int, timeout: Duration = .seconds(20)) async throws -> [DeliveredRecord] {
    try await withThrowingTaskGroup(of: [DeliveredRecord].self) { group in
        group.addTask {
            var records: [DeliveredRecord] = []
            for try await record in subscription {
                records.append(record)
                if records.count == count { break }
            }
            return records
        }
        group.addTask {
            try await Task.sleep(for: timeout)
            throw TimeoutError(what: "waiting for \(count) records")
        }
        let first = try await group.next()!
        group.cancelAll()
        return first
    }
}

struct TimeoutError: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out \(self.what)" }
}

/// A raw TCP connection speaking bytes, for hostile-client tests.
final class RawConnection: Sendable {
    private let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>

    private init(channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) {
        self.channel = channel
    }

    static func connect(port: Int) async throws -> RawConnection {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return RawConnection(channel: channel)
    }

    /// Writes raw bytes and closes the connection without reading anything.
    func sendAndClose(_ bytes: [UInt8]) async throws {
        try await self.channel.executeThenClose { _, outbound in
            try await outbound.write(ByteBuffer(bytes: bytes))
        }
    }

    /// Writes raw bytes, then reads until the peer closes or `timeout`; returns the frames read and whether it closed.
    func exchange(_ bytes: [UInt8], timeout: Duration = .seconds(10), until stop: @escaping @Sendable ([TaggedFrame]) -> Bool = { _ in false }) async throws -> (frames: [TaggedFrame], closed: Bool) {
        try await self.channel.executeThenClose { inbound, outbound in
            // The broker may close first (a timeout that fired while a loaded machine delayed this write): then the
            // write fails and what the broker sent before closing is still read below, which is what tests check.
            if !bytes.isEmpty { try? await outbound.write(ByteBuffer(bytes: bytes)) }
            return try await withThrowingTaskGroup(of: ([TaggedFrame], Bool)?.self) { group in
                group.addTask {
                    var buffer = ByteBuffer()
                    var decoder = FrameDecoder()
                    var frames: [TaggedFrame] = []
                    for try await chunk in inbound {
                        var chunk = chunk
                        buffer.writeBuffer(&chunk)
                        while let frame = try decoder.decode(buffer: &buffer) { frames.append(frame) }
                        if stop(frames) { return (frames, false) }
                    }
                    return (frames, true)
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let result = try await group.next()!
                group.cancelAll()
                guard let result else { throw TimeoutError(what: "waiting for the broker to answer or close") }
                return (result.0, result.1)
            }
        }
    }
}

/// Encodes frames to bytes.
func encode(_ frames: TaggedFrame...) -> [UInt8] {
    var buffer = ByteBuffer()
    for frame in frames { FrameCodec.encode(frame, into: &buffer) }
    return Array(buffer.readableBytesView)
}

func hello(_ clientID: String, token: String? = nil, correlationID: UInt32 = 1) -> TaggedFrame {
    TaggedFrame(correlationID: correlationID, frame: .hello(Hello(clientID: clientID, credential: ByteBuffer(string: token ?? TestBroker.tokens[clientID] ?? "x"))))
}

/// Real POSIX file I/O with faults armed by path: fdatasync failing with EIO, pwrite failing with an errno or held
/// until released.
final class FailingSyncIO: FileIO {
    private struct Faults {
        var syncs: String?
        var writes: (text: String, errno: Int32, remaining: Int)?
        var heldWrites: String?
        var syncCalls: [String: Int] = [:]
        var syncsReturned: [String: Int] = [:]
        var writeCalls: [String: Int] = [:]
        var readCalls: [String: Int] = [:]
    }
    private let posix = PosixFileIO()
    private let faults = Locked(Faults())

    /// fdatasync of every path containing `text` fails from now on (nil: none).
    func failSyncs(ofPathsContaining text: String?) { self.faults.withLock { $0.syncs = text } }

    /// pwrite of every path containing `text` fails with `errno` from now on, or for the next `count` such writes
    /// (nil: none).
    func failWrites(ofPathsContaining text: String?, errno: Int32 = ENOSPC, count: Int = .max) {
        self.faults.withLock { $0.writes = text.map { ($0, errno, count) } }
    }

    /// pwrite of every path containing `text` waits (at most 5 s each) until this is called with nil.
    func holdWrites(ofPathsContaining text: String?) { self.faults.withLock { $0.heldWrites = text } }

    /// How many fdatasync calls were made on paths containing `text`.
    func syncCalls(ofPathsContaining text: String) -> Int {
        self.faults.withLock { Self.total($0.syncCalls, text) }
    }

    /// How many fdatasync calls on paths containing `text` returned successfully.
    func syncsReturned(ofPathsContaining text: String) -> Int {
        self.faults.withLock { Self.total($0.syncsReturned, text) }
    }

    /// How many pwrite calls were made on paths containing `text` (held and failed ones included).
    func writeCalls(ofPathsContaining text: String) -> Int {
        self.faults.withLock { Self.total($0.writeCalls, text) }
    }

    private static func total(_ calls: [String: Int], _ text: String) -> Int {
        calls.filter { $0.key.contains(text) }.values.reduce(0, +)
    }

    func fdatasync(_ fd: Int32, path: String) throws(FileIOError) {
        let failing = self.faults.withLock { faults in
            faults.syncCalls[path, default: 0] += 1
            return faults.syncs
        }
        if let failing, path.contains(failing) {
            throw FileIOError(operation: "fdatasync", path: path, errno: EIO)
        }
        try self.posix.fdatasync(fd, path: path)
        self.faults.withLock { $0.syncsReturned[path, default: 0] += 1 }
    }

    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 { try self.posix.open(path, flags: flags, mode: mode) }
    func close(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.close(fd, path: path) }
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(FileIOError) -> Int {
        func held(_ faults: Faults) -> Bool { faults.heldWrites.map { path.contains($0) } ?? false }
        if self.faults.withLock({ faults in
            faults.writeCalls[path, default: 0] += 1
            return held(faults)
        }) {
            for _ in 0..<5000 where self.faults.withLock({ held($0) }) { usleep(1000) }
        }
        let failing = self.faults.withLock { faults -> Int32? in
            guard let writes = faults.writes, path.contains(writes.text), writes.remaining > 0 else { return nil }
            faults.writes?.remaining -= 1
            return writes.errno
        }
        if let failing { throw FileIOError(operation: "pwrite", path: path, errno: failing) }
        return try self.posix.pwrite(fd, bytes, at: offset, path: path)
    }
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String) throws(FileIOError) -> Int {
        self.faults.withLock { $0.readCalls[path, default: 0] += 1 }
        return try self.posix.pread(fd, into: buffer, at: offset, path: path)
    }

    /// How many pread calls were made on paths containing `text`.
    func readCalls(ofPathsContaining text: String) -> Int {
        self.faults.withLock { Self.total($0.readCalls, text) }
    }
    func fsync(_ fd: Int32, path: String) throws(FileIOError) { try self.posix.fsync(fd, path: path) }
    func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError) { try self.posix.ftruncate(fd, to: size, path: path) }
    func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64 { try self.posix.fileSize(fd, path: path) }
    func rename(_ from: String, to: String) throws(FileIOError) { try self.posix.rename(from, to: to) }
    func unlink(_ path: String) throws(FileIOError) { try self.posix.unlink(path) }
    func mkdir(_ path: String) throws(FileIOError) { try self.posix.mkdir(path) }
    func listDirectory(_ path: String) throws(FileIOError) -> [String] { try self.posix.listDirectory(path) }
}

/// Config text a test can change before asking for a reload; starts as the embedded default.
final class ConfigText: Sendable {
    private let storage = Locked(ConfigLoader.embeddedDefault)
    var text: String { self.storage.withLock { $0 } }

    /// Replaces the first occurrence of `old` after `anchor` (which must exist) with `new`.
    func edit(after anchor: String, replacing old: String, with new: String) {
        self.storage.withLock { text in
            let start = text.range(of: anchor)!.upperBound
            let range = text.range(of: old, range: start..<text.endIndex)!
            text.replaceSubrange(range, with: new)
        }
    }

    func set(_ text: String) { self.storage.withLock { $0 = text } }

    /// Makes the default `per_connection` limiter a delaying one of `rate` records/s in bursts of 1.
    func delayPerConnection(rate: Double) {
        self.edit(after: #"name = "per_connection""#, replacing: "rate = 50000", with: "rate = \(rate)")
        self.edit(after: #"name = "per_connection""#, replacing: "burst = 100000", with: "burst = 1")
        self.edit(after: #"name = "per_connection""#, replacing: #"action = "reject""#, with: #"action = "delay""#)
    }
}

extension WireRecord {
    /// The record as its producer sent it: without the `broker-*` provenance headers the broker appends.
    var producerPart: WireRecord {
        var copy = self
        copy.headers.removeAll { $0.name.hasPrefix("broker-") }
        return copy
    }

    /// The text of the first header with this name.
    func header(_ name: String) -> String? {
        self.headers.first { $0.name == name }.map { String(decoding: $0.value.readableBytesView, as: UTF8.self) }
    }
}

extension TestBroker {
    /// Bytes of the batches in a topic's `.log` segment files (parsed from their headers; what the broker reports
    /// as the log's size: an `fsync = "always"` topic's active segment may also hold preallocated zeros), and how
    /// many `.log` files there are.
    func segmentBatchBytes(topic: String) throws -> (bytes: Int64, count: Int) {
        let directory = self.dataDir + "/topics/" + topic
        let logs = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".log") }
        var total: Int64 = 0
        for file in logs {
            let bytes = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: directory + "/" + file)))
            var position = 0
            while let header = BatchHeader.peek(bytes.getSlice(at: position, length: bytes.readableBytes - position)!),
                header.length > 0, position + header.totalSize <= bytes.readableBytes
            {
                position += header.totalSize
            }
            total += Int64(position)
        }
        return (total, logs.count)
    }
}
