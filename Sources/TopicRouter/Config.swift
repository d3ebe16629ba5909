// SKELETON: the TopicRouter helper fills in the implementation. Signatures are the contract.

/// How a topic's appends are made durable (mirrors LogStore's policy without importing it).
package enum FsyncSetting: Equatable, Sendable {
    case always
    case interval(milliseconds: Int)
    case never
}

/// Batch compression for a topic.
package enum CompressionSetting: String, Equatable, Sendable {
    case none
    case lz4
}

/// A topic as declared in config.
package struct TopicPolicy: Equatable, Sendable {
    package var name: String
    /// Name of its sensitivity class (one of `BrokerConfig.classes`).
    package var sensitivity: String
    package var fsync: FsyncSetting = .always
    package var compression: CompressionSetting = .lz4
    package var segmentBytes: Int64 = 64 * 1024 * 1024
    package var segmentMaxAgeMillis: Int64? = nil
    package var retentionBytes: Int64? = nil
    package var retentionMillis: Int64? = nil
    package init(name: String, sensitivity: String) {
        self.name = name
        self.sensitivity = sensitivity
    }
}

/// A role: how far it is cleared and which topic patterns it may use.
/// Patterns are topic names where `*` matches any run of characters (e.g. `support.*`).
package struct RolePolicy: Equatable, Sendable {
    package var name: String
    package var clearance: String
    package var publish: [String]
    package var subscribe: [String]
    package init(name: String, clearance: String, publish: [String], subscribe: [String]) {
        self.name = name
        self.clearance = clearance
        self.publish = publish
        self.subscribe = subscribe
    }
}

/// A principal: a client id, its role, and the hash of its token (`sha256:<64 hex>`), or nil when the
/// broker must generate its token on first start (embedded default config only).
package struct PrincipalEntry: Equatable, Sendable {
    package var clientID: String
    package var role: String
    package var tokenHash: String?
    package init(clientID: String, role: String, tokenHash: String?) {
        self.clientID = clientID
        self.role = role
        self.tokenHash = tokenHash
    }
}

/// Server settings from the `[server]` table.
package struct ServerSettings: Equatable, Sendable {
    package var listenHost: String = "127.0.0.1"
    package var listenPort: Int = 7420
    package var dataDir: String = "./brokerd-data"
    package var maxFrameBytes: Int = 16 * 1024 * 1024
    package var maxRecordsPerPublish: Int = 10_000
    package var maxConnections: Int = 10_000
    /// Seconds a connection may take to send a valid HELLO.
    package var handshakeTimeoutSeconds: Int = 10
    package init() {}
}

/// The whole parsed configuration.
package struct BrokerConfig: Equatable, Sendable {
    package var server: ServerSettings
    /// Sensitivity classes from least to most sensitive.
    package var classes: [String]
    package var topics: [TopicPolicy]
    package var roles: [RolePolicy]
    package var principals: [PrincipalEntry]
    package init(server: ServerSettings, classes: [String], topics: [TopicPolicy], roles: [RolePolicy], principals: [PrincipalEntry]) {
        self.server = server
        self.classes = classes
        self.topics = topics
        self.roles = roles
        self.principals = principals
    }
}

/// A config error with where it is and what to do.
package struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    package var message: String
    /// 1-based line in the TOML text when known.
    package var line: Int?
    package init(_ message: String, line: Int? = nil) {
        self.message = message
        self.line = line
    }
    package var description: String { self.line.map { "line \($0): \(self.message)" } ?? self.message }
}

/// Parses and validates TOML config text.
package enum ConfigLoader {
    /// The embedded default config (the closed-loop healthcare scenario); its principals have no token hash.
    package static var embeddedDefault: String { fatalError("unimplemented") }

    /// Parses and validates; every reference (class, role, topic) must resolve.
    package static func parse(_ text: String) throws(ConfigError) -> BrokerConfig {
        fatalError("unimplemented")
    }
}
