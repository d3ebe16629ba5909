import TopicRouter

/// libFuzzer entry: arbitrary text to the config parser and, when it parses, to policy building and decisions.
/// The parser must answer with a config or a `ConfigError`, never crash or hang. Build and run: `make fuzz`.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConfig(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    guard let config = try? ConfigLoader.parse(text) else { return 0 }
    let hashed = config.withTokenHashes(Dictionary(uniqueKeysWithValues: config.principals.map {
        ($0.clientID, Credentials.hash(token: "fuzz"))
    }))
    guard let policy = try? Policy(config: hashed) else { return 0 }
    for principal in hashed.principals {
        guard case .authenticated(let who) = policy.authenticate(clientID: principal.clientID, token: Array("fuzz".utf8)) else {
            fatalError("a principal with a known token failed to authenticate")
        }
        for topic in hashed.topics {
            _ = policy.subscribeDecision(principal: who, topic: topic.name)
            _ = policy.publishDecision(principal: who, topic: topic.name)
        }
    }
    return 0
}
