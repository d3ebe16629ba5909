import Foundation
import Glibc
import NIOCore
import Testing

@testable import LogStore

/// `FileIO.writeAll(_:_:zeros:at:path:)`: a batch and the zeros that pad it to its page's end, as one write
/// (docs/STORAGE.md, "Padding over direct zeros").
@Suite("FileIO")
struct FileIOTests {
    @Test(
        "a write with zeros after it puts the bytes then the zeros over what the file held, in one write",
        arguments: ["posix (pwritev)", "default (one pwrite of a copy)"]
    )
    func bytesThenZeros(_ io: String) async throws {
        try await withTemporaryDirectory { dir in
            let faulty = FaultyFileIO()
            let fileIO: any FileIO = io.hasPrefix("posix") ? PosixFileIO() : faulty
            // Named like a segment's log, so that FaultyFileIO records its writes.
            let path = dir + "/" + SegmentName.stem(0) + ".log"
            let fd = try fileIO.open(path, flags: O_RDWR | O_CREAT, mode: 0o600)
            defer { try? fileIO.close(fd, path: path) }
            try fileIO.writeAll(fd, ByteBuffer(repeating: 0xEE, count: 8192), at: 0, path: path)
            try fileIO.writeAll(fd, ByteBuffer(repeating: 0x11, count: 100), zeros: 3996, at: 4000, path: path)
            // And one past the file's end: the file grows by the bytes and the zeros.
            try fileIO.writeAll(fd, ByteBuffer(repeating: 0x22, count: 10), zeros: 4096, at: 8190, path: path)
            let bytes = try fileBytes(path)
            #expect(bytes.count == 8190 + 10 + 4096)
            #expect(bytes[0..<4000].allSatisfy { $0 == 0xEE })
            #expect(bytes[4000..<4100].allSatisfy { $0 == 0x11 })
            #expect(bytes[4100..<8096].allSatisfy { $0 == 0 })
            #expect(bytes[8096..<8190].allSatisfy { $0 == 0xEE })
            #expect(bytes[8190..<8200].allSatisfy { $0 == 0x22 })
            #expect(bytes[8200...].allSatisfy { $0 == 0 })
            if !io.hasPrefix("posix") {
                let writes = faulty.state.withLock { $0.logWriteLog }.dropFirst()
                #expect(writes.map { [$0.offset, Int64($0.count)] } == [[4000, 4096], [8190, 4106]])
            }
        }
    }
}
