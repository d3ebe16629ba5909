/// How a topic's appends are made durable (mirrors LogStore's policy without importing it).
package enum FsyncSetting: Equatable, Sendable {
    /// Sync before every acknowledgement (`fsync = "always"`).
    case always
    /// Sync at most every `milliseconds` (`fsync = "interval:50"`); acknowledged records may be lost on a crash.
    case interval(milliseconds: Int)
    /// Leave syncing to the OS (`fsync = "never"`).
    case never
}

/// Batch compression for a topic.
package enum CompressionSetting: String, Equatable, Sendable {
    /// Batches are stored as sent.
    case none
    /// Batches are LZ4-compressed.
    case lz4
}

/// A topic as declared in config.
package struct TopicPolicy: Equatable, Sendable {
    /// The topic's name (`[A-Za-z0-9._-]+`, not starting with `__`).
    package var name: String
    /// Name of its sensitivity class (one of `BrokerConfig.classes`).
    package var sensitivity: String
    /// When appends are made durable (`fsync`).
    package var fsync: FsyncSetting = .always
    /// Batch compression (`compression`).
    package var compression: CompressionSetting = .lz4
    /// A segment is rolled once it reaches this size (`segment_bytes`).
    package var segmentBytes: Int64 = 64 * 1024 * 1024
    /// A segment is rolled once it is this old, if set (`segment_max_age_ms`).
    package var segmentMaxAgeMillis: Int64? = nil
    /// Oldest segments are deleted while the log is larger than this, if set (`retention_bytes`).
    package var retentionBytes: Int64? = nil
    /// Segments whose newest record is older than this are deleted, if set (`retention_ms`).
    package var retentionMillis: Int64? = nil
    /// Bytes of the newest log writes left in the kernel's page cache; older ones are dropped from it as the log
    /// grows (`page_cache_bytes`; 0: the kernel keeps what it likes).
    package var pageCacheBytes: Int64 = TopicPolicy.defaultPageCacheBytes
    /// Why records of this topic exist (`purposes`, non-empty, each declared in `BrokerConfig.purposes`). A role
    /// may subscribe only when it shares at least one purpose with the topic.
    package var purposes: [String] = PolicyDefaults.purposes
    /// The consent scopes its records may carry (`consent_scopes`, each declared in `BrokerConfig.consentScopes`).
    package var consentScopes: [String] = PolicyDefaults.consentScopes
    /// Headers every published record must carry, non-empty (`required_headers`).
    package var requiredHeaders: [String] = PolicyDefaults.requiredHeaders
    /// What the record value must be (`payload`).
    package var payload: PayloadFormat = .json
    /// The only top-level JSON fields a value may have (`allowed_fields`); nil allows any field.
    package var allowedFields: [String]? = nil
    /// JSON field names a value may not contain at any depth, compared ignoring ASCII case (`forbidden_fields`).
    /// nil takes the class-based default: `PolicyDefaults.forbiddenFields` on every class but the most sensitive
    /// one, nothing on the most sensitive class (PHI topics may carry identifiers). See `Policy.effectiveTopic`.
    package var forbiddenFields: [String]? = nil
    /// How long a dedupe key is remembered, in milliseconds (`dedupe_window_ms`).
    package var dedupeWindowMillis: Int64 = PolicyDefaults.dedupeWindowMillis
    /// The most dedupe keys remembered for this topic at once (`dedupe_max_keys`).
    package var dedupeMaxKeys: Int = PolicyDefaults.dedupeMaxKeys
    /// A topic with the defaults above.
    package init(name: String, sensitivity: String) {
        self.name = name
        self.sensitivity = sensitivity
    }

    /// `page_cache_bytes` when the topic does not set it.
    package static let defaultPageCacheBytes: Int64 = 512 << 20
    /// The least non-zero `page_cache_bytes`: the window must hold what is written while an fdatasync runs.
    package static let minPageCacheBytes: Int64 = 16 << 20
}

/// What a topic's record values must be.
package enum PayloadFormat: String, Equatable, Sendable {
    /// A JSON object (RFC 8259, UTF-8, nesting at most `JSONKeyScanner.maxDepth`); field rules apply.
    case json
    /// Opaque bytes; no payload or field rules apply.
    case any
}

/// A privilege beyond topic patterns, granted to a role by `capabilities`.
package enum Capability: String, CaseIterable, Equatable, Hashable, Sendable {
    /// May subscribe to `__quarantine`.
    case quarantineRead = "quarantine.read"
    /// May replay quarantined records to their original topic.
    case quarantineReplay = "quarantine.replay"
    /// May subscribe to `__audit`.
    case auditRead = "audit.read"
    /// May run administrative operations (config reload).
    case admin = "admin"
}

/// The defaults of the policy-plane keys, shared by the TOML decoder and the in-code initialisers.
///
/// The in-code defaults for purposes and scopes are the full default vocabularies so that configs built in code
/// before the policy plane existed keep deciding as before; the embedded default config states every key.
package enum PolicyDefaults {
    /// `purposes` at the top level when absent, and a topic's or role's `purposes` when absent.
    package static let purposes = [
        "care_coordination", "patient_support", "commercial_analytics", "safety", "operations",
    ]
    /// `consent_scopes` at the top level when absent, and a topic's or role's `consent_scopes` when absent.
    package static let consentScopes = [
        "treatment_support", "operational_notice", "educational", "promotional_outreach",
        "hcp_commercial_engagement",
    ]
    /// A topic's `required_headers` when absent.
    package static let requiredHeaders = ["event_type", "source_system", "consent_scope"]
    /// A topic's `forbidden_fields` when absent, on every class but the most sensitive.
    package static let forbiddenFields = ["patient_name", "dob", "mrn", "ssn", "diagnosis", "note"]
    /// A topic's `dedupe_window_ms` when absent: 24 hours.
    package static let dedupeWindowMillis: Int64 = 86_400_000
    /// A topic's `dedupe_max_keys` when absent.
    package static let dedupeMaxKeys = 1_000_000
}

/// A role: how far it is cleared and which topic patterns it may use.
/// Patterns are topic names where `*` matches any run of characters (e.g. `support.*`).
package struct RolePolicy: Equatable, Sendable {
    /// The role's name.
    package var name: String
    /// The most sensitive class it may read (one of `BrokerConfig.classes`).
    package var clearance: String
    /// Patterns of the topics it may publish to.
    package var publish: [String]
    /// Patterns of the topics it may subscribe to (further limited by `clearance` and `purposes`).
    package var subscribe: [String]
    /// The purposes it reads for (`purposes`); it may subscribe only to topics sharing one of them.
    package var purposes: [String]
    /// The consent scopes it may receive (`consent_scopes`); records with none of them are withheld from it.
    package var consentScopes: [String]
    /// Privileges beyond topic patterns (`capabilities`).
    package var capabilities: [Capability]
    /// Creates a role; purposes and scopes default to the full default vocabularies (see `PolicyDefaults`).
    package init(
        name: String,
        clearance: String,
        publish: [String],
        subscribe: [String],
        purposes: [String] = PolicyDefaults.purposes,
        consentScopes: [String] = PolicyDefaults.consentScopes,
        capabilities: [Capability] = []
    ) {
        self.name = name
        self.clearance = clearance
        self.publish = publish
        self.subscribe = subscribe
        self.purposes = purposes
        self.consentScopes = consentScopes
        self.capabilities = capabilities
    }
}

/// A principal: a client id, its role, and the hash of its token (`sha256:<64 hex>`), or nil when the
/// broker must generate its token on first start (embedded default config only); and, with mutual TLS, the
/// client-certificate identity that authenticates it instead of a token.
package struct PrincipalEntry: Equatable, Sendable {
    /// The client id sent in HELLO.
    package var clientID: String
    /// The name of its role.
    package var role: String
    /// `sha256:<64 lowercase hex>` of its token, or nil until brokerd generates one (or never, for a principal
    /// that authenticates by certificate only).
    package var tokenHash: String?
    /// `cert_identity`: `cn:NAME`, `dns:NAME`, `email:ADDRESS` or `uri:URI`, matched against a verified client
    /// certificate's subject common name or subject alternative names (see `CertificateIdentity`); nil: none.
    package var certIdentity: String?
    /// Creates a principal entry.
    package init(clientID: String, role: String, tokenHash: String?, certIdentity: String? = nil) {
        self.clientID = clientID
        self.role = role
        self.tokenHash = tokenHash
        self.certIdentity = certIdentity
    }
}

/// Whether and how the broker asks TLS clients for a certificate (`[server.tls] client_auth`).
package enum ClientAuthMode: String, CaseIterable, Equatable, Sendable {
    /// No client certificate is requested; every client authenticates with a token in HELLO.
    case none
    /// A client may present a certificate, which must then verify against `client_ca_file`; a client that presents
    /// one is authenticated by it, a client that presents none by its HELLO token.
    case optional
    /// Every client must present a certificate that verifies against `client_ca_file`; the TLS handshake fails
    /// without one. Principals come from certificates only; HELLO tokens are never checked.
    case required
}

/// TLS settings from the `[server.tls]` table. Paths are as written in the config; relative paths are resolved
/// against brokerd's working directory.
package struct TLSSettings: Equatable, Sendable {
    /// PEM file with the server certificate, optionally followed by its intermediates (`cert_file`).
    package var certFile: String
    /// PEM file with the server certificate's private key (`key_file`).
    package var keyFile: String
    /// PEM file with the CA certificates that client certificates must chain to (`client_ca_file`); required
    /// when `clientAuth` is not `.none`.
    package var clientCAFile: String?
    /// Whether client certificates are requested, and whether they are required (`client_auth`).
    package var clientAuth: ClientAuthMode
    /// Creates TLS settings (not validated; `ConfigValidator` checks them).
    package init(certFile: String, keyFile: String, clientCAFile: String? = nil, clientAuth: ClientAuthMode = .none) {
        self.certFile = certFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
        self.clientAuth = clientAuth
    }
}

/// Server settings from the `[server]` table.
package struct ServerSettings: Equatable, Sendable {
    /// Address to listen on, without brackets for IPv6 (`listen`'s host).
    package var listenHost: String = "127.0.0.1"
    /// TCP port to listen on; 0 picks a free one (`listen`'s port).
    package var listenPort: Int = 7420
    /// Where logs, offsets and generated credentials live (`data_dir`).
    package var dataDir: String = "./brokerd-data"
    /// The largest frame the broker accepts or sends (`max_frame_bytes`).
    package var maxFrameBytes: Int = 16 * 1024 * 1024
    /// The most records one PUBLISH may carry (`max_records_per_publish`).
    package var maxRecordsPerPublish: Int = 10_000
    /// Connections beyond this are refused (`max_connections`).
    package var maxConnections: Int = 10_000
    /// Seconds a connection may take to send a valid HELLO.
    package var handshakeTimeoutSeconds: Int = 10
    /// Seconds a frame may stay incomplete (header or body partly received) before the connection is closed
    /// (`frame_timeout_seconds`).
    package var frameTimeoutSeconds: Int = 30
    /// The `[server.tls]` table; nil: the broker speaks plaintext TCP.
    package var tls: TLSSettings? = nil
    /// The defaults above.
    package init() {}
}

/// The Prometheus metrics endpoint, from the `[metrics]` table (docs/METRICS.md).
package struct MetricsSettings: Equatable, Sendable {
    /// Whether brokerd serves `GET /metrics` (`enabled`).
    package var enabled: Bool = true
    /// Address of the metrics endpoint, without brackets for IPv6 (`listen`'s host).
    package var listenHost: String = "127.0.0.1"
    /// Port of the metrics endpoint; 0 picks a free one (`listen`'s port).
    package var listenPort: Int = 9420
    /// The defaults above: on, at 127.0.0.1:9420.
    package init() {}
}

/// The whole parsed configuration.
package struct BrokerConfig: Equatable, Sendable {
    /// The `[server]` table.
    package var server: ServerSettings
    /// The `[metrics]` table.
    package var metrics: MetricsSettings
    /// Sensitivity classes from least to most sensitive.
    package var classes: [String]
    /// The `[[topics]]`, in file order.
    package var topics: [TopicPolicy]
    /// The `[[roles]]`, in file order.
    package var roles: [RolePolicy]
    /// The `[[principals]]`, in file order.
    package var principals: [PrincipalEntry]
    /// The declared purposes (`purposes`); every purpose a topic or role names must be one of them.
    package var purposes: [String]
    /// The declared consent scopes (`consent_scopes`); every scope a topic or role names must be one of them.
    package var consentScopes: [String]
    /// The `[[limiters]]`, in file order (rate limits and contact caps; see `LimiterDeclaration`).
    package var limiters: [LimiterDeclaration]
    /// Creates a configuration (not validated; `Policy.init` validates).
    package init(
        server: ServerSettings,
        classes: [String],
        topics: [TopicPolicy],
        roles: [RolePolicy],
        principals: [PrincipalEntry],
        purposes: [String] = PolicyDefaults.purposes,
        consentScopes: [String] = PolicyDefaults.consentScopes,
        limiters: [LimiterDeclaration] = [],
        metrics: MetricsSettings = MetricsSettings()
    ) {
        self.metrics = metrics
        self.limiters = limiters
        self.server = server
        self.classes = classes
        self.topics = topics
        self.roles = roles
        self.principals = principals
        self.purposes = purposes
        self.consentScopes = consentScopes
    }
}

/// A config error with where it is and what to do.
package struct ConfigError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What is wrong and, after a `;`, what to do about it.
    package var message: String
    /// 1-based line in the TOML text when known.
    package var line: Int?
    /// Creates an error.
    package init(_ message: String, line: Int? = nil) {
        self.message = message
        self.line = line
    }
    /// `line N: message`, or the message alone.
    package var description: String { self.line.map { "line \($0): \(self.message)" } ?? self.message }
}

/// Parses and validates TOML config text.
package enum ConfigLoader {
    /// The embedded default config (the closed-loop healthcare scenario); its principals have no token hash.
    package static var embeddedDefault: String { DefaultConfig.text + "\n" + DefaultConfig.limiters }

    /// Parses and validates; every reference (class, role, topic) must resolve.
    ///
    /// Principals may omit `token_hash` here (brokerd generates their tokens); `Policy.init` then requires one
    /// unless the principal has a `cert_identity`. The files `[server.tls]` names are checked with `fileProbe`
    /// (by default: they exist and can be read). The first problem found is thrown, with its 1-based line when it
    /// can be located.
    package static func parse(
        _ text: String,
        fileProbe: (String) -> String? = TLSFileProbe.readableFileProblem
    ) throws(ConfigError) -> BrokerConfig {
        let locator = ConfigLineLocator(text: text)
        let config = try ConfigDecoder.decode(text, locator: locator)
        try ConfigValidator.validate(config, locator: locator)
        try ConfigValidator.validateTLSFiles(config.server.tls, locator: locator, probe: fileProbe)
        return config
    }
}
