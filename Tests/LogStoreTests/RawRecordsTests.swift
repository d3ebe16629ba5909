import NIOCore
import Testing

@testable import LogStore

/// `BatchCodec.index` and `RawRecords` (what delivery reads) must see exactly what `BatchCodec.decode` sees.
@Suite("RawRecords")
struct RawRecordsTests {
    /// Every record of `records` as `RawRecords` gives it back, checked field by field against `expected`.
    static func expectSame(_ raw: RawRecords, _ expected: [StoredRecord], _ comment: Comment? = nil) {
        #expect(raw.count == expected.count, comment)
        for (index, stored) in expected.enumerated() where index < raw.count {
            #expect(raw.offset(at: index) == stored.offset, comment)
            #expect(raw.storedRecord(at: index) == stored, comment)
            var visited: [LogHeader] = []
            raw.visitHeaders(at: index) { name, value in
                visited.append(LogHeader(name: name, value: ByteBuffer(bytes: value)))
                return true
            }
            #expect(visited == stored.record.headers, comment)
            // Visiting one name (bytes compared for [a-z0-9_.-] names, `String`s otherwise) finds exactly the
            // headers whose name is that `String`.
            let names = Set(stored.record.headers.map(\.name)).union(["consent_scope", "absent", "K", ""])
            for wanted in names {
                var named: [LogHeader] = []
                raw.visitHeaders(at: index, named: wanted) { name, value in
                    named.append(LogHeader(name: name, value: ByteBuffer(bytes: value)))
                    return true
                }
                #expect(named == stored.record.headers.filter { $0.name == wanted }, comment)
            }
            let record = stored.record
            var size = 20 + (record.key?.readableBytes ?? 0) + record.value.readableBytes
            for header in record.headers { size += 8 + header.name.utf8.count + header.value.readableBytes }
            if raw.namesAreValidUTF8 { #expect(raw.storedSize(at: index) == size, comment) }
        }
        var values = 0
        raw.forEach(Array(0..<raw.count)) { offset, view in
            let stored = expected.first { $0.offset == offset }!.record
            #expect(view.timestamp == stored.timestamp, comment)
            #expect(view.key.map { Array($0) } == stored.key.map { Array($0.readableBytesView) }, comment)
            #expect(Array(view.value) == Array(stored.value.readableBytesView), comment)
            #expect(view.headerCount == stored.headers.count, comment)
            values += view.value.count
        }
        #expect(raw.valueBytes(Array(0..<raw.count)) == values, comment)
    }

    @Test(
        "index gives the records decode gives, for every record set and codec",
        arguments: [CompressionCodec.none, .lz4]
    )
    func sameAsDecode(codec: CompressionCodec) throws {
        for (name, records) in BatchCodecTests.recordSets {
            let batch = try BatchCodec.encode(records, baseOffset: 1234, codec: codec)
            let (_, decoded) = try BatchCodec.decode(batch)
            let expected = decoded.enumerated().map { StoredRecord(offset: 1234 + Int64($0), record: $1) }
            var raw = RawRecords()
            let header = try BatchCodec.index(batch, into: &raw, from: 0, end: .max, maxRecords: .max)
            #expect(header == BatchHeader.peek(batch), "\(name)")
            Self.expectSame(raw, expected, "\(name)")
            #expect(raw.namesAreValidUTF8)
            // Offsets below `from`, at or past `end`, and past `maxRecords` are left out; a second batch adds on.
            if records.count > 3 {
                var part = RawRecords()
                let end = 1234 + Int64(records.count) - 1
                _ = try BatchCodec.index(batch, into: &part, from: 1235, end: end, maxRecords: 2)
                Self.expectSame(part, Array(expected[1...2]), "\(name) part")
                _ = try BatchCodec.index(batch, into: &part, from: 0, end: .max, maxRecords: 4)
                Self.expectSame(part, Array(expected[1...2] + expected[0...1]), "\(name) two batches")
                Self.expectSame(part.dropFirst(1), Array(expected[2...2] + expected[0...1]), "\(name) dropFirst")
                Self.expectSame(part.prefix(2), Array(expected[1...2]), "\(name) prefix")
                Self.expectSame(part.dropFirst(2), Array(expected[0...1]), "\(name) dropFirst past a batch")
                #expect(part.dropFirst(2).batches.count == 1, "\(name): the batch no record is left in is let go")
                #expect(part.retainedBytes == 2 * raw.retainedBytes)
                #expect(part.dropFirst(2).retainedBytes == raw.retainedBytes)
            }
        }
    }

    @Test("visiting headers by name: byte comparison where it is exact, canonical equivalence where it is not")
    func visitByName() throws {
        let headers = [
            LogHeader(name: "consent_scope", value: ByteBuffer(string: "a")),
            LogHeader(name: "source_system", value: ByteBuffer(string: "b")),  // same length, other bytes
            LogHeader(name: "Consent_Scope", value: ByteBuffer(string: "c")),
            LogHeader(name: "\u{212A}", value: ByteBuffer(string: "d")),  // KELVIN SIGN, canonically "K"
            LogHeader(name: "consent_scope", value: ByteBuffer(string: "e")),
        ]
        let record = LogRecord(key: nil, headers: headers, value: ByteBuffer(string: "v"), timestamp: 1)
        let batch = try BatchCodec.encode([record], baseOffset: 0, codec: .lz4)
        var raw = RawRecords()
        _ = try BatchCodec.index(batch, into: &raw, from: 0, end: .max, maxRecords: .max)
        func values(_ name: String, stopAfterFirst: Bool = false) -> [String] {
            var found: [String] = []
            raw.visitHeaders(at: 0, named: name) { _, value in
                found.append(String(decoding: value, as: UTF8.self))
                return !stopAfterFirst
            }
            return found
        }
        #expect(values("consent_scope") == ["a", "e"])
        #expect(values("consent_scope", stopAfterFirst: true) == ["a"])
        #expect(values("Consent_Scope") == ["c"])
        #expect(values("K") == ["d"])  // as `String` equality says
        #expect(values("absent") == [])
    }

    @Test("readRaw over real segment files: what read returns, then the rest of the last batch read")
    func readRawOverFiles() async throws {
        try await withTemporaryDirectory { dir in
            let backend = try FileLogBackend(directory: dir, logger: CapturedLogs().logger)
            let log = try await backend.openTopic(
                name: "t",
                config: .test(segmentBytes: 1500, compression: .lz4, indexIntervalBytes: 200)
            )
            // Batches of 1...4 records (FileTopicLogTests.fill): batch boundaries at known offsets.
            let bases = try await FileTopicLogTests.fill(log, batches: 60, padding: 20)
            let end = log.endOffset
            func batchEnd(_ offset: Int64) -> Int64 { bases.first { $0 > offset } ?? end }
            for offset in 0..<end {
                for maxRecords in [1, 3, 7] {
                    let read = try log.read(from: offset, maxRecords: maxRecords, maxBytes: 1 << 20)
                    let raw = try log.readRaw(from: offset, maxRecords: maxRecords, maxBytes: 1 << 20)
                    let last = read.last!.offset
                    let rest = (last + 1..<batchEnd(last)).map {
                        StoredRecord(offset: $0, record: testRecord($0, padding: 20))
                    }
                    let expected = read + rest
                    Self.expectSame(raw, expected, "from \(offset), \(maxRecords)")
                }
            }
            #expect(throws: LogStoreError(.offsetOutOfRange, "offset \(end + 1) is outside 0...\(end) of topic 't'")) {
                try log.readRaw(from: end + 1, maxRecords: 1, maxBytes: 100)
            }
            #expect(try log.readRaw(from: end, maxRecords: 5, maxBytes: 100).isEmpty)
            await backend.closeAll()
        }
    }

    @Test("a damaged body (CRC made to match) is refused by index exactly as by decode, adding nothing")
    func sameErrors() throws {
        let records = [
            LogRecord(
                key: buffer("k"),
                headers: [LogHeader(name: "event_type", value: buffer("a")), LogHeader(name: "h", value: buffer(""))],
                value: buffer("value"),
                timestamp: 3
            ),
            LogRecord(
                key: nil, headers: [LogHeader(name: "event_type", value: buffer("b"))], value: buffer(""), timestamp: 4
            ),
        ]
        let body = try BatchCodec.encodeBody(records, codec: .none).storedBody
        func batch(_ body: ByteBuffer, count: UInt32 = 2) -> ByteBuffer {
            BatchCodec.assemble(
                EncodedBatchBody(
                    storedBody: body, attributes: 0, recordCount: count, firstTimestamp: 3, maxTimestamp: 4,
                    bodyLength: UInt32(body.readableBytes)
                ),
                baseOffset: 10
            )
        }
        var cases: [(String, ByteBuffer)] = []
        for length in 0..<body.readableBytes {
            cases.append(("truncated to \(length)", batch(body.getSlice(at: 0, length: length)!)))
        }
        for position in 0..<body.readableBytes {
            for replacement: UInt8 in [0x00, 0x7F, 0x80, 0xFF] {
                var damaged = body
                damaged.setInteger(replacement, at: position)
                cases.append(("byte \(position) set to \(replacement)", batch(damaged)))
            }
        }
        cases.append(("one record more", batch(body, count: 3)))
        cases.append(("one record less", batch(body, count: 1)))
        var raw = RawRecords()
        _ = try BatchCodec.index(batch(body), into: &raw, from: 0, end: .max, maxRecords: .max)
        let good = raw.count
        for (name, damaged) in cases {
            var decodeError: BatchDecodeError? = nil
            var decoded: [LogRecord] = []
            do { decoded = try BatchCodec.decode(damaged).1 } catch { decodeError = error }
            var indexError: BatchDecodeError? = nil
            var fresh = RawRecords()
            do {
                _ = try BatchCodec.index(damaged, into: &raw, from: 0, end: .max, maxRecords: .max)
                _ = try BatchCodec.index(damaged, into: &fresh, from: 0, end: .max, maxRecords: .max)
            } catch {
                indexError = error
            }
            #expect(indexError == decodeError, "\(name)")
            if decodeError == nil {
                // Decodable damage (a changed byte inside a value or name): the same records, repaired names too.
                let expected = decoded.enumerated().map { StoredRecord(offset: 10 + Int64($0), record: $1) }
                Self.expectSame(fresh, expected, "\(name)")
                let stored = raw.count
                raw = raw.prefix(good)
                #expect(stored == good + decoded.count, "\(name)")
            } else {
                #expect(raw.count == good, "\(name): a refused batch adds nothing")
            }
        }
    }
}
