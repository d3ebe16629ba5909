import TOMLKit

/// Turns TOML text into a `BrokerConfig`: syntax, unknown keys, value types and value formats.
///
/// Cross-references and ranges (classes declared, names unique, sizes positive, …) are `ConfigValidator`'s job,
/// so that configs built in code get the same checks.
enum ConfigDecoder {
    static let rootKeys = [
        "classes", "purposes", "consent_scopes", "server", "topics", "roles", "principals", "limiters", "metrics",
    ]
    static let serverKeys = [
        "listen", "data_dir", "max_frame_bytes", "max_records_per_publish", "max_connections",
        "handshake_timeout_seconds", "frame_timeout_seconds", "tls",
    ]
    static let tlsKeys = ["cert_file", "key_file", "client_ca_file", "client_auth"]
    static let topicKeys = [
        "name", "class", "fsync", "compression", "segment_bytes", "segment_max_age_ms", "retention_bytes",
        "retention_ms", "purposes", "consent_scopes", "required_headers", "payload", "allowed_fields",
        "forbidden_fields", "dedupe_window_ms", "dedupe_max_keys", "page_cache_bytes",
    ]
    static let roleKeys = ["name", "clearance", "publish", "subscribe", "purposes", "consent_scopes", "capabilities"]
    static let principalKeys = ["client_id", "role", "token_hash", "cert_identity"]

    /// Parses `text`; `locator` supplies lines for errors TOMLKit cannot place. Throws the first problem.
    static func decode(_ text: String, locator: ConfigLineLocator) throws(ConfigError) -> BrokerConfig {
        var problems = ConfigProblems()
        let config = Self.decode(text, locator: locator, problems: &problems)
        if let first = problems.errors.first { throw first }
        return config!  // no problem recorded: decoding produced a config
    }

    /// Parses `text`, recording every problem: the first of each section and `[[…]]` entry. Returns nil when the
    /// text is not a TOML document with a `classes` list; otherwise a config without the entries that failed.
    static func decode(_ text: String, locator: ConfigLineLocator, problems: inout ConfigProblems) -> BrokerConfig? {
        if let nul = text.utf8.firstIndex(of: 0) {
            let line = text.utf8[..<nul].reduce(1) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            problems.add(ConfigError("the config contains a NUL byte; it must be UTF-8 text", line: line))
            return nil
        }
        let root: TOMLTable
        do {
            try TOMLPrecheck.check(text)
            root = try TOMLTable(string: text)
        } catch let error as ConfigError {
            problems.add(error)
            return nil
        } catch let error as TOMLParseError {
            problems.add(ConfigError("invalid TOML: \(error.description)", line: error.source.begin.line))
            return nil
        } catch {
            problems.add(ConfigError("invalid TOML: \(error)"))
            return nil
        }
        let top = TableReader(table: root, label: "the top-level table", section: "", index: 0, locator: locator)
        problems.check { () throws(ConfigError) in try top.checkKeys(Self.rootKeys) }

        var classes: [String]?
        problems.check { () throws(ConfigError) in
            classes = try top.stringArray("classes")
            if classes == nil {
                throw ConfigError(
                    "missing top-level key 'classes'; list the sensitivity classes from least to most sensitive, "
                        + "e.g. classes = [\"non_phi\", \"deidentified\", \"pseudonymous\", \"phi\"]",
                    line: nil
                )
            }
        }
        var server = ServerSettings()
        problems.check { () throws(ConfigError) in
            guard let value = root["server"] else { return }
            guard let table = value.table else {
                throw ConfigError(
                    "'server' must be a table, got \(TableReader.describe(value)); write a [server] section",
                    line: top.line("server")
                )
            }
            server = try Self.decodeServer(
                TableReader(table: table, label: "[server]", section: "server", index: 0, locator: locator)
            )
        }
        let topics = Self.entries("topics", of: top, locator: locator, problems: &problems) {
            (reader) throws(ConfigError) in try Self.decodeTopic(reader)
        }
        let roles = Self.entries("roles", of: top, locator: locator, problems: &problems) {
            (reader) throws(ConfigError) in try Self.decodeRole(reader)
        }
        let principals = Self.entries("principals", of: top, locator: locator, problems: &problems) {
            (reader) throws(ConfigError) in try Self.decodePrincipal(reader)
        }
        let limiters = Self.entries("limiters", of: top, locator: locator, problems: &problems) {
            (reader) throws(ConfigError) in try Self.decodeLimiter(reader)
        }
        var purposes = PolicyDefaults.purposes
        var scopes = PolicyDefaults.consentScopes
        problems.check { () throws(ConfigError) in purposes = try top.stringArray("purposes") ?? purposes }
        problems.check { () throws(ConfigError) in scopes = try top.stringArray("consent_scopes") ?? scopes }
        var metrics = MetricsSettings()
        problems.check { () throws(ConfigError) in
            metrics = try Self.decodeMetrics(root, top: top, locator: locator)
        }
        guard let classes else { return nil }
        return BrokerConfig(
            server: server,
            classes: classes,
            topics: topics,
            roles: roles,
            principals: principals,
            purposes: purposes,
            consentScopes: scopes,
            limiters: limiters,
            metrics: metrics
        )
    }

    /// Each `[[key]]` entry decoded by `decode`; an entry that fails is recorded in `problems` and left out.
    private static func entries<Entry>(
        _ key: String,
        of top: TableReader,
        locator: ConfigLineLocator,
        problems: inout ConfigProblems,
        decode: (TableReader) throws(ConfigError) -> Entry
    ) -> [Entry] {
        var readers: [TableReader] = []
        problems.check { () throws(ConfigError) in readers = try Self.entries(key, of: top, locator: locator) }
        var decoded: [Entry] = []
        let nameKey = key == "principals" ? "client_id" : "name"
        for reader in readers {
            let before = problems.errors.count
            problems.check { () throws(ConfigError) in decoded.append(try decode(reader)) }
            if problems.errors.count > before, let name = reader.table[nameKey]?.string {
                problems.leftOut.insert(name)
            }
        }
        return decoded
    }

    /// Readers for each `[[key]]` entry, labelled `[[key]] '<name>'` (or `#n` when the entry has no name).
    private static func entries(
        _ key: String,
        of top: TableReader,
        locator: ConfigLineLocator
    ) throws(ConfigError) -> [TableReader] {
        guard let value = top.table[key] else { return [] }
        guard let array = value.array else {
            throw ConfigError(
                "'\(key)' must be an array of tables, got \(TableReader.describe(value)); "
                    + "write [[\(key)]] (double brackets) before each entry",
                line: top.line(key)
            )
        }
        let nameKey = key == "principals" ? "client_id" : "name"
        var readers: [TableReader] = []
        for index in 0..<array.count {
            guard let table = array[index].table else {
                throw ConfigError(
                    "entry \(index + 1) of '\(key)' must be a table, got \(TableReader.describe(array[index])); "
                        + "write [[\(key)]] (double brackets) before each entry",
                    line: top.line(key)
                )
            }
            let label = table[nameKey]?.string.map { "[[\(key)]] '\($0)'" } ?? "[[\(key)]] #\(index + 1)"
            readers.append(TableReader(table: table, label: label, section: key, index: index, locator: locator))
        }
        return readers
    }

    private static func decodeServer(_ reader: TableReader) throws(ConfigError) -> ServerSettings {
        try reader.checkKeys(Self.serverKeys)
        var server = ServerSettings()
        if let (host, port) = try reader.listenAddress(examplePort: 7420) {
            server.listenHost = host
            server.listenPort = port
        }
        if let dataDir = try reader.string("data_dir") { server.dataDir = dataDir }
        if let value = try reader.integer("max_frame_bytes") { server.maxFrameBytes = value }
        if let value = try reader.integer("max_records_per_publish") { server.maxRecordsPerPublish = value }
        if let value = try reader.integer("max_connections") { server.maxConnections = value }
        if let value = try reader.integer("handshake_timeout_seconds") { server.handshakeTimeoutSeconds = value }
        if let value = try reader.integer("frame_timeout_seconds") { server.frameTimeoutSeconds = value }
        if let value = reader.table["tls"] {
            guard let table = value.table else {
                throw ConfigError(
                    "'tls' in [server] must be a table, got \(TableReader.describe(value)); write a [server.tls] "
                        + "section with cert_file and key_file",
                    line: reader.line("tls")
                )
            }
            server.tls = try Self.decodeTLS(
                TableReader(
                    table: table,
                    label: "[server.tls]",
                    section: "server.tls",
                    index: 0,
                    locator: reader.locator
                )
            )
        }
        return server
    }

    /// `[server.tls]`: `cert_file` and `key_file` (required), `client_ca_file`, `client_auth`.
    private static func decodeTLS(_ reader: TableReader) throws(ConfigError) -> TLSSettings {
        try reader.checkKeys(Self.tlsKeys)
        var tls = TLSSettings(
            certFile: try reader.requiredString("cert_file"),
            keyFile: try reader.requiredString("key_file")
        )
        tls.clientCAFile = try reader.string("client_ca_file")
        if let mode = try reader.string("client_auth") {
            guard let parsed = ClientAuthMode(rawValue: mode) else {
                throw ConfigError(
                    "'client_auth' in [server.tls] must be \"none\", \"optional\" or \"required\", got \"\(mode)\"",
                    line: reader.line("client_auth")
                )
            }
            tls.clientAuth = parsed
        }
        return tls
    }

    private static func decodeTopic(_ reader: TableReader) throws(ConfigError) -> TopicPolicy {
        try reader.checkKeys(Self.topicKeys)
        var topic = TopicPolicy(
            name: try reader.requiredString("name"),
            sensitivity: try reader.requiredString("class")
        )
        if let fsync = try reader.string("fsync") {
            guard let setting = Self.parseFsync(fsync) else {
                throw ConfigError(
                    "'fsync' in \(reader.label) must be \"always\", \"never\" or \"interval:<milliseconds>\" "
                        + "(e.g. \"interval:50\"), got \"\(fsync)\"",
                    line: reader.line("fsync")
                )
            }
            topic.fsync = setting
        }
        if let compression = try reader.string("compression") {
            guard let setting = CompressionSetting(rawValue: compression) else {
                throw ConfigError(
                    "'compression' in \(reader.label) must be \"lz4\" or \"none\", got \"\(compression)\"",
                    line: reader.line("compression")
                )
            }
            topic.compression = setting
        }
        if let value = try reader.integer("segment_bytes") { topic.segmentBytes = Int64(value) }
        topic.segmentMaxAgeMillis = try reader.integer("segment_max_age_ms").map(Int64.init)
        topic.retentionBytes = try reader.integer("retention_bytes").map(Int64.init)
        topic.retentionMillis = try reader.integer("retention_ms").map(Int64.init)
        if let value = try reader.integer("page_cache_bytes") { topic.pageCacheBytes = Int64(value) }
        if let purposes = try reader.stringArray("purposes") { topic.purposes = purposes }
        if let scopes = try reader.stringArray("consent_scopes") { topic.consentScopes = scopes }
        if let headers = try reader.stringArray("required_headers") { topic.requiredHeaders = headers }
        if let payload = try reader.string("payload") {
            guard let format = PayloadFormat(rawValue: payload) else {
                throw ConfigError(
                    "'payload' in \(reader.label) must be \"json\" (a JSON object, field rules apply) or \"any\" "
                        + "(opaque bytes), got \"\(payload)\"",
                    line: reader.line("payload")
                )
            }
            topic.payload = format
        }
        topic.allowedFields = try reader.stringArray("allowed_fields")
        topic.forbiddenFields = try reader.stringArray("forbidden_fields")
        if let value = try reader.integer("dedupe_window_ms") { topic.dedupeWindowMillis = Int64(value) }
        if let value = try reader.integer("dedupe_max_keys") { topic.dedupeMaxKeys = value }
        return topic
    }

    private static func decodeRole(_ reader: TableReader) throws(ConfigError) -> RolePolicy {
        try reader.checkKeys(Self.roleKeys)
        var capabilities: [Capability] = []
        for name in try reader.stringArray("capabilities") ?? [] {
            guard let capability = Capability(rawValue: name) else {
                throw ConfigError(
                    "unknown capability '\(name)' in \(reader.label); capabilities are "
                        + Capability.allCases.map(\.rawValue).joined(separator: ", "),
                    line: reader.line("capabilities")
                )
            }
            capabilities.append(capability)
        }
        return RolePolicy(
            name: try reader.requiredString("name"),
            clearance: try reader.requiredString("clearance"),
            publish: try reader.stringArray("publish") ?? [],
            subscribe: try reader.stringArray("subscribe") ?? [],
            purposes: try reader.stringArray("purposes") ?? PolicyDefaults.purposes,
            consentScopes: try reader.stringArray("consent_scopes") ?? PolicyDefaults.consentScopes,
            capabilities: capabilities
        )
    }

    private static func decodePrincipal(_ reader: TableReader) throws(ConfigError) -> PrincipalEntry {
        try reader.checkKeys(Self.principalKeys)
        return PrincipalEntry(
            clientID: try reader.requiredString("client_id"),
            role: try reader.requiredString("role"),
            tokenHash: try reader.string("token_hash"),
            certIdentity: try reader.string("cert_identity")
        )
    }

    /// `HOST:PORT` or `[IPV6]:PORT`, port 0…65535 in decimal digits; a bare IPv6 host must be bracketed.
    static func parseListen(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":") else { return nil }
        var host = Substring(text[..<colon])
        let digits = text[text.index(after: colon)...]
        guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
            let port = Int(digits), (0...65535).contains(port)
        else { return nil }
        if host.hasPrefix("[") {
            guard host.hasSuffix("]"), host.count > 2 else { return nil }
            host = host.dropFirst().dropLast()
            guard host.contains(":") else { return nil }
        } else {
            guard !host.isEmpty, !host.contains(":"), !host.contains("]") else { return nil }
        }
        guard !host.contains(where: { $0 == " " || $0 == "\t" || $0 == "/" }) else { return nil }
        return (String(host), port)
    }

    /// `always`, `never`, or `interval:<decimal milliseconds>`.
    static func parseFsync(_ text: String) -> FsyncSetting? {
        switch text {
        case "always": return .always
        case "never": return .never
        default:
            guard text.hasPrefix("interval:") else { return nil }
            let digits = text.dropFirst("interval:".count)
            guard !digits.isEmpty, digits.count <= 12, digits.allSatisfy({ $0.isASCII && $0.isNumber }),
                let milliseconds = Int(digits)
            else { return nil }
            return .interval(milliseconds: milliseconds)
        }
    }
}

/// Typed access to one TOML table, with errors that name the table and point at the key's line.
struct TableReader {
    let table: TOMLTable
    /// How messages name the table: `the top-level table`, `[server]`, `[[topics]] 'education.completed'`.
    let label: String
    let section: String
    let index: Int
    let locator: ConfigLineLocator

    /// The line of `key` in this table, or of the table's header. At the top level a key may also be a
    /// `[key]` or `[[key]]` header of its own.
    func line(_ key: String?) -> Int? {
        if let line = self.locator.line(table: self.section, index: self.index, key: key) { return line }
        guard self.section.isEmpty, let key else { return nil }
        return self.locator.line(table: key, index: 0, key: nil)
    }

    /// Rejects the first key (in file order) that is not in `allowed`, suggesting the closest allowed key.
    func checkKeys(_ allowed: [String]) throws(ConfigError) {
        let unknown = self.table.keys.filter { !allowed.contains($0) }
        let ordered = unknown.sorted { (self.line($0) ?? Int.max, $0) < (self.line($1) ?? Int.max, $1) }
        guard let key = ordered.first else { return }
        let advice: String
        if let suggestion = Self.suggestion(for: key, among: allowed) {
            advice = "did you mean \(suggestion)?"
        } else {
            advice = "allowed keys: \(allowed.joined(separator: ", "))"
        }
        throw ConfigError("unknown key '\(key)' in \(self.label); \(advice)", line: self.line(key))
    }

    /// A string value, nil when the key is absent.
    /// The table's `listen` key as (host, port), nil when absent; `examplePort` is the port its error suggests.
    func listenAddress(examplePort: Int) throws(ConfigError) -> (host: String, port: Int)? {
        guard let listen = try self.string("listen") else { return nil }
        guard let address = ConfigDecoder.parseListen(listen) else {
            throw ConfigError(
                "'listen' in \(self.label) must be HOST:PORT with a port in 0…65535 "
                    + "(e.g. \"127.0.0.1:\(examplePort)\" or \"[::1]:\(examplePort)\"), got \"\(listen)\"",
                line: self.line("listen")
            )
        }
        return address
    }

    func string(_ key: String) throws(ConfigError) -> String? {
        guard let value = self.table[key] else { return nil }
        guard let string = value.string else { throw self.typeError(key, expected: "a string", got: value) }
        return string
    }

    /// A string value that must be present.
    func requiredString(_ key: String) throws(ConfigError) -> String {
        guard let string = try self.string(key) else {
            throw ConfigError("missing key '\(key)' in \(self.label)", line: self.line(nil))
        }
        return string
    }

    /// An integer value, nil when the key is absent.
    func integer(_ key: String) throws(ConfigError) -> Int? {
        guard let value = self.table[key] else { return nil }
        guard let integer = value.int else { throw self.typeError(key, expected: "an integer", got: value) }
        return integer
    }

    /// An array of strings, nil when the key is absent.
    func stringArray(_ key: String) throws(ConfigError) -> [String]? {
        guard let value = self.table[key] else { return nil }
        guard let array = value.array else {
            throw self.typeError(key, expected: "an array of strings", got: value)
        }
        var strings: [String] = []
        for index in 0..<array.count {
            guard let string = array[index].string else {
                throw ConfigError(
                    "'\(key)' in \(self.label) must be an array of strings; element \(index + 1) is "
                        + Self.describe(array[index]),
                    line: self.line(key)
                )
            }
            strings.append(string)
        }
        return strings
    }

    private func typeError(_ key: String, expected: String, got value: TOMLValueConvertible) -> ConfigError {
        ConfigError("'\(key)' in \(self.label) must be \(expected), got \(Self.describe(value))", line: self.line(key))
    }

    /// "a string", "an integer", … for messages.
    static func describe(_ value: TOMLValueConvertible) -> String {
        switch value.type {
        case .string: return "a string"
        case .int: return "an integer"
        case .double: return "a floating-point number"
        case .bool: return "a boolean"
        case .array: return "an array"
        case .table: return "a table"
        case .date, .time, .dateTime: return "a date/time"
        }
    }

    /// The allowed key a typo most likely meant: one that extends or is extended by it, else one within a small
    /// edit distance; the closest wins, earlier in `allowed` on ties.
    static func suggestion(for key: String, among allowed: [String]) -> String? {
        let lowered = key.lowercased()
        var best: (candidate: String, distance: Int)? = nil
        let limit = max(2, lowered.count / 3)
        for candidate in allowed {
            let distance = Self.editDistance(Array(lowered.utf8), Array(candidate.utf8))
            let related = candidate.hasPrefix(lowered) || lowered.hasPrefix(candidate)
            guard related || distance <= limit else { continue }
            if best == nil || distance < best!.distance { best = (candidate, distance) }
        }
        return best?.candidate
    }

    /// Levenshtein distance, two rows.
    static func editDistance(_ a: [UInt8], _ b: [UInt8]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
