/// Rejects the TOML inputs that make TOMLKit 0.6.0's bundled toml++ abort instead of reporting an error.
///
/// toml++ before marzer/tomlplusplus#301 calls `parse_key()` on whatever follows a table header's `[` or `[[`; when
/// that is not a key character (`[`, `[=`, `[[[a]]]`, `[` at the end of the text) a debug build aborts on an
/// assertion and a release build has undefined behaviour. Found by `make fuzz` (FuzzConfig). This scan finds table
/// headers the way TOML does — a `[` that starts a line outside any string, comment or array value — and requires
/// a bare-key character or a quote after the brackets and spaces, which is the check the upstream fix adds.
enum TOMLPrecheck {
    static func check(_ text: String) throws(ConfigError) {
        let bytes = Array(text.utf8)
        var index = 0
        var line = 1
        var arrayDepth = 0  // '[' opened by a value (after '='), not by a header
        var atLineStart = true
        var sawEquals = false

        func peek(_ offset: Int) -> UInt8? { index + offset < bytes.count ? bytes[index + offset] : nil }
        func skipString(quote: UInt8) {
            let multi = peek(1) == quote && peek(2) == quote
            index += multi ? 3 : 1
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\n") {
                    line += 1
                    if !multi { return }  // an unterminated single-line string: toml++ reports it
                }
                if byte == UInt8(ascii: "\\"), quote == UInt8(ascii: "\"") {
                    index += 2
                    continue
                }
                if byte == quote {
                    if !multi {
                        index += 1
                        return
                    }
                    if peek(1) == quote, peek(2) == quote {
                        index += 3
                        while index < bytes.count, bytes[index] == quote { index += 1 }  // up to two more quotes
                        return
                    }
                }
                index += 1
            }
        }

        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\n"):
                line += 1
                index += 1
                if arrayDepth == 0 { sawEquals = false }
                atLineStart = arrayDepth == 0
                continue
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"):
                index += 1
                continue
            case UInt8(ascii: "#"):
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n") { index += 1 }
                continue
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                skipString(quote: byte)
            case UInt8(ascii: "="):
                sawEquals = true
                index += 1
            case UInt8(ascii: "[") where atLineStart && arrayDepth == 0 && !sawEquals:
                index += 1
                if peek(0) == UInt8(ascii: "[") { index += 1 }
                while let next = peek(0), next == UInt8(ascii: " ") || next == UInt8(ascii: "\t") { index += 1 }
                guard let first = peek(0), Self.startsKey(first) else {
                    throw ConfigError(
                        "invalid TOML: a table header needs a name after '[', like [server] or [[topics]]",
                        line: line
                    )
                }
                // The rest of the header is an ordinary key, which toml++ parses safely.
                while index < bytes.count, bytes[index] != UInt8(ascii: "\n"), bytes[index] != UInt8(ascii: "#") {
                    if bytes[index] == UInt8(ascii: "\"") || bytes[index] == UInt8(ascii: "'") {
                        skipString(quote: bytes[index])
                    } else {
                        index += 1
                    }
                }
            case UInt8(ascii: "["):
                if sawEquals || arrayDepth > 0 { arrayDepth += 1 }
                index += 1
            case UInt8(ascii: "]"):
                if arrayDepth > 0 { arrayDepth -= 1 }
                index += 1
            default:
                index += 1
            }
            atLineStart = false
        }
    }

    /// A bare-key character (A-Z a-z 0-9 _ -) or a string delimiter.
    private static func startsKey(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "\""), UInt8(ascii: "'"):
            true
        default:
            false
        }
    }
}
