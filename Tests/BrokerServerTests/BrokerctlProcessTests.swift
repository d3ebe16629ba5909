import BrokerServer
import Foundation
import Testing
import WireProtocol

/// brokerctl as operators run it: a real process against a real broker.
@Suite("brokerctl process")
struct BrokerctlProcessTests {
    static var brokerctlPath: String {
        URL(fileURLWithPath: BrokerdProcessTests.brokerdPath).deletingLastPathComponent().appendingPathComponent("brokerctl").path
    }

    /// Runs brokerctl as `principal` with `arguments`, feeding `input`; returns exit status, stdout and stderr.
    ///
    /// Waits on a dispatch thread, never on the cooperative pool: the broker's appends run there, and two tests each
    /// blocking a pool thread on a child process would starve it on a two-core machine.
    static func run(_ broker: TestBroker, as principal: String, _ arguments: [String], input: String = "") async throws -> (status: Int32, out: String, err: String) {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try Self.runBlocking(broker, as: principal, arguments, input: input) })
            }
        }
    }

    private static func runBlocking(_ broker: TestBroker, as principal: String, _ arguments: [String], input: String) throws -> (status: Int32, out: String, err: String) {
        let identity = ["--server", "127.0.0.1:\(broker.port)", "--client-id", principal, "--token", TestBroker.token(for: principal)]
        // Subcommand words first, then options.
        return try ChildProcess.run(
            self.brokerctlPath, arguments + identity, environment: ["PATH": "/usr/bin:/bin"], input: input
        )
    }

    /// Runs an executable without a broker (completion scripts, --version); returns exit status and stdout.
    static func runTool(_ path: String, _ arguments: [String]) throws -> (status: Int32, out: String) {
        let result = try ChildProcess.run(path, arguments, environment: ["PATH": "/usr/bin:/bin"])
        return (result.status, result.out)
    }

    /// Parses stdout as one JSON document (an object).
    static func document(_ out: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any], "not one JSON object: \(out)")
    }

    static let good = #"{"event_type":"account.education.completed","source_system":"learning_portal","account_id":"acct_1","payload":{"module_id":"onboarding-101"}}"#
    static let leaking = #"{"event_type":"account.education.completed","source_system":"learning_portal","account_id":"acct_2","payload":{"note":"called back"}}"#
    static let headers = [
        "--header", "event_type=account.education.completed", "--header", "source_system=learning_portal",
        "--header", "consent_scope=educational",
    ]

    @Test("publish, quarantine list/show/replay, admin reload and audit tail work end to end")
    func operatorFlow() async throws {
        let config = ConfigText()
        let broker = try await TestBroker.startScenario(configText: config)
        defer { broker.removeData() }
        let published = try await Self.run(broker, as: "learning-portal", ["publish", "education.completed"] + Self.headers, input: Self.good + "\n" + Self.leaking + "\n")
        #expect(published.status == 1)  // one record did not reach its topic
        #expect(published.out.split(separator: "\n").map(String.init).first == "offset=0")
        #expect(published.out.contains("QUARANTINED quarantine_offset=0: FORBIDDEN_FIELD"))

        let list = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "list", "--reason", "FORBIDDEN_FIELD"])
        #expect(list.status == 0)
        #expect(list.out.contains("education.completed") && list.out.contains("learning-portal"))
        let show = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "show", "0", "--json"])
        #expect(show.status == 0)
        #expect(show.out.contains(#""quarantine-reason":"FORBIDDEN_FIELD""#))
        let denied = try await Self.run(broker, as: "crm-automation", ["quarantine", "list"])
        #expect(denied.status == 1)
        #expect(denied.err.hasPrefix("NOT_CLEARED: "))

        let still = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "0"])
        #expect(still.status == 1)
        #expect(still.out.contains("0: STILL_QUARANTINED FORBIDDEN_FIELD"))
        config.edit(after: #"name = "education.completed""#, replacing: ReplayAndReloadTests.forbidden, with: ReplayAndReloadTests.forbiddenWithoutNote)
        let reload = try await Self.run(broker, as: "ops-admin", ["admin", "reload"])
        #expect(reload.status == 0)
        #expect(reload.out.hasPrefix("policy pv-"))
        let reloadJSON = try await Self.run(broker, as: "ops-admin", ["admin", "reload", "--json"])
        #expect((try Self.document(reloadJSON.out)["policy_version"] as? String)?.hasPrefix("pv-") == true)
        let replayed = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "--all-matching", "--topic", "education.completed"])
        #expect(replayed.status == 0)
        #expect(replayed.out.contains("0: REPLAYED to education.completed offset=1"))
        let again = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "0", "--json"])
        #expect(again.status == 0)
        let results = try #require(try Self.document(again.out)["results"] as? [[String: Any]])
        #expect(results.count == 1 && results[0]["outcome"] as? String == "REPLAYED" && results[0]["earlier"] as? Bool == true)
        #expect(results[0]["topic"] as? String == "education.completed" && results[0]["new_offset"] as? Int == 1)
        let usage = try await Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "0", "--all-matching"])
        #expect(usage.status != 0 && usage.status != 1)

        let limits = try await Self.run(broker, as: "ops-admin", ["limits", "show", "outreach_per_recipient", "--key", "pt_1"])
        #expect(limits.status == 0)
        #expect(limits.out.contains("outreach_per_recipient") && limits.out.contains("0/3") && limits.out.contains("now"))
        let allLimits = try await Self.run(broker, as: "ops-admin", ["limits", "show", "--json"])
        #expect((try Self.document(allLimits.out)["limiters"] as? [[String: Any]])?.count == 6)

        let audit = try await Self.run(broker, as: "compliance-auditor", ["audit", "tail", "--count", "50", "--principal", "quarantine-operator", "--json"])
        #expect(audit.status == 0)
        let actions = audit.out.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["action"] as? String
        }
        #expect(actions.contains(AuditAction.quarantineReplay))
        #expect(actions.allSatisfy { !$0.isEmpty })
        await broker.stop()
    }

    @Test("topics --describe --json, groups --json and stat --json report the figures of a real broker")
    func inspection() async throws {
        let broker = try await TestBroker.startScenario()
        defer { broker.removeData() }
        let input = String(repeating: Self.good + "\n", count: 3) + Self.leaking + "\n"
        let published = try await Self.run(broker, as: "learning-portal", ["publish", "education.completed", "--json"] + Self.headers, input: input)
        #expect(published.status == 1)  // the last record was quarantined
        let results = try #require(try Self.document(published.out)["results"] as? [[String: Any]])
        #expect(results.map { $0["code"] as? String } == ["OK", "OK", "OK", "QUARANTINED"])
        #expect(results.map { $0["offset"] as? Int } == [0, 1, 2, 0])
        // CRM automation reads two records in group crm-notes: brokerctl commits offset 2 when it stops.
        let read = try await Self.run(broker, as: "crm-automation", ["subscribe", "education.completed", "--group", "crm-notes", "--count", "2"])
        #expect(read.status == 0 && read.out.split(separator: "\n").count == 2)

        let topics = try await Self.run(broker, as: "ops-admin", ["topics", "--describe", "--json"])
        #expect(topics.status == 0)
        let described = try #require(try Self.document(topics.out)["topics"] as? [[String: Any]])
        #expect(described.map { $0["name"] as? String } == InspectionOverTCPTests.everyTopic)
        let education = try #require(described.first { $0["name"] as? String == "education.completed" })
        let onDisk = try broker.segmentBatchBytes(topic: "education.completed")
        #expect((education["log_bytes"] as? Int).map { $0 > 0 && Int64($0) == onDisk.bytes } == true)
        #expect(education["segments"] as? Int == onDisk.count)
        #expect(education["start_offset"] as? Int == 0 && education["end_offset"] as? Int == 3)
        #expect(education["class"] as? String == "non_phi" && education["fsync"] as? String == "always")
        #expect(education["purposes"] as? [String] == ["commercial_analytics", "operations"])
        #expect(education["retention_bytes"] is NSNull && education["retention_ms"] is NSNull)
        let milestone = try #require(described.first { $0["name"] as? String == "support.milestone" })
        #expect(milestone["retention_ms"] as? Int == 7_776_000_000)
        let quarantine = try #require(described.first { $0["name"] as? String == "__quarantine" })
        #expect((quarantine["log_bytes"] as? Int).map { $0 > 0 } == true && quarantine["end_offset"] as? Int == 1)

        let groups = try await Self.run(broker, as: "ops-admin", ["groups", "--json"])
        #expect(groups.status == 0)
        let entries = try #require(try Self.document(groups.out)["groups"] as? [[String: Any]])
        #expect(entries.count == 1)
        for entry in entries {
            let committed = try #require(entry["committed_offset"] as? Int)
            let end = try #require(entry["end_offset"] as? Int)
            #expect(entry["lag"] as? Int == end - committed)
        }
        #expect(entries.first?["group"] as? String == "crm-notes" && entries.first?["topic"] as? String == "education.completed")
        #expect(entries.first?["committed_offset"] as? Int == 2 && entries.first?["lag"] as? Int == 1)

        let stat = try await Self.run(broker, as: "compliance-auditor", ["stat", "--json"])
        #expect(stat.status == 0)
        let stats = try Self.document(stat.out)
        #expect(stats["listen"] as? String == "127.0.0.1:\(broker.port)")
        #expect(stats["topics"] as? Int == 6 && stats["groups"] as? Int == 1 && stats["commits"] as? Int == 1)
        #expect(stats["quarantine_records"] as? Int == 1)
        let describedBytes = described.compactMap { $0["log_bytes"] as? Int }.reduce(0, +)
        #expect((stats["log_bytes"] as? Int).map { $0 >= describedBytes && $0 > 0 } == true)  // __audit may have grown since
        #expect((stats["audit_entries"] as? Int).map { $0 > 0 } == true)
        let worst = try #require(stats["worst_lag"] as? [String: Any])
        #expect(worst["group"] as? String == "crm-notes" && worst["topic"] as? String == "education.completed" && worst["lag"] as? Int == 1)
        #expect((stats["policy_version"] as? String)?.hasPrefix("pv-") == true)

        // The human tables: aligned columns under a header line.
        let table = try await Self.run(broker, as: "ops-admin", ["groups"])
        #expect(table.out.split(separator: "\n").map(String.init) == [
            "GROUP      TOPIC                COMMITTED  START  END  LAG",
            "crm-notes  education.completed  2          0      3    1",
        ])
        let describeTable = try await Self.run(broker, as: "crm-automation", ["topics", "--describe"])
        let lines = describeTable.out.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("TOPIC                CLASS    ACCESS     RETENTION  FSYNC   CODEC  SIZE") == true, "\(lines)")
        #expect(lines.count == 2 && lines.last?.hasPrefix("education.completed  non_phi  subscribe  forever") == true)
        let screen = try await Self.run(broker, as: "ops-admin", ["stat"])
        #expect(screen.out.contains("worst lag    1 (group crm-notes on education.completed)"), "\(screen.out)")

        // Without admin or audit.read: the stable code on stderr, exit status 1, nothing on stdout.
        let denied = try await Self.run(broker, as: "crm-automation", ["groups", "--json"])
        #expect(denied.status == 1 && denied.out.isEmpty)
        #expect(denied.err.hasPrefix("CAPABILITY_REQUIRED: "))
        await broker.stop()
    }

    @Test("brokerctl and brokerd generate shell completion scripts; brokerd --version")
    func completions() throws {
        for shell in ["bash", "zsh", "fish"] {
            let script = try Self.runTool(Self.brokerctlPath, ["--generate-completion-script", shell])
            #expect(script.status == 0, "\(shell)")
            for word in ["groups", "stat", "topics", "quarantine", "describe"] {
                #expect(script.out.contains(word), "brokerctl \(shell) completion lacks \(word)")
            }
            let daemon = try Self.runTool(BrokerdProcessTests.brokerdPath, ["--generate-completion-script", shell])
            #expect(daemon.status == 0 && daemon.out.contains("print-default-config"), "brokerd \(shell)")
        }
        let version = try Self.runTool(BrokerdProcessTests.brokerdPath, ["--version"])
        #expect(version.status == 0 && version.out == BrokerVersion.current + "\n")
    }
}
