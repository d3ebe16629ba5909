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
    static func run(_ broker: TestBroker, as principal: String, _ arguments: [String], input: String = "") throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: self.brokerctlPath)
        let identity = ["--server", "127.0.0.1:\(broker.port)", "--client-id", principal, "--token", TestBroker.token(for: principal)]
        // Subcommand words first, then options.
        process.arguments = arguments + identity
        process.environment = ["PATH": "/usr/bin:/bin"]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
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
        let published = try Self.run(broker, as: "learning-portal", ["publish", "education.completed"] + Self.headers, input: Self.good + "\n" + Self.leaking + "\n")
        #expect(published.status == 1)  // one record did not reach its topic
        #expect(published.out.split(separator: "\n").map(String.init).first == "offset=0")
        #expect(published.out.contains("QUARANTINED quarantine_offset=0: FORBIDDEN_FIELD"))

        let list = try Self.run(broker, as: "quarantine-operator", ["quarantine", "list", "--reason", "FORBIDDEN_FIELD"])
        #expect(list.status == 0)
        #expect(list.out.contains("education.completed") && list.out.contains("learning-portal"))
        let show = try Self.run(broker, as: "quarantine-operator", ["quarantine", "show", "0", "--json"])
        #expect(show.status == 0)
        #expect(show.out.contains(#""quarantine-reason":"FORBIDDEN_FIELD""#))
        let denied = try Self.run(broker, as: "crm-automation", ["quarantine", "list"])
        #expect(denied.status == 1)
        #expect(denied.err.hasPrefix("NOT_CLEARED: "))

        let still = try Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "0"])
        #expect(still.status == 1)
        #expect(still.out.contains("0: STILL_QUARANTINED FORBIDDEN_FIELD"))
        config.edit(after: #"name = "education.completed""#, replacing: ReplayAndReloadTests.forbidden, with: ReplayAndReloadTests.forbiddenWithoutNote)
        let reload = try Self.run(broker, as: "ops-admin", ["admin", "reload"])
        #expect(reload.status == 0)
        #expect(reload.out.hasPrefix("policy pv-"))
        let replayed = try Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "--all-matching", "--topic", "education.completed"])
        #expect(replayed.status == 0)
        #expect(replayed.out.contains("0: REPLAYED to education.completed offset=1"))
        let usage = try Self.run(broker, as: "quarantine-operator", ["quarantine", "replay", "0", "--all-matching"])
        #expect(usage.status != 0 && usage.status != 1)

        let limits = try Self.run(broker, as: "ops-admin", ["limits", "show", "outreach_per_recipient", "--key", "pt_1"])
        #expect(limits.status == 0)
        #expect(limits.out.contains("outreach_per_recipient") && limits.out.contains("0/3") && limits.out.contains("now"))
        let allLimits = try Self.run(broker, as: "ops-admin", ["limits", "show", "--json"])
        #expect(allLimits.out.split(separator: "\n").count == 6)

        let audit = try Self.run(broker, as: "compliance-auditor", ["audit", "tail", "--count", "50", "--principal", "quarantine-operator", "--json"])
        #expect(audit.status == 0)
        let actions = audit.out.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["action"] as? String
        }
        #expect(actions.contains(AuditAction.quarantineReplay))
        #expect(actions.allSatisfy { !$0.isEmpty })
        await broker.stop()
    }
}
