/// Finds the 1-based line of a key or table header in TOML text, for error messages.
///
/// TOMLKit does not report where a value came from, so this is a best-effort scan of the text: it follows
/// `[table]` and `[[array-of-tables]]` headers (counting array entries), records the first line of each
/// `key = …` under the current header, and skips the inside of multi-line strings. Dotted keys and inline tables
/// are not resolved; a lookup that finds nothing returns the header's line, or nil.
struct ConfigLineLocator: Sendable {
    /// A key (or, with `key == ""`, the header) of one table: `table` is "" for the root, `index` counts
    /// `[[table]]` entries from 0 and is 0 for plain tables.
    private struct Slot: Hashable {
        var table: String
        var index: Int
        var key: String
    }

    private var lines: [Slot: Int] = [:]

    /// Scans `text`.
    init(text: String) {
        var table = ""
        var index = 0
        var arrayCounts: [String: Int] = [:]
        var openDelimiter: String? = nil
        var lineNumber = 0
        // "\r\n" is one Character in Swift, so it is a separator of its own.
        for line in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            lineNumber += 1
            if let delimiter = openDelimiter {
                if Self.count(delimiter, in: line) % 2 == 1 { openDelimiter = nil }
                continue
            }
            let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
            if trimmed.hasPrefix("[[") {
                if let close = trimmed.firstRange(of: "]]") {
                    table = Self.trim(trimmed[trimmed.index(trimmed.startIndex, offsetBy: 2)..<close.lowerBound])
                    index = arrayCounts[table, default: -1] + 1
                    arrayCounts[table] = index
                    self.record(Slot(table: table, index: index, key: ""), lineNumber)
                }
                continue
            }
            if trimmed.hasPrefix("[") {
                if let close = trimmed.firstIndex(of: "]") {
                    table = Self.trim(trimmed[trimmed.index(after: trimmed.startIndex)..<close])
                    index = 0
                    self.record(Slot(table: table, index: index, key: ""), lineNumber)
                }
                continue
            }
            if let key = Self.leadingKey(trimmed) {
                self.record(Slot(table: table, index: index, key: key), lineNumber)
            }
            for delimiter in ["\"\"\"", "'''"] where Self.count(delimiter, in: line) % 2 == 1 {
                openDelimiter = delimiter
                break
            }
        }
    }

    /// The line of `key` in the `index`th `[[table]]` (or `[table]`; "" for the root), or of the table's header
    /// when the key is not found (or `key` is nil); nil when neither is found.
    func line(table: String, index: Int = 0, key: String?) -> Int? {
        if let key, let line = self.lines[Slot(table: table, index: index, key: key)] { return line }
        return self.lines[Slot(table: table, index: index, key: "")]
    }

    private mutating func record(_ slot: Slot, _ line: Int) {
        if self.lines[slot] == nil { self.lines[slot] = line }
    }

    /// The key at the start of a `key = value` line: bare (`[A-Za-z0-9_.-]+`) or a basic/literal quoted string.
    private static func leadingKey(_ line: Substring) -> String? {
        guard let first = line.first else { return nil }
        var key: Substring
        var rest: Substring
        if first == "\"" || first == "'" {
            let body = line.dropFirst()
            guard let close = body.firstIndex(of: first) else { return nil }
            key = body[..<close]
            rest = body[body.index(after: close)...]
        } else {
            let end = line.firstIndex(where: { !Self.isBareKeyCharacter($0) }) ?? line.endIndex
            key = line[..<end]
            rest = line[end...]
            guard !key.isEmpty else { return nil }
        }
        rest = rest.drop(while: { $0 == " " || $0 == "\t" })
        guard rest.first == "=" else { return nil }
        return String(key)
    }

    private static func isBareKeyCharacter(_ character: Character) -> Bool {
        guard let ascii = character.asciiValue else { return false }
        switch ascii {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }

    private static func trim(_ text: Substring) -> String {
        var text = text.drop(while: { $0 == " " || $0 == "\t" })
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return String(text)
    }

    private static func count(_ needle: String, in line: Substring) -> Int {
        var count = 0
        var rest = line[...]
        while let found = rest.firstRange(of: needle) {
            count += 1
            rest = rest[found.upperBound...]
        }
        return count
    }
}
