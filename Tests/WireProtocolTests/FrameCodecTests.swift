import NIOCore
import Testing
import WireProtocol

@Suite("FrameCodec")
struct FrameCodecTests {
    static let record = WireRecord(
        key: bytes("patient-17"),
        headers: [WireHeader(name: "trace-id", value: bytes("abc"))],
        value: bytes("{\"event\":\"admitted\"}"),
        timestamp: 1_700_000_000_000
    )

    static let manyHeaders = WireRecord(
        key: nil,
        headers: (0..<300).map {
            WireHeader(name: "h\($0)", value: ByteBuffer(bytes: [UInt8(truncatingIfNeeded: $0)]))
        },
        value: ByteBuffer(),
        timestamp: 0
    )

    /// Every opcode at least once, plus the edge cases of each field encoding.
    static let samples: [Sample] = [
        Sample("HELLO", .hello(Hello(clientID: "lms-1", credential: bytes("s3cret")))),
        Sample(
            "HELLO empty credential, other version",
            .hello(Hello(protocolVersion: 9, clientID: "", credential: ByteBuffer()))
        ),
        Sample("HELLO non-ASCII client id", .hello(Hello(clientID: "Zürich-東京-🚑", credential: bytes("t")))),
        Sample(
            "HELLO_OK max values",
            .helloOK(
                HelloOK(
                    sessionID: .max,
                    role: "ops",
                    clearance: "restricted",
                    maxFrameBytes: .max,
                    maxRecordsPerPublish: .max
                )
            )
        ),
        Sample("PUBLISH one record", .publish(Publish(topic: "education.completed", records: [Self.record]))),
        Sample(
            "PUBLISH nil key, empty key, empty value",
            .publish(
                Publish(
                    topic: "t",
                    records: [
                        WireRecord(key: nil, value: ByteBuffer()),
                        WireRecord(key: ByteBuffer(), value: ByteBuffer(), timestamp: -1),
                        WireRecord(key: bytes("k"), value: bytes("v"), timestamp: .min),
                    ]
                )
            )
        ),
        Sample("PUBLISH many headers", .publish(Publish(topic: "t", records: [Self.manyHeaders]))),
        Sample("PUBLISH no records", .publish(Publish(topic: "t", records: []))),
        Sample(
            "PUBLISH longest topic",
            .publish(Publish(topic: String(repeating: "x", count: 65_535), records: [Self.record]))
        ),
        Sample(
            "PUBLISH_ACK mixed results",
            .publishAck(
                PublishAck(results: [
                    .ok(offset: 0),
                    .ok(offset: .max),
                    PublishResult(
                        code: .rateLimited,
                        offset: -1,
                        flags: 0xFF,
                        retryAfterMillis: .max,
                        message: "slow down ⏳"
                    ),
                    PublishResult(code: ErrorCode(rawValue: .max), offset: .min, message: "future code"),
                ])
            )
        ),
        Sample("SUBSCRIBE earliest", .subscribe(Subscribe(topic: "t", start: .earliest, initialCredit: 0))),
        Sample("SUBSCRIBE latest", .subscribe(Subscribe(topic: "t", group: "g", start: .latest, initialCredit: 1))),
        Sample("SUBSCRIBE offset max", .subscribe(Subscribe(topic: "t", start: .offset(.max), initialCredit: .max))),
        Sample("SUBSCRIBE offset min", .subscribe(Subscribe(topic: "t", start: .offset(.min), initialCredit: 5))),
        Sample(
            "SUBSCRIBE committed",
            .subscribe(Subscribe(topic: "t", group: "grüppe", start: .committed, initialCredit: 9))
        ),
        Sample("SUBSCRIBE_OK", .subscribeOK(SubscribeOK(subscriptionID: .max, startOffset: 0, endOffset: .max))),
        Sample(
            "DELIVER",
            .deliver(
                Deliver(
                    subscriptionID: 3,
                    records: [
                        DeliveredRecord(offset: 41, record: Self.record),
                        DeliveredRecord(offset: 42, record: Self.manyHeaders),
                    ]
                )
            ),
            correlationID: 0
        ),
        Sample("DELIVER empty", .deliver(Deliver(subscriptionID: 0, records: [])), correlationID: 0),
        Sample("CREDIT", .credit(Credit(subscriptionID: 1, credit: .max))),
        Sample("COMMIT", .commit(Commit(group: "billing", topic: "education.completed", offset: 1234))),
        Sample("COMMIT_OK", .commitOK),
        Sample("UNSUBSCRIBE", .unsubscribe(subscriptionID: .max)),
        Sample("UNSUBSCRIBE_OK", .unsubscribeOK),
        Sample("LIST_TOPICS", .listTopics),
        Sample(
            "TOPIC_LIST",
            .topicList([
                TopicInfo(name: "a", sensitivity: "public", startOffset: 0, endOffset: 10, access: 3),
                TopicInfo(name: "b.ü", sensitivity: "restricted", startOffset: .max, endOffset: .min, access: 0xFF),
            ])
        ),
        Sample("TOPIC_LIST empty", .topicList([])),
        Sample("PING", .ping(nonce: .max)),
        Sample("PONG", .pong(nonce: 0)),
        Sample("ERROR", .error(ErrorFrame(code: .unknownTopic, message: "topic 'x' has no open log"))),
        Sample(
            "ERROR rate limited, max correlation id",
            .error(ErrorFrame(code: .rateLimited, message: "", retryAfterMillis: .max)),
            correlationID: .max
        ),
        Sample("QUARANTINE_REPLAY", .quarantineReplay([0, 7, .max, .min, -1])),
        Sample("QUARANTINE_REPLAY empty", .quarantineReplay([])),
        Sample(
            "REPLAY_RESULT every outcome",
            .replayResult([
                ReplayResult(quarantineOffset: 7, outcome: .replayed, topic: "education.completed", newOffset: 43),
                ReplayResult(
                    quarantineOffset: 8,
                    outcome: .stillQuarantined,
                    topic: "edu.done",
                    reason: "FORBIDDEN_FIELD",
                    message: "field 'mrn' is forbidden (rule edu.no-phi) ⚕"
                ),
                ReplayResult(quarantineOffset: .max, outcome: .notFound, message: "no record at offset"),
                ReplayResult(quarantineOffset: 0, outcome: .invalid, flags: 0xFF, newOffset: .min),
                ReplayResult(
                    quarantineOffset: 7,
                    outcome: .replayed,
                    flags: ReplayResult.earlierFlag,
                    topic: "Zürich-東京",
                    newOffset: .max
                ),
            ])
        ),
        Sample("REPLAY_RESULT empty", .replayResult([])),
        Sample("ADMIN_RELOAD", .adminReload),
        Sample("RELOAD_OK", .reloadOK(ReloadOK(policyVersion: "sha256:9f2c41", message: "2 topics, 5 roles"))),
        Sample("RELOAD_OK empty strings", .reloadOK(ReloadOK(policyVersion: "", message: ""))),
        Sample("LIMITS_QUERY every limiter", .limitsQuery(LimitsQuery())),
        Sample("LIMITS_QUERY one key", .limitsQuery(LimitsQuery(limiter: "outreach_per_recipient", key: "pt_7f3a9c"))),
        Sample("LIMITS_STATE empty", .limitsState([])),
        Sample(
            "LIMITS_STATE with a key",
            .limitsState([
                LimitState(
                    limiter: "outreach_per_recipient", direction: 0, keyKind: "recipient", action: "reject",
                    limit: "3 per 86400000 ms", keysHeld: 12, stateKey: "pt_7f3a9c", used: 3, capacity: 3,
                    retryAfterMillis: 86_399_000
                ),
                LimitState(
                    limiter: "analytics_delivery", direction: 1, keyKind: "subscriber", action: "delay",
                    limit: "20000.0/s burst 40000", keysHeld: 0, capacity: 40_000
                ),
            ])
        ),
        Sample("DESCRIBE_TOPICS every visible topic", .describeTopics(topic: "")),
        Sample("DESCRIBE_TOPICS one topic", .describeTopics(topic: "support.milestone")),
        Sample("TOPIC_DESCRIPTIONS empty", .topicDescriptions([])),
        Sample(
            "TOPIC_DESCRIPTIONS declared and reserved, extreme figures",
            .topicDescriptions([
                TopicDescription(
                    name: "support.milestone", sensitivity: "pseudonymous", access: 3,
                    purposes: ["patient_support", "care_coordination"],
                    consentScopes: ["treatment_support", "operational_notice"], retentionBytes: -1,
                    retentionMillis: 7_776_000_000, fsync: "interval:50", compression: "lz4",
                    segmentBytes: 67_108_864, logBytes: 123_456, segmentCount: 2, startOffset: 10, endOffset: 42
                ),
                TopicDescription(
                    name: "__quarantine", sensitivity: "phi", access: 0xFF, purposes: [], consentScopes: [],
                    retentionBytes: .max, retentionMillis: .min, fsync: "always", compression: "none",
                    segmentBytes: 0, logBytes: -1, segmentCount: .max, startOffset: .min, endOffset: .max
                ),
                TopicDescription(
                    name: "Zürich-東京", sensitivity: "", access: 0, purposes: [""], consentScopes: ["é", "🚑"],
                    retentionBytes: 0, retentionMillis: 0, fsync: "", compression: "", segmentBytes: 1, logBytes: 0,
                    segmentCount: 0, startOffset: 0, endOffset: 0
                ),
            ])
        ),
        Sample("GROUPS_QUERY every group", .groupsQuery(group: "")),
        Sample("GROUPS_QUERY one group", .groupsQuery(group: "crm-notes")),
        Sample("GROUPS_STATE empty", .groupsState([])),
        Sample(
            "GROUPS_STATE with and without a log",
            .groupsState([
                GroupOffset(
                    group: "crm-notes", topic: "education.completed", committedOffset: 2, startOffset: 0, endOffset: 5,
                    lag: 3
                ),
                GroupOffset(group: "grüppe", topic: "gone", committedOffset: .max, startOffset: -1, endOffset: -1, lag: -1),
            ])
        ),
        Sample("STATS_QUERY", .statsQuery),
        Sample(
            "BROKER_STATS",
            .brokerStats(
                BrokerStats(
                    brokerVersion: "0.1.0", startedAtMillis: 1_700_000_000_000, uptimeMillis: 90_000,
                    listenAddress: "127.0.0.1:7420", policyVersion: "pv-6fc26ee4725a", connections: 3, topicCount: 6,
                    logBytes: 8_192, quarantineRecords: 1, quarantineBytes: 512, auditRecords: 40, groupCount: 2,
                    commitCount: 3, worstLag: 3, worstLagGroup: "crm-notes", worstLagTopic: "education.completed"
                )
            )
        ),
        Sample(
            "BROKER_STATS no groups, extremes",
            .brokerStats(
                BrokerStats(
                    brokerVersion: "", startedAtMillis: .min, uptimeMillis: .max, listenAddress: "[::1]:0",
                    policyVersion: "", connections: .max, topicCount: 0, logBytes: 0, quarantineRecords: 0,
                    quarantineBytes: 0, auditRecords: 0, groupCount: 0, commitCount: 0, worstLag: -1,
                    worstLagGroup: "", worstLagTopic: ""
                )
            )
        ),
    ]

    @Test("every opcode has a sample")
    func everyOpcodeCovered() {
        #expect(Set(Self.samples.map(\.frame.frame.opcode)) == Set(Opcode.allCases))
    }

    @Test("encode → FrameDecoder round trip", arguments: Self.samples)
    func roundTrip(sample: Sample) throws {
        var buffer = encoded(sample.frame)
        var decoder = FrameDecoder()
        let decoded = try decoder.decode(buffer: &buffer)
        #expect(decoded == sample.frame)
        #expect(buffer.readableBytes == 0)
    }

    @Test("the header says what the encoder wrote", arguments: Self.samples)
    func headerFields(sample: Sample) {
        let buffer = encoded(sample.frame)
        let fields = buffer.getMultipleIntegers(at: 0, as: (UInt16, UInt8, UInt8, UInt16, UInt32, UInt32).self)
        #expect(fields?.0 == 0x424B)
        #expect(fields?.1 == 1)
        #expect(fields?.2 == sample.frame.frame.opcode.rawValue)
        #expect(fields?.3 == 0)
        #expect(fields?.4 == sample.frame.correlationID)
        #expect(fields.map { Int($0.5) } == buffer.readableBytes - WireConstants.headerSize)
    }

    @Test(
        "an all-OK PUBLISH_ACK written from its first offset and count is byte for byte the encoded frame",
        arguments: [(0, 1), (41, 3), (1 << 40, 100), (Int64.max - 5, 5)] as [(Int64, Int)]
    )
    func allOKPublishAck(firstOffset: Int64, count: Int) throws {
        let results = (0..<count).map { PublishResult.ok(offset: firstOffset + Int64($0)) }
        let frame = TaggedFrame(correlationID: 0xC0FF_EE01, frame: .publishAck(PublishAck(results: results)))
        var expected = ByteBuffer(bytes: [0xAA])
        FrameCodec.encode(frame, into: &expected)
        var written = ByteBuffer(bytes: [0xAA])
        FrameCodec.encodeAllOKPublishAck(correlationID: 0xC0FF_EE01, firstOffset: firstOffset, count: count, into: &written)
        #expect(written == expected)
        written.moveReaderIndex(forwardBy: 1)
        var decoder = FrameDecoder()
        #expect(try decoder.decode(buffer: &written) == frame)
    }

    @Test("encode appends to what is already in the buffer")
    func encodeAppends() throws {
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB])
        FrameCodec.encode(TaggedFrame(correlationID: 5, frame: .ping(nonce: 1)), into: &buffer)
        #expect(buffer.readBytes(length: 2) == [0xAA, 0xBB])
        var decoder = FrameDecoder()
        #expect(try decoder.decode(buffer: &buffer) == TaggedFrame(correlationID: 5, frame: .ping(nonce: 1)))
    }

    @Test("400 random frames from a seeded generator round-trip exactly, back to back in one buffer")
    func randomFramesRoundTrip() throws {
        var generator = FrameGenerator(random: SeededGenerator(seed: 0x0B10_C4ED))
        let frames = (0..<400).map { _ in generator.frame() }
        var buffer = ByteBuffer()
        for frame in frames { FrameCodec.encode(frame, into: &buffer) }
        var decoder = FrameDecoder()
        for (index, frame) in frames.enumerated() {
            let decoded = try decoder.decode(buffer: &buffer)
            #expect(decoded == frame, "frame \(index)")
        }
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 0)
    }

    @Test("decodeBody reads byte fields as slices and leaves the body consumed")
    func decodeBodyDirectly() throws {
        var body = ByteBuffer(bytes: [0, 0, 0, 1, 0, 0, 0, 2])
        #expect(
            try FrameCodec.decodeBody(opcode: .credit, body: &body) == .credit(Credit(subscriptionID: 1, credit: 2))
        )
        #expect(body.readableBytes == 0)
    }

    // MARK: bodies the decoder must refuse

    @Test("every truncation of every sample body is MALFORMED_FRAME", arguments: Self.samples)
    func everyTruncationIsMalformed(sample: Sample) {
        let full = Array(encoded(sample.frame).readableBytesView)
        let body = Array(full[WireConstants.headerSize...])
        // Long bodies: check every cut near the start and end, and a stride through the middle, to stay fast.
        let cuts =
            body.count <= 512
            ? Array(0..<body.count)
            : Array(0..<256) + Array(stride(from: 256, to: body.count - 256, by: 97))
                + Array((body.count - 256)..<body.count)
        for cut in cuts {
            let error = decodeError(
                rawFrame(opcode: sample.frame.frame.opcode, correlationID: 5, body: Array(body[..<cut]))
            )
            #expect(error?.code == .malformedFrame, "cut at \(cut) of \(body.count)")
            #expect(error?.correlationID == 5)
        }
    }

    @Test("trailing bytes after the last field are MALFORMED_FRAME", arguments: Self.samples)
    func trailingBytes(sample: Sample) {
        let full = Array(encoded(sample.frame).readableBytesView)
        let body = Array(full[WireConstants.headerSize...]) + [0x00]
        let error = decodeError(rawFrame(opcode: sample.frame.frame.opcode, correlationID: 6, body: body))
        #expect(error?.code == .malformedFrame)
        #expect(error?.correlationID == 6)
        #expect(error?.message.contains("1 trailing bytes") == true, "\(String(describing: error))")
    }

    @Test("a truncated body names the field, its offset and what is missing")
    func truncatedMessage() {
        // PING needs an 8-byte nonce; give it 4.
        let error = decodeError(rawFrame(opcode: .ping, body: [0, 0, 0, 1]))
        #expect(error?.code == .malformedFrame)
        #expect(
            error?.message
                == "PING body: field 'nonce' at body offset 0 needs 8 bytes but only 4 remain (body length 4)"
        )
    }

    static let invalidUTF8Cases: [(name: String, bytes: [UInt8], badIndex: Int)] = [
        ("lone continuation byte", [0x61, 0x80, 0x62], 1),
        ("0xFF", [0xFF], 0),
        ("truncated 3-byte sequence", [0x61, 0x62, 0xE2, 0x82], 2),
        ("overlong encoding of '/'", [0xC0, 0xAF], 0),
        ("UTF-16 surrogate", [0x61, 0xED, 0xA0, 0x80], 1),
        ("beyond U+10FFFF", [0xF4, 0x90, 0x80, 0x80], 0),
        ("truncated 4-byte sequence before ASCII", [0xF0, 0x90, 0x80, 0x41], 0),
    ]

    @Test("invalid UTF-8 in a string is MALFORMED_FRAME with the offending offset", arguments: Self.invalidUTF8Cases)
    func invalidUTF8(name: String, stringBytes: [UInt8], badIndex: Int) {
        // HELLO: version u8 at 0, clientID length at 1, clientID bytes from body offset 3.
        var body: [UInt8] = [1, 0, UInt8(stringBytes.count)] + stringBytes
        body += [0, 0, 0, 0]  // empty credential
        let error = decodeError(rawFrame(opcode: .hello, correlationID: 12, body: body))
        #expect(error?.code == .malformedFrame)
        #expect(error?.correlationID == 12)
        #expect(
            error?.message.hasPrefix(
                "HELLO body: field 'clientID' at body offset 3 is not valid UTF-8 "
                    + "(invalid byte at body offset \(3 + badIndex))"
            )
                == true,
            "\(String(describing: error))"
        )
    }

    @Test("invalid UTF-8 deep inside a record names the nested field")
    func invalidUTF8InHeaderName() {
        var body: [UInt8] = [0, 1, 0x74]  // topic "t"
        body += [0, 0, 0, 1]  // one record
        body += [0xFF, 0xFF, 0xFF, 0xFF]  // nil key
        body += [0, 0, 0, 1]  // one header
        body += [0, 2, 0x68, 0xC3]  // name "h" + half of a 2-byte sequence
        body += [0, 0, 0, 0]  // empty header value
        body += [0, 0, 0, 0]  // empty value
        body += [0, 0, 0, 0, 0, 0, 0, 0]  // timestamp
        let error = decodeError(rawFrame(opcode: .publish, body: body))
        #expect(error?.code == .malformedFrame)
        #expect(
            error?.message.contains("field 'records[0].headers[0].name' at body offset 17 is not valid UTF-8") == true
        )
    }

    /// Bodies whose declared array count could never fit: each must fail on the count, before allocating.
    static let hostileCounts: [(name: String, opcode: Opcode, body: [UInt8], field: String)] = [
        (
            "PUBLISH records", .publish, [0, 1, 0x74, 0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 19),
            "recordCount"
        ),
        ("PUBLISH_ACK results", .publishAck, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0], "resultCount"),
        ("DELIVER records", .deliver, [0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF], "recordCount"),
        ("TOPIC_LIST topics", .topicList, [0x7F, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 40), "topicCount"),
        (
            "record headers",
            .publish,
            [0, 1, 0x74, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 12),
            "records[0].headerCount"
        ),
        (
            "QUARANTINE_REPLAY offsets", .quarantineReplay, [0, 0, 0, 2] + [UInt8](repeating: 0, count: 15),
            "offsetCount"
        ),
        (
            "REPLAY_RESULT results", .replayResult, [0, 0, 0, 2] + [UInt8](repeating: 0, count: 47),
            "resultCount"
        ),
        ("LIMITS_STATE states", .limitsState, [0, 0, 0, 2] + [UInt8](repeating: 0, count: 69), "stateCount"),
        (
            "TOPIC_DESCRIPTIONS topics", .topicDescriptions, [0, 0, 0, 2] + [UInt8](repeating: 0, count: 137),
            "topicCount"
        ),
        (
            "TOPIC_DESCRIPTIONS purposes", .topicDescriptions,
            [0, 0, 0, 1] + [0, 0, 0, 0, 0] + [0xFF, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 60),
            "topics[0].purposes.count"
        ),
        ("GROUPS_STATE groups", .groupsState, [0, 0, 0, 2] + [UInt8](repeating: 0, count: 71), "groupCount"),
    ]

    @Test("a hostile array count is refused before allocation", arguments: Self.hostileCounts)
    func hostileCount(name: String, opcode: Opcode, body: [UInt8], field: String) {
        let error = decodeError(rawFrame(opcode: opcode, body: body))
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains("field '\(field)'") == true, "\(String(describing: error))")
        #expect(error?.message.contains("elements of at least") == true)
    }

    @Test("a count that exactly fits the remaining bytes is accepted")
    func countThatFits() throws {
        // TOPIC_LIST with two minimal topics: 2 × 21 bytes.
        let topic: [UInt8] = [0, 0, 0, 0] + [UInt8](repeating: 0, count: 17)
        let frame = try decodeOnce(rawFrame(opcode: .topicList, body: [0, 0, 0, 2] + topic + topic)).get()
        #expect(
            frame?.frame
                == .topicList(
                    Array(
                        repeating: TopicInfo(name: "", sensitivity: "", startOffset: 0, endOffset: 0, access: 0),
                        count: 2
                    )
                )
        )
    }

    static let badFields: [(name: String, opcode: Opcode, body: [UInt8], detail: String)] = [
        (
            "key length -2", .publish,
            [0, 1, 0x74, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFE] + [UInt8](repeating: 0, count: 16), "has length -2"
        ),
        (
            "blob longer than body", .hello, [1, 0, 0, 0, 0, 1, 0],
            "field 'credential' at body offset 3 declares 256 bytes but only 0 remain"
        ),
        (
            "string longer than body", .commit, [0, 9, 0x61],
            "field 'group' at body offset 0 declares 9 UTF-8 bytes but only 1 remain"
        ),
        (
            "unknown start tag", .subscribe, [0, 1, 0x74, 0, 0, 4, 0, 0, 0, 1],
            "field 'start.tag' at body offset 5 is 4"
        ),
        (
            "unknown replay outcome", .replayResult,
            [0, 0, 0, 1] + [UInt8](repeating: 0, count: 8) + [4] + [UInt8](repeating: 0, count: 15),
            "field 'results[0].outcome' at body offset 12 is 4; known outcomes are 0 REPLAYED"
        ),
        (
            "outcome 0xFF in the second result", .replayResult,
            [0, 0, 0, 2] + [UInt8](repeating: 0, count: 24) + [UInt8](repeating: 0, count: 8) + [0xFF]
                + [UInt8](repeating: 0, count: 15),
            "field 'results[1].outcome' at body offset 36 is 255"
        ),
    ]

    @Test("bad field values are MALFORMED_FRAME naming field and offset", arguments: Self.badFields)
    func badField(name: String, opcode: Opcode, body: [UInt8], detail: String) {
        let error = decodeError(rawFrame(opcode: opcode, body: body))
        #expect(error?.code == .malformedFrame)
        #expect(error?.message.contains(detail) == true, "\(String(describing: error))")
    }

    // MARK: encoder limits

    @Test("validate refuses an identifier longer than 65535 UTF-8 bytes, naming the field")
    func validateLongIdentifier() {
        let long = String(repeating: "é", count: 40_000)  // 80,000 bytes
        let record = WireRecord(
            headers: [WireHeader(name: "ok", value: ByteBuffer()), WireHeader(name: long, value: ByteBuffer())],
            value: ByteBuffer()
        )
        let good = WireRecord(
            key: ByteBuffer(string: "k"), headers: [WireHeader(name: "ok", value: ByteBuffer(string: "v"))],
            value: ByteBuffer(string: "{}")
        )
        let frames: [(TaggedFrame, String)] = [
            (TaggedFrame(correlationID: 1, frame: .publish(Publish(topic: long, records: []))), "topic"),
            (
                TaggedFrame(correlationID: 1, frame: .publish(Publish(topic: "t", records: [record]))),
                "records[0].headers[1].name"
            ),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .publish(Publish(topic: "t", records: [WireRecord(value: ByteBuffer()), good, record]))
                ),
                "records[2].headers[1].name"
            ),
            (TaggedFrame(correlationID: 1, frame: .hello(Hello(clientID: long, credential: ByteBuffer()))), "clientID"),
            (TaggedFrame(correlationID: 1, frame: .commit(Commit(group: "g", topic: long, offset: 0))), "topic"),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .replayResult([
                        ReplayResult(quarantineOffset: 1, outcome: .notFound),
                        ReplayResult(quarantineOffset: 2, outcome: .replayed, topic: long, newOffset: 9),
                    ])
                ),
                "results[1].topic"
            ),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .replayResult([ReplayResult(quarantineOffset: 1, outcome: .stillQuarantined, reason: long)])
                ),
                "results[0].reason"
            ),
            (TaggedFrame(correlationID: 1, frame: .reloadOK(ReloadOK(policyVersion: long))), "policyVersion"),
            (TaggedFrame(correlationID: 1, frame: .describeTopics(topic: long)), "topic"),
            (TaggedFrame(correlationID: 1, frame: .groupsQuery(group: long)), "group"),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .topicDescriptions([
                        TopicDescription(
                            name: "t", sensitivity: "c", access: 0, purposes: ["p"], consentScopes: ["s", long],
                            retentionBytes: -1, retentionMillis: -1, fsync: "always", compression: "lz4",
                            segmentBytes: 1, logBytes: 0, segmentCount: 1, startOffset: 0, endOffset: 0
                        )
                    ])
                ),
                "topics[0].consentScopes[1]"
            ),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .groupsState([
                        GroupOffset(group: "g", topic: long, committedOffset: 0, startOffset: 0, endOffset: 0, lag: 0)
                    ])
                ),
                "groups[0].topic"
            ),
            (
                TaggedFrame(
                    correlationID: 1,
                    frame: .brokerStats(
                        BrokerStats(
                            brokerVersion: "v", startedAtMillis: 0, uptimeMillis: 0, listenAddress: "a",
                            policyVersion: "p", connections: 0, topicCount: 0, logBytes: 0, quarantineRecords: 0,
                            quarantineBytes: 0, auditRecords: 0, groupCount: 0, commitCount: 0, worstLag: -1,
                            worstLagGroup: long, worstLagTopic: ""
                        )
                    )
                ),
                "worstLagGroup"
            ),
        ]
        for (frame, field) in frames {
            #expect(
                throws: WireProtocolError(
                    code: .invalidRequest,
                    message: "\(frame.frame.opcode) field '\(field)' is 80000 UTF-8 bytes; the limit is 65535"
                )
            ) {
                try FrameCodec.validate(frame)
            }
            var out = ByteBuffer()
            #expect(throws: WireProtocolError.self) { try FrameEncoder().encode(data: frame, out: &out) }
            #expect(out.readableBytes == 0, "nothing half-written")
        }
        #expect(throws: Never.self) { try FrameCodec.validate(Self.samples[8].frame) }
    }

    @Test("an over-long message is cut at a scalar boundary, never inside a UTF-8 sequence")
    func longMessageIsCut() throws {
        let message = "a" + String(repeating: "é", count: 40_000)  // 1 + 80,000 bytes
        let frame = TaggedFrame(correlationID: 3, frame: .error(ErrorFrame(code: .internal, message: message)))
        var buffer = ByteBuffer()
        try FrameEncoder().encode(data: frame, out: &buffer)
        var decoder = FrameDecoder()
        let decoded = try decoder.decode(buffer: &buffer)
        guard case .error(let error) = decoded?.frame else {
            Issue.record("\(String(describing: decoded))")
            return
        }
        // 65,535 bytes would split an "é"; the cut keeps 1 + 2 × 32,767 = 65,535 bytes exactly here.
        #expect(error.message == "a" + String(repeating: "é", count: 32_767))
        let odd = TaggedFrame(
            correlationID: 3,
            frame: .publishAck(
                PublishAck(results: [
                    PublishResult(code: .internal, offset: -1, message: String(repeating: "é", count: 40_000))
                ])
            )
        )
        var oddBuffer = encoded(odd)
        guard case .publishAck(let ack) = try decoder.decode(buffer: &oddBuffer)?.frame else {
            Issue.record("no PUBLISH_ACK")
            return
        }
        #expect(ack.results.first?.message == String(repeating: "é", count: 32_767))  // 65,534 bytes
    }

    @Test("REPLAY_RESULT and RELOAD_OK messages are cut like the others, and still validate")
    func longOperatorMessagesAreCut() throws {
        let long = String(repeating: "é", count: 40_000)
        let frames: [Frame] = [
            .replayResult([ReplayResult(quarantineOffset: 3, outcome: .notFound, message: long)]),
            .reloadOK(ReloadOK(policyVersion: "v1", message: long)),
        ]
        for frame in frames {
            var buffer = ByteBuffer()
            try FrameEncoder().encode(data: TaggedFrame(correlationID: 4, frame: frame), out: &buffer)
            var decoder = FrameDecoder()
            let decoded = try decoder.decode(buffer: &buffer)?.frame
            switch decoded {
            case .replayResult(let results):
                #expect(
                    results == [
                        ReplayResult(quarantineOffset: 3, outcome: .notFound, message: String(long.prefix(32_767)))
                    ]
                )
            case .reloadOK(let ok):
                #expect(ok == ReloadOK(policyVersion: "v1", message: String(long.prefix(32_767))))
            default:
                Issue.record("unexpected \(String(describing: decoded))")
            }
        }
    }

    @Test("QUARANTINE_REPLAY bytes: a u32 count, then big-endian i64 offsets")
    func quarantineReplayLayout() {
        let body = Array(encoded(TaggedFrame(correlationID: 1, frame: .quarantineReplay([1, -1]))).readableBytesView)
            .dropFirst(WireConstants.headerSize)
        #expect(Array(body) == [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
    }

    @Test("result flags: bit 0 is DUPLICATE on a publish result and EARLIER on a replay result")
    func resultFlags() {
        #expect(PublishResult(code: .ok, offset: 3, flags: PublishResult.duplicateFlag).isDuplicate)
        #expect(PublishResult(code: .quarantined, offset: 3, flags: 0xFF).isDuplicate)
        #expect(!PublishResult(code: .ok, offset: 3, flags: 0xFE).isDuplicate)
        #expect(ReplayResult(quarantineOffset: 1, outcome: .replayed, flags: ReplayResult.earlierFlag).isEarlier)
        #expect(!ReplayResult(quarantineOffset: 1, outcome: .replayed, flags: 0x02).isEarlier)
        #expect(PublishResult.duplicateFlag == 0x01 && ReplayResult.earlierFlag == 0x01)
    }

    static let outcomes: [(ReplayOutcome, UInt8, String)] = [
        (.replayed, 0, "REPLAYED"),
        (.stillQuarantined, 1, "STILL_QUARANTINED"),
        (.notFound, 2, "NOT_FOUND"),
        (.invalid, 3, "INVALID"),
    ]

    @Test("replay outcomes keep their wire values and names", arguments: Self.outcomes)
    func replayOutcome(outcome: ReplayOutcome, raw: UInt8, name: String) {
        #expect(outcome.rawValue == raw)
        #expect(outcome.description == name)
        #expect(ReplayOutcome(rawValue: raw) == outcome)
    }

    @Test("the outcome table covers every case")
    func outcomeTableComplete() {
        #expect(Self.outcomes.map(\.0) == ReplayOutcome.allCases)
        #expect(ReplayOutcome(rawValue: 4) == nil)
    }
}
