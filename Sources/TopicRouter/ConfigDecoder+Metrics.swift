import TOMLKit

extension ConfigDecoder {
    /// The keys of the `[metrics]` table.
    static let metricsKeys = ["enabled", "listen"]

    /// The `[metrics]` table, or the defaults (on, 127.0.0.1:9420) when it is absent.
    static func decodeMetrics(
        _ root: TOMLTable,
        top: TableReader,
        locator: ConfigLineLocator
    ) throws(ConfigError) -> MetricsSettings {
        var metrics = MetricsSettings()
        guard let value = root["metrics"] else { return metrics }
        guard let table = value.table else {
            throw ConfigError(
                "'metrics' must be a table, got \(TableReader.describe(value)); write a [metrics] section",
                line: top.line("metrics")
            )
        }
        let reader = TableReader(table: table, label: "[metrics]", section: "metrics", index: 0, locator: locator)
        try reader.checkKeys(Self.metricsKeys)
        if let enabled = try reader.bool("enabled") { metrics.enabled = enabled }
        if let (host, port) = try reader.listenAddress(examplePort: 9420) {
            metrics.listenHost = host
            metrics.listenPort = port
        }
        return metrics
    }
}

extension TableReader {
    /// A boolean value, nil when the key is absent.
    func bool(_ key: String) throws(ConfigError) -> Bool? {
        guard let value = self.table[key] else { return nil }
        guard let bool = value.bool else {
            throw ConfigError(
                "'\(key)' in \(self.label) must be a boolean (true or false), got \(Self.describe(value))",
                line: self.line(key)
            )
        }
        return bool
    }
}
