import NIOCore
import Testing
import WireProtocol

/// A named frame for `arguments:` tables, so a failing case says which one.
struct Sample: Sendable, CustomTestStringConvertible {
    var name: String
    var frame: TaggedFrame
    var testDescription: String { self.name }

    init(_ name: String, _ frame: Frame, correlationID: UInt32 = 7) {
        self.name = name
        self.frame = TaggedFrame(correlationID: correlationID, frame: frame)
    }
}

func bytes(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }

func encoded(_ frame: TaggedFrame) -> ByteBuffer {
    var buffer = ByteBuffer()
    FrameCodec.encode(frame, into: &buffer)
    return buffer
}

/// Runs the decoder once over `bytes`; returns the frame, or the thrown `WireProtocolError`.
func decodeOnce(
    _ bytes: [UInt8],
    maxBodyLength: UInt32 = WireConstants.defaultMaxBodyLength
) -> Result<TaggedFrame?, WireProtocolError> {
    var decoder = FrameDecoder(maxBodyLength: maxBodyLength)
    var buffer = ByteBuffer(bytes: bytes)
    do {
        return .success(try decoder.decode(buffer: &buffer))
    } catch let error as WireProtocolError {
        return .failure(error)
    } catch {
        Issue.record("unexpected error type: \(error)")
        return .failure(WireProtocolError(code: .internal, message: "\(error)"))
    }
}

/// The error the decoder throws for `bytes`, or nil (and a recorded issue) when it does not throw.
func decodeError(
    _ bytes: [UInt8],
    maxBodyLength: UInt32 = WireConstants.defaultMaxBodyLength,
    sourceLocation: SourceLocation = #_sourceLocation
) -> WireProtocolError? {
    switch decodeOnce(bytes, maxBodyLength: maxBodyLength) {
    case .failure(let error):
        return error
    case .success(let frame):
        Issue.record("expected an error, decoded \(String(describing: frame))", sourceLocation: sourceLocation)
        return nil
    }
}

/// A 14-byte frame header with the given fields.
func header(
    magic: UInt16 = WireConstants.magic,
    version: UInt8 = WireConstants.protocolVersion,
    opcode: UInt8,
    flags: UInt16 = 0,
    correlationID: UInt32 = 99,
    bodyLength: UInt32
) -> [UInt8] {
    var buffer = ByteBuffer()
    buffer.writeMultipleIntegers(magic, version, opcode, flags, correlationID, bodyLength)
    return Array(buffer.readableBytesView)
}

/// A frame of `opcode` whose body is exactly `body` (length patched to match).
func rawFrame(opcode: Opcode, correlationID: UInt32 = 99, body: [UInt8]) -> [UInt8] {
    header(opcode: opcode.rawValue, correlationID: correlationID, bodyLength: UInt32(body.count)) + body
}

/// SplitMix64: a tiny seeded generator so "random" tests are reproducible.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { self.state = seed }
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Builds arbitrary valid frames from a seeded generator.
struct FrameGenerator {
    var random: SeededGenerator

    private static let alphabet: [String] = ["a", "Z", "0", ".", "-", "é", "ß", "東", "京", "🚑", "\u{0}", " "]

    mutating func int<T: FixedWidthInteger>(_ type: T.Type = T.self) -> T {
        // Bias towards the edges, where encoders tend to break.
        switch Int.random(in: 0..<6, using: &self.random) {
        case 0: return T.min
        case 1: return T.max
        case 2: return 0
        default: return T.random(in: T.min...T.max, using: &self.random)
        }
    }

    mutating func string(maxCharacters: Int = 12) -> String {
        let count = Int.random(in: 0...maxCharacters, using: &self.random)
        return (0..<count).map { _ in Self.alphabet.randomElement(using: &self.random)! }.joined()
    }

    mutating func strings(maxCount: Int = 3) -> [String] {
        (0..<Int.random(in: 0...maxCount, using: &self.random)).map { _ in self.string() }
    }

    mutating func blob(maxBytes: Int = 40) -> ByteBuffer {
        let count = Int.random(in: 0...maxBytes, using: &self.random)
        return ByteBuffer(bytes: (0..<count).map { _ in UInt8.random(in: 0...255, using: &self.random) })
    }

    mutating func record() -> WireRecord {
        let headerCount = Int.random(in: 0...3, using: &self.random)
        return WireRecord(
            key: Bool.random(using: &self.random) ? self.blob(maxBytes: 8) : nil,
            headers: (0..<headerCount).map { _ in WireHeader(name: self.string(), value: self.blob(maxBytes: 8)) },
            value: self.blob(),
            timestamp: self.int()
        )
    }

    mutating func frame() -> TaggedFrame {
        let frame: Frame
        switch Opcode.allCases.randomElement(using: &self.random)! {
        case .hello:
            frame = .hello(Hello(protocolVersion: self.int(), clientID: self.string(), credential: self.blob()))
        case .helloOK:
            frame = .helloOK(
                HelloOK(
                    sessionID: self.int(),
                    role: self.string(),
                    clearance: self.string(),
                    maxFrameBytes: self.int(),
                    maxRecordsPerPublish: self.int()
                )
            )
        case .publish:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .publish(Publish(topic: self.string(), records: (0..<count).map { _ in self.record() }))
        case .publishAck:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .publishAck(
                PublishAck(
                    results: (0..<count).map { _ in
                        PublishResult(
                            code: ErrorCode(rawValue: self.int()),
                            offset: self.int(),
                            flags: self.int(),
                            retryAfterMillis: self.int(),
                            message: self.string()
                        )
                    }
                )
            )
        case .subscribe:
            let start: StartPosition
            switch Int.random(in: 0..<4, using: &self.random) {
            case 0: start = .earliest
            case 1: start = .latest
            case 2: start = .offset(self.int())
            default: start = .committed
            }
            frame = .subscribe(
                Subscribe(topic: self.string(), group: self.string(), start: start, initialCredit: self.int())
            )
        case .subscribeOK:
            frame = .subscribeOK(
                SubscribeOK(subscriptionID: self.int(), startOffset: self.int(), endOffset: self.int())
            )
        case .deliver:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .deliver(
                Deliver(
                    subscriptionID: self.int(),
                    records: (0..<count).map { _ in DeliveredRecord(offset: self.int(), record: self.record()) }
                )
            )
        case .credit:
            frame = .credit(Credit(subscriptionID: self.int(), credit: self.int()))
        case .commit:
            frame = .commit(Commit(group: self.string(), topic: self.string(), offset: self.int()))
        case .commitOK:
            frame = .commitOK
        case .unsubscribe:
            frame = .unsubscribe(subscriptionID: self.int())
        case .unsubscribeOK:
            frame = .unsubscribeOK
        case .listTopics:
            frame = .listTopics
        case .topicList:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .topicList(
                (0..<count).map { _ in
                    TopicInfo(
                        name: self.string(),
                        sensitivity: self.string(),
                        startOffset: self.int(),
                        endOffset: self.int(),
                        access: self.int()
                    )
                }
            )
        case .ping:
            frame = .ping(nonce: self.int())
        case .pong:
            frame = .pong(nonce: self.int())
        case .error:
            frame = .error(
                ErrorFrame(code: ErrorCode(rawValue: self.int()), message: self.string(), retryAfterMillis: self.int())
            )
        case .quarantineReplay:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .quarantineReplay((0..<count).map { _ in self.int() })
        case .replayResult:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .replayResult(
                (0..<count).map { _ in
                    ReplayResult(
                        quarantineOffset: self.int(),
                        outcome: ReplayOutcome.allCases.randomElement(using: &self.random)!,
                        flags: self.int(),
                        topic: self.string(),
                        newOffset: self.int(),
                        reason: self.string(),
                        message: self.string()
                    )
                }
            )
        case .adminReload:
            frame = .adminReload
        case .reloadOK:
            frame = .reloadOK(ReloadOK(policyVersion: self.string(), message: self.string()))
        case .limitsQuery:
            frame = .limitsQuery(LimitsQuery(limiter: self.string(), key: self.string()))
        case .limitsState:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .limitsState(
                (0..<count).map { _ in
                    LimitState(
                        limiter: self.string(), direction: self.int(), keyKind: self.string(), action: self.string(),
                        limit: self.string(), keysHeld: self.int(), stateKey: self.string(), used: self.int(),
                        capacity: self.int(), retryAfterMillis: self.int()
                    )
                }
            )
        case .describeTopics:
            frame = .describeTopics(topic: self.string())
        case .topicDescriptions:
            let count = Int.random(in: 0...3, using: &self.random)
            frame = .topicDescriptions(
                (0..<count).map { _ in
                    TopicDescription(
                        name: self.string(), sensitivity: self.string(), access: self.int(),
                        purposes: self.strings(), consentScopes: self.strings(), retentionBytes: self.int(),
                        retentionMillis: self.int(), fsync: self.string(), compression: self.string(),
                        segmentBytes: self.int(), logBytes: self.int(), segmentCount: self.int(),
                        startOffset: self.int(), endOffset: self.int()
                    )
                }
            )
        case .groupsQuery:
            frame = .groupsQuery(group: self.string())
        case .groupsState:
            let count = Int.random(in: 0...4, using: &self.random)
            frame = .groupsState(
                (0..<count).map { _ in
                    GroupOffset(
                        group: self.string(), topic: self.string(), committedOffset: self.int(),
                        startOffset: self.int(), endOffset: self.int(), lag: self.int()
                    )
                }
            )
        case .statsQuery:
            frame = .statsQuery
        case .brokerStats:
            frame = .brokerStats(
                BrokerStats(
                    brokerVersion: self.string(), startedAtMillis: self.int(), uptimeMillis: self.int(),
                    listenAddress: self.string(), policyVersion: self.string(), connections: self.int(),
                    topicCount: self.int(), logBytes: self.int(), quarantineRecords: self.int(),
                    quarantineBytes: self.int(), auditRecords: self.int(), groupCount: self.int(),
                    commitCount: self.int(), worstLag: self.int(), worstLagGroup: self.string(),
                    worstLagTopic: self.string()
                )
            )
        }
        return TaggedFrame(correlationID: self.int(), frame: frame)
    }
}
