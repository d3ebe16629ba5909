import Testing

@testable import TopicRouter

/// The embedded default scenario (limiters included), every principal's token "token-of-<client id>".
let scenarioPolicy: Policy = {
    let config = try! ConfigLoader.parse(ConfigLoader.embeddedDefault)
    let hashes = Dictionary(
        uniqueKeysWithValues: config.principals.map {
            ($0.clientID, Credentials.hash(token: "token-of-\($0.clientID)"))
        }
    )
    return try! Policy(config: config.withTokenHashes(hashes))
}()

/// The principal `clientID` authenticates as in the scenario.
func scenarioPrincipal(_ clientID: String) -> Principal {
    guard
        case .authenticated(let principal) = scenarioPolicy.authenticate(
            clientID: clientID,
            token: Array("token-of-\(clientID)".utf8)
        )
    else {
        fatalError("\(clientID) does not authenticate in the scenario")
    }
    return principal
}

/// What a decision table row expects: allow, or a refusal code with a substring of its reason.
enum Expected: Sendable, CustomStringConvertible {
    case allow
    case refuse(RefusalCode, String)

    var description: String {
        switch self {
        case .allow: return "allow"
        case .refuse(let code, let reason): return "\(code): \(reason)"
        }
    }

    func check(_ decision: Decision, sourceLocation: SourceLocation = #_sourceLocation) {
        switch (self, decision) {
        case (.allow, .allow):
            break
        case (.refuse(let code, let reason), .refuse(let actualCode, let actualReason)):
            #expect(actualCode == code, sourceLocation: sourceLocation)
            #expect(actualReason.contains(reason), "\(actualReason)", sourceLocation: sourceLocation)
        default:
            Issue.record("expected \(self), got \(decision)", sourceLocation: sourceLocation)
        }
    }
}

@Suite("Policy")
struct PolicyTests {
    @Test(
        "subscribe verdicts over the default scenario: every outcome and rule id",
        arguments: [
            ("crm-automation", "education.completed", Expected.allow, "subscribe.allowed"),
            ("analytics-lake", "analytics.deidentified", .allow, "subscribe.allowed"),
            ("analytics-lake", "education.completed", .allow, "subscribe.allowed"),
            ("support-desk", "clinical.referral", .allow, "subscribe.allowed"),
            ("support-desk", "support.milestone", .allow, "subscribe.allowed"),
            ("support-desk", "support.notice", .allow, "subscribe.allowed"),
            ("ops-admin", "clinical.referral", .allow, "subscribe.allowed"),
            ("ops-admin", "education.completed", .allow, "subscribe.allowed"),
            // UNKNOWN_TOPIC before anything else.
            (
                "crm-automation", "education.completed.v2",
                .refuse(.unknownTopic, "topic 'education.completed.v2' is not declared"), "subscribe.unknown_topic"
            ),
            (
                "ops-admin", "clinical.referrals", .refuse(.unknownTopic, "topic 'clinical.referrals' is not declared"),
                "subscribe.unknown_topic"
            ),
            ("crm-automation", "", .refuse(.unknownTopic, "is not declared"), "subscribe.unknown_topic"),
            ("ops-admin", "__consumer_offsets", .refuse(.unknownTopic, "is not declared"), "subscribe.unknown_topic"),
            // NOT_CLEARED by pattern, checked first.
            (
                "crm-automation", "clinical.referral",
                .refuse(.notCleared, "role 'crm' has no subscribe pattern matching 'clinical.referral'"),
                "subscribe.pattern"
            ),
            (
                "support-desk", "education.completed",
                .refuse(.notCleared, "role 'patient_support' has no subscribe pattern matching 'education.completed'"),
                "subscribe.pattern"
            ),
            (
                "learning-portal", "education.completed",
                .refuse(.notCleared, "role 'learning_portal' has no subscribe pattern matching 'education.completed'"),
                "subscribe.pattern"
            ),
            (
                "compliance-auditor", "clinical.referral",
                .refuse(.notCleared, "role 'auditor' has no subscribe pattern matching"), "subscribe.pattern"
            ),
            // NOT_CLEARED by clearance: the pattern matches, the class is too sensitive.
            (
                "analytics-lake", "support.milestone",
                .refuse(
                    .notCleared,
                    "topic 'support.milestone' is class 'pseudonymous'; role 'analytics' is cleared up to "
                        + "'deidentified'"
                ),
                "subscribe.clearance"
            ),
            // NOT_CLEARED by purpose: pattern and clearance hold, but analytics reads for commercial purposes only.
            (
                "analytics-lake", "support.notice",
                .refuse(
                    .notCleared,
                    "no common purpose: topic 'support.notice' has [patient_support], role 'analytics' has "
                        + "[commercial_analytics]"
                ),
                "subscribe.purpose"
            ),
            // Reserved topics: the capability decides, whatever the patterns say.
            ("ops-admin", "__quarantine", .allow, "subscribe.capability"),
            ("quarantine-operator", "__quarantine", .allow, "subscribe.capability"),
            ("compliance-auditor", "__audit", .allow, "subscribe.capability"),
            (
                "ops-admin", "__audit",
                .refuse(.notCleared, "role 'operator' lacks capability 'audit.read' needed to read '__audit'"),
                "subscribe.capability"
            ),
            (
                "compliance-auditor", "__quarantine",
                .refuse(.notCleared, "role 'auditor' lacks capability 'quarantine.read'"), "subscribe.capability"
            ),
            (
                "crm-automation", "__audit", .refuse(.notCleared, "role 'crm' lacks capability 'audit.read'"),
                "subscribe.capability"
            ),
        ]
    )
    func subscribe(clientID: String, topic: String, expected: Expected, rule: String) {
        let principal = scenarioPrincipal(clientID)
        let verdict = scenarioPolicy.subscribeVerdict(principal: principal, topic: topic)
        expected.check(verdict.decision)
        #expect(verdict.ruleID == rule)
        #expect(scenarioPolicy.subscribeDecision(principal: principal, topic: topic) == verdict.decision)
    }

    @Test("a reserved topic also needs clearance for the most sensitive class")
    func reservedTopicClearance() throws {
        var config = scenarioPolicy.config
        let index = try #require(config.roles.firstIndex { $0.name == "auditor" })
        config.roles[index].clearance = "deidentified"
        let policy = try Policy(config: config)
        let auditor = Principal(clientID: "compliance-auditor", role: "auditor", clearance: "deidentified")
        let verdict = policy.subscribeVerdict(principal: auditor, topic: "__audit")
        #expect(verdict.ruleID == "subscribe.clearance")
        Expected.refuse(.notCleared, "topic '__audit' is class 'phi'; role 'auditor' is cleared up to 'deidentified'")
            .check(verdict.decision)
    }

    @Test(
        "publish decisions over the default scenario",
        arguments: [
            ("learning-portal", "education.completed", Expected.allow),
            ("support-portal", "support.milestone", .allow),
            // Clearance does not restrict publishing: the support portal (cleared non_phi) writes PHI.
            ("support-portal", "clinical.referral", .allow),
            ("ops-admin", "analytics.deidentified", .allow),
            (
                "learning-portal", "support.milestone",
                .refuse(.notAuthorized, "role 'learning_portal' has no publish pattern matching 'support.milestone'")
            ),
            (
                "crm-automation", "education.completed",
                .refuse(.notAuthorized, "role 'crm' has no publish pattern matching 'education.completed'")
            ),
            ("support-desk", "clinical.referral", .refuse(.notAuthorized, "role 'patient_support' has no publish")),
            ("support-portal", "education.completed", .refuse(.notAuthorized, "role 'support_portal'")),
            (
                "learning-portal", "education.started",
                .refuse(.unknownTopic, "topic 'education.started' is not declared")
            ),
            ("ops-admin", "nope", .refuse(.unknownTopic, "topic 'nope' is not declared")),
            // Nobody writes the broker's own topics.
            (
                "ops-admin", "__quarantine",
                .refuse(.notAuthorized, "topic '__quarantine' is reserved for the broker; nobody may publish to it")
            ),
            ("ops-admin", "__audit", .refuse(.notAuthorized, "topic '__audit' is reserved for the broker")),
            ("compliance-auditor", "__audit", .refuse(.notAuthorized, "is reserved for the broker")),
        ]
    )
    func publish(clientID: String, topic: String, expected: Expected) {
        expected.check(scenarioPolicy.publishDecision(principal: scenarioPrincipal(clientID), topic: topic))
    }

    @Test("decisions for a role the policy does not know are refusals")
    func undeclaredRole() {
        let stranger = Principal(clientID: "x", role: "ghost", clearance: "phi")
        let verdict = scenarioPolicy.subscribeVerdict(principal: stranger, topic: "education.completed")
        Expected.refuse(.notCleared, "role 'ghost' is not declared").check(verdict.decision)
        #expect(verdict.ruleID == "subscribe.role")
        Expected.refuse(.notAuthorized, "role 'ghost' is not declared")
            .check(scenarioPolicy.publishDecision(principal: stranger, topic: "education.completed"))
    }

    @Test("the role's clearance comes from the policy, not from the principal value")
    func clearanceFromPolicy() {
        let inflated = Principal(clientID: "analytics-lake", role: "analytics", clearance: "phi")
        Expected.refuse(.notCleared, "cleared up to 'deidentified'")
            .check(scenarioPolicy.subscribeDecision(principal: inflated, topic: "support.milestone"))
    }

    @Test("the right token authenticates as the principal with its role and clearance")
    func rightToken() {
        let decision = scenarioPolicy.authenticate(
            clientID: "crm-automation",
            token: Array("token-of-crm-automation".utf8)
        )
        #expect(decision == .authenticated(Principal(clientID: "crm-automation", role: "crm", clearance: "non_phi")))
        let support = scenarioPolicy.authenticate(clientID: "support-desk", token: Array("token-of-support-desk".utf8))
        #expect(
            support == .authenticated(Principal(clientID: "support-desk", role: "patient_support", clearance: "phi"))
        )
    }

    @Test(
        "refused authentications say why, for the log",
        arguments: [
            ("crm-automation", "token-of-crm-automatio", "wrong token"),
            ("crm-automation", "token-of-support-desk", "wrong token"),
            ("crm-automation", "TOKEN-OF-CRM-AUTOMATION", "wrong token"),
            ("crm-automation", "", "empty token"),
            ("nobody", "token-of-nobody", "unknown client id"),
            ("nobody", "token-of-crm-automation", "unknown client id"),
            ("", "", "unknown client id"),
            ("CRM-AUTOMATION", "token-of-crm-automation", "unknown client id"),
        ]
    )
    func refused(clientID: String, token: String, reason: String) {
        #expect(scenarioPolicy.authenticate(clientID: clientID, token: Array(token.utf8)) == .refused(reason: reason))
    }

    @Test("a token of arbitrary bytes is hashed, not decoded")
    func binaryToken() throws {
        let token: [UInt8] = [0, 255, 10, 13, 0x80]
        var config = scenarioPolicy.config
        config.principals[0].tokenHash = "sha256:" + ByteEncoding.lowercaseHex(Credentials.sha256(token))
        let policy = try Policy(config: config)
        let clientID = config.principals[0].clientID
        guard case .authenticated = policy.authenticate(clientID: clientID, token: token) else {
            Issue.record("binary token refused")
            return
        }
        #expect(
            policy.authenticate(clientID: clientID, token: Array(token.dropLast())) == .refused(reason: "wrong token")
        )
    }

    @Test("topic(named:) finds declared topics only")
    func topicLookup() {
        #expect(scenarioPolicy.topic(named: "__quarantine") == nil)
        #expect(scenarioPolicy.topic(named: "__audit") == nil)
        #expect(scenarioPolicy.topic(named: "support.milestone")?.sensitivity == "pseudonymous")
        #expect(scenarioPolicy.topic(named: "analytics.deidentified")?.fsync == .interval(milliseconds: 50))
        #expect(scenarioPolicy.topic(named: "support.*") == nil)
        #expect(scenarioPolicy.topic(named: "") == nil)
    }
}
