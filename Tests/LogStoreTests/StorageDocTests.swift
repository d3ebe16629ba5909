import Foundation
import NIOCore
import Testing

@testable import LogStore

@Suite("docs/STORAGE.md")
struct StorageDocTests {
    /// The bytes of the `number`th (from 0) fenced `hex` block of docs/STORAGE.md (the address column is skipped).
    static func documentedHex(_ number: Int = 0) throws -> [UInt8] {
        let docURL = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/STORAGE.md")
        let text = try String(contentsOf: docURL, encoding: .utf8)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let starts = lines.indices.filter { lines[$0].trimmingCharacters(in: .whitespaces) == "```hex" }
        guard number < starts.count else {
            Issue.record("no ```hex block number \(number) in \(docURL.path)")
            return []
        }
        let start = starts[number]
        var bytes: [UInt8] = []
        for line in lines[(start + 1)...] {
            if line.hasPrefix("```") { break }
            for token in line.split(separator: " ").dropFirst() {
                guard token.count == 2, let byte = UInt8(token, radix: 16) else {
                    Issue.record("bad hex token '\(token)' in line '\(line)'")
                    return []
                }
                bytes.append(byte)
            }
        }
        return bytes
    }

    @Test("the worked example batch is exactly what the encoder produces")
    func workedExample() throws {
        let record = LogRecord(
            key: ByteBuffer(string: "k"),
            headers: [LogHeader(name: "h", value: ByteBuffer(string: "v"))],
            value: ByteBuffer(string: "hello"),
            timestamp: 1_700_000_000_000
        )
        let batch = try BatchCodec.encode([record], baseOffset: 42, codec: .none)
        let documented = try Self.documentedHex()
        #expect(documented.count == 78)
        #expect(Array(batch.readableBytesView) == documented)
        let (header, decoded) = try BatchCodec.decode(ByteBuffer(bytes: documented))
        #expect(decoded == [record])
        #expect(header.baseOffset == 42)
    }

    @Test("the worked example offset-store file is exactly what a first commit writes")
    func offsetStoreExample() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets"
            let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
            try store.commit(group: "g", topic: "t", offset: 42)
            let documented = try Self.documentedHex(1)
            #expect(documented.count == 39)
            #expect(try fileBytes(path) == documented)
        }
    }
}
