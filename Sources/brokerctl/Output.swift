import Foundation
import WireProtocol

/// A JSON value whose object keys keep the order they were written in, so `--json` output is stable byte for byte.
enum JSON {
    case object([(String, JSON)])
    case array([JSON])
    case string(String)
    case int(Int64)
    case bool(Bool)
    case null

    /// An integer, or null when it is negative (brokerd sends -1 for "none").
    static func nonNegative(_ value: Int64) -> JSON { value < 0 ? .null : .int(value) }

    /// Strings as a JSON array.
    static func strings(_ values: [String]) -> JSON { .array(values.map { .string($0) }) }

    /// Compact JSON text, no trailing newline.
    var text: String {
        switch self {
        case .object(let fields):
            return "{" + fields.map { "\(JSONText.quoted($0.0)):\($0.1.text)" }.joined(separator: ",") + "}"
        case .array(let items):
            return "[" + items.map(\.text).joined(separator: ",") + "]"
        case .string(let value):
            return JSONText.quoted(value)
        case .int(let value):
            return "\(value)"
        case .bool(let value):
            return value ? "true" : "false"
        case .null:
            return "null"
        }
    }

    /// Prints the value as one JSON document on its own line.
    func print() {
        Swift.print(self.text)
    }
}

/// Prints rows under a header, columns padded to their widest cell (in characters); the last column is not padded.
func printTable(_ header: [String], _ rows: [[String]]) {
    for line in tableLines(header, rows) { print(line) }
}

/// The lines `printTable` prints.
func tableLines(_ header: [String], _ rows: [[String]]) -> [String] {
    let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
    return ([header] + rows).map { row in
        row.enumerated().map { column, cell in
            column == row.count - 1 ? cell : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
}

/// Bytes for people: `512 B`, `4.0 KiB`, `1.5 MiB`, `2.0 GiB`.
func byteText(_ bytes: Int64) -> String {
    guard bytes >= 1024 else { return "\(bytes) B" }
    var value = Double(bytes)
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        value /= 1024
        if value < 1024 || unit == "TiB" { return String(format: "%.1f", value) + " " + unit }
    }
    return "\(bytes) B"
}

/// A duration in milliseconds for people, largest units first: `7d`, `1h30m`, `2m5s`, `250ms`.
func durationText(millis: Int64) -> String {
    guard millis >= 1000 else { return "\(millis)ms" }
    var seconds = millis / 1000
    var parts: [String] = []
    for (unit, size) in [("d", Int64(86_400)), ("h", 3600), ("m", 60)] where seconds >= size {
        parts.append("\(seconds / size)\(unit)")
        seconds %= size
    }
    if seconds > 0 || parts.isEmpty { parts.append("\(seconds)s") }
    return parts.prefix(2).joined()
}
