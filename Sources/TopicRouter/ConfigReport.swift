/// What `brokerd check-config` found in a config text: every problem, each with its line and a hint.
package struct ConfigReport: Sendable {
    /// Problems that stop brokerd from starting with this config (`ConfigLoader.parse` throws the first), plus
    /// subscribe patterns that reach a topic of the most sensitive class (PHI by default) for a role not cleared
    /// for it: brokerd refuses those subscriptions at run time and only logs a warning at start, but a config that
    /// says a role may read PHI it may not is an error to `check-config`.
    package var errors: [ConfigError]
    /// Subscribe patterns that match a topic above the role's clearance but below the most sensitive class.
    package var warnings: [ConfigError]
    /// The config, when the text was TOML with a `classes` list (entries that failed to decode are left out).
    package var config: BrokerConfig?
}

extension ConfigLoader {
    /// Every problem in `text`: syntax and types (when the text is not TOML with a `classes` list nothing else is
    /// checked), then names, references and ranges of the entries that decoded, then subscribe patterns that reach
    /// past a role's clearance. Entries that failed to decode are left out of the later checks, and so are the
    /// problems that only name one of them (a principal whose role failed to decode is not reported again). The
    /// files `[server.tls]` names are checked with `fileProbe`, as `parse` does.
    package static func check(
        _ text: String,
        fileProbe: (String) -> String? = TLSFileProbe.readableFileProblem
    ) -> ConfigReport {
        let locator = ConfigLineLocator(text: text)
        var problems = ConfigProblems()
        guard let config = ConfigDecoder.decode(text, locator: locator, problems: &problems) else {
            return ConfigReport(errors: problems.errors, warnings: [], config: nil)
        }
        let leftOut = problems.leftOut
        var semanticProblems = ConfigProblems()
        semanticProblems.append(contentsOf: ConfigValidator.problems(config, locator: locator))
        semanticProblems.check { () throws(ConfigError) in
            try ConfigValidator.validateTLSFiles(config.server.tls, locator: locator, probe: fileProbe)
        }
        let semantic = semanticProblems.errors.filter { error in
            !leftOut.contains { error.message.contains("'\($0)'") }
        }
        var errors = problems.errors + semantic
        var warnings: [ConfigError] = []
        for exposure in Self.exposures(config, locator: locator) {
            if exposure.reachesMostSensitive {
                errors.append(exposure.error)
            } else {
                warnings.append(exposure.error)
            }
        }
        return ConfigReport(errors: Self.inLineOrder(errors), warnings: Self.inLineOrder(warnings), config: config)
    }

    /// Problems without a line first, then by line; the order found among equals.
    private static func inLineOrder(_ errors: [ConfigError]) -> [ConfigError] {
        errors.enumerated().sorted { a, b in
            switch (a.element.line, b.element.line) {
            case (nil, nil): a.offset < b.offset
            case (nil, _): true
            case (_, nil): false
            case (let x?, let y?): x == y ? a.offset < b.offset : x < y
            }
        }.map(\.element)
    }

    /// Subscribe patterns that match a declared topic ranked above the role's clearance, one finding per role and
    /// pattern naming the topics (brokerd logs them at start and reload). A class missing from `classes` is skipped.
    package static func exposures(_ config: BrokerConfig) -> [ConfigError] {
        Self.exposures(config, locator: nil).map(\.error)
    }

    /// A pattern that promises more than the clearance allows; `reachesMostSensitive` when one of its topics is of
    /// the most sensitive class.
    struct Exposure {
        var error: ConfigError
        var reachesMostSensitive: Bool
    }

    static func exposures(_ config: BrokerConfig, locator: ConfigLineLocator?) -> [Exposure] {
        var rank: [String: Int] = [:]
        for (index, name) in config.classes.enumerated() { rank[name] = index }
        let top = config.classes.count - 1
        var findings: [Exposure] = []
        for (index, role) in config.roles.enumerated() {
            guard let cleared = rank[role.clearance] else { continue }
            for pattern in role.subscribe {
                let compiled = TopicPattern(pattern)
                let above = config.topics.filter { topic in
                    compiled.matches(topic.name) && (rank[topic.sensitivity] ?? 0) > cleared
                }
                guard !above.isEmpty else { continue }
                let named = above.map { "'\($0.name)' (\($0.sensitivity))" }.joined(separator: ", ")
                let error = ConfigError(
                    "role '\(role.name)' is cleared up to '\(role.clearance)', but its subscribe pattern "
                        + "'\(pattern)' matches \(named); brokerd refuses those subscriptions with NOT_CLEARED, "
                        + "so the pattern grants more than the role may read: narrow it to the topics the role is "
                        + "cleared for, or raise the clearance if the role really may read them",
                    line: locator?.line(table: "roles", index: index, key: "subscribe")
                )
                let reaches = above.contains { rank[$0.sensitivity] == top }
                findings.append(Exposure(error: error, reachesMostSensitive: reaches))
            }
        }
        return findings
    }
}
