import Testing

@testable import TopicRouter

/// Inputs that made TOMLKit's bundled toml++ abort (found by FuzzConfig) now get a ConfigError with a line.
@Suite("TOML precheck")
struct TOMLPrecheckTests {
    @Test("a table header without a name is a clean error, not an abort", arguments: [
        ("[\n", 1),
        ("[", 1),
        ("[=", 1),
        ("[[[a]]]\n", 1),
        ("[[[]]", 1),
        ("classes = [\"a\"]\n\n  [ \t]\n", 3),
        ("x = 1 # [\n[[ =\n", 2),
        ("s = \"\"\"\n[not a header]\n\"\"\"\n[\n", 4),
    ])
    func headerWithoutName(text: String, line: Int) throws {
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(text) }
        do {
            try TOMLPrecheck.check(text)
            Issue.record("precheck accepted \(text.debugDescription)")
        } catch {
            #expect(error.line == line)
            #expect(error.message.contains("table header needs a name"))
        }
    }

    @Test("valid TOML passes: headers, arrays spanning lines, brackets inside strings and comments", arguments: [
        "[server]\nlisten = \"127.0.0.1:7420\"\n",
        "[[topics]]\nname = \"a\"\n",
        "[ \"quoted\" ]\n",
        "classes = [\n  \"non_phi\",\n  \"phi\",\n]\n",
        "x = [\n[1, 2],\n[3]\n]\n",
        "s = \"[\"\n[t]\n",
        "s = '''\n[\n'''\n",
        "# [ just a comment\n[t]\n",
    ])
    func validPasses(text: String) throws {
        try TOMLPrecheck.check(text)
    }

    @Test("the embedded default config passes the precheck")
    func embeddedDefault() throws {
        try TOMLPrecheck.check(ConfigLoader.embeddedDefault)
    }
}

@Suite("Topic name limit")
struct TopicNameLimitTests {
    @Test("config and LogStore agree: 200 characters pass, 201 do not")
    func limit() throws {
        func config(_ name: String) -> String {
            "classes = [\"a\"]\n[[topics]]\nname = \"\(name)\"\nclass = \"a\"\n"
        }
        _ = try ConfigLoader.parse(config(String(repeating: "t", count: 200)))
        #expect(throws: ConfigError.self) { try ConfigLoader.parse(config(String(repeating: "t", count: 201))) }
    }
}
