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
        #expect(input.withUnsafeBytes { CRC32C.tableUpdate(0, $0) } == expected)
    }

    @Test("the standard check value, through whichever path this CPU takes")
    func checkValue() {
        // "123456789" → 0xE3069283 (the CRC-32C check value of the RFC 3720 / iSCSI catalogue entry).
        #expect(Array("123456789".utf8).withUnsafeBytes { CRC32C.update(0, $0) } == 0xE306_9283)
    }

    #if arch(x86_64)
    @Test("x86-64 CPUs with SSE4.2 use the crc32 instruction")
    func hardwareOnX86() {
        // Every x86-64 CPU since 2008 has SSE4.2; a false here means the run-time check or the C target broke and
        // batches are checksummed by the tables, ten times slower, without any other symptom.
        #expect(CRC32C.usesHardware)
    }
    #endif

    @Test("the instruction and the tables agree on every length 0...300, every alignment 0...15, random bytes")
    func hardwareMatchesTables() {
        var generator = SplitMix64(seed: 0xC0FF_EE00_1234_5678)
        let data = (0..<(4096 + 16)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        data.withUnsafeBytes { all in
            for alignment in 0..<16 {
                for length in 0...300 {
                    let bytes = UnsafeRawBufferPointer(rebasing: all[alignment..<alignment + length])
                    let seed = UInt32(truncatingIfNeeded: generator.next())
                    #expect(
                        CRC32C.update(seed, bytes) == CRC32C.tableUpdate(seed, bytes),
                        "length \(length), alignment \(alignment)"
                    )
                }
            }
            for length in [511, 512, 513, 1000, 1024, 4095, 4096] {
                let bytes = UnsafeRawBufferPointer(rebasing: all[3..<3 + length])
                #expect(CRC32C.update(0, bytes) == CRC32C.tableUpdate(0, bytes), "length \(length)")
            }
        }
    }

    @Test("the instruction and the tables agree on 1 MiB of random bytes, in one piece and split")
    func hardwareMatchesTablesLarge() {
        var generator = SplitMix64(seed: 42)
        let data = (0..<(1 << 20)).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
        data.withUnsafeBytes { bytes in
            let whole = CRC32C.tableUpdate(0, bytes)
            #expect(CRC32C.update(0, bytes) == whole)
            let split = 12_345
            let first = CRC32C.update(0, UnsafeRawBufferPointer(rebasing: bytes[..<split]))
            #expect(CRC32C.update(first, UnsafeRawBufferPointer(rebasing: bytes[split...])) == whole)
        }
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
