extension ConfigValidator {
    /// The `[metrics]` table: a usable address, and not the broker's own listen address (both would fail to bind).
    /// A disabled endpoint is not checked: its address is never used.
    static func validateMetrics(
        _ metrics: MetricsSettings,
        server: ServerSettings,
        locator: ConfigLineLocator?
    ) throws(ConfigError) {
        guard metrics.enabled else { return }
        let line = locator?.line(table: "metrics", key: "listen")
        guard !metrics.listenHost.isEmpty, (0...65535).contains(metrics.listenPort) else {
            throw ConfigError(
                "[metrics] listen: port \(metrics.listenPort) on '\(metrics.listenHost)' is not usable; "
                    + "give HOST:PORT with a port in 0…65535, or set enabled = false",
                line: line
            )
        }
        if metrics.listenPort != 0, metrics.listenPort == server.listenPort, metrics.listenHost == server.listenHost {
            throw ConfigError(
                "[metrics] listen \(metrics.listenHost):\(metrics.listenPort) is also [server] listen; the metrics "
                    + "endpoint needs a port of its own (the default is 9420)",
                line: line
            )
        }
    }
}
