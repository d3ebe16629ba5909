import TopicRouter

/// libFuzzer entry: arbitrary text to the config parser and policy (see `ConfigCheck.check`). Build and run:
/// `make fuzz`. A finding goes into Fuzz/corpus/FuzzConfig, which TopicRouterTests replays on every `make test`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    do {
        try ConfigCheck.check(String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self))
    } catch {
        fatalError("\(error)")
    }
    return 0
}
