import Foundation
import NIOCore
import Testing
import WireProtocol

/// Keeps the worked examples in docs/PROTOCOL.md byte-exact with the codec.
@Suite("docs/PROTOCOL.md")
struct ProtocolDocTests {
    static let timestamp: Int64 = 1_700_000_000_000

    /// The frames the doc's fenced `hex NAME` blocks show.
    static let documented: [Sample] = [
        Sample("HELLO", .hello(Hello(clientID: "lms-1", credential: bytes("s3cret"))), correlationID: 1),
        Sample(
            "PUBLISH",
            .publish(
                Publish(
                    topic: "edu.done",
                    records: [
                        WireRecord(
                            key: bytes("p7"),
                            headers: [WireHeader(name: "trace", value: bytes("ab12"))],
                            value: bytes("{}"),
                            timestamp: Self.timestamp
                        )
                    ]
                )
            ),
            correlationID: 2
        ),
        Sample(
            "DELIVER",
            .deliver(
                Deliver(
                    subscriptionID: 1,
                    records: [
                        DeliveredRecord(offset: 42, record: WireRecord(value: bytes("{}"), timestamp: Self.timestamp))
                    ]
                )
            ),
            correlationID: 0
        ),
        Sample("QUARANTINE_REPLAY", .quarantineReplay([7]), correlationID: 3),
        Sample(
            "REPLAY_RESULT",
            .replayResult([
                ReplayResult(
                    quarantineOffset: 7,
                    outcome: .stillQuarantined,
                    topic: "edu.done",
                    newOffset: -1,
                    reason: "FORBIDDEN_FIELD",
                    message: "field mrn"
                )
            ]),
            correlationID: 3
        ),
        Sample("DESCRIBE_TOPICS", .describeTopics(topic: "edu.done"), correlationID: 4),
        Sample(
            "TOPIC_DESCRIPTIONS",
            .topicDescriptions([
                TopicDescription(
                    name: "edu.done", sensitivity: "non_phi", access: 2, purposes: ["operations"],
                    consentScopes: ["educational"], retentionBytes: -1, retentionMillis: 86_400_000, fsync: "always",
                    compression: "lz4", segmentBytes: 67_108_864, logBytes: 1234, segmentCount: 1, startOffset: 0,
                    endOffset: 42
                )
            ]),
            correlationID: 4
        ),
        Sample("GROUPS_QUERY", .groupsQuery(group: "crm"), correlationID: 5),
        Sample(
            "GROUPS_STATE",
            .groupsState([
                GroupOffset(group: "crm", topic: "edu.done", committedOffset: 40, startOffset: 0, endOffset: 42, lag: 2)
            ]),
            correlationID: 5
        ),
        Sample("STATS_QUERY", .statsQuery, correlationID: 6),
        Sample(
            "BROKER_STATS",
            .brokerStats(
                BrokerStats(
                    brokerVersion: "0.1.0", startedAtMillis: Self.timestamp, uptimeMillis: 90_000,
                    listenAddress: "127.0.0.1:7420", policyVersion: "pv-6fc26ee4725a", connections: 3, topicCount: 5,
                    logBytes: 8192, quarantineRecords: 1, quarantineBytes: 512, auditRecords: 40, groupCount: 1,
                    commitCount: 1, worstLag: 2, worstLagGroup: "crm", worstLagTopic: "edu.done"
                )
            ),
            correlationID: 6
        ),
    ]

    /// The repository's docs/PROTOCOL.md, found from this file's path.
    static func document() throws -> String {
        let root = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // WireProtocolTests
            .deletingLastPathComponent()  // Tests
            .deletingLastPathComponent()  // package root
        return try String(contentsOf: root.appendingPathComponent("docs/PROTOCOL.md"), encoding: .utf8)
    }

    struct DocError: Error, CustomStringConvertible {
        var description: String
    }

    /// Every fenced block opened with ```` ```hex NAME ````: the hex bytes left of `|` on each line, by NAME.
    static func hexBlocks(in document: String) throws -> [String: [UInt8]] {
        var blocks: [String: [UInt8]] = [:]
        var current: (name: String, bytes: [UInt8])?
        for (number, line) in document.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let block = current {
                if line.hasPrefix("```") {
                    guard blocks.updateValue(block.bytes, forKey: block.name) == nil else {
                        throw DocError(description: "line \(number + 1): second hex block named \(block.name)")
                    }
                    current = nil
                    continue
                }
                let hex = line.split(separator: "|", maxSplits: 1).first ?? ""
                for token in hex.split(whereSeparator: \.isWhitespace) {
                    guard token.count == 2, let byte = UInt8(token, radix: 16) else {
                        throw DocError(
                            description: "line \(number + 1): '\(token)' is not a hex byte in block \(block.name)"
                        )
                    }
                    current?.bytes.append(byte)
                }
            } else if line.hasPrefix("```hex ") {
                current = (String(line.dropFirst("```hex ".count)).trimmingCharacters(in: .whitespaces), [])
            }
        }
        if let current { throw DocError(description: "hex block \(current.name) is not closed") }
        return blocks
    }

    @Test("the doc shows exactly the documented examples")
    func blockNames() throws {
        let blocks = try Self.hexBlocks(in: Self.document())
        #expect(Set(blocks.keys) == Set(Self.documented.map(\.name)))
    }

    @Test("each worked example is what the encoder writes, and decodes back", arguments: Self.documented)
    func workedExample(sample: Sample) throws {
        let blocks = try Self.hexBlocks(in: Self.document())
        let documented = try #require(blocks[sample.name], "no ```hex \(sample.name) block in docs/PROTOCOL.md")
        #expect(documented == Array(encoded(sample.frame).readableBytesView))
        var buffer = ByteBuffer(bytes: documented)
        var decoder = FrameDecoder()
        #expect(try decoder.decode(buffer: &buffer) == sample.frame)
        #expect(buffer.readableBytes == 0)
    }

    /// The text of the section whose heading contains `title`, up to the next heading of the same or a higher level.
    static func section(_ title: String, in document: String) throws -> String {
        let lines = document.split(separator: "\n", omittingEmptySubsequences: false)
        guard let start = lines.firstIndex(where: { $0.hasPrefix("#") && $0.contains(title) }) else {
            throw DocError(description: "no heading containing '\(title)'")
        }
        let level = lines[start].prefix(while: { $0 == "#" }).count
        let end =
            lines[(start + 1)...].firstIndex { line in
                let hashes = line.prefix(while: { $0 == "#" }).count
                return hashes > 0 && hashes <= level && line.dropFirst(hashes).hasPrefix(" ")
            } ?? lines.endIndex
        return lines[start..<end].joined(separator: "\n")
    }

    @Test("every reserved header name and reserved topic is documented in its section")
    func reservedHeadersDocumented() throws {
        let section = try Self.section("Record headers the broker reads and writes", in: Self.document())
        let names =
            RecordHeaderName.producerSet + RecordHeaderName.brokerSet + RecordHeaderName.replaySet
            + RecordHeaderName.quarantineSet + [ReservedTopic.quarantine, ReservedTopic.audit]
        for name in names {
            #expect(section.contains("`\(name)`"), "header \(name)")
        }
        #expect(section.contains("\(RecordHeaderName.maxDedupeKeyBytes) bytes"))
    }

    @Test("every audit action is documented")
    func auditActionsDocumented() throws {
        let section = try Self.section("Record headers the broker reads and writes", in: Self.document())
        for action in AuditAction.all {
            #expect(section.contains("| `\(action)` |"), "audit action \(action)")
        }
    }

    @Test("header names are lowercase ASCII and the lists do not overlap")
    func headerNames() {
        let names =
            RecordHeaderName.producerSet + RecordHeaderName.brokerSet + RecordHeaderName.replaySet
            + RecordHeaderName.quarantineSet
        #expect(Set(names).count == names.count)
        for name in names {
            #expect(name.utf8.allSatisfy { (0x61...0x7A).contains($0) || $0 == 0x2D || $0 == 0x5F }, "\(name)")
        }
        #expect(RecordHeaderName.brokerSet.allSatisfy { $0.hasPrefix(RecordHeaderName.brokerPrefix) })
        #expect(!RecordHeaderName.producerSet.contains { $0.hasPrefix(RecordHeaderName.brokerPrefix) })
    }

    @Test("the section parser stops at the next heading of the same level")
    func sectionParser() throws {
        let text = "# A\nx\n## B one\nb\n### B.1\nc\n## C\nd\n"
        #expect(try Self.section("B one", in: text) == "## B one\nb\n### B.1\nc")
        #expect(throws: DocError.self) { try Self.section("Z", in: text) }
    }

    @Test("the parser reads hex left of '|' and rejects stray text")
    func parser() throws {
        let text = "intro\n```hex A\n42 4B | magic\n01|v\n```\n```hex B\n0G | bad\n```\n"
        #expect(throws: DocError.self) { try Self.hexBlocks(in: text) }
        let good = try Self.hexBlocks(in: "```hex A\n42 4B | magic \"BK\"\n01   | 1\n```\n")
        #expect(good == ["A": [0x42, 0x4B, 0x01]])
    }

    @Test("every error code and opcode is in the doc's tables")
    func tablesComplete() throws {
        let document = try Self.document()
        for code in ErrorCode.allKnown {
            #expect(
                document.contains("| \(code.rawValue) | \(code.name) |"),
                "error code \(code.rawValue) \(code.name)"
            )
        }
        for outcome in ReplayOutcome.allCases {
            #expect(document.contains("| \(outcome.rawValue) | \(outcome) |"), "replay outcome \(outcome)")
        }
        for opcode in Opcode.allCases {
            let hex = String(opcode.rawValue, radix: 16, uppercase: true)
            let row = "| 0x\(hex.count == 1 ? "0" + hex : hex) | \(opcode) |"
            #expect(document.contains(row), "opcode row \(row)")
        }
    }
}
