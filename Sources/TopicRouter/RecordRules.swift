/// Header names and limits the record checks use.
///
/// TopicRouter does not import WireProtocol, so these are plain strings; BrokerServer maps them onto the
/// wire-level constants (`RecordHeaders` in WireProtocol), which spell them the same way.
package enum RecordRules {
    /// The header carrying a record's consent scopes, one or more separated by commas (`"educational"`,
    /// `"treatment_support, operational_notice"`).
    package static let consentScopeHeader = "consent_scope"
    /// The header carrying a producer's dedupe key.
    package static let dedupeKeyHeader = "dedupe-key"
    /// Longest dedupe key, in bytes.
    package static let maxDedupeKeyBytes = 256
    /// Header-name prefixes only the broker may set (compared ignoring ASCII case): provenance (`broker-`),
    /// quarantine metadata (`quarantine-`) and replay provenance (`replayed-`, `replay-`).
    package static let reservedHeaderPrefixes = ["broker-", "quarantine-", "replayed-", "replay-"]

    private static let reservedPrefixBytes = reservedHeaderPrefixes.map { Array($0.utf8) }

    /// Whether a header name starting with `byte` may start with a reserved prefix: its first byte, ASCII case
    /// folded, is `b`, `q` or `r` (a test checks this against `reservedHeaderPrefixes`). Spelled out rather than
    /// derived from the prefixes, so that asking costs no lazy-global check: every header of every record asks.
    @inline(__always)
    static func mayStartReservedPrefix(_ byte: UInt8) -> Bool {
        switch byte | 0x20 {
        case UInt8(ascii: "b"), UInt8(ascii: "q"), UInt8(ascii: "r"): return true
        default: return false
        }
    }

    /// The reserved prefix `name` starts with (ignoring ASCII case), or nil.
    package static func reservedPrefix(of name: String) -> String? {
        // Every header of every record is checked: most names are ruled out by their first byte alone, and the
        // others (`recipient`, `region`, ...) by the first byte that differs from each prefix.
        let utf8 = name.utf8
        guard let first = utf8.first, Self.mayStartReservedPrefix(first) else { return nil }
        for (index, prefix) in Self.reservedPrefixBytes.enumerated() {
            var position = utf8.startIndex
            var matches = true
            for byte in prefix {
                guard position != utf8.endIndex, Self.lowercased(utf8[position]) == byte else {
                    matches = false
                    break
                }
                utf8.formIndex(after: &position)
            }
            if matches { return Self.reservedHeaderPrefixes[index] }
        }
        return nil
    }

    /// Whether two byte runs are equal once ASCII letters are folded to lowercase.
    static func equalIgnoringASCIICase<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).allSatisfy { Self.lowercased($0) == Self.lowercased($1) }
    }

    /// `byte` with A-Z folded to a-z.
    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 {
        byte &- UInt8(ascii: "A") < 26 ? byte | 0x20 : byte
    }

    /// `text` with A-Z folded to a-z (other characters unchanged).
    static func asciiLowercased(_ text: String) -> String {
        String(decoding: text.utf8.map(Self.lowercased), as: UTF8.self)
    }

    /// Calls `body` with each comma-separated item of `value`, trimmed of spaces and tabs, until it returns false.
    /// An empty value yields one empty item, so "no scope" and "an empty scope" are both visible to the caller.
    static func forEachListItem(
        _ value: UnsafeRawBufferPointer,
        _ body: (UnsafeRawBufferPointer) -> Bool
    ) {
        var start = 0
        while true {
            var end = start
            while end < value.count && value[end] != UInt8(ascii: ",") { end += 1 }
            var low = start
            var high = end
            while low < high && (value[low] == UInt8(ascii: " ") || value[low] == UInt8(ascii: "\t")) { low += 1 }
            while high > low && (value[high - 1] == UInt8(ascii: " ") || value[high - 1] == UInt8(ascii: "\t")) {
                high -= 1
            }
            let item = UnsafeRawBufferPointer(rebasing: value[low..<high])
            guard body(item) else { return }
            guard end < value.count else { return }
            start = end + 1
        }
    }
}

/// A record header as the policy reads it: a name and the value's bytes (treated as UTF-8).
///
/// BrokerServer conforms its wire header type (value in a `ByteBuffer`) so decisions read the bytes in place;
/// `PolicyHeader` is the plain conforming type for tests and tools.
package protocol PolicyHeaderView {
    /// The header name.
    var name: String { get }
    /// Calls `body` with the value's bytes, valid only for the call.
    func withUnsafeValueBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result
}

/// Walks a record's headers in order: calls its second argument with each header's name and value bytes (valid
/// only for that call) until it returns false. With a name as first argument only the headers of that name are
/// visited, and the others' values are never touched (reaching a value costs the caller a buffer access).
///
/// The policy's checks take headers this way, so they are compiled once, non-generic, and the walk over the
/// caller's concrete header type is compiled (specialized) in the caller's module. The generic entry points over
/// `Collection<some PolicyHeaderView>` stay for tests and tools, but they run unspecialized when called from
/// another module (in the release build the binary holds only their unspecialized code, `@inlinable` or not):
/// walking `[WireHeader]` through them cost about 15,000 instructions per published record (callgrind).
package typealias HeaderVisitor = (
    _ named: String?, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
) -> Void

extension Collection where Element: PolicyHeaderView {
    /// Calls `body` with each header's name and value bytes (only the headers called `named`, when given), in
    /// order, until it returns false.
    package func forEachPolicyHeader(
        named: String? = nil, _ body: (_ name: String, _ value: UnsafeRawBufferPointer) -> Bool
    ) {
        for header in self where named == nil || header.name == named {
            guard header.withUnsafeValueBytes({ body(header.name, $0) }) else { return }
        }
    }
}

/// A record header with its value in an array.
package struct PolicyHeader: PolicyHeaderView, Equatable, Sendable {
    /// The header name.
    package var name: String
    /// The value's bytes.
    package var value: [UInt8]
    /// A header with raw bytes.
    package init(name: String, value: [UInt8]) {
        self.name = name
        self.value = value
    }
    /// A header whose value is `value`'s UTF-8.
    package init(_ name: String, _ value: String) {
        self.name = name
        self.value = Array(value.utf8)
    }
    /// Calls `body` with the value's bytes.
    package func withUnsafeValueBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try self.value.withUnsafeBytes(body)
    }
}
