import BrokerClient
import BrokerServer
import Foundation
import Locking
import Logging
import TopicRouter
import WireProtocol

/// The broker under measurement: where it listens, who to be, and how to read its CPU and memory.
final class BenchTarget: Sendable {
    enum Kind: Sendable {
        case embedded(BrokerServer)
        /// A brokerd child process started with the config file at `configPath`; it can be restarted.
        case spawned(configPath: String)
        case remote
    }

    /// What changes when a spawned broker restarts.
    private struct Live: Sendable {
        var port: Int
        var brokerPid: Int32?
        var process: Process?
        var startResources: ResourceSample?
        /// The spawned brokerd's metrics port.
        var metricsPort: Int?
        /// `markBrokerStages()`'s read: `brokerStages()` counts from there.
        var stagesBase: BrokerStages?
        /// When the broker was seen listening (`monotonicNanos()`): `brokerStages()` counts from there before any
        /// `markBrokerStages()`.
        var startedAt = monotonicNanos()
    }

    let host: String
    let clientID: String
    let token: String
    /// The plain bench topics (PREFIX.0, PREFIX.1, ...).
    let topics: [String]
    /// policy-overhead: topics with dedupe, limiters and consent scopes (PREFIX-policy.0, ...); else empty.
    let policyTopics: [String]
    let kind: Kind
    let dataDir: String?
    private let removeDataDir: Bool
    private let live: Locked<Live>

    var port: Int { self.live.withLock { $0.port } }
    /// The broker's process id when it runs on its own (spawned, or --broker-pid).
    var brokerPid: Int32? { self.live.withLock { $0.brokerPid } }

    private init(
        host: String, port: Int, clientID: String, token: String, topics: [String], policyTopics: [String],
        kind: Kind, process: Process?, brokerPid: Int32?, dataDir: String?, removeDataDir: Bool, metricsPort: Int? = nil
    ) {
        self.host = host
        self.clientID = clientID
        self.token = token
        self.topics = topics
        self.policyTopics = policyTopics
        self.kind = kind
        self.dataDir = dataDir
        self.removeDataDir = removeDataDir
        let startResources = ResourceSample.read(pid: brokerPid ?? getpid())
        self.live = Locked(
            Live(port: port, brokerPid: brokerPid, process: process, startResources: startResources, metricsPort: metricsPort)
        )
    }

    static let benchClientID = "brokerbench"

    static func start(
        _ options: TargetOptions, parameters: BenchParameters, policyOverhead: Bool = false
    ) async throws -> BenchTarget {
        let topics = (0..<parameters.topics).map { "\(options.topicPrefix).\($0)" }
        let policyTopics = policyOverhead ? (0..<parameters.topics).map { "\(options.topicPrefix)-policy.\($0)" } : []
        if let server = options.server {
            guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]),
                let clientID = options.clientID, let token = options.token
            else {
                throw BenchError("--server wants HOST:PORT with --client-id and --token, got '\(server)'")
            }
            return BenchTarget(
                host: String(server[..<colon]), port: port, clientID: clientID, token: token, topics: topics,
                policyTopics: policyTopics, kind: .remote, process: nil, brokerPid: options.brokerPid, dataDir: nil,
                removeDataDir: false
            )
        }
        let dataDir = options.dataDir ?? NSTemporaryDirectory() + "brokerbench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let token = Credentials.generateToken()
        let config = Self.config(
            topics: topics, policyTopics: policyTopics, parameters: parameters, dataDir: dataDir,
            tokenHash: Credentials.hash(token: token)
        )
        if options.embedded {
            var logger = Logger(label: "brokerd")
            logger.logLevel = .warning
            let server = BrokerServer(config: config, logger: logger)
            try await server.start()
            guard let port = server.localAddress?.port else { throw BenchError("embedded broker has no port") }
            return BenchTarget(
                host: "127.0.0.1", port: port, clientID: Self.benchClientID, token: token, topics: topics,
                policyTopics: policyTopics, kind: .embedded(server), process: nil, brokerPid: nil, dataDir: dataDir,
                removeDataDir: options.dataDir == nil
            )
        }
        let configPath = dataDir + "/brokerbench.toml"
        try Self.toml(config).write(toFile: configPath, atomically: true, encoding: .utf8)
        let launched = try await Self.launchBrokerd(configPath: configPath, dataDir: dataDir)
        return BenchTarget(
            host: "127.0.0.1", port: launched.port, clientID: Self.benchClientID, token: token, topics: topics,
            policyTopics: policyTopics, kind: .spawned(configPath: configPath), process: launched.process,
            brokerPid: launched.process.processIdentifier, dataDir: dataDir, removeDataDir: options.dataDir == nil,
            metricsPort: launched.metricsPort
        )
    }

    /// The fsync setting `--fsync` names.
    static func fsyncSetting(_ text: String) -> FsyncSetting {
        switch text {
        case "never": .never
        case let text where text.hasPrefix("interval:"): .interval(milliseconds: Int(text.dropFirst(9)) ?? 50)
        default: .always
        }
    }

    /// One role that may publish and subscribe everything, one principal, and the bench topics.
    ///
    /// With `policyTopics` (policy-overhead) the plain topics are lean: no consent scopes and no consent_scope
    /// header required, so records without one pass no consent check. The policy topics then require
    /// consent_scope and recipient, allow two scopes, remember dedupe keys for 10 s (up to 10 M keys, so a fast
    /// run does not evict and log a warning per record), and two publish limiters apply to them only, with limits
    /// far above any load: a token bucket per consent scope, and a sliding window per recipient (see
    /// `policyLimiters`).
    static func config(
        topics: [String], policyTopics: [String] = [], parameters: BenchParameters, dataDir: String, tokenHash: String
    ) -> BrokerConfig {
        var server = ServerSettings()
        server.listenHost = "127.0.0.1"
        server.listenPort = 0
        server.dataDir = dataDir
        server.maxConnections = max(server.maxConnections, parameters.connections + 100)
        func topic(_ name: String) -> TopicPolicy {
            var topic = TopicPolicy(name: name, sensitivity: "non_phi")
            topic.fsync = Self.fsyncSetting(parameters.fsync)
            topic.compression = parameters.compression == "none" ? .none : .lz4
            return topic
        }
        var policies = topics.map { name in
            var plain = topic(name)
            if !policyTopics.isEmpty {
                plain.consentScopes = []
                plain.requiredHeaders = [RecordHeaderName.eventType, RecordHeaderName.sourceSystem]
            }
            return plain
        }
        policies += policyTopics.map { name in
            var policy = topic(name)
            policy.consentScopes = PolicyLoad.allowedScopes
            policy.requiredHeaders = [
                RecordHeaderName.eventType, RecordHeaderName.sourceSystem, RecordHeaderName.consentScope,
                RecordHeaderName.recipient,
            ]
            policy.dedupeWindowMillis = 10_000
            policy.dedupeMaxKeys = 10_000_000
            return policy
        }
        return BrokerConfig(
            server: server,
            classes: ["non_phi", "deidentified", "pseudonymous", "phi"],
            topics: policies,
            // policy-overhead reads the limiters' state afterwards (LIMITS needs admin) to show they applied.
            roles: [
                RolePolicy(
                    name: "bench", clearance: "phi", publish: ["*"], subscribe: ["*"],
                    capabilities: policyTopics.isEmpty ? [] : [.admin]
                )
            ],
            principals: [PrincipalEntry(clientID: Self.benchClientID, role: "bench", tokenHash: tokenHash)],
            limiters: policyTopics.isEmpty ? [] : Self.policyLimiters(topics: policyTopics)
        )
    }

    /// Two publish limiters on `topics` that never trigger under bench load: a token bucket per consent scope at
    /// the largest allowed rate and burst (10⁹), and an exact window of 4096 records per recipient per 10 ms
    /// (409,600 records/s per recipient; PolicyLoad spreads each producer worker's records over 64 recipients).
    static func policyLimiters(topics: [String]) -> [LimiterDeclaration] {
        var scope = LimiterDeclaration(
            name: "bench_scope_bucket", direction: .publish, key: .consentScope,
            limit: .tokenBucket(ratePerSecond: LimiterRules.maxRate, burst: LimiterRules.maxBurst), action: .reject
        )
        scope.topics = topics
        scope.consentScopes = [PolicyLoad.recordScope]
        var recipient = LimiterDeclaration(
            name: "bench_recipient_window", direction: .publish, key: .recipient,
            limit: .window(cap: LimiterRules.maxCap, windowMillis: 10), action: .reject
        )
        recipient.keyHeader = RecordHeaderName.recipient
        recipient.topics = topics
        return [scope, recipient]
    }

    /// Starts `brokerd --config` beside this binary; returns once it logs that it listens, with the seconds from
    /// just before the launch to the moment that line arrived.
    private static func launchBrokerd(
        configPath: String, dataDir: String
    ) async throws -> (process: Process, port: Int, metricsPort: Int?, secondsToListen: Double, output: OutputCollector) {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("brokerd").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("--spawn needs brokerd beside brokerbench (\(binary)); build it first")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = [
            "--config", configPath, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
            "--log-level", "notice",
        ]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        let output = OutputCollector(marker: "brokerd.address=")
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        let launchedAt = monotonicNanos()
        try process.run()
        let deadline = ContinuousClock.now.advanced(by: .seconds(600))
        while ContinuousClock.now < deadline, process.isRunning {
            if let seenAt = output.markerSeenAt {
                let text = output.text
                if let range = text.range(of: #"brokerd\.address=\S*:(\d+)"#, options: .regularExpression),
                    let last = text[range].split(separator: ":").last, let port = Int(last)
                {
                    let metricsPort = text.range(of: #"brokerd\.metrics_address=\S*:(\d+)"#, options: .regularExpression)
                        .flatMap { text[$0].split(separator: ":").last }.flatMap { Int($0) }
                    return (process, port, metricsPort, Double(seenAt - launchedAt) / 1e9, output)
                }
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        process.terminate()
        throw BenchError("brokerd did not start listening; its output:\n\(output.text)")
    }

    /// How a spawned broker is stopped before a restart.
    enum StopSignal: Sendable {
        /// SIGTERM: graceful, clean-shutdown markers written.
        case terminate
        /// SIGKILL: a crash, as far as the logs are concerned.
        case kill
    }

    /// Stops the spawned broker with `signal`, waits for it to exit, and starts it again on the same config and
    /// data directory. Returns the seconds from launch to its "listening" line and its output so far.
    func restart(after signal: StopSignal) async throws -> (secondsToListen: Double, output: String) {
        guard case .spawned(let configPath) = self.kind, let dataDir = self.dataDir else {
            throw BenchError("only a --spawn broker can be restarted")
        }
        if let process = self.live.withLock({ $0.process }) {
            try await Self.stopProcess(process, signal: signal)
        }
        let launched = try await Self.launchBrokerd(configPath: configPath, dataDir: dataDir)
        let pid = launched.process.processIdentifier
        self.live.withLock {
            $0.process = launched.process
            $0.port = launched.port
            $0.metricsPort = launched.metricsPort
            $0.stagesBase = nil
            $0.startedAt = monotonicNanos()
            $0.brokerPid = pid
            $0.startResources = ResourceSample.read(pid: pid)
        }
        return (launched.secondsToListen, launched.output.text)
    }

    /// Sends `signal` and waits (up to 30 s, then SIGKILL) for the process to exit.
    private static func stopProcess(_ process: Process, signal: StopSignal) async throws {
        guard process.isRunning else { return }
        switch signal {
        case .terminate: process.terminate()
        case .kill: kill(process.processIdentifier, SIGKILL)
        }
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            while process.isRunning { try await Task.sleep(for: .milliseconds(5)) }
        }
    }

    /// The config in brokerd's TOML format.
    static func toml(_ config: BrokerConfig) -> String {
        func quoted(_ items: [String]) -> String { "[" + items.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
        var text = "classes = \(quoted(config.classes))\n\n[server]\n"
        text += "listen = \"\(config.server.listenHost):\(config.server.listenPort)\"\n"
        text += "data_dir = \"\(config.server.dataDir)\"\n"
        text += "max_connections = \(config.server.maxConnections)\n"
        for topic in config.topics {
            text += "\n[[topics]]\nname = \"\(topic.name)\"\nclass = \"\(topic.sensitivity)\"\n"
            switch topic.fsync {
            case .always: text += "fsync = \"always\"\n"
            case .never: text += "fsync = \"never\"\n"
            case .interval(let ms): text += "fsync = \"interval:\(ms)\"\n"
            }
            text += "compression = \"\(topic.compression.rawValue)\"\n"
            if topic.consentScopes != PolicyDefaults.consentScopes {
                text += "consent_scopes = \(quoted(topic.consentScopes))\n"
            }
            if topic.requiredHeaders != PolicyDefaults.requiredHeaders {
                text += "required_headers = \(quoted(topic.requiredHeaders))\n"
            }
            text += "dedupe_window_ms = \(topic.dedupeWindowMillis)\ndedupe_max_keys = \(topic.dedupeMaxKeys)\n"
        }
        for limiter in config.limiters {
            text += "\n[[limiters]]\nname = \"\(limiter.name)\"\napplies_to = \"\(limiter.direction.rawValue)\"\n"
            text += "key = \"\(limiter.key.rawValue)\"\n"
            if limiter.key == .recipient { text += "key_header = \"\(limiter.keyHeader)\"\n" }
            switch limiter.limit {
            case .tokenBucket(let rate, let burst): text += "rate = \(rate)\nburst = \(burst)\n"
            case .window(let cap, let windowMillis): text += "cap = \(cap)\nwindow_ms = \(windowMillis)\n"
            }
            if let topics = limiter.topics { text += "topics = \(quoted(topics))\n" }
            if let scopes = limiter.consentScopes { text += "consent_scopes = \(quoted(scopes))\n" }
            text += "action = \"\(limiter.action.rawValue)\"\n"
        }
        for role in config.roles {
            text += "\n[[roles]]\nname = \"\(role.name)\"\nclearance = \"\(role.clearance)\"\n"
            text += "publish = \(quoted(role.publish))\nsubscribe = \(quoted(role.subscribe))\n"
            if !role.capabilities.isEmpty { text += "capabilities = \(quoted(role.capabilities.map(\.rawValue)))\n" }
        }
        for principal in config.principals {
            text += "\n[[principals]]\nclient_id = \"\(principal.clientID)\"\nrole = \"\(principal.role)\"\n"
            if let hash = principal.tokenHash { text += "token_hash = \"\(hash)\"\n" }
        }
        return text
    }

    func connect() async throws -> BrokerClient {
        try await BrokerClient.connect(host: self.host, port: self.port, clientID: self.clientID, token: self.token)
    }

    /// CPU time and memory the broker used since start (the whole process when embedded: client load included).
    /// After a restart: since the restart.
    func resources() -> BrokerResources? {
        let (pid, start) = self.live.withLock { ($0.brokerPid, $0.startResources) }
        guard let end = ResourceSample.read(pid: pid ?? getpid()) else { return nil }
        return BrokerResources(
            separateProcess: pid != nil,
            cpuSeconds: end.cpuSeconds - (start?.cpuSeconds ?? 0),
            rssBytes: end.rssBytes,
            peakRssBytes: end.peakRssBytes
        )
    }

    /// The spawned broker's sampled publish and delivery stages (`BrokerStages`) since it started, or since the last
    /// `markBrokerStages()`; nil for an embedded or remote broker, or when its metrics cannot be read.
    func brokerStages() -> BrokerStages? {
        self.readBrokerStages().map { $0.now.since($0.base, startedAt: $0.startedAt) }
    }

    /// Makes `brokerStages()` count from now; returns the stages until now (as `brokerStages()` would have).
    @discardableResult
    func markBrokerStages() -> BrokerStages? {
        guard let read = self.readBrokerStages() else { return nil }
        self.live.withLock { $0.stagesBase = read.now }
        return read.now.since(read.base, startedAt: read.startedAt)
    }

    /// The values of unlabelled gauges or counters `metrics` of a spawned broker now (from its `/metrics`), by name;
    /// empty when it is not reachable, without those it does not report.
    func brokerValues(_ metrics: [String]) -> [String: Double] {
        guard let port = self.live.withLock({ $0.metricsPort }), let exposition = BrokerStages.exposition(port: port)
        else { return [:] }
        var values: [String: Double] = [:]
        for metric in metrics { values[metric] = BrokerStages.value(of: metric, in: exposition) }
        return values
    }

    /// The stages read from the broker now, and the read they count from (nil: its start, `startedAt`).
    private func readBrokerStages() -> (now: BrokerStages, base: BrokerStages?, startedAt: UInt64)? {
        let (port, base, startedAt) = self.live.withLock { ($0.metricsPort, $0.stagesBase, $0.startedAt) }
        guard let port, let now = BrokerStages.scrape(port: port) else { return nil }
        return (now, base, startedAt)
    }

    func stop() async {
        switch self.kind {
        case .embedded(let server):
            await server.shutdown()
        case .spawned:
            if let process = self.live.withLock({ $0.process }) {
                try? await Self.stopProcess(process, signal: .terminate)  // SIGTERM: graceful stop
            }
        case .remote:
            break
        }
        if self.removeDataDir, let dataDir = self.dataDir { try? FileManager.default.removeItem(atPath: dataDir) }
    }
}

/// CPU and memory of one process, from /proc.
struct ResourceSample {
    var cpuSeconds: Double
    var rssBytes: Int
    var peakRssBytes: Int

    static func read(pid: Int32) -> ResourceSample? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after "(comm)": state is field 3, utime 14, stime 15.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 13, let utime = Double(fields[11]), let stime = Double(fields[12]) else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        func kilobytes(_ key: String) -> Int {
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key) }) else { return 0 }
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        return ResourceSample(cpuSeconds: (utime + stime) / ticks, rssBytes: kilobytes("VmRSS:"), peakRssBytes: kilobytes("VmHWM:"))
    }
}

/// Collects a child's output from its pipe's reader thread, and notes when `marker` first appeared in it.
final class OutputCollector: Sendable {
    private struct State {
        var text = ""
        var markerSeenAt: UInt64?
    }
    private let storage = Locked(State())
    private let marker: String

    init(marker: String = "") { self.marker = marker }

    var text: String { self.storage.withLock { $0.text } }
    /// `monotonicNanos()` when the data containing `marker` arrived, or nil so far.
    var markerSeenAt: UInt64? { self.storage.withLock { $0.markerSeenAt } }

    func append(_ data: Data) {
        let now = monotonicNanos()
        self.storage.withLock { state in
            state.text += String(decoding: data, as: UTF8.self)
            if state.markerSeenAt == nil, !self.marker.isEmpty, state.text.contains(self.marker) {
                state.markerSeenAt = now
            }
        }
    }
}
