import CCRC32C

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of log batches and offset-store entries.
///
/// On x86-64 CPUs with SSE4.2 the `crc32` instruction computes it (the C target CCRC32C, checked once at run time);
/// elsewhere slicing-by-8: eight 256-entry tables, computed once, let the loop consume eight bytes per step. The two
/// give the same results (CRC32CTests compares them); the instruction costs about a tenth of the table walk.
package enum CRC32C {
    /// Whether ``update(_:_:)`` uses the CPU's `crc32` instruction (x86-64 with SSE4.2) rather than the tables.
    package static let usesHardware: Bool = brokerd_crc32c_hw_available() == 1

    /// The eight lookup tables, `tables[k * 256 + b]`.
    private static let tables: [UInt32] = {
        let polynomial: UInt32 = 0x82F6_3B78
        var tables = [UInt32](repeating: 0, count: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 {
                crc = (crc & 1) == 1 ? (crc >> 1) ^ polynomial : crc >> 1
            }
            tables[byte] = crc
        }
        for byte in 0..<256 {
            var crc = tables[byte]
            for slice in 1..<8 {
                crc = tables[Int(crc & 0xFF)] ^ (crc >> 8)
                tables[slice * 256 + byte] = crc
            }
        }
        return tables
    }()

    /// The CRC-32C of `bytes`.
    package static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        self.update(0, bytes)
    }

    /// The CRC-32C of a byte sequence.
    package static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        let array = Array(bytes)
        return array.withUnsafeBytes { self.checksum($0) }
    }

    /// Continues a CRC-32C: `update(checksum(a), b) == checksum(a + b)`.
    package static func update(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        guard self.usesHardware else { return self.tableUpdate(crc, bytes) }
        guard let base = bytes.baseAddress else { return crc }
        return ~brokerd_crc32c_hw_update(~crc, base, bytes.count)
    }

    /// ``update(_:_:)`` with the slicing-by-8 tables, whatever the CPU (the fallback, and the reference in tests).
    package static func tableUpdate(_ crc: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = ~crc
        let count = bytes.count
        var index = 0
        self.tables.withUnsafeBufferPointer { table in
            while count - index >= 8 {
                let low =
                    crc
                    ^ (UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8
                        | UInt32(bytes[index + 2]) << 16 | UInt32(bytes[index + 3]) << 24)
                let t0 = table[7 * 256 + Int(low & 0xFF)] ^ table[6 * 256 + Int((low >> 8) & 0xFF)]
                let t1 = table[5 * 256 + Int((low >> 16) & 0xFF)] ^ table[4 * 256 + Int(low >> 24)]
                let t2 = table[3 * 256 + Int(bytes[index + 4])] ^ table[2 * 256 + Int(bytes[index + 5])]
                let t3 = table[1 * 256 + Int(bytes[index + 6])] ^ table[Int(bytes[index + 7])]
                crc = t0 ^ t1 ^ t2 ^ t3
                index += 8
            }
            while index < count {
                crc = table[Int((crc ^ UInt32(bytes[index])) & 0xFF)] ^ (crc >> 8)
                index += 1
            }
        }
        return ~crc
    }
}
