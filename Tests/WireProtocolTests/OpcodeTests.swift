import Testing
import WireProtocol

@Suite("Opcode")
struct OpcodeTests {
    /// Opcode numbers are a contract: once shipped they never change.
    static let table: [(opcode: Opcode, raw: UInt8, name: String)] = [
        (.hello, 0x01, "HELLO"),
        (.helloOK, 0x02, "HELLO_OK"),
        (.publish, 0x03, "PUBLISH"),
        (.publishAck, 0x04, "PUBLISH_ACK"),
        (.subscribe, 0x05, "SUBSCRIBE"),
        (.subscribeOK, 0x06, "SUBSCRIBE_OK"),
        (.deliver, 0x07, "DELIVER"),
        (.credit, 0x08, "CREDIT"),
        (.commit, 0x09, "COMMIT"),
        (.commitOK, 0x0A, "COMMIT_OK"),
        (.unsubscribe, 0x0B, "UNSUBSCRIBE"),
        (.unsubscribeOK, 0x0C, "UNSUBSCRIBE_OK"),
        (.listTopics, 0x0D, "LIST_TOPICS"),
        (.topicList, 0x0E, "TOPIC_LIST"),
        (.ping, 0x0F, "PING"),
        (.pong, 0x10, "PONG"),
        (.error, 0x11, "ERROR"),
        (.quarantineReplay, 0x12, "QUARANTINE_REPLAY"),
        (.replayResult, 0x13, "REPLAY_RESULT"),
        (.adminReload, 0x14, "ADMIN_RELOAD"),
        (.reloadOK, 0x15, "RELOAD_OK"),
        (.limitsQuery, 0x16, "LIMITS_QUERY"),
        (.limitsState, 0x17, "LIMITS_STATE"),
        (.describeTopics, 0x18, "DESCRIBE_TOPICS"),
        (.topicDescriptions, 0x19, "TOPIC_DESCRIPTIONS"),
        (.groupsQuery, 0x1A, "GROUPS_QUERY"),
        (.groupsState, 0x1B, "GROUPS_STATE"),
        (.statsQuery, 0x1C, "STATS_QUERY"),
        (.brokerStats, 0x1D, "BROKER_STATS"),
    ]

    @Test("each opcode keeps its number and name", arguments: Self.table)
    func stable(opcode: Opcode, raw: UInt8, name: String) {
        #expect(opcode.rawValue == raw)
        #expect(opcode.description == name)
        #expect(Opcode(rawValue: raw) == opcode)
    }

    @Test("the table covers every opcode and the numbers have no gaps")
    func complete() {
        #expect(Self.table.map(\.opcode) == Opcode.allCases)
        #expect(Opcode.allCases.map(\.rawValue) == Array(1...UInt8(Opcode.allCases.count)))
    }
}
