import Foundation
import Glibc
import Testing

@testable import LogStore

@Suite("OffsetStore")
struct OffsetStoreTests {
    @Test("commits survive a reopen; a lower offset is stored as given")
    func commitAndReopen() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets.log"
            do {
                let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
                #expect(store.committed(group: "g", topic: "t") == nil)
                try store.commit(group: "g", topic: "t", offset: 10)
                try store.commit(group: "g", topic: "u", offset: 3)
                try store.commit(group: "h", topic: "t", offset: 7)
                try store.commit(group: "g", topic: "t", offset: 4)
                #expect(store.committed(group: "g", topic: "t") == 4)
            }
            let store = try OffsetStore(path: path)
            #expect(store.committed(group: "g", topic: "t") == 4)
            #expect(store.committed(group: "g", topic: "u") == 3)
            #expect(store.committed(group: "h", topic: "t") == 7)
            #expect(store.committed(group: "h", topic: "u") == nil)
        }
    }

    @Test("allCommitted lists every (group, topic) once, with its latest offset, sorted; names may contain ':' and digits")
    func allCommitted() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets.log"
            do {
                let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
                #expect(store.allCommitted().isEmpty)
                try store.commit(group: "lake", topic: "education.completed", offset: 5)
                try store.commit(group: "12:x", topic: "3:y", offset: 1)
                try store.commit(group: "crm-notes", topic: "education.completed", offset: 9)
                try store.commit(group: "crm-notes", topic: "education.completed", offset: 2)
                try store.commit(group: "grüppe", topic: "", offset: 0)
            }
            let store = try OffsetStore(path: path)
            let all = store.allCommitted().map { "\($0.group)|\($0.topic)|\($0.offset)" }
            #expect(all == ["12:x|3:y|1", "crm-notes|education.completed|2", "grüppe||0", "lake|education.completed|5"])
        }
    }

    @Test("a tail torn at every byte of the last entry is cut; earlier commits survive")
    func tornTail() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets.log"
            do {
                let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
                try store.commit(group: "g", topic: "t", offset: 1)
                try store.commit(group: "g", topic: "u", offset: 2)
                try store.commit(group: "g", topic: "t", offset: 3)
            }
            let bytes = try fileBytes(path)
            let last = try OffsetStore.encodeEntry(group: "g", topic: "t", offset: 3).readableBytes
            let lastStart = bytes.count - last
            for cut in lastStart..<bytes.count {
                try writeFile(path, Array(bytes[..<cut]))
                let logs = CapturedLogs()
                let store = try OffsetStore(path: path, logger: logs.logger)
                #expect(store.committed(group: "g", topic: "t") == 1, "cut at \(cut)")
                #expect(store.committed(group: "g", topic: "u") == 2)
                #expect(try fileBytes(path).count == lastStart)
                #expect(cut == lastStart || logs.contains(level: .warning, "truncating torn or corrupt tail"))
                // Commits continue after the cut.
                try store.commit(group: "g", topic: "t", offset: 9)
                #expect(try OffsetStore(path: path).committed(group: "g", topic: "t") == 9)
            }
        }
    }

    @Test("a corrupt entry ends the replay", arguments: [0, 5, 9, 14])
    func corruptEntry(position: Int) async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets.log"
            do {
                let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
                try store.commit(group: "g", topic: "t", offset: 1)
                try store.commit(group: "g", topic: "t", offset: 2)
            }
            var bytes = try fileBytes(path)
            // The second of two equal-sized entries.
            let entry = bytes.count - (try OffsetStore.encodeEntry(group: "g", topic: "t", offset: 2).readableBytes)
            bytes[entry + position] ^= 0x08
            try writeFile(path, bytes)
            let store = try OffsetStore(path: path, logger: CapturedLogs().logger)
            #expect(store.committed(group: "g", topic: "t") == 1)
            #expect(try fileBytes(path).count == entry)
        }
    }

    @Test("the file is compacted once it outgrows four times its live entries")
    func compaction() async throws {
        try await withTemporaryDirectory { dir in
            let path = dir + "/offsets.log"
            let entrySize = try OffsetStore.encodeEntry(group: "group", topic: "topic-a", offset: 0).readableBytes
            do {
                let store = try OffsetStore(path: path, logger: CapturedLogs().logger, compactionMinimumBytes: 0)
                for offset in 0..<200 {
                    try store.commit(group: "group", topic: "topic-a", offset: Int64(offset))
                    try store.commit(group: "group", topic: "topic-b", offset: Int64(offset * 2))
                    let size = try fileBytes(path).count
                    #expect(
                        size <= 4 * (DurableTable.fileHeaderSize + 2 * entrySize) + entrySize,
                        "after commit \(offset)"
                    )
                }
                #expect(store.committed(group: "group", topic: "topic-b") == 398)
            }
            #expect(!(try fileNames(dir).contains("offsets.log.compact")))
            let store = try OffsetStore(path: path, logger: CapturedLogs().logger, compactionMinimumBytes: 0)
            #expect(store.committed(group: "group", topic: "topic-a") == 199)
            #expect(store.committed(group: "group", topic: "topic-b") == 398)
        }
    }

    @Test("a failed fdatasync fails the commit and later ones; committed values stay")
    func syncFailure() async throws {
        try await withTemporaryDirectory { dir in
            let io = FaultyFileIO()
            let logs = CapturedLogs()
            let store = try OffsetStore(path: dir + "/offsets.log", logger: logs.logger, io: io)
            try store.commit(group: "g", topic: "t", offset: 5)
            io.state.withLock { $0.failOtherFdatasync = EIO }
            #expect(throws: LogStoreError.self) { try store.commit(group: "g", topic: "t", offset: 6) }
            io.state.withLock { $0.failOtherFdatasync = nil }
            do {
                try store.commit(group: "g", topic: "t", offset: 7)
                Issue.record("commit after a failed sync succeeded")
            } catch let error as LogStoreError {
                #expect(error.kind == .storageFailure)
                #expect(error.message.contains("fdatasync"))
            }
            #expect(store.committed(group: "g", topic: "t") == 5)
            #expect(logs.contains(level: .error, "offset store failed"))
        }
    }
}
