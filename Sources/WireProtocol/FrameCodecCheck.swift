import NIOCore

/// The property the `FuzzFrames` libFuzzer harness checks, here so that the regression test replaying the committed
/// corpus (WireProtocolTests) runs exactly the same code.
package enum FrameCodecCheck {
    /// What the check found wrong: a crash-free decoder that still broke the contract.
    package struct Violation: Error, CustomStringConvertible {
        package var description: String
    }

    /// Feeds `bytes` to the frame decoder as one stream. Every frame it accepts must re-encode to bytes that decode,
    /// whole, to the same frame; anything else must be a `WireProtocolError`, never a crash or a hang.
    package static func check(_ bytes: [UInt8]) throws(Violation) {
        var input = ByteBuffer(bytes: bytes)
        var decoder = FrameDecoder(maxBodyLength: 1 << 20)
        while true {
            let frame: TaggedFrame
            do {
                guard let decoded = try decoder.decode(buffer: &input) else { return }
                frame = decoded
            } catch is WireProtocolError {
                return
            } catch {
                throw Violation(description: "decoder threw a non-wire error: \(error)")
            }
            var encoded = ByteBuffer()
            FrameCodec.encode(frame, into: &encoded)
            var again = FrameDecoder(maxBodyLength: 1 << 20)
            let roundTripped: TaggedFrame?
            do {
                roundTripped = try again.decode(buffer: &encoded)
            } catch {
                throw Violation(description: "re-encoded frame failed to decode: \(error) for \(frame)")
            }
            guard let roundTripped, encoded.readableBytes == 0 else {
                throw Violation(description: "re-encoded frame did not decode whole: \(frame)")
            }
            if roundTripped != frame {
                throw Violation(description: "round trip changed the frame: \(frame) -> \(roundTripped)")
            }
        }
    }
}
