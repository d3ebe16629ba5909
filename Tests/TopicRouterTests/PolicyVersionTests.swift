import Testing

@testable import TopicRouter

/// A small config written two ways: same policy, different key order, whitespace, comments and entry order.
let versionTextA = """
    classes = ["non_phi", "phi"]
    purposes = ["operations", "safety"]
    consent_scopes = ["educational", "treatment_support"]
    [server]
    listen = "127.0.0.1:7420"
    [[topics]]
    name = "a.b"
    class = "non_phi"
    purposes = ["operations", "safety"]
    consent_scopes = ["educational"]
    [[topics]]
    name = "c.d"
    class = "phi"
    purposes = ["safety"]
    consent_scopes = ["treatment_support"]
    [[roles]]
    name = "r"
    clearance = "phi"
    subscribe = ["a.*", "c.*"]
    purposes = ["safety"]
    consent_scopes = ["educational"]
    capabilities = ["admin", "audit.read"]
    [[principals]]
    client_id = "c"
    role = "r"
    token_hash = "\(someHash)"
    """

let versionTextB = """
    # The same policy, rearranged.
    consent_scopes = [ "treatment_support", "educational" ]
    classes = ["non_phi", "phi"]
    purposes = ["safety", "operations"]

    [[principals]]
    token_hash = "\(someHash)"
    role = "r"
    client_id = "c"

    [[topics]]
    purposes = ["safety"]
    class = "phi"
    name = "c.d"
    consent_scopes = ["treatment_support"]

    [[topics]]
    class   =   "non_phi"
    name = "a.b"
    consent_scopes = ["educational"]
    purposes = ["safety", "operations"]
    # Spelling out a default does not change the policy.
    forbidden_fields = ["patient_name", "dob", "mrn", "ssn", "diagnosis", "note"]
    required_headers = ["event_type", "source_system", "consent_scope"]

    [[roles]]
    capabilities = ["audit.read", "admin"]
    consent_scopes = ["educational"]
    purposes = ["safety"]
    subscribe = ["c.*", "a.*"]
    clearance = "phi"
    name = "r"

    [server]
    listen = "0.0.0.0:9999"
    data_dir = "/elsewhere"
    """

@Suite("PolicyVersion")
struct PolicyVersionTests {
    @Test("the version is pv- and 12 lowercase hex digits, and the same for the same config")
    func format() throws {
        let version = scenarioPolicy.policyVersion
        #expect(version.hasPrefix("pv-"))
        #expect(version.utf8.count == 15)
        #expect(version.dropFirst(3).allSatisfy { "0123456789abcdef".contains($0) })
        let again = try Policy(config: scenarioPolicy.config)
        #expect(again.policyVersion == version)
    }

    @Test("key order, entry order, whitespace, comments, spelt-out defaults and [server] do not change it")
    func orderIndependent() throws {
        let a = try Policy(config: ConfigLoader.parse(versionTextA))
        let b = try Policy(config: ConfigLoader.parse(versionTextB))
        #expect(a.policyVersion == b.policyVersion)
    }

    /// One change to a rule, by name.
    struct Mutation: CustomTestStringConvertible, Sendable {
        var label: String
        var apply: @Sendable (inout BrokerConfig) -> Void
        var testDescription: String { self.label }
    }

    static let mutations: [Mutation] = [
        Mutation(label: "class order") { $0.classes.swapAt(0, 1) },
        Mutation(label: "a new class") { $0.classes.append("secret") },
        Mutation(label: "a new purpose in the vocabulary") { $0.purposes.append("research") },
        Mutation(label: "a new consent scope in the vocabulary") { $0.consentScopes.append("sms") },
        Mutation(label: "topic class") { $0.topics[0].sensitivity = "deidentified" },
        Mutation(label: "topic purposes") { $0.topics[0].purposes.append("safety") },
        Mutation(label: "topic consent scopes") { $0.topics[0].consentScopes.removeLast() },
        Mutation(label: "topic required headers") { $0.topics[0].requiredHeaders.removeFirst() },
        Mutation(label: "topic payload") {
            $0.topics[0].payload = .any
            $0.topics[0].allowedFields = nil
            $0.topics[0].forbiddenFields = []
        },
        Mutation(label: "topic allowed fields") { $0.topics[0].allowedFields?.append("extra") },
        Mutation(label: "topic allowed fields removed") { $0.topics[0].allowedFields = nil },
        Mutation(label: "topic forbidden fields") { $0.topics[0].forbiddenFields = ["dob"] },
        Mutation(label: "topic dedupe window") { $0.topics[0].dedupeWindowMillis += 1 },
        Mutation(label: "topic dedupe max keys") { $0.topics[0].dedupeMaxKeys -= 1 },
        Mutation(label: "topic fsync") { $0.topics[0].fsync = .never },
        Mutation(label: "topic retention") { $0.topics[0].retentionMillis = 1000 },
        Mutation(label: "topic renamed") { $0.topics[0].name = "education.finished" },
        // support.notice: no limiter depends on it alone (removing clinical.referral would leave phi_per_recipient
        // applying to no topic, which is an error).
        Mutation(label: "topic removed") { $0.topics.removeAll { $0.name == "support.notice" } },
        Mutation(label: "role clearance") { $0.roles[2].clearance = "deidentified" },
        Mutation(label: "role publish pattern") { $0.roles[2].publish = ["education.*"] },
        Mutation(label: "role subscribe pattern") { $0.roles[2].subscribe.append("support.*") },
        Mutation(label: "role purposes") { $0.roles[2].purposes.append("operations") },
        Mutation(label: "role consent scopes") { $0.roles[2].consentScopes.removeLast() },
        Mutation(label: "role capabilities") { $0.roles[2].capabilities.append(.auditRead) },
        Mutation(label: "principal role") { $0.principals[2].role = "analytics" },
        Mutation(label: "principal token hash") { $0.principals[2].tokenHash = Credentials.hash(token: "rotated") },
        Mutation(label: "principal removed") { $0.principals.removeLast() },
        Mutation(label: "limiter cap") { $0.limiters[0].limit = .window(cap: 4, windowMillis: 86_400_000) },
        Mutation(label: "limiter rate") {
            $0.limiters[4].limit = .tokenBucket(ratePerSecond: 49_999.5, burst: 100_000)
        },
        Mutation(label: "limiter action") { $0.limiters[0].action = .quarantine },
        Mutation(label: "limiter key header") { $0.limiters[0].keyHeader = "patient" },
        Mutation(label: "limiter scope filter") { $0.limiters[0].consentScopes?.append("operational_notice") },
        Mutation(label: "limiter max keys") { $0.limiters[0].maxKeys = 10 },
        Mutation(label: "limiter byte quota") { $0.limiters[5].bytesPerSecond = 1_000_000 },
        Mutation(label: "limiter removed") { $0.limiters.removeLast() },
    ]

    @Test("any change to a rule changes the version", arguments: mutations)
    func changes(_ mutation: Mutation) throws {
        var config = scenarioPolicy.config
        mutation.apply(&config)
        let changed = try Policy(config: config)
        #expect(changed.policyVersion != scenarioPolicy.policyVersion)
    }

    @Test("[server] settings are not policy")
    func serverSettingsIgnored() throws {
        var config = scenarioPolicy.config
        config.server.listenPort = 1
        config.server.dataDir = "/tmp/other"
        config.server.maxConnections = 5
        #expect(try Policy(config: config).policyVersion == scenarioPolicy.policyVersion)
    }

    @Test("the canonical rendering length-prefixes strings, so shifted boundaries differ")
    func unambiguous() {
        var one = scenarioPolicy.config
        one.roles[2].subscribe = ["ab", "c"]
        var two = scenarioPolicy.config
        two.roles[2].subscribe = ["a", "bc"]
        #expect(PolicyVersion.canonicalRendering(one) != PolicyVersion.canonicalRendering(two))
        #expect(PolicyVersion.compute(one) != PolicyVersion.compute(two))
    }
}
