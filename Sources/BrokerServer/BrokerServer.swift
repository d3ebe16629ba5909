import Locking
import Logging
import LogStore
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization
import TopicRouter
import WireProtocol

/// The broker: opens every declared topic's log, listens for clients, and shuts down gracefully.
///
/// Run it as a `Service` in a `ServiceGroup` (brokerd does), or call `start()` / `shutdown()` directly (tests do).
package final class BrokerServer: Service, Sendable {
    private let config: BrokerConfig
    private let reloadSource: (@Sendable () throws -> BrokerConfig)?
    private let io: any FileIO
    private let metricsFactory: any MetricsFactory
    private let exposition: MetricsExposition?
    private let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let readPool: NIOThreadPool
    private let state: Locked<State>
    /// Snapshots the dedupe gates of quiet topics (busy ones snapshot as they commit), so retention floors advance;
    /// and, with `quietTrimTick`, gives the allocator's kept memory back once the broker is quiet.
    private let maintenance = Locked<[Task<Void, Never>]>([])
    private let quietTrimTick: Duration?
    /// Threads of `readPool` (subscriptions' and fetches' reads from the logs).
    private static let readThreads = 2

    private enum State {
        case idle
        case running(channel: any Channel, metricsChannel: (any Channel)?, core: BrokerCore)
        case stopped
    }

    /// - Parameters:
    ///   - config: a validated config whose principals all have token hashes.
    ///   - logger: the broker's logger; connection loggers derive from it.
    ///   - reloadSource: produces the config a reload applies (brokerd re-reads its --config file); nil: reloads
    ///     are rejected.
    ///   - io: the file I/O the topic logs use (tests inject faults here).
    ///   - metrics: makes every metric object of this broker, once each (docs/METRICS.md).
    ///   - metricsExposition: renders what `metrics` collected; with it, and `config.metrics.enabled`, the broker
    ///     serves `GET /metrics` on `config.metrics` listen. Without it no endpoint is served.
    ///   - quietTrimTick: how often the broker looks whether any log grew; after two such ticks without, it gives
    ///     the memory its allocator keeps for reuse back to the system (``QuietTrim``). nil: never (brokerd passes
    ///     one second when it tuned the allocator, ``AllocatorTuning``).
    package init(
        config: BrokerConfig,
        logger: Logger,
        eventLoopThreads: Int = System.coreCount,
        reloadSource: (@Sendable () throws -> BrokerConfig)? = nil,
        io: any FileIO = PosixFileIO(),
        metrics: any MetricsFactory = MetricsSystem.factory,
        metricsExposition: MetricsExposition? = nil,
        quietTrimTick: Duration? = nil
    ) {
        self.quietTrimTick = quietTrimTick
        self.metricsFactory = metrics
        self.exposition = metricsExposition
        self.config = config
        self.reloadSource = reloadSource
        self.io = io
        self.logger = logger
        self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, eventLoopThreads))
        self.readPool = NIOThreadPool(numberOfThreads: Self.readThreads)
        self.state = Locked(.idle)
    }

    /// The address the broker listens on once started (useful with port 0).
    package var localAddress: SocketAddress? {
        self.state.withLock { state in
            if case .running(let channel, _, _) = state { return channel.localAddress }
            return nil
        }
    }

    /// The address the metrics endpoint listens on once started; nil when it is not served.
    package var metricsAddress: SocketAddress? {
        self.state.withLock { state in
            if case .running(_, let metricsChannel, _) = state { return metricsChannel?.localAddress }
            return nil
        }
    }

    /// Opens the logs (running recovery) and binds the listener. Returns once clients can connect.
    package func start() async throws {
        let policy = try Policy(config: self.config)
        // Loaded before anything is opened, so a bad certificate or key stops the start with the key and file named.
        let tlsContext = try self.config.server.tls.map { (settings) throws(TLSSetupError) in
            try BrokerTLS.makeServerContext(settings)
        }
        let clientAuth = self.config.server.tls?.clientAuth
        let dataDir = self.config.server.dataDir
        try makeDirectory(dataDir)
        let backend = try FileLogBackend(
            directory: dataDir + "/topics", logger: self.logger, io: self.io, metrics: self.metricsFactory
        )
        let metrics = BrokerMetrics(factory: self.metricsFactory)
        let topics = TopicTable(backend: backend, logger: self.logger, metrics: metrics)
        let core: BrokerCore
        do {
            try await topics.openReserved(policy.reservedTopics)
            for topic in self.config.topics { try await topics.openDeclared(topic) }
            let offsets = try OffsetStore(path: dataDir + "/consumer-offsets.log")
            let replays = try DurableTable(path: dataDir + "/quarantine-replays.table", label: "quarantine replays", logger: self.logger)
            let limits = try LimiterEngine(
                policy: policy, dataDir: dataDir, logger: self.logger, metrics: self.metricsFactory
            )
            core = BrokerCore(
                policy: policy, backend: backend, topics: topics, offsets: offsets, replays: replays, limits: limits,
                reloadSource: self.reloadSource, logger: self.logger
            )
        } catch {
            await backend.closeAll()
            throw error
        }
        self.readPool.start()

        // The metrics endpoint first: if its address is taken, no client was ever accepted.
        var metricsChannel: (any Channel)?
        if self.config.metrics.enabled, let exposition = self.exposition {
            let (host, port) = (self.config.metrics.listenHost, self.config.metrics.listenPort)
            do {
                metricsChannel = try await MetricsEndpoint.bind(host: host, port: port, group: self.group) {
                    core.refreshMetrics()
                    var buffer: [UInt8] = []
                    buffer.reserveCapacity(16 * 1024)
                    exposition(&buffer)
                    return buffer
                }
            } catch {
                await backend.closeAll()
                throw MetricsListenError(
                    message: "cannot serve metrics on \(host):\(port): \(error); set [metrics] listen to a free "
                        + "address, pass --metrics-listen HOST:PORT, or turn the endpoint off with --no-metrics"
                )
            }
        }
        let readPool = self.readPool
        let logger = self.logger
        let maxBody = UInt32(self.config.server.maxFrameBytes)
        let frameTimeout = TimeAmount.seconds(Int64(self.config.server.frameTimeoutSeconds))
        let connectionIDs = Atomic<UInt64>(1)
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: self.group)
                // A burst of connects waits in the kernel's accept queue rather than having its SYNs dropped
                // (Linux caps the value at net.core.somaxconn, 4096 by default).
                .serverChannelOption(.backlog, value: 4096)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    let id = connectionIDs.wrappingAdd(1, ordering: .relaxed).oldValue
                    return channel.eventLoop.makeCompletedFuture {
                        // With TLS, the TLS handler comes first: everything above it sees only decrypted bytes, so
                        // a peer that does not complete the TLS handshake never reaches the frame reader.
                        if let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tlsContext))
                        }
                        try channel.pipeline.syncOperations.addHandlers([
                            FrameReader(maxBodyLength: maxBody, timeout: frameTimeout),
                            ConnectionHandler(
                                core: core, readPool: readPool, connectionID: id, clientAuth: clientAuth, logger: logger
                            ),
                        ])
                    }
                }
                .bind(host: self.config.server.listenHost, port: self.config.server.listenPort)
                .get()
        } catch {
            try? await metricsChannel?.close()
            await backend.closeAll()
            throw error
        }
        if let address = channel.localAddress, let port = address.port {
            let host =
                address.ipAddress.map { address.protocol == .inet6 ? "[\($0)]" : $0 } ?? self.config.server.listenHost
            core.listenAddress = "\(host):\(port)"
        }
        self.state.withLock { $0 = .running(channel: channel, metricsChannel: metricsChannel, core: core) }
        let maintenance = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(2))
                for gate in core.topics.gates { gate.snapshotIfDue() }
                core.limits.persist()
                core.limits.flushAudit(to: core.audit, policyVersion: core.policy.policyVersion)
            }
        }
        var tasks = [maintenance]
        let group = self.group
        if let tick = self.quietTrimTick, AllocatorTuning.isGlibcMalloc {
            // Made here, so that a broker that never trims does not report the counter.
            let trims = Counter(label: BrokerMetrics.memoryTrims, factory: self.metricsFactory)
            tasks.append(Task {
                var schedule = QuietTrim()
                while !Task.isCancelled {
                    try? await Task.sleep(for: tick)
                    guard schedule.tick(activity: core.topics.appendActivity) == .trim else { continue }
                    await AllocatorTuning.trimQuietHeap(
                        eventLoops: group, readPool: readPool, readThreads: Self.readThreads
                    )
                    trims.increment()
                }
            })
        }
        self.maintenance.withLock { $0 = tasks }
        self.logger.notice("brokerd listening", metadata: [
            "brokerd.address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
            "brokerd.metrics_address": "\(metricsChannel.map { $0.localAddress.map { "\($0)" } ?? "?" } ?? "off")",
            "brokerd.policy_version": "\(policy.policyVersion)",
            "brokerd.tls": "\(clientAuth.map { "on, client_auth=\($0.rawValue)" } ?? "off")",
        ])
    }

    /// Graceful stop: stop accepting, finish in-flight appends, close connections, sync, write clean markers.
    package func shutdown() async {
        let running: (any Channel, (any Channel)?, BrokerCore)? = self.state.withLock { state in
            defer { state = .stopped }
            guard case .running(let channel, let metricsChannel, let core) = state else { return nil }
            return (channel, metricsChannel, core)
        }
        if let (channel, metricsChannel, core) = running {
            self.logger.info("shutting down: no new connections")
            try? await metricsChannel?.close()
            let maintenance = self.maintenance.withLock { tasks in
                defer { tasks = [] }
                return tasks
            }
            for task in maintenance { task.cancel() }
            for task in maintenance { await task.value }  // never mid-snapshot or mid-audit-flush while the logs close
            try? await channel.close()
            await core.drainAppends(timeout: .seconds(10))
            core.limits.persist()
            core.limits.flushAudit(to: core.audit, policyVersion: core.policy.policyVersion, force: true)
            await core.appender(for: ReservedTopic.audit)?.flushed()
            for gate in core.topics.gates {
                do { try await gate.close() } catch { self.logger.error("dedupe snapshot not written at shutdown", metadata: ["brokerd.error": "\(error)"]) }
            }
            await core.backend.closeAll()
            self.logger.info("logs closed cleanly")
        }
        try? await self.group.shutdownGracefully()
        try? await self.readPool.shutdownGracefully()
    }

    /// Re-reads the config and applies it (what SIGHUP does); `requestedBy` names who asked, for the audit ledger.
    package func reload(requestedBy: String) async -> Result<ReloadOK, ReloadRejected> {
        let core: BrokerCore? = self.state.withLock { state in
            if case .running(_, _, let core) = state { return core }
            return nil
        }
        guard let core else { return .failure(ReloadRejected(message: "the broker is not running")) }
        return await core.reload(requestedBy: requestedBy)
    }

    /// `Service` entry point: start, wait for graceful shutdown (SIGTERM/SIGINT), then stop.
    package func run() async throws {
        try await self.start()
        try? await gracefulShutdown()
        await self.shutdown()
    }
}

/// The metrics endpoint could not be bound (the broker does not start: a monitored broker without its metrics
/// would look healthy while blind).
package struct MetricsListenError: Error, CustomStringConvertible {
    /// What failed and what to do.
    package var message: String
    /// The message.
    package var description: String { self.message }
}

/// Creates a directory and its parents if missing.
func makeDirectory(_ path: String) throws {
    var current = path.hasPrefix("/") ? "" : "."
    for component in path.split(separator: "/") {
        current += "/" + component
        if mkdir(current, 0o755) != 0 && errno != EEXIST {
            throw IOError(errnoCode: errno, reason: "mkdir \(current)")
        }
    }
}
