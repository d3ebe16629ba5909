import Testing

@testable import TopicRouter

/// A valid hash to put in configs (the SHA-256 of "token").
let someHash = Credentials.hash(token: "token")

/// Joins lines into a config document.
func document(_ lines: [String]) -> String {
    lines.joined(separator: "\n") + "\n"
}

/// A small valid config, one line per element; the comments are the 1-based line numbers.
let baseLines = [
    #"classes = ["non_phi", "phi"]"#,  // 1
    "[server]",  // 2
    #"listen = "127.0.0.1:7420""#,  // 3
    "[[topics]]",  // 4
    #"name = "a.b""#,  // 5
    #"class = "non_phi""#,  // 6
    "[[roles]]",  // 7
    #"name = "r""#,  // 8
    #"clearance = "phi""#,  // 9
    #"subscribe = ["a.*"]"#,  // 10
    "[[principals]]",  // 11
    #"client_id = "c""#,  // 12
    #"role = "r""#,  // 13
    #"token_hash = "\#(someHash)""#,  // 14
]

/// `baseLines` with line `number` (1-based) replaced by `replacement`.
func base(replacing number: Int, with replacement: String) -> String {
    var lines = baseLines
    lines[number - 1] = replacement
    return document(lines)
}

/// `baseLines` with `extra` inserted after line `number`.
func base(inserting extra: String, after number: Int) -> String {
    var lines = baseLines
    lines.insert(extra, at: number)
    return document(lines)
}

/// `baseLines` followed by `extra` (whose first line is line 15).
func base(appending extra: [String]) -> String {
    document(baseLines + extra)
}

/// A config text that must be rejected with `message` (a substring) at `line`.
struct ErrorCase: CustomTestStringConvertible, Sendable {
    var label: String
    var text: String
    var message: String
    var line: Int?
    var testDescription: String { self.label }
}

@Suite("ConfigLoader")
struct ConfigLoaderTests {
    @Test("the embedded default parses and declares the scenario's classes, topics, roles and principals")
    func embeddedDefault() throws {
        let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
        #expect(config.classes == ["non_phi", "deidentified", "pseudonymous", "phi"])
        #expect(config.server.listenHost == "127.0.0.1")
        #expect(config.server.listenPort == 7420)
        #expect(config.server.dataDir == "./brokerd-data")
        #expect(config.server.maxFrameBytes == 16_777_216)
        #expect(config.server.maxRecordsPerPublish == 10_000)
        #expect(config.server.maxConnections == 10_000)
        #expect(config.server.handshakeTimeoutSeconds == 10)
        let classOf = Dictionary(uniqueKeysWithValues: config.topics.map { ($0.name, $0.sensitivity) })
        #expect(classOf["education.completed"] == "non_phi")
        #expect(classOf["support.milestone"] == "pseudonymous")
        #expect(classOf["analytics.deidentified"] == "deidentified")
        #expect(classOf["clinical.referral"] == "phi")
        #expect(classOf["support.notice"] == "non_phi")
        #expect(config.purposes == PolicyDefaults.purposes)
        #expect(config.consentScopes == PolicyDefaults.consentScopes)
        let roles = Dictionary(uniqueKeysWithValues: config.roles.map { ($0.name, $0) })
        #expect(
            roles["crm"]
                == RolePolicy(
                    name: "crm",
                    clearance: "non_phi",
                    publish: [],
                    subscribe: ["education.*"],
                    purposes: ["commercial_analytics"],
                    consentScopes: ["hcp_commercial_engagement", "educational"]
                )
        )
        #expect(roles["analytics"]?.clearance == "deidentified")
        #expect(Set(roles["analytics"]?.subscribe ?? []) == ["analytics.*", "education.*", "support.*"])
        #expect(roles["analytics"]?.purposes == ["commercial_analytics"])
        #expect(
            Set(roles["analytics"]?.consentScopes ?? [])
                == ["educational", "hcp_commercial_engagement", "operational_notice"]
        )
        #expect(roles["patient_support"]?.clearance == "phi")
        #expect(Set(roles["patient_support"]?.subscribe ?? []) == ["support.*", "clinical.*"])
        #expect(Set(roles["patient_support"]?.purposes ?? []) == ["patient_support", "care_coordination"])
        #expect(Set(roles["patient_support"]?.consentScopes ?? []) == ["treatment_support", "operational_notice"])
        #expect(
            roles["operator"]
                == RolePolicy(
                    name: "operator",
                    clearance: "phi",
                    publish: ["*"],
                    subscribe: ["*"],
                    capabilities: [.quarantineRead, .quarantineReplay, .admin]
                )
        )
        #expect(
            roles["auditor"]
                == RolePolicy(
                    name: "auditor",
                    clearance: "phi",
                    publish: [],
                    subscribe: [],
                    purposes: [],
                    consentScopes: [],
                    capabilities: [.auditRead]
                )
        )
        #expect(roles["learning_portal"]?.purposes == [] && roles["learning_portal"]?.consentScopes == [])
        #expect(
            config.principals.map(\.clientID) == [
                "learning-portal", "support-portal", "crm-automation", "analytics-lake", "support-desk", "ops-admin",
                "quarantine-operator", "compliance-auditor",
            ]
        )
        #expect(config.principals.allSatisfy { $0.tokenHash == nil })
        let roleOf = Dictionary(uniqueKeysWithValues: config.principals.map { ($0.clientID, $0.role) })
        #expect(roleOf["crm-automation"] == "crm")
        #expect(roleOf["support-desk"] == "patient_support")
        #expect(roleOf["ops-admin"] == "operator")
        #expect(roleOf["analytics-lake"] == "analytics")
        #expect(roleOf["quarantine-operator"] == "operator")
        #expect(roleOf["compliance-auditor"] == "auditor")
    }

    @Test("the embedded default's topics state every policy-plane key")
    func embeddedDefaultTopicRules() throws {
        let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
        let education = try #require(config.topics.first { $0.name == "education.completed" })
        #expect(education.purposes == ["commercial_analytics", "operations"])
        #expect(education.consentScopes == ["hcp_commercial_engagement", "educational", "operational_notice"])
        #expect(education.requiredHeaders == ["event_type", "source_system", "consent_scope"])
        #expect(education.payload == .json)
        #expect(education.allowedFields?.contains("account_id") == true)
        #expect(education.forbiddenFields == PolicyDefaults.forbiddenFields)
        #expect(education.dedupeWindowMillis == 86_400_000)
        #expect(education.dedupeMaxKeys == 1_000_000)
        let milestone = try #require(config.topics.first { $0.name == "support.milestone" })
        #expect(milestone.forbiddenFields == nil)
        #expect(milestone.dedupeWindowMillis == 604_800_000)
        let analytics = try #require(config.topics.first { $0.name == "analytics.deidentified" })
        #expect(analytics.dedupeWindowMillis == 3_600_000)
        #expect(analytics.dedupeMaxKeys == 100_000)
        let referral = try #require(config.topics.first { $0.name == "clinical.referral" })
        #expect(referral.purposes == ["care_coordination"])
        #expect(referral.consentScopes == ["treatment_support"])
        #expect(referral.allowedFields == nil && referral.forbiddenFields == nil)
    }

    @Test("every policy-plane key is read")
    func policyPlaneKeys() throws {
        let text = document([
            #"classes = ["non_phi", "phi"]"#,
            #"purposes = ["p1", "p2"]"#,
            #"consent_scopes = ["s1", "s2", "s3"]"#,
            "[[topics]]",
            #"name = "t""#,
            #"class = "non_phi""#,
            #"purposes = ["p2"]"#,
            #"consent_scopes = ["s1", "s3"]"#,
            #"required_headers = ["event_type"]"#,
            #"payload = "json""#,
            #"allowed_fields = ["a", "b"]"#,
            #"forbidden_fields = ["secret"]"#,
            "dedupe_window_ms = 5000",
            "dedupe_max_keys = 10",
            "[[topics]]",
            #"name = "opaque""#,
            #"class = "phi""#,
            #"purposes = ["p1"]"#,
            #"consent_scopes = []"#,
            "required_headers = []",
            #"payload = "any""#,
            "[[roles]]",
            #"name = "r""#,
            #"clearance = "phi""#,
            #"purposes = ["p1"]"#,
            #"consent_scopes = ["s2"]"#,
            #"capabilities = ["audit.read", "admin"]"#,
        ])
        let config = try ConfigLoader.parse(text)
        #expect(config.purposes == ["p1", "p2"])
        #expect(config.consentScopes == ["s1", "s2", "s3"])
        var expected = TopicPolicy(name: "t", sensitivity: "non_phi")
        expected.purposes = ["p2"]
        expected.consentScopes = ["s1", "s3"]
        expected.requiredHeaders = ["event_type"]
        expected.allowedFields = ["a", "b"]
        expected.forbiddenFields = ["secret"]
        expected.dedupeWindowMillis = 5000
        expected.dedupeMaxKeys = 10
        #expect(config.topics[0] == expected)
        #expect(config.topics[1].payload == .any)
        #expect(config.topics[1].consentScopes == [] && config.topics[1].requiredHeaders == [])
        #expect(
            config.roles[0]
                == RolePolicy(
                    name: "r",
                    clearance: "phi",
                    publish: [],
                    subscribe: [],
                    purposes: ["p1"],
                    consentScopes: ["s2"],
                    capabilities: [.auditRead, .admin]
                )
        )
    }

    @Test("forbidden_fields defaults by class: the list below the most sensitive class, nothing on it")
    func forbiddenFieldsDefault() throws {
        let text = base(appending: ["[[topics]]", #"name = "p.q""#, #"class = "phi""#])
        let config = try ConfigLoader.parse(text)
        #expect(config.topics.allSatisfy { $0.forbiddenFields == nil })
        let policy = try Policy(config: config)
        #expect(policy.topic(named: "a.b")?.forbiddenFields == PolicyDefaults.forbiddenFields)
        #expect(policy.topic(named: "p.q")?.forbiddenFields == [])
        var opaque = config
        opaque.topics[0].payload = .any
        #expect(try Policy(config: opaque).topic(named: "a.b")?.forbiddenFields == [])
    }

    @Test("the embedded default's topics show the storage keys")
    func embeddedDefaultTopicSettings() throws {
        let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
        let analytics = try #require(config.topics.first { $0.name == "analytics.deidentified" })
        #expect(analytics.fsync == .interval(milliseconds: 50))
        #expect(analytics.compression == .lz4)
        #expect(analytics.segmentBytes == 67_108_864)
        #expect(analytics.segmentMaxAgeMillis == 86_400_000)
        #expect(analytics.retentionBytes == 10_737_418_240)
        let referral = try #require(config.topics.first { $0.name == "clinical.referral" })
        #expect(referral.fsync == .always)
        #expect(referral.retentionMillis == nil)
        let milestone = try #require(config.topics.first { $0.name == "support.milestone" })
        #expect(milestone.retentionMillis == 7_776_000_000)
    }

    @Test("page_cache_bytes: the default when absent, 0 (left to the kernel), or a size; it reaches the log's config")
    func pageCacheBytes() throws {
        #expect(try ConfigLoader.parse(base(appending: [])).topics[0].pageCacheBytes == TopicPolicy.defaultPageCacheBytes)
        #expect(try ConfigLoader.parse(base(inserting: "page_cache_bytes = 0", after: 6)).topics[0].pageCacheBytes == 0)
        let sized = try ConfigLoader.parse(base(inserting: "page_cache_bytes = 33554432", after: 6))
        #expect(sized.topics[0].pageCacheBytes == 32 << 20)
    }

    @Test("Policy refuses the embedded default until every principal has a token hash, then builds")
    func embeddedDefaultNeedsHashes() throws {
        let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
        let error = #expect(throws: ConfigError.self) { try Policy(config: config) }
        #expect(error?.message.contains("principal 'learning-portal' has no token_hash") == true)
        let hashes = Dictionary(
            uniqueKeysWithValues: config.principals.map {
                ($0.clientID, Credentials.hash(token: "token-of-\($0.clientID)"))
            }
        )
        let policy = try Policy(config: config.withTokenHashes(hashes))
        #expect(policy.topic(named: "clinical.referral")?.sensitivity == "phi")
    }

    @Test("the small base config parses to the expected values")
    func baseParses() throws {
        let config = try ConfigLoader.parse(document(baseLines))
        #expect(
            config
                == BrokerConfig(
                    server: ServerSettings(),
                    classes: ["non_phi", "phi"],
                    topics: [TopicPolicy(name: "a.b", sensitivity: "non_phi")],
                    roles: [RolePolicy(name: "r", clearance: "phi", publish: [], subscribe: ["a.*"])],
                    principals: [PrincipalEntry(clientID: "c", role: "r", tokenHash: someHash)]
                )
        )
    }

    @Test("a config without [server], topics, roles or principals takes the defaults")
    func minimalConfig() throws {
        let config = try ConfigLoader.parse(#"classes = ["only"]"#)
        #expect(config.server == ServerSettings())
        #expect(config.topics.isEmpty && config.roles.isEmpty && config.principals.isEmpty)
    }

    @Test(
        "listen forms",
        arguments: [
            ("127.0.0.1:7420", "127.0.0.1", 7420),
            ("[::1]:7420", "::1", 7420),
            ("0.0.0.0:0", "0.0.0.0", 0),
            ("localhost:65535", "localhost", 65535),
            ("[fe80::1%eth0]:9000", "fe80::1%eth0", 9000),
        ]
    )
    func listenForms(text: String, host: String, port: Int) throws {
        let config = try ConfigLoader.parse(base(replacing: 3, with: "listen = \"\(text)\""))
        #expect(config.server.listenHost == host)
        #expect(config.server.listenPort == port)
    }

    @Test(
        "fsync and compression forms",
        arguments: [
            (#"fsync = "always""#, FsyncSetting.always, CompressionSetting.lz4),
            (#"fsync = "never""#, .never, .lz4),
            (#"fsync = "interval:50""#, .interval(milliseconds: 50), .lz4),
            (#"compression = "none""#, .always, .none),
            (#"compression = "lz4""#, .always, .lz4),
        ]
    )
    func storageForms(line: String, fsync: FsyncSetting, compression: CompressionSetting) throws {
        let config = try ConfigLoader.parse(base(inserting: line, after: 6))
        #expect(config.topics[0].fsync == fsync)
        #expect(config.topics[0].compression == compression)
    }

    @Test("every server key is read")
    func serverKeys() throws {
        let settings = """
            data_dir = "/var/lib/brokerd"
            max_frame_bytes = 2048
            max_records_per_publish = 7
            max_connections = 3
            handshake_timeout_seconds = 2
            """
        let config = try ConfigLoader.parse(base(inserting: settings, after: 3))
        #expect(config.server.dataDir == "/var/lib/brokerd")
        #expect(config.server.maxFrameBytes == 2048)
        #expect(config.server.maxRecordsPerPublish == 7)
        #expect(config.server.maxConnections == 3)
        #expect(config.server.handshakeTimeoutSeconds == 2)
    }

    static let errorCases: [ErrorCase] = [
        // Syntax and document shape.
        ErrorCase(label: "invalid TOML", text: base(replacing: 5, with: "name = "), message: "invalid TOML", line: 5),
        ErrorCase(label: "NUL byte", text: base(replacing: 8, with: "name = \"r\u{0}\""), message: "NUL byte", line: 8),
        ErrorCase(
            label: "missing classes",
            text: document(Array(baseLines.dropFirst())),
            message: "missing top-level key 'classes'",
            line: nil
        ),
        ErrorCase(
            label: "[topics] instead of [[topics]]",
            text: document([#"classes = ["x"]"#, "[topics]", #"name = "a""#]),
            message: "'topics' must be an array of tables",
            line: 2
        ),
        ErrorCase(
            label: "server not a table",
            text: document([#"classes = ["x"]"#, "server = 1"]),
            message: "'server' must be a table",
            line: 2
        ),
        // Unknown keys everywhere.
        ErrorCase(
            label: "unknown topic key",
            text: base(inserting: "retention = 5", after: 6),
            message: "unknown key 'retention' in [[topics]] 'a.b'; did you mean retention_ms?",
            line: 7
        ),
        ErrorCase(
            label: "unknown server key",
            text: base(replacing: 3, with: #"listn = "127.0.0.1:1""#),
            message: "unknown key 'listn' in [server]; did you mean listen?",
            line: 3
        ),
        ErrorCase(
            label: "unknown top-level table",
            text: base(replacing: 2, with: "[srever]"),
            message: "unknown key 'srever' in the top-level table; did you mean server?",
            line: 2
        ),
        ErrorCase(
            label: "unknown top-level key",
            text: base(inserting: "clases = 1", after: 1),
            message: "unknown key 'clases' in the top-level table; did you mean classes?",
            line: 2
        ),
        ErrorCase(
            label: "unknown role key",
            text: base(replacing: 10, with: #"subscribes = ["a.*"]"#),
            message: "unknown key 'subscribes' in [[roles]] 'r'; did you mean subscribe?",
            line: 10
        ),
        ErrorCase(
            label: "unknown principal key",
            text: base(replacing: 14, with: #"token = "x""#),
            message: "unknown key 'token' in [[principals]] 'c'; did you mean token_hash?",
            line: 14
        ),
        ErrorCase(
            label: "unknown key without a near match",
            text: base(inserting: "colour = 1", after: 9),
            message: "unknown key 'colour' in [[roles]] 'r'; allowed keys: name, clearance, publish, subscribe",
            line: 10
        ),
        // Types and formats.
        ErrorCase(
            label: "string for an integer",
            text: base(inserting: #"segment_bytes = "big""#, after: 6),
            message: "'segment_bytes' in [[topics]] 'a.b' must be an integer, got a string",
            line: 7
        ),
        ErrorCase(
            label: "float for an integer",
            text: base(inserting: "max_frame_bytes = 1.5", after: 3),
            message: "'max_frame_bytes' in [server] must be an integer, got a floating-point number",
            line: 4
        ),
        ErrorCase(
            label: "string for an array",
            text: base(replacing: 10, with: #"subscribe = "a.*""#),
            message: "'subscribe' in [[roles]] 'r' must be an array of strings, got a string",
            line: 10
        ),
        ErrorCase(
            label: "integer in a pattern array",
            text: base(replacing: 10, with: #"subscribe = ["a.*", 1]"#),
            message: "'subscribe' in [[roles]] 'r' must be an array of strings; element 2 is an integer",
            line: 10
        ),
        ErrorCase(
            label: "boolean for a string",
            text: base(replacing: 6, with: "class = true"),
            message: "'class' in [[topics]] 'a.b' must be a string, got a boolean",
            line: 6
        ),
        ErrorCase(
            label: "missing topic name",
            text: base(replacing: 5, with: ""),
            message: "missing key 'name' in [[topics]] #1",
            line: 4
        ),
        ErrorCase(
            label: "missing principal role",
            text: base(replacing: 13, with: ""),
            message: "missing key 'role' in [[principals]] 'c'",
            line: 11
        ),
        ErrorCase(
            label: "bad fsync",
            text: base(inserting: #"fsync = "sometimes""#, after: 6),
            message: #"'fsync' in [[topics]] 'a.b' must be "always", "never" or "interval:<milliseconds>""#,
            line: 7
        ),
        ErrorCase(
            label: "zero fsync interval",
            text: base(inserting: #"fsync = "interval:0""#, after: 6),
            message: "the fsync interval must be a positive number of milliseconds",
            line: 7
        ),
        ErrorCase(
            label: "bad compression",
            text: base(inserting: #"compression = "zstd""#, after: 6),
            message: #"'compression' in [[topics]] 'a.b' must be "lz4" or "none", got "zstd""#,
            line: 7
        ),
        // Listen.
        ErrorCase(
            label: "listen without port",
            text: base(replacing: 3, with: #"listen = "localhost""#),
            message: "'listen' in [server] must be HOST:PORT",
            line: 3
        ),
        ErrorCase(
            label: "listen port too large",
            text: base(replacing: 3, with: #"listen = "127.0.0.1:65536""#),
            message: "port in 0…65535",
            line: 3
        ),
        ErrorCase(
            label: "unbracketed IPv6 listen",
            text: base(replacing: 3, with: #"listen = "::1:7420""#),
            message: "\"[::1]:7420\"",
            line: 3
        ),
        ErrorCase(
            label: "listen with empty host",
            text: base(replacing: 3, with: #"listen = ":7420""#),
            message: "must be HOST:PORT",
            line: 3
        ),
        // Classes.
        ErrorCase(
            label: "empty classes",
            text: base(replacing: 1, with: "classes = []"),
            message: "'classes' is empty",
            line: 1
        ),
        ErrorCase(
            label: "duplicate class",
            text: base(replacing: 1, with: #"classes = ["non_phi", "phi", "non_phi"]"#),
            message: "class 'non_phi' is listed twice",
            line: 1
        ),
        // Topics.
        ErrorCase(
            label: "duplicate topic",
            text: base(appending: ["[[topics]]", #"name = "a.b""#, #"class = "phi""#]),
            message: "duplicate topic 'a.b'",
            line: 16
        ),
        ErrorCase(
            label: "topic name with a space",
            text: base(replacing: 5, with: #"name = "a b""#),
            message: "invalid topic name 'a b'",
            line: 5
        ),
        ErrorCase(
            label: "topic name with a slash",
            text: base(replacing: 5, with: #"name = "a/b""#),
            message: "invalid topic name 'a/b'",
            line: 5
        ),
        ErrorCase(
            label: "empty topic name",
            text: base(replacing: 5, with: #"name = """#),
            message: "invalid topic name ''",
            line: 5
        ),
        ErrorCase(
            label: "topic name of dots",
            text: base(replacing: 5, with: #"name = "..""#),
            message: "a name of only dots",
            line: 5
        ),
        ErrorCase(
            label: "reserved topic name",
            text: base(replacing: 5, with: #"name = "__offsets""#),
            message: "topic name '__offsets' is reserved",
            line: 5
        ),
        ErrorCase(
            label: "undeclared topic class",
            text: base(replacing: 6, with: #"class = "secret""#),
            message: "topic 'a.b' has class 'secret', which is not declared; declared classes: non_phi, phi",
            line: 6
        ),
        ErrorCase(
            label: "zero segment_bytes",
            text: base(inserting: "segment_bytes = 0", after: 6),
            message: "topic 'a.b': segment_bytes must be positive, got 0",
            line: 7
        ),
        ErrorCase(
            label: "page_cache_bytes under 16 MiB",
            text: base(inserting: "page_cache_bytes = 1048576", after: 6),
            message: "topic 'a.b': page_cache_bytes must be 0 (the kernel keeps what it likes) or at least 16777216 "
                + "(16 MiB), got 1048576",
            line: 7
        ),
        ErrorCase(
            label: "negative retention_ms",
            text: base(inserting: "retention_ms = -1", after: 6),
            message: "topic 'a.b': retention_ms must be positive, got -1",
            line: 7
        ),
        ErrorCase(
            label: "zero retention_bytes",
            text: base(inserting: "retention_bytes = 0", after: 6),
            message: "retention_bytes must be positive",
            line: 7
        ),
        ErrorCase(
            label: "zero segment_max_age_ms",
            text: base(inserting: "segment_max_age_ms = 0", after: 6),
            message: "segment_max_age_ms must be positive",
            line: 7
        ),
        // Server sizes.
        ErrorCase(
            label: "zero max_frame_bytes",
            text: base(inserting: "max_frame_bytes = 0", after: 3),
            message: "[server] max_frame_bytes must be in 1024…4294967295, got 0",
            line: 4
        ),
        ErrorCase(
            label: "zero max_records_per_publish",
            text: base(inserting: "max_records_per_publish = 0", after: 3),
            message: "[server] max_records_per_publish must be in 1…",
            line: 4
        ),
        ErrorCase(
            label: "zero max_connections",
            text: base(inserting: "max_connections = 0", after: 3),
            message: "[server] max_connections must be in 1…",
            line: 4
        ),
        ErrorCase(
            label: "zero handshake timeout",
            text: base(inserting: "handshake_timeout_seconds = 0", after: 3),
            message: "[server] handshake_timeout_seconds must be in 1…86400, got 0",
            line: 4
        ),
        ErrorCase(
            label: "frame timeout too long",
            text: base(inserting: "frame_timeout_seconds = 86401", after: 3),
            message: "[server] frame_timeout_seconds must be in 1…86400, got 86401",
            line: 4
        ),
        ErrorCase(
            label: "empty data_dir",
            text: base(inserting: #"data_dir = """#, after: 3),
            message: "[server] data_dir is empty",
            line: 4
        ),
        // Roles.
        ErrorCase(
            label: "duplicate role",
            text: base(appending: ["[[roles]]", #"name = "r""#, #"clearance = "phi""#]),
            message: "duplicate role 'r'",
            line: 16
        ),
        ErrorCase(
            label: "undeclared clearance",
            text: base(replacing: 9, with: #"clearance = "top_secret""#),
            message:
                "role 'r' has clearance 'top_secret', which is not a declared class; declared classes: non_phi, phi",
            line: 9
        ),
        ErrorCase(
            label: "empty pattern",
            text: base(replacing: 10, with: #"subscribe = ["a.*", ""]"#),
            message: "role 'r' has an empty subscribe pattern",
            line: 10
        ),
        ErrorCase(
            label: "pattern with a slash",
            text: base(inserting: #"publish = ["a/*"]"#, after: 9),
            message: "role 'r' has invalid publish pattern 'a/*'",
            line: 10
        ),
        ErrorCase(
            label: "pattern with a question mark",
            text: base(replacing: 10, with: #"subscribe = ["a.?"]"#),
            message: "invalid subscribe pattern 'a.?'",
            line: 10
        ),
        ErrorCase(
            label: "invalid role name",
            text: base(replacing: 8, with: #"name = "r r""#),
            message: "invalid role name 'r r'",
            line: 8
        ),
        // Principals.
        ErrorCase(
            label: "duplicate principal",
            text: base(appending: ["[[principals]]", #"client_id = "c""#, #"role = "r""#]),
            message: "duplicate principal 'c'",
            line: 16
        ),
        ErrorCase(
            label: "undeclared principal role",
            text: base(replacing: 13, with: #"role = "admin""#),
            message: "principal 'c' has role 'admin', which is not declared; declared roles: r",
            line: 13
        ),
        ErrorCase(
            label: "invalid client id",
            text: base(replacing: 12, with: #"client_id = "c d""#),
            message: "invalid client id 'c d'",
            line: 12
        ),
        ErrorCase(
            label: "uppercase token hash",
            text: base(replacing: 14, with: "token_hash = \"sha256:\(String(repeating: "A", count: 64))\""),
            message: "token_hash must be \"sha256:\" followed by 64 lowercase hex digits",
            line: 14
        ),
        ErrorCase(
            label: "short token hash",
            text: base(replacing: 14, with: "token_hash = \"sha256:\(String(repeating: "a", count: 63))\""),
            message: "token_hash must be",
            line: 14
        ),
        ErrorCase(
            label: "wrong hash algorithm",
            text: base(replacing: 14, with: "token_hash = \"md5:\(String(repeating: "a", count: 64))\""),
            message: "token_hash must be",
            line: 14
        ),
        ErrorCase(
            label: "bare hex token hash",
            text: base(replacing: 14, with: "token_hash = \"\(String(repeating: "a", count: 64))\""),
            message: "token_hash must be",
            line: 14
        ),
        // Policy-plane keys: vocabularies, topic rules, role purposes, scopes and capabilities.
        ErrorCase(
            label: "top-level purposes not an array",
            text: base(inserting: #"purposes = "care""#, after: 1),
            message: "'purposes' in the top-level table must be an array of strings, got a string",
            line: 2
        ),
        ErrorCase(
            label: "empty purposes vocabulary",
            text: base(inserting: "purposes = []", after: 1),
            message: "'purposes' is empty",
            line: 2
        ),
        ErrorCase(
            label: "duplicate consent scope in the vocabulary",
            text: base(inserting: #"consent_scopes = ["a", "a"]"#, after: 1),
            message: "'a' is listed twice in 'consent_scopes'",
            line: 2
        ),
        ErrorCase(
            label: "invalid purpose name",
            text: base(inserting: #"purposes = ["has space"]"#, after: 1),
            message: "invalid name 'has space' in 'purposes'",
            line: 2
        ),
        ErrorCase(
            label: "custom vocabulary without the defaults a topic falls back to",
            text: base(inserting: #"purposes = ["billing"]"#, after: 1),
            message: "topic 'a.b' names purpose 'care_coordination', which is not declared; declared purposes: billing "
                + "(top-level 'purposes'); without its own 'purposes' key it takes the default list, so give it one",
            line: 5
        ),
        ErrorCase(
            label: "topic with no purposes",
            text: base(inserting: "purposes = []", after: 6),
            message: "topic 'a.b' has no purposes",
            line: 7
        ),
        ErrorCase(
            label: "topic with an undeclared purpose",
            text: base(inserting: #"purposes = ["marketing"]"#, after: 6),
            message: "topic 'a.b' names purpose 'marketing', which is not declared",
            line: 7
        ),
        ErrorCase(
            label: "topic with a purpose twice",
            text: base(inserting: #"purposes = ["safety", "safety"]"#, after: 6),
            message: "topic 'a.b' lists 'safety' twice in purposes",
            line: 7
        ),
        ErrorCase(
            label: "topic with an undeclared consent scope",
            text: base(inserting: #"consent_scopes = ["sms"]"#, after: 6),
            message: "topic 'a.b' names consent scope 'sms', which is not declared",
            line: 7
        ),
        ErrorCase(
            label: "topic requiring consent_scope but allowing none",
            text: base(inserting: "consent_scopes = []", after: 6),
            message: "requires header 'consent_scope' but allows no consent scopes",
            line: 7
        ),
        ErrorCase(
            label: "required header with a reserved prefix",
            text: base(inserting: #"required_headers = ["broker-time"]"#, after: 6),
            message: "requires header 'broker-time', but headers starting with 'broker-' are set by the broker",
            line: 7
        ),
        ErrorCase(
            label: "required header with a space",
            text: base(inserting: #"required_headers = ["a b"]"#, after: 6),
            message: "invalid required header 'a b'",
            line: 7
        ),
        ErrorCase(
            label: "required header twice",
            text: base(inserting: #"required_headers = ["a", "a"]"#, after: 6),
            message: "topic 'a.b' lists 'a' twice in required_headers",
            line: 7
        ),
        ErrorCase(
            label: "required_headers not an array",
            text: base(inserting: #"required_headers = "event_type""#, after: 6),
            message: "'required_headers' in [[topics]] 'a.b' must be an array of strings",
            line: 7
        ),
        ErrorCase(
            label: "unknown payload format",
            text: base(inserting: #"payload = "xml""#, after: 6),
            message: "'payload' in [[topics]] 'a.b' must be \"json\"",
            line: 7
        ),
        ErrorCase(
            label: "allowed_fields on an opaque payload",
            text: base(inserting: "payload = \"any\"\nallowed_fields = [\"a\"]", after: 6),
            message: "has allowed_fields but payload = \"any\"",
            line: 8
        ),
        ErrorCase(
            label: "non-empty forbidden_fields on an opaque payload",
            text: base(inserting: "payload = \"any\"\nforbidden_fields = [\"dob\"]", after: 6),
            message: "has forbidden_fields but payload = \"any\"",
            line: 8
        ),
        ErrorCase(
            label: "a field both allowed and forbidden (default list, case ignored)",
            text: base(inserting: #"allowed_fields = ["event_type", "DOB"]"#, after: 6),
            message: "lists field 'DOB' in allowed_fields, but it is forbidden",
            line: 7
        ),
        ErrorCase(
            label: "empty forbidden field name",
            text: base(inserting: #"forbidden_fields = [""]"#, after: 6),
            message: "has a forbidden_fields entry of 0 bytes",
            line: 7
        ),
        ErrorCase(
            label: "allowed field twice",
            text: base(inserting: #"allowed_fields = ["a", "a"]"#, after: 6),
            message: "lists 'a' twice in allowed_fields",
            line: 7
        ),
        ErrorCase(
            label: "zero dedupe window",
            text: base(inserting: "dedupe_window_ms = 0", after: 6),
            message: "topic 'a.b': dedupe_window_ms must be positive, got 0",
            line: 7
        ),
        ErrorCase(
            label: "dedupe window of the wrong type",
            text: base(inserting: #"dedupe_window_ms = "1d""#, after: 6),
            message: "'dedupe_window_ms' in [[topics]] 'a.b' must be an integer, got a string",
            line: 7
        ),
        ErrorCase(
            label: "too many dedupe keys",
            text: base(inserting: "dedupe_max_keys = 100000001", after: 6),
            message: "topic 'a.b': dedupe_max_keys must be in 1…100000000, got 100000001",
            line: 7
        ),
        ErrorCase(
            label: "zero dedupe keys",
            text: base(inserting: "dedupe_max_keys = 0", after: 6),
            message: "dedupe_max_keys must be in 1…",
            line: 7
        ),
        ErrorCase(
            label: "misspelt topic key",
            text: base(inserting: "forbidden_field = []", after: 6),
            message: "unknown key 'forbidden_field' in [[topics]] 'a.b'; did you mean forbidden_fields?",
            line: 7
        ),
        ErrorCase(
            label: "unknown capability",
            text: base(inserting: #"capabilities = ["audit.write"]"#, after: 10),
            message:
                "unknown capability 'audit.write' in [[roles]] 'r'; capabilities are quarantine.read, "
                + "quarantine.replay, audit.read, admin",
            line: 11
        ),
        ErrorCase(
            label: "capability twice",
            text: base(inserting: #"capabilities = ["admin", "admin"]"#, after: 10),
            message: "role 'r' lists 'admin' twice in capabilities",
            line: 11
        ),
        ErrorCase(
            label: "capabilities not an array",
            text: base(inserting: #"capabilities = "admin""#, after: 10),
            message: "'capabilities' in [[roles]] 'r' must be an array of strings",
            line: 11
        ),
        ErrorCase(
            label: "role with an undeclared purpose",
            text: base(inserting: #"purposes = ["sales"]"#, after: 10),
            message: "role 'r' names purpose 'sales', which is not declared",
            line: 11
        ),
        ErrorCase(
            label: "role with an undeclared consent scope",
            text: base(inserting: #"consent_scopes = ["sms"]"#, after: 10),
            message: "role 'r' names consent scope 'sms', which is not declared",
            line: 11
        ),
        ErrorCase(
            label: "role with a consent scope twice",
            text: base(inserting: #"consent_scopes = ["educational", "educational"]"#, after: 10),
            message: "role 'r' lists 'educational' twice in consent_scopes",
            line: 11
        ),
        ErrorCase(
            label: "misspelt role key",
            text: base(inserting: #"capability = ["admin"]"#, after: 10),
            message: "unknown key 'capability' in [[roles]] 'r'; did you mean capabilities?",
            line: 11
        ),
    ]

    @Test("validation errors name the problem and its line", arguments: Self.errorCases)
    func validationError(_ testCase: ErrorCase) {
        do {
            let config = try ConfigLoader.parse(testCase.text)
            Issue.record("parsed: \(config)")
        } catch {
            #expect(error.message.contains(testCase.message), "\(error)")
            #expect(error.line == testCase.line, "\(error)")
        }
    }

    @Test("lines are counted correctly with CRLF line endings")
    func crlfLines() {
        let text = base(replacing: 6, with: #"class = "secret""#).replacingEvery("\n", with: "\r\n")
        let expected = ConfigError(
            "topic 'a.b' has class 'secret', which is not declared; declared classes: non_phi, phi",
            line: 6
        )
        #expect(throws: expected) { try ConfigLoader.parse(text) }
    }

    @Test("headers and keys inside a multi-line string do not confuse the line search")
    func multilineStringLines() {
        let text = document([
            #"classes = ["x"]"#,  // 1
            "[server]",  // 2
            #"data_dir = """"#,  // 3
            "[[topics]]",  // 4
            #"class = "fake""#,  // 5
            #"""""#,  // 6
            "[[topics]]",  // 7
            #"name = "t""#,  // 8
            #"class = "y""#,  // 9
        ])
        let expected = ConfigError("topic 't' has class 'y', which is not declared; declared classes: x", line: 9)
        #expect(throws: expected) { try ConfigLoader.parse(text) }
    }

    @Test("Policy.init validates configs built in code (no line to report)")
    func policyValidates() {
        var config = BrokerConfig(
            server: ServerSettings(),
            classes: ["low", "high"],
            topics: [TopicPolicy(name: "t", sensitivity: "medium")],
            roles: [],
            principals: []
        )
        let expected = ConfigError("topic 't' has class 'medium', which is not declared; declared classes: low, high")
        #expect(throws: expected) { try Policy(config: config) }
        config.topics[0].sensitivity = "high"
        config.server.listenPort = 70_000
        let error = #expect(throws: ConfigError.self) { try Policy(config: config) }
        #expect(error?.message.contains("port 70000") == true)
        #expect(error?.line == nil)
    }

    @Test("Policy.init requires well-formed token hashes")
    func policyRequiresWellFormedHashes() {
        let config = BrokerConfig(
            server: ServerSettings(),
            classes: ["x"],
            topics: [],
            roles: [RolePolicy(name: "r", clearance: "x", publish: [], subscribe: [])],
            principals: [PrincipalEntry(clientID: "c", role: "r", tokenHash: "sha256:00")]
        )
        let error = #expect(throws: ConfigError.self) { try Policy(config: config) }
        #expect(error?.message.contains("principal 'c': token_hash must be") == true)
    }

    @Test("withTokenHashes fills only missing hashes and keeps existing ones")
    func withTokenHashes() {
        let config = BrokerConfig(
            server: ServerSettings(),
            classes: ["x"],
            topics: [],
            roles: [RolePolicy(name: "r", clearance: "x", publish: [], subscribe: [])],
            principals: [
                PrincipalEntry(clientID: "has", role: "r", tokenHash: "sha256:kept"),
                PrincipalEntry(clientID: "missing", role: "r", tokenHash: nil),
                PrincipalEntry(clientID: "unlisted", role: "r", tokenHash: nil),
            ]
        )
        let filled = config.withTokenHashes(["has": "sha256:new", "missing": "sha256:filled"])
        #expect(filled.principals.map(\.tokenHash) == ["sha256:kept", "sha256:filled", nil])
        #expect(filled.principals.map(\.clientID) == config.principals.map(\.clientID))
        #expect(filled.topics == config.topics && filled.roles == config.roles && filled.server == config.server)
    }

    @Test(
        "unknown-key suggestions",
        arguments: [
            ("retention", ConfigDecoder.topicKeys, "retention_ms"),
            ("segment_byte", ConfigDecoder.topicKeys, "segment_bytes"),
            ("clas", ConfigDecoder.topicKeys, "class"),
            ("Listen", ConfigDecoder.serverKeys, "listen"),
            ("clientid", ConfigDecoder.principalKeys, "client_id"),
            ("colour", ConfigDecoder.roleKeys, nil),
        ]
    )
    func suggestions(key: String, allowed: [String], expected: String?) {
        #expect(TableReader.suggestion(for: key, among: allowed) == expected)
    }
}

extension String {
    /// Replaces every occurrence of `target` (these tests avoid Foundation).
    func replacingEvery(_ target: String, with replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
