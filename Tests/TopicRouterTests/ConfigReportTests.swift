import Testing

@testable import TopicRouter

/// `ConfigLoader.check`, behind `brokerd check-config`: every problem at once, each with its line.
@Suite("ConfigReport")
struct ConfigReportTests {
    /// A config with one problem in each section; the comments are the 1-based line numbers.
    static let manyProblems = document([
        #"classes = ["non_phi", "deidentified", "pseudonymous", "phi"]"#,  // 1
        "[server]",  // 2
        "max_connections = 0",  // 3
        "[[topics]]",  // 4
        #"name = "education.completed""#,  // 5
        #"class = "non_phi""#,  // 6
        "[[topics]]",  // 7
        #"name = "support.milestone""#,  // 8
        #"class = "pseudonymus""#,  // 9
        "[[topics]]",  // 10
        #"name = "clinical.referral""#,  // 11
        #"class = "phi""#,  // 12
        "[[roles]]",  // 13
        #"name = "crm""#,  // 14
        #"clearance = "non_phi""#,  // 15
        #"subscribe = ["*"]"#,  // 16
        "[[roles]]",  // 17
        #"name = "spy""#,  // 18
        #"clearance = "top_secret""#,  // 19
        "[[principals]]",  // 20
        #"client_id = "crm-automation""#,  // 21
        #"role = "crm""#,  // 22
        "[[principals]]",  // 23
        #"client_id = "crm-automation""#,  // 24
        #"role = "crm""#,  // 25
        "[[limiters]]",  // 26
        #"name = "outreach_cap""#,  // 27
        #"applies_to = "publish""#,  // 28
        #"topics = ["marketing.*"]"#,  // 29
        #"key = "global""#,  // 30
        "rate = 10",  // 31
        "burst = 10",  // 32
    ])

    @Test("every problem is reported with its line, in line order, not just the first")
    func everyProblem() throws {
        let report = ConfigLoader.check(Self.manyProblems)
        let found = report.errors.map { "\($0.line ?? 0): \($0.message)" }
        let expected: [(Int, String)] = [
            (3, "[server] max_connections must be in 1…"),
            (9, "topic 'support.milestone' has class 'pseudonymus', which is not declared"),
            (16, "role 'crm' is cleared up to 'non_phi', but its subscribe pattern '*' matches 'clinical.referral' (phi)"),
            (19, "role 'spy' has clearance 'top_secret', which is not a declared class"),
            (24, "duplicate principal 'crm-automation'"),
            (29, "limiter 'outreach_cap' has topic pattern 'marketing.*', which matches no declared topic"),
        ]
        #expect(report.errors.count == expected.count, "\(found)")
        for (error, (line, text)) in zip(report.errors, expected) {
            #expect(error.line == line, "\(error)")
            #expect(error.message.hasPrefix(text), "\(error)")
        }
        #expect(report.warnings.isEmpty)
        // brokerd itself stops at the first of the same problems.
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(Self.manyProblems) }
    }

    @Test("the first problem check() finds is the one parse() throws")
    func firstMatchesParse() {
        let text = document(baseLines + ["[[roles]]", #"name = "r""#, #"clearance = "phi""#])
        let report = ConfigLoader.check(text)
        do {
            _ = try ConfigLoader.parse(text)
            Issue.record("parse accepted a duplicate role")
        } catch {
            #expect(report.errors.first == error)
        }
    }

    @Test("decode errors in several entries are all reported, and entries that decoded are still checked")
    func decodeErrorsCollected() {
        let text = document(
            baseLines + [
                "[[topics]]", #"name = "x.y""#, #"class = "non_phi""#, "colour = 1",  // 15-18: unknown key
                "[[roles]]", #"name = "q""#, "clearance = 3",  // 19-21: wrong type
                "[[principals]]", #"client_id = "c""#, #"role = "r""#,  // 22-24: duplicate client id
                "[[principals]]", #"client_id = "d""#, #"role = "q""#,  // 25-27: role q failed to decode
            ]
        )
        let report = ConfigLoader.check(text)
        let lines = report.errors.map(\.line)
        #expect(lines == [18, 21, 23], "\(report.errors)")
        #expect(report.errors[0].message.contains("unknown key 'colour'"))
        #expect(report.errors[1].message.contains("'clearance'"))
        #expect(report.errors[2].message.contains("duplicate principal 'c'"))
        // Principal 'd' names role 'q', which failed to decode: not reported a second time.
        #expect(!report.errors.contains { $0.message.contains("'q'") && $0.line == 27 })
    }

    @Test("text that is not TOML gives one error and no config")
    func notTOML() {
        let report = ConfigLoader.check("classes = [\n")
        #expect(report.errors.count == 1)
        #expect(report.errors[0].message.hasPrefix("invalid TOML"))
        #expect(report.config == nil)
    }

    @Test("a pattern reaching above the clearance: an error on the most sensitive class, a warning below it")
    func exposures() {
        let lines = [
            #"classes = ["non_phi", "pseudonymous", "phi"]"#,  // 1
            "[[topics]]", #"name = "support.notice""#, #"class = "non_phi""#,  // 2-4
            "[[topics]]", #"name = "support.milestone""#, #"class = "pseudonymous""#,  // 5-7
            "[[topics]]", #"name = "clinical.referral""#, #"class = "phi""#,  // 8-10
            "[[roles]]", #"name = "crm""#, #"clearance = "non_phi""#, #"subscribe = ["support.*"]"#,  // 11-14
            "[[roles]]", #"name = "lake""#, #"clearance = "pseudonymous""#,  // 15-17
            #"subscribe = ["support.*", "clinical.*"]"#,  // 18
            "[[roles]]", #"name = "care""#, #"clearance = "phi""#, #"subscribe = ["*"]"#,  // 19-22
        ]
        let report = ConfigLoader.check(document(lines))
        #expect(report.errors.count == 1, "\(report.errors)")
        #expect(report.errors.first?.line == 18)
        #expect(report.errors.first?.message.contains("'clinical.*' matches 'clinical.referral' (phi)") == true)
        #expect(report.warnings.count == 1, "\(report.warnings)")
        #expect(report.warnings.first?.line == 14)
        #expect(report.warnings.first?.message.contains("'support.*' matches 'support.milestone' (pseudonymous)") == true)
        // brokerd starts with it (the subscriptions are refused at run time) and logs the same findings.
        #expect((try? ConfigLoader.parse(document(lines))) != nil)
        #expect(ConfigLoader.exposures(try! ConfigLoader.parse(document(lines))).count == 2)
    }

    @Test("the embedded default has no error; its broad analytics pattern is the one warning")
    func embeddedDefault() {
        let report = ConfigLoader.check(ConfigLoader.embeddedDefault)
        #expect(report.errors.isEmpty, "\(report.errors)")
        #expect(report.warnings.count == 1)
        #expect(report.warnings.first?.message.hasPrefix("role 'analytics' is cleared up to 'deidentified'") == true)
    }
}

/// docs/examples/closed-loop.toml, the production example operators copy: clean, and the scenario's decisions hold.
@Suite("docs/examples/closed-loop.toml")
struct ClosedLoopExampleTests {
    static func text() throws -> String {
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        return try String(contentsOfFile: "/" + root + "/docs/examples/closed-loop.toml", encoding: .utf8)
    }

    @Test("check-config finds no error and no warning once the TLS files exist; every principal has a credential")
    func clean() throws {
        // The certificate files are the operator's to provision; here every path counts as present.
        let report = ConfigLoader.check(try Self.text(), fileProbe: { _ in nil })
        #expect(report.errors.isEmpty, "\(report.errors)")
        #expect(report.warnings.isEmpty, "\(report.warnings)")
        #expect(report.config?.principals.allSatisfy { $0.tokenHash != nil || $0.certIdentity != nil } == true)
        // Without them, the missing certificate is the one problem, at its line.
        let missing = ConfigLoader.check(try Self.text(), fileProbe: { _ in "does not exist" })
        #expect(missing.errors.count == 1, "\(missing.errors)")
        #expect(missing.errors.first?.message.contains("/etc/brokerd/tls/") == true, "\(missing.errors)")
    }

    @Test("only patient support reads the PHI topic; CRM and analytics get education; analytics the de-identified feed")
    func decisions() throws {
        let policy = try Policy(config: try ConfigLoader.parse(try Self.text(), fileProbe: { _ in nil }))
        func readers(_ topic: String) -> [String] {
            policy.config.principals.filter { entry in
                let who = Principal(clientID: entry.clientID, role: entry.role, clearance: "")
                if case .allow = policy.subscribeDecision(principal: who, topic: topic) { return true }
                return false
            }.map(\.clientID).sorted()
        }
        #expect(readers("clinical.referral") == ["support-desk"])
        #expect(readers("education.completed") == ["analytics-lake", "crm-automation"])
        #expect(readers("analytics.deidentified") == ["analytics-lake"])
        #expect(readers("support.milestone") == ["deid-service", "support-desk"])
    }
}

extension ConfigReportTests {
    @Test("check-config also reports the TLS files [server.tls] names, with their lines, beside other problems")
    func tlsFiles() {
        let text = document(
            baseLines + [
                "[server.tls]",  // 15
                #"cert_file = "/etc/brokerd/missing-cert.pem""#,  // 16
                #"key_file = "/etc/brokerd/missing-key.pem""#,  // 17
                "[[roles]]", #"name = "r""#, #"clearance = "phi""#,  // 18-20: duplicate role
            ]
        )
        let report = ConfigLoader.check(text, fileProbe: { $0.contains("missing") ? "does not exist" : nil })
        #expect(report.errors.map(\.line) == [16, 19], "\(report.errors)")
        #expect(report.errors.first?.message.contains("missing-cert.pem") == true, "\(report.errors)")
    }
}
