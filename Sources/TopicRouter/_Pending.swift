// TEMPORARY: removed when the router branch merges.
extension Credentials {
    package static func renderCredentials(_ entries: [(clientID: String, token: String)]) -> String { fatalError() }
    package static func parseCredentials(_ text: String) throws(ConfigError) -> [String: String] { fatalError() }
}
extension BrokerConfig {
    package func withTokenHashes(_ hashes: [String: String]) -> BrokerConfig { fatalError() }
}
