import Logging
import NIOCore

/// Durable committed offsets of consumer groups, keyed by (group, topic).
///
/// A ``DurableTable`` (layout in docs/STORAGE.md, "Offset store"): every commit is one CRC-protected entry,
/// written and fdatasynced before `commit` returns. Opening replays the file, truncating a torn or corrupt tail,
/// and the file is compacted (temp file, fsync, rename, directory fsync) once it is larger than four times its
/// live entries and at least `compactionMinimumBytes`. A failed write or sync puts the store in a failed state:
/// later commits fail; `committed` keeps answering the last durable values.
package final class OffsetStore: Sendable {
    /// Longest group or topic name, in UTF-8 bytes.
    package static let maxNameBytes = Int(UInt16.max)

    /// The offsets file.
    package var path: String { self.table.path }
    /// The table holding the offsets.
    private let table: DurableTable

    /// Opens (or creates) the offset file at `path`, recovering from a torn tail.
    package convenience init(path: String) throws(LogStoreError) {
        try self.init(path: path, logger: Logger(label: "brokerd.offsets"))
    }

    /// Opens (or creates) the offset file at `path`, recovering from a torn tail.
    /// - Parameters:
    ///   - logger: where recovery and failures are reported.
    ///   - io: the file-system seam.
    ///   - compactionMinimumBytes: the file is never compacted below this size.
    package init(
        path: String,
        logger: Logger,
        io: any FileIO = PosixFileIO(),
        compactionMinimumBytes: Int64 = 64 * 1024
    ) throws(LogStoreError) {
        self.table = try DurableTable(
            path: path,
            label: "offset store",
            logger: logger,
            io: io,
            compactionMinimumBytes: compactionMinimumBytes
        )
    }

    /// The committed next-offset for the group on the topic, if any.
    package func committed(group: String, topic: String) -> Int64? {
        guard let value = self.table.get(Self.key(group: group, topic: topic)), value.count == 8 else { return nil }
        return value.reduce(Int64(0)) { $0 << 8 | Int64($1) }
    }

    /// Every committed offset: (group, topic, next offset), sorted by group, then topic.
    package func allCommitted() -> [(group: String, topic: String, offset: Int64)] {
        self.table.snapshot().compactMap { key, value -> (group: String, topic: String, offset: Int64)? in
            guard value.count == 8, let (group, topic) = Self.split(key) else { return nil }
            return (group, topic, value.reduce(Int64(0)) { $0 << 8 | Int64($1) })
        }.sorted { ($0.group, $0.topic) < ($1.group, $1.topic) }
    }

    /// Durably records the group's next offset (fsynced before it returns). A lower offset than before is stored as
    /// given; the caller validates.
    package func commit(group: String, topic: String, offset: Int64) throws(LogStoreError) {
        try Self.validate(group: group, topic: topic)
        try self.table.put(Self.key(group: group, topic: topic), Self.value(offset))
    }

    /// The durable-table entry a commit writes (for tests and docs).
    package static func encodeEntry(group: String, topic: String, offset: Int64) throws(LogStoreError) -> ByteBuffer {
        try Self.validate(group: group, topic: topic)
        return try DurableTable.encodeEntry([.put(key: Self.key(group: group, topic: topic), value: Self.value(offset))]
        )
    }

    /// The table key of (group, topic): `"<UTF-8 length of group>:" + group + topic`, which is injective.
    package static func key(group: String, topic: String) -> String {
        "\(group.utf8.count):\(group)\(topic)"
    }

    /// The (group, topic) of a key made by `key(group:topic:)`; nil for anything else.
    package static func split(_ key: String) -> (group: String, topic: String)? {
        let utf8 = Array(key.utf8)
        guard let colon = utf8.firstIndex(of: UInt8(ascii: ":")), colon > 0,
            let length = Int(String(decoding: utf8[..<colon], as: UTF8.self)), length >= 0,
            colon + 1 + length <= utf8.count
        else { return nil }
        let groupEnd = colon + 1 + length
        guard let group = String(validating: utf8[(colon + 1)..<groupEnd], as: UTF8.self),
            let topic = String(validating: utf8[groupEnd...], as: UTF8.self)
        else { return nil }
        return (group, topic)
    }

    private static func value(_ offset: Int64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: offset >> (56 - 8 * $0)) }
    }

    private static func validate(group: String, topic: String) throws(LogStoreError) {
        guard group.utf8.count <= Self.maxNameBytes, topic.utf8.count <= Self.maxNameBytes else {
            throw LogStoreError(.invalidArgument, "group and topic names are limited to \(Self.maxNameBytes) bytes")
        }
    }
}
