import Testing

@testable import TopicRouter

/// `LimiterKeyReader` (the publish path's keys, as bytes) against `limiterKeys` (the keys as strings).
@Suite("LimiterKeyReader")
struct LimiterKeyReaderTests {
    func readerKeys(
        _ policy: Policy, _ limiter: LimiterDeclaration, topic: String, headers: [PolicyHeader], principal: Principal,
        connectionID: UInt64, group: String?
    ) -> [String]? {
        let reader = policy.limiterKeyReader(
            limiter, topic: topic, principal: principal, connectionID: connectionID, group: group
        )
        var keys = LimiterKeyBytes()
        guard reader.keys(eachHeader: { headers.forEachPolicyHeader(named: $0, $1) }, into: &keys) else { return nil }
        return keys.strings
    }

    @Test("the reader finds the keys limiterKeys gives, as bytes", arguments: LimiterDeclarationTests.keysCases)
    func keysCases(_ testCase: LimiterDeclarationTests.KeysCase) throws {
        let limiter = try #require(scenarioPolicy.limiter(named: testCase.limiter))
        let keys = self.readerKeys(
            scenarioPolicy, limiter, topic: testCase.topic, headers: testCase.headers,
            principal: scenarioPrincipal("support-portal"), connectionID: 42, group: testCase.group
        )
        #expect(keys == testCase.expected)
    }

    /// Header sets: ASCII ones the reader must decide, and ones with non-ASCII values where it may decline.
    static let headerSets: [(ascii: Bool, headers: [PolicyHeader])] = [
        (true, recordHeaders(scope: nil)),
        (true, recordHeaders(scope: "educational")),
        (true, recordHeaders(scope: "promotional_outreach", extra: [PolicyHeader("recipient", "pt_1")])),
        (true, recordHeaders(scope: " promotional_outreach ,\toperational_notice, promotional_outreach")),
        (true, recordHeaders(scope: ",,", extra: [PolicyHeader("recipient", "")])),
        (
            true,
            recordHeaders(
                scope: "treatment_support",
                extra: [
                    PolicyHeader("recipient", "pt_2"), PolicyHeader("consent_scope", "promotional_outreach"),
                    PolicyHeader("recipient", "pt_1"), PolicyHeader("recipient", "pt_2"), PolicyHeader("recipient", ""),
                ]
            )
        ),
        (true, [PolicyHeader("recipient", "pt_1"), PolicyHeader("RECIPIENT", "pt_9")]),
        (
            false,
            recordHeaders(
                scope: "promotional_outreach",
                extra: [PolicyHeader("recipient", "jos\u{E9}"), PolicyHeader("recipient", "jose\u{301}")]
            )
        ),
        (false, recordHeaders(scope: "promotional_outreach", extra: [PolicyHeader(name: "recipient", value: [0xFF])])),
        (false, recordHeaders(scope: "promotional_\u{212A}", extra: [PolicyHeader("recipient", "pt_1")])),
    ]

    @Test("every limiter of the scenario, on every topic it applies to, over ASCII and other headers")
    func scenarioEquivalence() {
        let principal = scenarioPrincipal("support-portal")
        for limiter in scenarioPolicy.limiters {
            for topic in scenarioPolicy.config.topics.map(\.name) + ["no.such.topic"] {
                for (ascii, headers) in Self.headerSets {
                    for group: String? in [nil, "g"] {
                        let expected = scenarioPolicy.limiterKeys(
                            limiter, topic: topic, headers: headers, principal: principal, connectionID: 42,
                            group: group
                        )
                        let keys = self.readerKeys(
                            scenarioPolicy, limiter, topic: topic, headers: headers, principal: principal,
                            connectionID: 42, group: group
                        )
                        if ascii {
                            #expect(keys == expected, "\(limiter.name) on \(topic): \(headers)")
                        } else if let keys {
                            #expect(keys == expected, "\(limiter.name) on \(topic): \(headers)")
                        }
                    }
                }
            }
        }
    }

    @Test("by key kind, with and without a consent_scopes filter", arguments: LimiterDeclarationTests.kindCases)
    func kinds(_ kind: LimiterKeyKind, _ direction: LimiterDirection, _ group: String?, _: [String]) throws {
        for filter: [String]? in [nil, ["operational_notice"], ["promotional_outreach"]] {
            var config = try ConfigLoader.parse(ConfigLoader.embeddedDefault)
            var limiter = LimiterDeclaration(
                name: "k", direction: direction, key: kind, limit: .tokenBucket(ratePerSecond: 1, burst: 1)
            )
            limiter.keyHeader = "patient"
            limiter.consentScopes = filter
            config.limiters = [limiter]
            config.principals = config.principals.map {
                var principal = $0
                principal.tokenHash = Credentials.hash(token: "t")
                return principal
            }
            let policy = try Policy(config: config)
            let headers = recordHeaders(
                scope: "educational, operational_notice,educational",
                extra: [PolicyHeader("patient", "pt_9"), PolicyHeader("recipient", "not-this-one")]
            )
            let principal = Principal(clientID: "c", role: "r", clearance: "phi")
            for topic in ["education.completed", "no.such.topic"] {
                let keys = self.readerKeys(
                    policy, limiter, topic: topic, headers: headers, principal: principal, connectionID: 7, group: group
                )
                let reference = policy.limiterKeys(
                    limiter, topic: topic, headers: headers, principal: principal, connectionID: 7, group: group
                )
                #expect(keys == reference, "\(kind) \(filter ?? []) \(topic)")
                if filter == ["promotional_outreach"] { #expect(keys == []) }
            }
        }
    }

    @Test("LimiterKeyBytes keeps distinct keys in order and reuses its storage")
    func keyBytes() {
        var keys = LimiterKeyBytes()
        for key in ["pt_1", "pt_2", "pt_1", "", "pt_22"] { Array(key.utf8).withUnsafeBytes { keys.appendDistinct($0) } }
        #expect(keys.strings == ["pt_1", "pt_2", "", "pt_22"])
        var fourth: [UInt8] = []
        keys.withKey(3) { fourth = Array($0) }
        #expect(fourth == Array("pt_22".utf8))
        keys.removeAll()
        #expect(keys.count == 0 && keys.strings.isEmpty)
        for key in ["b", "a", "b"] { Array(key.utf8).withUnsafeBytes { keys.appendDistinct($0) } }
        #expect(keys.strings == ["b", "a"])
    }

    @Test("isASCII finds a byte of 0x80 or above at every position of keys of 0 to 24 bytes")
    func asciiAtEveryPosition() {
        for length in 0...24 {
            let plain = [UInt8](repeating: UInt8(ascii: "k"), count: length)
            #expect(plain.withUnsafeBytes { LimiterKeyReader.isASCII($0) }, "length \(length)")
            for position in 0..<length {
                for high: UInt8 in [0x80, 0xC3, 0xFF] {
                    var bytes = plain
                    bytes[position] = high
                    #expect(!bytes.withUnsafeBytes { LimiterKeyReader.isASCII($0) }, "length \(length), at \(position)")
                }
            }
        }
    }
}
