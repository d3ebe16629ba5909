/// Why a record value is not a JSON object the policy can check.
package struct JSONScanError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Byte offset in the value where the problem was found.
    package var offset: Int
    /// What is wrong.
    package var message: String
    /// Creates an error.
    package init(offset: Int, message: String) {
        self.offset = offset
        self.message = message
    }
    /// `message at byte N`.
    package var description: String { "\(self.message) at byte \(self.offset)" }
}

/// An object key found by `JSONKeyScanner.keys(in:)`.
package struct JSONKey: Equatable, Sendable, CustomStringConvertible {
    /// The key, escapes decoded.
    package var name: String
    /// How many objects and arrays enclose the key: 1 for the keys of the top-level object, 2 for the keys of an
    /// object that is the value of a top-level key, 4 in `{"a": [{"k": 1}]}` (object, array, object).
    package var depth: Int
    /// Creates a key.
    package init(_ name: String, depth: Int) {
        self.name = name
        self.depth = depth
    }
    /// `name@depth`.
    package var description: String { "\(self.name)@\(self.depth)" }
}

/// A strict, allocation-light JSON scanner that validates a value and reports its object keys.
///
/// It accepts exactly one JSON object (RFC 8259) surrounded by optional whitespace: objects, arrays, strings
/// with every escape (`\uXXXX` surrogates must pair), numbers in the RFC grammar (no leading zeros, no `+`, no
/// bare `.`), `true`, `false`, `null`. Strings must be valid UTF-8 (no overlong forms, no encoded surrogates,
/// nothing above U+10FFFF) and contain no raw control bytes. Anything after the object is an error.
///
/// It is fuzz-safe: there is no recursion (open containers are a 64-bit stack, one bit per level, so nesting is
/// bounded by `maxDepth`), every loop advances through the input, and every read is bounds-checked. It does not
/// allocate on the heap: keys are handed to the caller as bytes in place, or, when they contain escapes, decoded
/// into a stack buffer.
package enum JSONKeyScanner {
    /// Deepest nesting of objects and arrays accepted; the top-level object is depth 1.
    package static let maxDepth = 64

    /// Validates `bytes` and calls `onKey` with every object key at any depth, in document order: its decoded
    /// UTF-8 bytes (valid only during the call), its depth (the number of enclosing objects and arrays, 1 = top
    /// level) and the offset of its opening quote.
    ///
    /// Keys are reported as they are met, so a caller that sees keys and then an error must discard what it saw.
    package static func scan(
        _ bytes: UnsafeRawBufferPointer,
        onKey: (_ key: UnsafeRawBufferPointer, _ depth: Int, _ offset: Int) -> Void
    ) throws(JSONScanError) {
        var scanner = Scanner(bytes: bytes)
        try scanner.run(onKey: onKey)
    }

    /// Every key of the JSON object in `bytes` (for tests and tools; allocates).
    package static func keys(in bytes: [UInt8]) throws(JSONScanError) -> [JSONKey] {
        var keys: [JSONKey] = []
        let failure = bytes.withUnsafeBytes { (buffer) -> JSONScanError? in
            do throws(JSONScanError) {
                try Self.scan(buffer) { key, depth, _ in
                    keys.append(JSONKey(String(decoding: key, as: UTF8.self), depth: depth))
                }
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
        return keys
    }

    /// Whether `bytes` is one valid JSON object.
    package static func isValidObject(_ bytes: [UInt8]) -> Bool {
        (try? Self.keys(in: bytes)) != nil
    }

    private enum Expect {
        case value, valueOrClose, key, keyOrClose, colon, commaOrClose
    }

    private struct Scanner {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        var depth = 0
        /// Bit `d - 1` is set when the container open at depth `d` is an object, clear for an array.
        var objects: UInt64 = 0

        init(bytes: UnsafeRawBufferPointer) {
            self.bytes = bytes
        }

        mutating func run(onKey: (UnsafeRawBufferPointer, Int, Int) -> Void) throws(JSONScanError) {
            self.skipWhitespace()
            guard self.index < self.bytes.count else {
                throw self.failure("empty value; a JSON object is required")
            }
            guard self.bytes[self.index] == UInt8(ascii: "{") else {
                throw self.failure("a JSON object is required, found \(Self.describe(self.bytes[self.index]))")
            }
            var expect = Expect.value
            repeat {
                self.skipWhitespace()
                guard self.index < self.bytes.count else {
                    throw self.failure("the value ends inside \(self.depth) open object(s)/array(s)")
                }
                let byte = self.bytes[self.index]
                switch expect {
                case .value, .valueOrClose:
                    if expect == .valueOrClose && byte == UInt8(ascii: "]") {
                        self.index += 1
                        self.depth -= 1
                        expect = .commaOrClose
                        continue
                    }
                    expect = try self.value(startingWith: byte)
                    // The usual `value,` in an object takes its comma here, not in a turn of the loop of its own.
                    if expect == .commaOrClose, self.index < self.bytes.count,
                        self.bytes[self.index] == UInt8(ascii: ","), (self.objects >> UInt64(self.depth - 1)) & 1 == 1
                    {
                        self.index += 1
                        expect = .key
                    }
                case .key, .keyOrClose:
                    if expect == .keyOrClose && byte == UInt8(ascii: "}") {
                        self.index += 1
                        self.depth -= 1
                        expect = .commaOrClose
                        continue
                    }
                    guard byte == UInt8(ascii: "\"") else {
                        throw self.failure("expected a string key, found \(Self.describe(byte))")
                    }
                    let offset = self.index
                    let (start, end, escaped) = try self.string()
                    let raw = UnsafeRawBufferPointer(rebasing: self.bytes[start..<end])
                    if escaped {
                        withUnsafeTemporaryAllocation(byteCount: raw.count, alignment: 1) { buffer in
                            let length = Self.decodeEscapes(raw, into: buffer)
                            onKey(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), self.depth, offset)
                        }
                    } else {
                        onKey(raw, self.depth, offset)
                    }
                    // The usual `"key":` takes its colon here, not in a turn of the loop of its own.
                    if self.index < self.bytes.count && self.bytes[self.index] == UInt8(ascii: ":") {
                        self.index += 1
                        expect = .value
                    } else {
                        expect = .colon
                    }
                case .colon:
                    guard byte == UInt8(ascii: ":") else {
                        throw self.failure("expected ':' after an object key, found \(Self.describe(byte))")
                    }
                    self.index += 1
                    expect = .value
                case .commaOrClose:
                    let inObject = (self.objects >> UInt64(self.depth - 1)) & 1 == 1
                    let close = inObject ? UInt8(ascii: "}") : UInt8(ascii: "]")
                    if byte == UInt8(ascii: ",") {
                        self.index += 1
                        expect = inObject ? .key : .value
                    } else if byte == close {
                        self.index += 1
                        self.depth -= 1
                    } else {
                        throw self.failure(
                            "expected ',' or '\(inObject ? "}" : "]")', found \(Self.describe(byte))"
                        )
                    }
                }
            } while self.depth > 0
            self.skipWhitespace()
            guard self.index == self.bytes.count else {
                throw self.failure("\(self.bytes.count - self.index) trailing byte(s) after the JSON object")
            }
        }

        /// Consumes one value starting with `byte`; returns what comes next.
        private mutating func value(startingWith byte: UInt8) throws(JSONScanError) -> Expect {
            switch byte {
            case UInt8(ascii: "{"):
                try self.open(object: true)
                return .keyOrClose
            case UInt8(ascii: "["):
                try self.open(object: false)
                return .valueOrClose
            case UInt8(ascii: "\""):
                _ = try self.string()
            case UInt8(ascii: "t"):
                try self.literal("true")
            case UInt8(ascii: "f"):
                try self.literal("false")
            case UInt8(ascii: "n"):
                try self.literal("null")
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                try self.number()
            default:
                throw self.failure("expected a value, found \(Self.describe(byte))")
            }
            return .commaOrClose
        }

        private mutating func open(object: Bool) throws(JSONScanError) {
            guard self.depth < JSONKeyScanner.maxDepth else {
                throw self.failure("objects and arrays nest deeper than \(JSONKeyScanner.maxDepth) levels")
            }
            let bit: UInt64 = 1 << UInt64(self.depth)
            if object { self.objects |= bit } else { self.objects &= ~bit }
            self.depth += 1
            self.index += 1
        }

        private mutating func literal(_ word: StaticString) throws(JSONScanError) {
            let length = word.utf8CodeUnitCount
            let start = word.utf8Start
            guard self.bytes.count - self.index >= length else {
                throw self.failure("expected '\(word)'")
            }
            for offset in 0..<length where self.bytes[self.index + offset] != start[offset] {
                throw self.failure("expected '\(word)'")
            }
            self.index += length
        }

        private mutating func number() throws(JSONScanError) {
            if self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
            guard self.index < self.bytes.count, Self.isDigit(self.bytes[self.index]) else {
                throw self.failure("a number needs a digit here")
            }
            if self.bytes[self.index] == UInt8(ascii: "0") {
                self.index += 1
            } else {
                self.skipDigits()
            }
            if self.index < self.bytes.count && self.bytes[self.index] == UInt8(ascii: ".") {
                self.index += 1
                guard self.index < self.bytes.count, Self.isDigit(self.bytes[self.index]) else {
                    throw self.failure("a number needs a digit after '.'")
                }
                self.skipDigits()
            }
            if self.index < self.bytes.count
                && (self.bytes[self.index] == UInt8(ascii: "e") || self.bytes[self.index] == UInt8(ascii: "E"))
            {
                self.index += 1
                if self.index < self.bytes.count
                    && (self.bytes[self.index] == UInt8(ascii: "+") || self.bytes[self.index] == UInt8(ascii: "-"))
                {
                    self.index += 1
                }
                guard self.index < self.bytes.count, Self.isDigit(self.bytes[self.index]) else {
                    throw self.failure("a number needs a digit in its exponent")
                }
                self.skipDigits()
            }
        }

        private mutating func skipDigits() {
            while self.index < self.bytes.count && Self.isDigit(self.bytes[self.index]) { self.index += 1 }
        }

        /// Consumes a string (at its opening quote); returns the content's range and whether it has escapes.
        ///
        /// Plain ASCII (no quote, backslash, control byte or byte ≥ 0x80) is skipped eight bytes at a time; the
        /// byte that stops the run is then handled on its own. The string scan was the policy's largest cost per
        /// record (callgrind, byte at a time: about 300 instructions per string of the benchmark's events).
        private mutating func string() throws(JSONScanError) -> (start: Int, end: Int, escaped: Bool) {
            let quote = self.index
            let start = self.index + 1
            var escaped = false
            self.index = start
            while true {
                self.index = Self.plainRunEnd(self.bytes, from: self.index)
                guard self.index < self.bytes.count else {
                    throw JSONScanError(offset: quote, message: "unterminated string")
                }
                let byte = self.bytes[self.index]
                switch byte {
                case UInt8(ascii: "\""):
                    let end = self.index
                    self.index += 1
                    return (start, end, escaped)
                case UInt8(ascii: "\\"):
                    escaped = true
                    try self.escape()
                case 0..<0x20:
                    throw self.failure("raw control byte \(Self.hex(byte)) in a string; escape it")
                default:  // 0x80...: plainRunEnd stops only at the four kinds above
                    try self.multiByteScalar()
                }
            }
        }

        /// The index of the first byte at or after `index` that is a quote, a backslash, a control byte or ≥ 0x80
        /// (`bytes.count` when there is none).
        @inline(__always)
        private static func plainRunEnd(_ bytes: UnsafeRawBufferPointer, from index: Int) -> Int {
            guard let base = bytes.baseAddress else { return index }
            let count = bytes.count
            var index = index
            let ones: UInt64 = 0x0101_0101_0101_0101
            let highs: UInt64 = 0x8080_8080_8080_8080
            while count - index >= 8 {
                let word = UInt64(littleEndian: base.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                let quotes = word ^ (ones &* UInt64(UInt8(ascii: "\"")))
                let backslashes = word ^ (ones &* UInt64(UInt8(ascii: "\\")))
                // A byte of x is zero (quote or backslash found) iff its high bit is set in (x - 1s) & ~x; a byte of
                // the word is below 0x20 iff its high bit is set in (word - 0x20s) & ~word. Exact for "any byte".
                let stop =
                    ((quotes &- ones) & ~quotes) | ((backslashes &- ones) & ~backslashes)
                    | ((word &- ones &* 0x20) & ~word) | word
                // The subtractions borrow only upwards, so the lowest flagged byte is exact (a byte above it may be
                // flagged by a borrow): it is the first stop byte.
                if stop & highs != 0 { return index + (stop & highs).trailingZeroBitCount / 8 }
                index += 8
            }
            while index < count {
                let byte = base.load(fromByteOffset: index, as: UInt8.self)
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 || byte >= 0x80 {
                    return index
                }
                index += 1
            }
            return index
        }

        /// Consumes one escape sequence (at its backslash).
        private mutating func escape() throws(JSONScanError) {
            let backslash = self.index
            guard self.index + 1 < self.bytes.count else { throw self.failure("unterminated escape") }
            switch self.bytes[self.index + 1] {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                self.index += 2
            case UInt8(ascii: "u"):
                let unit = try self.hex4(at: self.index + 2)
                self.index += 6
                switch unit {
                case 0xD800...0xDBFF:
                    func unpaired() -> JSONScanError {
                        JSONScanError(offset: backslash, message: "\\u escape of an unpaired high surrogate")
                    }
                    guard self.index + 1 < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\\"),
                        self.bytes[self.index + 1] == UInt8(ascii: "u")
                    else { throw unpaired() }
                    guard (0xDC00...0xDFFF).contains(try self.hex4(at: self.index + 2)) else { throw unpaired() }
                    self.index += 6
                case 0xDC00...0xDFFF:
                    throw JSONScanError(offset: backslash, message: "\\u escape of an unpaired low surrogate")
                default:
                    break
                }
            default:
                throw self.failure("invalid escape \\\(Self.describe(self.bytes[self.index + 1]))")
            }
        }

        /// The value of four hex digits at `offset`.
        private func hex4(at offset: Int) throws(JSONScanError) -> UInt32 {
            guard self.bytes.count - offset >= 4 else {
                throw JSONScanError(offset: offset, message: "\\u needs four hex digits")
            }
            var value: UInt32 = 0
            for position in offset..<(offset + 4) {
                guard let digit = Self.hexValue(self.bytes[position]) else {
                    throw JSONScanError(offset: position, message: "\\u needs four hex digits")
                }
                value = value << 4 | UInt32(digit)
            }
            return value
        }

        /// Consumes one multi-byte UTF-8 scalar (at its lead byte), rejecting every ill-formed sequence.
        private mutating func multiByteScalar() throws(JSONScanError) {
            let lead = self.bytes[self.index]
            let count: Int
            var low: UInt8 = 0x80
            var high: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: count = 1
            case 0xE0:
                count = 2
                low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: count = 2
            case 0xED:
                count = 2
                high = 0x9F
            case 0xF0:
                count = 3
                low = 0x90
            case 0xF1...0xF3: count = 3
            case 0xF4:
                count = 3
                high = 0x8F
            default: throw self.failure("invalid UTF-8 lead byte \(Self.hex(lead)) in a string")
            }
            guard self.bytes.count - self.index > count else {
                throw self.failure("truncated UTF-8 sequence in a string")
            }
            for position in 1...count {
                let byte = self.bytes[self.index + position]
                let range = position == 1 ? low...high : 0x80...0xBF
                guard range.contains(byte) else {
                    throw JSONScanError(offset: self.index + position, message: "invalid UTF-8 sequence in a string")
                }
            }
            self.index += count + 1
        }

        private mutating func skipWhitespace() {
            while self.index < self.bytes.count {
                switch self.bytes[self.index] {
                case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
                default: return
                }
            }
        }

        private func failure(_ message: String) -> JSONScanError {
            JSONScanError(offset: self.index, message: message)
        }

        private static func isDigit(_ byte: UInt8) -> Bool {
            byte &- UInt8(ascii: "0") < 10
        }

        private static func hexValue(_ byte: UInt8) -> UInt8? {
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
            default: return nil
            }
        }

        /// `'x'` for printable ASCII, `byte 0xNN` otherwise.
        static func describe(_ byte: UInt8) -> String {
            if byte >= 0x21 && byte < 0x7F { return "'\(Character(Unicode.Scalar(byte)))'" }
            return "byte \(Self.hex(byte))"
        }

        /// `0xNN`.
        static func hex(_ byte: UInt8) -> String {
            let digits = String(byte, radix: 16, uppercase: true)
            return "0x\(digits.count == 1 ? "0" : "")\(digits)"
        }

        /// Decodes the escapes of already-validated string content into `out` (never longer than `raw`); returns
        /// the decoded length.
        static func decodeEscapes(_ raw: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) -> Int {
            var read = 0
            var written = 0
            func put(_ byte: UInt8) {
                out[written] = byte
                written += 1
            }
            func unit(at offset: Int) -> UInt32 {
                var value: UInt32 = 0
                for position in offset..<(offset + 4) { value = value << 4 | UInt32(Self.hexValue(raw[position])!) }
                return value
            }
            while read < raw.count {
                let byte = raw[read]
                guard byte == UInt8(ascii: "\\") else {
                    put(byte)
                    read += 1
                    continue
                }
                let kind = raw[read + 1]
                read += 2
                switch kind {
                case UInt8(ascii: "b"): put(0x08)
                case UInt8(ascii: "f"): put(0x0C)
                case UInt8(ascii: "n"): put(0x0A)
                case UInt8(ascii: "r"): put(0x0D)
                case UInt8(ascii: "t"): put(0x09)
                case UInt8(ascii: "u"):
                    var scalar = unit(at: read)
                    read += 4
                    if (0xD800...0xDBFF).contains(scalar) {
                        let low = unit(at: read + 2)
                        read += 6
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    }
                    switch scalar {
                    case 0..<0x80:
                        put(UInt8(scalar))
                    case 0x80..<0x800:
                        put(UInt8(0xC0 | scalar >> 6))
                        put(UInt8(0x80 | scalar & 0x3F))
                    case 0x800..<0x10000:
                        put(UInt8(0xE0 | scalar >> 12))
                        put(UInt8(0x80 | scalar >> 6 & 0x3F))
                        put(UInt8(0x80 | scalar & 0x3F))
                    default:
                        put(UInt8(0xF0 | scalar >> 18))
                        put(UInt8(0x80 | scalar >> 12 & 0x3F))
                        put(UInt8(0x80 | scalar >> 6 & 0x3F))
                        put(UInt8(0x80 | scalar & 0x3F))
                    }
                default:
                    put(kind)  // \" \\ \/
                }
            }
            return written
        }
    }
}
