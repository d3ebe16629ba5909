import ArgumentParser
import Foundation
import TopicRouter

/// `brokerd check-config FILE`: every problem in a config, each with its line and a hint; exit 1 on any.
struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a config file and print every problem with its line and a hint.",
        discussion: """
            Checks what brokerd checks at start and on reload (TOML syntax, unknown keys, value types, names, \
            references between classes, topics, roles, principals and limiters, ranges), and also flags subscribe \
            patterns that match topics above the role's clearance: brokerd refuses those subscriptions, and a config \
            should not promise them. A pattern that reaches a topic of the most sensitive class (phi) is an error, \
            one that reaches a lower class a warning. Exit status: 0 when there is no error (warnings allowed, \
            unless --strict), 1 when there is one, 2 when the file cannot be read.
            """
    )

    @Argument(help: "The TOML config file to check.")
    var file: String

    @Flag(name: .long, help: "Print the result as one JSON document.")
    var json = false

    @Flag(name: .long, help: "Count warnings as errors (exit 1 on any).")
    var strict = false

    func run() throws {
        let text: String
        do {
            guard let contents = try readConfigFile(self.file) else {
                Self.fail("\(self.file): no such file")
            }
            text = contents
        } catch {
            Self.fail("\(self.file): \(error)")
        }
        let report = ConfigLoader.check(text)
        let errors = report.errors.map { Problem($0, severity: "error") }
        let warnings = report.warnings.map { Problem($0, severity: "warning") }
        let failed = !errors.isEmpty || (self.strict && !warnings.isEmpty)
        if self.json {
            print(self.jsonDocument(report: report, problems: errors + warnings, ok: !failed))
        } else {
            self.printText(report: report, errors: errors, warnings: warnings, failed: failed)
        }
        if failed { throw ExitCode(1) }
    }

    /// One finding: where, what, and what to do.
    struct Problem {
        var severity: String
        var line: Int?
        var message: String
        var hint: String?

        /// Splits a `ConfigError` message at its first `; ` into what is wrong and what to do.
        init(_ error: ConfigError, severity: String) {
            self.severity = severity
            self.line = error.line
            if let split = error.message.range(of: "; ") {
                self.message = String(error.message[..<split.lowerBound])
                self.hint = String(error.message[split.upperBound...])
            } else {
                self.message = error.message
                self.hint = nil
            }
        }
    }

    private func printText(report: ConfigReport, errors: [Problem], warnings: [Problem], failed: Bool) {
        for problem in errors + warnings {
            let place = problem.line.map { "\(self.file):\($0)" } ?? self.file
            print("\(place): \(problem.severity): \(problem.message)")
            if let hint = problem.hint { print("    hint: \(hint)") }
        }
        let counts = "\(errors.count) error\(errors.count == 1 ? "" : "s"), "
            + "\(warnings.count) warning\(warnings.count == 1 ? "" : "s")"
        guard !failed, let config = report.config else {
            print("\(self.file): \(counts)")
            return
        }
        print("\(self.file): OK (\(counts)): \(Self.summary(config))")
        let tokenless = config.principals.filter { $0.tokenHash == nil && $0.certIdentity == nil }.map(\.clientID)
        if let version = Self.policyVersion(config) {
            print("policy version: \(version) (brokerd reports the same once it runs this file)")
        } else if !tokenless.isEmpty {
            print(
                "note: \(tokenless.count) principal(s) have no token_hash (\(tokenless.joined(separator: ", "))); "
                    + "brokerd generates their tokens into <data_dir>/credentials.toml on first start, and the "
                    + "policy version depends on them, so it is known only then"
            )
        }
    }

    /// The version brokerd will report for `config`: known offline only when no principal needs a generated token
    /// (each has a token hash or a certificate identity).
    static func policyVersion(_ config: BrokerConfig) -> String? {
        guard config.principals.allSatisfy({ $0.tokenHash != nil || $0.certIdentity != nil }) else { return nil }
        return try? Policy(config: config).policyVersion
    }

    static func summary(_ config: BrokerConfig) -> String {
        "\(config.classes.count) classes, \(config.topics.count) topics, \(config.roles.count) roles, "
            + "\(config.principals.count) principals, \(config.limiters.count) limiters"
    }

    private func jsonDocument(report: ConfigReport, problems: [Problem], ok: Bool) -> String {
        var items: [[String: Any]] = []
        for problem in problems {
            var item: [String: Any] = ["severity": problem.severity, "message": problem.message]
            item["line"] = problem.line
            item["hint"] = problem.hint
            items.append(item)
        }
        var document: [String: Any] = ["file": self.file, "ok": ok, "problems": items]
        if let config = report.config {
            document["policy_version"] = ok ? Self.policyVersion(config) : nil
            document["counts"] = [
                "classes": config.classes.count, "topics": config.topics.count, "roles": config.roles.count,
                "principals": config.principals.count, "limiters": config.limiters.count,
            ]
        }
        let data = try! JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])  // plain values only
        return String(decoding: data, as: UTF8.self)
    }

    /// The file could not be read: exit status 2, so scripts can tell it from a config with problems.
    private static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("brokerd check-config: \(message)\n".utf8))
        Self.exit(withError: ExitCode(2))
    }
}
