import Testing

@testable import TopicRouter

/// A scanner input written as text or as raw bytes.
struct JSONInput: CustomTestStringConvertible, Sendable {
    var label: String
    var bytes: [UInt8]
    var testDescription: String { self.label }

    init(_ text: String) {
        self.label = text.count > 60 ? String(text.prefix(57)) + "..." : text
        self.bytes = Array(text.utf8)
    }

    init(_ label: String, bytes: [UInt8]) {
        self.label = label
        self.bytes = bytes
    }
}

@Suite("JSONKeyScanner")
struct JSONKeyScannerTests {
    @Test(
        "valid objects report every key with its depth, in document order",
        arguments: [
            ("{}", []),
            (" \t\r\n{ } \n", []),
            (#"{"a":1}"#, [JSONKey("a", depth: 1)]),
            (
                #"{"a": {"b": [1, {"c": null}], "d": {}}, "e": "x"}"#,
                [
                    JSONKey("a", depth: 1), JSONKey("b", depth: 2), JSONKey("c", depth: 4), JSONKey("d", depth: 2),
                    JSONKey("e", depth: 1),
                ]
            ),
            (
                #"{"n": [-0, 0.5, -12.25e+3, 1E9, 7e-2, 123456789012345678901234567890]}"#,
                [JSONKey("n", depth: 1)]
            ),
            (
                #"{"t": true, "f": false, "z": null, "s": "", "arr": [], "o": {}}"#,
                ["t", "f", "z", "s", "arr", "o"].map { JSONKey($0, depth: 1) }
            ),
            // Escapes in keys are decoded, so a forbidden name cannot hide behind them.
            (#"{"patient\u005fname": 1}"#, [JSONKey("patient_name", depth: 1)]),
            (#"{"q\"u\\o\/te\b\f\n\r\t": 1}"#, [JSONKey("q\"u\\o/te\u{8}\u{c}\n\r\t", depth: 1)]),
            (#"{"\u00e9\u4e2d\ud83d\ude00": 1}"#, [JSONKey("é中😀", depth: 1)]),
            // Raw UTF-8 in keys and values.
            (#"{"clé": "naïve 中文 😀"}"#, [JSONKey("clé", depth: 1)]),
            // Duplicate keys are reported each time (a checker sees all of them).
            (#"{"a": 1, "a": 2}"#, [JSONKey("a", depth: 1), JSONKey("a", depth: 1)]),
            // Keys inside strings are not keys.
            (#"{"a": "{\"dob\": 1}"}"#, [JSONKey("a", depth: 1)]),
        ]
    )
    func valid(text: String, keys: [JSONKey]) throws {
        #expect(try JSONKeyScanner.keys(in: Array(text.utf8)) == keys)
    }

    @Test(
        "invalid values are rejected with what is wrong and where",
        arguments: [
            (JSONInput(""), "empty value", 0),
            (JSONInput("   "), "empty value", 3),
            (JSONInput("[]"), "a JSON object is required, found '['", 0),
            (JSONInput("\"text\""), "a JSON object is required", 0),
            (JSONInput("42"), "a JSON object is required", 0),
            (JSONInput("{"), "the value ends inside 1 open", 1),
            (JSONInput(#"{"a": [1, 2}"#), "expected ',' or ']', found '}'", 11),
            (JSONInput(#"{"a" 1}"#), "expected ':' after an object key", 5),
            (JSONInput(#"{a: 1}"#), "expected a string key, found 'a'", 1),
            (JSONInput(#"{"a": 1,}"#), "expected a string key, found '}'", 8),
            (JSONInput(#"{"a": [1,]}"#), "expected a value, found ']'", 9),
            (JSONInput(#"{"a": 01}"#), "expected ',' or '}', found '1'", 7),
            (JSONInput(#"{"a": +1}"#), "expected a value, found '+'", 6),
            (JSONInput(#"{"a": .5}"#), "expected a value, found '.'", 6),
            (JSONInput(#"{"a": 1.}"#), "a number needs a digit after '.'", 8),
            (JSONInput(#"{"a": 1e}"#), "a number needs a digit in its exponent", 8),
            (JSONInput(#"{"a": -}"#), "a number needs a digit here", 7),
            (JSONInput(#"{"a": tru}"#), "expected 'true'", 6),
            (JSONInput(#"{"a": nul"#), "expected 'null'", 6),
            (JSONInput(#"{"a": True}"#), "expected a value, found 'T'", 6),
            (JSONInput(#"{"a": "x}"#), "unterminated string", 6),
            (JSONInput(#"{"a": "\x"}"#), "invalid escape", 7),
            (JSONInput(#"{"a": "\u12"}"#), "\\u needs four hex digits", 11),
            (JSONInput(#"{"a": "\ud800"}"#), "unpaired high surrogate", 7),
            (JSONInput(#"{"a": "\ud800\u0041"}"#), "unpaired high surrogate", 7),
            (JSONInput(#"{"a": "\udc00"}"#), "unpaired low surrogate", 7),
            (JSONInput("{\"a\": \"tab\there\"}"), "raw control byte 0x09 in a string", 10),
            (JSONInput(#"{"a": 1} x"#), "1 trailing byte(s) after the JSON object", 9),
            (JSONInput(#"{"a": 1}{}"#), "2 trailing byte(s)", 8),
            (JSONInput("trailing NUL", bytes: Array(#"{"a": 1}"#.utf8) + [0]), "1 trailing byte(s)", 8),
            (
                JSONInput("invalid UTF-8 lead byte", bytes: Array(#"{"a": ""#.utf8) + [0xFF] + Array(#""}"#.utf8)),
                "invalid UTF-8 lead byte 0xFF", 7
            ),
            (
                JSONInput("overlong encoding", bytes: Array(#"{"a": ""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8)),
                "invalid UTF-8 lead byte", 7
            ),
            (
                JSONInput(
                    "encoded surrogate",
                    bytes: Array(#"{"a": ""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8)
                ), "invalid UTF-8 sequence", 8
            ),
            (
                JSONInput(
                    "above U+10FFFF",
                    bytes: Array(#"{"a": ""#.utf8) + [0xF4, 0x90, 0x80, 0x80] + Array(#""}"#.utf8)
                ), "invalid UTF-8 sequence", 8
            ),
            (
                JSONInput("truncated UTF-8 at the end", bytes: Array(#"{"a": ""#.utf8) + [0xE4, 0xB8]),
                "truncated UTF-8 sequence", 7
            ),
            (
                JSONInput(
                    "bad continuation byte",
                    bytes: Array(#"{"a": ""#.utf8) + [0xE4, 0x41, 0x80] + Array(#""}"#.utf8)
                ), "invalid UTF-8 sequence", 8
            ),
            (
                JSONInput("invalid UTF-8 in a key", bytes: Array(#"{""#.utf8) + [0x80] + Array(#"": 1}"#.utf8)),
                "invalid UTF-8 lead byte", 2
            ),
        ]
    )
    func invalid(input: JSONInput, message: String, offset: Int) {
        do {
            let keys = try JSONKeyScanner.keys(in: input.bytes)
            Issue.record("accepted, keys \(keys)")
        } catch {
            #expect(error.message.contains(message), "\(error)")
            #expect(error.offset == offset, "\(error)")
        }
    }

    @Test("nesting up to 64 levels is accepted; 65 is rejected without recursion, even a million deep")
    func depthLimit() throws {
        func nested(_ depth: Int) -> [UInt8] {
            // {"k": {"k": ... [ ... ] ... }} alternating objects and arrays, depth counted in containers.
            var open: [UInt8] = []
            var close: [UInt8] = []
            for level in 0..<depth {
                if level % 2 == 0 {
                    open += Array(#"{"k":"#.utf8)
                    close.insert(UInt8(ascii: "}"), at: 0)
                } else {
                    open.append(UInt8(ascii: "["))
                    close.insert(UInt8(ascii: "]"), at: 0)
                }
            }
            // The innermost container needs a value when it is an object.
            return open + (depth % 2 == 1 ? Array("1".utf8) : []) + close
        }
        let deepest = try JSONKeyScanner.keys(in: nested(64))
        #expect(deepest.count == 32)
        #expect(deepest.last?.depth == 63)
        let error = #expect(throws: JSONScanError.self) { try JSONKeyScanner.keys(in: nested(65)) }
        #expect(error?.message == "objects and arrays nest deeper than 64 levels")
        var bomb = Array(#"{"a":"#.utf8)
        bomb += [UInt8](repeating: UInt8(ascii: "["), count: 1_000_000)
        let bombError = #expect(throws: JSONScanError.self) { try JSONKeyScanner.keys(in: bomb) }
        #expect(bombError?.offset == 5 + 63)
    }

    @Test("every prefix of a valid document is rejected, and the whole one accepted")
    func truncations() throws {
        let text = Array(#" {"a": [1, -2.5e3, "x\u00e9\n", {"b": null}], "c": true, "d": {"e": false}} "#.utf8)
        #expect(try JSONKeyScanner.keys(in: text).map(\.name) == ["a", "b", "c", "d", "e"])
        for length in 0..<(text.count - 1) {
            #expect(!JSONKeyScanner.isValidObject(Array(text[0..<length])), "prefix of \(length) bytes accepted")
        }
    }

    @Test("arbitrary bytes never crash the scanner")
    func pseudoRandomBytes() {
        // A fixed linear congruential generator, so the run is deterministic; the alphabet is JSON-heavy so inputs
        // get deep into the grammar.
        let alphabet = Array(#"{}[]:,"\\u0aeE.-+1 tfnrl"#.utf8) + [0x00, 0x80, 0xC3, 0xED, 0xF4, 0xFF]
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        var accepted = 0
        for _ in 0..<20_000 {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            let length = Int(state >> 58)
            var bytes: [UInt8] = [UInt8(ascii: "{")]
            for _ in 0..<length {
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                bytes.append(alphabet[Int(state >> 33) % alphabet.count])
            }
            do {
                let keys = try JSONKeyScanner.keys(in: bytes)
                accepted += 1
                // A key needs two quotes, a colon and at least one of its own bytes' worth of room.
                #expect(keys.count * 4 <= bytes.count, "\(bytes)")
                #expect(keys.allSatisfy { (1...JSONKeyScanner.maxDepth).contains($0.depth) }, "\(bytes)")
            } catch {
                #expect((0...bytes.count).contains(error.offset), "offset \(error.offset) outside \(bytes)")
            }
        }
        // Short inputs such as "{}" come up, so both outcomes are exercised.
        #expect(accepted > 0)
    }

    /// Strings are skipped eight bytes at a time; whatever ends a plain run must be found at every position of a
    /// word, in keys and values alike.
    @Test("a quote, escape, control byte or non-ASCII byte is found at every position of a long string")
    func stopBytesAtEveryPosition() throws {
        let plain = Array("abcdefghijklmnopqrstuvwx".utf8)  // 24 bytes: three words
        for position in 0...plain.count {
            let head = Array(plain[..<position])
            let tail = Array(plain[position...])
            // An escaped quote in the key: decoded, and the scan goes on to the value.
            let escapedKey = Array(#"{""#.utf8) + head + Array(#"\""#.utf8) + tail + Array(#"": "v"}"#.utf8)
            #expect(
                try JSONKeyScanner.keys(in: escapedKey).map(\.name)
                    == [String(decoding: head + [UInt8(ascii: "\"")] + tail, as: UTF8.self)]
            )
            // Two-byte UTF-8 (é) in a value, then a second key after it.
            let accented = Array(#"{"k": ""#.utf8) + head + [0xC3, 0xA9] + tail + Array(#"", "z": 1}"#.utf8)
            #expect(try JSONKeyScanner.keys(in: accented).map(\.name) == ["k", "z"])
            // A raw control byte in a value: rejected at exactly its offset.
            let control = Array(#"{"k": ""#.utf8) + head + [0x0A] + tail + Array(#""}"#.utf8)
            #expect(throws: JSONScanError.self) { try JSONKeyScanner.keys(in: control) }
            do {
                _ = try JSONKeyScanner.keys(in: control)
            } catch {
                #expect(error.offset == 7 + position, "\(error)")
                #expect(error.message.contains("raw control byte 0x0A"), "\(error)")
            }
            // A byte that is no UTF-8 lead, at exactly its offset; and a string cut short inside the run.
            let invalid = Array(#"{"k": ""#.utf8) + head + [0xFF] + tail + Array(#""}"#.utf8)
            do {
                _ = try JSONKeyScanner.keys(in: invalid)
                Issue.record("accepted 0xFF at \(position)")
            } catch {
                #expect(error.offset == 7 + position && error.message.contains("lead byte 0xFF"), "\(error)")
            }
            let unterminated = Array(#"{"k": ""#.utf8) + head
            do {
                _ = try JSONKeyScanner.keys(in: unterminated)
                Issue.record("accepted an unterminated string of \(position) bytes")
            } catch {
                #expect(error.offset == 6 && error.message.contains("unterminated string"), "\(error)")
            }
        }
    }
}
