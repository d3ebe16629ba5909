import Testing

@testable import Throttle

/// `body` followed by its CRC-32, little-endian: a file whose checksum is right but whose contents may not be.
private func sealed(_ body: [UInt8]) -> [UInt8] {
    let crc = CRC32.checksum(body)
    return body + [UInt8(crc & 0xFF), UInt8(crc >> 8 & 0xFF), UInt8(crc >> 16 & 0xFF), UInt8(crc >> 24)]
}

@Suite("LimiterSnapshotCodec")
struct LimiterSnapshotCodecTests {
    static let entries = [
        LimiterSnapshotEntry(limiter: "outreach_per_recipient", key: "pt_1", eventTimes: [1, 2, UInt64.max]),
        LimiterSnapshotEntry(limiter: "outreach_per_recipient", key: "", eventTimes: []),
        LimiterSnapshotEntry(
            limiter: "phi_per_recipient",
            key: "pätient\n\t42",
            eventTimes: [1_767_225_600_000_000_000]
        ),
    ]

    @Test("CRC-32 matches the IEEE check value")
    func crc() {
        #expect(CRC32.checksum(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(CRC32.checksum([UInt8]()) == 0)
    }

    @Test("round trip", arguments: [[], Self.entries])
    func roundTrip(_ entries: [LimiterSnapshotEntry]) throws {
        let bytes = LimiterSnapshotCodec.encode(entries)
        #expect(Array(bytes.prefix(5)) == Array("BRLS".utf8) + [1])
        #expect(try LimiterSnapshotCodec.decode(bytes, file: "limits.snap") == entries)
    }

    @Test("a snapshot from a LimiterSet restores into a new one through the codec")
    func throughSet() throws {
        let definition = LimiterDefinition(name: "cap", limit: .window(cap: 2, windowNanos: 1_000))
        let before = try LimiterSet(definitions: [definition])
        #expect(try before.check(limiter: "cap", keys: ["a"], tokens: 2, now: LimiterNow(nanos: 100)) == .allowed)
        let bytes = LimiterSnapshotCodec.encode(before.snapshot(now: LimiterNow(nanos: 200)))
        let after = try LimiterSet(definitions: [definition])
        let report = after.restore(try LimiterSnapshotCodec.decode(bytes, file: "f"), now: LimiterNow(nanos: 300))
        #expect(report.restored == 1)
        #expect(
            try after.check(limiter: "cap", keys: ["a"], now: LimiterNow(nanos: 300)) == .limited(retryAfterNanos: 800)
        )
    }

    struct Corrupt: CustomTestStringConvertible, Sendable {
        var label: String
        var bytes: [UInt8]
        var offset: Int
        var message: String
        var testDescription: String { self.label }
    }

    static let corrupt: [Corrupt] = {
        let good = LimiterSnapshotCodec.encode(entries)
        var flipped = good
        flipped[20] ^= 0x01
        let body = Array(good.dropLast(4))
        return [
            Corrupt(label: "empty file", bytes: [], offset: 0, message: "only 0 bytes"),
            Corrupt(
                label: "torn write",
                bytes: Array(good.dropLast(7)),
                offset: good.count - 11,
                message: "checksum mismatch"
            ),
            Corrupt(label: "flipped bit", bytes: flipped, offset: good.count - 4, message: "checksum mismatch"),
            Corrupt(
                label: "wrong magic",
                bytes: sealed(Array("XXXX".utf8) + body.dropFirst(4)),
                offset: 0,
                message: "not a limiter snapshot"
            ),
            Corrupt(
                label: "future version",
                bytes: sealed(Array(body.prefix(4)) + [2] + body.dropFirst(5)),
                offset: 4,
                message: "unsupported version 2"
            ),
            Corrupt(
                label: "entry count larger than the entries",
                bytes: sealed(Array(body.prefix(5)) + [4, 0, 0, 0] + body.dropFirst(9)),
                offset: body.count,
                message: "truncated: limiter name length needs 2 bytes, 0 left"
            ),
            Corrupt(
                label: "trailing bytes",
                bytes: sealed(Array(body.prefix(5)) + [2, 0, 0, 0] + body.dropFirst(9)),
                offset: 9 + 2 + 22 + 4 + 4 + 2 + 24 + 2 + 22 + 4 + 0 + 2,
                message: "unexpected bytes after the last entry"
            ),
            Corrupt(
                label: "key longer than the file",
                bytes: sealed(Array(body.prefix(9)) + [1, 0, UInt8(ascii: "x"), 200, 0, 0, 0, UInt8(ascii: "k")]),
                offset: 16,
                message: "key of 200 bytes runs past the end of the entries (1 left)"
            ),
            Corrupt(
                label: "key not UTF-8",
                bytes: sealed(Array(body.prefix(5)) + [1, 0, 0, 0, 1, 0, UInt8(ascii: "x"), 1, 0, 0, 0, 0xFF, 0, 0]),
                offset: 16,
                message: "key is not valid UTF-8"
            ),
        ]
    }()

    @Test("a damaged snapshot is refused whole, with the file and byte offset", arguments: Self.corrupt)
    func refuses(_ testCase: Corrupt) {
        do {
            let entries = try LimiterSnapshotCodec.decode(testCase.bytes, file: "limits.snap")
            Issue.record("decoded \(entries)")
        } catch {
            #expect(error.file == "limits.snap")
            #expect(error.offset == testCase.offset, "\(error)")
            #expect(error.message.contains(testCase.message), "\(error)")
        }
    }
}
