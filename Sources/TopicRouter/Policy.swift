import Crypto

/// An authenticated client.
package struct Principal: Equatable, Sendable {
    /// The client id it authenticated as.
    package var clientID: String
    /// Its role's name.
    package var role: String
    /// The most sensitive class its role may read.
    package var clearance: String
    /// Creates a principal.
    package init(clientID: String, role: String, clearance: String) {
        self.clientID = clientID
        self.role = role
        self.clearance = clearance
    }
}

/// Why a request was refused; maps one to one onto wire error codes in BrokerServer.
package enum RefusalCode: Equatable, Sendable {
    /// The credentials did not check out.
    case unauthenticated
    /// The role may not read the topic (pattern or clearance).
    case notCleared
    /// The role may not publish to the topic.
    case notAuthorized
    /// The topic is not declared.
    case unknownTopic
}

/// A routing decision.
package enum Decision: Equatable, Sendable {
    /// Go ahead.
    case allow
    /// Refuse with `code`; `reason` names the failing condition and is fit to show the client and to log.
    case refuse(RefusalCode, reason: String)
}

/// The outcome of HELLO's credential check.
package enum AuthDecision: Equatable, Sendable {
    /// The token matched; serve this principal.
    case authenticated(Principal)
    /// `reason` is for the broker's log; clients only ever see a generic message.
    case refused(reason: String)
}

/// Immutable, validated policy: pure decisions over (principal, topic, record headers, value).
///
/// Everything a decision needs is precomputed at init: topics (declared and reserved) by name with their class
/// rank, purposes, allowed consent scopes and field rules; each role's compiled patterns, clearance rank, purposes,
/// receivable scopes and capabilities; each principal's decoded token digest; and the policy version. Decisions
/// are then dictionary look-ups, pattern matching and byte comparisons, with no I/O and no allocation except the
/// message of a refusal, quarantine or withholding.
///
/// A final class with only `let`s (so immutable and `Sendable`): every request reads the current policy and hands
/// it on, and a copy of the struct it was cost a retain and a release of each of its dozen references.
package final class Policy: Sendable {
    /// The validated configuration this policy was built from.
    package let config: BrokerConfig
    /// `pv-` + 12 lowercase hex digits of the SHA-256 of the effective policy's canonical rendering.
    ///
    /// The rendering covers everything that affects a decision: classes in rank order, the purpose and scope
    /// vocabularies, every topic's class, storage, retention, purposes, scopes, required headers, payload format,
    /// allowed and effective forbidden fields and dedupe settings, every role's clearance, patterns, purposes,
    /// scopes and capabilities, every principal's role and token hash, and every limiter. Sets (and the topic,
    /// role, principal and limiter lists) are sorted and every string is length-prefixed, so the version does not
    /// depend on file order, key order, whitespace or comments, and changes whenever a rule does. `[server]` settings are not policy and are
    /// not included.
    package let policyVersion: String
    private let topics: [String: CompiledTopic]
    private let classRank: [String: Int]
    private let roles: [String: CompiledRole]
    private let credentials: [String: StoredCredential]
    /// Principals by the certificate identity (`cert_identity`) that authenticates them.
    private let certificatePrincipals: [CertificateIdentity: Principal]
    /// Client ids of principals that have a `cert_identity` and no `token_hash`: no token authenticates them.
    private let certificateOnly: Set<String>
    /// The declared consent scopes' UTF-8, indexed like `CompiledTopic.allowedScopes` and `CompiledRole.scopes`.
    private let scopeBytes: [[UInt8]]
    /// The validated `[[limiters]]`, in file order.
    package let limiters: [LimiterDeclaration]
    /// Per declared topic, the limiters that apply to it, publish and delivery, in file order.
    private let limitersByTopic: [String: (publish: [LimiterDeclaration], delivery: [LimiterDeclaration])]

    /// The reserved topic that holds quarantined records.
    package static let quarantineTopic = "__quarantine"
    /// The reserved topic that holds the audit ledger.
    package static let auditTopic = "__audit"
    /// The names of the reserved topics.
    package static let reservedTopicNames = [quarantineTopic, auditTopic]

    /// A topic ready for decisions. A class, so that looking one up per record costs one retain instead of a copy
    /// of every field (callgrind: about 1,000 instructions per published record as a struct).
    fileprivate final class CompiledTopic: Sendable {
        /// The effective topic (`forbiddenFields` resolved).
        let policy: TopicPolicy
        let rank: Int
        let purposes: Set<String>
        /// Indexed by consent scope index.
        let allowedScopes: [Bool]
        let requiresConsent: Bool
        /// Forbidden field names, ASCII-lowercased.
        let forbidden: [[UInt8]]
        /// Bit `n` is set when a forbidden name is `n` bytes long (names of 64 bytes or more set bit 63), so most
        /// keys are ruled out without a comparison.
        let forbiddenLengths: UInt64
        /// Allowed top-level fields, or nil for any.
        let allowed: [[UInt8]]?
        /// For a reserved topic, the capability that grants reading it.
        let readCapability: Capability?
        /// The header names the header checks look for, each once: the required headers (in order), then
        /// `dedupe-key` and `consent_scope` unless required. With their UTF-8 lengths, so that most headers are told
        /// apart by length before a name is compared.
        let watchedNames: [String]
        let watchedLengths: [Int]
        /// Where `dedupe-key` and `consent_scope` are in `watchedNames` (required headers keep their index there).
        let dedupeKeyWatch: Int
        let consentScopeWatch: Int

        /// The bit of `forbiddenLengths` for a name of `length` bytes.
        static func lengthBit(_ length: Int) -> UInt64 { 1 << UInt64(min(length, 63)) }

        init(
            policy: TopicPolicy, rank: Int, purposes: Set<String>, allowedScopes: [Bool], requiresConsent: Bool,
            forbidden: [[UInt8]], allowed: [[UInt8]]?, readCapability: Capability?
        ) {
            self.policy = policy
            self.rank = rank
            self.purposes = purposes
            self.allowedScopes = allowedScopes
            self.requiresConsent = requiresConsent
            self.forbidden = forbidden
            self.forbiddenLengths = forbidden.reduce(0) { $0 | Self.lengthBit($1.count) }
            self.allowed = allowed
            self.readCapability = readCapability
            var watched = policy.requiredHeaders
            for name in [RecordRules.dedupeKeyHeader, RecordRules.consentScopeHeader] where !watched.contains(name) {
                watched.append(name)
            }
            self.watchedNames = watched
            self.watchedLengths = watched.map(\.utf8.count)
            self.dedupeKeyWatch = watched.firstIndex(of: RecordRules.dedupeKeyHeader)!
            self.consentScopeWatch = watched.firstIndex(of: RecordRules.consentScopeHeader)!
        }

        /// The index in `watchedNames` of `name`, or -1: one length comparison per watched name, and a name
        /// comparison only where the lengths agree.
        @inline(__always)
        func watchIndex(_ name: String) -> Int {
            let length = name.utf8.count
            for index in 0..<self.watchedLengths.count
            where self.watchedLengths[index] == length && self.watchedNames[index] == name {
                return index
            }
            return -1
        }
    }

    /// A role ready for decisions (a class for the same reason as `CompiledTopic`).
    private final class CompiledRole: Sendable {
        let policy: RolePolicy
        let name: String
        let clearance: String
        let clearanceRank: Int
        let publish: [TopicPattern]
        let subscribe: [TopicPattern]
        let purposes: Set<String>
        /// Indexed by consent scope index.
        let scopes: [Bool]
        let capabilities: Set<Capability>

        init(
            policy: RolePolicy, name: String, clearance: String, clearanceRank: Int, publish: [TopicPattern],
            subscribe: [TopicPattern], purposes: Set<String>, scopes: [Bool], capabilities: Set<Capability>
        ) {
            self.policy = policy
            self.name = name
            self.clearance = clearance
            self.clearanceRank = clearanceRank
            self.publish = publish
            self.subscribe = subscribe
            self.purposes = purposes
            self.scopes = scopes
            self.capabilities = capabilities
        }
    }

    /// What authentication compares against for one client id.
    private struct StoredCredential: Sendable {
        var digest: [UInt8]
        var principal: Principal
    }

    /// Compared against when the client id is unknown, so that an unknown id and a wrong token do the same work.
    /// Its value is irrelevant: an unknown id is refused whatever the comparison says.
    private static let dummyDigest: [UInt8] = Array(repeating: 0xa5, count: SHA256.byteCount)

    /// Builds the policy; every principal must have a token hash or a certificate identity.
    ///
    /// Runs the same semantic validation as `ConfigLoader.parse` (for configs built in code), then requires a
    /// well-formed `token_hash` on every principal. Errors carry no line: there is no text to point into.
    package init(config: BrokerConfig) throws(ConfigError) {
        try ConfigValidator.validate(config, locator: nil)
        var credentials: [String: StoredCredential] = [:]
        var rank: [String: Int] = [:]
        for (index, name) in config.classes.enumerated() { rank[name] = index }
        var scopeIndex: [String: Int] = [:]
        for (index, name) in config.consentScopes.enumerated() { scopeIndex[name] = index }
        func scopeFlags(_ names: [String]) -> [Bool] {
            var flags = [Bool](repeating: false, count: config.consentScopes.count)
            for name in names { flags[scopeIndex[name]!] = true }  // validated: every scope is declared
            return flags
        }
        var roles: [String: CompiledRole] = [:]
        for role in config.roles {
            roles[role.name] = CompiledRole(
                policy: role,
                name: role.name,
                clearance: role.clearance,
                clearanceRank: rank[role.clearance]!,  // validated: every clearance is a declared class
                publish: role.publish.map(TopicPattern.init),
                subscribe: role.subscribe.map(TopicPattern.init),
                purposes: Set(role.purposes),
                scopes: scopeFlags(role.consentScopes),
                capabilities: Set(role.capabilities)
            )
        }
        var certificatePrincipals: [CertificateIdentity: Principal] = [:]
        var certificateOnly = Set<String>()
        for principal in config.principals {
            let role = roles[principal.role]!  // validated: every principal's role is declared
            let resolved = Principal(clientID: principal.clientID, role: role.name, clearance: role.clearance)
            if let text = principal.certIdentity {
                certificatePrincipals[CertificateIdentity(parsing: text)!] = resolved  // validated: well-formed, unique
                if principal.tokenHash == nil {
                    certificateOnly.insert(principal.clientID)
                    continue
                }
            }
            guard let tokenHash = principal.tokenHash else {
                throw ConfigError(
                    "principal '\(principal.clientID)' has no token_hash; set token_hash = \"sha256:<64 hex>\" "
                        + "(printf %s \"$TOKEN\" | sha256sum) or start brokerd so it generates a token"
                )
            }
            guard let digest = ConfigValidator.decodeTokenHash(tokenHash) else {
                throw ConfigError(ConfigValidator.badTokenHashMessage(clientID: principal.clientID, tokenHash))
            }
            credentials[principal.clientID] = StoredCredential(digest: digest, principal: resolved)
        }
        let mostSensitive = config.classes[config.classes.count - 1]  // validated: classes is not empty
        var topics: [String: CompiledTopic] = [:]
        for declared in config.topics {
            var effective = declared
            effective.forbiddenFields = ConfigValidator.forbiddenFields(of: declared, mostSensitive: mostSensitive)
            topics[declared.name] = CompiledTopic(
                policy: effective,
                rank: rank[declared.sensitivity]!,  // validated: every topic class is declared
                purposes: Set(declared.purposes),
                allowedScopes: scopeFlags(declared.consentScopes),
                requiresConsent: declared.requiredHeaders.contains(RecordRules.consentScopeHeader),
                forbidden: effective.forbiddenFields!.map { Array(RecordRules.asciiLowercased($0).utf8) },
                allowed: declared.allowedFields.map { $0.map { Array($0.utf8) } },
                readCapability: nil
            )
        }
        for (name, capability) in [(Self.quarantineTopic, Capability.quarantineRead), (Self.auditTopic, .auditRead)] {
            topics[name] = CompiledTopic(
                policy: Self.reservedTopicPolicy(name, config: config),
                rank: config.classes.count - 1,
                purposes: Set(config.purposes),
                allowedScopes: [Bool](repeating: false, count: config.consentScopes.count),
                requiresConsent: false,
                forbidden: [],
                allowed: nil,
                readCapability: capability
            )
        }
        self.config = config
        self.classRank = rank
        self.roles = roles
        self.credentials = credentials
        self.certificatePrincipals = certificatePrincipals
        self.certificateOnly = certificateOnly
        self.topics = topics
        self.scopeBytes = config.consentScopes.map { Array($0.utf8) }
        self.limiters = config.limiters
        var limitersByTopic: [String: (publish: [LimiterDeclaration], delivery: [LimiterDeclaration])] = [:]
        for declared in config.topics {
            let applicable = config.limiters.filter { $0.applies(to: declared) }
            limitersByTopic[declared.name] = (
                applicable.filter { $0.direction == .publish }, applicable.filter { $0.direction == .delivery }
            )
        }
        self.limitersByTopic = limitersByTopic
        self.policyVersion = PolicyVersion.compute(config)
    }

    /// The limiters that apply to records of `topic` in `direction`, in file order, computed once at init (no
    /// pattern matching per record). Reserved and undeclared topics have none. Per-record conditions (a recipient
    /// header, a consent scope among the filter's) are decided by `limiterKeys`.
    package func limiters(for topic: String, direction: LimiterDirection) -> [LimiterDeclaration] {
        guard let entry = self.limitersByTopic[topic] else { return [] }
        return direction == .publish ? entry.publish : entry.delivery
    }

    /// The limiter called `name`, if declared.
    package func limiter(named name: String) -> LimiterDeclaration? {
        self.limiters.first { $0.name == name }
    }

    /// A reserved topic: the most sensitive declared class, fsync always, lz4, opaque payload, no record rules
    /// (the broker writes it), every declared purpose.
    private static func reservedTopicPolicy(_ name: String, config: BrokerConfig) -> TopicPolicy {
        var topic = TopicPolicy(name: name, sensitivity: config.classes[config.classes.count - 1])
        topic.fsync = .always
        topic.compression = .lz4
        topic.purposes = config.purposes
        topic.consentScopes = []
        topic.requiredHeaders = []
        topic.payload = .any
        topic.allowedFields = nil
        topic.forbiddenFields = []
        return topic
    }

    /// Whether `name` is a reserved topic (`__quarantine`, `__audit`).
    package static func isReserved(_ name: String) -> Bool {
        name == Self.quarantineTopic || name == Self.auditTopic
    }

    /// The reserved topics (`__quarantine`, then `__audit`) as this policy sees them: class = the most sensitive
    /// declared class, fsync always, lz4. They are never in `config.topics`; the broker opens their logs itself.
    package var reservedTopics: [TopicPolicy] {
        Self.reservedTopicNames.map { self.topics[$0]!.policy }
    }

    /// Checks the token against the principal's stored hash in constant time.
    ///
    /// The SHA-256 of the presented bytes is compared with the stored digest by XOR-accumulating all 32 bytes
    /// (no early exit). An unknown client id is compared against a fixed dummy digest, so both failures take the
    /// same path. An empty token is always refused.
    package func authenticate(clientID: String, token: [UInt8]) -> AuthDecision {
        let presented = Credentials.sha256(token)
        let stored = self.credentials[clientID]
        let expected = stored?.digest ?? Self.dummyDigest
        var difference: UInt8 = 0
        for index in 0..<SHA256.byteCount {
            difference |= presented[index] ^ expected[index]
        }
        guard let stored else {
            if self.certificateOnly.contains(clientID) {
                return .refused(reason: "principal authenticates by client certificate only; no token is accepted")
            }
            return .refused(reason: "unknown client id")
        }
        guard !token.isEmpty else { return .refused(reason: "empty token") }
        guard difference == 0 else { return .refused(reason: "wrong token") }
        return .authenticated(stored.principal)
    }

    /// Maps a verified client certificate to its principal (mutual TLS); the certificate, not a token, is the
    /// credential.
    ///
    /// `identities` are the names the certificate carries (subject common names and subject alternative names,
    /// read by BrokerServer). Exactly one principal's `cert_identity` must be among them: none is refused ("maps to
    /// no principal"), names of two different principals are refused as ambiguous. `clientID` is HELLO's client
    /// id: empty, or the mapped principal's id; any other id is refused, so a certificate holder cannot claim
    /// another principal (HELLO's token is not consulted at all). Refusal reasons name only the certificate's own
    /// names and the principal it maps to, so BrokerServer may show them to the client.
    package func authenticate(certificate identities: [CertificateIdentity], clientID: String) -> AuthDecision {
        var matched: [Principal] = []
        for identity in identities {
            guard let principal = self.certificatePrincipals[identity] else { continue }
            if !matched.contains(where: { $0.clientID == principal.clientID }) { matched.append(principal) }
        }
        let names = identities.isEmpty ? "no names" : identities.map(\.description).joined(separator: ", ")
        guard let principal = matched.first else {
            return .refused(reason: "the client certificate (\(names)) maps to no principal")
        }
        guard matched.count == 1 else {
            let ids = matched.map { "'\($0.clientID)'" }.sorted().joined(separator: ", ")
            return .refused(reason: "the client certificate (\(names)) maps to more than one principal: \(ids)")
        }
        guard clientID.isEmpty || clientID == principal.clientID else {
            return .refused(
                reason: "HELLO names client id '\(clientID)' but the client certificate maps to principal "
                    + "'\(principal.clientID)'"
            )
        }
        return .authenticated(principal)
    }

    /// `subscribeVerdict`'s decision, without the rule id.
    package func subscribeDecision(principal: Principal, topic: String) -> Decision {
        self.subscribeVerdict(principal: principal, topic: topic).decision
    }

    /// May `principal` read `topic`? NOT_CLEARED or UNKNOWN_TOPIC otherwise, with the rule that decided.
    ///
    /// For a declared topic, conditions are checked in this order and the first failing one is named in the reason:
    /// 1. the topic is declared or reserved (else UNKNOWN_TOPIC, `subscribe.unknown_topic`: "topic 'x' is not
    ///    declared");
    /// 2. the principal's role is declared in this policy (else NOT_CLEARED, `subscribe.role`);
    /// 3. one of the role's `subscribe` patterns matches the topic (else NOT_CLEARED, `subscribe.pattern`: "role
    ///    'crm' has no subscribe pattern matching 'x'");
    /// 4. the topic's class ranks at or below the role's clearance (else NOT_CLEARED, `subscribe.clearance`: "topic
    ///    'clinical.referral' is class 'phi'; role 'crm' is cleared up to 'non_phi'");
    /// 5. the role and the topic share a purpose (else NOT_CLEARED, `subscribe.purpose`: "no common purpose: topic
    ///    'x' has [a, b], role 'y' has [c]").
    /// All hold: allowed, `subscribe.allowed`.
    ///
    /// A reserved topic ignores patterns and purposes: after step 2 the role must hold the topic's capability
    /// (`quarantine.read` for `__quarantine`, `audit.read` for `__audit`; else NOT_CLEARED "role 'x' lacks capability
    /// 'audit.read'") and a clearance at the topic's class, the most sensitive one (quarantined records may hold
    /// anything). Both outcomes carry `subscribe.capability`, or `subscribe.clearance` for the clearance refusal.
    /// The role's clearance is taken from the policy, not from `principal.clearance`.
    package func subscribeVerdict(principal: Principal, topic: String) -> SubscribeVerdict {
        guard let compiled = self.topics[topic] else {
            return SubscribeVerdict(
                .refuse(.unknownTopic, reason: "topic '\(topic)' is not declared"),
                ruleID: PolicyRule.subscribeUnknownTopic
            )
        }
        guard let role = self.roles[principal.role] else {
            return SubscribeVerdict(
                .refuse(.notCleared, reason: "role '\(principal.role)' is not declared"),
                ruleID: PolicyRule.subscribeRole
            )
        }
        if let capability = compiled.readCapability {
            guard role.capabilities.contains(capability) else {
                return SubscribeVerdict(
                    .refuse(
                        .notCleared,
                        reason:
                            "role '\(role.name)' lacks capability '\(capability.rawValue)' needed to read '\(topic)'"
                    ),
                    ruleID: PolicyRule.subscribeCapability
                )
            }
            if let refusal = self.clearanceRefusal(compiled, role) { return refusal }
            return SubscribeVerdict(.allow, ruleID: PolicyRule.subscribeCapability)
        }
        guard role.subscribe.contains(where: { $0.matches(topic) }) else {
            return SubscribeVerdict(
                .refuse(.notCleared, reason: "role '\(role.name)' has no subscribe pattern matching '\(topic)'"),
                ruleID: PolicyRule.subscribePattern
            )
        }
        if let refusal = self.clearanceRefusal(compiled, role) { return refusal }
        guard !role.purposes.isDisjoint(with: compiled.purposes) else {
            return SubscribeVerdict(
                .refuse(
                    .notCleared,
                    reason:
                        "no common purpose: topic '\(topic)' has "
                        + "[\(compiled.policy.purposes.joined(separator: ", "))], "
                        + "role '\(role.name)' has [\(role.policy.purposes.joined(separator: ", "))]"
                ),
                ruleID: PolicyRule.subscribePurpose
            )
        }
        return SubscribeVerdict(.allow, ruleID: PolicyRule.subscribeAllowed)
    }

    private func clearanceRefusal(_ topic: CompiledTopic, _ role: CompiledRole) -> SubscribeVerdict? {
        guard topic.rank > role.clearanceRank else { return nil }
        return SubscribeVerdict(
            .refuse(
                .notCleared,
                reason: "topic '\(topic.policy.name)' is class '\(topic.policy.sensitivity)'; "
                    + "role '\(role.name)' is cleared up to '\(role.clearance)'"
            ),
            ruleID: PolicyRule.subscribeClearance
        )
    }

    /// NOT_AUTHORIZED when outside publish patterns or reserved; UNKNOWN_TOPIC when not declared.
    ///
    /// Order: a reserved topic is refused NOT_AUTHORIZED (`publish.reserved_topic`: only the broker writes
    /// `__quarantine` and `__audit`); the topic is declared (else UNKNOWN_TOPIC, `publish.unknown_topic`); the role
    /// is declared (else NOT_AUTHORIZED, `publish.role`) and one of its `publish` patterns matches (else
    /// NOT_AUTHORIZED, `publish.pattern`). Clearance and purposes do not restrict publishing.
    package func publishDecision(principal: Principal, topic: String) -> Decision {
        self.publishAccess(principal: principal, topic: topic).decision
    }

    /// `publishDecision` with the rule it applied (the last one checked when it allows): the whole-request checks
    /// of a PUBLISH, made once per request before its records are judged one by one.
    package func publishAccess(principal: Principal, topic: String) -> (decision: Decision, rule: String) {
        guard let compiled = self.topics[topic] else {
            return (.refuse(.unknownTopic, reason: "topic '\(topic)' is not declared"), PolicyRule.publishUnknownTopic)
        }
        guard compiled.readCapability == nil else {
            return (
                .refuse(
                    .notAuthorized,
                    reason: "topic '\(topic)' is reserved for the broker; nobody may publish to it"
                ),
                PolicyRule.publishReservedTopic
            )
        }
        guard let role = self.roles[principal.role] else {
            return (.refuse(.notAuthorized, reason: "role '\(principal.role)' is not declared"), PolicyRule.publishRole)
        }
        guard role.publish.contains(where: { $0.matches(topic) }) else {
            return (
                .refuse(.notAuthorized, reason: "role '\(role.name)' has no publish pattern matching '\(topic)'"),
                PolicyRule.publishPattern
            )
        }
        return (.allow, PolicyRule.publishPattern)
    }

    /// What to do with one record `principal` publishes to `topic`: accept, refuse, or quarantine.
    ///
    /// The checks, first failure wins: the topic is declared and not reserved, and a `publish` pattern of the role
    /// matches (refusals, see `publishDecision`); then the record checks of `recordVerdict`.
    package func publishVerdict<Headers: Collection>(
        principal: Principal,
        topic: String,
        headers: Headers,
        value: UnsafeRawBufferPointer
    ) -> PublishVerdict where Headers.Element: PolicyHeaderView {
        self.publishVerdict(principal: principal, topic: topic, value: value) { headers.forEachPolicyHeader(named: $0, $1) }
    }

    /// `publishVerdict` over headers given by a visitor (see ``HeaderVisitor``).
    package func publishVerdict(
        principal: Principal,
        topic: String,
        value: UnsafeRawBufferPointer,
        eachHeader: HeaderVisitor
    ) -> PublishVerdict {
        let access = self.publishAccess(principal: principal, topic: topic)
        if case .refuse(let code, let reason) = access.decision {
            return .refuse(code, reason: reason, rule: access.rule)
        }
        return self.recordVerdict(topic: topic, value: value, eachHeader: eachHeader)
    }

    /// `publishVerdict` with the value in an array.
    package func publishVerdict<Headers: Collection>(
        principal: Principal,
        topic: String,
        headers: Headers,
        value: [UInt8]
    ) -> PublishVerdict where Headers.Element: PolicyHeaderView {
        value.withUnsafeBytes { self.publishVerdict(principal: principal, topic: topic, headers: headers, value: $0) }
    }

    /// The record checks alone, for a record bound for `topic` (e.g. a quarantined record being replayed under
    /// the current policy, whoever published it): UNKNOWN_TOPIC or NOT_AUTHORIZED (reserved) refusals, then, first
    /// failure wins (see `QuarantineReason`):
    /// 1. no header name starts with a reserved prefix (`RESERVED_HEADER`);
    /// 2. at most one `dedupe-key` header, 1…256 bytes (`INVALID_DEDUPE_KEY`);
    /// 3. every required header is present and non-empty, checked in the topic's order (`MISSING_HEADER`);
    /// 4. every entry of every `consent_scope` header (comma-separated, spaces around entries ignored) is non-empty,
    ///    declared and in the topic's `consent_scopes` (`CONSENT_SCOPE_NOT_ALLOWED`); this applies even when
    ///    `consent_scope` is not required;
    /// 5. with `payload = "json"`, the value is one valid JSON object (`INVALID_JSON`);
    /// 6. no object key at any depth, arrays included, equals a forbidden field ignoring ASCII case
    ///    (`FORBIDDEN_FIELD`; nested keys count because `{"payload": {"patient_name": …}}` leaks as much as a
    ///    top-level one; escapes are decoded first, so `"patient\u005fname"` is caught too);
    /// 7. with `allowed_fields`, every top-level key is one of them, exactly (`FIELD_NOT_ALLOWED`).
    ///
    /// The checks run in the non-generic `recordVerdict(topic:value:eachHeader:)`; hot callers in other modules
    /// call that one with a walk over their concrete header type (see ``HeaderVisitor``).
    package func recordVerdict<Headers: Collection>(
        topic: String,
        headers: Headers,
        value: UnsafeRawBufferPointer
    ) -> PublishVerdict where Headers.Element: PolicyHeaderView {
        self.recordVerdict(topic: topic, value: value) { headers.forEachPolicyHeader(named: $0, $1) }
    }

    /// `recordVerdict` over headers given by a visitor (see ``HeaderVisitor``).
    package func recordVerdict(
        topic: String, value: UnsafeRawBufferPointer, eachHeader: HeaderVisitor
    ) -> PublishVerdict {
        guard let compiled = self.topics[topic] else {
            return .refuse(
                .unknownTopic,
                reason: "topic '\(topic)' is not declared",
                rule: PolicyRule.publishUnknownTopic
            )
        }
        guard compiled.readCapability == nil else {
            return .refuse(
                .notAuthorized,
                reason: "topic '\(topic)' is reserved for the broker; nobody may publish to it",
                rule: PolicyRule.publishReservedTopic
            )
        }
        if let quarantine = self.headerQuarantine(compiled, eachHeader) { return quarantine }
        guard compiled.policy.payload == .json else { return .accept }
        return self.payloadVerdict(compiled, value)
    }

    /// `recordVerdict` with the value in an array.
    package func recordVerdict<Headers: Collection>(
        topic: String,
        headers: Headers,
        value: [UInt8]
    ) -> PublishVerdict where Headers.Element: PolicyHeaderView {
        value.withUnsafeBytes { self.recordVerdict(topic: topic, headers: headers, value: $0) }
    }

    /// Checks 1–4 of `recordVerdict`, in one walk over the headers (each visit of a header costs its caller a
    /// buffer access, so the walk is not repeated per check). What the walk finds is judged afterwards in the
    /// checks' order, so the verdict is the same as checking one rule after another.
    private func headerQuarantine(_ topic: CompiledTopic, _ eachHeader: HeaderVisitor) -> PublishVerdict? {
        let required = topic.policy.requiredHeaders
        var dedupeKeys = 0
        var badDedupeKeyLength: Int? = nil
        var reserved: (name: String, prefix: String)? = nil
        var consentProblem: String? = nil
        // Per required header: 0 not seen, 1 seen and never empty, 2 seen empty at least once.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: required.count) { seen in
            seen.initialize(repeating: 0)
            eachHeader(nil) { name, value in
                if let prefix = RecordRules.reservedPrefix(of: name) {
                    reserved = (name, prefix)
                    return false
                }
                // Required header names are unique (validated), so a name is at most one watched name.
                let watch = topic.watchIndex(name)
                guard watch >= 0 else { return true }
                if watch == topic.dedupeKeyWatch {
                    dedupeKeys += 1
                    if badDedupeKeyLength == nil && (value.isEmpty || value.count > RecordRules.maxDedupeKeyBytes) {
                        badDedupeKeyLength = value.count
                    }
                }
                if watch < required.count {
                    seen[watch] = value.isEmpty ? 2 : max(seen[watch], 1)
                }
                if consentProblem == nil && watch == topic.consentScopeWatch {
                    consentProblem = self.consentScopeProblem(topic, value)
                }
                return true
            }
            if let reserved { return Self.reservedHeaderQuarantine(reserved.name, prefix: reserved.prefix) }
            if let quarantine = Self.dedupeKeyQuarantine(count: dedupeKeys, badLength: badDedupeKeyLength) {
                return quarantine
            }
            for index in required.indices where seen[index] != 1 {
                return Self.missingHeaderQuarantine(topic, index: index, empty: seen[index] == 2)
            }
            if let consentProblem {
                return .quarantine(
                    .consentScopeNotAllowed, rule: PolicyRule.topicConsentScopes, message: consentProblem
                )
            }
            return nil
        }
    }

    /// Check 1's quarantine: header `name` starts with reserved `prefix`.
    private static func reservedHeaderQuarantine(_ name: String, prefix: String) -> PublishVerdict {
        .quarantine(
            .reservedHeader,
            rule: PolicyRule.recordReservedHeader,
            message: "header '\(name)' starts with '\(prefix)', which only the broker may "
                + "set (reserved prefixes: \(RecordRules.reservedHeaderPrefixes.joined(separator: ", ")))"
        )
    }

    /// Check 2's quarantine for `count` dedupe-key headers, the first of a bad length `badLength` bytes; or nil.
    private static func dedupeKeyQuarantine(count: Int, badLength: Int?) -> PublishVerdict? {
        if count > 1 {
            return .quarantine(
                .invalidDedupeKey,
                rule: PolicyRule.recordDedupeKey,
                message: "header '\(RecordRules.dedupeKeyHeader)' appears \(count) times; a record carries "
                    + "at most one dedupe key"
            )
        }
        if let length = badLength {
            return .quarantine(
                .invalidDedupeKey,
                rule: PolicyRule.recordDedupeKey,
                message: "header '\(RecordRules.dedupeKeyHeader)' is \(length) bytes; a dedupe key is "
                    + "1…\(RecordRules.maxDedupeKeyBytes) bytes"
            )
        }
        return nil
    }

    /// Check 3's quarantine: required header `index` of `topic` is missing (or `empty`).
    private static func missingHeaderQuarantine(_ topic: CompiledTopic, index: Int, empty: Bool) -> PublishVerdict {
        let required = topic.policy.requiredHeaders
        let name = required[index]
        return .quarantine(
            .missingHeader,
            rule: PolicyRule.topicRequiredHeaders,
            message: empty
                ? "required header '\(name)' is empty on a record for topic '\(topic.policy.name)'"
                : "missing required header '\(name)'; topic '\(topic.policy.name)' requires "
                    + required.joined(separator: ", ")
        )
    }

    /// The record checks of `topic` for a caller that walks headers whose names repeat (a PUBLISH's records share
    /// its name table): nil when `recordVerdict` refuses every record of `topic` (unknown or reserved topic) or
    /// the topic requires more headers than ``RecordHeaderFindings`` tracks; then use `recordVerdict`.
    package func recordChecks(topic: String) -> RecordChecks? {
        guard let compiled = self.topics[topic], compiled.readCapability == nil,
            compiled.policy.requiredHeaders.count <= RecordHeaderFindings.maxRequired
        else { return nil }
        return RecordChecks(policy: self, topic: compiled)
    }

    /// `recordVerdict` for one record whose headers `checks` has seen (`findings`), with its value: the header
    /// checks' verdict from the findings (in the checks' order), then the payload checks.
    package func recordVerdict(
        _ checks: RecordChecks, findings: RecordHeaderFindings, value: UnsafeRawBufferPointer
    ) -> PublishVerdict {
        let topic = checks.topic
        if let reserved = findings.reserved {
            return Self.reservedHeaderQuarantine(reserved.name, prefix: reserved.prefix)
        }
        if let quarantine = Self.dedupeKeyQuarantine(count: findings.dedupeKeys, badLength: findings.badDedupeKeyLength)
        {
            return quarantine
        }
        // The first required header not seen non-empty (seen and never empty is the only good state).
        let required = topic.policy.requiredHeaders.count
        let requiredBits: UInt64 = required == 64 ? .max : (1 &<< UInt64(required)) &- 1
        let bad = ~(findings.present & ~findings.empty) & requiredBits
        if bad != 0 {
            let index = bad.trailingZeroBitCount
            return Self.missingHeaderQuarantine(topic, index: index, empty: findings.empty & (1 &<< UInt64(index)) != 0)
        }
        if let problem = findings.consentProblem {
            return .quarantine(.consentScopeNotAllowed, rule: PolicyRule.topicConsentScopes, message: problem)
        }
        guard topic.policy.payload == .json else { return .accept }
        return self.payloadVerdict(topic, value)
    }

    /// What is wrong with one `consent_scope` header's value on `topic`, or nil.
    fileprivate func consentScopeProblem(_ topic: CompiledTopic, _ value: UnsafeRawBufferPointer) -> String? {
        var problem: String? = nil
        RecordRules.forEachListItem(value) { item in
            guard !item.isEmpty else {
                problem =
                    "header '\(RecordRules.consentScopeHeader)' has an empty entry; list scopes separated by single "
                    + "commas"
                return false
            }
            guard let index = self.scopeIndex(item) else {
                problem =
                    "consent scope '\(String(decoding: item, as: UTF8.self))' is not declared "
                    + "(declared: \(self.config.consentScopes.joined(separator: ", ")))"
                return false
            }
            guard topic.allowedScopes[index] else {
                problem =
                    "consent scope '\(self.config.consentScopes[index])' is not allowed on topic "
                    + "'\(topic.policy.name)' (allowed: \(topic.policy.consentScopes.joined(separator: ", ")))"
                return false
            }
            return true
        }
        return problem
    }

    /// Checks 5–7 of `recordVerdict`, in one scan of the value.
    private func payloadVerdict(_ topic: CompiledTopic, _ value: UnsafeRawBufferPointer) -> PublishVerdict {
        var forbidden: (name: String, depth: Int, offset: Int)? = nil
        var notAllowed: (name: String, offset: Int)? = nil
        do {
            try JSONKeyScanner.scan(value) { key, depth, offset in
                if forbidden == nil, topic.forbiddenLengths & CompiledTopic.lengthBit(key.count) != 0,
                    Self.containsIgnoringASCIICase(topic.forbidden, key)
                {
                    forbidden = (String(decoding: key, as: UTF8.self), depth, offset)
                }
                if depth == 1, notAllowed == nil, let allowed = topic.allowed,
                    !allowed.contains(where: { $0.elementsEqual(key) })
                {
                    notAllowed = (String(decoding: key, as: UTF8.self), offset)
                }
            }
        } catch {
            return .quarantine(
                .invalidJSON,
                rule: PolicyRule.topicPayloadJSON,
                message: "topic '\(topic.policy.name)' requires a JSON object: \(error)"
            )
        }
        if let forbidden {
            let place = forbidden.depth == 1 ? "top-level field" : "field nested at depth \(forbidden.depth)"
            return .quarantine(
                .forbiddenField,
                rule: PolicyRule.topicForbiddenFields,
                message: "\(place) '\(forbidden.name)' (byte \(forbidden.offset)) is forbidden on topic "
                    + "'\(topic.policy.name)' (forbidden: \(topic.policy.forbiddenFields!.joined(separator: ", ")))"
            )
        }
        if let notAllowed {
            return .quarantine(
                .fieldNotAllowed,
                rule: PolicyRule.topicAllowedFields,
                message: "top-level field '\(notAllowed.name)' (byte \(notAllowed.offset)) is not allowed on topic "
                    + "'\(topic.policy.name)' (allowed: \((topic.policy.allowedFields ?? []).joined(separator: ", ")))"
            )
        }
        return .accept
    }

    private static func containsIgnoringASCIICase(_ names: [[UInt8]], _ key: UnsafeRawBufferPointer) -> Bool {
        names.contains { RecordRules.equalIgnoringASCIICase($0, key) }
    }


    /// The index of the declared consent scope spelled exactly `item`.
    private func scopeIndex(_ item: UnsafeRawBufferPointer) -> Int? {
        DeliveryJudge.scopeIndex(self.scopeBytes, item)
    }

    /// May a record of `topic` with these headers be sent to `principal`, who is subscribed to it?
    ///
    /// Consent is checked at delivery time: the record's consent scopes are the entries of its `consent_scope`
    /// headers (comma-separated). It is delivered when at least one of them is a scope the subscriber's role may
    /// receive (`consent_scopes` of the role); otherwise it is withheld (`delivery.consent_scope`). A record with no
    /// `consent_scope` is delivered when the topic does not require one, and withheld when it does
    /// (`delivery.consent_missing`: such a record should have been quarantined, so if one got in, it is not sent).
    /// Reserved topics are exempt (their capability governs). A topic or role that is no longer in the policy
    /// withholds everything (`delivery.unknown_topic`, `delivery.role`); the broker should also end such
    /// subscriptions, see `subscribeVerdict`.
    package func deliveryDecision<Headers: Collection>(
        principal: Principal,
        topic: String,
        headers: Headers
    ) -> DeliveryVerdict where Headers.Element: PolicyHeaderView {
        self.deliveryDecision(principal: principal, topic: topic) { headers.forEachPolicyHeader(named: $0, $1) }
    }

    /// `deliveryDecision` over headers given by a visitor (see ``HeaderVisitor``).
    package func deliveryDecision(principal: Principal, topic: String, eachHeader: HeaderVisitor) -> DeliveryVerdict {
        self.deliveryJudge(principal: principal, topic: topic).verdict(eachHeader: eachHeader)
    }

    /// `deliveryDecision` for many records of one topic and one subscriber: the topic and the role are looked up
    /// here, once, and each record's headers are then judged by ``DeliveryJudge/verdict(eachHeader:)``, which
    /// gives exactly the verdict `deliveryDecision` gives for them under this policy.
    package func deliveryJudge(principal: Principal, topic: String) -> DeliveryJudge {
        guard let compiled = self.topics[topic] else {
            return DeliveryJudge(.fixed(.withhold(scope: "", rule: PolicyRule.deliveryUnknownTopic)))
        }
        if compiled.readCapability != nil { return DeliveryJudge(.fixed(.deliver)) }
        guard let role = self.roles[principal.role] else {
            return DeliveryJudge(.fixed(.withhold(scope: "", rule: PolicyRule.deliveryRole)))
        }
        return DeliveryJudge(
            .consent(scopeBytes: self.scopeBytes, receivable: role.scopes, requiresConsent: compiled.requiresConsent)
        )
    }

    /// The entries of every `consent_scope` header, trimmed, in order (empty entries dropped).
    package static func consentScopes<Headers: Collection>(in headers: Headers) -> [String]
    where Headers.Element: PolicyHeaderView {
        Self.consentScopes { headers.forEachPolicyHeader(named: $0, $1) }
    }

    /// `consentScopes(in:)` over headers given by a visitor (see ``HeaderVisitor``).
    package static func consentScopes(eachHeader: HeaderVisitor) -> [String] {
        var scopes: [String] = []
        eachHeader(RecordRules.consentScopeHeader) { _, value in
            RecordRules.forEachListItem(value) { item in
                if !item.isEmpty { scopes.append(String(decoding: item, as: UTF8.self)) }
                return true
            }
            return true
        }
        return scopes
    }

    /// The declared topic (effective: `forbiddenFields` resolved), if any; nil for reserved topics.
    package func topic(named name: String) -> TopicPolicy? {
        guard let compiled = self.topics[name], compiled.readCapability == nil else { return nil }
        return compiled.policy
    }

    /// The reserved topic called `name` (`__quarantine` or `__audit`), if it is one.
    package func reservedTopic(named name: String) -> TopicPolicy? {
        guard let compiled = self.topics[name], compiled.readCapability != nil else { return nil }
        return compiled.policy
    }

    /// The declared role, if any.
    package func role(named name: String) -> RolePolicy? {
        self.roles[name]?.policy
    }

    /// The capabilities of the principal's role in this policy (empty when the role is not declared).
    package func capabilities(of principal: Principal) -> Set<Capability> {
        self.roles[principal.role]?.capabilities ?? []
    }

    /// Whether the principal's role in this policy holds `capability`.
    package func hasCapability(_ principal: Principal, _ capability: Capability) -> Bool {
        self.roles[principal.role]?.capabilities.contains(capability) ?? false
    }
}

/// One subscriber's delivery decision on one topic under one policy (``Policy/deliveryJudge(principal:topic:)``):
/// what the topic and the role say is settled when it is made; what each record's headers say (its consent scopes)
/// is judged per record by ``verdict(eachHeader:)``.
package struct DeliveryJudge: Sendable {
    fileprivate enum Rule: Sendable {
        /// Every record gets this verdict: the topic or role is not in the policy (withhold), or the topic is a
        /// reserved one, governed by its capability (deliver).
        case fixed(DeliveryVerdict)
        /// Consent decides: the declared scopes' bytes, which of them the role may receive (by scope index), and
        /// whether the topic requires a `consent_scope`.
        case consent(scopeBytes: [[UInt8]], receivable: [Bool], requiresConsent: Bool)
    }

    private let rule: Rule

    fileprivate init(_ rule: Rule) {
        self.rule = rule
    }

    /// The verdict for one record with these headers (see ``Policy/deliveryDecision(principal:topic:headers:)``).
    package func verdict(eachHeader: HeaderVisitor) -> DeliveryVerdict {
        let scopeBytes: [[UInt8]]
        let receivableScopes: [Bool]
        let requiresConsent: Bool
        switch self.rule {
        case .fixed(let verdict):
            return verdict
        case .consent(let scopes, let receivable, let requires):
            (scopeBytes, receivableScopes, requiresConsent) = (scopes, receivable, requires)
        }
        var carriesScope = false
        var receivable = false
        eachHeader(RecordRules.consentScopeHeader) { _, value in
            carriesScope = true
            RecordRules.forEachListItem(value) { item in
                if let index = Self.scopeIndex(scopeBytes, item), receivableScopes[index] { receivable = true }
                return !receivable
            }
            return !receivable
        }
        if receivable { return .deliver }
        guard carriesScope else {
            return requiresConsent ? .withhold(scope: "", rule: PolicyRule.deliveryConsentMissing) : .deliver
        }
        return .withhold(
            scope: Policy.consentScopes(eachHeader: eachHeader).joined(separator: ","),
            rule: PolicyRule.deliveryConsentScope
        )
    }

    /// The index of the declared consent scope spelled exactly `item`.
    fileprivate static func scopeIndex(_ scopeBytes: [[UInt8]], _ item: UnsafeRawBufferPointer) -> Int? {
        scopeBytes.firstIndex { scope in
            scope.count == item.count && scope.withUnsafeBytes { $0.elementsEqual(item) }
        }
    }
}

/// Token generation and hashing.
package enum Credentials {
    /// A new random token: 32 bytes from the system CSPRNG, base64url without padding (43 characters).
    package static func generateToken() -> String {
        var generator = SystemRandomNumberGenerator()  // getrandom(2) on Linux, arc4random_buf on Darwin
        var bytes: [UInt8] = []
        bytes.reserveCapacity(32)
        for _ in 0..<4 {
            var word = generator.next() as UInt64
            for _ in 0..<8 {
                bytes.append(UInt8(truncatingIfNeeded: word))
                word >>= 8
            }
        }
        return ByteEncoding.base64URLWithoutPadding(bytes)
    }

    /// `sha256:<64 lowercase hex>` of the token's UTF-8 bytes.
    package static func hash(token: String) -> String {
        "sha256:" + ByteEncoding.lowercaseHex(self.sha256(Array(token.utf8)))
    }

    /// The 32-byte SHA-256 digest of `bytes`.
    static func sha256(_ bytes: [UInt8]) -> [UInt8] {
        var hasher = SHA256()
        bytes.withUnsafeBytes { hasher.update(bufferPointer: $0) }
        return Array(hasher.finalize())
    }
}

/// What the header checks (1–4 of `Policy.recordVerdict`) found in one record's headers, fed one header at a time by
/// ``RecordChecks/see(_:name:value:into:)``.
package struct RecordHeaderFindings {
    /// The most required headers tracked (bits of `present` and `empty`).
    package static let maxRequired = 64

    var dedupeKeys = 0
    var badDedupeKeyLength: Int? = nil
    var reserved: (name: String, prefix: String)? = nil
    var consentProblem: String? = nil
    /// Bit `n`: required header `n` was seen; seen with an empty value.
    var present: UInt64 = 0
    var empty: UInt64 = 0

    /// Nothing seen yet.
    package init() {}
}

/// What the header checks need to know about one header name on one topic: the reserved prefix it starts with and
/// its index among the names the checks watch. The same for every header of that name, so a caller that meets a
/// few names again and again (a PUBLISH's name table) asks ``RecordChecks/role(of:)`` once per name.
package struct HeaderNameRole: Equatable, Sendable {
    /// Index in `RecordRules.reservedHeaderPrefixes`, or -1.
    let reservedPrefix: Int32
    /// Index among the topic's watched names (required headers, then `dedupe-key` and `consent_scope`), or -1.
    let watch: Int32

    /// Neither reserved nor watched.
    package static let none = HeaderNameRole(reservedPrefix: -1, watch: -1)
}

/// The record checks of one topic, judged from each header's ``HeaderNameRole`` (`Policy.recordChecks(topic:)`):
/// for each record, feed every header to `see` into fresh ``RecordHeaderFindings`` (until it returns false), then
/// ask `Policy.recordVerdict(_:findings:value:)`. The verdict is exactly `recordVerdict(topic:value:eachHeader:)`'s.
///
/// A class: a caller keeps one for many requests to the topic (a connection's publish route) and hands it around
/// without copying its fields. Not Sendable: one caller at a time.
package final class RecordChecks {
    let policy: Policy
    fileprivate let topic: Policy.CompiledTopic
    /// The last `consent_scope` value that had no problem, as bytes: the records of a producer usually carry the
    /// same scope, so its entries are looked up once, not once per record. Unchecked exclusivity: only
    /// `consentScopeProblem` touches them, and what it calls (`Policy.consentScopeProblem`) never reaches this
    /// object, so accesses cannot overlap; the run-time checks would cost about 85 instructions each.
    @exclusivity(unchecked) private var lastGoodScope: [UInt8] = []
    @exclusivity(unchecked) private var hasLastGoodScope = false

    fileprivate init(policy: Policy, topic: Policy.CompiledTopic) {
        self.policy = policy
        self.topic = topic
    }

    /// The role of header name `name` on this topic.
    package func role(of name: String) -> HeaderNameRole {
        let prefix = RecordRules.reservedPrefix(of: name).flatMap {
            RecordRules.reservedHeaderPrefixes.firstIndex(of: $0)
        }
        return HeaderNameRole(reservedPrefix: Int32(prefix ?? -1), watch: Int32(self.topic.watchIndex(name)))
    }

    /// Feeds one header (its name's role, its name and value) into `findings`. Returns false when the rest of the
    /// record's headers cannot change the verdict (a reserved name: the walk of `recordVerdict` stops there too).
    @inline(__always)
    package func see(
        _ role: HeaderNameRole, name: @autoclosure () -> String, value: UnsafeRawBufferPointer,
        into findings: inout RecordHeaderFindings
    ) -> Bool {
        if role.reservedPrefix >= 0 {
            findings.reserved = (name(), RecordRules.reservedHeaderPrefixes[Int(role.reservedPrefix)])
            return false
        }
        let watch = Int(role.watch)
        guard watch >= 0 else { return true }
        if watch == self.topic.dedupeKeyWatch {
            findings.dedupeKeys += 1
            if findings.badDedupeKeyLength == nil && (value.isEmpty || value.count > RecordRules.maxDedupeKeyBytes) {
                findings.badDedupeKeyLength = value.count
            }
        }
        if watch < self.topic.policy.requiredHeaders.count {
            findings.present |= 1 &<< UInt64(watch)
            if value.isEmpty { findings.empty |= 1 &<< UInt64(watch) }
        }
        if findings.consentProblem == nil && watch == self.topic.consentScopeWatch {
            findings.consentProblem = self.consentScopeProblem(value)
        }
        return true
    }

    /// Whether two byte runs of the same length are equal.
    private static func equal(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        for index in 0..<a.count where a[index] != b[index] { return false }
        return true
    }

    /// `Policy.consentScopeProblem` for this topic, remembering the last value without a problem.
    private func consentScopeProblem(_ value: UnsafeRawBufferPointer) -> String? {
        if self.hasLastGoodScope && value.count == self.lastGoodScope.count
            && self.lastGoodScope.withUnsafeBytes({ Self.equal($0, value) })
        {
            return nil
        }
        let problem = self.policy.consentScopeProblem(self.topic, value)
        if problem == nil {
            self.lastGoodScope.removeAll(keepingCapacity: true)
            self.lastGoodScope.append(contentsOf: value)
            self.hasLastGoodScope = true
        }
        return problem
    }
}
