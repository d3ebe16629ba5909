import CLZ4
import Glibc
import NIOCore
import RawBytes

/// The on-disk record batch format (documented byte for byte in docs/STORAGE.md). All integers are big-endian.
///
/// ```
/// 0  length          UInt32  bytes after this field: 38 + stored body length
/// 4  magic           UInt8   0xB1 (format version 1)
/// 5  crc             UInt32  CRC-32C of bytes 9 ..< 4 + length
/// 9  attributes      UInt8   bits 0-1: codec of the stored body (0 none, 1 lz4); bits 2-7: 0
/// 10 baseOffset      Int64   offset of the first record
/// 18 recordCount     UInt32  number of records (>= 1)
/// 22 firstTimestamp  Int64   timestamp of the first record (ms since the epoch)
/// 30 maxTimestamp    Int64   largest record timestamp
/// 38 bodyLength      UInt32  length of the records body before compression
/// 42 body            records, LZ4-compressed when attributes say so
/// ```
package enum BatchFormat {
    /// Size of the fixed batch header.
    package static let headerSize = 42
    /// The magic / version byte.
    package static let magic: UInt8 = 0xB1
    /// Position of the CRC field in the header.
    package static let crcPosition = 5
    /// First byte covered by the CRC.
    package static let crcCoverageStart = 9
    /// Bytes of the header counted by `length` (everything after the length field).
    package static let headerBytesAfterLength = 38
    /// Mask of the codec bits in `attributes`.
    package static let codecMask: UInt8 = 0x03
    /// Largest uncompressed records body the format accepts (LZ4's maximum input, `LZ4_MAX_INPUT_SIZE`).
    package static let maxBodyBytes = 0x7E00_0000
}

/// The fixed header of a stored batch.
package struct BatchHeader: Equatable, Sendable {
    /// Bytes after the length field.
    package var length: UInt32
    /// Format version byte.
    package var magic: UInt8
    /// Stored CRC-32C.
    package var crc: UInt32
    /// Attribute bits (codec in bits 0-1).
    package var attributes: UInt8
    /// Offset of the first record.
    package var baseOffset: Int64
    /// Number of records.
    package var recordCount: UInt32
    /// Timestamp of the first record.
    package var firstTimestamp: Int64
    /// Largest record timestamp.
    package var maxTimestamp: Int64
    /// Uncompressed body length.
    package var bodyLength: UInt32

    /// Total bytes of the batch on disk.
    package var totalSize: Int { 4 + Int(self.length) }
    /// One past the last record's offset.
    package var nextOffset: Int64 { self.baseOffset + Int64(self.recordCount) }
    /// The codec the body is stored with, if the bits name a known one.
    package var codec: CompressionCodec? { CompressionCodec(rawValue: self.attributes & BatchFormat.codecMask) }

    /// Parses the 42 header bytes at the reader index without consuming them. Returns nil when there are fewer
    /// bytes. Does not validate; see ``structuralProblem``.
    package static func peek(_ buffer: ByteBuffer) -> BatchHeader? {
        guard buffer.readableBytes >= BatchFormat.headerSize else { return nil }
        let i = buffer.readerIndex
        return BatchHeader(
            length: buffer.getInteger(at: i, as: UInt32.self)!,
            magic: buffer.getInteger(at: i + 4, as: UInt8.self)!,
            crc: buffer.getInteger(at: i + 5, as: UInt32.self)!,
            attributes: buffer.getInteger(at: i + 9, as: UInt8.self)!,
            baseOffset: buffer.getInteger(at: i + 10, as: Int64.self)!,
            recordCount: buffer.getInteger(at: i + 18, as: UInt32.self)!,
            firstTimestamp: buffer.getInteger(at: i + 22, as: Int64.self)!,
            maxTimestamp: buffer.getInteger(at: i + 30, as: Int64.self)!,
            bodyLength: buffer.getInteger(at: i + 38, as: UInt32.self)!
        )
    }

    /// Why this header cannot start a valid batch (checks that need no body), or nil.
    package var structuralProblem: String? {
        if self.magic != BatchFormat.magic { return "bad magic 0x\(String(self.magic, radix: 16))" }
        if self.length < UInt32(BatchFormat.headerBytesAfterLength) { return "length \(self.length) below header size" }
        if self.codec == nil || self.attributes & ~BatchFormat.codecMask != 0 {
            return "unknown attributes 0x\(String(self.attributes, radix: 16))"
        }
        if self.recordCount == 0 { return "zero records" }
        if self.baseOffset < 0 { return "negative base offset \(self.baseOffset)" }
        if Int(self.bodyLength) > BatchFormat.maxBodyBytes {
            return "body length \(self.bodyLength) above format limit"
        }
        return nil
    }
}

/// A batch body encoded (and maybe compressed) but not yet given its base offset.
package struct EncodedBatchBody: Sendable {
    /// The body bytes as they will be stored.
    package var storedBody: ByteBuffer
    /// Attributes (the codec actually used).
    package var attributes: UInt8
    /// Number of records.
    package var recordCount: UInt32
    /// Timestamp of the first record.
    package var firstTimestamp: Int64
    /// Largest record timestamp.
    package var maxTimestamp: Int64
    /// Uncompressed body length.
    package var bodyLength: UInt32
    /// Total size of the batch once assembled.
    package var batchSize: Int { BatchFormat.headerSize + self.storedBody.readableBytes }
}

/// Records already in their stored layout (docs/STORAGE.md "Record"), back to back, with what a batch header needs
/// from them: what an append hands the log. Whoever builds one guarantees the layout (``BatchCodec/storedRecords(_:maxBodyBytes:)``
/// from `LogRecord`s; the broker converts a PUBLISH's wire records straight into this form).
package struct StoredRecordBytes: Sendable {
    /// Number of records in `bytes`.
    package let count: Int
    /// The records' bytes, exactly `count` stored records.
    package let bytes: ByteBuffer
    /// Timestamp of the first record (0 when there are none).
    package let firstTimestamp: Int64
    /// Largest record timestamp (0 when there are none).
    package let maxTimestamp: Int64
    /// Bytes of the records' values (for the published-bytes metric).
    package let valueBytes: Int
    /// Wraps records the caller laid out.
    package init(count: Int, bytes: ByteBuffer, firstTimestamp: Int64, maxTimestamp: Int64, valueBytes: Int) {
        self.count = count
        self.bytes = bytes
        self.firstTimestamp = firstTimestamp
        self.maxTimestamp = maxTimestamp
        self.valueBytes = valueBytes
    }
}

/// Why a stored batch could not be decoded.
package struct BatchDecodeError: Error, Equatable, Sendable {
    /// What is wrong with it.
    package var reason: String
    /// Creates the error.
    package init(_ reason: String) { self.reason = reason }
}

/// Encodes and decodes record batches. Pure: no file I/O.
package enum BatchCodec {
    /// Encodes `records` into a body, compressing with `codec` when that makes it smaller (otherwise the body is
    /// stored uncompressed and the attributes say `none`).
    /// - Throws: `.invalidArgument` for no records, `.tooLarge` when the body exceeds `maxBodyBytes` (capped at the
    ///   format limit) or a field exceeds its length field.
    package static func encodeBody(
        _ records: [LogRecord],
        codec: CompressionCodec,
        maxBodyBytes: Int = BatchFormat.maxBodyBytes
    ) throws(LogStoreError) -> EncodedBatchBody {
        guard !records.isEmpty else {
            throw LogStoreError(.invalidArgument, "a batch needs at least one record")
        }
        let stored = try self.storedRecords(records, maxBodyBytes: maxBodyBytes)
        return try self.encodeBody(parts: [stored], codec: codec, maxBodyBytes: maxBodyBytes)
    }

    /// `records` in their stored layout (docs/STORAGE.md "Record"), back to back: the bytes ``encodeBody(_:codec:maxBodyBytes:)``
    /// puts in a batch body for them. No records: an empty run (an append of nothing still fails, in `encodeBody`).
    /// - Throws: `.tooLarge` when they take more than `maxBodyBytes` (capped at the format limit).
    package static func storedRecords(
        _ records: [LogRecord],
        maxBodyBytes: Int = BatchFormat.maxBodyBytes
    ) throws(LogStoreError) -> StoredRecordBytes {
        guard records.count <= Int(UInt32.max) else {
            throw LogStoreError(.tooLarge, "batch of \(records.count) records exceeds \(UInt32.max)")
        }
        guard let first = records.first else {
            return StoredRecordBytes(count: 0, bytes: ByteBuffer(), firstTimestamp: 0, maxTimestamp: 0, valueBytes: 0)
        }
        let limit = min(maxBodyBytes, BatchFormat.maxBodyBytes)
        var size = 0
        var valueBytes = 0
        for record in records {
            size += 8 + 4 + (record.key?.readableBytes ?? 0) + 4 + record.value.readableBytes + 4
            valueBytes += record.value.readableBytes
            for header in record.headers { size += 8 + header.name.utf8.count + header.value.readableBytes }
            if size > limit { break }
        }
        guard size <= limit else { throw Self.tooLarge(limit: limit, records: records.count) }
        // One write of exactly `size` bytes through a raw pointer: ByteBuffer's per-call bookkeeping (capacity
        // checks, exclusivity checks on its storage) cost more than the copies for ~30 small fields per record.
        var body = ByteBufferAllocator().buffer(capacity: size)
        var maxTimestamp = first.timestamp
        let written = body.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { out in
            var writer = RawWriter(out)
            for record in records {
                maxTimestamp = max(maxTimestamp, record.timestamp)
                writer.put(record.timestamp)
                if let key = record.key {
                    writer.put(Int32(key.readableBytes))
                    writer.put(key)
                } else {
                    writer.put(Int32(-1))
                }
                writer.put(UInt32(record.value.readableBytes))
                writer.put(record.value)
                writer.put(UInt32(record.headers.count))
                for header in record.headers {
                    writer.put(UInt32(header.name.utf8.count))
                    writer.put(header.name)
                    writer.put(UInt32(header.value.readableBytes))
                    writer.put(header.value)
                }
            }
            return writer.position
        }
        precondition(written == size, "batch body wrote \(written) bytes, sized \(size)")
        return StoredRecordBytes(
            count: records.count, bytes: body, firstTimestamp: first.timestamp, maxTimestamp: maxTimestamp,
            valueBytes: valueBytes
        )
    }

    private static func tooLarge(limit: Int, records: Int) -> LogStoreError {
        LogStoreError(.tooLarge, "batch body of more than \(limit) bytes (limit \(limit)) in \(records) records")
    }

    /// One batch body of `parts`' records, in order (one part: its bytes are the body, no copy), compressed with
    /// `codec` when that makes it smaller.
    /// - Throws: `.invalidArgument` for no records, `.tooLarge` when the body exceeds `maxBodyBytes` (capped at the
    ///   format limit).
    package static func encodeBody(
        parts: [StoredRecordBytes],
        codec: CompressionCodec,
        maxBodyBytes: Int = BatchFormat.maxBodyBytes
    ) throws(LogStoreError) -> EncodedBatchBody {
        var count = 0
        var size = 0
        var firstTimestamp: Int64? = nil
        var maxTimestamp = Int64.min
        for part in parts where part.count > 0 {
            count += part.count
            size += part.bytes.readableBytes
            if firstTimestamp == nil { firstTimestamp = part.firstTimestamp }
            maxTimestamp = max(maxTimestamp, part.maxTimestamp)
        }
        guard let firstTimestamp else {
            throw LogStoreError(.invalidArgument, "a batch needs at least one record")
        }
        guard count <= Int(UInt32.max) else {
            throw LogStoreError(.tooLarge, "batch of \(count) records exceeds \(UInt32.max)")
        }
        let limit = min(maxBodyBytes, BatchFormat.maxBodyBytes)
        guard size <= limit else { throw Self.tooLarge(limit: limit, records: count) }
        var body: ByteBuffer
        if let only = parts.first(where: { $0.count > 0 }), only.count == count {
            body = only.bytes
        } else {
            body = ByteBufferAllocator().buffer(capacity: size)
            for part in parts { body.writeImmutableBuffer(part.bytes) }
        }
        var stored = body
        var usedCodec = CompressionCodec.none
        if codec == .lz4, let compressed = self.compress(body) {
            stored = compressed
            usedCodec = .lz4
        }
        return EncodedBatchBody(
            storedBody: stored,
            attributes: usedCodec.rawValue,
            recordCount: UInt32(count),
            firstTimestamp: firstTimestamp,
            maxTimestamp: maxTimestamp,
            bodyLength: UInt32(body.readableBytes)
        )
    }

    /// Assembles the full batch (header with CRC, then body) for `baseOffset`.
    package static func assemble(_ body: EncodedBatchBody, baseOffset: Int64) -> ByteBuffer {
        var batch = ByteBufferAllocator().buffer(capacity: body.batchSize)
        self.assemble(body, baseOffset: baseOffset, into: &batch)
        return batch
    }

    /// Appends the full batch for `baseOffset` to `buffer` (several batches written in one go lie back to back).
    package static func assemble(_ body: EncodedBatchBody, baseOffset: Int64, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(BatchFormat.headerBytesAfterLength + body.storedBody.readableBytes))
        buffer.writeInteger(BatchFormat.magic)
        buffer.writeInteger(UInt32(0))  // CRC, set below
        buffer.writeInteger(body.attributes)
        buffer.writeInteger(baseOffset)
        buffer.writeInteger(body.recordCount)
        buffer.writeInteger(body.firstTimestamp)
        buffer.writeInteger(body.maxTimestamp)
        buffer.writeInteger(body.bodyLength)
        buffer.writeImmutableBuffer(body.storedBody)
        let crc = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: raw[(start - buffer.readerIndex + BatchFormat.crcCoverageStart)...])
            )
        }
        buffer.setInteger(crc, at: start + BatchFormat.crcPosition)
    }

    /// Encodes a whole batch in one step.
    package static func encode(
        _ records: [LogRecord],
        baseOffset: Int64,
        codec: CompressionCodec
    ) throws(LogStoreError) -> ByteBuffer {
        self.assemble(try self.encodeBody(records, codec: codec), baseOffset: baseOffset)
    }

    /// Checks the CRC of a whole stored batch (exactly `header.totalSize` readable bytes).
    package static func verify(_ batch: ByteBuffer) throws(BatchDecodeError) -> BatchHeader {
        guard let header = BatchHeader.peek(batch) else {
            throw BatchDecodeError(
                "\(batch.readableBytes) bytes, shorter than the \(BatchFormat.headerSize)-byte header"
            )
        }
        if let problem = header.structuralProblem { throw BatchDecodeError(problem) }
        guard batch.readableBytes == header.totalSize else {
            throw BatchDecodeError("length says \(header.totalSize) bytes, have \(batch.readableBytes)")
        }
        let crc = batch.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[BatchFormat.crcCoverageStart...]))
        }
        guard crc == header.crc else {
            throw BatchDecodeError(
                "CRC mismatch: stored 0x\(String(header.crc, radix: 16)), computed 0x\(String(crc, radix: 16))"
            )
        }
        return header
    }

    /// Verifies and decodes a whole stored batch.
    package static func decode(_ batch: ByteBuffer) throws(BatchDecodeError) -> (BatchHeader, [LogRecord]) {
        let header = try self.verify(batch)
        var body = try self.body(of: batch, header: header)
        var records: [LogRecord] = []
        // A record takes at least 20 bytes; never trust the count alone for an allocation.
        records.reserveCapacity(min(Int(header.recordCount), body.readableBytes / 20 + 1))
        var names = HeaderNames()
        for index in 0..<Int(header.recordCount) {
            guard let record = self.readRecord(&body, names: &names) else {
                throw BatchDecodeError("record \(index) of \(header.recordCount) is truncated")
            }
            records.append(record)
        }
        guard body.readableBytes == 0 else {
            throw BatchDecodeError("\(body.readableBytes) bytes left after \(header.recordCount) records")
        }
        return (header, records)
    }

    /// Verifies a whole stored batch and checks its records exactly as ``decode(_:)`` does (same errors), but
    /// builds no `LogRecord`: the records with offsets in `offset..<end` are added to `records` as positions in
    /// the uncompressed body, until `records` holds `maxRecords`. Nothing is added when the batch is bad.
    package static func index(
        _ batch: ByteBuffer,
        into records: inout RawRecords,
        from offset: Int64,
        end: Int64,
        maxRecords: Int
    ) throws(BatchDecodeError) -> BatchHeader {
        let header = try self.verify(batch)
        let body = try self.body(of: batch, header: header)
        var walk = RecordWalk(
            recordCount: Int(header.recordCount),
            baseOffset: header.baseOffset,
            from: offset,
            end: end,
            room: max(maxRecords - records.count, 0),
            batch: Int32(records.batches.count)
        )
        let failure = body.withUnsafeReadableBytes { walk.run($0) }
        if let failure { throw failure }
        if !walk.locations.isEmpty {
            records.batches.append(RawRecords.Batch(body: body, names: walk.names, nameIDs: walk.nameIDs))
            records.locations.append(contentsOf: walk.locations)
            records.noteNames(validUTF8: walk.validUTF8, longest: walk.longestName)
        }
        return header
    }

    /// One pass over an uncompressed records body for ``index(_:into:from:end:maxRecords:)``: the checks of
    /// `readRecord` through one raw pointer, a name table, and the locations of the records in range.
    private struct RecordWalk {
        let recordCount: Int
        let baseOffset: Int64
        let from: Int64
        let end: Int64
        /// Records that may still be added.
        let room: Int
        let batch: Int32
        var locations: [RawRecords.Location] = []
        var names: [String] = []
        /// Where each name of `names` is in the body (its first occurrence).
        var nameSpans: [(start: Int, length: Int)] = []
        var nameIDs: [UInt16] = []
        var validUTF8 = true
        var longestName = 0

        init(recordCount: Int, baseOffset: Int64, from: Int64, end: Int64, room: Int, batch: Int32) {
            self.recordCount = recordCount
            self.baseOffset = baseOffset
            self.from = from
            self.end = end
            self.room = room
            self.batch = batch
        }

        /// The walk; nil when every record is well formed and the body holds nothing more.
        mutating func run(_ raw: UnsafeRawBufferPointer) -> BatchDecodeError? {
            let size = raw.count
            var p = 0
            // The previous record's headers: the next record's names are predicted to be the same, in order.
            var previousFirst = 0
            var previousCount = 0
            for index in 0..<self.recordCount {
                let start = p
                let firstHeader = self.nameIDs.count
                guard let after = self.record(raw, at: p, size: size, previousFirst, previousCount) else {
                    return BatchDecodeError("record \(index) of \(self.recordCount) is truncated")
                }
                p = after
                previousFirst = firstHeader
                previousCount = self.nameIDs.count - firstHeader
                let recordOffset = self.baseOffset + Int64(index)
                if recordOffset >= self.from, recordOffset < self.end, self.locations.count < self.room {
                    if self.locations.isEmpty {
                        // A record takes at least 20 bytes; never trust the count alone for an allocation.
                        self.locations.reserveCapacity(min(self.recordCount - index, self.room, (size - p) / 20 + 1))
                    }
                    self.locations.append(
                        RawRecords.Location(
                            offset: recordOffset,
                            batch: self.batch,
                            position: Int32(start),
                            length: Int32(p - start),
                            firstHeader: Int32(firstHeader)
                        )
                    )
                }
            }
            if p != size {
                return BatchDecodeError("\(size - p) bytes left after \(self.recordCount) records")
            }
            return nil
        }

        @inline(__always)
        private func u32(_ raw: UnsafeRawBufferPointer, _ position: Int) -> Int {
            Int(UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: position, as: UInt32.self)))
        }

        /// Checks the record at `p`; returns the position after it, or nil when it is truncated or malformed.
        @inline(__always)
        private mutating func record(
            _ raw: UnsafeRawBufferPointer,
            at start: Int,
            size: Int,
            _ previousFirst: Int,
            _ previousCount: Int
        ) -> Int? {
            var p = start
            guard size - p >= 12 else { return nil }
            let keyLength = Int(Int32(bigEndian: raw.loadUnaligned(fromByteOffset: p + 8, as: Int32.self)))
            p += 12
            if keyLength >= 0 {
                guard keyLength <= size - p else { return nil }
                p += keyLength
            } else if keyLength != -1 {
                return nil
            }
            guard size - p >= 4 else { return nil }
            let valueLength = self.u32(raw, p)
            p += 4
            guard valueLength <= size - p, size - p - valueLength >= 4 else { return nil }
            p += valueLength
            let headerCount = self.u32(raw, p)
            p += 4
            guard headerCount <= (size - p) / 8 else { return nil }
            if self.nameIDs.isEmpty {
                // Every header takes at least 8 bytes, every record 20.
                self.nameIDs.reserveCapacity(min(headerCount * min(self.recordCount, size / 20 + 1), size / 8))
            }
            for h in 0..<headerCount {
                guard size - p >= 4 else { return nil }
                let nameLength = self.u32(raw, p)
                p += 4
                guard nameLength <= size - p else { return nil }
                let predicted = h < previousCount ? self.nameIDs[previousFirst + h] : RawRecords.uncachedName
                self.nameIDs.append(self.nameID(raw, at: p, length: nameLength, predicted: predicted))
                p += nameLength
                guard size - p >= 4 else { return nil }
                let headerValueLength = self.u32(raw, p)
                p += 4
                guard headerValueLength <= size - p else { return nil }
                p += headerValueLength
            }
            return p
        }

        /// The id of the `length`-byte name at `position`: the predicted one when it matches, else a table search,
        /// else a new entry (decoded once; `String(decoding:)` repairs invalid UTF-8 as `readString` does).
        @inline(__always)
        private mutating func nameID(
            _ raw: UnsafeRawBufferPointer,
            at position: Int,
            length: Int,
            predicted: UInt16
        ) -> UInt16 {
            let base = raw.baseAddress!
            if predicted != RawRecords.uncachedName {
                let span = self.nameSpans[Int(predicted)]
                if span.length == length && (length == 0 || memcmp(base + span.start, base + position, length) == 0) {
                    return predicted
                }
            }
            for (id, span) in self.nameSpans.enumerated() where span.length == length {
                if length == 0 || memcmp(base + span.start, base + position, length) == 0 { return UInt16(id) }
            }
            self.longestName = max(self.longestName, length)
            let bytes = UnsafeRawBufferPointer(start: base + position, count: length)
            var string = String(decoding: bytes, as: UTF8.self)
            if !string.withUTF8({ $0.elementsEqual(bytes) }) { self.validUTF8 = false }
            guard self.names.count < RawRecords.maxNames else { return RawRecords.uncachedName }
            self.names.append(string)
            self.nameSpans.append((position, length))
            return UInt16(self.names.count - 1)
        }
    }

    /// The uncompressed records body of a verified batch.
    private static func body(of batch: ByteBuffer, header: BatchHeader) throws(BatchDecodeError) -> ByteBuffer {
        let stored = batch.getSlice(
            at: batch.readerIndex + BatchFormat.headerSize,
            length: header.totalSize - BatchFormat.headerSize
        )!
        let body: ByteBuffer
        switch header.codec {
        case .lz4:
            body = try self.decompress(stored, length: Int(header.bodyLength))
        case .none?:
            guard stored.readableBytes == Int(header.bodyLength) else {
                throw BatchDecodeError("body is \(stored.readableBytes) bytes, header says \(header.bodyLength)")
            }
            body = stored
        case nil:
            throw BatchDecodeError("unknown codec")
        }
        return body
    }

    /// Header names seen in one batch: the records of a batch repeat the same few names, so each distinct name is
    /// decoded (and, past 15 bytes, allocated) once per batch instead of once per record.
    struct HeaderNames {
        private var names: [(bytes: [UInt8], name: String)] = []

        /// Reads a `length`-byte UTF-8 name from `body`.
        mutating func read(_ length: Int, from body: inout ByteBuffer) -> String? {
            guard length <= body.readableBytes else { return nil }
            let cached: String? = body.withUnsafeReadableBytes { raw in
                for entry in self.names where entry.bytes.count == length {
                    let equal = entry.bytes.withUnsafeBytes { known in
                        length == 0 || memcmp(known.baseAddress!, raw.baseAddress!, length) == 0
                    }
                    if equal { return entry.name }
                }
                return nil
            }
            if let cached {
                body.moveReaderIndex(forwardBy: length)
                return cached
            }
            guard let name = body.readString(length: length) else { return nil }
            if self.names.count < 32 { self.names.append((Array(name.utf8), name)) }
            return name
        }
    }

    private static func readRecord(_ body: inout ByteBuffer, names: inout HeaderNames) -> LogRecord? {
        guard let timestamp = body.readInteger(as: Int64.self), let keyLength = body.readInteger(as: Int32.self) else {
            return nil
        }
        var key: ByteBuffer? = nil
        if keyLength >= 0 {
            guard let slice = body.readSlice(length: Int(keyLength)) else { return nil }
            key = slice
        } else if keyLength != -1 {
            return nil
        }
        guard let valueLength = body.readInteger(as: UInt32.self),
            let value = body.readSlice(length: Int(valueLength)),
            let headerCount = body.readInteger(as: UInt32.self),
            Int(headerCount) <= body.readableBytes / 8
        else { return nil }
        var headers: [LogHeader] = []
        headers.reserveCapacity(Int(headerCount))
        for _ in 0..<headerCount {
            guard let nameLength = body.readInteger(as: UInt32.self),
                let name = names.read(Int(nameLength), from: &body),
                let valueLength = body.readInteger(as: UInt32.self),
                let headerValue = body.readSlice(length: Int(valueLength))
            else { return nil }
            headers.append(LogHeader(name: name, value: headerValue))
        }
        return LogRecord(key: key, headers: headers, value: value, timestamp: timestamp)
    }

    /// The acceleration brokerd passes to `LZ4_compress_fast` (1 is `LZ4_compress_default`). At 2, LZ4 executed 30%
    /// fewer instructions on the benchmarks' records (durable-publish 3,049 → 2,141 per record, callgrind) and
    /// stored about 0.3% more bytes (docs/benchmarks/HISTORY.md, round 30). The block format does not depend on it:
    /// every reader decompresses both alike.
    static let lz4Acceleration: Int32 = 2

    /// LZ4-compresses `body`; nil when that does not make it smaller.
    private static func compress(_ body: ByteBuffer) -> ByteBuffer? {
        let inputSize = body.readableBytes
        guard inputSize > 0 else { return nil }
        let bound = Int(LZ4_compressBound(Int32(inputSize)))
        var output = ByteBufferAllocator().buffer(capacity: bound)
        let written = body.withUnsafeReadableBytes { input in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: bound) { out in
                let size = LZ4_compress_fast(
                    input.baseAddress!.assumingMemoryBound(to: CChar.self),
                    out.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(inputSize),
                    Int32(out.count),
                    Self.lz4Acceleration
                )
                return max(Int(size), 0)
            }
        }
        guard written > 0, written < inputSize else { return nil }
        return output
    }

    private static func decompress(_ stored: ByteBuffer, length: Int) throws(BatchDecodeError) -> ByteBuffer {
        guard stored.readableBytes > 0 else { throw BatchDecodeError("empty LZ4 body") }
        // LZ4 cannot expand a block by more than 255 times (a match of 255 more bytes costs at least one input
        // byte), so a header claiming more is damaged or forged: refuse it before allocating what it claims.
        guard length <= stored.readableBytes * 255 else {
            throw BatchDecodeError(
                "header says the LZ4 body expands to \(length) bytes; \(stored.readableBytes) compressed bytes cannot"
            )
        }
        var output = ByteBufferAllocator().buffer(capacity: max(length, 1))
        let produced = stored.withUnsafeReadableBytes { input in
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: max(length, 1)) { out in
                let size = LZ4_decompress_safe(
                    input.baseAddress!.assumingMemoryBound(to: CChar.self),
                    out.baseAddress!.assumingMemoryBound(to: CChar.self),
                    Int32(input.count),
                    Int32(length)
                )
                return max(Int(size), 0)
            }
        }
        guard produced == length else {
            throw BatchDecodeError("LZ4 body decompressed to \(produced) bytes, header says \(length)")
        }
        return output
    }
}
