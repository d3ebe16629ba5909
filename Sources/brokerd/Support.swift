import ArgumentParser
import BrokerServer
import TopicRouter

/// Splits "HOST:PORT" (IPv6 as "[::1]:7420").
func parseHostPort(_ text: String) -> (String, Int)? {
    guard let colon = text.lastIndex(of: ":") else { return nil }
    var host = String(text[..<colon])
    guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port), !host.isEmpty else { return nil }
    if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    return (host, port)
}

func readConfigFile(_ path: String) throws -> String? {
    try BrokerServer.readTextFile(path)
}

extension Brokerd {
    /// Applies --metrics-listen and --no-metrics to the config's `[metrics]` table.
    func applyMetricsOptions(to config: inout BrokerConfig) throws {
        if self.noMetrics {
            guard self.metricsListen == nil else {
                throw ValidationError("--metrics-listen and --no-metrics contradict each other; give one of them")
            }
            config.metrics.enabled = false
        }
        if let listen = self.metricsListen {
            guard let (host, port) = parseHostPort(listen) else {
                throw ValidationError("--metrics-listen wants HOST:PORT (port 0 picks a free one), got '\(listen)'")
            }
            config.metrics.enabled = true
            config.metrics.listenHost = host
            config.metrics.listenPort = port
        }
        let metrics = config.metrics
        if metrics.enabled, metrics.listenPort != 0, metrics.listenPort == config.server.listenPort,
            metrics.listenHost == config.server.listenHost
        {
            throw ValidationError(
                "the metrics endpoint \(config.metrics.listenHost):\(config.metrics.listenPort) is also the broker's "
                    + "listen address; give --metrics-listen another port"
            )
        }
    }
}
