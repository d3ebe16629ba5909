import Foundation
import Testing
import TopicRouter

/// Replays the committed FuzzConfig corpus (seeds and every finding of `make fuzz`) through the harness's check.
@Suite("FuzzConfig corpus")
struct FuzzCorpusTests {
    @Test("every corpus input parses or is refused with a ConfigError, and its principals authenticate")
    func replay() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/FuzzConfig")
        let files = try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted()
        #expect(files.count >= 3)
        for file in files {
            let text = String(decoding: try Data(contentsOf: corpus.appendingPathComponent(file)), as: UTF8.self)
            #expect(throws: Never.self, "\(file)") { try ConfigCheck.check(text) }
        }
    }
}
