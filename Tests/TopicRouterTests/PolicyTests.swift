import Testing

@testable import TopicRouter

/// The embedded default scenario with every principal's token set to "token-of-<client id>".
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
        "subscribe decisions over the default scenario",
        arguments: [
            ("crm-automation", "education.completed", Expected.allow),
            ("analytics-lake", "analytics.deidentified", .allow),
            ("analytics-lake", "education.completed", .allow),
            ("support-desk", "clinical.referral", .allow),
            ("support-desk", "support.milestone", .allow),
            ("ops-admin", "clinical.referral", .allow),
            ("ops-admin", "education.completed", .allow),
            // NOT_CLEARED by clearance (checked before patterns).
            (
                "crm-automation", "clinical.referral",
                .refuse(.notCleared, "topic 'clinical.referral' is class 'phi'; role 'crm' is cleared up to 'non_phi'")
            ),
            (
                "crm-automation", "support.milestone",
                .refuse(.notCleared, "topic 'support.milestone' is class 'pseudonymous'; role 'crm' is cleared up to")
            ),
            (
                "analytics-lake", "clinical.referral",
                .refuse(.notCleared, "role 'analytics' is cleared up to 'deidentified'")
            ),
            ("learning-portal", "support.milestone", .refuse(.notCleared, "is cleared up to 'non_phi'")),
            // NOT_CLEARED by pattern (cleared for the class, but no subscribe pattern).
            (
                "support-desk", "education.completed",
                .refuse(.notCleared, "role 'patient_support' has no subscribe pattern matching 'education.completed'")
            ),
            (
                "support-desk", "analytics.deidentified",
                .refuse(.notCleared, "role 'patient_support' has no subscribe pattern matching")
            ),
            (
                "learning-portal", "education.completed",
                .refuse(.notCleared, "role 'learning_portal' has no subscribe pattern matching 'education.completed'")
            ),
            // UNKNOWN_TOPIC before anything else.
            (
                "crm-automation", "education.completed.v2",
                .refuse(.unknownTopic, "topic 'education.completed.v2' is not declared")
            ),
            ("ops-admin", "clinical.referrals", .refuse(.unknownTopic, "topic 'clinical.referrals' is not declared")),
            ("crm-automation", "", .refuse(.unknownTopic, "is not declared")),
            ("ops-admin", "__consumer_offsets", .refuse(.unknownTopic, "is not declared")),
        ]
    )
    func subscribe(clientID: String, topic: String, expected: Expected) {
        expected.check(scenarioPolicy.subscribeDecision(principal: scenarioPrincipal(clientID), topic: topic))
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
        ]
    )
    func publish(clientID: String, topic: String, expected: Expected) {
        expected.check(scenarioPolicy.publishDecision(principal: scenarioPrincipal(clientID), topic: topic))
    }

    @Test("decisions for a role the policy does not know are refusals")
    func undeclaredRole() {
        let stranger = Principal(clientID: "x", role: "ghost", clearance: "phi")
        Expected.refuse(.notCleared, "role 'ghost' is not declared")
            .check(scenarioPolicy.subscribeDecision(principal: stranger, topic: "education.completed"))
        Expected.refuse(.notAuthorized, "role 'ghost' is not declared")
            .check(scenarioPolicy.publishDecision(principal: stranger, topic: "education.completed"))
    }

    @Test("the role's clearance comes from the policy, not from the principal value")
    func clearanceFromPolicy() {
        let inflated = Principal(clientID: "crm-automation", role: "crm", clearance: "phi")
        Expected.refuse(.notCleared, "cleared up to 'non_phi'")
            .check(scenarioPolicy.subscribeDecision(principal: inflated, topic: "clinical.referral"))
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
        #expect(scenarioPolicy.topic(named: "support.milestone")?.sensitivity == "pseudonymous")
        #expect(scenarioPolicy.topic(named: "analytics.deidentified")?.fsync == .interval(milliseconds: 50))
        #expect(scenarioPolicy.topic(named: "support.*") == nil)
        #expect(scenarioPolicy.topic(named: "") == nil)
    }
}
