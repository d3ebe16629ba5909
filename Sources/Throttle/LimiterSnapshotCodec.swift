/// The file format for `LimiterSet.snapshot`, so that window caps survive a restart.
///
/// Layout, all integers little-endian:
/// ```
/// magic "BRLS" | version u8 (1) | entry count u32
/// per entry: limiter length u16, limiter UTF-8 | key length u32, key UTF-8 | event count u16, events u64 each
/// CRC-32 (IEEE) u32 of every byte before it
/// ```
/// A torn or corrupted file fails the checksum and is reported, never half-applied: `decode` returns every entry or
/// throws. The server writes it to a temporary file, syncs it and renames it over the previous snapshot.
package enum LimiterSnapshotCodec {
    /// The first four bytes.
    package static let magic: [UInt8] = Array("BRLS".utf8)
    /// The format version written.
    package static let version: UInt8 = 1
    /// Longest key accepted when decoding (a header value is bounded by the frame size anyway).
    package static let maxKeyBytes = 16 * 1024 * 1024

    /// Encodes `entries`. Limiter names longer than 65,535 bytes and more than 65,535 events per key cannot occur
    /// (names are validated identifiers; a window keeps at most `WindowCap.maxLimit` events).
    package static func encode(_ entries: [LimiterSnapshotEntry]) -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: Self.magic)
        out.append(Self.version)
        Self.append(UInt32(entries.count), to: &out)
        for entry in entries {
            let name = Array(entry.limiter.utf8.prefix(Int(UInt16.max)))
            Self.append(UInt16(name.count), to: &out)
            out.append(contentsOf: name)
            let key = Array(entry.key.utf8)
            Self.append(UInt32(key.count), to: &out)
            out.append(contentsOf: key)
            let times = entry.eventTimes.suffix(Int(UInt16.max))
            Self.append(UInt16(times.count), to: &out)
            for time in times { Self.append(time, to: &out) }
        }
        Self.append(CRC32.checksum(out), to: &out)
        return out
    }

    /// Decodes a snapshot written by `encode`; `file` names it in errors.
    package static func decode(_ bytes: [UInt8], file: String) throws(LimiterSnapshotError) -> [LimiterSnapshotEntry] {
        guard bytes.count >= Self.magic.count + 1 + 4 + 4 else {
            throw LimiterSnapshotError(file: file, offset: 0, "only \(bytes.count) bytes; a snapshot has at least 13")
        }
        let body = bytes.count - 4
        var reader = Reader(bytes: bytes, end: body, file: file)
        let stored = Reader.littleEndian(bytes, at: body, width: 4)
        let computed = UInt64(CRC32.checksum(bytes[..<body]))
        guard stored == computed else {
            throw LimiterSnapshotError(
                file: file,
                offset: body,
                "checksum mismatch (stored \(stored), computed \(computed)); the file is torn or corrupted"
            )
        }
        guard Array(bytes[0..<4]) == Self.magic else {
            throw LimiterSnapshotError(file: file, offset: 0, "not a limiter snapshot (magic is not BRLS)")
        }
        reader.offset = 4
        let version = try reader.integer(width: 1, "version")
        guard version == UInt64(Self.version) else {
            throw LimiterSnapshotError(file: file, offset: 4, "unsupported version \(version); this build reads 1")
        }
        let count = try reader.integer(width: 4, "entry count")
        var entries: [LimiterSnapshotEntry] = []
        for _ in 0..<count {
            let nameLength = try reader.integer(width: 2, "limiter name length")
            let name = try reader.string(length: nameLength, "limiter name")
            let keyOffset = reader.offset
            let keyLength = try reader.integer(width: 4, "key length")
            guard keyLength <= UInt64(Self.maxKeyBytes) else {
                throw LimiterSnapshotError(
                    file: file,
                    offset: keyOffset,
                    "key of \(keyLength) bytes exceeds the limit of \(Self.maxKeyBytes)"
                )
            }
            let key = try reader.string(length: keyLength, "key")
            let eventCount = try reader.integer(width: 2, "event count")
            var times: [UInt64] = []
            times.reserveCapacity(Int(eventCount))
            for _ in 0..<eventCount { times.append(try reader.integer(width: 8, "event time")) }
            entries.append(LimiterSnapshotEntry(limiter: name, key: key, eventTimes: times))
        }
        guard reader.offset == body else {
            throw LimiterSnapshotError(
                file: file,
                offset: reader.offset,
                "\(body - reader.offset) unexpected bytes after the last entry"
            )
        }
        return entries
    }

    private static func append<Integer: FixedWidthInteger>(_ value: Integer, to out: inout [UInt8]) {
        var value = value.littleEndian
        withUnsafeBytes(of: &value) { out.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        let end: Int
        let file: String
        var offset = 0

        static func littleEndian(_ bytes: [UInt8], at offset: Int, width: Int) -> UInt64 {
            var value: UInt64 = 0
            for index in (0..<width).reversed() { value = value << 8 | UInt64(bytes[offset + index]) }
            return value
        }

        mutating func integer(width: Int, _ what: String) throws(LimiterSnapshotError) -> UInt64 {
            try self.require(width, what)
            defer { self.offset += width }
            return Self.littleEndian(self.bytes, at: self.offset, width: width)
        }

        mutating func string(length: UInt64, _ what: String) throws(LimiterSnapshotError) -> String {
            guard length <= UInt64(self.end - self.offset) else {
                throw LimiterSnapshotError(
                    file: self.file,
                    offset: self.offset,
                    "\(what) of \(length) bytes runs past the end of the entries (\(self.end - self.offset) left)"
                )
            }
            let slice = self.bytes[self.offset..<(self.offset + Int(length))]
            guard let text = String(validating: slice, as: UTF8.self) else {
                throw LimiterSnapshotError(file: self.file, offset: self.offset, "\(what) is not valid UTF-8")
            }
            self.offset += Int(length)
            return text
        }

        private func require(_ width: Int, _ what: String) throws(LimiterSnapshotError) {
            guard self.end - self.offset >= width else {
                throw LimiterSnapshotError(
                    file: self.file,
                    offset: self.offset,
                    "truncated: \(what) needs \(width) bytes, \(self.end - self.offset) left"
                )
            }
        }
    }
}

/// A limiter snapshot that cannot be read: which file, at which byte, and what is wrong.
package struct LimiterSnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file as named by the caller.
    package var file: String
    /// Byte offset of the problem.
    package var offset: Int
    /// What is wrong.
    package var message: String

    /// Creates an error.
    package init(file: String, offset: Int, _ message: String) {
        self.file = file
        self.offset = offset
        self.message = message
    }

    /// `file: byte N: message`.
    package var description: String { "\(self.file): byte \(self.offset): \(self.message)" }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { index in
        var crc = UInt32(index)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xEDB8_8320 : crc >> 1 }
        return crc
    }

    static func checksum<Bytes: Collection>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = Self.table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
