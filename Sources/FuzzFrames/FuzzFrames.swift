import NIOCore
import WireProtocol

/// libFuzzer entry: feeds arbitrary bytes to the frame decoder. Every frame it accepts must re-encode to bytes
/// that decode to the same frame; anything else must be a `WireProtocolError`, never a crash or a hang.
/// Build and run: `make fuzz` (see Makefile).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = ByteBuffer(bytes: UnsafeBufferPointer(start: data, count: size))
    var decoder = FrameDecoder(maxBodyLength: 1 << 20)
    while true {
        let frame: TaggedFrame
        do {
            guard let decoded = try decoder.decode(buffer: &input) else { return 0 }
            frame = decoded
        } catch is WireProtocolError {
            return 0
        } catch {
            fatalError("decoder threw a non-wire error: \(error)")
        }
        var encoded = ByteBuffer()
        FrameCodec.encode(frame, into: &encoded)
        var again = FrameDecoder(maxBodyLength: 1 << 20)
        do {
            guard let roundTripped = try again.decode(buffer: &encoded), encoded.readableBytes == 0 else {
                fatalError("re-encoded frame did not decode whole: \(frame)")
            }
            precondition(roundTripped == frame, "round trip changed the frame: \(frame) -> \(roundTripped)")
        } catch {
            fatalError("re-encoded frame failed to decode: \(error) for \(frame)")
        }
    }
}
