/// Semantic checks on a decoded (or hand-built) configuration: names well-formed and unique, every reference
/// resolving, sizes positive. `problems` lists every problem found (`brokerd check-config`); `validate` throws the
/// first. Runs after `ConfigDecoder` in `ConfigLoader.parse` (with a locator, so errors carry
/// lines) and again in `Policy.init` (without one).
enum ConfigValidator {
    /// Longest topic name: topics become directory names, and LogStore accepts at most 200 characters.
    static let maxTopicNameLength = 200
    /// Longest class, role or client id.
    static let maxIdentifierLength = 255
    /// `max_frame_bytes` must leave room for a HELLO with a token.
    static let minFrameBytes = 1024

    /// Throws the first problem, in the order server, classes, topics, roles, principals, limiters, TLS.
    static func validate(_ config: BrokerConfig, locator: ConfigLineLocator?) throws(ConfigError) {
        if let first = Self.problems(config, locator: locator).first { throw first }
    }

    /// Every problem, in the order server, metrics, classes, topics, roles, principals, limiters, TLS: the first one
    /// of the server and metrics sections, the class list, each vocabulary, topic, role, principal and limiter, and of
    /// the TLS settings (a later check of the same entry may depend on an earlier one). With no usable class list
    /// nothing further is checked.
    static func problems(_ config: BrokerConfig, locator: ConfigLineLocator?) -> [ConfigError] {
        var problems = ConfigProblems()
        problems.check { () throws(ConfigError) in try Self.validateServer(config.server, locator: locator) }
        problems.check { () throws(ConfigError) in
            try Self.validateMetrics(config.metrics, server: config.server, locator: locator)
        }
        let classLine = locator?.line(table: "", key: "classes")
        guard !config.classes.isEmpty else {
            problems.add(
                ConfigError(
                    "'classes' is empty; list the sensitivity classes from least to most sensitive, "
                        + "e.g. [\"non_phi\", \"deidentified\", \"pseudonymous\", \"phi\"]",
                    line: classLine
                )
            )
            return problems.errors
        }
        var classes = Set<String>()
        problems.check { () throws(ConfigError) in
            for name in config.classes {
                guard Self.isIdentifier(name, extra: []) else {
                    throw ConfigError(
                        "invalid class name '\(name)' in 'classes'; use 1…\(Self.maxIdentifierLength) of "
                            + "A-Z a-z 0-9 . _ -",
                        line: classLine
                    )
                }
                guard classes.insert(name).inserted else {
                    throw ConfigError(
                        "class '\(name)' is listed twice in 'classes'; each class has one rank",
                        line: classLine
                    )
                }
            }
        }
        classes = Set(config.classes)
        let declaredClasses = config.classes.joined(separator: ", ")
        var purposes = Set(config.purposes)
        var scopes = Set(config.consentScopes)
        problems.check { () throws(ConfigError) in
            purposes = try Self.validateVocabulary(config.purposes, key: "purposes", locator: locator)
        }
        problems.check { () throws(ConfigError) in
            scopes = try Self.validateVocabulary(config.consentScopes, key: "consent_scopes", locator: locator)
        }
        let mostSensitive = config.classes[config.classes.count - 1]

        var topics = Set<String>()
        for (index, topic) in config.topics.enumerated() {
            problems.check { () throws(ConfigError) in
                try Self.validateTopic(
                    topic,
                    line: { locator?.line(table: "topics", index: index, key: $0) },
                    seen: &topics,
                    classes: classes,
                    declaredClasses: declaredClasses,
                    purposes: purposes,
                    scopes: scopes,
                    mostSensitive: mostSensitive
                )
            }
        }

        var roles = Set<String>()
        for (index, role) in config.roles.enumerated() {
            problems.check { () throws(ConfigError) in
                try Self.validateRole(
                    role,
                    line: { locator?.line(table: "roles", index: index, key: $0) },
                    seen: &roles,
                    classes: classes,
                    declaredClasses: declaredClasses,
                    mostSensitive: mostSensitive,
                    purposes: purposes,
                    scopes: scopes
                )
            }
        }
        let declaredRoles = config.roles.map(\.name).joined(separator: ", ")
        roles = Set(config.roles.map(\.name))

        var clients = Set<String>()
        for (index, principal) in config.principals.enumerated() {
            problems.check { () throws(ConfigError) in
                try Self.validatePrincipal(
                    principal,
                    line: { locator?.line(table: "principals", index: index, key: $0) },
                    seen: &clients,
                    roles: roles,
                    declaredRoles: declaredRoles
                )
            }
        }
        problems.append(
            contentsOf: Self.limiterProblems(
                config.limiters,
                topics: config.topics,
                classes: config.classes,
                scopes: scopes,
                locator: locator
            )
        )
        problems.check { () throws(ConfigError) in try Self.validateTLS(config, locator: locator) }
        return problems.errors
    }

    /// One `[[topics]]` entry; `seen` collects the names so far.
    private static func validateTopic(
        _ topic: TopicPolicy,
        line: (String) -> Int?,
        seen topics: inout Set<String>,
        classes: Set<String>,
        declaredClasses: String,
        purposes: Set<String>,
        scopes: Set<String>,
        mostSensitive: String
    ) throws(ConfigError) {
        try Self.validateTopicName(topic.name, line: line("name"))
        guard topics.insert(topic.name).inserted else {
            throw ConfigError("duplicate topic '\(topic.name)'; topic names must be unique", line: line("name"))
        }
        guard classes.contains(topic.sensitivity) else {
            throw ConfigError(
                "topic '\(topic.name)' has class '\(topic.sensitivity)', which is not declared; "
                    + "declared classes: \(declaredClasses)",
                line: line("class")
            )
        }
        if case .interval(let milliseconds) = topic.fsync, milliseconds <= 0 {
            throw ConfigError(
                "topic '\(topic.name)': the fsync interval must be a positive number of milliseconds, "
                    + "got \(milliseconds)",
                line: line("fsync")
            )
        }
        try Self.requirePositive(topic.segmentBytes, "segment_bytes", of: topic.name, line: line("segment_bytes"))
        let optionals: [(String, Int64?)] = [
            ("segment_max_age_ms", topic.segmentMaxAgeMillis), ("retention_bytes", topic.retentionBytes),
            ("retention_ms", topic.retentionMillis),
        ]
        for case (let key, let value?) in optionals {
            try Self.requirePositive(value, key, of: topic.name, line: line(key))
        }
        if topic.pageCacheBytes != 0 && topic.pageCacheBytes < TopicPolicy.minPageCacheBytes {
            throw ConfigError(
                "topic '\(topic.name)': page_cache_bytes must be 0 (the kernel keeps what it likes) or at least "
                    + "\(TopicPolicy.minPageCacheBytes) (16 MiB), got \(topic.pageCacheBytes)",
                line: line("page_cache_bytes")
            )
        }
        try Self.validateTopicRules(
            topic,
            purposes: purposes,
            scopes: scopes,
            mostSensitive: mostSensitive,
            line: line
        )
    }

    /// One `[[roles]]` entry; `seen` collects the names so far.
    private static func validateRole(
        _ role: RolePolicy,
        line: (String) -> Int?,
        seen roles: inout Set<String>,
        classes: Set<String>,
        declaredClasses: String,
        mostSensitive: String,
        purposes: Set<String>,
        scopes: Set<String>
    ) throws(ConfigError) {
        guard Self.isIdentifier(role.name, extra: []) else {
            throw ConfigError(
                "invalid role name '\(role.name)'; use 1…\(Self.maxIdentifierLength) of A-Z a-z 0-9 . _ -",
                line: line("name")
            )
        }
        guard roles.insert(role.name).inserted else {
            throw ConfigError("duplicate role '\(role.name)'; role names must be unique", line: line("name"))
        }
        guard classes.contains(role.clearance) else {
            throw ConfigError(
                "role '\(role.name)' has clearance '\(role.clearance)', which is not a declared class; "
                    + "declared classes: \(declaredClasses) (a clearance cannot exceed the most sensitive, "
                    + "'\(mostSensitive)')",
                line: line("clearance")
            )
        }
        let owner = "role '\(role.name)'"
        try Self.requireDeclared(role.purposes, in: purposes, of: owner, key: "purposes", line: line("purposes"))
        try Self.requireDeclared(
            role.consentScopes,
            in: scopes,
            of: owner,
            key: "consent_scopes",
            line: line("consent_scopes")
        )
        try Self.requireUnique(
            role.capabilities.map(\.rawValue),
            of: owner,
            key: "capabilities",
            line: line("capabilities")
        )
        for (key, patterns) in [("publish", role.publish), ("subscribe", role.subscribe)] {
            for pattern in patterns {
                guard !pattern.isEmpty else {
                    throw ConfigError(
                        "role '\(role.name)' has an empty \(key) pattern; use \"*\" for every topic",
                        line: line(key)
                    )
                }
                guard pattern.utf8.allSatisfy({ Self.isNameByte($0) || $0 == UInt8(ascii: "*") }) else {
                    throw ConfigError(
                        "role '\(role.name)' has invalid \(key) pattern '\(pattern)'; patterns use "
                            + "A-Z a-z 0-9 . _ - and * (any run of characters)",
                        line: line(key)
                    )
                }
            }
        }
    }

    /// One `[[principals]]` entry; `seen` collects the client ids so far.
    private static func validatePrincipal(
        _ principal: PrincipalEntry,
        line: (String) -> Int?,
        seen clients: inout Set<String>,
        roles: Set<String>,
        declaredRoles: String
    ) throws(ConfigError) {
        guard Self.isIdentifier(principal.clientID, extra: [UInt8(ascii: "@")]) else {
            throw ConfigError(
                "invalid client id '\(principal.clientID)'; use 1…\(Self.maxIdentifierLength) of "
                    + "A-Z a-z 0-9 . _ - @",
                line: line("client_id")
            )
        }
        guard clients.insert(principal.clientID).inserted else {
            throw ConfigError(
                "duplicate principal '\(principal.clientID)'; client ids must be unique",
                line: line("client_id")
            )
        }
        guard roles.contains(principal.role) else {
            throw ConfigError(
                "principal '\(principal.clientID)' has role '\(principal.role)', which is not declared; "
                    + "declared roles: \(declaredRoles.isEmpty ? "(none)" : declaredRoles)",
                line: line("role")
            )
        }
        if let tokenHash = principal.tokenHash, Self.decodeTokenHash(tokenHash) == nil {
            throw ConfigError(
                Self.badTokenHashMessage(clientID: principal.clientID, tokenHash),
                line: line("token_hash")
            )
        }
    }

    /// Largest `dedupe_max_keys`: keys are kept in memory, and 100 million is already several GiB.
    static let maxDedupeKeys = 100_000_000
    /// Longest header or field name in a topic's rules.
    static let maxFieldNameLength = 255

    /// A declared vocabulary (`purposes`, `consent_scopes`): non-empty, identifiers, no duplicates.
    private static func validateVocabulary(
        _ names: [String],
        key: String,
        locator: ConfigLineLocator?
    ) throws(ConfigError) -> Set<String> {
        let line = locator?.line(table: "", key: key)
        guard !names.isEmpty else {
            throw ConfigError(
                "'\(key)' is empty; declare the \(key.replacingUnderscores) the policy may use "
                    + "(leave the key out for the defaults)",
                line: line
            )
        }
        var seen = Set<String>()
        for name in names {
            guard Self.isIdentifier(name, extra: []) else {
                throw ConfigError(
                    "invalid name '\(name)' in '\(key)'; use 1…\(Self.maxIdentifierLength) of A-Z a-z 0-9 . _ -",
                    line: line
                )
            }
            guard seen.insert(name).inserted else {
                throw ConfigError("'\(name)' is listed twice in '\(key)'", line: line)
            }
        }
        return seen
    }

    /// The policy-plane keys of one topic: purposes, consent scopes, headers, payload and field rules, dedupe.
    private static func validateTopicRules(
        _ topic: TopicPolicy,
        purposes: Set<String>,
        scopes: Set<String>,
        mostSensitive: String,
        line: (String) -> Int?
    ) throws(ConfigError) {
        let owner = "topic '\(topic.name)'"
        guard !topic.purposes.isEmpty else {
            throw ConfigError(
                "\(owner) has no purposes; every topic states why its records exist, e.g. purposes = [\"operations\"]",
                line: line("purposes")
            )
        }
        try Self.requireDeclared(topic.purposes, in: purposes, of: owner, key: "purposes", line: line("purposes"))
        try Self.requireDeclared(
            topic.consentScopes,
            in: scopes,
            of: owner,
            key: "consent_scopes",
            line: line("consent_scopes")
        )
        try Self.requireUnique(
            topic.requiredHeaders,
            of: owner,
            key: "required_headers",
            line: line("required_headers")
        )
        for header in topic.requiredHeaders {
            guard !header.isEmpty, header.utf8.count <= Self.maxFieldNameLength,
                header.utf8.allSatisfy(Self.isNameByte)
            else {
                throw ConfigError(
                    "\(owner) has invalid required header '\(header)'; use 1…\(Self.maxFieldNameLength) of "
                        + "A-Z a-z 0-9 . _ -",
                    line: line("required_headers")
                )
            }
            if let prefix = RecordRules.reservedPrefix(of: header) {
                throw ConfigError(
                    "\(owner) requires header '\(header)', but headers starting with '\(prefix)' are set by the "
                        + "broker and refused from producers",
                    line: line("required_headers")
                )
            }
        }
        if topic.requiredHeaders.contains(RecordRules.consentScopeHeader) && topic.consentScopes.isEmpty {
            throw ConfigError(
                "\(owner) requires header '\(RecordRules.consentScopeHeader)' but allows no consent scopes, so no "
                    + "record could pass; list the scopes in consent_scopes",
                line: line("consent_scopes")
            )
        }
        for (key, fields) in [("allowed_fields", topic.allowedFields), ("forbidden_fields", topic.forbiddenFields)] {
            guard let fields else { continue }
            try Self.requireUnique(fields, of: owner, key: key, line: line(key))
            for field in fields where field.isEmpty || field.utf8.count > Self.maxFieldNameLength {
                throw ConfigError(
                    "\(owner) has a \(key) entry of \(field.utf8.count) bytes; field names are "
                        + "1…\(Self.maxFieldNameLength) bytes",
                    line: line(key)
                )
            }
            if topic.payload == .any && (key == "allowed_fields" || !fields.isEmpty) {
                throw ConfigError(
                    "\(owner) has \(key) but payload = \"any\"; field rules need payload = \"json\"",
                    line: line(key)
                )
            }
        }
        if let allowed = topic.allowedFields {
            let forbidden = Self.forbiddenFields(of: topic, mostSensitive: mostSensitive)
            let folded = Set(forbidden.map(RecordRules.asciiLowercased))
            if let both = allowed.first(where: { folded.contains(RecordRules.asciiLowercased($0)) }) {
                throw ConfigError(
                    "\(owner) lists field '\(both)' in allowed_fields, but it is forbidden "
                        + "(forbidden_fields: \(forbidden.joined(separator: ", ")))",
                    line: line("allowed_fields")
                )
            }
        }
        guard topic.dedupeWindowMillis > 0 else {
            throw ConfigError(
                "\(owner): dedupe_window_ms must be positive, got \(topic.dedupeWindowMillis)",
                line: line("dedupe_window_ms")
            )
        }
        guard (1...Self.maxDedupeKeys).contains(topic.dedupeMaxKeys) else {
            throw ConfigError(
                "\(owner): dedupe_max_keys must be in 1…\(Self.maxDedupeKeys), got \(topic.dedupeMaxKeys)",
                line: line("dedupe_max_keys")
            )
        }
    }

    /// The forbidden fields that apply to `topic`: its own list, or the class-based default (`PolicyDefaults`
    /// on every class but the most sensitive; nothing on the most sensitive or when the payload is opaque).
    static func forbiddenFields(of topic: TopicPolicy, mostSensitive: String) -> [String] {
        if let fields = topic.forbiddenFields { return fields }
        guard topic.payload == .json, topic.sensitivity != mostSensitive else { return [] }
        return PolicyDefaults.forbiddenFields
    }

    /// Every name in `names` is in `declared` and appears once.
    static func requireDeclared(
        _ names: [String],
        in declared: Set<String>,
        of owner: String,
        key: String,
        line: Int?
    ) throws(ConfigError) {
        if let unknown = names.first(where: { !declared.contains($0) }) {
            let defaults = key == "purposes" ? PolicyDefaults.purposes : PolicyDefaults.consentScopes
            let hint =
                names == defaults
                ? "; without its own '\(key)' key it takes the default list, so give it one" : ""
            throw ConfigError(
                "\(owner) names \(key.replacingUnderscores.dropLast()) '\(unknown)', which is not declared; "
                    + "declared \(key.replacingUnderscores): \(declared.sorted().joined(separator: ", ")) "
                    + "(top-level '\(key)')\(hint)",
                line: line
            )
        }
        try Self.requireUnique(names, of: owner, key: key, line: line)
    }

    /// No name appears twice in `names`.
    static func requireUnique(_ names: [String], of owner: String, key: String, line: Int?) throws(ConfigError)
    {
        var seen = Set<String>()
        for name in names where !seen.insert(name).inserted {
            throw ConfigError("\(owner) lists '\(name)' twice in \(key)", line: line)
        }
    }

    /// The 32 digest bytes of `sha256:<64 lowercase hex>`, or nil when it is not exactly that.
    static func decodeTokenHash(_ text: String) -> [UInt8]? {
        guard text.hasPrefix("sha256:") else { return nil }
        let hex = text.dropFirst("sha256:".count)
        guard hex.utf8.count == 64 else { return nil }
        return ByteEncoding.decodeLowercaseHex(hex)
    }

    /// The error for a malformed `token_hash` (the hash itself is not secret, but it is not repeated either).
    static func badTokenHashMessage(clientID: String, _ tokenHash: String) -> String {
        "principal '\(clientID)': token_hash must be \"sha256:\" followed by 64 lowercase hex digits "
            + "(\(tokenHash.utf8.count) characters given); compute it with printf %s \"$TOKEN\" | sha256sum"
    }

    private static func validateServer(_ server: ServerSettings, locator: ConfigLineLocator?) throws(ConfigError) {
        func line(_ key: String) -> Int? { locator?.line(table: "server", key: key) }
        guard !server.listenHost.isEmpty, (0...65535).contains(server.listenPort) else {
            throw ConfigError(
                "[server] listen: port \(server.listenPort) on '\(server.listenHost)' is not usable; "
                    + "the host must be non-empty and the port in 0…65535",
                line: line("listen")
            )
        }
        guard !server.dataDir.isEmpty else {
            throw ConfigError("[server] data_dir is empty; give a directory path", line: line("data_dir"))
        }
        let limits: [(key: String, value: Int, range: ClosedRange<Int>)] = [
            ("max_frame_bytes", server.maxFrameBytes, Self.minFrameBytes...Int(UInt32.max)),
            ("max_records_per_publish", server.maxRecordsPerPublish, 1...Int(UInt32.max)),
            ("max_connections", server.maxConnections, 1...Int(Int32.max)),
            ("handshake_timeout_seconds", server.handshakeTimeoutSeconds, 1...86_400),
            ("frame_timeout_seconds", server.frameTimeoutSeconds, 1...86_400),
        ]
        for limit in limits where !limit.range.contains(limit.value) {
            throw ConfigError(
                "[server] \(limit.key) must be in \(limit.range.lowerBound)…\(limit.range.upperBound), "
                    + "got \(limit.value)",
                line: line(limit.key)
            )
        }
    }

    private static func validateTopicName(_ name: String, line: Int?) throws(ConfigError) {
        guard !name.isEmpty, name.utf8.count <= Self.maxTopicNameLength, name.utf8.allSatisfy(Self.isNameByte) else {
            throw ConfigError(
                "invalid topic name '\(name)'; use 1…\(Self.maxTopicNameLength) of A-Z a-z 0-9 . _ -",
                line: line
            )
        }
        guard !name.hasPrefix("__") else {
            throw ConfigError(
                "topic name '\(name)' is reserved: names starting with '__' are for the broker's own use",
                line: line
            )
        }
        guard !name.utf8.allSatisfy({ $0 == UInt8(ascii: ".") }) else {
            throw ConfigError("invalid topic name '\(name)'; a name of only dots is not a usable directory", line: line)
        }
    }

    private static func requirePositive(
        _ value: Int64,
        _ key: String,
        of topic: String,
        line: Int?
    ) throws(ConfigError) {
        guard value > 0 else {
            throw ConfigError("topic '\(topic)': \(key) must be positive, got \(value)", line: line)
        }
    }

    /// `[A-Za-z0-9._-]`, the alphabet of topic, class and role names.
    static func isNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            return true
        default:
            return false
        }
    }

    private static func isIdentifier(_ text: String, extra: [UInt8]) -> Bool {
        !text.isEmpty && text.utf8.count <= Self.maxIdentifierLength
            && text.utf8.allSatisfy { Self.isNameByte($0) || extra.contains($0) }
    }
}

extension String {
    /// `consent_scopes` → `consent scopes`, for messages.
    fileprivate var replacingUnderscores: String {
        String(self.map { $0 == "_" ? " " : $0 })
    }
}

/// Problems gathered while checking a config, so that one run reports all of them.
struct ConfigProblems {
    /// The problems so far, in the order found.
    private(set) var errors: [ConfigError] = []
    /// Names of `[[…]]` entries that failed to decode and were left out of the config.
    var leftOut: Set<String> = []

    /// Runs `body`, recording the problem it throws.
    mutating func check(_ body: () throws(ConfigError) -> Void) {
        do {
            try body()
        } catch {
            self.errors.append(error)
        }
    }

    /// Records `error`.
    mutating func add(_ error: ConfigError) {
        self.errors.append(error)
    }

    /// Records `errors`.
    mutating func append(contentsOf errors: [ConfigError]) {
        self.errors.append(contentsOf: errors)
    }
}
