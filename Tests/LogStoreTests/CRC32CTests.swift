import Testing

@testable import LogStore

@Suite("CRC32C")
struct CRC32CTests {
    @Test(
        "known vectors",
        arguments: [
            ([UInt8](), UInt32(0)),
            (Array("123456789".utf8), UInt32(0xE306_9283)),
            ([UInt8](repeating: 0, count: 32), UInt32(0x8A91_36AA)),
            ([UInt8](repeating: 0xFF, count: 32), UInt32(0x62A8_AB43)),
            ((0..<32).map { UInt8($0) }, UInt32(0x46DD_794E)),
            ((0..<32).map { UInt8(31 - $0) }, UInt32(0x113F_DB5C)),
        ]
    )
    func vectors(input: [UInt8], expected: UInt32) {
        #expect(CRC32C.checksum(input) == expected)
    }

    @Test("update over any split equals one checksum")
    func incremental() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let whole = CRC32C.checksum(data)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let first = CRC32C.checksum(data[..<split])
            let combined = data[split...].withUnsafeBytes { CRC32C.update(first, $0) }
            #expect(combined == whole, "split at \(split)")
        }
    }
}
