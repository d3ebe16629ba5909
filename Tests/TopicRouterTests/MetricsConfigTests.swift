import Testing

@testable import TopicRouter

/// The `[metrics]` table: defaults, overrides, and every way it can be wrong, each with its line.
@Suite("Config [metrics]")
struct MetricsConfigTests {
    @Test("absent: on at 127.0.0.1:9420; the embedded default states the same")
    func defaults() throws {
        let config = try ConfigLoader.parse(document(baseLines))
        #expect(config.metrics == MetricsSettings())
        #expect(config.metrics.enabled && config.metrics.listenHost == "127.0.0.1" && config.metrics.listenPort == 9420)
        #expect(try ConfigLoader.parse(ConfigLoader.embeddedDefault).metrics == MetricsSettings())
    }

    @Test("listen and enabled are read; IPv6 in brackets; port 0 allowed; off skips the address checks")
    func values() throws {
        let ipv6 = try ConfigLoader.parse(base(appending: ["[metrics]", #"listen = "[::1]:0""#]))
        #expect(ipv6.metrics.listenHost == "::1" && ipv6.metrics.listenPort == 0 && ipv6.metrics.enabled)
        let off = try ConfigLoader.parse(base(appending: ["[metrics]", "enabled = false", #"listen = "127.0.0.1:7420""#]))
        #expect(!off.metrics.enabled)
        // Port 0 on both: each picks its own free port.
        let both = try ConfigLoader.parse(
            base(replacing: 3, with: #"listen = "127.0.0.1:0""#) + "[metrics]\n" + #"listen = "127.0.0.1:0""# + "\n"
        )
        #expect(both.metrics.listenPort == 0)
    }

    @Test("the policy version does not change with [metrics]")
    func notPolicy() throws {
        let plain = try Policy(config: try ConfigLoader.parse(document(baseLines)))
        let moved = try Policy(config: try ConfigLoader.parse(base(appending: ["[metrics]", #"listen = "0.0.0.0:9999""#])))
        #expect(plain.policyVersion == moved.policyVersion)
    }

    static let errors: [ErrorCase] = [
        ErrorCase(
            label: "not a table", text: document([#"metrics = "on""#] + baseLines),
            message: "'metrics' must be a table, got a string", line: 1
        ),
        ErrorCase(
            label: "bad listen", text: base(appending: ["[metrics]", #"listen = "localhost""#]),
            message: "'listen' in [metrics] must be HOST:PORT", line: 16
        ),
        ErrorCase(
            label: "port too large", text: base(appending: ["[metrics]", #"listen = "127.0.0.1:70000""#]),
            message: "'listen' in [metrics] must be HOST:PORT", line: 16
        ),
        ErrorCase(
            label: "enabled not a boolean", text: base(appending: ["[metrics]", #"enabled = "yes""#]),
            message: "'enabled' in [metrics] must be a boolean (true or false), got a string", line: 16
        ),
        ErrorCase(
            label: "unknown key", text: base(appending: ["[metrics]", #"listn = "127.0.0.1:1""#]),
            message: "unknown key 'listn' in [metrics]; did you mean listen?", line: 16
        ),
        ErrorCase(
            label: "same address as the broker", text: base(appending: ["[metrics]", #"listen = "127.0.0.1:7420""#]),
            message: "[metrics] listen 127.0.0.1:7420 is also [server] listen", line: 16
        ),
    ]

    @Test("errors name the key and its line", arguments: Self.errors)
    func rejected(_ testCase: ErrorCase) {
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(testCase.text) }
        do {
            _ = try ConfigLoader.parse(testCase.text)
        } catch {
            #expect(error.message.contains(testCase.message), "\(error)")
            #expect(error.line == testCase.line, "\(error)")
        }
    }

    @Test("a config built in code is checked too (Policy.init)")
    func inCode() throws {
        var config = try ConfigLoader.parse(document(baseLines))
        config.metrics.listenPort = 70000
        #expect(throws: ConfigError.self) { try Policy(config: config) }
        config.metrics.enabled = false
        _ = try Policy(config: config)
    }
}
