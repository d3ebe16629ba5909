import BrokerClient
import BrokerServer
import Foundation
import Logging
import Synchronization
import TopicRouter

/// The broker under measurement: where it listens, who to be, and how to read its CPU and memory.
final class BenchTarget: Sendable {
    enum Kind: Sendable {
        case embedded(BrokerServer)
        case spawned(Process)
        case remote
    }

    let host: String
    let port: Int
    let clientID: String
    let token: String
    let topics: [String]
    let kind: Kind
    /// The broker's process id when it runs on its own (spawned, or --broker-pid).
    let brokerPid: Int32?
    let dataDir: String?
    private let removeDataDir: Bool
    private let startResources: ResourceSample?

    private init(
        host: String, port: Int, clientID: String, token: String, topics: [String], kind: Kind, brokerPid: Int32?,
        dataDir: String?, removeDataDir: Bool
    ) {
        self.host = host
        self.port = port
        self.clientID = clientID
        self.token = token
        self.topics = topics
        self.kind = kind
        self.brokerPid = brokerPid
        self.dataDir = dataDir
        self.removeDataDir = removeDataDir
        self.startResources = ResourceSample.read(pid: brokerPid ?? getpid())
    }

    static let benchClientID = "brokerbench"

    static func start(_ options: TargetOptions, parameters: BenchParameters) async throws -> BenchTarget {
        let topics = (0..<parameters.topics).map { "\(options.topicPrefix).\($0)" }
        if let server = options.server {
            guard let colon = server.lastIndex(of: ":"), let port = Int(server[server.index(after: colon)...]) else {
                throw BenchError("--server wants HOST:PORT, got '\(server)'")
            }
            return BenchTarget(
                host: String(server[..<colon]), port: port, clientID: options.clientID!, token: options.token!,
                topics: topics, kind: .remote, brokerPid: options.brokerPid, dataDir: nil, removeDataDir: false
            )
        }
        let dataDir = options.dataDir ?? NSTemporaryDirectory() + "brokerbench-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let token = Credentials.generateToken()
        let config = Self.config(topics: topics, parameters: parameters, dataDir: dataDir, tokenHash: Credentials.hash(token: token))
        if options.embedded {
            var logger = Logger(label: "brokerd")
            logger.logLevel = .warning
            let server = BrokerServer(config: config, logger: logger)
            try await server.start()
            guard let port = server.localAddress?.port else { throw BenchError("embedded broker has no port") }
            return BenchTarget(
                host: "127.0.0.1", port: port, clientID: Self.benchClientID, token: token, topics: topics,
                kind: .embedded(server), brokerPid: nil, dataDir: dataDir, removeDataDir: options.dataDir == nil
            )
        }
        let (process, port) = try await Self.spawnBrokerd(config: config, dataDir: dataDir)
        return BenchTarget(
            host: "127.0.0.1", port: port, clientID: Self.benchClientID, token: token, topics: topics,
            kind: .spawned(process), brokerPid: process.processIdentifier, dataDir: dataDir,
            removeDataDir: options.dataDir == nil
        )
    }

    /// One role that may publish and subscribe everything, one principal, and the bench topics.
    static func config(topics: [String], parameters: BenchParameters, dataDir: String, tokenHash: String) -> BrokerConfig {
        var server = ServerSettings()
        server.listenHost = "127.0.0.1"
        server.listenPort = 0
        server.dataDir = dataDir
        server.maxConnections = max(server.maxConnections, parameters.connections + 100)
        let fsync: FsyncSetting =
            switch parameters.fsync {
            case "never": .never
            case let text where text.hasPrefix("interval:"): .interval(milliseconds: Int(text.dropFirst(9)) ?? 50)
            default: .always
            }
        let policies = topics.map { name in
            var topic = TopicPolicy(name: name, sensitivity: "non_phi")
            topic.fsync = fsync
            topic.compression = parameters.compression == "none" ? .none : .lz4
            return topic
        }
        return BrokerConfig(
            server: server,
            classes: ["non_phi", "deidentified", "pseudonymous", "phi"],
            topics: policies,
            roles: [RolePolicy(name: "bench", clearance: "phi", publish: ["*"], subscribe: ["*"])],
            principals: [PrincipalEntry(clientID: Self.benchClientID, role: "bench", tokenHash: tokenHash)]
        )
    }

    /// Writes the config as TOML and starts `brokerd --config` beside this binary; returns once it listens.
    private static func spawnBrokerd(config: BrokerConfig, dataDir: String) async throws -> (Process, Int) {
        let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("brokerd").path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw BenchError("--spawn needs brokerd beside brokerbench (\(binary)); build it first")
        }
        let configPath = dataDir + "/brokerbench.toml"
        try Self.toml(config).write(toFile: configPath, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--config", configPath, "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--log-level", "notice"]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        let output = OutputCollector()
        pipe.fileHandleForReading.readabilityHandler = { output.append($0.availableData) }
        try process.run()
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while ContinuousClock.now < deadline, process.isRunning {
            let text = output.text
            if let range = text.range(of: #"brokerd\.address=\S*:(\d+)"#, options: .regularExpression),
                let port = Int(text[range].split(separator: ":").last!)
            {
                return (process, port)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.terminate()
        throw BenchError("brokerd did not start listening; its output:\n\(output.text)")
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
        }
        for role in config.roles {
            text += "\n[[roles]]\nname = \"\(role.name)\"\nclearance = \"\(role.clearance)\"\n"
            text += "publish = \(quoted(role.publish))\nsubscribe = \(quoted(role.subscribe))\n"
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
    func resources() -> BrokerResources? {
        guard let end = ResourceSample.read(pid: self.brokerPid ?? getpid()) else { return nil }
        let start = self.startResources
        return BrokerResources(
            separateProcess: self.brokerPid != nil,
            cpuSeconds: end.cpuSeconds - (start?.cpuSeconds ?? 0),
            rssBytes: end.rssBytes,
            peakRssBytes: end.peakRssBytes
        )
    }

    func stop() async {
        switch self.kind {
        case .embedded(let server):
            await server.shutdown()
        case .spawned(let process):
            process.terminate()  // SIGTERM: graceful stop
            let deadline = ContinuousClock.now.advanced(by: .seconds(30))
            while process.isRunning, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
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

/// Collects a child's output from its pipe's reader thread.
final class OutputCollector: Sendable {
    private let storage = Mutex("")
    var text: String { self.storage.withLock { $0 } }
    func append(_ data: Data) { self.storage.withLock { $0 += String(decoding: data, as: UTF8.self) } }
}
