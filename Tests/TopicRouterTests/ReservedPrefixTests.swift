import Testing

@testable import TopicRouter

@Suite("Reserved header prefixes")
struct ReservedPrefixTests {
    @Test("the first-byte test lets through exactly the first bytes of the reserved prefixes, in either case")
    func firstBytes() {
        let firsts = Set(RecordRules.reservedHeaderPrefixes.map { $0.utf8.first! })
        for byte in UInt8.min...UInt8.max {
            #expect(RecordRules.mayStartReservedPrefix(byte) == firsts.contains(RecordRules.lowercased(byte)), "\(byte)")
        }
    }

    @Test(
        "reservedPrefix names the prefix a header starts with, ignoring ASCII case",
        arguments: [
            ("broker-received-at", "broker-"), ("BROKER-x", "broker-"), ("broker-", "broker-"), ("broker", nil),
            ("quarantine-reason", "quarantine-"), ("Quarantine-", "quarantine-"), ("replayed-from", "replayed-"),
            ("Replay-Of", "replay-"), ("replay", nil), ("recipient", nil), ("region", nil), ("b", nil), ("", nil),
            ("event_type", nil), ("consent_scope", nil), ("brokers", nil), ("r\u{E9}play-x", nil),
        ] as [(String, String?)]
    )
    func prefixes(_ name: String, _ expected: String?) {
        #expect(RecordRules.reservedPrefix(of: name) == expected)
    }
}
