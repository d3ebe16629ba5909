import Testing

@testable import TopicRouter

@Suite("TopicPattern")
struct TopicPatternTests {
    @Test(
        "matching table",
        arguments: [
            ("*", "education.completed", true),
            ("*", "", true),
            ("*", "a", true),
            ("a.*", "a.b", true),
            ("a.*", "a.", true),
            ("a.*", "a.b.c", true),
            ("a.*", "a", false),
            ("a.*", "ab.c", false),
            ("a.*", "b.a.c", false),
            ("*.b", "a.b", true),
            ("*.b", "x.y.b", true),
            ("*.b", ".b", true),
            ("*.b", "a.bc", false),
            ("*.b", "b", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "acb", false),
            ("a*b*c", "abcd", false),
            ("a*b*c", "ab", false),
            ("a*b*c", "abcbc", true),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc", "ab", false),
            ("abc", "", false),
            ("", "", true),
            ("", "a", false),
            ("**", "", true),
            ("a**b", "ab", true),
            ("*ab*ab*", "abab", true),
            ("*ab*ab*", "aba", false),
            ("*aa*aa", "aaa", false),
            ("*aa*aa", "aaaa", true),
            ("education.*", "education.completed", true),
            ("support.*", "clinical.referral", false),
            ("*.referral", "clinical.referral", true),
        ]
    )
    func matches(pattern: String, name: String, expected: Bool) {
        #expect(TopicPattern(pattern).matches(name) == expected)
    }

    @Test("a pathological pattern against a long name finishes quickly and correctly")
    func pathological() {
        let pattern = TopicPattern(String(repeating: "*a", count: 40) + "*b")
        let miss = String(repeating: "a", count: 20_000)
        #expect(!pattern.matches(miss))
        #expect(pattern.matches(miss + "b"))
        let stars = TopicPattern(String(repeating: "*a", count: 40))
        #expect(stars.matches(miss))
        #expect(!stars.matches(String(repeating: "a", count: 39)))
    }

    @Test("the pattern text is kept")
    func text() {
        #expect(TopicPattern("support.*").text == "support.*")
        #expect(TopicPattern("support.*").description == "support.*")
    }
}
