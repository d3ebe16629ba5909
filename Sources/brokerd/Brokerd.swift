import ArgumentParser
#if canImport(Glibc)
import Glibc
#endif
import BrokerServer
import Logging
import Metrics
import Prometheus
import ServiceLifecycle
import UnixSignals
import TopicRouter

/// brokerd: the broker daemon. A thin shell over `BrokerServer`.
@main
struct Brokerd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brokerd",
        abstract: "A durable message broker for regulated healthcare event pipelines.",
        discussion: """
            With no arguments brokerd runs the embedded default config (the closed-loop healthcare scenario) on \
            127.0.0.1:7420 with data in ./brokerd-data, and generates tokens for its principals into \
            <data-dir>/credentials.toml (mode 0600) on first start. `brokerd check-config FILE` validates a \
            config without starting. Shell completions: brokerd --generate-completion-script bash|zsh|fish.
            """,
        version: BrokerVersion.current,
        subcommands: [CheckConfig.self]
    )

    @Option(name: .long, help: "TOML config file (default: the embedded config).")
    var config: String?

    @Option(name: .long, help: "Data directory (overrides the config's server.data_dir).")
    var dataDir: String?

    @Option(name: .long, help: "HOST:PORT to listen on (overrides the config's server.listen).")
    var listen: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "HOST:PORT of the Prometheus metrics endpoint, 0 for a free port (overrides [metrics] listen; "
                + "default 127.0.0.1:9420)."
        )
    )
    var metricsListen: String?

    @Flag(name: .long, help: "Serve no metrics endpoint (overrides [metrics] enabled).")
    var noMetrics = false

    @Flag(name: .long, help: "Print the embedded default config and exit.")
    var printDefaultConfig = false

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(
        name: .long,
        help: "Listen without TLS on a non-loopback address (tokens and records then cross the network in clear)."
    )
    var allowPlaintext = false

    /// Reads and validates the config (the file, or the embedded default), applies --data-dir and --listen, and
    /// gives principals without a token hash their generated token.
    func loadConfig(logger: Logger) throws -> (config: BrokerConfig, generatedFile: String?) {
        let text: String
        if let path = self.config {
            guard let contents = try readConfigFile(path) else {
                throw ValidationError("config file \(path) does not exist")
            }
            text = contents
        } else {
            text = ConfigLoader.embeddedDefault
        }
        var config: BrokerConfig
        do {
            config = try ConfigLoader.parse(text)
        } catch {
            throw ValidationError("config \(self.config ?? "(embedded)"): \(error)")
        }
        if let dataDir = self.dataDir { config.server.dataDir = dataDir }
        if let listen = self.listen {
            guard let (host, port) = parseHostPort(listen) else {
                throw ValidationError("--listen wants HOST:PORT, got '\(listen)'")
            }
            config.server.listenHost = host
            config.server.listenPort = port
        }
        try self.applyMetricsOptions(to: &config)
        // brokerd refuses these subscriptions at run time; `check-config` reports them, here they are only logged.
        for exposure in ConfigLoader.exposures(config) {
            logger.warning("config: \(exposure.message)")
        }
        return try CredentialBootstrap.fillMissingTokens(config, logger: logger)
    }

    func run() async throws {
        if self.printDefaultConfig {
            print(ConfigLoader.embeddedDefault, terminator: "")
            return
        }
        guard let level = Logger.Level(rawValue: self.logLevel) else {
            throw ValidationError("unknown log level '\(self.logLevel)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "brokerd")
        let allocator = AllocatorTuning.configure()
        logger.debug("allocator: \(allocator)")

        let (filled, generated) = try self.loadConfig(logger: logger)
        switch PlaintextGuard.check(
            host: filled.server.listenHost,
            tls: filled.server.tls != nil,
            allowPlaintext: self.allowPlaintext
        ) {
        case .allowed:
            break
        case .allowedWithWarning(let warning):
            logger.warning("\(warning)")
        case .refused(let message):
            throw ValidationError(message)
        }
        if let generated {
            print("brokerd: generated tokens for the default principals in \(generated) (mode 0600)")
        } else if self.config == nil {
            print("brokerd: principals' tokens are in \(CredentialBootstrap.credentialsPath(dataDir: filled.server.dataDir))")
        }
        fflush(nil)  // say it now, also when stdout is a pipe or a file (systemd, tests): nil flushes every stream
        // A reload re-reads --config with the same command-line overrides; the embedded default has nothing to re-read.
        let reloadSource: (@Sendable () throws -> BrokerConfig)?
        if self.config != nil {
            let command = self
            reloadSource = { try command.loadConfig(logger: logger).config }
        } else {
            reloadSource = nil
        }
        // Without metrics the default factory (swift-metrics' no-op until bootstrapped) and no endpoint.
        var metricsFactory: any MetricsFactory = MetricsSystem.factory
        var exposition: MetricsExposition?
        if filled.metrics.enabled {
            // The one place the Prometheus factory is bootstrapped; the libraries only see swift-metrics.
            let registry = PrometheusCollectorRegistry()
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.durationHistogramBuckets = BrokerMetrics.durationBuckets
            factory.valueHistogramBuckets = BrokerMetrics.valueBuckets
            MetricsSystem.bootstrap(factory)
            metricsFactory = factory
            exposition = { registry.emit(into: &$0) }
        }
        let server = BrokerServer(
            config: filled, logger: logger, reloadSource: reloadSource, metrics: metricsFactory,
            metricsExposition: exposition,
            // Memory kept for reuse under load goes back to the system when the broker is quiet; left to glibc with it.
            quietTrimTick: allocator == .tuned ? .seconds(1) : nil
        )
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        Task {
            for await _ in hangups {
                switch await server.reload(requestedBy: "brokerd (SIGHUP)") {
                case .success(let ok): logger.notice("SIGHUP: config reloaded", metadata: ["brokerd.detail": "\(ok.message)"])
                case .failure(let rejected): logger.error("SIGHUP: config reload rejected", metadata: ["brokerd.reason": "\(rejected.message)"])
                }
            }
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: logger
            )
        )
        try await group.run()
    }
}
