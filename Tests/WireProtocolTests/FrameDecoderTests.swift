import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing
import WireProtocol

@Suite("FrameDecoder")
struct FrameDecoderTests {
    @Test("ByteToMessageDecoderVerifier: drip-fed, shuffled and batched bytes give the same frames")
    func verifier() throws {
        // The verifier drip-feeds every byte through a channel; the 64 KiB-topic sample would only slow it down.
        var pairs = FrameCodecTests.samples.map { sample in (encoded(sample.frame), [sample.frame]) }
            .filter { $0.0.readableBytes < 8192 }
        #expect(pairs.count == FrameCodecTests.samples.count - 1)
        // Two frames in one input must come out as two outputs.
        let ping = TaggedFrame(correlationID: 1, frame: .ping(nonce: 1))
        let pong = TaggedFrame(correlationID: 1, frame: .pong(nonce: 1))
        var both = encoded(ping)
        FrameCodec.encode(pong, into: &both)
        pairs.append((both, [ping, pong]))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test("returns nil and consumes nothing until the whole header, then the whole body, is there")
    func partialInput() throws {
        let frame = TaggedFrame(correlationID: 42, frame: .commit(Commit(group: "g", topic: "t", offset: 9)))
        let full = Array(encoded(frame).readableBytesView)
        var decoder = FrameDecoder()
        var buffer = ByteBuffer()
        for (index, byte) in full.enumerated() {
            buffer.writeInteger(byte)
            let decoded = try decoder.decode(buffer: &buffer)
            if index < full.count - 1 {
                #expect(decoded == nil, "after \(index + 1) of \(full.count) bytes")
                #expect(buffer.readableBytes == index + 1, "nothing consumed yet")
            } else {
                #expect(decoded == frame)
                #expect(buffer.readableBytes == 0)
            }
        }
    }

    @Test("an oversized length with no body is FRAME_TOO_LARGE at once, with the correlation id")
    func oversizedWithoutBody() {
        let error = decodeError(
            header(opcode: Opcode.publish.rawValue, correlationID: 0xDEAD_BEEF, bodyLength: 1025),
            maxBodyLength: 1024
        )
        #expect(error?.code == .frameTooLarge)
        #expect(error?.correlationID == 0xDEAD_BEEF)
        #expect(error?.message == "frame bytes 10-13: PUBLISH body length 1025 exceeds the limit of 1024 bytes")
    }

    @Test("the largest length is refused with the default limit too")
    func maxLengthDefaultLimit() {
        let error = decodeError(header(opcode: Opcode.publish.rawValue, correlationID: 1, bodyLength: .max))
        #expect(error?.code == .frameTooLarge)
        #expect(error?.message.contains("4294967295") == true)
        #expect(error?.message.contains("\(WireConstants.defaultMaxBodyLength)") == true)
    }

    @Test("a body of exactly maxBodyLength is accepted")
    func exactlyAtLimit() throws {
        let frame = TaggedFrame(
            correlationID: 2,
            frame: .hello(Hello(clientID: "c", credential: ByteBuffer(repeating: 7, count: 100)))
        )
        let bytes = Array(encoded(frame).readableBytesView)
        let limit = UInt32(bytes.count - WireConstants.headerSize)
        #expect(try decodeOnce(bytes, maxBodyLength: limit).get() == frame)
        #expect(decodeError(bytes, maxBodyLength: limit - 1)?.code == .frameTooLarge)
    }

    @Test("an oversized frame is refused through a channel pipeline before any body byte arrives")
    func oversizedInPipeline() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder(maxBodyLength: 16)))
        defer { _ = try? channel.finish() }
        let bytes = header(opcode: Opcode.hello.rawValue, correlationID: 77, bodyLength: 17)
        #expect(
            throws: WireProtocolError(
                code: .frameTooLarge,
                message: "frame bytes 10-13: HELLO body length 17 exceeds the limit of 16 bytes",
                correlationID: 77
            )
        ) {
            try channel.writeInbound(ByteBuffer(bytes: bytes))
        }
    }

    static let expectedMagic = "expected 0x424B (\"BK\"); the peer does not speak the brokerd protocol"

    typealias BadHeader = (name: String, bytes: [UInt8], code: ErrorCode, correlationID: UInt32?, message: String)

    static let badHeaders: [BadHeader] = [
        (
            "bad magic (HTTP)",
            Array("GET / HTTP/1.1\r\n".utf8),
            .malformedFrame,
            nil,
            "frame bytes 0-1: magic is 0x4745, " + Self.expectedMagic
        ),
        (
            "bad magic, only two bytes so far",
            [0x4B, 0x42],
            .malformedFrame,
            nil,
            "frame bytes 0-1: magic is 0x4B42, " + Self.expectedMagic
        ),
        (
            "unsupported version",
            header(version: 9, opcode: 0x01, correlationID: 1, bodyLength: 0),
            .unsupportedVersion,
            1,
            "frame byte 2: protocol version 9 is not supported; this build speaks version 1"
        ),
        (
            "unknown opcode",
            header(opcode: 0x7F, correlationID: 3, bodyLength: 0),
            .malformedFrame,
            3,
            "frame byte 3: unknown opcode 0x7F; version 1 defines 0x01...0x1D"
        ),
        (
            "opcode 0",
            header(opcode: 0x00, correlationID: 4, bodyLength: 0),
            .malformedFrame,
            4,
            "frame byte 3: unknown opcode 0x00; version 1 defines 0x01...0x1D"
        ),
        (
            "first opcode after the last one",
            header(opcode: 0x1E, correlationID: 6, bodyLength: 0),
            .malformedFrame,
            6,
            "frame byte 3: unknown opcode 0x1E; version 1 defines 0x01...0x1D"
        ),
        (
            "nonzero flags",
            header(opcode: Opcode.ping.rawValue, flags: 0x0100, correlationID: 5, bodyLength: 8),
            .malformedFrame,
            5,
            "frame bytes 4-5: flags are 0x0100 on a PING frame; version 1 requires 0"
        ),
    ]

    @Test("bad headers are refused with a code, the field and the correlation id once read", arguments: Self.badHeaders)
    func badHeader(name: String, bytes: [UInt8], code: ErrorCode, correlationID: UInt32?, message: String) {
        let error = decodeError(bytes)
        #expect(error?.code == code)
        #expect(error?.correlationID == correlationID)
        #expect(error?.message == message)
    }

    @Test("a whole frame with a nonzero-flag header built by the encoder is refused")
    func encoderFlagsRoundTrip() {
        let error = decodeError(
            Array(encoded(TaggedFrame(correlationID: 8, flags: 1, frame: .listTopics)).readableBytesView)
        )
        #expect(error?.code == .malformedFrame)
        #expect(error?.correlationID == 8)
    }

    @Test("a truncated stream is not an error until the body is there; a body shorter than its fields is")
    func truncatedBody() throws {
        // Declared 8 bytes, 3 arrived: wait.
        #expect(try decodeOnce(header(opcode: Opcode.ping.rawValue, bodyLength: 8) + [1, 2, 3]).get() == nil)
        // Declared and sent 3 bytes, but a PING nonce needs 8: malformed.
        let error = decodeError(header(opcode: Opcode.ping.rawValue, correlationID: 31, bodyLength: 3) + [1, 2, 3])
        #expect(error?.code == .malformedFrame)
        #expect(error?.correlationID == 31)
        #expect(
            error?.message
                == "PING body: field 'nonce' at body offset 0 needs 8 bytes but only 3 remain (body length 3)"
        )
    }

    @Test("error descriptions carry the code name and the correlation id")
    func errorDescription() {
        #expect(
            "\(WireProtocolError(code: .frameTooLarge, message: "m", correlationID: 9))"
                == "FRAME_TOO_LARGE (correlation id 9): m"
        )
        #expect("\(WireProtocolError(code: .malformedFrame, message: "m"))" == "MALFORMED_FRAME: m")
    }
}
