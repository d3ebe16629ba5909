import Foundation
import Testing
import WireProtocol

/// Replays the committed FuzzFrames corpus (seeds and every finding of `make fuzz`) through the harness's check.
@Suite("FuzzFrames corpus")
struct FuzzCorpusTests {
    @Test("every corpus input decodes without a crash or a round-trip violation")
    func replay() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/corpus/FuzzFrames")
        let files = try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted()
        #expect(files.count >= 3)
        for file in files {
            let bytes = Array(try Data(contentsOf: corpus.appendingPathComponent(file)))
            #expect(throws: Never.self, "\(file)") { try FrameCodecCheck.check(bytes) }
        }
    }
}
