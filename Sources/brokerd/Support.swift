import BrokerServer

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
