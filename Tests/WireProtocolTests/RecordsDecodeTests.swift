import NIOCore
import Testing

@testable import WireProtocol

/// The one-pass decode of the records of a PUBLISH or DELIVER (`BodyReader.wellFormedRecords`) must agree with the
/// field-by-field decode on every input: the same records when the body is well formed, and nil (so the
/// field-by-field decode names the error) otherwise.
@Suite("PUBLISH and DELIVER record decode")
struct RecordsDecodeTests {
    static let records = [
        WireRecord(
            key: bytes("k"),
            headers: [
                WireHeader(name: "event_type", value: bytes("a.b")),
                WireHeader(name: "broker-policy-version", value: bytes("v1")),
                WireHeader(name: "event_type", value: bytes("")),
                WireHeader(name: "", value: bytes("x")),
            ],
            value: bytes("{\"a\":1}"),
            timestamp: 1_700_000_000_000
        ),
        WireRecord(key: nil, headers: [], value: bytes(""), timestamp: -1),
        WireRecord(
            key: ByteBuffer(),
            headers: [WireHeader(name: "broker-policy-version", value: bytes("v2"))],
            value: bytes("v"),
            timestamp: 5
        ),
    ]
    static let deliver = Frame.deliver(
        Deliver(
            subscriptionID: 7,
            records: records.enumerated().map { DeliveredRecord(offset: 41 + Int64($0.offset), record: $0.element) }
        )
    )
    static let publish = Frame.publish(Publish(topic: "education.completed", records: records))

    static func body(_ frame: Frame) -> ByteBuffer {
        var bytes = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 0, frame: frame), into: &bytes)
        return bytes.getSlice(at: WireConstants.headerSize, length: bytes.readableBytes - WireConstants.headerSize)!
    }

    /// Reads what comes before the records (topic or subscription id, then the count).
    static func lead(_ reader: inout BodyReader, _ opcode: Opcode) -> Int? {
        switch opcode {
        case .publish:
            guard (try? reader.string("topic")) != nil else { return nil }
            return try? reader.count("recordCount", minimumElementSize: FrameCodec.MinimumSize.record)
        default:
            guard (try? reader.integer("subscriptionID", as: UInt32.self)) != nil else { return nil }
            return try? reader.count("recordCount", minimumElementSize: FrameCodec.MinimumSize.deliveredRecord)
        }
    }

    /// Both decodes of `body`'s records: nil for a decode that failed (the one-pass one returns nil, the other
    /// throws or leaves bytes over).
    static func both(
        _ body: ByteBuffer, _ opcode: Opcode
    ) -> (fast: (offsets: [Int64], records: [WireRecord])?, slow: (offsets: [Int64], records: [WireRecord])?) {
        var fast = BodyReader(buffer: body, opcode: opcode)
        var slow = BodyReader(buffer: body, opcode: opcode)
        guard let count = Self.lead(&fast, opcode), Self.lead(&slow, opcode) == count else { return (nil, nil) }
        var slowResult = try? slow.fieldByFieldRecords(count, withOffsets: opcode == .deliver)
        if slowResult != nil, (try? slow.finish()) == nil { slowResult = nil }
        if opcode == .publish {
            // The broker's view of a PUBLISH (`EncodedPublishRecords`) is built exactly when the one-pass decode
            // accepts the records, and reads back as the same records.
            let encoded = EncodedPublishRecords(count: count, bytes: fast.buffer)
            let decoded = fast.wellFormedRecords(count, withOffsets: false, build: false)
            #expect((encoded != nil) == (decoded != nil))
            if let encoded {
                #expect((0..<encoded.count).map { encoded.record(at: $0) } == encoded.decoded())
            }
            fast = BodyReader(buffer: body, opcode: opcode)
            _ = Self.lead(&fast, opcode)
        }
        let fastResult = fast.wellFormedRecords(count, withOffsets: opcode == .deliver)
        if fastResult != nil { #expect(fast.buffer.readableBytes == 0) }
        return (fastResult, slowResult)
    }

    static func same(
        _ pair: (fast: (offsets: [Int64], records: [WireRecord])?, slow: (offsets: [Int64], records: [WireRecord])?)
    ) -> Bool {
        pair.fast?.offsets == pair.slow?.offsets && pair.fast?.records == pair.slow?.records
    }

    @Test(
        "a well-formed body decodes to the same records both ways, names and slices included",
        arguments: [Self.publish, Self.deliver]
    )
    func sameFrame(frame: Frame) throws {
        let opcode = frame.opcode
        let body = Self.body(frame)
        let (fast, slow) = Self.both(body, opcode)
        #expect(fast?.records == Self.records)
        #expect(slow?.records == Self.records)
        #expect(fast?.offsets == (opcode == .deliver ? [41, 42, 43] : []))
        var decodeBody = body
        let decoded = try FrameCodec.decodeBody(opcode: opcode, body: &decodeBody)
        #expect(decoded == frame)
        if case .publish(let publish) = decoded {
            // Kept as the frame's bytes, and encoded from them again unchanged.
            #expect(publish.wireForm != nil)
            #expect(publish.recordCount == Self.records.count)
            #expect(Self.body(decoded) == body)
        }
    }

    @Test("a PUBLISH with more distinct header names than the name table holds, and names repeated at other positions")
    func manyNames() throws {
        let records = (0..<5).map { n in
            WireRecord(
                key: nil,
                headers: (0..<50).map { WireHeader(name: "name-\(($0 * (n + 1)) % 45)", value: bytes("\($0)")) },
                value: bytes("v\(n)"), timestamp: Int64(n)
            )
        }
        let frame = Frame.publish(Publish(topic: "t", records: records))
        var body = Self.body(frame)
        let decoded = try FrameCodec.decodeBody(opcode: .publish, body: &body)
        guard case .publish(let publish) = decoded else { throw CancellationError() }
        #expect(publish.wireForm != nil)
        #expect(publish.records == records)
        #expect((0..<records.count).map { publish.encodedRecords.record(at: $0) } == records)
        var seen: [String] = []
        publish.encodedRecords.withRecord(at: 3) { view in
            view.visitHeaders(named: "name-4") { name, value in
                seen.append(name + "=" + String(decoding: value, as: UTF8.self))
                return true
            }
        }
        #expect(seen == records[3].headers.filter { $0.name == "name-4" }.map { "name-4=" + String(buffer: $0.value) })
    }

    @Test("a connection's PUBLISHes decoded one after another (topic and names taken from the last one) decode as each alone")
    func recentPublish() throws {
        func publish(_ topic: String, _ names: [String]) -> Frame {
            .publish(
                Publish(
                    topic: topic,
                    records: [
                        WireRecord(key: nil, headers: names.map { WireHeader(name: $0, value: bytes("x")) }, value: bytes("v")),
                        WireRecord(key: nil, headers: names.reversed().map { WireHeader(name: $0, value: bytes("y")) }, value: bytes("w")),
                    ]
                )
            )
        }
        let many = (0..<40).map { "n\($0)" }
        let frames: [Frame] = [
            publish("education.completed", ["event_type", "source_system", "consent_scope"]),
            publish("education.completed", ["event_type", "source_system", "consent_scope"]),
            // A prefix of the last table, a longer one, one that differs in its second name, a name of the same
            // length with other bytes, none at all, more than the table holds, then the same again.
            publish("education.completed", ["event_type"]),
            publish("education.completed", ["event_type", "source_system", "consent_scope", "extra"]),
            publish("education.started", ["event_type", "source_systen", "consent_scope"]),
            publish("education.starteD", ["event_typf"]),
            publish("", []),
            publish("", ["", "a"]),
            publish("t", many),
            publish("t", many),
            publish("education.completed", ["event_type", "source_system", "consent_scope"]),
            .publish(Publish(topic: "a.b", records: [])),
        ]
        var recent = FrameCodec.RecentPublish()
        for frame in frames {
            var alone = Self.body(frame)
            var after = Self.body(frame)
            let expected = try FrameCodec.decodeBody(opcode: .publish, body: &alone)
            let decoded = try FrameCodec.decodeBody(opcode: .publish, body: &after, recent: &recent)
            #expect(decoded == expected)
            #expect(after.readableBytes == 0)
            guard case .publish(let one) = decoded, case .publish(let other) = expected else { throw CancellationError() }
            #expect(one.topic == other.topic)
            #expect(one.encodedRecords.headerNames == other.encodedRecords.headerNames)
            #expect((0..<one.recordCount).map { one.encodedRecords.record(at: $0) } == other.records)
            #expect(recent.topic == one.topic && recent.headerNames == one.encodedRecords.headerNames)
        }
        // A name that is not UTF-8 after a frame whose table it would extend: still refused.
        var invalid = Self.body(publish("education.completed", ["event_type", "source_system", "consent_scope", "bad"]))
        let name = invalid.readableBytesView.firstRange(of: Array("bad".utf8))!
        invalid.setInteger(UInt8(0xFF), at: name.lowerBound)
        #expect(throws: WireProtocolError.self) {
            try FrameCodec.decodeBody(opcode: .publish, body: &invalid, recent: &recent)
        }
    }

    @Test(
        "every truncation and every changed byte: the one-pass decode agrees with the field-by-field one",
        arguments: [Self.publish, Self.deliver]
    )
    func agreesOnDamage(frame: Frame) {
        let opcode = frame.opcode
        let body = Self.body(frame)
        for length in 0..<body.readableBytes {
            #expect(Self.same(Self.both(body.getSlice(at: body.readerIndex, length: length)!, opcode)), "\(length)")
        }
        for position in 0..<body.readableBytes {
            for replacement: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xC3, 0xFF] {
                var damaged = body
                damaged.setInteger(replacement, at: body.readerIndex + position)
                #expect(Self.same(Self.both(damaged, opcode)), "byte \(position) set to \(replacement)")
            }
        }
        // A header name that is not UTF-8: both refuse it, and the frame decode throws as before.
        var invalid = body
        let name = body.readableBytesView.firstRange(of: Array("event_type".utf8))!
        invalid.setInteger(UInt8(0xFF), at: name.lowerBound)
        #expect(Self.both(invalid, opcode).fast == nil)
        #expect(throws: WireProtocolError.self) { try FrameCodec.decodeBody(opcode: opcode, body: &invalid) }
    }

    /// Whether the check-only pass (what a DELIVER is kept in wire form after) accepts `body`.
    static func checkOnly(_ body: ByteBuffer) -> Bool {
        var reader = BodyReader(buffer: body, opcode: .deliver)
        guard let count = Self.lead(&reader, .deliver) else { return false }
        return reader.wellFormedDeliveredRecords(count) != nil
    }

    @Test("every truncation and every changed byte of a DELIVER: checking without building agrees with decoding")
    func checkOnlyAgrees() {
        let body = Self.body(Self.deliver)
        #expect(Self.checkOnly(body))
        for length in 0..<body.readableBytes {
            let cut = body.getSlice(at: body.readerIndex, length: length)!
            #expect(Self.checkOnly(cut) == (Self.both(cut, .deliver).fast != nil), "\(length)")
        }
        for position in 0..<body.readableBytes {
            for replacement: UInt8 in [0x00, 0x01, 0x7F, 0x80, 0xC3, 0xFF] {
                var damaged = body
                damaged.setInteger(replacement, at: body.readerIndex + position)
                #expect(
                    Self.checkOnly(damaged) == (Self.both(damaged, .deliver).fast != nil),
                    "byte \(position) set to \(replacement)"
                )
            }
        }
    }

    @Test("a decoded DELIVER keeps its records in wire form; read in place they are the same records")
    func deliverKeptInWireForm() throws {
        var body = Self.body(Self.deliver)
        let frame = try FrameCodec.decodeBody(opcode: .deliver, body: &body)
        guard case .deliver(let deliver) = frame else {
            Issue.record("not a DELIVER: \(frame)")
            return
        }
        let encoded = try #require(deliver.encodedRecords)
        #expect(encoded.count == Self.records.count)
        var viewed: [DeliveredRecord] = []
        var headerCounts: [Int] = []
        encoded.forEach { view in
            viewed.append(view.record)
            headerCounts.append(view.headerCount)
        }
        #expect(viewed == deliver.records)
        #expect(viewed.map(\.record) == Self.records)
        #expect(viewed.map(\.offset) == [41, 42, 43])
        #expect(headerCounts == [4, 0, 1])
        // Re-encoded, the frame is the same bytes.
        var again = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 0, frame: frame), into: &again)
        var original = ByteBuffer()
        FrameCodec.encode(TaggedFrame(correlationID: 0, frame: Self.deliver), into: &original)
        #expect(again == original)
        // Written as its head and the records' own buffer (the broker's ConnectionHandler), it is the same bytes as well.
        var head = ByteBuffer()
        var records = try #require(FrameCodec.encodeHead(TaggedFrame(correlationID: 0, frame: frame), into: &head))
        head.writeBuffer(&records)
        #expect(head == original)
        var none = ByteBuffer()
        #expect(FrameCodec.encodeHead(TaggedFrame(correlationID: 0, frame: Self.deliver), into: &none) == nil)
        #expect(none.readableBytes == 0)
        // Laying decoded records out in wire form again gives the same bytes.
        #expect(EncodedDeliveredRecords(deliver.records).bytes == encoded.bytes)
    }
}
