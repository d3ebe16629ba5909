import Foundation
import Testing

@testable import WireProtocol

@Suite("JSONText")
struct JSONTextTests {
    @Test("quoted text is a JSON string that decodes back to the same text", arguments: [
        "", "plain", "quote \" and backslash \\", "line\nbreak\rtab\t", "control \u{01}\u{1F}", "ünïcødé ✓ 🏥",
    ])
    func roundTrip(text: String) throws {
        let quoted = JSONText.quoted(text)
        let decoded = try JSONSerialization.jsonObject(with: Data(quoted.utf8), options: .fragmentsAllowed) as? String
        #expect(decoded == text)
        #expect(!quoted.dropFirst().dropLast().unicodeScalars.contains { $0.value < 0x20 })
    }
}
