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
        for raw in UInt16(0)...15 {
            let code = ErrorCode(rawValue: raw)
            #expect(document.contains("| \(raw) | \(code.name) |"), "error code \(raw) \(code.name)")
        }
        for opcode in Opcode.allCases {
            let hex = String(opcode.rawValue, radix: 16, uppercase: true)
            let row = "| 0x\(hex.count == 1 ? "0" + hex : hex) | \(opcode) |"
            #expect(document.contains(row), "opcode row \(row)")
        }
    }
}
