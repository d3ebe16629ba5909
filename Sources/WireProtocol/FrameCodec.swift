import NIOCore

// SKELETON: the WireProtocol helper replaces the bodies below. Signatures are the contract.

/// A decode or encode failure, with the wire error code the broker answers with.
package struct WireProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    package var code: ErrorCode
    package var message: String
    package init(code: ErrorCode, message: String) {
        self.code = code
        self.message = message
    }
    package var description: String { "\(self.code.name): \(self.message)" }
}

/// Encodes and decodes frame bodies and headers.
package enum FrameCodec {
    /// Appends the complete frame (header + body) to `buffer`.
    package static func encode(_ frame: TaggedFrame, into buffer: inout ByteBuffer) {
        fatalError("unimplemented")
    }

    /// Decodes a frame body of the given opcode; `body` must be consumed exactly.
    package static func decodeBody(opcode: Opcode, body: inout ByteBuffer) throws(WireProtocolError) -> Frame {
        fatalError("unimplemented")
    }
}

/// Splits a byte stream into `TaggedFrame`s; rejects oversized lengths before buffering a body.
package struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    package typealias InboundOut = TaggedFrame
    package let maxBodyLength: UInt32
    package init(maxBodyLength: UInt32 = WireConstants.defaultMaxBodyLength) {
        self.maxBodyLength = maxBodyLength
    }
    package mutating func decode(buffer: inout ByteBuffer) throws -> TaggedFrame? {
        fatalError("unimplemented")
    }
    package mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> TaggedFrame? {
        try self.decode(buffer: &buffer)
    }
}

/// Encodes `TaggedFrame`s for a channel pipeline.
package struct FrameEncoder: MessageToByteEncoder {
    package typealias OutboundIn = TaggedFrame
    package init() {}
    package func encode(data: TaggedFrame, out: inout ByteBuffer) throws {
        FrameCodec.encode(data, into: &out)
    }
}
