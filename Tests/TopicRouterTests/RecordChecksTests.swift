import Testing

@testable import TopicRouter

/// `Policy.recordChecks(topic:)`: the record checks judged from each header name's role, looked up once per
/// distinct name, give exactly the verdict of `recordVerdict(topic:headers:value:)` (the walk by name strings).
@Suite("Record checks by name role")
struct RecordChecksTests {
    /// The verdict by roles, as `PublishSorter` asks it: one role per distinct name (kept in `roles`), every header
    /// fed until `see` says stop, then the verdict.
    static func verdictByRoles(
        _ checks: RecordChecks, roles: inout [String: HeaderNameRole], headers: [PolicyHeader], value: [UInt8]
    ) -> PublishVerdict {
        var findings = RecordHeaderFindings()
        for header in headers {
            let role = roles[header.name] ?? checks.role(of: header.name)
            roles[header.name] = role
            let going = header.value.withUnsafeBytes { checks.see(role, name: header.name, value: $0, into: &findings) }
            if !going { break }
        }
        return value.withUnsafeBytes { scenarioPolicy.recordVerdict(checks, findings: findings, value: $0) }
    }

    @Test("every row of the publish table: the same verdict, with fresh checks and with checks shared by all rows")
    func publishTable() {
        var shared: [String: (RecordChecks, [String: HeaderNameRole])] = [:]
        for row in PolicyVerdictTests.publishCases {
            let expected = scenarioPolicy.recordVerdict(topic: row.topic, headers: row.headers, value: row.value)
            guard let fresh = scenarioPolicy.recordChecks(topic: row.topic) else {
                // Unknown and reserved topics: every record is refused, and the caller asks `recordVerdict`.
                guard case .refuse = expected else {
                    Issue.record("\(row.label): no checks for a topic whose records are not refused")
                    continue
                }
                continue
            }
            var freshRoles: [String: HeaderNameRole] = [:]
            let byFresh = Self.verdictByRoles(fresh, roles: &freshRoles, headers: row.headers, value: row.value)
            #expect(byFresh == expected, "\(row.label)")
            // The first row of a topic shares its fresh checks (a class): later rows of the topic use them again.
            var (checks, roles) = shared[row.topic] ?? (fresh, [:])
            let byShared = Self.verdictByRoles(checks, roles: &roles, headers: row.headers, value: row.value)
            shared[row.topic] = (checks, roles)
            #expect(byShared == expected, "\(row.label), shared checks")
        }
    }

    @Test("generated records (reserved names in any case, dedupe keys, empty and missing headers, consent lists)")
    func generated() {
        let values = [
            "", "x", "educational", "hcp_commercial_engagement", "educational, operational_notice", "educational,,x",
            " educational ", "treatment_support", "not_a_scope", "educational,", String(repeating: "k", count: 256),
            String(repeating: "k", count: 257), "é",
        ]
        let names = [
            "event_type", "source_system", "consent_scope", "dedupe-key", "recipient", "broker-x", "Broker-Received-At",
            "quarantine-reason", "QUARANTINE-x", "brokerage", "quarantined", "x-other", "", "évent",
        ]
        let topics = [
            "education.completed", "support.milestone", "support.notice", "support.outreach", "analytics.deidentified",
            "clinical.referral",
        ]
        let bodies: [[UInt8]] = [Array(educationEvent.utf8), Array("{}".utf8), Array("not json".utf8)]
        var random = SplitMix64(seed: 0x5eed_6)
        for topic in topics {
            guard let shared = scenarioPolicy.recordChecks(topic: topic) else {
                Issue.record("\(topic): no checks")
                continue
            }
            var roles: [String: HeaderNameRole] = [:]
            for round in 0..<1500 {
                var headers: [PolicyHeader] = []
                // Mostly well-formed records (the checks' usual path), with random extra and missing headers.
                if random.next() % 3 != 0 {
                    headers = [
                        PolicyHeader("event_type", "e"), PolicyHeader("source_system", "s"),
                        PolicyHeader("consent_scope", values[Int(random.next() % 8)]),
                    ]
                    headers.removeAll { _ in random.next() % 8 == 0 }
                }
                for _ in 0..<Int(random.next() % 5) {
                    let name = names[Int(random.next() % UInt64(names.count))]
                    let value = values[Int(random.next() % UInt64(values.count))]
                    headers.insert(
                        PolicyHeader(name, value), at: Int(random.next() % UInt64(headers.count + 1))
                    )
                }
                let body = bodies[Int(random.next() % UInt64(bodies.count))]
                let expected = scenarioPolicy.recordVerdict(topic: topic, headers: headers, value: body)
                let byShared = Self.verdictByRoles(shared, roles: &roles, headers: headers, value: body)
                #expect(byShared == expected, "\(topic) round \(round): \(headers)")
            }
        }
    }
}

/// A small seeded generator, so a failing round can be replayed.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
