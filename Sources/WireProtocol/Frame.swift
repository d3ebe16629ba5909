#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore

/// Protocol constants shared by the encoder, the decoder and docs/PROTOCOL.md.
package enum WireConstants {
    /// The two magic bytes every frame starts with: ASCII "BK".
    package static let magic: UInt16 = 0x424B
    /// The protocol version this build speaks.
    package static let protocolVersion: UInt8 = 1
    /// Size of the fixed frame header in bytes.
    package static let headerSize = 14
    /// Default maximum body length (16 MiB).
    package static let defaultMaxBodyLength: UInt32 = 16 * 1024 * 1024
}

/// Frame opcodes. Values are stable and documented in docs/PROTOCOL.md.
package enum Opcode: UInt8, Sendable, CaseIterable {
    case hello = 0x01
    case helloOK = 0x02
    case publish = 0x03
    case publishAck = 0x04
    case subscribe = 0x05
    case subscribeOK = 0x06
    case deliver = 0x07
    case credit = 0x08
    case commit = 0x09
    case commitOK = 0x0A
    case unsubscribe = 0x0B
    case unsubscribeOK = 0x0C
    case listTopics = 0x0D
    case topicList = 0x0E
    case ping = 0x0F
    case pong = 0x10
    case error = 0x11
    case quarantineReplay = 0x12
    case replayResult = 0x13
    case adminReload = 0x14
    case reloadOK = 0x15
    case limitsQuery = 0x16
    case limitsState = 0x17
    case describeTopics = 0x18
    case topicDescriptions = 0x19
    case groupsQuery = 0x1A
    case groupsState = 0x1B
    case statsQuery = 0x1C
    case brokerStats = 0x1D
}

extension Opcode: CustomStringConvertible {
    /// The upper-snake-case name used in docs/PROTOCOL.md, error messages and logs (e.g. `PUBLISH_ACK`).
    package var description: String {
        switch self {
        case .hello: "HELLO"
        case .helloOK: "HELLO_OK"
        case .publish: "PUBLISH"
        case .publishAck: "PUBLISH_ACK"
        case .subscribe: "SUBSCRIBE"
        case .subscribeOK: "SUBSCRIBE_OK"
        case .deliver: "DELIVER"
        case .credit: "CREDIT"
        case .commit: "COMMIT"
        case .commitOK: "COMMIT_OK"
        case .unsubscribe: "UNSUBSCRIBE"
        case .unsubscribeOK: "UNSUBSCRIBE_OK"
        case .listTopics: "LIST_TOPICS"
        case .topicList: "TOPIC_LIST"
        case .ping: "PING"
        case .pong: "PONG"
        case .error: "ERROR"
        case .quarantineReplay: "QUARANTINE_REPLAY"
        case .replayResult: "REPLAY_RESULT"
        case .adminReload: "ADMIN_RELOAD"
        case .limitsQuery: "LIMITS_QUERY"
        case .limitsState: "LIMITS_STATE"
        case .reloadOK: "RELOAD_OK"
        case .describeTopics: "DESCRIBE_TOPICS"
        case .topicDescriptions: "TOPIC_DESCRIPTIONS"
        case .groupsQuery: "GROUPS_QUERY"
        case .groupsState: "GROUPS_STATE"
        case .statsQuery: "STATS_QUERY"
        case .brokerStats: "BROKER_STATS"
        }
    }
}

/// One record header: a UTF-8 name and opaque bytes.
package struct WireHeader: Equatable, Sendable {
    /// The header name, UTF-8 (at most 65,535 bytes on the wire).
    package var name: String
    /// The header value, opaque bytes.
    package var value: ByteBuffer
    /// Creates a header.
    package init(name: String, value: ByteBuffer) {
        self.name = name
        self.value = value
    }
}

/// A record as a producer sends it.
package struct WireRecord: Equatable, Sendable {
    /// Optional key; `nil` is encoded as length -1.
    package var key: ByteBuffer?
    /// The record headers, in order; names may repeat.
    package var headers: [WireHeader]
    /// The payload, opaque to the broker.
    package var value: ByteBuffer
    /// Producer timestamp in milliseconds since the Unix epoch; 0 lets the broker stamp it.
    package var timestamp: Int64
    /// Creates a record; a zero timestamp lets the broker stamp its receive time.
    package init(key: ByteBuffer? = nil, headers: [WireHeader] = [], value: ByteBuffer, timestamp: Int64 = 0) {
        self.key = key
        self.headers = headers
        self.value = value
        self.timestamp = timestamp
    }
}

/// A record as the broker delivers it: the stored record plus its offset.
package struct DeliveredRecord: Equatable, Sendable {
    /// The record's offset in its topic.
    package var offset: Int64
    /// The record as it was stored.
    package var record: WireRecord
    /// Creates a delivered record.
    package init(offset: Int64, record: WireRecord) {
        self.offset = offset
        self.record = record
    }
}

/// HELLO: the first frame a client sends.
package struct Hello: Equatable, Sendable {
    /// The protocol version the client speaks; must be `WireConstants.protocolVersion`.
    package var protocolVersion: UInt8
    /// The principal's client id.
    package var clientID: String
    /// The bearer token, as UTF-8 bytes.
    package var credential: ByteBuffer
    /// Creates a HELLO for this build's protocol version by default.
    package init(protocolVersion: UInt8 = WireConstants.protocolVersion, clientID: String, credential: ByteBuffer) {
        self.protocolVersion = protocolVersion
        self.clientID = clientID
        self.credential = credential
    }
}

/// HELLO_OK: the broker accepted the client.
package struct HelloOK: Equatable, Sendable {
    /// Identifies the session in broker logs; unique per broker process.
    package var sessionID: UInt64
    /// The principal's role.
    package var role: String
    /// The role's clearance class.
    package var clearance: String
    /// Largest frame body the broker accepts, in bytes.
    package var maxFrameBytes: UInt32
    /// Largest number of records one PUBLISH may carry.
    package var maxRecordsPerPublish: UInt32
    /// Creates a HELLO_OK.
    package init(
        sessionID: UInt64,
        role: String,
        clearance: String,
        maxFrameBytes: UInt32,
        maxRecordsPerPublish: UInt32
    ) {
        self.sessionID = sessionID
        self.role = role
        self.clearance = clearance
        self.maxFrameBytes = maxFrameBytes
        self.maxRecordsPerPublish = maxRecordsPerPublish
    }
}

/// PUBLISH: append records to one topic.
///
/// Either built from ``WireRecord`` values (what a client sends) or, as the decoder builds it, over the frame's own
/// bytes (``EncodedPublishRecords``): the broker reads each record in place and writes it into its log batch from
/// there, without a `WireRecord` (and its header array) per record. The two are equal when they carry the same
/// records.
package struct Publish: Equatable, Sendable {
    /// The topic to append to.
    package var topic: String
    private var storage: Storage

    private enum Storage: Sendable {
        case records([WireRecord])
        case encoded(EncodedPublishRecords)
    }

    /// Creates a PUBLISH.
    package init(topic: String, records: [WireRecord]) {
        self.topic = topic
        self.storage = .records(records)
    }

    /// Creates a PUBLISH of records in wire form.
    package init(topic: String, encoded: EncodedPublishRecords) {
        self.topic = topic
        self.storage = .encoded(encoded)
    }

    /// The records, appended in this order at consecutive offsets (decoded when the PUBLISH holds wire-form records).
    package var records: [WireRecord] {
        get {
            switch self.storage {
            case .records(let records): return records
            case .encoded(let encoded): return encoded.decoded()
            }
        }
        set { self.storage = .records(newValue) }
    }

    /// Number of records.
    package var recordCount: Int {
        switch self.storage {
        case .records(let records): return records.count
        case .encoded(let encoded): return encoded.count
        }
    }

    /// The records in wire form: the decoder's view of the frame, or, for a PUBLISH built from `WireRecord`s, those
    /// records laid out as the frame would carry them (their header names must fit a wire string; see
    /// `FrameCodec.validate`).
    package var encodedRecords: EncodedPublishRecords {
        switch self.storage {
        case .encoded(let encoded): return encoded
        case .records(let records): return EncodedPublishRecords(records)
        }
    }

    /// The wire-form records, when the PUBLISH was decoded (or built) from them.
    var wireForm: EncodedPublishRecords? {
        if case .encoded(let encoded) = self.storage { return encoded }
        return nil
    }

    /// Same topic and the same records.
    package static func == (lhs: Publish, rhs: Publish) -> Bool {
        lhs.topic == rhs.topic && lhs.records == rhs.records
    }
}

/// PUBLISH records in wire form (docs/PROTOCOL.md "Record (inside PUBLISH and DELIVER)"), checked exactly as the
/// field-by-field decode checks them, kept as the frame's bytes with where each record is and the header names
/// they use. Reading a record costs no allocation: the per-frame arrays (locations, name ids, distinct names) are
/// all there is.
package struct EncodedPublishRecords: Sendable {
    /// Where one record is in `bytes`.
    struct Location: Sendable {
        /// First byte of the record (its key length).
        var start: UInt32
        /// Position of its header count.
        var headerCount: UInt32
        /// Position of its value length (after the last header).
        var valueLength: UInt32
        /// Index of its first header in `nameIDs`.
        var firstHeader: UInt32
    }

    /// A name id meaning "not in the name table: decode it from the bytes".
    static let uncachedName = UInt16.max
    /// Distinct names kept per frame (the records of one PUBLISH repeat a few names).
    static let maxNames = 32

    /// Where the records and their headers' names are, in one object: a copy of these records (the frame, the
    /// sorter, a publish group's part) retains the bytes and this, not three arrays besides. Each retain and release
    /// is an atomic instruction, and on the event loop of a pipelining producer they took a third of its time
    /// (docs/benchmarks/HISTORY.md, round 17).
    final class Layout: Sendable {
        let locations: [Location]
        /// Distinct header names, in first-seen order (at most `maxNames`), each valid UTF-8.
        let names: [String]
        /// For every header of every record, in order: its index in `names`, or `uncachedName`.
        let nameIDs: [UInt16]

        init(locations: [Location], names: [String], nameIDs: [UInt16]) {
            self.locations = locations
            self.names = names
            self.nameIDs = nameIDs
        }
    }

    /// The records' bytes (reader index at the first record's key length), exactly `count` records.
    package let bytes: ByteBuffer
    private let layout: Layout

    /// Number of records.
    package var count: Int { self.layout.locations.count }

    /// Number of headers of all the records together.
    package var headerCount: Int { self.layout.nameIDs.count }

    /// The frame's distinct header names, in first-seen order: a header's ``PublishHeaderIterator/nextByID()`` name
    /// id indexes them (a name past the first `maxNames` has id ``uncachedNameID``).
    package var headerNames: [String] { self.layout.names }

    /// The name id of a header whose name is not in ``headerNames``.
    package static var uncachedNameID: UInt16 { uncachedName }

    /// Checks `count` records that fill `bytes` exactly, as the decoder does; nil when the field-by-field decode
    /// would refuse them (it then names the failure).
    package init?(count: Int, bytes: ByteBuffer) {
        self.init(count: count, bytes: bytes, knownNames: [])
    }

    /// As ``init(count:bytes:)``, given the ``headerNames`` of an earlier frame (a connection's PUBLISHes repeat
    /// the same few names): a name that comes in the same place of the table, with the same bytes, is taken from
    /// there (no string made and checked again), and when all of them match the table is `knownNames` itself (no
    /// array allocated). The result is the same either way.
    package init?(count: Int, bytes: ByteBuffer, knownNames: [String]) {
        guard let layout = Walk.run(count: count, bytes: bytes, knownNames: knownNames) else { return nil }
        self.bytes = bytes
        self.layout = layout
    }

    /// `records` laid out as a PUBLISH carries them.
    package init(_ records: [WireRecord]) {
        var bytes = ByteBuffer()
        FrameCodec.writeRecords(records, into: &bytes)
        guard let layout = Walk.run(count: records.count, bytes: bytes) else {
            preconditionFailure("records written by FrameCodec.writeRecord failed the PUBLISH checks")
        }
        self.bytes = bytes
        self.layout = layout
    }

    /// The records decoded as values (slices of `bytes`).
    package func decoded() -> [WireRecord] {
        var reader = BodyReader(buffer: self.bytes, opcode: .publish)
        do {
            return try reader.fieldByFieldRecords(self.count, withOffsets: false).records
        } catch {
            preconditionFailure("checked PUBLISH records failed to decode: \(error)")
        }
    }

    /// Calls `body` with each record in order, read in place. The views are valid only during the call.
    package func forEach(_ body: (_ index: Int, _ record: PublishRecordView) throws -> Void) rethrows {
        try self.withViews { view in
            for index in 0..<self.count { try body(index, view(index)) }
        }
    }

    /// Calls `body` with record `index`, read in place; the view is valid only during the call.
    package func withRecord<Result>(at index: Int, _ body: (PublishRecordView) throws -> Result) rethrows -> Result {
        try self.withViews { view in try body(view(index)) }
    }

    /// Calls `body` with a function that reads record `index` in place; the views are valid only during the call.
    package func withViews<Result>(_ body: (_ view: (Int) -> PublishRecordView) throws -> Result) rethrows -> Result {
        try self.bytes.withUnsafeReadableBytes { raw in
            try self.layout.names.withUnsafeBufferPointer { names in
                try self.layout.nameIDs.withUnsafeBufferPointer { nameIDs in
                    try body { PublishRecordView(raw, self.layout.locations[$0], names, nameIDs) }
                }
            }
        }
    }

    /// A slice of `bytes` for `part`, a range of a view of these records (the key or a header value).
    package func slice(_ part: UnsafeRawBufferPointer, of record: PublishRecordView) -> ByteBuffer {
        let offset = part.baseAddress.map { $0 - record.all.baseAddress! } ?? 0
        return self.bytes.getSlice(at: self.bytes.readerIndex + offset, length: part.count)!
    }

    /// Record `index` as values (slices of `bytes`).
    package func record(at index: Int) -> WireRecord {
        self.withRecord(at: index) { view in
            var headers: [WireHeader] = []
            headers.reserveCapacity(view.headerCount)
            view.forEachHeader { _, name, value in
                headers.append(WireHeader(name: name, value: self.slice(value, of: view)))
                return true
            }
            return WireRecord(
                key: view.key.map { self.slice($0, of: view) }, headers: headers, value: self.slice(view.value, of: view),
                timestamp: view.timestamp
            )
        }
    }

    /// One pass over the records: the checks of the field-by-field decode, the locations and the name table.
    private struct Walk {
        var locations: [Location] = []
        /// The names table; while every name so far is the one `knownNames` has in its place, those are not
        /// copied here (`fromKnown` of them) and this stays empty.
        var names: [String] = []
        var nameIDs: [UInt16] = []
        /// Where each name of the table is first seen in the bytes (one per name, in the caller's stack memory).
        private let nameSpans: UnsafeMutableBufferPointer<(start: Int, length: Int)>
        private var nameCount = 0
        private let knownNames: [String]
        /// How many names (the first ones) are `knownNames`'; -1 once one was not (then `names` holds them all).
        private var fromKnown = 0

        private init(nameSpans: UnsafeMutableBufferPointer<(start: Int, length: Int)>, knownNames: [String]) {
            self.nameSpans = nameSpans
            self.knownNames = knownNames
        }

        /// The layout of `count` records in `bytes` (locations, names, name ids), or nil when they fail the checks.
        static func run(count: Int, bytes: ByteBuffer, knownNames: [String] = []) -> Layout? {
            withUnsafeTemporaryAllocation(of: (start: Int, length: Int).self, capacity: maxNames) { spans in
                var walk = Walk(nameSpans: spans, knownNames: knownNames)
                guard bytes.withUnsafeReadableBytes({ walk.walk(count, $0) }) else { return nil }
                if walk.fromKnown >= 0 {
                    walk.names = walk.fromKnown == knownNames.count ? knownNames : Array(knownNames[..<walk.fromKnown])
                }
                // Moved out, not copied (a copy of the walk and its release cost a request about 230 instructions
                // of retains and releases, callgrind).
                var (locations, names, nameIDs): ([Location], [String], [UInt16]) = ([], [], [])
                swap(&locations, &walk.locations)
                swap(&names, &walk.names)
                swap(&nameIDs, &walk.nameIDs)
                return Layout(locations: locations, names: names, nameIDs: nameIDs)
            }
        }

        private mutating func walk(_ count: Int, _ raw: UnsafeRawBufferPointer) -> Bool {
            let size = raw.count
            // Positions are kept as UInt32: a ByteBuffer holds at most UInt32.max bytes.
            guard size <= Int(UInt32.max), count <= size / FrameCodec.MinimumSize.record else { return false }
            var p = 0
            @inline(__always) func load<T: FixedWidthInteger>(_ type: T.Type) -> T? {
                guard size - p >= MemoryLayout<T>.size else { return nil }
                defer { p += MemoryLayout<T>.size }
                return T(bigEndian: raw.loadUnaligned(fromByteOffset: p, as: T.self))
            }
            @inline(__always) func skip(_ length: Int) -> Bool {
                guard length >= 0, length <= size - p else { return false }
                p += length
                return true
            }
            self.locations.reserveCapacity(count)
            var previousFirst = 0
            var previousCount = 0
            for _ in 0..<count {
                let start = p
                guard let keyLength = load(Int32.self) else { return false }
                if keyLength != -1 {
                    guard skip(Int(keyLength)) else { return false }
                }
                let headerCountAt = p
                guard let headerCount32 = load(UInt32.self) else { return false }
                let headerCount = Int(headerCount32)
                guard headerCount <= (size - p) / FrameCodec.MinimumSize.header else { return false }
                let firstHeader = self.nameIDs.count
                if firstHeader == 0 && headerCount > 0 {
                    self.nameIDs.reserveCapacity(min(headerCount * count, (size - p) / FrameCodec.MinimumSize.header))
                }
                for position in 0..<headerCount {
                    guard let nameLength16 = load(UInt16.self) else { return false }
                    let nameLength = Int(nameLength16)
                    guard nameLength <= size - p else { return false }
                    let predicted = position < previousCount ? self.nameIDs[previousFirst + position] : uncachedName
                    guard let id = self.nameID(raw, at: p, length: nameLength, predicted: predicted) else {
                        return false
                    }
                    self.nameIDs.append(id)
                    p += nameLength
                    guard let valueLength = load(UInt32.self), skip(Int(valueLength)) else { return false }
                }
                previousFirst = firstHeader
                previousCount = headerCount
                let valueLengthAt = p
                guard let valueLength = load(UInt32.self), skip(Int(valueLength)), load(Int64.self) != nil else {
                    return false
                }
                self.locations.append(
                    Location(
                        start: UInt32(start), headerCount: UInt32(headerCountAt), valueLength: UInt32(valueLengthAt),
                        firstHeader: UInt32(firstHeader)
                    )
                )
            }
            return p == size
        }

        /// The id of the name at `position`: the predicted one when it matches, else a table search, else a new
        /// entry (validated as UTF-8 once); nil when the name is not valid UTF-8.
        @inline(__always)
        private mutating func nameID(_ raw: UnsafeRawBufferPointer, at position: Int, length: Int, predicted: UInt16)
            -> UInt16?
        {
            let base = raw.baseAddress!
            if predicted != uncachedName {
                let span = self.nameSpans[Int(predicted)]
                if span.length == length && (length == 0 || memcmp(base + span.start, base + position, length) == 0) {
                    return predicted
                }
            }
            for id in 0..<self.nameCount {
                let span = self.nameSpans[id]
                if span.length == length && (length == 0 || memcmp(base + span.start, base + position, length) == 0) {
                    return UInt16(id)
                }
            }
            let bytes = UnsafeRawBufferPointer(start: base + position, count: length)
            let id = self.nameCount
            if self.fromKnown == id, id < self.knownNames.count, self.knownNames[id].utf8.count == length {
                var known = self.knownNames[id]
                if known.withUTF8({ length == 0 || memcmp($0.baseAddress!, base + position, length) == 0 }) {
                    // The same bytes as a name that was checked as UTF-8 when it was made.
                    self.fromKnown += 1
                    self.nameSpans[id] = (position, length)
                    self.nameCount += 1
                    return UInt16(id)
                }
            }
            var string = String(decoding: bytes, as: UTF8.self)
            guard string.withUTF8({ $0.elementsEqual(bytes) }) else { return nil }
            guard id < maxNames else { return uncachedName }
            if self.fromKnown >= 0 {
                // Room for the usual few distinct names at once (growing from empty reallocated twice or more).
                self.names.reserveCapacity(8)
                self.names.append(contentsOf: self.knownNames[..<self.fromKnown])
                self.fromKnown = -1
            }
            self.names.append(string)
            self.nameSpans[id] = (position, length)
            self.nameCount += 1
            return UInt16(id)
        }
    }
}

/// One PUBLISH record read in place from the frame's bytes (``EncodedPublishRecords/forEach(_:)``): valid only during
/// the call that hands it out.
package struct PublishRecordView {
    /// All the records' bytes (positions in `location` are relative to these).
    let all: UnsafeRawBufferPointer
    private let location: EncodedPublishRecords.Location
    private let names: UnsafeBufferPointer<String>
    private let nameIDs: UnsafeBufferPointer<UInt16>

    init(
        _ all: UnsafeRawBufferPointer, _ location: EncodedPublishRecords.Location, _ names: UnsafeBufferPointer<String>,
        _ nameIDs: UnsafeBufferPointer<UInt16>
    ) {
        self.all = all
        self.location = location
        self.names = names
        self.nameIDs = nameIDs
    }

    @inline(__always)
    private func load<T: FixedWidthInteger>(_ position: Int, as type: T.Type) -> T {
        T(bigEndian: self.all.loadUnaligned(fromByteOffset: position, as: T.self))
    }

    /// The key's bytes, or nil when the record has no key.
    package var key: UnsafeRawBufferPointer? {
        let start = Int(self.location.start)
        let length = Int(self.load(start, as: Int32.self))
        guard length >= 0 else { return nil }
        return UnsafeRawBufferPointer(rebasing: self.all[start + 4..<start + 4 + length])
    }

    /// The key field as the wire carries it: its i32 length (-1: none), then its bytes (the same in a stored record).
    package var keyField: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: self.all[Int(self.location.start)..<Int(self.location.headerCount)])
    }

    /// Where `part` (a range of this view: the key, a header value) starts in the records' bytes.
    package func offset(of part: UnsafeRawBufferPointer) -> Int {
        part.baseAddress.map { $0 - self.all.baseAddress! } ?? 0
    }

    /// Number of headers.
    package var headerCount: Int { Int(self.load(Int(self.location.headerCount), as: UInt32.self)) }

    /// The value's bytes.
    package var value: UnsafeRawBufferPointer {
        let at = Int(self.location.valueLength)
        return UnsafeRawBufferPointer(rebasing: self.all[at + 4..<at + 4 + Int(self.load(at, as: UInt32.self))])
    }

    /// The value field as the wire carries it: its u32 length, then its bytes (the same in a stored record).
    package var valueField: UnsafeRawBufferPointer {
        let at = Int(self.location.valueLength)
        return UnsafeRawBufferPointer(rebasing: self.all[at..<at + 4 + Int(self.load(at, as: UInt32.self))])
    }

    /// Producer timestamp, milliseconds since the Unix epoch; 0 asks the broker to stamp its receive time.
    package var timestamp: Int64 {
        let at = Int(self.location.valueLength)
        return self.load(at + 4 + Int(self.load(at, as: UInt32.self)), as: Int64.self)
    }

    /// The headers, in order (an iterator: a loop over it needs no closure, so the variables it updates need no
    /// run-time exclusivity checks).
    package var headers: PublishHeaderIterator {
        let at = Int(self.location.headerCount)
        return PublishHeaderIterator(
            all: self.all, names: self.names, nameIDs: self.nameIDs, position: at + 4,
            remaining: Int(self.load(at, as: UInt32.self)), nameID: Int(self.location.firstHeader)
        )
    }

    /// Calls `body` with each header's position, name (from the frame's name table; valid UTF-8, checked by the
    /// decoder) and value bytes, in order, until it returns false. (A direct loop: over the iterator, compiled in
    /// this module, each header cost a generic destroy of the optional tuple it returns.)
    package func forEachHeader(_ body: (_ position: Int, _ name: String, _ value: UnsafeRawBufferPointer) -> Bool) {
        var p = Int(self.location.headerCount)
        let count = Int(self.load(p, as: UInt32.self))
        p += 4
        var id = Int(self.location.firstHeader)
        for position in 0..<count {
            let nameLength = Int(self.load(p, as: UInt16.self))
            let nameID = self.nameIDs[id]
            id += 1
            let name =
                nameID == EncodedPublishRecords.uncachedName
                ? String(decoding: UnsafeRawBufferPointer(rebasing: self.all[p + 2..<p + 2 + nameLength]), as: UTF8.self)
                : self.names[Int(nameID)]
            p += 2 + nameLength
            let valueLength = Int(self.load(p, as: UInt32.self))
            let value = UnsafeRawBufferPointer(rebasing: self.all[p + 4..<p + 4 + valueLength])
            p += 4 + valueLength
            guard body(position, name, value) else { return }
        }
    }

    /// Bytes of the headers as the wire carries them (after the count), for sizing: each header's u16 name length,
    /// name, u32 value length and value.
    package var headerBytes: Int { Int(self.location.valueLength) - Int(self.location.headerCount) - 4 }

    /// A header visitor (`HeaderVisitor` of TopicRouter) over this record's headers: name and value of each header
    /// (only those called `named`, when given), in order, until `body` returns false.
    package func visitHeaders(named: String?, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool) {
        guard let named else {
            self.forEachHeader { _, name, value in body(name, value) }
            return
        }
        self.forEachHeader { _, name, value in
            guard name == named else { return true }
            return body(name, value)
        }
    }
}

/// The outcome of one published record.
package struct PublishResult: Equatable, Sendable {
    /// 0 (`ErrorCode.ok`) on success; otherwise a stable error code.
    package var code: ErrorCode
    /// The record's offset on success; -1 otherwise.
    package var offset: Int64
    /// Result flags; bit 0 is `PublishResult.duplicateFlag`, the other bits are 0.
    package var flags: UInt8
    /// For RATE_LIMITED: milliseconds to wait; 0 otherwise.
    package var retryAfterMillis: UInt32
    /// Human-readable detail; empty on success.
    package var message: String
    /// Creates a result.
    package init(code: ErrorCode, offset: Int64, flags: UInt8 = 0, retryAfterMillis: UInt32 = 0, message: String = "") {
        self.code = code
        self.offset = offset
        self.flags = flags
        self.retryAfterMillis = retryAfterMillis
        self.message = message
    }
    /// A successful result for the record appended at `offset`.
    package static func ok(offset: Int64) -> PublishResult { PublishResult(code: .ok, offset: offset) }

    /// Flags bit 0, DUPLICATE: the record's `dedupe-key` was already seen within the topic's dedupe window, so it
    /// was not appended again; `offset` is the original record's (in `__quarantine` when `code` is QUARANTINED).
    package static let duplicateFlag: UInt8 = 0x01

    /// Whether flags bit 0 (DUPLICATE) is set.
    package var isDuplicate: Bool { self.flags & Self.duplicateFlag != 0 }
}

/// PUBLISH_ACK: one result per record, in the order of the PUBLISH.
package struct PublishAck: Equatable, Sendable {
    /// One result per published record, in the PUBLISH's order.
    package var results: [PublishResult]
    /// Creates a PUBLISH_ACK.
    package init(results: [PublishResult]) { self.results = results }
}

/// Where a subscription starts reading.
package enum StartPosition: Equatable, Sendable {
    /// The log's first retained offset.
    case earliest
    /// The log's end: only records published after subscribing.
    case latest
    /// This offset (clamped up to the first retained one).
    case offset(Int64)
    /// The group's committed offset; earliest when the group has none.
    case committed
}

/// SUBSCRIBE: start a push subscription.
package struct Subscribe: Equatable, Sendable {
    /// The topic to read.
    package var topic: String
    /// Consumer group; empty for none.
    package var group: String
    /// Where reading starts.
    package var start: StartPosition
    /// Records the broker may push before more CREDIT arrives.
    package var initialCredit: UInt32
    /// Creates a SUBSCRIBE.
    package init(topic: String, group: String = "", start: StartPosition, initialCredit: UInt32) {
        self.topic = topic
        self.group = group
        self.start = start
        self.initialCredit = initialCredit
    }
}

/// SUBSCRIBE_OK: the subscription exists.
package struct SubscribeOK: Equatable, Sendable {
    /// Names the subscription in DELIVER, CREDIT and UNSUBSCRIBE; per connection.
    package var subscriptionID: UInt32
    /// The first offset that will be delivered.
    package var startOffset: Int64
    /// The topic's next offset at subscribe time (high watermark).
    package var endOffset: Int64
    /// Creates a SUBSCRIBE_OK.
    package init(subscriptionID: UInt32, startOffset: Int64, endOffset: Int64) {
        self.subscriptionID = subscriptionID
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

/// DELIVER: records pushed on a subscription, in offset order.
///
/// Either built from ``DeliveredRecord`` values or, on the broker's delivery path, from records already in their
/// wire form (``EncodedDeliveredRecords``), which the encoder copies as they are. The two are equal when they
/// carry the same records.
package struct Deliver: Equatable, Sendable {
    /// The subscription these records belong to.
    package var subscriptionID: UInt32
    private var storage: Storage

    private enum Storage: Sendable {
        case records([DeliveredRecord])
        case encoded(EncodedDeliveredRecords)
    }

    /// Creates a DELIVER.
    package init(subscriptionID: UInt32, records: [DeliveredRecord]) {
        self.subscriptionID = subscriptionID
        self.storage = .records(records)
    }

    /// Creates a DELIVER of records already in wire form.
    package init(subscriptionID: UInt32, encoded: EncodedDeliveredRecords) {
        self.subscriptionID = subscriptionID
        self.storage = .encoded(encoded)
    }

    /// The records, in ascending offset order (decoded when the DELIVER was built from wire-form records).
    package var records: [DeliveredRecord] {
        get {
            switch self.storage {
            case .records(let records): return records
            case .encoded(let encoded): return encoded.decoded()
            }
        }
        set { self.storage = .records(newValue) }
    }

    /// Number of records.
    package var recordCount: Int {
        switch self.storage {
        case .records(let records): return records.count
        case .encoded(let encoded): return encoded.count
        }
    }

    /// The wire-form records, when the DELIVER was built from them.
    package var encodedRecords: EncodedDeliveredRecords? {
        if case .encoded(let encoded) = self.storage { return encoded }
        return nil
    }

    /// Same subscription and the same records.
    package static func == (lhs: Deliver, rhs: Deliver) -> Bool {
        lhs.subscriptionID == rhs.subscriptionID && lhs.records == rhs.records
    }
}

/// DELIVER records in wire form: for each record its offset (i64), then the record exactly as a DELIVER body
/// carries it (docs/PROTOCOL.md). The broker builds them straight from stored bytes; whoever builds them
/// guarantees the layout and the limits (`FrameCodec.validate` does not look inside).
package struct EncodedDeliveredRecords: Sendable {
    /// Number of records in `bytes`.
    package let count: Int
    /// The records' bytes.
    package let bytes: ByteBuffer
    /// Wraps `count` records in wire form.
    package init(count: Int, bytes: ByteBuffer) {
        self.count = count
        self.bytes = bytes
    }

    /// `records` laid out in wire form (offset, then the record as a DELIVER body carries it).
    package init(_ records: [DeliveredRecord]) {
        var bytes = ByteBuffer()
        for delivered in records {
            bytes.writeInteger(delivered.offset)
            FrameCodec.writeRecord(delivered.record, into: &bytes)
        }
        self.init(count: records.count, bytes: bytes)
    }

    /// The records decoded; traps when the bytes are not `count` well-formed records (a bug in their builder).
    package func decoded() -> [DeliveredRecord] {
        do {
            return try FrameCodec.decodeDeliveredRecords(self)
        } catch {
            preconditionFailure("encoded DELIVER records are malformed: \(error)")
        }
    }

    /// Calls `body` with each record in order, read in place: no `DeliveredRecord`, no slices, no arrays. The
    /// views (and the bytes they point at) are valid only during the call. The bytes must be well formed (a
    /// DELIVER the decoder accepted, or the broker's builder); a record that overruns them traps.
    package func forEach(_ body: (DeliveredRecordView) throws -> Void) rethrows {
        try self.bytes.withUnsafeReadableBytes { raw in
            var p = 0
            @inline(__always) func load<T: FixedWidthInteger>(_ type: T.Type) -> T {
                defer { p += MemoryLayout<T>.size }
                return T(bigEndian: raw.loadUnaligned(fromByteOffset: p, as: T.self))
            }
            @inline(__always) func bytes(_ length: Int) -> UnsafeRawBufferPointer {
                defer { p += length }
                return UnsafeRawBufferPointer(rebasing: raw[p..<p + length])
            }
            for _ in 0..<self.count {
                let offset = load(Int64.self)
                let keyLength = Int(load(Int32.self))
                let key = keyLength == -1 ? nil : bytes(keyLength)
                let headerCount = Int(load(UInt32.self))
                let headersStart = p
                for _ in 0..<headerCount {
                    p += Int(load(UInt16.self))
                    p += Int(load(UInt32.self))
                }
                let headers = UnsafeRawBufferPointer(rebasing: raw[headersStart..<p])
                let value = bytes(Int(load(UInt32.self)))
                let timestamp = load(Int64.self)
                try body(
                    DeliveredRecordView(
                        offset: offset, key: key, headerCount: headerCount, headerBytes: headers, value: value,
                        timestamp: timestamp
                    )
                )
            }
        }
    }
}

/// One delivered record read in place from a DELIVER's bytes (``EncodedDeliveredRecords/forEach(_:)``): valid only
/// during the call that hands it out. ``DeliveredRecord`` is the same record as values that outlive the frame.
package struct DeliveredRecordView {
    /// The record's offset in its topic.
    package let offset: Int64
    /// The key's bytes, or nil when the record has no key.
    package let key: UnsafeRawBufferPointer?
    /// Number of headers.
    package let headerCount: Int
    /// The headers in wire form: per header a u16 name length, the name, a u32 value length, the value.
    private let headerBytes: UnsafeRawBufferPointer
    /// The payload's bytes.
    package let value: UnsafeRawBufferPointer
    /// Producer (or broker) timestamp, milliseconds since the Unix epoch.
    package let timestamp: Int64

    init(
        offset: Int64, key: UnsafeRawBufferPointer?, headerCount: Int, headerBytes: UnsafeRawBufferPointer,
        value: UnsafeRawBufferPointer, timestamp: Int64
    ) {
        self.offset = offset
        self.key = key
        self.headerCount = headerCount
        self.headerBytes = headerBytes
        self.value = value
        self.timestamp = timestamp
    }

    /// Calls `body` with each header's name (UTF-8, checked by the decoder) and value bytes, in order, until it
    /// returns false.
    package func forEachHeader(_ body: (_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Bool) {
        var p = 0
        for _ in 0..<self.headerCount {
            let nameLength = Int(UInt16(bigEndian: self.headerBytes.loadUnaligned(fromByteOffset: p, as: UInt16.self)))
            let name = UnsafeRawBufferPointer(rebasing: self.headerBytes[p + 2..<p + 2 + nameLength])
            p += 2 + nameLength
            let valueLength = Int(UInt32(bigEndian: self.headerBytes.loadUnaligned(fromByteOffset: p, as: UInt32.self)))
            let value = UnsafeRawBufferPointer(rebasing: self.headerBytes[p + 4..<p + 4 + valueLength])
            p += 4 + valueLength
            guard body(name, value) else { return }
        }
    }

    /// The value bytes of the first header called `name`, or nil when the record has none.
    package func headerValue(named name: String) -> UnsafeRawBufferPointer? {
        var found: UnsafeRawBufferPointer? = nil
        var name = name
        name.withUTF8 { wanted in
            self.forEachHeader { headerName, value in
                guard headerName.elementsEqual(UnsafeRawBufferPointer(wanted)) else { return true }
                found = value
                return false
            }
        }
        return found
    }

    /// The record as values that outlive the frame (copies of its bytes).
    package var record: DeliveredRecord {
        var headers: [WireHeader] = []
        headers.reserveCapacity(self.headerCount)
        self.forEachHeader { name, value in
            headers.append(WireHeader(name: String(decoding: name, as: UTF8.self), value: ByteBuffer(bytes: value)))
            return true
        }
        let record = WireRecord(
            key: self.key.map { ByteBuffer(bytes: $0) }, headers: headers, value: ByteBuffer(bytes: self.value),
            timestamp: self.timestamp
        )
        return DeliveredRecord(offset: self.offset, record: record)
    }
}

/// The headers of a ``PublishRecordView``, in order.
///
/// `public`, `@frozen` and `@inlinable` (like LogStore's `RawRecordView`), so the loops over it in the broker's
/// module inline it: as `package` calls, each header cost a call and a generic destroy of the returned tuple.
@frozen
public struct PublishHeaderIterator: IteratorProtocol {
    @usableFromInline let all: UnsafeRawBufferPointer
    @usableFromInline let names: UnsafeBufferPointer<String>
    @usableFromInline let nameIDs: UnsafeBufferPointer<UInt16>
    @usableFromInline var position: Int
    @usableFromInline var remaining: Int
    @usableFromInline var nameID: Int
    @usableFromInline var index = 0
    /// A name id meaning "not in the name table" (``EncodedPublishRecords``'s).
    @usableFromInline static let uncachedName = UInt16.max

    @inlinable
    init(
        all: UnsafeRawBufferPointer, names: UnsafeBufferPointer<String>, nameIDs: UnsafeBufferPointer<UInt16>,
        position: Int, remaining: Int, nameID: Int
    ) {
        self.all = all
        self.names = names
        self.nameIDs = nameIDs
        self.position = position
        self.remaining = remaining
        self.nameID = nameID
    }

    @inlinable @inline(__always)
    func length<T: FixedWidthInteger>(at position: Int, as type: T.Type) -> Int {
        Int(T(bigEndian: self.all.loadUnaligned(fromByteOffset: position, as: T.self)))
    }

    /// The next header: its position in the record, its name (from the frame's name table; valid UTF-8) and its
    /// value bytes; nil after the last.
    @inlinable
    public mutating func next() -> (position: Int, name: String, value: UnsafeRawBufferPointer)? {
        let nameAt = self.position + 2
        guard let (nameLength, run) = self.nextRun() else { return nil }
        let id = self.nameIDs[self.nameID - 1]
        let name =
            id == Self.uncachedName
            ? String(decoding: UnsafeRawBufferPointer(rebasing: self.all[nameAt..<nameAt + nameLength]), as: UTF8.self)
            : self.names[Int(id)]
        let valueAt = nameAt + nameLength + 4
        let value = UnsafeRawBufferPointer(rebasing: self.all[valueAt..<nameAt + run.count])
        return (self.index - 1, name, value)
    }

    /// The next header without its name as a `String`: its position, its name's id in the frame's name table
    /// (``EncodedPublishRecords/headerNames``; ``EncodedPublishRecords/uncachedNameID`` for a name not in it), its
    /// name's bytes and its value bytes; nil after the last. Nothing in it needs reference counting.
    @inlinable
    public mutating func nextByID()
        -> (position: Int, nameID: UInt16, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer)?
    {
        let nameAt = self.position + 2
        guard let (nameLength, run) = self.nextRun() else { return nil }
        let id = self.nameIDs[self.nameID - 1]
        let name = UnsafeRawBufferPointer(rebasing: self.all[nameAt..<nameAt + nameLength])
        let valueAt = nameAt + nameLength + 4
        let value = UnsafeRawBufferPointer(rebasing: self.all[valueAt..<nameAt + run.count])
        return (self.index - 1, id, name, value)
    }

    /// The next header as stored bytes need it: its name's length and the run from its name to the end of its
    /// value (name, u32 value length, value: what a stored header repeats after its u32 name length); nil after
    /// the last.
    @inlinable
    public mutating func nextRun() -> (nameLength: Int, run: UnsafeRawBufferPointer)? {
        guard self.remaining > 0 else { return nil }
        self.remaining -= 1
        let nameLength = self.length(at: self.position, as: UInt16.self)
        let start = self.position + 2
        let valueLengthAt = start + nameLength
        let end = valueLengthAt + 4 + self.length(at: valueLengthAt, as: UInt32.self)
        self.position = end
        self.nameID += 1
        self.index += 1
        return (nameLength, UnsafeRawBufferPointer(rebasing: self.all[start..<end]))
    }
}

/// CREDIT: allow the broker to push `credit` more records.
package struct Credit: Equatable, Sendable {
    /// The subscription to credit.
    package var subscriptionID: UInt32
    /// How many more records the broker may push.
    package var credit: UInt32
    /// Creates a CREDIT.
    package init(subscriptionID: UInt32, credit: UInt32) {
        self.subscriptionID = subscriptionID
        self.credit = credit
    }
}

/// COMMIT: store a consumer group's next offset to read.
package struct Commit: Equatable, Sendable {
    /// The consumer group; must not be empty.
    package var group: String
    /// The topic.
    package var topic: String
    /// The next offset the group will read (last processed + 1).
    package var offset: Int64
    /// Creates a COMMIT.
    package init(group: String, topic: String, offset: Int64) {
        self.group = group
        self.topic = topic
        self.offset = offset
    }
}

/// One topic in TOPIC_LIST.
package struct TopicInfo: Equatable, Sendable {
    /// The topic name.
    package var name: String
    /// The topic's sensitivity class.
    package var sensitivity: String
    /// The first retained offset.
    package var startOffset: Int64
    /// The next offset to be written.
    package var endOffset: Int64
    /// Bit 0: the caller may publish; bit 1: the caller may subscribe.
    package var access: UInt8
    /// Creates a topic entry.
    package init(name: String, sensitivity: String, startOffset: Int64, endOffset: Int64, access: UInt8) {
        self.name = name
        self.sensitivity = sensitivity
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.access = access
    }
}

/// ERROR: a request failed, or the connection is about to close.
package struct ErrorFrame: Equatable, Sendable {
    /// The stable error code.
    package var code: ErrorCode
    /// For RATE_LIMITED: milliseconds to wait; 0 otherwise.
    package var retryAfterMillis: UInt32
    /// What failed and why, for people; cut at 65,535 UTF-8 bytes when encoded.
    package var message: String
    /// Creates an ERROR body.
    package init(code: ErrorCode, message: String, retryAfterMillis: UInt32 = 0) {
        self.code = code
        self.message = message
        self.retryAfterMillis = retryAfterMillis
    }
}

/// What a QUARANTINE_REPLAY did with one quarantined record. The wire value is a `u8`; other values are
/// MALFORMED_FRAME.
package enum ReplayOutcome: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// The record passed the current policy and was appended to its original topic now.
    case replayed = 0
    /// The current policy still refuses the record; it stays in `__quarantine`.
    case stillQuarantined = 1
    /// `__quarantine` has no record at that offset.
    case notFound = 2
    /// The record at that offset is not a quarantined record (it lacks the `quarantine-*` headers).
    case invalid = 3

    /// The upper-snake-case name used in docs/PROTOCOL.md and brokerctl output (e.g. `STILL_QUARANTINED`).
    package var description: String {
        switch self {
        case .replayed: "REPLAYED"
        case .stillQuarantined: "STILL_QUARANTINED"
        case .notFound: "NOT_FOUND"
        case .invalid: "INVALID"
        }
    }
}

/// The outcome of replaying one quarantined record, in REPLAY_RESULT.
package struct ReplayResult: Equatable, Sendable {
    /// The requested offset in `__quarantine`.
    package var quarantineOffset: Int64
    /// What happened (or, with `earlierFlag`, what happened the first time).
    package var outcome: ReplayOutcome
    /// Result flags; bit 0 is `ReplayResult.earlierFlag`, the other bits are 0.
    package var flags: UInt8
    /// The record's original topic; empty when unknown (NOT_FOUND, INVALID).
    package var topic: String
    /// The record's offset in its original topic when REPLAYED; -1 otherwise.
    package var newOffset: Int64
    /// The stable reason code when STILL_QUARANTINED (e.g. `FORBIDDEN_FIELD`); empty otherwise.
    package var reason: String
    /// Human-readable detail; cut at 65,535 UTF-8 bytes when encoded.
    package var message: String

    /// Creates a result.
    package init(
        quarantineOffset: Int64,
        outcome: ReplayOutcome,
        flags: UInt8 = 0,
        topic: String = "",
        newOffset: Int64 = -1,
        reason: String = "",
        message: String = ""
    ) {
        self.quarantineOffset = quarantineOffset
        self.outcome = outcome
        self.flags = flags
        self.topic = topic
        self.newOffset = newOffset
        self.reason = reason
        self.message = message
    }

    /// Flags bit 0, EARLIER: this offset was replayed before (a record is replayed at most once); `outcome`,
    /// `topic`, `newOffset` and `reason` are that earlier replay's.
    package static let earlierFlag: UInt8 = 0x01

    /// Whether flags bit 0 (EARLIER) is set.
    package var isEarlier: Bool { self.flags & Self.earlierFlag != 0 }
}

/// RELOAD_OK: the broker re-read its config file and now runs the new policy.
package struct ReloadOK: Equatable, Sendable {
    /// The policy version now in force (a hash of the effective config), as stamped in `broker-policy-version`.
    package var policyVersion: String
    /// Human-readable summary of the reload; cut at 65,535 UTF-8 bytes when encoded.
    package var message: String
    /// Creates a RELOAD_OK.
    package init(policyVersion: String, message: String = "") {
        self.policyVersion = policyVersion
        self.message = message
    }
}

/// LIMITS_QUERY: the state of the broker's limiters, and of one key.
package struct LimitsQuery: Equatable, Sendable {
    /// The limiter; empty for every limiter.
    package var limiter: String
    /// The key to report (a recipient, a scope, a client id…); empty for none.
    package var key: String
    /// Creates a query.
    package init(limiter: String = "", key: String = "") {
        self.limiter = limiter
        self.key = key
    }
}

/// One limiter in LIMITS_STATE.
package struct LimitState: Equatable, Sendable {
    /// The limiter's name.
    package var limiter: String
    /// 0 publish, 1 delivery.
    package var direction: UInt8
    /// What it keeps a limit per (`recipient`, `consent_scope`, `connection`, …).
    package var keyKind: String
    /// `reject`, `quarantine` or `delay`.
    package var action: String
    /// The limit for people (`3 per 86400000 ms`, `50/s burst 100`).
    package var limit: String
    /// Keys the broker holds for it now.
    package var keysHeld: UInt32
    /// The key asked about; empty when none.
    package var stateKey: String
    /// For `stateKey`: records counted in the window, or tokens used of the burst; -1 when no key was asked.
    package var used: Int64
    /// The cap or the burst.
    package var capacity: Int64
    /// For `stateKey`: milliseconds until one more record would pass (0: it would pass now).
    package var retryAfterMillis: UInt32

    /// Creates an entry.
    package init(
        limiter: String, direction: UInt8, keyKind: String, action: String, limit: String, keysHeld: UInt32,
        stateKey: String = "", used: Int64 = -1, capacity: Int64, retryAfterMillis: UInt32 = 0
    ) {
        self.limiter = limiter
        self.direction = direction
        self.keyKind = keyKind
        self.action = action
        self.limit = limit
        self.keysHeld = keysHeld
        self.stateKey = stateKey
        self.used = used
        self.capacity = capacity
        self.retryAfterMillis = retryAfterMillis
    }
}

/// One topic in TOPIC_DESCRIPTIONS: its policy settings and its log's storage figures.
package struct TopicDescription: Equatable, Sendable {
    /// The topic name.
    package var name: String
    /// The topic's sensitivity class.
    package var sensitivity: String
    /// Bit 0: the caller may publish; bit 1: the caller may subscribe (as in TOPIC_LIST).
    package var access: UInt8
    /// The purposes its records serve, in config order; empty for the reserved topics.
    package var purposes: [String]
    /// The consent scopes its records may carry, in config order; empty for the reserved topics.
    package var consentScopes: [String]
    /// `retention_bytes`; -1 when the topic keeps everything by size.
    package var retentionBytes: Int64
    /// `retention_ms`; -1 when the topic keeps everything by age.
    package var retentionMillis: Int64
    /// The fsync policy in config syntax: `always`, `never` or `interval:<ms>`.
    package var fsync: String
    /// The batch compression in config syntax: `lz4` or `none`.
    package var compression: String
    /// `segment_bytes`: the size at which the active segment is rolled.
    package var segmentBytes: Int64
    /// Bytes of the topic's log segments on disk now; -1 when the topic has no open log.
    package var logBytes: Int64
    /// Segment files of the log now (0 when the topic has no open log).
    package var segmentCount: UInt32
    /// The first retained offset (the earliest a subscriber can read).
    package var startOffset: Int64
    /// The next offset to be written.
    package var endOffset: Int64

    /// Creates a description.
    package init(
        name: String, sensitivity: String, access: UInt8, purposes: [String], consentScopes: [String],
        retentionBytes: Int64, retentionMillis: Int64, fsync: String, compression: String, segmentBytes: Int64,
        logBytes: Int64, segmentCount: UInt32, startOffset: Int64, endOffset: Int64
    ) {
        self.name = name
        self.sensitivity = sensitivity
        self.access = access
        self.purposes = purposes
        self.consentScopes = consentScopes
        self.retentionBytes = retentionBytes
        self.retentionMillis = retentionMillis
        self.fsync = fsync
        self.compression = compression
        self.segmentBytes = segmentBytes
        self.logBytes = logBytes
        self.segmentCount = segmentCount
        self.startOffset = startOffset
        self.endOffset = endOffset
    }
}

/// One consumer group's committed offset on one topic, in GROUPS_STATE.
package struct GroupOffset: Equatable, Sendable {
    /// The consumer group.
    package var group: String
    /// The topic it committed on.
    package var topic: String
    /// The committed next offset to read.
    package var committedOffset: Int64
    /// The topic's first retained offset; -1 when the topic has no open log.
    package var startOffset: Int64
    /// The topic's next offset to be written; -1 when the topic has no open log.
    package var endOffset: Int64
    /// `endOffset - committedOffset`: records the group has not committed yet; -1 when the topic has no open log.
    package var lag: Int64

    /// Creates an entry.
    package init(
        group: String, topic: String, committedOffset: Int64, startOffset: Int64, endOffset: Int64, lag: Int64
    ) {
        self.group = group
        self.topic = topic
        self.committedOffset = committedOffset
        self.startOffset = startOffset
        self.endOffset = endOffset
        self.lag = lag
    }
}

/// BROKER_STATS: a one-screen summary of the broker.
package struct BrokerStats: Equatable, Sendable {
    /// The brokerd release (`brokerd --version`).
    package var brokerVersion: String
    /// When the broker started, ms since the Unix epoch.
    package var startedAtMillis: Int64
    /// Milliseconds since it started.
    package var uptimeMillis: Int64
    /// The address it listens on (`HOST:PORT`).
    package var listenAddress: String
    /// The policy version in force.
    package var policyVersion: String
    /// Client connections open now, this one included.
    package var connections: UInt32
    /// Declared topics (the reserved ones not counted).
    package var topicCount: UInt32
    /// Bytes of every topic's log segments, the reserved topics' included.
    package var logBytes: Int64
    /// Records held in `__quarantine` (its end offset minus its start offset).
    package var quarantineRecords: Int64
    /// Bytes of `__quarantine`'s log.
    package var quarantineBytes: Int64
    /// Entries in `__audit`.
    package var auditRecords: Int64
    /// Distinct consumer groups with a committed offset.
    package var groupCount: UInt32
    /// (group, topic) pairs with a committed offset.
    package var commitCount: UInt32
    /// The largest lag of any (group, topic) pair whose topic has an open log; -1 when there is none.
    package var worstLag: Int64
    /// The group with that lag; empty when none.
    package var worstLagGroup: String
    /// The topic of that lag; empty when none.
    package var worstLagTopic: String

    /// Creates a summary.
    package init(
        brokerVersion: String, startedAtMillis: Int64, uptimeMillis: Int64, listenAddress: String,
        policyVersion: String, connections: UInt32, topicCount: UInt32, logBytes: Int64, quarantineRecords: Int64,
        quarantineBytes: Int64, auditRecords: Int64, groupCount: UInt32, commitCount: UInt32, worstLag: Int64,
        worstLagGroup: String, worstLagTopic: String
    ) {
        self.brokerVersion = brokerVersion
        self.startedAtMillis = startedAtMillis
        self.uptimeMillis = uptimeMillis
        self.listenAddress = listenAddress
        self.policyVersion = policyVersion
        self.connections = connections
        self.topicCount = topicCount
        self.logBytes = logBytes
        self.quarantineRecords = quarantineRecords
        self.quarantineBytes = quarantineBytes
        self.auditRecords = auditRecords
        self.groupCount = groupCount
        self.commitCount = commitCount
        self.worstLag = worstLag
        self.worstLagGroup = worstLagGroup
        self.worstLagTopic = worstLagTopic
    }
}

/// Every frame body brokerd speaks.
package enum Frame: Equatable, Sendable {
    /// HELLO: the client introduces itself.
    case hello(Hello)
    /// HELLO_OK: authenticated.
    case helloOK(HelloOK)
    /// PUBLISH: append records.
    case publish(Publish)
    /// PUBLISH_ACK: per-record results.
    case publishAck(PublishAck)
    /// SUBSCRIBE: start a push subscription.
    case subscribe(Subscribe)
    /// SUBSCRIBE_OK: the subscription exists.
    case subscribeOK(SubscribeOK)
    /// DELIVER: records pushed on a subscription.
    case deliver(Deliver)
    /// CREDIT: grant more records.
    case credit(Credit)
    /// COMMIT: store a group's next offset.
    case commit(Commit)
    /// COMMIT_OK: the offset is stored (empty body).
    case commitOK
    /// UNSUBSCRIBE: end a subscription by id.
    case unsubscribe(subscriptionID: UInt32)
    /// UNSUBSCRIBE_OK: the subscription ended (empty body).
    case unsubscribeOK
    /// LIST_TOPICS: ask for TOPIC_LIST (empty body).
    case listTopics
    /// TOPIC_LIST: every declared topic.
    case topicList([TopicInfo])
    /// PING: the broker answers PONG with the same nonce.
    case ping(nonce: UInt64)
    /// PONG: the answer to PING.
    case pong(nonce: UInt64)
    /// ERROR: a request failed, or the connection is closing.
    case error(ErrorFrame)
    /// QUARANTINE_REPLAY: re-evaluate these `__quarantine` offsets against the current policy.
    case quarantineReplay([Int64])
    /// REPLAY_RESULT: one result per requested offset, in the request's order.
    case replayResult([ReplayResult])
    /// ADMIN_RELOAD: re-read and apply the broker's config file (empty body).
    case adminReload
    /// RELOAD_OK: the new config is in force.
    case reloadOK(ReloadOK)
    /// LIMITS_QUERY: ask for limiter state (capability `admin`).
    case limitsQuery(LimitsQuery)
    /// LIMITS_STATE: one entry per limiter asked about.
    case limitsState([LimitState])
    /// DESCRIBE_TOPICS: ask for the settings and storage figures of one topic (`topic`) or of every topic the asker
    /// may see (empty `topic`).
    case describeTopics(topic: String)
    /// TOPIC_DESCRIPTIONS: one description per topic asked about.
    case topicDescriptions([TopicDescription])
    /// GROUPS_QUERY: ask for the committed offsets and lag of one consumer group, or of every group (empty `group`).
    case groupsQuery(group: String)
    /// GROUPS_STATE: one entry per (group, topic) with a committed offset.
    case groupsState([GroupOffset])
    /// STATS_QUERY: ask for BROKER_STATS (empty body).
    case statsQuery
    /// BROKER_STATS: the broker's one-screen summary.
    case brokerStats(BrokerStats)

    /// The opcode this frame is encoded with.
    package var opcode: Opcode {
        switch self {
        case .hello: .hello
        case .helloOK: .helloOK
        case .publish: .publish
        case .publishAck: .publishAck
        case .subscribe: .subscribe
        case .subscribeOK: .subscribeOK
        case .deliver: .deliver
        case .credit: .credit
        case .commit: .commit
        case .commitOK: .commitOK
        case .unsubscribe: .unsubscribe
        case .unsubscribeOK: .unsubscribeOK
        case .listTopics: .listTopics
        case .topicList: .topicList
        case .ping: .ping
        case .pong: .pong
        case .error: .error
        case .quarantineReplay: .quarantineReplay
        case .replayResult: .replayResult
        case .adminReload: .adminReload
        case .reloadOK: .reloadOK
        case .limitsQuery: .limitsQuery
        case .limitsState: .limitsState
        case .describeTopics: .describeTopics
        case .topicDescriptions: .topicDescriptions
        case .groupsQuery: .groupsQuery
        case .groupsState: .groupsState
        case .statsQuery: .statsQuery
        case .brokerStats: .brokerStats
        }
    }
}

/// A frame with its correlation id and flags, as it travels on the wire.
package struct TaggedFrame: Equatable, Sendable {
    /// Chosen by the requester; echoed in the response. Server pushes (DELIVER) and unsolicited ERRORs use 0.
    package var correlationID: UInt32
    /// Reserved; must be 0 in version 1.
    package var flags: UInt16
    /// The frame body.
    package var frame: Frame
    /// Creates a tagged frame; `flags` must stay 0 in protocol version 1.
    package init(correlationID: UInt32, flags: UInt16 = 0, frame: Frame) {
        self.correlationID = correlationID
        self.flags = flags
        self.frame = frame
    }
}
