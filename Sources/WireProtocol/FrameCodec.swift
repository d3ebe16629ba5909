#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import RawBytes

/// A decode or encode failure, with the wire error code the broker answers with.
package struct WireProtocolError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The stable wire code (MALFORMED_FRAME, FRAME_TOO_LARGE, UNSUPPORTED_VERSION, or INVALID_REQUEST for a frame
    /// this side refuses to encode).
    package var code: ErrorCode
    /// What is wrong, naming the field and its offset, so a person can fix the peer.
    package var message: String
    /// The offending frame's correlation id, set by `FrameDecoder` whenever the 14-byte header was read, so the
    /// broker can echo it in its ERROR. `nil` when the failure happened before a header could be read (bad magic).
    package var correlationID: UInt32?

    /// Creates an error; `correlationID` is filled in by the decoder once the frame header was read.
    package init(code: ErrorCode, message: String, correlationID: UInt32? = nil) {
        self.code = code
        self.message = message
        self.correlationID = correlationID
    }

    /// `CODE_NAME (correlation id N): message`.
    package var description: String {
        if let correlationID = self.correlationID {
            return "\(self.code.name) (correlation id \(correlationID)): \(self.message)"
        }
        return "\(self.code.name): \(self.message)"
    }
}

/// Encodes and decodes frame bodies and headers.
///
/// The byte layout of every frame is specified in docs/PROTOCOL.md; `ProtocolDocTests` keeps the two in step.
package enum FrameCodec {
    /// Longest string the wire can carry: strings are prefixed with a u16 byte length.
    package static let maxStringBytes = Int(UInt16.max)
    /// Longest record key: the key length is an i32 whose value -1 means "no key".
    package static let maxKeyBytes = Int(Int32.max)

    /// Fewest bytes one array element can occupy; a declared count is checked against these before any allocation.
    enum MinimumSize {
        /// key length (4) + header count (4) + value length (4) + timestamp (8).
        static let record = 20
        /// name length (2) + value length (4).
        static let header = 6
        /// offset (8) + record (20).
        static let deliveredRecord = 8 + Self.record
        /// code (2) + offset (8) + flags (1) + retryAfterMillis (4) + message length (2).
        static let publishResult = 17
        /// name length (2) + sensitivity length (2) + startOffset (8) + endOffset (8) + access (1).
        static let topicInfo = 21
        /// One `__quarantine` offset in QUARANTINE_REPLAY.
        static let replayOffset = 8
        /// quarantineOffset (8) + outcome (1) + flags (1) + topic length (2) + newOffset (8) + reason length (2)
        /// + message length (2).
        static let replayResult = 24
        /// limiter, keyKind, action, limit, stateKey lengths (2 each) + direction (1) + keysHeld (4) + used (8)
        /// + capacity (8) + retryAfterMillis (4).
        static let limitState = 35
        /// One `string` in an array of strings: its length (2).
        static let string = 2
        /// name, sensitivity lengths (2 each) + access (1) + purposeCount, scopeCount (4 each) + retentionBytes,
        /// retentionMillis (8 each) + fsync, compression lengths (2 each) + segmentBytes, logBytes (8 each)
        /// + segmentCount (4) + startOffset, endOffset (8 each).
        static let topicDescription = 69
        /// group, topic lengths (2 each) + committedOffset, startOffset, endOffset, lag (8 each).
        static let groupOffset = 36
    }

    // MARK: encoding

    /// Appends the complete frame (header + body) to `buffer`.
    ///
    /// Writes straight into `buffer`: the body length is reserved, the body written, then the length patched.
    /// Human-readable `message` fields longer than 65,535 UTF-8 bytes are cut at a Unicode scalar boundary (they are
    /// diagnostics and often quote peer input). Identifier strings (topic, group, client id, header names, ...)
    /// are never cut: one longer than 65,535 bytes is a programming error and traps; call `validate(_:)` first
    /// when the frame carries strings you did not check (`FrameEncoder` does).
    package static func encode(_ frame: TaggedFrame, into buffer: inout ByteBuffer) {
        // The header in one raw write: `writeMultipleIntegers` plus `writeInteger` made seven separate byte copies
        // (callgrind, pipelined-single: about 1,100 instructions more per frame, on both ends of every request).
        let opcode = frame.frame.opcode.rawValue
        let lengthIndex = buffer.writerIndex + WireConstants.headerSize - 4
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: WireConstants.headerSize) { out in
            var writer = RawWriter(out)
            writer.put(WireConstants.magic)
            writer.put(WireConstants.protocolVersion)
            writer.put(opcode)
            writer.put(frame.flags)
            writer.put(frame.correlationID)
            writer.put(UInt32(0))  // the body length, patched below
            return writer.position
        }
        let bodyStart = buffer.writerIndex
        Self.encodeBody(frame.frame, into: &buffer)
        // A ByteBuffer's capacity is bounded by UInt32.max, so the body length always fits.
        buffer.setInteger(UInt32(buffer.writerIndex - bodyStart), at: lengthIndex)
    }

    /// The PUBLISH_ACK whose `count` results are all OK, at offsets `firstOffset`, `firstOffset + 1`, ..., with no
    /// flags, retry or message: the bytes `encode` writes for that frame, without building its results (a broker
    /// acknowledges most publishes this way).
    package static func encodeAllOKPublishAck(
        correlationID: UInt32, firstOffset: Int64, count: Int, into buffer: inout ByteBuffer
    ) {
        // code u16, offset i64, flags u8, retryAfterMillis u32, message length u16 (an empty message).
        let resultSize = 2 + 8 + 1 + 4 + 2
        let bodySize = 4 + count * resultSize
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: WireConstants.headerSize + bodySize) { out in
            var writer = RawWriter(out)
            writer.put(WireConstants.magic)
            writer.put(WireConstants.protocolVersion)
            writer.put(Opcode.publishAck.rawValue)
            writer.put(UInt16(0))  // flags
            writer.put(correlationID)
            writer.put(UInt32(bodySize))
            writer.put(UInt32(count))
            for index in 0..<count {
                writer.put(ErrorCode.ok.rawValue)
                writer.put(firstOffset + Int64(index))
                writer.put(UInt8(0))
                writer.put(UInt32(0))
                writer.put(UInt16(0))
            }
            return writer.position
        }
    }

    /// For a DELIVER of wire-form records (``EncodedDeliveredRecords``): writes the frame's bytes up to its records
    /// (header, subscription id, count) and returns the records' buffer, whose bytes complete the frame as they are;
    /// `encode` would copy them after the same head. nil, writing nothing, for any other frame.
    package static func encodeHead(_ frame: TaggedFrame, into buffer: inout ByteBuffer) -> ByteBuffer? {
        guard case .deliver(let deliver) = frame.frame, let encoded = deliver.encodedRecords else { return nil }
        buffer.writeMultipleIntegers(
            WireConstants.magic,
            WireConstants.protocolVersion,
            frame.frame.opcode.rawValue,
            frame.flags,
            frame.correlationID,
            UInt32(8 + encoded.bytes.readableBytes),
            deliver.subscriptionID,
            UInt32(encoded.count)
        )
        return encoded.bytes
    }

    /// Whether every record's key and header names are within the wire's limits (what `validate` checks of a
    /// PUBLISH's records), read where they lie. Walking the records by value, as the loop that names the first
    /// field over a limit does, retains and releases each record's header array, key and value: a producer
    /// validates every record it sends, and a policy record has five headers.
    private static func recordsFit(_ records: [WireRecord]) -> Bool {
        records.withUnsafeBufferPointer { records in
            for i in records.indices {
                if let keyBytes = records[i].key?.readableBytes, keyBytes > Self.maxKeyBytes { return false }
                let namesFit = records[i].headers.withUnsafeBufferPointer { headers in
                    for j in headers.indices where headers[j].name.utf8.count > Self.maxStringBytes { return false }
                    return true
                }
                if !namesFit { return false }
            }
            return true
        }
    }

    /// Checks that every string and key of `frame` fits its length prefix, so `encode` neither traps nor cuts an
    /// identifier. Throws INVALID_REQUEST naming the field, its length and the limit.
    package static func validate(_ frame: TaggedFrame) throws(WireProtocolError) {
        let opcode = frame.frame.opcode
        func check(_ string: String, _ field: @autoclosure () -> String) throws(WireProtocolError) {
            let count = string.utf8.count
            guard count <= Self.maxStringBytes else {
                throw WireProtocolError(
                    code: .invalidRequest,
                    message: "\(opcode) field '\(field())' is \(count) UTF-8 bytes; the limit is \(Self.maxStringBytes)"
                )
            }
        }
        func check(_ record: WireRecord, _ prefix: @autoclosure () -> String) throws(WireProtocolError) {
            if let key = record.key, key.readableBytes > Self.maxKeyBytes {
                throw WireProtocolError(
                    code: .invalidRequest,
                    message: "\(opcode) field '\(prefix()).key' is \(key.readableBytes) bytes; "
                        + "the limit is \(Self.maxKeyBytes)"
                )
            }
            for (index, header) in record.headers.enumerated() {
                try check(header.name, "\(prefix()).headers[\(index)].name")
            }
        }
        switch frame.frame {
        case .hello(let hello):
            try check(hello.clientID, "clientID")
        case .helloOK(let ok):
            try check(ok.role, "role")
            try check(ok.clearance, "clearance")
        case .publish(let publish):
            try check(publish.topic, "topic")
            // Wire-form records passed the decoder's checks; records that all fit need no walk that names a field.
            guard publish.wireForm == nil, !Self.recordsFit(publish.records) else { break }
            for (index, record) in publish.records.enumerated() {
                try check(record, "records[\(index)]")
            }
        case .subscribe(let subscribe):
            try check(subscribe.topic, "topic")
            try check(subscribe.group, "group")
        case .deliver(let deliver) where deliver.encodedRecords == nil:
            for (index, delivered) in deliver.records.enumerated() {
                try check(delivered.record, "records[\(index)]")
            }
        case .commit(let commit):
            try check(commit.group, "group")
            try check(commit.topic, "topic")
        case .topicList(let topics):
            for (index, topic) in topics.enumerated() {
                try check(topic.name, "topics[\(index)].name")
                try check(topic.sensitivity, "topics[\(index)].sensitivity")
            }
        case .replayResult(let results):
            for (index, result) in results.enumerated() {
                try check(result.topic, "results[\(index)].topic")
                try check(result.reason, "results[\(index)].reason")
            }
        case .reloadOK(let ok):
            try check(ok.policyVersion, "policyVersion")
        case .limitsQuery(let query):
            try check(query.limiter, "limiter")
            try check(query.key, "key")
        case .limitsState(let states):
            for (index, state) in states.enumerated() {
                try check(state.limiter, "states[\(index)].limiter")
                try check(state.keyKind, "states[\(index)].keyKind")
                try check(state.action, "states[\(index)].action")
                try check(state.limit, "states[\(index)].limit")
                try check(state.stateKey, "states[\(index)].stateKey")
            }
        case .describeTopics(let topic):
            try check(topic, "topic")
        case .topicDescriptions(let topics):
            for (index, topic) in topics.enumerated() {
                try check(topic.name, "topics[\(index)].name")
                try check(topic.sensitivity, "topics[\(index)].sensitivity")
                for (item, purpose) in topic.purposes.enumerated() {
                    try check(purpose, "topics[\(index)].purposes[\(item)]")
                }
                for (item, scope) in topic.consentScopes.enumerated() {
                    try check(scope, "topics[\(index)].consentScopes[\(item)]")
                }
                try check(topic.fsync, "topics[\(index)].fsync")
                try check(topic.compression, "topics[\(index)].compression")
            }
        case .groupsQuery(let group):
            try check(group, "group")
        case .groupsState(let offsets):
            for (index, entry) in offsets.enumerated() {
                try check(entry.group, "groups[\(index)].group")
                try check(entry.topic, "groups[\(index)].topic")
            }
        case .brokerStats(let stats):
            try check(stats.brokerVersion, "brokerVersion")
            try check(stats.listenAddress, "listenAddress")
            try check(stats.policyVersion, "policyVersion")
            try check(stats.worstLagGroup, "worstLagGroup")
            try check(stats.worstLagTopic, "worstLagTopic")
        case .deliver:
            // Wire-form records (`EncodedDeliveredRecords`): their builder guarantees the limits.
            break
        case .publishAck, .subscribeOK, .credit, .commitOK, .unsubscribe, .unsubscribeOK, .listTopics, .ping, .pong,
            .error, .quarantineReplay, .adminReload, .statsQuery:
            // Only messages (cut, never refused), fixed-size fields, or nothing.
            break
        }
    }

    private static func encodeBody(_ frame: Frame, into buffer: inout ByteBuffer) {
        switch frame {
        case .hello(let hello):
            buffer.writeInteger(hello.protocolVersion)
            Self.writeIdentifier(hello.clientID, into: &buffer)
            Self.writeBlob(hello.credential, into: &buffer)
        case .helloOK(let ok):
            buffer.writeInteger(ok.sessionID)
            Self.writeIdentifier(ok.role, into: &buffer)
            Self.writeIdentifier(ok.clearance, into: &buffer)
            buffer.writeMultipleIntegers(ok.maxFrameBytes, ok.maxRecordsPerPublish)
        case .publish(let publish):
            Self.writeIdentifier(publish.topic, into: &buffer)
            buffer.writeInteger(UInt32(publish.recordCount))
            if let encoded = publish.wireForm {
                buffer.writeImmutableBuffer(encoded.bytes)
            } else {
                Self.writeRecords(publish.records, into: &buffer)
            }
        case .publishAck(let ack):
            buffer.writeInteger(UInt32(ack.results.count))
            Self.writeResults(ack.results, into: &buffer)
        case .subscribe(let subscribe):
            Self.writeIdentifier(subscribe.topic, into: &buffer)
            Self.writeIdentifier(subscribe.group, into: &buffer)
            switch subscribe.start {
            case .earliest:
                buffer.writeInteger(UInt8(0))
            case .latest:
                buffer.writeInteger(UInt8(1))
            case .offset(let offset):
                buffer.writeMultipleIntegers(UInt8(2), offset)
            case .committed:
                buffer.writeInteger(UInt8(3))
            }
            buffer.writeInteger(subscribe.initialCredit)
        case .subscribeOK(let ok):
            buffer.writeMultipleIntegers(ok.subscriptionID, ok.startOffset, ok.endOffset)
        case .deliver(let deliver):
            if let encoded = deliver.encodedRecords {
                buffer.writeMultipleIntegers(deliver.subscriptionID, UInt32(encoded.count))
                buffer.writeImmutableBuffer(encoded.bytes)
                return
            }
            buffer.writeMultipleIntegers(deliver.subscriptionID, UInt32(deliver.records.count))
            for delivered in deliver.records {
                buffer.writeInteger(delivered.offset)
                Self.writeRecord(delivered.record, into: &buffer)
            }
        case .credit(let credit):
            buffer.writeMultipleIntegers(credit.subscriptionID, credit.credit)
        case .commit(let commit):
            Self.writeIdentifier(commit.group, into: &buffer)
            Self.writeIdentifier(commit.topic, into: &buffer)
            buffer.writeInteger(commit.offset)
        case .unsubscribe(let subscriptionID):
            buffer.writeInteger(subscriptionID)
        case .topicList(let topics):
            buffer.writeInteger(UInt32(topics.count))
            for topic in topics {
                Self.writeIdentifier(topic.name, into: &buffer)
                Self.writeIdentifier(topic.sensitivity, into: &buffer)
                buffer.writeMultipleIntegers(topic.startOffset, topic.endOffset, topic.access)
            }
        case .ping(let nonce), .pong(let nonce):
            buffer.writeInteger(nonce)
        case .error(let error):
            buffer.writeMultipleIntegers(error.code.rawValue, error.retryAfterMillis)
            Self.writeMessage(error.message, into: &buffer)
        case .quarantineReplay(let offsets):
            buffer.writeInteger(UInt32(offsets.count))
            for offset in offsets {
                buffer.writeInteger(offset)
            }
        case .replayResult(let results):
            buffer.writeInteger(UInt32(results.count))
            for result in results {
                buffer.writeMultipleIntegers(result.quarantineOffset, result.outcome.rawValue, result.flags)
                Self.writeIdentifier(result.topic, into: &buffer)
                buffer.writeInteger(result.newOffset)
                Self.writeIdentifier(result.reason, into: &buffer)
                Self.writeMessage(result.message, into: &buffer)
            }
        case .reloadOK(let ok):
            Self.writeIdentifier(ok.policyVersion, into: &buffer)
            Self.writeMessage(ok.message, into: &buffer)
        case .limitsQuery(let query):
            Self.writeIdentifier(query.limiter, into: &buffer)
            Self.writeIdentifier(query.key, into: &buffer)
        case .limitsState(let states):
            buffer.writeInteger(UInt32(states.count))
            for state in states {
                Self.writeIdentifier(state.limiter, into: &buffer)
                buffer.writeInteger(state.direction)
                Self.writeIdentifier(state.keyKind, into: &buffer)
                Self.writeIdentifier(state.action, into: &buffer)
                Self.writeIdentifier(state.limit, into: &buffer)
                buffer.writeInteger(state.keysHeld)
                Self.writeIdentifier(state.stateKey, into: &buffer)
                buffer.writeMultipleIntegers(state.used, state.capacity, state.retryAfterMillis)
            }
        case .describeTopics(let topic):
            Self.writeIdentifier(topic, into: &buffer)
        case .topicDescriptions(let topics):
            buffer.writeInteger(UInt32(topics.count))
            for topic in topics {
                Self.writeIdentifier(topic.name, into: &buffer)
                Self.writeIdentifier(topic.sensitivity, into: &buffer)
                buffer.writeInteger(topic.access)
                Self.writeIdentifiers(topic.purposes, into: &buffer)
                Self.writeIdentifiers(topic.consentScopes, into: &buffer)
                buffer.writeMultipleIntegers(topic.retentionBytes, topic.retentionMillis)
                Self.writeIdentifier(topic.fsync, into: &buffer)
                Self.writeIdentifier(topic.compression, into: &buffer)
                buffer.writeMultipleIntegers(
                    topic.segmentBytes, topic.logBytes, topic.segmentCount, topic.startOffset, topic.endOffset
                )
            }
        case .groupsQuery(let group):
            Self.writeIdentifier(group, into: &buffer)
        case .groupsState(let offsets):
            buffer.writeInteger(UInt32(offsets.count))
            for entry in offsets {
                Self.writeIdentifier(entry.group, into: &buffer)
                Self.writeIdentifier(entry.topic, into: &buffer)
                buffer.writeMultipleIntegers(entry.committedOffset, entry.startOffset, entry.endOffset, entry.lag)
            }
        case .brokerStats(let stats):
            Self.writeIdentifier(stats.brokerVersion, into: &buffer)
            buffer.writeMultipleIntegers(stats.startedAtMillis, stats.uptimeMillis)
            Self.writeIdentifier(stats.listenAddress, into: &buffer)
            Self.writeIdentifier(stats.policyVersion, into: &buffer)
            buffer.writeMultipleIntegers(stats.connections, stats.topicCount, stats.logBytes, stats.quarantineRecords)
            buffer.writeMultipleIntegers(stats.quarantineBytes, stats.auditRecords, stats.groupCount, stats.commitCount)
            buffer.writeInteger(stats.worstLag)
            Self.writeIdentifier(stats.worstLagGroup, into: &buffer)
            Self.writeIdentifier(stats.worstLagTopic, into: &buffer)
        case .commitOK, .unsubscribeOK, .listTopics, .adminReload, .statsQuery:
            break
        }
    }

    /// One record: key, headers, value, timestamp. Sized first, then written through one raw pointer: with a
    /// ByteBuffer call per field (about 15 per record) its bookkeeping cost more than the copies.
    static func writeRecord(_ record: WireRecord, into buffer: inout ByteBuffer) {
        withUnsafePointer(to: record) { Self.writeRecord(at: $0, into: &buffer) }
    }

    /// Each of `records` in order (``writeRecord(_:into:)``).
    static func writeRecords(_ records: [WireRecord], into buffer: inout ByteBuffer) {
        records.withUnsafeBufferPointer { records in
            for i in records.indices { Self.writeRecord(at: records.baseAddress! + i, into: &buffer) }
        }
    }

    /// ``writeRecord(_:into:)`` reading the record and its headers where they lie. A copy of a record or a header
    /// (iterating their arrays, capturing the record in the write's closure) retains and releases each buffer's
    /// storage: atomic writes, which producers sharing header buffers across threads (one `event_type` value for
    /// every record) make each other wait on.
    private static func writeRecord(at record: UnsafePointer<WireRecord>, into buffer: inout ByteBuffer) {
        var size = 4 + 4 + 4 + record.pointee.value.readableBytes + 8
        if let keyBytes = record.pointee.key?.readableBytes {
            precondition(keyBytes <= Self.maxKeyBytes, "record key longer than \(Self.maxKeyBytes) bytes")
            size += keyBytes
        }
        record.pointee.headers.withUnsafeBufferPointer { headers in
            for i in headers.indices {
                let count = headers[i].name.utf8.count
                precondition(
                    count <= Self.maxStringBytes,
                    "string of \(count) UTF-8 bytes exceeds the wire limit of \(Self.maxStringBytes); "
                        + "call FrameCodec.validate"
                )
                size += 2 + count + 4 + headers[i].value.readableBytes
            }
        }
        let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            if let keyBytes = record.pointee.key?.readableBytes {
                writer.put(Int32(keyBytes))
                writer.put(record.pointee.key!)
            } else {
                writer.put(Int32(-1))
            }
            record.pointee.headers.withUnsafeBufferPointer { headers in
                writer.put(UInt32(headers.count))
                for i in headers.indices {
                    writer.put(UInt16(headers[i].name.utf8.count))
                    writer.put(headers[i].name)
                    writer.put(UInt32(headers[i].value.readableBytes))
                    writer.put(headers[i].value)
                }
            }
            writer.put(UInt32(record.pointee.value.readableBytes))
            writer.put(record.pointee.value)
            writer.put(record.pointee.timestamp)
            return writer.position
        }
        precondition(written == size, "record wrote \(written) bytes, sized \(size)")
    }

    /// u32 length + bytes. A ByteBuffer never holds more than UInt32.max bytes, so the length always fits.
    private static func writeBlob(_ blob: ByteBuffer, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(blob.readableBytes))
        buffer.writeImmutableBuffer(blob)
    }

    /// `array<string>`: u32 count, then each string (identifiers: never cut, see `validate(_:)`).
    private static func writeIdentifiers(_ strings: [String], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(strings.count))
        for string in strings {
            Self.writeIdentifier(string, into: &buffer)
        }
    }

    /// u16 length + UTF-8 bytes; traps when longer than 65,535 bytes (see `validate(_:)`).
    private static func writeIdentifier(_ string: String, into buffer: inout ByteBuffer) {
        let count = string.utf8.count
        precondition(
            count <= Self.maxStringBytes,
            "string of \(count) UTF-8 bytes exceeds the wire limit of \(Self.maxStringBytes); call FrameCodec.validate"
        )
        buffer.writeInteger(UInt16(count))
        buffer.writeString(string)
    }

    /// u16 length + UTF-8 bytes, cut after the last whole Unicode scalar that fits in 65,535 bytes.
    /// PUBLISH_ACK results. Sized first and written through one raw pointer when no message needs cutting (the
    /// usual case: a successful result's message is empty); with three ByteBuffer calls per result, acknowledging
    /// a 100-record PUBLISH cost about 145,000 instructions.
    private static func writeResults(_ results: [PublishResult], into buffer: inout ByteBuffer) {
        var size = 0
        for result in results {
            let count = result.message.utf8.count
            guard count <= Self.maxStringBytes else {
                for result in results {
                    buffer.writeMultipleIntegers(
                        result.code.rawValue, result.offset, result.flags, result.retryAfterMillis
                    )
                    Self.writeMessage(result.message, into: &buffer)
                }
                return
            }
            size += 2 + 8 + 1 + 4 + 2 + count
        }
        let written = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            for result in results {
                writer.put(result.code.rawValue)
                writer.put(result.offset)
                writer.put(result.flags)
                writer.put(result.retryAfterMillis)
                writer.put(UInt16(result.message.utf8.count))
                writer.put(result.message)
            }
            return writer.position
        }
        precondition(written == size, "PUBLISH_ACK results wrote \(written) bytes, sized \(size)")
    }

    private static func writeMessage(_ string: String, into buffer: inout ByteBuffer) {
        let utf8 = string.utf8
        guard utf8.count > Self.maxStringBytes else {
            buffer.writeInteger(UInt16(utf8.count))
            buffer.writeString(string)
            return
        }
        var end = utf8.index(utf8.startIndex, offsetBy: Self.maxStringBytes)
        // Step back over UTF-8 continuation bytes (0b10xxxxxx) so the cut lands on a scalar boundary.
        while end > utf8.startIndex, utf8[end] & 0xC0 == 0x80 {
            end = utf8.index(before: end)
        }
        let prefix = utf8[..<end]
        buffer.writeInteger(UInt16(prefix.count))
        buffer.writeBytes(prefix)
    }

    // MARK: decoding

    /// Decodes wire-form DELIVER records (see ``EncodedDeliveredRecords``) as a DELIVER body's records.
    package static func decodeDeliveredRecords(
        _ encoded: EncodedDeliveredRecords
    ) throws(WireProtocolError) -> [DeliveredRecord] {
        var reader = BodyReader(buffer: encoded.bytes, opcode: .deliver)
        guard encoded.count <= encoded.bytes.readableBytes / MinimumSize.deliveredRecord else {
            throw reader.malformed(
                "\(encoded.count) records need at least \(encoded.count * MinimumSize.deliveredRecord) bytes, "
                    + "only \(encoded.bytes.readableBytes) given"
            )
        }
        let (offsets, records) = try reader.records(encoded.count, withOffsets: true)
        try reader.finish()
        return zip(offsets, records).map { DeliveredRecord(offset: $0, record: $1) }
    }

    /// Decodes a frame body of the given opcode; `body` must be consumed exactly.
    ///
    /// Every field checks the remaining bytes before it is read, and every array count is checked against the
    /// smallest possible element size before anything is allocated. Byte fields (keys, values, header values,
    /// credentials) are slices of `body`, not copies. Bytes left over after the last field are MALFORMED_FRAME.
    /// Errors name the opcode, the field and its body offset (the frame offset is the body offset + 14).
    package static func decodeBody(opcode: Opcode, body: inout ByteBuffer) throws(WireProtocolError) -> Frame {
        var recent = RecentPublish()
        return try self.decodeBody(opcode: opcode, body: &body, recent: &recent)
    }

    /// What a connection's last PUBLISH decoded to that the next one likely repeats: its topic and its header
    /// names table. `FrameDecoder` keeps one per connection; the decoded frames are the same with or without it.
    package struct RecentPublish: Sendable {
        var topic = ""
        var headerNames: [String] = []
        package init() {}
    }

    /// ``decodeBody(opcode:body:)`` with `recent`: a PUBLISH whose topic has the bytes of `recent.topic` takes
    /// that string (no new string made and checked as UTF-8), its header names table reuses `recent`'s names
    /// (``EncodedPublishRecords/init(count:bytes:knownNames:)``), and `recent` becomes this PUBLISH's.
    package static func decodeBody(
        opcode: Opcode, body: inout ByteBuffer, recent: inout RecentPublish
    ) throws(WireProtocolError) -> Frame {
        var reader = BodyReader(buffer: body, opcode: opcode)
        defer { body = reader.buffer }
        let frame: Frame
        switch opcode {
        case .hello:
            let version = try reader.integer("protocolVersion", as: UInt8.self)
            let clientID = try reader.string("clientID")
            let credential = try reader.blob("credential")
            frame = .hello(Hello(protocolVersion: version, clientID: clientID, credential: credential))
        case .helloOK:
            let sessionID = try reader.integer("sessionID", as: UInt64.self)
            let role = try reader.string("role")
            let clearance = try reader.string("clearance")
            let maxFrameBytes = try reader.integer("maxFrameBytes", as: UInt32.self)
            let maxRecords = try reader.integer("maxRecordsPerPublish", as: UInt32.self)
            frame = .helloOK(
                HelloOK(
                    sessionID: sessionID,
                    role: role,
                    clearance: clearance,
                    maxFrameBytes: maxFrameBytes,
                    maxRecordsPerPublish: maxRecords
                )
            )
        case .publish:
            let topic = try reader.string("topic", known: recent.topic)
            let count = try reader.count("recordCount", minimumElementSize: MinimumSize.record)
            // Kept as the frame's bytes when they pass every check (the broker writes them into its batch from
            // there); else decoded field by field, which names the failure.
            if let encoded = EncodedPublishRecords(count: count, bytes: reader.buffer, knownNames: recent.headerNames) {
                reader.buffer.moveReaderIndex(forwardBy: reader.buffer.readableBytes)
                recent.topic = topic
                recent.headerNames = encoded.headerNames
                frame = .publish(Publish(topic: topic, encoded: encoded))
            } else {
                frame = .publish(
                    Publish(topic: topic, records: try reader.fieldByFieldRecords(count, withOffsets: false).records)
                )
            }
        case .publishAck:
            let count = try reader.count("resultCount", minimumElementSize: MinimumSize.publishResult)
            var results: [PublishResult] = []
            results.reserveCapacity(count)
            while results.count < count {
                // Results with an empty message (every OK one) straight from the bytes, as many as come in a row;
                // the first other one field by field below (the same values, and the same errors).
                reader.emptyMessagePublishResults(into: &results, upTo: count)
                guard results.count < count else { break }
                let index = results.count
                let code = try reader.integer("results[\(index)].code", as: UInt16.self)
                let offset = try reader.integer("results[\(index)].offset", as: Int64.self)
                let flags = try reader.integer("results[\(index)].flags", as: UInt8.self)
                let retry = try reader.integer("results[\(index)].retryAfterMillis", as: UInt32.self)
                let message = try reader.string("results[\(index)].message")
                results.append(
                    PublishResult(
                        code: ErrorCode(rawValue: code),
                        offset: offset,
                        flags: flags,
                        retryAfterMillis: retry,
                        message: message
                    )
                )
            }
            frame = .publishAck(PublishAck(results: results))
        case .subscribe:
            let topic = try reader.string("topic")
            let group = try reader.string("group")
            let tagOffset = reader.bodyOffset
            let start: StartPosition
            switch try reader.integer("start.tag", as: UInt8.self) {
            case 0: start = .earliest
            case 1: start = .latest
            case 2: start = .offset(try reader.integer("start.offset", as: Int64.self))
            case 3: start = .committed
            case let tag:
                throw reader.malformed(
                    "field 'start.tag' at body offset \(tagOffset) is \(tag); "
                        + "known tags are 0 earliest, 1 latest, 2 offset, 3 committed"
                )
            }
            let credit = try reader.integer("initialCredit", as: UInt32.self)
            frame = .subscribe(Subscribe(topic: topic, group: group, start: start, initialCredit: credit))
        case .subscribeOK:
            let id = try reader.integer("subscriptionID", as: UInt32.self)
            let startOffset = try reader.integer("startOffset", as: Int64.self)
            let endOffset = try reader.integer("endOffset", as: Int64.self)
            frame = .subscribeOK(SubscribeOK(subscriptionID: id, startOffset: startOffset, endOffset: endOffset))
        case .deliver:
            let id = try reader.integer("subscriptionID", as: UInt32.self)
            let count = try reader.count("recordCount", minimumElementSize: MinimumSize.deliveredRecord)
            if let encoded = reader.wellFormedDeliveredRecords(count) {
                // Checked, and kept as they arrived: a receiver that reads them in place (BrokerClient's batches)
                // builds no record values; `Deliver.records` decodes them when asked.
                frame = .deliver(Deliver(subscriptionID: id, encoded: encoded))
            } else {
                let (offsets, records) = try reader.records(count, withOffsets: true)
                let delivered = zip(offsets, records).map { DeliveredRecord(offset: $0, record: $1) }
                frame = .deliver(Deliver(subscriptionID: id, records: delivered))
            }
        case .credit:
            let id = try reader.integer("subscriptionID", as: UInt32.self)
            let credit = try reader.integer("credit", as: UInt32.self)
            frame = .credit(Credit(subscriptionID: id, credit: credit))
        case .commit:
            let group = try reader.string("group")
            let topic = try reader.string("topic")
            let offset = try reader.integer("offset", as: Int64.self)
            frame = .commit(Commit(group: group, topic: topic, offset: offset))
        case .commitOK:
            frame = .commitOK
        case .unsubscribe:
            frame = .unsubscribe(subscriptionID: try reader.integer("subscriptionID", as: UInt32.self))
        case .unsubscribeOK:
            frame = .unsubscribeOK
        case .listTopics:
            frame = .listTopics
        case .topicList:
            let count = try reader.count("topicCount", minimumElementSize: MinimumSize.topicInfo)
            var topics: [TopicInfo] = []
            topics.reserveCapacity(count)
            for index in 0..<count {
                let name = try reader.string("topics[\(index)].name")
                let sensitivity = try reader.string("topics[\(index)].sensitivity")
                let startOffset = try reader.integer("topics[\(index)].startOffset", as: Int64.self)
                let endOffset = try reader.integer("topics[\(index)].endOffset", as: Int64.self)
                let access = try reader.integer("topics[\(index)].access", as: UInt8.self)
                topics.append(
                    TopicInfo(
                        name: name,
                        sensitivity: sensitivity,
                        startOffset: startOffset,
                        endOffset: endOffset,
                        access: access
                    )
                )
            }
            frame = .topicList(topics)
        case .ping:
            frame = .ping(nonce: try reader.integer("nonce", as: UInt64.self))
        case .pong:
            frame = .pong(nonce: try reader.integer("nonce", as: UInt64.self))
        case .error:
            let code = try reader.integer("code", as: UInt16.self)
            let retry = try reader.integer("retryAfterMillis", as: UInt32.self)
            let message = try reader.string("message")
            frame = .error(ErrorFrame(code: ErrorCode(rawValue: code), message: message, retryAfterMillis: retry))
        case .quarantineReplay:
            let count = try reader.count("offsetCount", minimumElementSize: MinimumSize.replayOffset)
            var offsets: [Int64] = []
            offsets.reserveCapacity(count)
            for index in 0..<count {
                offsets.append(try reader.integer("offsets[\(index)]", as: Int64.self))
            }
            frame = .quarantineReplay(offsets)
        case .replayResult:
            let count = try reader.count("resultCount", minimumElementSize: MinimumSize.replayResult)
            var results: [ReplayResult] = []
            results.reserveCapacity(count)
            for index in 0..<count {
                let quarantineOffset = try reader.integer("results[\(index)].quarantineOffset", as: Int64.self)
                let outcomeOffset = reader.bodyOffset
                let outcomeValue = try reader.integer("results[\(index)].outcome", as: UInt8.self)
                guard let outcome = ReplayOutcome(rawValue: outcomeValue) else {
                    throw reader.malformed(
                        "field 'results[\(index)].outcome' at body offset \(outcomeOffset) is \(outcomeValue); "
                            + "known outcomes are 0 REPLAYED, 1 STILL_QUARANTINED, 2 NOT_FOUND, 3 INVALID"
                    )
                }
                let flags = try reader.integer("results[\(index)].flags", as: UInt8.self)
                let topic = try reader.string("results[\(index)].topic")
                let newOffset = try reader.integer("results[\(index)].newOffset", as: Int64.self)
                let reason = try reader.string("results[\(index)].reason")
                let message = try reader.string("results[\(index)].message")
                results.append(
                    ReplayResult(
                        quarantineOffset: quarantineOffset,
                        outcome: outcome,
                        flags: flags,
                        topic: topic,
                        newOffset: newOffset,
                        reason: reason,
                        message: message
                    )
                )
            }
            frame = .replayResult(results)
        case .adminReload:
            frame = .adminReload
        case .reloadOK:
            let policyVersion = try reader.string("policyVersion")
            let message = try reader.string("message")
            frame = .reloadOK(ReloadOK(policyVersion: policyVersion, message: message))
        case .limitsQuery:
            let limiter = try reader.string("limiter")
            let key = try reader.string("key")
            frame = .limitsQuery(LimitsQuery(limiter: limiter, key: key))
        case .limitsState:
            let count = try reader.count("stateCount", minimumElementSize: MinimumSize.limitState)
            var states: [LimitState] = []
            states.reserveCapacity(count)
            for index in 0..<count {
                let limiter = try reader.string("states[\(index)].limiter")
                let direction = try reader.integer("states[\(index)].direction", as: UInt8.self)
                let keyKind = try reader.string("states[\(index)].keyKind")
                let action = try reader.string("states[\(index)].action")
                let limit = try reader.string("states[\(index)].limit")
                let keysHeld = try reader.integer("states[\(index)].keysHeld", as: UInt32.self)
                let stateKey = try reader.string("states[\(index)].stateKey")
                let used = try reader.integer("states[\(index)].used", as: Int64.self)
                let capacity = try reader.integer("states[\(index)].capacity", as: Int64.self)
                let retry = try reader.integer("states[\(index)].retryAfterMillis", as: UInt32.self)
                states.append(LimitState(
                    limiter: limiter, direction: direction, keyKind: keyKind, action: action, limit: limit,
                    keysHeld: keysHeld, stateKey: stateKey, used: used, capacity: capacity, retryAfterMillis: retry
                ))
            }
            frame = .limitsState(states)
        case .describeTopics:
            frame = .describeTopics(topic: try reader.string("topic"))
        case .topicDescriptions:
            let count = try reader.count("topicCount", minimumElementSize: MinimumSize.topicDescription)
            var topics: [TopicDescription] = []
            topics.reserveCapacity(count)
            for index in 0..<count {
                let name = try reader.string("topics[\(index)].name")
                let sensitivity = try reader.string("topics[\(index)].sensitivity")
                let access = try reader.integer("topics[\(index)].access", as: UInt8.self)
                let purposes = try reader.strings("topics[\(index)].purposes")
                let scopes = try reader.strings("topics[\(index)].consentScopes")
                let retentionBytes = try reader.integer("topics[\(index)].retentionBytes", as: Int64.self)
                let retentionMillis = try reader.integer("topics[\(index)].retentionMillis", as: Int64.self)
                let fsync = try reader.string("topics[\(index)].fsync")
                let compression = try reader.string("topics[\(index)].compression")
                let segmentBytes = try reader.integer("topics[\(index)].segmentBytes", as: Int64.self)
                let logBytes = try reader.integer("topics[\(index)].logBytes", as: Int64.self)
                let segmentCount = try reader.integer("topics[\(index)].segmentCount", as: UInt32.self)
                let startOffset = try reader.integer("topics[\(index)].startOffset", as: Int64.self)
                let endOffset = try reader.integer("topics[\(index)].endOffset", as: Int64.self)
                topics.append(TopicDescription(
                    name: name, sensitivity: sensitivity, access: access, purposes: purposes, consentScopes: scopes,
                    retentionBytes: retentionBytes, retentionMillis: retentionMillis, fsync: fsync,
                    compression: compression, segmentBytes: segmentBytes, logBytes: logBytes,
                    segmentCount: segmentCount, startOffset: startOffset, endOffset: endOffset
                ))
            }
            frame = .topicDescriptions(topics)
        case .groupsQuery:
            frame = .groupsQuery(group: try reader.string("group"))
        case .groupsState:
            let count = try reader.count("groupCount", minimumElementSize: MinimumSize.groupOffset)
            var offsets: [GroupOffset] = []
            offsets.reserveCapacity(count)
            for index in 0..<count {
                let group = try reader.string("groups[\(index)].group")
                let topic = try reader.string("groups[\(index)].topic")
                let committed = try reader.integer("groups[\(index)].committedOffset", as: Int64.self)
                let startOffset = try reader.integer("groups[\(index)].startOffset", as: Int64.self)
                let endOffset = try reader.integer("groups[\(index)].endOffset", as: Int64.self)
                let lag = try reader.integer("groups[\(index)].lag", as: Int64.self)
                offsets.append(GroupOffset(
                    group: group, topic: topic, committedOffset: committed, startOffset: startOffset,
                    endOffset: endOffset, lag: lag
                ))
            }
            frame = .groupsState(offsets)
        case .statsQuery:
            frame = .statsQuery
        case .brokerStats:
            let brokerVersion = try reader.string("brokerVersion")
            let startedAt = try reader.integer("startedAtMillis", as: Int64.self)
            let uptime = try reader.integer("uptimeMillis", as: Int64.self)
            let listenAddress = try reader.string("listenAddress")
            let policyVersion = try reader.string("policyVersion")
            let connections = try reader.integer("connections", as: UInt32.self)
            let topicCount = try reader.integer("topicCount", as: UInt32.self)
            let logBytes = try reader.integer("logBytes", as: Int64.self)
            let quarantineRecords = try reader.integer("quarantineRecords", as: Int64.self)
            let quarantineBytes = try reader.integer("quarantineBytes", as: Int64.self)
            let auditRecords = try reader.integer("auditRecords", as: Int64.self)
            let groupCount = try reader.integer("groupCount", as: UInt32.self)
            let commitCount = try reader.integer("commitCount", as: UInt32.self)
            let worstLag = try reader.integer("worstLag", as: Int64.self)
            let worstLagGroup = try reader.string("worstLagGroup")
            let worstLagTopic = try reader.string("worstLagTopic")
            frame = .brokerStats(BrokerStats(
                brokerVersion: brokerVersion, startedAtMillis: startedAt, uptimeMillis: uptime,
                listenAddress: listenAddress, policyVersion: policyVersion, connections: connections,
                topicCount: topicCount, logBytes: logBytes, quarantineRecords: quarantineRecords,
                quarantineBytes: quarantineBytes, auditRecords: auditRecords, groupCount: groupCount,
                commitCount: commitCount, worstLag: worstLag, worstLagGroup: worstLagGroup, worstLagTopic: worstLagTopic
            ))
        }
        try reader.finish()
        return frame
    }
}

/// Reads the fields of one frame body, checking the remaining bytes before every read.
///
/// Errors are MALFORMED_FRAME and say which field of which opcode failed at which body offset.
struct BodyReader {
    var buffer: ByteBuffer
    let opcode: Opcode
    private let startIndex: Int

    init(buffer: ByteBuffer, opcode: Opcode) {
        self.buffer = buffer
        self.opcode = opcode
        self.startIndex = buffer.readerIndex
    }

    /// Offset of the next unread byte from the start of the body.
    var bodyOffset: Int { self.buffer.readerIndex - self.startIndex }

    /// A MALFORMED_FRAME error for this body; `detail` should name the field and its body offset (counted from the
    /// first body byte; add 14 for the offset in the frame).
    func malformed(_ detail: String) -> WireProtocolError {
        WireProtocolError(
            code: .malformedFrame,
            message: "\(self.opcode) body: \(detail)"
        )
    }

    private func truncated(_ field: String, needs: Int) -> WireProtocolError {
        self.malformed(
            "field '\(field)' at body offset \(self.bodyOffset) needs \(needs) bytes but only "
                + "\(self.buffer.readableBytes) remain (body length \(self.bodyOffset + self.buffer.readableBytes))"
        )
    }

    /// Appends PUBLISH_ACK results read at once from the bytes, while the next one (up to `count` in all) is whole
    /// and its message is empty: its fixed fields (docs/PROTOCOL.md, `MinimumSize.publishResult` bytes) are loaded
    /// without a bounds check and a ByteBuffer access each, and no String is decoded. Stops at the first result
    /// with a message or one cut short; the caller reads that one field by field.
    mutating func emptyMessagePublishResults(into results: inout [PublishResult], upTo count: Int) {
        let size = FrameCodec.MinimumSize.publishResult
        let consumed = self.buffer.withUnsafeReadableBytes { raw -> Int in
            var position = 0
            while results.count < count, raw.count - position >= size,
                raw.loadUnaligned(fromByteOffset: position + 15, as: UInt16.self) == 0
            {
                results.append(
                    PublishResult(
                        code: ErrorCode(rawValue: UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: position, as: UInt16.self))),
                        offset: Int64(bigEndian: raw.loadUnaligned(fromByteOffset: position + 2, as: Int64.self)),
                        flags: raw[position + 10],
                        retryAfterMillis: UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: position + 11, as: UInt32.self))
                    )
                )
                position += size
            }
            return position
        }
        self.buffer.moveReaderIndex(forwardBy: consumed)
    }

    /// A big-endian fixed-width integer.
    mutating func integer<T: FixedWidthInteger>(
        _ field: @autoclosure () -> String,
        as type: T.Type = T.self
    ) throws(WireProtocolError) -> T {
        guard let value = self.buffer.readInteger(as: T.self) else {
            throw self.truncated(field(), needs: MemoryLayout<T>.size)
        }
        return value
    }

    /// A u16 byte length followed by that many bytes of valid UTF-8.
    /// ``string(_:)``, returning `known` itself when the field has its bytes (they were checked when it was made).
    mutating func string(_ field: @autoclosure () -> String, known: String) throws(WireProtocolError) -> String {
        let matches: Bool = self.buffer.withUnsafeReadableBytes { raw in
            guard raw.count >= 2 else { return false }
            let length = Int(UInt16(raw[0]) << 8 | UInt16(raw[1]))
            guard length == known.utf8.count, raw.count - 2 >= length else { return false }
            var known = known
            return known.withUTF8 { length == 0 || memcmp($0.baseAddress!, raw.baseAddress! + 2, length) == 0 }
        }
        guard matches else { return try self.string(field()) }
        self.buffer.moveReaderIndex(forwardBy: 2 + known.utf8.count)
        return known
    }

    mutating func string(_ field: @autoclosure () -> String) throws(WireProtocolError) -> String {
        let lengthOffset = self.bodyOffset
        let length = Int(try self.integer("\(field()).length", as: UInt16.self))
        guard length <= self.buffer.readableBytes else {
            throw self.malformed(
                "field '\(field())' at body offset \(lengthOffset) declares \(length) UTF-8 bytes but only "
                    + "\(self.buffer.readableBytes) remain"
            )
        }
        let decoded: String? = self.buffer.withUnsafeReadableBytes { raw in
            let bytes = UnsafeRawBufferPointer(rebasing: raw.prefix(length))
            // String(decoding:) repairs invalid input with U+FFFD; the result equals the input only if it was valid.
            var string = String(decoding: bytes, as: UTF8.self)
            return string.withUTF8 { $0.elementsEqual(bytes) } ? string : nil
        }
        guard let decoded else {
            let stringOffset = self.bodyOffset
            let badIndex = self.buffer.withUnsafeReadableBytes { raw in
                Self.firstInvalidUTF8Index(UnsafeRawBufferPointer(rebasing: raw.prefix(length)))
            }
            throw self.malformed(
                "field '\(field())' at body offset \(stringOffset) is not valid UTF-8 "
                    + "(invalid byte at body offset \(stringOffset + badIndex))"
            )
        }
        self.buffer.moveReaderIndex(forwardBy: length)
        return decoded
    }

    /// A u32 byte length followed by that many bytes, returned as a slice of the body.
    mutating func blob(_ field: @autoclosure () -> String) throws(WireProtocolError) -> ByteBuffer {
        let lengthOffset = self.bodyOffset
        let length = try self.integer("\(field()).length", as: UInt32.self)
        return try self.slice(field(), length: Int(length), lengthOffset: lengthOffset)
    }

    /// An i32 length (-1 = no key) followed by that many bytes.
    mutating func key(_ field: @autoclosure () -> String) throws(WireProtocolError) -> ByteBuffer? {
        let lengthOffset = self.bodyOffset
        let length = try self.integer("\(field()).length", as: Int32.self)
        if length == -1 { return nil }
        guard length >= 0 else {
            throw self.malformed(
                "field '\(field())' at body offset \(lengthOffset) has length \(length); only -1 (no key) or 0 and "
                    + "above are allowed"
            )
        }
        return try self.slice(field(), length: Int(length), lengthOffset: lengthOffset)
    }

    /// `field` is an autoclosure like everywhere else here: the names (`records[3].headers[1].value`) are only
    /// built for an error message, never for a field that decodes.
    private mutating func slice(_ field: @autoclosure () -> String, length: Int, lengthOffset: Int)
        throws(WireProtocolError) -> ByteBuffer
    {
        guard let slice = self.buffer.readSlice(length: length) else {
            throw self.malformed(
                "field '\(field())' at body offset \(lengthOffset) declares \(length) bytes but only "
                    + "\(self.buffer.readableBytes) remain"
            )
        }
        return slice
    }

    /// A u32 element count, refused unless `count * minimumElementSize` bytes remain: a hostile count cannot make
    /// the decoder allocate more than the body could possibly describe.
    mutating func count(_ field: @autoclosure () -> String, minimumElementSize: Int) throws(WireProtocolError) -> Int {
        let countOffset = self.bodyOffset
        let count = Int(try self.integer(field(), as: UInt32.self))
        let remaining = self.buffer.readableBytes
        guard count <= remaining / minimumElementSize else {
            throw self.malformed(
                "field '\(field())' at body offset \(countOffset) declares \(count) elements of at least "
                    + "\(minimumElementSize) bytes each, but only \(remaining) bytes remain"
            )
        }
        return count
    }

    /// An `array<string>`: a u32 count (checked against the remaining bytes at 2 bytes per string), then the strings.
    mutating func strings(_ field: @autoclosure () -> String) throws(WireProtocolError) -> [String] {
        let count = try self.count("\(field()).count", minimumElementSize: FrameCodec.MinimumSize.string)
        var strings: [String] = []
        strings.reserveCapacity(count)
        for index in 0..<count {
            strings.append(try self.string("\(field())[\(index)]"))
        }
        return strings
    }

    /// Whether every byte is below 0x80 (eight at a time).
    @inline(__always)
    static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        let count = bytes.count
        var index = 0
        var high: UInt64 = 0
        while count - index >= 8 {
            high |= bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            high |= UInt64(bytes[index])
            index += 1
        }
        return high & 0x8080_8080_8080_8080 == 0
    }

    /// Whether two byte ranges hold the same bytes.
    @inline(__always)
    private static func equal(_ lhs: UnsafeRawBufferPointer, _ rhs: UnsafeRawBufferPointer) -> Bool {
        lhs.count == rhs.count && (lhs.count == 0 || memcmp(lhs.baseAddress!, rhs.baseAddress!, lhs.count) == 0)
    }

    /// The `count` records that end a PUBLISH or DELIVER body (each after its i64 offset `withOffsets`, as in a
    /// DELIVER): in one pass over the bytes when they are well formed, else field by field, which names the failure
    /// exactly as it always has. The body must end with them (`finish()` still checks).
    /// `count` must have been checked against the body's size (`count(_:minimumElementSize:)`).
    mutating func records(
        _ count: Int, withOffsets: Bool
    ) throws(WireProtocolError) -> (offsets: [Int64], records: [WireRecord]) {
        if let decoded = self.wellFormedRecords(count, withOffsets: withOffsets) { return decoded }
        return try self.fieldByFieldRecords(count, withOffsets: withOffsets)
    }

    /// `records(_:withOffsets:)` one field at a time, each read naming its field if it fails.
    mutating func fieldByFieldRecords(
        _ count: Int, withOffsets: Bool
    ) throws(WireProtocolError) -> (offsets: [Int64], records: [WireRecord]) {
        var offsets: [Int64] = []
        var records: [WireRecord] = []
        records.reserveCapacity(count)
        for index in 0..<count {
            if withOffsets { offsets.append(try self.integer("records[\(index)].offset", as: Int64.self)) }
            records.append(try self.record("records[\(index)]"))
        }
        return (offsets, records)
    }

    /// The records of `records(_:withOffsets:)` decoded in one pass over the bytes up to the end of the body, or nil
    /// (nothing consumed) when any check of the field-by-field decode would fail, or bytes would be left over. Field
    /// by field is most of the work per record: about 25 `ByteBuffer` calls and a header name validated per header;
    /// here the header names repeat, so each distinct one is validated once per frame. (A PUBLISH is the broker's
    /// side of this, a DELIVER the client's.)
    ///
    /// With `build` false the bytes are checked exactly the same way but nothing is built (no slices, no arrays of
    /// records): the arrays returned are empty. ``wellFormedDeliveredRecords(_:)`` keeps a DELIVER that way.
    mutating func wellFormedRecords(
        _ count: Int, withOffsets: Bool, build: Bool = true
    ) -> (offsets: [Int64], records: [WireRecord])? {
        let buffer = self.buffer
        let base = buffer.readerIndex
        let minimumSize = withOffsets ? FrameCodec.MinimumSize.deliveredRecord : FrameCodec.MinimumSize.record
        let result: ([Int64], [WireRecord])? = buffer.withUnsafeReadableBytes { raw in
            let size = raw.count
            var p = 0
            @inline(__always) func load<T: FixedWidthInteger>(_ type: T.Type) -> T? {
                guard size - p >= MemoryLayout<T>.size else { return nil }
                defer { p += MemoryLayout<T>.size }
                return T(bigEndian: raw.loadUnaligned(fromByteOffset: p, as: T.self))
            }
            @inline(__always) func slice(_ length: Int) -> ByteBuffer? {
                guard length >= 0, length <= size - p else { return nil }
                defer { p += length }
                return buffer.getSlice(at: base + p, length: length)
            }
            /// `slice` without the slice: whether `length` bytes remain, moving past them.
            @inline(__always) func skip(_ length: Int) -> Bool {
                guard length >= 0, length <= size - p else { return false }
                p += length
                return true
            }
            guard count <= size / minimumSize else { return nil }
            var names: [(bytes: UnsafeRawBufferPointer, name: String)] = []
            /// For each header position, the id in `names` of the name the last record had there (-1: none).
            var namesByPosition: [Int] = []
            var offsets: [Int64] = []
            if withOffsets && build { offsets.reserveCapacity(count) }
            var records: [WireRecord] = []
            if build { records.reserveCapacity(count) }
            for _ in 0..<count {
                if withOffsets {
                    guard let offset = load(Int64.self) else { return nil }
                    if build { offsets.append(offset) }
                }
                guard let keyLength = load(Int32.self) else { return nil }
                var key: ByteBuffer? = nil
                if keyLength != -1 {
                    if build {
                        guard let bytes = slice(Int(keyLength)) else { return nil }
                        key = bytes
                    } else {
                        guard skip(Int(keyLength)) else { return nil }
                    }
                }
                guard let headerCount32 = load(UInt32.self) else { return nil }
                let headerCount = Int(headerCount32)
                guard headerCount <= (size - p) / FrameCodec.MinimumSize.header else { return nil }
                var headers: [WireHeader] = []
                if build { headers.reserveCapacity(headerCount) }
                for position in 0..<headerCount {
                    guard let nameLength16 = load(UInt16.self) else { return nil }
                    let nameLength = Int(nameLength16)
                    guard nameLength <= size - p else { return nil }
                    let bytes = UnsafeRawBufferPointer(rebasing: raw[p..<p + nameLength])
                    p += nameLength
                    if !build && Self.isASCII(bytes) {
                        // Checking only: ASCII is valid UTF-8, and no `String` is wanted.
                        guard let valueLength = load(UInt32.self), skip(Int(valueLength)) else { return nil }
                        continue
                    }
                    // Records of one frame mostly carry the same names in the same order: try the name the
                    // previous record had at this position first, then the others seen in this frame.
                    var id = -1
                    if position < namesByPosition.count {
                        let predicted = namesByPosition[position]
                        if predicted >= 0, Self.equal(names[predicted].bytes, bytes) { id = predicted }
                    }
                    if id < 0, let found = names.firstIndex(where: { Self.equal($0.bytes, bytes) }) {
                        id = found
                    }
                    let name: String
                    if id >= 0 {
                        name = names[id].name
                    } else {
                        var decoded = String(decoding: bytes, as: UTF8.self)
                        guard decoded.withUTF8({ $0.elementsEqual(bytes) }) else { return nil }
                        if names.count < 32 {
                            id = names.count
                            names.append((bytes, decoded))
                        }
                        name = decoded
                    }
                    if position < namesByPosition.count {
                        namesByPosition[position] = id
                    } else if position < 32 {
                        namesByPosition.append(id)
                    }
                    guard let valueLength = load(UInt32.self) else { return nil }
                    if build {
                        guard let value = slice(Int(valueLength)) else { return nil }
                        headers.append(WireHeader(name: name, value: value))
                    } else {
                        guard skip(Int(valueLength)) else { return nil }
                    }
                }
                guard let valueLength = load(UInt32.self) else { return nil }
                if build {
                    guard let value = slice(Int(valueLength)), let timestamp = load(Int64.self) else { return nil }
                    records.append(WireRecord(key: key, headers: headers, value: value, timestamp: timestamp))
                } else {
                    guard skip(Int(valueLength)), load(Int64.self) != nil else { return nil }
                }
            }
            guard p == size else { return nil }
            return (offsets, records)
        }
        guard let (offsets, records) = result else { return nil }
        self.buffer.moveReaderIndex(forwardBy: self.buffer.readableBytes)
        return (offsets, records)
    }

    /// The `count` records that end a DELIVER body, checked in one pass exactly as ``records(_:withOffsets:)`` checks
    /// them, and kept in their wire form (one slice of the body, no `DeliveredRecord` per record); nil (nothing
    /// consumed) when that decode would refuse them.
    mutating func wellFormedDeliveredRecords(_ count: Int) -> EncodedDeliveredRecords? {
        let bytes = self.buffer
        guard self.wellFormedRecords(count, withOffsets: true, build: false) != nil else { return nil }
        return EncodedDeliveredRecords(count: count, bytes: bytes)
    }

    /// One record: key, headers, value, timestamp.
    mutating func record(_ prefix: @autoclosure () -> String) throws(WireProtocolError) -> WireRecord {
        let key = try self.key("\(prefix()).key")
        let headerCount = try self.count(
            "\(prefix()).headerCount",
            minimumElementSize: FrameCodec.MinimumSize.header
        )
        var headers: [WireHeader] = []
        headers.reserveCapacity(headerCount)
        for index in 0..<headerCount {
            let name = try self.string("\(prefix()).headers[\(index)].name")
            let value = try self.blob("\(prefix()).headers[\(index)].value")
            headers.append(WireHeader(name: name, value: value))
        }
        let value = try self.blob("\(prefix()).value")
        let timestamp = try self.integer("\(prefix()).timestamp", as: Int64.self)
        return WireRecord(key: key, headers: headers, value: value, timestamp: timestamp)
    }

    /// Requires the body to be consumed exactly.
    func finish() throws(WireProtocolError) {
        guard self.buffer.readableBytes == 0 else {
            throw self.malformed(
                "\(self.buffer.readableBytes) trailing bytes after the last field, at body offset \(self.bodyOffset)"
            )
        }
    }

    /// Index of the first byte that does not start a well-formed UTF-8 scalar; only called on invalid input.
    private static func firstInvalidUTF8Index(_ bytes: UnsafeRawBufferPointer) -> Int {
        var parser = Unicode.UTF8.ForwardParser()
        var iterator = bytes.makeIterator()
        var index = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let scalar):
                index += scalar.count
            case .error:
                return index
            case .emptyInput:
                return index
            }
        }
    }
}

/// Splits a byte stream into `TaggedFrame`s; rejects oversized lengths before buffering a body.
///
/// Checks, in order: magic (as soon as 2 bytes are there), then, once the whole 14-byte header is there, version,
/// opcode, flags and body length against `maxBodyLength`; only then does it wait for the body. Nothing is consumed
/// until a whole frame is decoded. Every error after the header was read carries the frame's correlation id.
package struct FrameDecoder: NIOSingleStepByteToMessageDecoder {
    /// One decoded frame with its correlation id.
    package typealias InboundOut = TaggedFrame
    /// Largest body accepted; a longer declared length is FRAME_TOO_LARGE before any body byte is buffered.
    package let maxBodyLength: UInt32
    /// The last PUBLISH's topic and header names (``FrameCodec/decodeBody(opcode:body:recent:)``).
    private var recentPublish = FrameCodec.RecentPublish()
    /// Creates a decoder refusing bodies longer than `maxBodyLength` (the broker passes `server.max_frame_bytes`).
    package init(maxBodyLength: UInt32 = WireConstants.defaultMaxBodyLength) {
        self.maxBodyLength = maxBodyLength
    }

    /// The opcode range named in "unknown opcode" errors; opcodes are numbered without gaps.
    private static let lowestOpcode = Opcode.allCases.map(\.rawValue).min()!
    private static let highestOpcode = Opcode.allCases.map(\.rawValue).max()!

    /// The next whole frame, or nil (nothing consumed) when more bytes are needed; throws `WireProtocolError`.
    package mutating func decode(buffer: inout ByteBuffer) throws -> TaggedFrame? {
        let start = buffer.readerIndex
        if let magic = buffer.getInteger(at: start, as: UInt16.self), magic != WireConstants.magic {
            throw WireProtocolError(
                code: .malformedFrame,
                message: "frame bytes 0-1: magic is 0x\(hex(magic, digits: 4)), expected 0x424B (\"BK\"); "
                    + "the peer does not speak the brokerd protocol"
            )
        }
        guard
            let (_, version, opcodeByte, flags, correlationID, bodyLength) = buffer.getMultipleIntegers(
                at: start,
                as: (UInt16, UInt8, UInt8, UInt16, UInt32, UInt32).self
            )
        else {
            return nil
        }
        func failure(_ code: ErrorCode, _ message: String) -> WireProtocolError {
            WireProtocolError(code: code, message: message, correlationID: correlationID)
        }
        guard version == WireConstants.protocolVersion else {
            throw failure(
                .unsupportedVersion,
                "frame byte 2: protocol version \(version) is not supported; this build speaks version "
                    + "\(WireConstants.protocolVersion)"
            )
        }
        guard let opcode = Opcode(rawValue: opcodeByte) else {
            throw failure(
                .malformedFrame,
                "frame byte 3: unknown opcode 0x\(hex(opcodeByte, digits: 2)); version 1 defines "
                    + "0x\(hex(Self.lowestOpcode, digits: 2))...0x\(hex(Self.highestOpcode, digits: 2))"
            )
        }
        guard flags == 0 else {
            throw failure(
                .malformedFrame,
                "frame bytes 4-5: flags are 0x\(hex(flags, digits: 4)) on a \(opcode) frame; version 1 requires 0"
            )
        }
        guard bodyLength <= self.maxBodyLength else {
            throw failure(
                .frameTooLarge,
                "frame bytes 10-13: \(opcode) body length \(bodyLength) exceeds the limit of "
                    + "\(self.maxBodyLength) bytes"
            )
        }
        let frameLength = WireConstants.headerSize + Int(bodyLength)
        guard buffer.readableBytes >= frameLength else {
            return nil
        }
        buffer.moveReaderIndex(forwardBy: WireConstants.headerSize)
        var body = buffer.readSlice(length: Int(bodyLength))!  // length checked just above
        do {
            let frame = try FrameCodec.decodeBody(opcode: opcode, body: &body, recent: &self.recentPublish)
            return TaggedFrame(correlationID: correlationID, flags: flags, frame: frame)
        } catch {
            var error = error
            error.correlationID = correlationID
            throw error
        }
    }

    /// At end of stream: decodes what is whole; a partial frame left at EOF is dropped with the connection.
    package mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> TaggedFrame? {
        try self.decode(buffer: &buffer)
    }
}

/// Encodes `TaggedFrame`s for a channel pipeline.
///
/// Validates first (`FrameCodec.validate`), so an over-long identifier fails the write with INVALID_REQUEST
/// instead of trapping or sending a corrupt frame.
package struct FrameEncoder: MessageToByteEncoder {
    /// The frame to write.
    package typealias OutboundIn = TaggedFrame
    /// Creates an encoder.
    package init() {}
    /// Validates `data`, then appends its bytes to `out`; throws INVALID_REQUEST (writing nothing) when invalid.
    package func encode(data: TaggedFrame, out: inout ByteBuffer) throws {
        try FrameCodec.validate(data)
        FrameCodec.encode(data, into: &out)
    }
}

/// Upper-case hex, zero-padded to `digits`.
private func hex<T: BinaryInteger>(_ value: T, digits: Int) -> String {
    let text = String(value, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, digits - text.count)) + text
}
