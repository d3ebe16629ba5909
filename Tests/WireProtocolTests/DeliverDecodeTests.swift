import NIOCore
import Testing

@testable import WireProtocol

/// The one-pass DELIVER decode (`wellFormedDeliver`) must agree with the field-by-field decode on every input: the
/// same frame when the body is well formed, and nil (so the field-by-field decode names the error) otherwise.
@Suite("DELIVER decode")
struct DeliverDecodeTests {
    static let deliver = Deliver(
        subscriptionID: 7,
        records: [
            DeliveredRecord(
                offset: 41,
                record: WireRecord(
                    key: bytes("k"),
                    headers: [
                        WireHeader(name: "event_type", value: bytes("a.b")),
                        WireHeader(name: "broker-policy-version", value: bytes("v1")),
                        WireHeader(name: "event_type", value: bytes("")),
                        WireHeader(name: "", value: bytes("x")),
                    ],
                    value: bytes("{\"a\":1}"),
                    timestamp: 1_700_000_000_000
                )
            ),
            DeliveredRecord(offset: 42, record: WireRecord(key: nil, headers: [], value: bytes(""), timestamp: -1)),
            DeliveredRecord(
                offset: 43,
                record: WireRecord(
                    key: ByteBuffer(),
                    headers: [WireHeader(name: "broker-policy-version", value: bytes("v2"))],
                    value: bytes("v"),
                    timestamp: 5
                )
            ),
        ]
    )

    static func body(_ deliver: Deliver) -> ByteBuffer {
        var frame = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 0, frame: .deliver(deliver)), into: &frame)
        return frame.getSlice(at: WireConstants.headerSize, length: frame.readableBytes - WireConstants.headerSize)!
    }

    /// Both decodes of `body`: nil for a decode that failed (the one-pass one returns nil, the other throws).
    static func both(_ body: ByteBuffer) -> (fast: Deliver?, slow: Deliver?) {
        var fast = BodyReader(buffer: body, opcode: .deliver)
        var slow = BodyReader(buffer: body, opcode: .deliver)
        var slowResult = try? slow.deliverFieldByField()
        if slowResult != nil, (try? slow.finish()) == nil { slowResult = nil }
        let fastResult = fast.wellFormedDeliver()
        if fastResult != nil { #expect(fast.buffer.readableBytes == 0) }
        return (fastResult, slowResult)
    }

    @Test("a well-formed DELIVER decodes to the same records both ways, names and slices included")
    func sameFrame() throws {
        let body = Self.body(Self.deliver)
        let (fast, slow) = Self.both(body)
        #expect(fast == Self.deliver)
        #expect(slow == Self.deliver)
        var decodeBody = body
        #expect(try FrameCodec.decodeBody(opcode: .deliver, body: &decodeBody) == .deliver(Self.deliver))
    }

    @Test("every truncation and every changed byte: the one-pass decode agrees with the field-by-field one")
    func agreesOnDamage() {
        let body = Self.body(Self.deliver)
        for length in 0..<body.readableBytes {
            let (fast, slow) = Self.both(body.getSlice(at: body.readerIndex, length: length)!)
            #expect(fast == slow, "truncated to \(length)")
        }
        for position in 0..<body.readableBytes {
            for replacement: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xC3, 0xFF] {
                var damaged = body
                damaged.setInteger(replacement, at: body.readerIndex + position)
                let (fast, slow) = Self.both(damaged)
                #expect(fast == slow, "byte \(position) set to \(replacement)")
            }
        }
        // A header name that is not UTF-8: both refuse it, and the error names the field as before.
        var invalid = body
        let name = body.readableBytesView.firstRange(of: Array("event_type".utf8))!
        invalid.setInteger(UInt8(0xFF), at: name.lowerBound)
        #expect(Self.both(invalid).fast == nil)
        #expect(throws: WireProtocolError.self) { try FrameCodec.decodeBody(opcode: .deliver, body: &invalid) }
    }
}
