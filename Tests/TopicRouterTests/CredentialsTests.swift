import Testing

@testable import TopicRouter

@Suite("Credentials")
struct CredentialsTests {
    static let base64URLAlphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    @Test("generated tokens are 43 base64url characters and differ between calls")
    func tokenFormat() {
        let tokens = (0..<200).map { _ in Credentials.generateToken() }
        for token in tokens {
            #expect(token.count == 43)
            #expect(token.allSatisfy { Self.base64URLAlphabet.contains($0) }, "\(token)")
        }
        #expect(Set(tokens).count == tokens.count)
    }

    @Test(
        "hash of known inputs",
        arguments: [
            ("", "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ("abc", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            ("token", "sha256:3c469e9d6c5875d37a43f353d4f88e61fcf812c66eee3457465a40b0da4153e0"),
        ]
    )
    func knownHashes(token: String, hash: String) {
        #expect(Credentials.hash(token: token) == hash)
    }

    @Test("a hash is accepted as a token_hash")
    func hashIsWellFormed() {
        let hash = Credentials.hash(token: Credentials.generateToken())
        #expect(ConfigValidator.decodeTokenHash(hash)?.count == 32)
    }

    @Test(
        "base64url without padding (RFC 4648 vectors)",
        arguments: [
            ("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ]
    )
    func base64URL(input: String, output: String) {
        #expect(ByteEncoding.base64URLWithoutPadding(Array(input.utf8)) == output)
    }

    @Test("base64url uses - and _ instead of + and /")
    func base64URLAlphabet() {
        #expect(ByteEncoding.base64URLWithoutPadding([0xfb, 0xff, 0xbf]) == "-_-_")
        #expect(ByteEncoding.base64URLWithoutPadding([0xfb, 0xff]) == "-_8")
    }

    @Test("hex decoding accepts only lowercase hex pairs")
    func hexDecoding() {
        #expect(ByteEncoding.decodeLowercaseHex("00ff7a") == [0x00, 0xff, 0x7a])
        #expect(ByteEncoding.decodeLowercaseHex("00FF") == nil)
        #expect(ByteEncoding.decodeLowercaseHex("abc") == nil)
        #expect(ByteEncoding.decodeLowercaseHex("zz") == nil)
        #expect(ByteEncoding.decodeLowercaseHex("") == [])
    }

    @Test("credentials render and parse round trip")
    func roundTrip() throws {
        let entries: [(clientID: String, token: String)] = [
            ("crm-automation", Credentials.generateToken()),
            ("learning-portal", Credentials.generateToken()),
            ("odd", "quote\" backslash\\ tab\t newline\n é"),
        ]
        let text = Credentials.renderCredentials(entries)
        #expect(text.hasPrefix("# brokerd credentials"))
        #expect(text.contains("SECRET"))
        #expect(text.contains("[tokens]"))
        let parsed = try Credentials.parseCredentials(text)
        #expect(parsed == Dictionary(uniqueKeysWithValues: entries.map { ($0.clientID, $0.token) }))
    }

    @Test("an empty credentials table round trips")
    func emptyRoundTrip() throws {
        #expect(try Credentials.parseCredentials(Credentials.renderCredentials([])) == [:])
    }

    @Test(
        "credentials parse errors",
        arguments: [
            ("[tokens]\n\"a\" = \n", "credentials: invalid TOML", 2 as Int?),
            ("# nothing\n", "credentials: no [tokens] table", nil),
            ("[tokens]\n\"a\" = \"t\"\n[extra]\nx = 1\n", "credentials: unexpected key 'extra'", 3),
            ("note = \"hi\"\n[tokens]\n\"a\" = \"t\"\n", "credentials: unexpected key 'note'", 1),
            ("tokens = 5\n", "credentials: 'tokens' must be a table, got an integer", 1),
            (
                "[tokens]\n\"a\" = \"t\"\n\"b\" = 7\n",
                "credentials: the token of 'b' must be a string, got an integer", 3
            ),
            ("[tokens]\n\"a\" = \"\"\n", "credentials: the token of 'a' is empty", 2),
            ("[tokens]\n\"a\" = \"t\u{0}\"\n", "credentials: the file contains a NUL byte", 2),
        ]
    )
    func parseErrors(text: String, message: String, line: Int?) {
        do {
            let tokens = try Credentials.parseCredentials(text)
            Issue.record("parsed: \(tokens.keys.sorted())")
        } catch {
            #expect(error.message.contains(message), "\(error)")
            #expect(error.line == line, "\(error)")
        }
    }
}
