import LogStore

/// libFuzzer entry: arbitrary bytes, read as stored batches, to the batch/record decoder (see
/// `BatchCodecCheck.check`: CRC recomputed so bodies are reached; decoded batches must round-trip). Build and run:
/// `make fuzz`. A finding goes into Fuzz/corpus/FuzzBatch, which LogStoreTests replays on every `make test`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBatch(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do {
        try BatchCodecCheck.check(Array(UnsafeBufferPointer(start: data, count: size)))
    } catch {
        fatalError("\(error)")
    }
    return 0
}
