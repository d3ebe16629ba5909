import Testing

@testable import TopicRouter

/// `baseLines` (one topic `a.b`, class non_phi, every default scope) followed by `[[limiters]]` entries: the first
/// `[[limiters]]` header is line 15, so the first entry's keys start at line 16.
func withLimiters(_ entries: [[String]]) -> String {
    base(appending: entries.flatMap { ["[[limiters]]"] + $0 })
}

/// A publish limiter `x` keyed by recipient with a window, plus `extra` lines (which start at line 21).
func windowLimiter(_ extra: [String] = []) -> String {
    withLimiters([
        [#"name = "x""#, #"applies_to = "publish""#, #"key = "recipient""#, "cap = 3", "window_ms = 1000"] + extra
    ])
}

/// A delivery limiter `d` keyed by subscriber with a bucket, plus `extra` lines (which start at line 21).
func deliveryLimiter(_ extra: [String] = []) -> String {
    withLimiters([
        [#"name = "d""#, #"applies_to = "delivery""#, #"key = "subscriber""#, "rate = 10", "burst = 20"] + extra
    ])
}

@Suite("LimiterDeclaration")
struct LimiterDeclarationTests {
    static let errorCases: [ErrorCase] = [
        ErrorCase(
            label: "cap without window_ms",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "cap = 3"]]),
            message: "limiter 'x' has cap but no window_ms",
            line: 19
        ),
        ErrorCase(
            label: "window_ms without cap",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "window_ms = 3"]]),
            message: "limiter 'x' has window_ms but no cap",
            line: 19
        ),
        ErrorCase(
            label: "rate and cap both given",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1", "burst = 2", "cap = 3"]
            ]),
            message: "limiter 'x' has both a token bucket (rate, burst) and a window (cap, window_ms)",
            line: 21
        ),
        ErrorCase(
            label: "rate without burst",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1"]]),
            message: "limiter 'x' has rate but no burst",
            line: 19
        ),
        ErrorCase(
            label: "burst without rate",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "burst = 1"]]),
            message: "limiter 'x' has burst but no rate",
            line: 19
        ),
        ErrorCase(
            label: "no limit",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#]]),
            message: "limiter 'x' has no limit; give rate and burst",
            line: 15
        ),
        ErrorCase(
            label: "missing applies_to",
            text: withLimiters([[#"name = "x""#, #"key = "global""#, "rate = 1", "burst = 1"]]),
            message: "missing key 'applies_to' in [[limiters]] 'x'",
            line: 15
        ),
        ErrorCase(
            label: "missing key",
            text: withLimiters([[#"name = "x""#, #"applies_to = "publish""#, "rate = 1", "burst = 1"]]),
            message: "missing key 'key' in [[limiters]] 'x'",
            line: 15
        ),
        ErrorCase(
            label: "unknown applies_to",
            text: withLimiters([[#"name = "x""#, #"applies_to = "both""#, #"key = "global""#, "rate = 1", "burst = 1"]]
            ),
            message: #"limiter 'x': applies_to must be "publish" or "delivery", got "both""#,
            line: 17
        ),
        ErrorCase(
            label: "unknown key kind",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "patient""#, "rate = 1", "burst = 1"]
            ]),
            message: #"limiter 'x': unknown key "patient"; keys are recipient, consent_scope, class"#,
            line: 18
        ),
        ErrorCase(
            label: "unknown table key, with a suggestion",
            text: windowLimiter(["rat = 1"]),
            message: "unknown key 'rat' in [[limiters]] 'x'; did you mean rate?",
            line: 21
        ),
        ErrorCase(
            label: "rate of the wrong type",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, #"rate = "fast""#, "burst = 1"]
            ]),
            message: "'rate' in [[limiters]] 'x' must be a number, got a string",
            line: 19
        ),
        ErrorCase(
            label: "fractional burst",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1", "burst = 1.5"]
            ]),
            message: "'burst' in [[limiters]] 'x' must be an integer, got a floating-point number",
            line: 20
        ),
        ErrorCase(
            label: "topics of the wrong type",
            text: windowLimiter([#"topics = "a.b""#]),
            message: "'topics' in [[limiters]] 'x' must be an array of strings, got a string",
            line: 21
        ),
        ErrorCase(
            label: "limiters not an array of tables",
            text: base(inserting: "limiters = 3", after: 1),
            message: "'limiters' must be an array of tables, got an integer",
            line: 2
        ),
        ErrorCase(
            label: "key connection on a delivery limiter",
            text: withLimiters([
                [#"name = "d""#, #"applies_to = "delivery""#, #"key = "connection""#, "rate = 1", "burst = 1"]
            ]),
            message: #"limiter 'd': key "connection" cannot be used on a delivery limiter; delivery keys are "#
                + "recipient, consent_scope, class, subscriber, group, global",
            line: 18
        ),
        ErrorCase(
            label: "key producer on a delivery limiter",
            text: withLimiters([
                [#"name = "d""#, #"applies_to = "delivery""#, #"key = "producer""#, "rate = 1", "burst = 1"]
            ]),
            message: #"key "producer" cannot be used on a delivery limiter"#,
            line: 18
        ),
        ErrorCase(
            label: "key subscriber on a publish limiter",
            text: withLimiters([
                [#"name = "p""#, #"applies_to = "publish""#, #"key = "subscriber""#, "rate = 1", "burst = 1"]
            ]),
            message: #"key "subscriber" cannot be used on a publish limiter; publish keys are "#
                + "recipient, consent_scope, class, producer, connection, global",
            line: 18
        ),
        ErrorCase(
            label: "key group on a publish limiter",
            text: withLimiters([
                [#"name = "p""#, #"applies_to = "publish""#, #"key = "group""#, "rate = 1", "burst = 1"]
            ]),
            message: #"key "group" cannot be used on a publish limiter"#,
            line: 18
        ),
        ErrorCase(
            label: "unknown consent scope",
            text: windowLimiter([#"consent_scopes = ["promo"]"#]),
            message: "limiter 'x' names consent scope 'promo', which is not declared",
            line: 21
        ),
        ErrorCase(
            label: "unknown class",
            text: windowLimiter([#"classes = ["secret"]"#]),
            message: "limiter 'x' names class 'secret', which is not declared; declared classes: non_phi, phi",
            line: 21
        ),
        ErrorCase(
            label: "duplicate class",
            text: windowLimiter([#"classes = ["non_phi", "non_phi"]"#]),
            message: "limiter 'x' lists 'non_phi' twice in classes",
            line: 21
        ),
        ErrorCase(
            label: "pattern matching no declared topic",
            text: windowLimiter([#"topics = ["a.*", "zzz.*"]"#]),
            message: "limiter 'x' has topic pattern 'zzz.*', which matches no declared topic",
            line: 21
        ),
        ErrorCase(
            label: "invalid pattern",
            text: windowLimiter([#"topics = ["a b"]"#]),
            message: "limiter 'x' has invalid topic pattern 'a b'",
            line: 21
        ),
        ErrorCase(
            label: "empty topics",
            text: windowLimiter(["topics = []"]),
            message: "limiter 'x' has topics = []",
            line: 21
        ),
        ErrorCase(
            label: "empty consent_scopes",
            text: windowLimiter(["consent_scopes = []"]),
            message: "limiter 'x' has consent_scopes = []",
            line: 21
        ),
        ErrorCase(
            label: "empty classes",
            text: windowLimiter(["classes = []"]),
            message: "limiter 'x' has classes = []",
            line: 21
        ),
        ErrorCase(
            label: "filters that no declared topic meets",
            text: windowLimiter([#"topics = ["a.*"]"#, #"classes = ["phi"]"#]),
            message: "limiter 'x' applies to no declared topic",
            line: 16
        ),
        ErrorCase(
            label: "a scope no declared topic allows",
            text: {
                var lines = baseLines
                lines.insert(#"consent_scopes = ["educational"]"#, at: 6)  // topic a.b allows only educational
                return document(
                    lines + [
                        "[[limiters]]", #"name = "x""#, #"applies_to = "publish""#, #"key = "consent_scope""#,
                        #"consent_scopes = ["promotional_outreach"]"#, "rate = 1", "burst = 1",
                    ]
                )
            }(),
            message: "limiter 'x' applies to no declared topic",
            line: 17
        ),
        ErrorCase(
            label: "duplicate names",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1", "burst = 1"],
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "producer""#, "rate = 1", "burst = 1"],
            ]),
            message: "duplicate limiter 'x'; limiter names must be unique",
            line: 22
        ),
        ErrorCase(
            label: "upper-case name",
            text: withLimiters([
                [#"name = "Per_Recipient""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1", "burst = 1"]
            ]),
            message: "invalid limiter name 'Per_Recipient'; use 1…255 of a-z 0-9 _ . -",
            line: 16
        ),
        ErrorCase(
            label: "unknown action",
            text: windowLimiter([#"action = "drop""#]),
            message: #"limiter 'x': action must be "reject", "quarantine" or "delay", got "drop""#,
            line: 21
        ),
        ErrorCase(
            label: "reject on a delivery limiter",
            text: deliveryLimiter([#"action = "reject""#]),
            message: "limiter 'd': a delivery limiter can only delay (records wait in the log and are never dropped), "
                + #"got action "reject""#,
            line: 21
        ),
        ErrorCase(
            label: "quarantine on a delivery limiter",
            text: deliveryLimiter([#"action = "quarantine""#]),
            message: "a delivery limiter can only delay",
            line: 21
        ),
        ErrorCase(
            label: "bytes_per_second on a publish limiter",
            text: windowLimiter(["bytes_per_second = 100"]),
            message: "limiter 'x': bytes_per_second and burst_bytes apply to delivery limiters only",
            line: 21
        ),
        ErrorCase(
            label: "burst_bytes without bytes_per_second",
            text: deliveryLimiter(["burst_bytes = 100"]),
            message: "limiter 'd' has burst_bytes but no bytes_per_second",
            line: 21
        ),
        ErrorCase(
            label: "zero bytes_per_second",
            text: deliveryLimiter(["bytes_per_second = 0"]),
            message: "limiter 'd': bytes_per_second must be in 1…1000000000, got 0.0",
            line: 21
        ),
        ErrorCase(
            label: "zero burst_bytes",
            text: deliveryLimiter(["bytes_per_second = 10", "burst_bytes = 0"]),
            message: "limiter 'd': burst_bytes must be in 1…1000000000, got 0",
            line: 22
        ),
        ErrorCase(
            label: "zero rate",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 0", "burst = 1"]
            ]),
            message: "limiter 'x': rate must be a number of records per second",
            line: 19
        ),
        ErrorCase(
            label: "negative rate",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = -2.5", "burst = 1"]
            ]),
            message: "got -2.5",
            line: 19
        ),
        ErrorCase(
            label: "zero burst",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "rate = 1", "burst = 0"]
            ]),
            message: "limiter 'x': burst must be in 1…1000000000, got 0",
            line: 20
        ),
        ErrorCase(
            label: "zero cap",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "cap = 0", "window_ms = 1"]
            ]),
            message: "limiter 'x': cap must be in 1…4096, got 0",
            line: 19
        ),
        ErrorCase(
            label: "cap above the ring size",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "cap = 5000", "window_ms = 1"]
            ]),
            message: "limiter 'x': cap must be in 1…4096, got 5000; for higher volumes use rate and burst",
            line: 19
        ),
        ErrorCase(
            label: "zero window",
            text: withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "global""#, "cap = 1", "window_ms = 0"]
            ]),
            message: "limiter 'x': window_ms must be in 1…31622400000 (366 days), got 0",
            line: 20
        ),
        ErrorCase(
            label: "zero max_keys",
            text: windowLimiter(["max_keys = 0"]),
            message: "limiter 'x': max_keys must be in 1…100000000, got 0",
            line: 21
        ),
        ErrorCase(
            label: "key_header on a key other than recipient",
            text: withLimiters([
                [
                    #"name = "x""#, #"applies_to = "publish""#, #"key = "producer""#, "rate = 1", "burst = 1",
                    #"key_header = "patient""#,
                ]
            ]),
            message: #"limiter 'x' has key_header but key = "producer""#,
            line: 21
        ),
        ErrorCase(
            label: "invalid key_header",
            text: windowLimiter([#"key_header = "who is it""#]),
            message: "limiter 'x' has invalid key_header 'who is it'",
            line: 21
        ),
    ]

    @Test("invalid [[limiters]] are rejected with a clear message and line", arguments: Self.errorCases)
    func rejects(_ testCase: ErrorCase) {
        do {
            let config = try ConfigLoader.parse(testCase.text)
            Issue.record("accepted: \(config.limiters)")
        } catch {
            #expect(error.message.contains(testCase.message), "\(error)")
            #expect(error.line == testCase.line, "\(error)")
        }
    }

    @Test("a hand-built config gets the same checks in Policy.init")
    func policyValidates() throws {
        var config = try ConfigLoader.parse(windowLimiter())
        config.limiters[0].direction = .delivery
        let error = #expect(throws: ConfigError.self) { try Policy(config: config) }
        #expect(error?.message.contains("a delivery limiter can only delay") == true)
        #expect(error?.line == nil)
    }

    @Test("valid limiters parse with their defaults")
    func parses() throws {
        let config = try ConfigLoader.parse(
            withLimiters([
                [#"name = "x""#, #"applies_to = "publish""#, #"key = "recipient""#, "cap = 3", "window_ms = 86400000"],
                [
                    #"name = "d.q-1""#, #"applies_to = "delivery""#, #"key = "group""#, "rate = 0.5", "burst = 2",
                    "bytes_per_second = 1500.5", #"topics = ["a.*"]"#,
                ],
                [
                    #"name = "s""#, #"applies_to = "publish""#, #"key = "consent_scope""#, "rate = 50", "burst = 100",
                    #"consent_scopes = ["promotional_outreach"]"#, #"classes = ["non_phi"]"#, #"action = "quarantine""#,
                    "max_keys = 10",
                ],
            ])
        )
        #expect(config.limiters.count == 3)
        var x = LimiterDeclaration(
            name: "x",
            direction: .publish,
            key: .recipient,
            limit: .window(cap: 3, windowMillis: 86_400_000)
        )
        #expect(x.action == .reject)
        #expect(config.limiters[0] == x)
        let d = config.limiters[1]
        #expect(d.action == .delay)
        #expect(d.limit == .tokenBucket(ratePerSecond: 0.5, burst: 2))
        #expect(d.bytesPerSecond == 1500.5)
        #expect(d.burstBytes == nil)
        #expect(d.effectiveBurstBytes == 1501)
        #expect(d.topics == ["a.*"])
        #expect(d.maxKeys == 100_000)
        let s = config.limiters[2]
        #expect(s.action == .quarantine)
        #expect(s.consentScopes == ["promotional_outreach"])
        #expect(s.classes == ["non_phi"])
        #expect(s.maxKeys == 10)
        x.keyHeader = "patient"
        #expect(x != config.limiters[0])
    }

    @Test("the policy version covers limiters")
    func policyVersion() throws {
        let plain = try Policy(config: try ConfigLoader.parse(document(baseLines)))
        let capped = try Policy(config: try ConfigLoader.parse(windowLimiter()))
        let tighter = try Policy(
            config: try ConfigLoader.parse(windowLimiter().replacingOccurrences("cap = 3", "cap = 2"))
        )
        let reordered = try Policy(
            config: try ConfigLoader.parse(
                withLimiters([
                    [#"key = "recipient""#, "window_ms = 1000", #"name = "x""#, "cap = 3", #"applies_to = "publish""#]
                ])
            )
        )
        #expect(plain.policyVersion != capped.policyVersion)
        #expect(capped.policyVersion != tighter.policyVersion)
        #expect(capped.policyVersion == reordered.policyVersion)
    }

    @Test("the embedded default declares the scenario's limiters, stricter by sensitivity")
    func embeddedDefault() throws {
        let config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
        let byName = Dictionary(uniqueKeysWithValues: config.limiters.map { ($0.name, $0) })
        #expect(
            config.limiters.map(\.name) == [
                "outreach_per_recipient", "phi_per_recipient", "support_per_recipient", "promotional_scope",
                "per_connection", "analytics_delivery",
            ]
        )
        let outreach = try #require(byName["outreach_per_recipient"])
        #expect(outreach.direction == .publish && outreach.key == .recipient && outreach.keyHeader == "recipient")
        #expect(outreach.consentScopes == ["promotional_outreach"])
        #expect(outreach.limit == .window(cap: 3, windowMillis: 86_400_000))
        #expect(outreach.action == .reject)
        #expect(byName["phi_per_recipient"]?.limit == .window(cap: 5, windowMillis: 3_600_000))
        #expect(byName["phi_per_recipient"]?.classes == ["phi"])
        #expect(byName["support_per_recipient"]?.limit == .window(cap: 20, windowMillis: 3_600_000))
        #expect(byName["support_per_recipient"]?.classes == ["pseudonymous"])
        #expect(byName["promotional_scope"]?.limit == .tokenBucket(ratePerSecond: 50, burst: 100))
        #expect(byName["promotional_scope"]?.key == .consentScope)
        #expect(byName["promotional_scope"]?.action == .quarantine)
        #expect(byName["per_connection"]?.limit == .tokenBucket(ratePerSecond: 50_000, burst: 100_000))
        #expect(byName["per_connection"]?.key == .connection)
        let analytics = try #require(byName["analytics_delivery"])
        #expect(analytics.direction == .delivery && analytics.key == .subscriber && analytics.action == .delay)
        #expect(analytics.topics == ["analytics.*"])
        #expect(analytics.limit == .tokenBucket(ratePerSecond: 20_000, burst: 40_000))
        // Stricter by sensitivity: the PHI cap allows fewer records per hour than the pseudonymous one.
        guard case .window(let phiCap, let phiWindow) = byName["phi_per_recipient"]!.limit,
            case .window(let supportCap, let supportWindow) = byName["support_per_recipient"]!.limit
        else { throw LimiterTestError.notAWindow }
        #expect(phiWindow == supportWindow && phiCap < supportCap)
        let outreachTopic = try #require(config.topics.first { $0.name == "support.outreach" })
        #expect(outreachTopic.sensitivity == "pseudonymous")
        #expect(outreachTopic.consentScopes.contains("promotional_outreach"))
    }

    /// (topic, direction) → the names of the limiters that apply, in the scenario.
    static let applicable: [(String, LimiterDirection, [String])] = [
        (
            "support.outreach", .publish,
            ["outreach_per_recipient", "support_per_recipient", "promotional_scope", "per_connection"]
        ),
        ("clinical.referral", .publish, ["phi_per_recipient", "per_connection"]),
        ("support.milestone", .publish, ["support_per_recipient", "per_connection"]),
        ("education.completed", .publish, ["per_connection"]),
        ("analytics.deidentified", .publish, ["per_connection"]),
        ("analytics.deidentified", .delivery, ["analytics_delivery"]),
        ("support.outreach", .delivery, []),
        ("__quarantine", .publish, []),
        ("no.such.topic", .publish, []),
    ]

    @Test("limiters(for:direction:) precomputes the applicable limiters per topic", arguments: Self.applicable)
    func applicableLimiters(_ topic: String, _ direction: LimiterDirection, _ expected: [String]) {
        #expect(scenarioPolicy.limiters(for: topic, direction: direction).map(\.name) == expected)
    }

    @Test("support.outreach: the support portal publishes it, patient support reads its notices, analytics cannot")
    func scenarioOutreach() throws {
        let portal = scenarioPrincipal("support-portal")
        let desk = scenarioPrincipal("support-desk")
        #expect(scenarioPolicy.publishDecision(principal: portal, topic: "support.outreach") == .allow)
        #expect(scenarioPolicy.subscribeDecision(principal: desk, topic: "support.outreach") == .allow)
        let notice = recordHeaders(scope: "operational_notice", extra: [PolicyHeader("recipient", "pt_1")])
        #expect(
            scenarioPolicy.deliveryDecision(principal: desk, topic: "support.outreach", headers: notice) == .deliver
        )
        // Promotion is withheld from patient support (its role does not receive promotional_outreach).
        let promotion = recordHeaders(scope: "promotional_outreach", extra: [PolicyHeader("recipient", "pt_1")])
        #expect(
            scenarioPolicy.deliveryDecision(principal: desk, topic: "support.outreach", headers: promotion)
                == .withhold(scope: "promotional_outreach", rule: PolicyRule.deliveryConsentScope)
        )
        let analytics = scenarioPrincipal("analytics-lake")
        #expect(scenarioPolicy.subscribeDecision(principal: analytics, topic: "support.outreach") != .allow)
        #expect(scenarioPolicy.limiter(named: "per_connection")?.key == .connection)
        #expect(scenarioPolicy.limiter(named: "nope") == nil)
    }

    struct KeysCase: CustomTestStringConvertible, Sendable {
        var label: String
        var limiter: String
        var topic: String
        var headers: [PolicyHeader]
        var group: String? = nil
        var expected: [String]
        var testDescription: String { self.label }
    }

    static let keysCases: [KeysCase] = [
        KeysCase(
            label: "recipient of a promotional record",
            limiter: "outreach_per_recipient",
            topic: "support.outreach",
            headers: recordHeaders(scope: "promotional_outreach", extra: [PolicyHeader("recipient", "pt_1")]),
            expected: ["pt_1"]
        ),
        KeysCase(
            label: "promotional among several scopes",
            limiter: "outreach_per_recipient",
            topic: "support.outreach",
            headers: recordHeaders(
                scope: "operational_notice, promotional_outreach",
                extra: [PolicyHeader("recipient", "pt_1")]
            ),
            expected: ["pt_1"]
        ),
        KeysCase(
            label: "a scope outside the filter: not limited",
            limiter: "outreach_per_recipient",
            topic: "support.outreach",
            headers: recordHeaders(scope: "operational_notice", extra: [PolicyHeader("recipient", "pt_1")]),
            expected: []
        ),
        KeysCase(
            label: "no consent scope: not limited by a scope-filtered limiter",
            limiter: "outreach_per_recipient",
            topic: "support.outreach",
            headers: recordHeaders(scope: nil, extra: [PolicyHeader("recipient", "pt_1")]),
            expected: []
        ),
        KeysCase(
            label: "no recipient header: not limited",
            limiter: "outreach_per_recipient",
            topic: "support.outreach",
            headers: recordHeaders(scope: "promotional_outreach"),
            expected: []
        ),
        KeysCase(
            label: "empty recipient header: not limited",
            limiter: "phi_per_recipient",
            topic: "clinical.referral",
            headers: recordHeaders(scope: "treatment_support", extra: [PolicyHeader("recipient", "")]),
            expected: []
        ),
        KeysCase(
            label: "two recipients: both counted, once each",
            limiter: "phi_per_recipient",
            topic: "clinical.referral",
            headers: recordHeaders(
                scope: "treatment_support",
                extra: [
                    PolicyHeader("recipient", "pt_1"), PolicyHeader("recipient", "pt_2"),
                    PolicyHeader("recipient", "pt_1"),
                ]
            ),
            expected: ["pt_1", "pt_2"]
        ),
        KeysCase(
            label: "consent scope key within the filter",
            limiter: "promotional_scope",
            topic: "support.outreach",
            headers: recordHeaders(scope: "operational_notice,promotional_outreach"),
            expected: ["promotional_outreach"]
        ),
        KeysCase(
            label: "connection key",
            limiter: "per_connection",
            topic: "education.completed",
            headers: recordHeaders(scope: "educational"),
            expected: ["42"]
        ),
        KeysCase(
            label: "subscriber key",
            limiter: "analytics_delivery",
            topic: "analytics.deidentified",
            headers: recordHeaders(scope: "educational"),
            expected: ["support-portal"]
        ),
    ]

    @Test("limiterKeys extracts the keys a record is counted under", arguments: Self.keysCases)
    func keys(_ testCase: KeysCase) throws {
        let limiter = try #require(scenarioPolicy.limiter(named: testCase.limiter))
        let keys = scenarioPolicy.limiterKeys(
            limiter,
            topic: testCase.topic,
            headers: testCase.headers,
            principal: scenarioPrincipal("support-portal"),
            connectionID: 42,
            group: testCase.group
        )
        #expect(keys == testCase.expected)
    }

    /// (key kind, group) → keys, for a limiter with no filters on topic a.b of class non_phi.
    static let kindCases: [(LimiterKeyKind, LimiterDirection, String?, [String])] = [
        (.consentScope, .publish, nil, ["educational", "operational_notice"]),
        (.sensitivityClass, .publish, nil, ["non_phi"]),
        (.producer, .publish, nil, ["c"]),
        (.connection, .publish, nil, ["7"]),
        (.subscriber, .delivery, "g", ["c"]),
        (.group, .delivery, "g", ["g"]),
        (.group, .delivery, nil, ["c"]),
        (.global, .publish, nil, ["*"]),
        (.recipient, .publish, nil, ["pt_9"]),
    ]

    @Test("limiterKeys by key kind", arguments: Self.kindCases)
    func keyKinds(_ kind: LimiterKeyKind, _ direction: LimiterDirection, _ group: String?, _ expected: [String]) throws
    {
        var config = try ConfigLoader.parse(document(baseLines))
        var limiter = LimiterDeclaration(
            name: "k",
            direction: direction,
            key: kind,
            limit: .tokenBucket(ratePerSecond: 1, burst: 1)
        )
        limiter.keyHeader = "patient"
        config.limiters = [limiter]
        let policy = try Policy(config: config)
        let headers = recordHeaders(
            scope: "educational, operational_notice,educational",
            extra: [PolicyHeader("patient", "pt_9"), PolicyHeader("recipient", "not-this-one")]
        )
        let keys = policy.limiterKeys(
            limiter,
            topic: "a.b",
            headers: headers,
            principal: Principal(clientID: "c", role: "r", clearance: "phi"),
            connectionID: 7,
            group: group
        )
        #expect(keys == expected)
    }
}

enum LimiterTestError: Error {
    case notAWindow
}

extension String {
    /// Every occurrence of `target` replaced by `replacement` (Foundation-free).
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
