import WireProtocol

/// libFuzzer entry: arbitrary bytes to the frame decoder (see `FrameCodecCheck.check`: accepted frames must
/// round-trip; everything else is a `WireProtocolError`). Build and run: `make fuzz`. A finding goes into
/// Fuzz/corpus/FuzzFrames, which WireProtocolTests replays on every `make test`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzFrames(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do {
        try FrameCodecCheck.check(Array(UnsafeBufferPointer(start: data, count: size)))
    } catch {
        fatalError("\(error)")
    }
    return 0
}
