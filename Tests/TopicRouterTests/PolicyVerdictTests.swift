import Testing

@testable import TopicRouter

/// The headers a well-formed scenario record carries, with `scope` as its consent scope (nil: no consent_scope).
func recordHeaders(scope: String?, extra: [PolicyHeader] = []) -> [PolicyHeader] {
    var headers = [
        PolicyHeader("event_type", "account.education.completed"),
        PolicyHeader("source_system", "learning_portal"),
    ]
    if let scope { headers.append(PolicyHeader("consent_scope", scope)) }
    return headers + extra
}

/// The scenario's example of a well-formed low-risk event.
let educationEvent = #"""
    {
      "event_type": "account.education.completed",
      "source_system": "learning_portal",
      "account_id": "acct_7f3a9c",
      "timestamp": "2026-04-13T14:00:00Z",
      "sensitivity": "non_phi",
      "consent_scope": ["hcp_commercial_engagement"],
      "allowed_recipients": ["crm", "analytics_lake"],
      "payload": { "module_id": "onboarding-101", "completion_status": "completed" }
    }
    """#

/// One row of the publish table.
struct PublishCase: CustomTestStringConvertible, Sendable {
    enum Outcome: Sendable {
        case accept
        case refuse(RefusalCode, rule: String, reason: String)
        case quarantine(QuarantineReason, message: String)
    }

    var label: String
    var clientID: String
    var topic: String
    var headers: [PolicyHeader]
    var value: [UInt8]
    var outcome: Outcome
    var testDescription: String { self.label }

    init(
        _ label: String,
        by clientID: String = "learning-portal",
        to topic: String = "education.completed",
        headers: [PolicyHeader] = recordHeaders(scope: "hcp_commercial_engagement"),
        value: String = educationEvent,
        _ outcome: Outcome
    ) {
        self.label = label
        self.clientID = clientID
        self.topic = topic
        self.headers = headers
        self.value = Array(value.utf8)
        self.outcome = outcome
    }

    /// The principal: the scenario's, or for "ghost" one whose role the policy does not know.
    var principal: Principal {
        self.clientID == "ghost"
            ? Principal(clientID: "ghost", role: "ghost", clearance: "phi") : scenarioPrincipal(self.clientID)
    }
}

/// One row of the delivery table.
struct DeliveryCase: CustomTestStringConvertible, Sendable {
    var label: String
    var clientID: String
    var topic: String
    var headers: [PolicyHeader]
    var expected: DeliveryVerdict
    var testDescription: String { self.label }
}

@Suite("Policy verdicts")
struct PolicyVerdictTests {
    static let publishCases: [PublishCase] = [
        // Accepted.
        PublishCase("the scenario's example event", .accept),
        PublishCase(
            "two scopes, both allowed",
            headers: recordHeaders(scope: "educational, operational_notice"),
            .accept
        ),
        PublishCase(
            "a 256-byte dedupe key",
            headers: recordHeaders(
                scope: "educational",
                extra: [PolicyHeader("dedupe-key", String(repeating: "k", count: 256))]
            ),
            .accept
        ),
        PublishCase(
            "nested fields are not limited by allowed_fields",
            value: #"{"event_type": "x", "payload": {"anything": {"goes": [1]}}}"#,
            .accept
        ),
        PublishCase(
            "PHI topics may carry identifiers",
            by: "support-portal",
            to: "clinical.referral",
            headers: recordHeaders(scope: "treatment_support"),
            value: #"{"patient_name": "A. Patient", "mrn": "123", "diagnosis": "x", "note": "call back"}"#,
            .accept
        ),
        PublishCase(
            "a milestone without forbidden fields",
            by: "support-portal",
            to: "support.milestone",
            headers: recordHeaders(scope: "treatment_support"),
            value: #"{"patient_ref": "p_81f", "milestone": "refill_delayed", "extra": true}"#,
            .accept
        ),
        PublishCase(
            "a producer's own headers are kept and not checked",
            headers: recordHeaders(scope: "educational", extra: [PolicyHeader("transformation", "minimised-v2")]),
            .accept
        ),
        // Refused (the whole PUBLISH, nothing quarantined).
        PublishCase(
            "unknown topic",
            by: "learning-portal",
            to: "education.started",
            .refuse(.unknownTopic, rule: "publish.unknown_topic", reason: "topic 'education.started' is not declared")
        ),
        PublishCase(
            "reserved topic",
            by: "ops-admin",
            to: "__quarantine",
            .refuse(.notAuthorized, rule: "publish.reserved_topic", reason: "reserved for the broker")
        ),
        PublishCase(
            "undeclared role",
            by: "ghost",
            .refuse(.notAuthorized, rule: "publish.role", reason: "role 'ghost' is not declared")
        ),
        PublishCase(
            "no publish pattern",
            by: "crm-automation",
            .refuse(
                .notAuthorized,
                rule: "publish.pattern",
                reason: "role 'crm' has no publish pattern matching 'education.completed'"
            )
        ),
        PublishCase(
            "no publish pattern beats a bad record",
            by: "crm-automation",
            headers: [],
            value: "garbage",
            .refuse(.notAuthorized, rule: "publish.pattern", reason: "role 'crm'")
        ),
        // RESERVED_HEADER.
        PublishCase(
            "a broker- header",
            headers: recordHeaders(scope: "educational", extra: [PolicyHeader("broker-received-at", "1")]),
            .quarantine(.reservedHeader, message: "header 'broker-received-at' starts with 'broker-'")
        ),
        PublishCase(
            "a replayed- header in other case",
            headers: recordHeaders(scope: "educational", extra: [PolicyHeader("Replayed-From", "7")]),
            .quarantine(.reservedHeader, message: "header 'Replayed-From' starts with 'replayed-'")
        ),
        PublishCase(
            "a replay- header",
            headers: recordHeaders(scope: "educational", extra: [PolicyHeader("replay-policy-version", "pv-0")]),
            .quarantine(.reservedHeader, message: "starts with 'replay-'")
        ),
        PublishCase(
            "a reserved header is reported before missing ones",
            headers: [PolicyHeader("quarantine-reason", "none")],
            value: "not json",
            .quarantine(.reservedHeader, message: "header 'quarantine-reason' starts with 'quarantine-'")
        ),
        PublishCase(
            "a reserved header after a bad dedupe key still wins",
            headers: recordHeaders(
                scope: "educational",
                extra: [PolicyHeader("dedupe-key", ""), PolicyHeader("broker-policy-version", "pv-000000000000")]
            ),
            .quarantine(.reservedHeader, message: "header 'broker-policy-version' starts with 'broker-'")
        ),
        // INVALID_DEDUPE_KEY.
        PublishCase(
            "an empty dedupe key",
            headers: recordHeaders(scope: "educational", extra: [PolicyHeader("dedupe-key", "")]),
            .quarantine(.invalidDedupeKey, message: "header 'dedupe-key' is 0 bytes; a dedupe key is 1…256 bytes")
        ),
        PublishCase(
            "a 257-byte dedupe key",
            headers: recordHeaders(
                scope: "educational",
                extra: [PolicyHeader("dedupe-key", String(repeating: "k", count: 257))]
            ),
            .quarantine(.invalidDedupeKey, message: "is 257 bytes")
        ),
        PublishCase(
            "two dedupe keys",
            headers: recordHeaders(
                scope: "educational",
                extra: [PolicyHeader("dedupe-key", "a"), PolicyHeader("dedupe-key", "a")]
            ),
            .quarantine(.invalidDedupeKey, message: "header 'dedupe-key' appears 2 times")
        ),
        PublishCase(
            "a dedupe key is checked before required headers",
            headers: [PolicyHeader("dedupe-key", String(repeating: "k", count: 300))],
            .quarantine(.invalidDedupeKey, message: "is 300 bytes")
        ),
        // The header checks run in one walk; what they find is judged in the rules' order, whatever the headers'.
        PublishCase(
            "a reserved header after a bad consent scope is reported as reserved",
            headers: recordHeaders(
                scope: "promotional_outreach",
                extra: [PolicyHeader("Replay-Of", "x")]
            ),
            .quarantine(.reservedHeader, message: "header 'Replay-Of' starts with 'replay-'")
        ),
        PublishCase(
            "a missing required header is reported before a bad consent scope",
            headers: [PolicyHeader("consent_scope", "promotional_outreach"), PolicyHeader("event_type", "x")],
            .quarantine(.missingHeader, message: "missing required header 'source_system'")
        ),
        PublishCase(
            "a required header given twice, once empty, is empty",
            headers: [
                PolicyHeader("event_type", "x"), PolicyHeader("source_system", "lp"),
                PolicyHeader("consent_scope", "educational"), PolicyHeader("event_type", ""),
            ],
            .quarantine(.missingHeader, message: "required header 'event_type' is empty")
        ),
        // MISSING_HEADER.
        PublishCase(
            "no consent_scope",
            headers: recordHeaders(scope: nil),
            .quarantine(
                .missingHeader,
                message: "missing required header 'consent_scope'; topic 'education.completed' requires event_type, "
                    + "source_system, consent_scope"
            )
        ),
        PublishCase(
            "no headers at all names the first required one",
            headers: [],
            .quarantine(.missingHeader, message: "missing required header 'event_type'")
        ),
        PublishCase(
            "an empty required header",
            headers: [
                PolicyHeader("event_type", ""), PolicyHeader("source_system", "lp"),
                PolicyHeader("consent_scope", "educational"),
            ],
            .quarantine(.missingHeader, message: "required header 'event_type' is empty")
        ),
        PublishCase(
            "header names are case-sensitive",
            headers: [
                PolicyHeader("Event_Type", "x"), PolicyHeader("source_system", "lp"),
                PolicyHeader("consent_scope", "educational"),
            ],
            .quarantine(.missingHeader, message: "missing required header 'event_type'")
        ),
        // CONSENT_SCOPE_NOT_ALLOWED.
        PublishCase(
            "a declared scope the topic does not allow",
            headers: recordHeaders(scope: "promotional_outreach"),
            .quarantine(
                .consentScopeNotAllowed,
                message: "consent scope 'promotional_outreach' is not allowed on topic 'education.completed' "
                    + "(allowed: hcp_commercial_engagement, educational, operational_notice)"
            )
        ),
        PublishCase(
            "one bad scope among good ones",
            headers: recordHeaders(scope: "educational, promotional_outreach"),
            .quarantine(.consentScopeNotAllowed, message: "consent scope 'promotional_outreach' is not allowed")
        ),
        PublishCase(
            "an undeclared scope",
            headers: recordHeaders(scope: "sms_marketing"),
            .quarantine(.consentScopeNotAllowed, message: "consent scope 'sms_marketing' is not declared (declared: ")
        ),
        PublishCase(
            "scopes are case-sensitive",
            headers: recordHeaders(scope: "Educational"),
            .quarantine(.consentScopeNotAllowed, message: "consent scope 'Educational' is not declared")
        ),
        PublishCase(
            "an empty entry",
            headers: recordHeaders(scope: "educational,,operational_notice"),
            .quarantine(.consentScopeNotAllowed, message: "header 'consent_scope' has an empty entry")
        ),
        PublishCase(
            "a blank scope",
            headers: recordHeaders(scope: "  "),
            .quarantine(.consentScopeNotAllowed, message: "has an empty entry")
        ),
        PublishCase(
            "a second consent_scope header is checked too",
            headers: recordHeaders(
                scope: "educational",
                extra: [PolicyHeader("consent_scope", "promotional_outreach")]
            ),
            .quarantine(.consentScopeNotAllowed, message: "'promotional_outreach' is not allowed")
        ),
        PublishCase(
            "a PHI topic's scopes",
            by: "support-portal",
            to: "clinical.referral",
            headers: recordHeaders(scope: "operational_notice"),
            value: "{}",
            .quarantine(
                .consentScopeNotAllowed,
                message: "not allowed on topic 'clinical.referral' (allowed: treatment_support)"
            )
        ),
        // INVALID_JSON.
        PublishCase(
            "plain text",
            value: "module completed",
            .quarantine(
                .invalidJSON,
                message: "topic 'education.completed' requires a JSON object: a JSON object is required, found 'm' "
                    + "at byte 0"
            )
        ),
        PublishCase("a JSON array", value: "[]", .quarantine(.invalidJSON, message: "a JSON object is required")),
        PublishCase(
            "trailing garbage",
            value: #"{"event_type": "x"} x"#,
            .quarantine(.invalidJSON, message: "trailing byte(s)")
        ),
        PublishCase(
            "invalid JSON is reported before a forbidden field in it",
            value: #"{"dob": "1970-01-01""#,
            .quarantine(.invalidJSON, message: "ends inside 1 open")
        ),
        // FORBIDDEN_FIELD.
        PublishCase(
            "a top-level forbidden field",
            value: #"{"event_type": "x", "patient_name": "A. Patient"}"#,
            .quarantine(
                .forbiddenField,
                message: "top-level field 'patient_name' (byte 20) is forbidden on topic 'education.completed' "
                    + "(forbidden: patient_name, dob, mrn, ssn, diagnosis, note)"
            )
        ),
        PublishCase(
            "a nested forbidden field",
            value: #"{"payload": {"module_id": "m", "dob": "1970-01-01"}}"#,
            .quarantine(.forbiddenField, message: "field nested at depth 2 'dob' (byte 31) is forbidden")
        ),
        PublishCase(
            "a forbidden field in an array of objects",
            value: #"{"payload": {"rows": [{"ok": 1}, {"mrn": "123"}]}}"#,
            .quarantine(.forbiddenField, message: "field nested at depth 4 'mrn'")
        ),
        PublishCase(
            "a forbidden field in other case",
            value: #"{"Diagnosis": "x"}"#,
            .quarantine(.forbiddenField, message: "top-level field 'Diagnosis'")
        ),
        PublishCase(
            "a forbidden field spelt with an escape",
            value: #"{"patient\u005fname": "x"}"#,
            .quarantine(.forbiddenField, message: "top-level field 'patient_name'")
        ),
        PublishCase(
            "a forbidden field is reported before a field that is not allowed",
            value: #"{"extra": 1, "note": "free text"}"#,
            .quarantine(.forbiddenField, message: "'note'")
        ),
        PublishCase(
            "a forbidden field on a pseudonymous topic (class default)",
            by: "support-portal",
            to: "support.milestone",
            headers: recordHeaders(scope: "treatment_support"),
            value: #"{"patient_ref": "p_81f", "ssn": "000-00-0000"}"#,
            .quarantine(.forbiddenField, message: "'ssn'")
        ),
        PublishCase(
            "a forbidden name as a value is fine, as a key it is not",
            value: #"{"event_type": "note", "payload": {"note": 1}}"#,
            .quarantine(.forbiddenField, message: "field nested at depth 2 'note'")
        ),
        // FIELD_NOT_ALLOWED.
        PublishCase(
            "a top-level field outside allowed_fields",
            value: #"{"event_type": "x", "email": "a@b.c"}"#,
            .quarantine(
                .fieldNotAllowed,
                message: "top-level field 'email' (byte 20) is not allowed on topic 'education.completed' (allowed: "
                    + "event_type, source_system, account_id"
            )
        ),
        PublishCase(
            "allowed fields match exactly",
            value: #"{"Event_Type": "x"}"#,
            .quarantine(.fieldNotAllowed, message: "top-level field 'Event_Type'")
        ),
    ]

    @Test("publish verdicts over the default scenario: every outcome, reason code and rule id", arguments: publishCases)
    func publish(_ testCase: PublishCase) {
        let verdict = scenarioPolicy.publishVerdict(
            principal: testCase.principal,
            topic: testCase.topic,
            headers: testCase.headers,
            value: testCase.value
        )
        switch (testCase.outcome, verdict) {
        case (.accept, .accept):
            break
        case (.refuse(let code, let rule, let reason), .refuse(let actualCode, let actualReason, let actualRule)):
            #expect(actualCode == code)
            #expect(actualRule == rule)
            #expect(actualReason.contains(reason), "\(actualReason)")
        case (.quarantine(let reason, let message), .quarantine(let actualReason, let actualRule, let actualMessage)):
            #expect(actualReason == reason)
            #expect(actualRule == reason.rule)
            #expect(actualMessage.contains(message), "\(actualMessage)")
        default:
            Issue.record("expected \(testCase.outcome), got \(verdict)")
        }
    }

    @Test("every quarantine reason and every publish rule id is exercised by the table")
    func publishTableCoverage() {
        var reasons = Set<QuarantineReason>()
        var rules = Set<String>()
        for testCase in Self.publishCases {
            switch testCase.outcome {
            case .accept: break
            case .refuse(_, let rule, _): rules.insert(rule)
            case .quarantine(let reason, _):
                reasons.insert(reason)
                rules.insert(reason.rule)
            }
        }
        #expect(reasons == Set(QuarantineReason.allCases))
        #expect(rules == Set(PolicyRule.all.filter { !$0.hasPrefix("subscribe.") && !$0.hasPrefix("delivery.") }))
    }

    @Test("reason codes and rule ids are the documented stable strings")
    func stableCodes() {
        #expect(
            QuarantineReason.allCases.map(\.code) == [
                "RESERVED_HEADER", "INVALID_DEDUPE_KEY", "MISSING_HEADER", "CONSENT_SCOPE_NOT_ALLOWED", "INVALID_JSON",
                "FORBIDDEN_FIELD", "FIELD_NOT_ALLOWED",
            ]
        )
        #expect(
            QuarantineReason.allCases.map(\.rule) == [
                "record.reserved_header", "record.dedupe_key", "topic.required_headers", "topic.consent_scopes",
                "topic.payload_json", "topic.forbidden_fields", "topic.allowed_fields",
            ]
        )
        #expect(Set(PolicyRule.all).count == PolicyRule.all.count)
        #expect(RefusalCode.notCleared.code == "NOT_CLEARED" && RefusalCode.notAuthorized.code == "NOT_AUTHORIZED")
    }

    @Test("recordVerdict checks a record without a principal, e.g. for replay")
    func recordVerdict() {
        let good = scenarioPolicy.recordVerdict(
            topic: "education.completed",
            headers: recordHeaders(scope: "educational"),
            value: Array(educationEvent.utf8)
        )
        #expect(good == .accept)
        let bad = scenarioPolicy.recordVerdict(
            topic: "education.completed",
            headers: recordHeaders(scope: "educational"),
            value: Array(#"{"dob": 1}"#.utf8)
        )
        guard case .quarantine(.forbiddenField, "topic.forbidden_fields", _) = bad else {
            Issue.record("\(bad)")
            return
        }
        let reserved = scenarioPolicy.recordVerdict(topic: "__audit", headers: [PolicyHeader](), value: [])
        guard case .refuse(.notAuthorized, _, "publish.reserved_topic") = reserved else {
            Issue.record("\(reserved)")
            return
        }
        let unknown = scenarioPolicy.recordVerdict(topic: "gone", headers: [PolicyHeader](), value: [])
        #expect(
            unknown == .refuse(.unknownTopic, reason: "topic 'gone' is not declared", rule: "publish.unknown_topic")
        )
    }

    @Test("a topic with payload = \"any\" and no required headers accepts any bytes")
    func opaqueTopic() throws {
        var config = scenarioPolicy.config
        var raw = TopicPolicy(name: "raw.bytes", sensitivity: "non_phi")
        raw.payload = .any
        raw.requiredHeaders = []
        config.topics.append(raw)
        let policy = try Policy(config: config)
        let operatorPrincipal = scenarioPrincipal("ops-admin")
        let verdict = policy.publishVerdict(
            principal: operatorPrincipal,
            topic: "raw.bytes",
            headers: [PolicyHeader](),
            value: [0xFF, 0x00, 0x7B]
        )
        #expect(verdict == .accept)
        // Scopes are still checked when present, and reserved headers still refused.
        let badScope = policy.publishVerdict(
            principal: operatorPrincipal,
            topic: "raw.bytes",
            headers: [PolicyHeader("consent_scope", "nope")],
            value: []
        )
        guard case .quarantine(.consentScopeNotAllowed, _, _) = badScope else {
            Issue.record("\(badScope)")
            return
        }
        // Without consent_scope required, a record without one is delivered.
        #expect(
            policy.deliveryDecision(
                principal: scenarioPrincipal("ops-admin"),
                topic: "raw.bytes",
                headers: [PolicyHeader]()
            )
                == .deliver
        )
    }

    static let deliveryCases: [DeliveryCase] = [
        DeliveryCase(
            label: "CRM receives HCP commercial engagement",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: "hcp_commercial_engagement"),
            expected: .deliver
        ),
        DeliveryCase(
            label: "CRM does not receive operational notices",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: "operational_notice"),
            expected: .withhold(scope: "operational_notice", rule: "delivery.consent_scope")
        ),
        DeliveryCase(
            label: "analytics receives operational notices",
            clientID: "analytics-lake",
            topic: "education.completed",
            headers: recordHeaders(scope: "operational_notice"),
            expected: .deliver
        ),
        DeliveryCase(
            label: "one scope in common is enough",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: "operational_notice, educational"),
            expected: .deliver
        ),
        DeliveryCase(
            label: "no scope in common: the record's scopes are reported",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: " promotional_outreach ,operational_notice"),
            expected: .withhold(scope: "promotional_outreach,operational_notice", rule: "delivery.consent_scope")
        ),
        DeliveryCase(
            label: "scopes from several consent_scope headers count",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: "operational_notice", extra: [PolicyHeader("consent_scope", "educational")]),
            expected: .deliver
        ),
        DeliveryCase(
            label: "an undeclared scope is never receivable",
            clientID: "operator-of-nothing-declared",
            topic: "education.completed",
            headers: recordHeaders(scope: "sms"),
            expected: .withhold(scope: "sms", rule: "delivery.consent_scope")
        ),
        DeliveryCase(
            label: "a record without consent_scope on a topic that requires it",
            clientID: "crm-automation",
            topic: "education.completed",
            headers: recordHeaders(scope: nil),
            expected: .withhold(scope: "", rule: "delivery.consent_missing")
        ),
        DeliveryCase(
            label: "patient support receives treatment support",
            clientID: "support-desk",
            topic: "support.milestone",
            headers: recordHeaders(scope: "treatment_support"),
            expected: .deliver
        ),
        DeliveryCase(
            label: "patient support does not receive promotion, even on a PHI topic",
            clientID: "support-desk",
            topic: "clinical.referral",
            headers: recordHeaders(scope: "promotional_outreach"),
            expected: .withhold(scope: "promotional_outreach", rule: "delivery.consent_scope")
        ),
        DeliveryCase(
            label: "reserved topics are exempt: quarantine",
            clientID: "quarantine-operator",
            topic: "__quarantine",
            headers: [],
            expected: .deliver
        ),
        DeliveryCase(
            label: "reserved topics are exempt: audit",
            clientID: "compliance-auditor",
            topic: "__audit",
            headers: recordHeaders(scope: "promotional_outreach"),
            expected: .deliver
        ),
        DeliveryCase(
            label: "a topic no longer declared",
            clientID: "crm-automation",
            topic: "education.retired",
            headers: recordHeaders(scope: "educational"),
            expected: .withhold(scope: "", rule: "delivery.unknown_topic")
        ),
        DeliveryCase(
            label: "a role no longer declared",
            clientID: "ghost",
            topic: "education.completed",
            headers: recordHeaders(scope: "educational"),
            expected: .withhold(scope: "", rule: "delivery.role")
        ),
    ]

    @Test("delivery verdicts over the default scenario: every outcome and rule id", arguments: deliveryCases)
    func delivery(_ testCase: DeliveryCase) {
        let principal: Principal
        switch testCase.clientID {
        case "ghost": principal = Principal(clientID: "ghost", role: "ghost", clearance: "phi")
        case "operator-of-nothing-declared": principal = scenarioPrincipal("ops-admin")
        default: principal = scenarioPrincipal(testCase.clientID)
        }
        #expect(
            scenarioPolicy.deliveryDecision(principal: principal, topic: testCase.topic, headers: testCase.headers)
                == testCase.expected
        )
    }

    @Test("every delivery rule id is exercised by the table")
    func deliveryTableCoverage() {
        let rules = Set(
            Self.deliveryCases.compactMap { testCase -> String? in
                guard case .withhold(_, let rule) = testCase.expected else { return nil }
                return rule
            }
        )
        #expect(rules == Set(PolicyRule.all.filter { $0.hasPrefix("delivery.") }))
    }

    @Test("the reserved topics: most sensitive class, fsync always, lz4, written by the broker only")
    func reservedTopics() throws {
        #expect(Policy.reservedTopicNames == ["__quarantine", "__audit"])
        #expect(scenarioPolicy.reservedTopics.map(\.name) == ["__quarantine", "__audit"])
        for topic in scenarioPolicy.reservedTopics {
            #expect(topic.sensitivity == "phi")
            #expect(topic.fsync == .always)
            #expect(topic.compression == .lz4)
            #expect(Policy.isReserved(topic.name))
            #expect(scenarioPolicy.reservedTopic(named: topic.name) == topic)
        }
        #expect(!Policy.isReserved("__consumer_offsets"))
        #expect(scenarioPolicy.reservedTopic(named: "education.completed") == nil)
        // The class follows the config: a config whose most sensitive class is "secret".
        var config = scenarioPolicy.config
        config.classes.append("secret")
        #expect(try Policy(config: config).reservedTopics.allSatisfy { $0.sensitivity == "secret" })
    }

    @Test("roles and capabilities")
    func capabilities() {
        #expect(scenarioPolicy.role(named: "crm")?.consentScopes == ["hcp_commercial_engagement", "educational"])
        #expect(scenarioPolicy.role(named: "nobody") == nil)
        #expect(
            scenarioPolicy.capabilities(of: scenarioPrincipal("quarantine-operator"))
                == [.quarantineRead, .quarantineReplay, .admin]
        )
        #expect(scenarioPolicy.capabilities(of: scenarioPrincipal("compliance-auditor")) == [.auditRead])
        #expect(scenarioPolicy.capabilities(of: scenarioPrincipal("crm-automation")).isEmpty)
        #expect(scenarioPolicy.hasCapability(scenarioPrincipal("ops-admin"), .admin))
        #expect(!scenarioPolicy.hasCapability(scenarioPrincipal("ops-admin"), .auditRead))
        #expect(scenarioPolicy.hasCapability(scenarioPrincipal("compliance-auditor"), .auditRead))
        let ghost = Principal(clientID: "ghost", role: "ghost", clearance: "phi")
        #expect(scenarioPolicy.capabilities(of: ghost).isEmpty)
        #expect(!scenarioPolicy.hasCapability(ghost, .admin))
    }

    @Test("configs built in code without the policy-plane fields keep deciding as before")
    func inCodeDefaults() throws {
        let config = BrokerConfig(
            server: ServerSettings(),
            classes: ["non_phi", "phi"],
            topics: [TopicPolicy(name: "t.a", sensitivity: "non_phi")],
            roles: [RolePolicy(name: "r", clearance: "phi", publish: ["*"], subscribe: ["*"])],
            principals: [PrincipalEntry(clientID: "c", role: "r", tokenHash: someHash)]
        )
        let policy = try Policy(config: config)
        let principal = Principal(clientID: "c", role: "r", clearance: "phi")
        #expect(
            policy.subscribeVerdict(principal: principal, topic: "t.a")
                == SubscribeVerdict(.allow, ruleID: "subscribe.allowed")
        )
        #expect(policy.publishDecision(principal: principal, topic: "t.a") == .allow)
        #expect(
            policy.deliveryDecision(
                principal: principal,
                topic: "t.a",
                headers: [PolicyHeader("consent_scope", "educational")]
            )
                == .deliver
        )
    }

    @Test("consentScopes(in:) lists every entry of every consent_scope header")
    func consentScopeList() {
        let headers = [
            PolicyHeader("consent_scope", " educational ,, operational_notice"), PolicyHeader("other", "x"),
            PolicyHeader("consent_scope", "treatment_support"),
        ]
        #expect(Policy.consentScopes(in: headers) == ["educational", "operational_notice", "treatment_support"])
        #expect(Policy.consentScopes(in: [PolicyHeader]()) == [])
    }
}
