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

/// Immutable, validated policy: pure decisions over (principal, topic).
///
/// Everything a decision needs is precomputed at init: topics by name, each role's compiled patterns and
/// clearance rank, and each principal's decoded token digest. Decisions are then dictionary look-ups plus
/// pattern matching, with no I/O and no allocation beyond the refusal messages.
package struct Policy: Sendable {
    /// The validated configuration this policy was built from.
    package let config: BrokerConfig
    private let topicsByName: [String: TopicPolicy]
    private let classRank: [String: Int]
    private let roles: [String: CompiledRole]
    private let credentials: [String: StoredCredential]

    /// A role ready for decisions.
    private struct CompiledRole: Sendable {
        var name: String
        var clearance: String
        var clearanceRank: Int
        var publish: [TopicPattern]
        var subscribe: [TopicPattern]
    }

    /// What authentication compares against for one client id.
    private struct StoredCredential: Sendable {
        var digest: [UInt8]
        var principal: Principal
    }

    /// Compared against when the client id is unknown, so that an unknown id and a wrong token do the same work.
    /// Its value is irrelevant: an unknown id is refused whatever the comparison says.
    private static let dummyDigest: [UInt8] = Array(repeating: 0xa5, count: SHA256.byteCount)

    /// Builds the policy; every principal must have a token hash.
    ///
    /// Runs the same semantic validation as `ConfigLoader.parse` (for configs built in code), then requires a
    /// well-formed `token_hash` on every principal. Errors carry no line: there is no text to point into.
    package init(config: BrokerConfig) throws(ConfigError) {
        try ConfigValidator.validate(config, locator: nil)
        var credentials: [String: StoredCredential] = [:]
        var rank: [String: Int] = [:]
        for (index, name) in config.classes.enumerated() { rank[name] = index }
        var roles: [String: CompiledRole] = [:]
        for role in config.roles {
            roles[role.name] = CompiledRole(
                name: role.name,
                clearance: role.clearance,
                clearanceRank: rank[role.clearance]!,  // validated: every clearance is a declared class
                publish: role.publish.map(TopicPattern.init),
                subscribe: role.subscribe.map(TopicPattern.init)
            )
        }
        for principal in config.principals {
            guard let tokenHash = principal.tokenHash else {
                throw ConfigError(
                    "principal '\(principal.clientID)' has no token_hash; set token_hash = \"sha256:<64 hex>\" "
                        + "(printf %s \"$TOKEN\" | sha256sum) or start brokerd so it generates a token"
                )
            }
            guard let digest = ConfigValidator.decodeTokenHash(tokenHash) else {
                throw ConfigError(ConfigValidator.badTokenHashMessage(clientID: principal.clientID, tokenHash))
            }
            let role = roles[principal.role]!  // validated: every principal's role is declared
            credentials[principal.clientID] = StoredCredential(
                digest: digest,
                principal: Principal(clientID: principal.clientID, role: role.name, clearance: role.clearance)
            )
        }
        self.config = config
        self.classRank = rank
        self.roles = roles
        self.credentials = credentials
        self.topicsByName = Dictionary(config.topics.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
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
        guard let stored else { return .refused(reason: "unknown client id") }
        guard !token.isEmpty else { return .refused(reason: "empty token") }
        guard difference == 0 else { return .refused(reason: "wrong token") }
        return .authenticated(stored.principal)
    }

    /// NOT_CLEARED when above clearance or outside subscribe patterns; UNKNOWN_TOPIC when not declared.
    ///
    /// Conditions are checked in this order and the first failing one is named in the reason:
    /// 1. the topic is declared (else UNKNOWN_TOPIC: "topic 'x' is not declared");
    /// 2. the principal's role is declared in this policy (else NOT_CLEARED);
    /// 3. the topic's class ranks at or below the role's clearance (else NOT_CLEARED: "topic 'clinical.referral'
    ///    is class 'phi'; role 'crm' is cleared up to 'non_phi'");
    /// 4. one of the role's `subscribe` patterns matches the topic (else NOT_CLEARED: "role 'crm' has no
    ///    subscribe pattern matching 'x'").
    /// Clearance comes first because it is the class-based control compliance reasons about: a refusal of PHI to
    /// a role not cleared for it is reported as exactly that, whatever its patterns say. The role's clearance is
    /// taken from the policy, not from `principal.clearance`.
    package func subscribeDecision(principal: Principal, topic: String) -> Decision {
        guard let declared = self.topicsByName[topic] else {
            return .refuse(.unknownTopic, reason: "topic '\(topic)' is not declared")
        }
        guard let role = self.roles[principal.role] else {
            return .refuse(.notCleared, reason: "role '\(principal.role)' is not declared")
        }
        let topicRank = self.classRank[declared.sensitivity]!  // validated: every topic class is declared
        guard topicRank <= role.clearanceRank else {
            return .refuse(
                .notCleared,
                reason: "topic '\(topic)' is class '\(declared.sensitivity)'; "
                    + "role '\(role.name)' is cleared up to '\(role.clearance)'"
            )
        }
        guard role.subscribe.contains(where: { $0.matches(topic) }) else {
            return .refuse(.notCleared, reason: "role '\(role.name)' has no subscribe pattern matching '\(topic)'")
        }
        return .allow
    }

    /// NOT_AUTHORIZED when outside publish patterns; UNKNOWN_TOPIC when not declared.
    ///
    /// Order: the topic is declared (else UNKNOWN_TOPIC); the role is declared and one of its `publish` patterns
    /// matches (else NOT_AUTHORIZED). Clearance does not restrict publishing.
    package func publishDecision(principal: Principal, topic: String) -> Decision {
        guard self.topicsByName[topic] != nil else {
            return .refuse(.unknownTopic, reason: "topic '\(topic)' is not declared")
        }
        guard let role = self.roles[principal.role] else {
            return .refuse(.notAuthorized, reason: "role '\(principal.role)' is not declared")
        }
        guard role.publish.contains(where: { $0.matches(topic) }) else {
            return .refuse(.notAuthorized, reason: "role '\(role.name)' has no publish pattern matching '\(topic)'")
        }
        return .allow
    }

    /// The declared topic, if any.
    package func topic(named name: String) -> TopicPolicy? {
        self.topicsByName[name]
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
