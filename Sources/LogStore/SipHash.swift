/// The secret 128-bit key of a dedupe index's digests (SipHash key `k0`, `k1`).
///
/// Digests are keyed so that a producer who does not know the key cannot craft two dedupe keys with the same
/// digest (and so make the broker drop another producer's record as a "duplicate"). The key is stored in the
/// topic's dedupe snapshot, so digests loaded from it stay comparable with digests computed after a restart.
package struct DedupeHashKey: Equatable, Hashable, Sendable {
    /// The first key word (key bytes 0...7, little-endian, as in the SipHash reference).
    package var k0: UInt64
    /// The second key word (key bytes 8...15, little-endian).
    package var k1: UInt64

    /// Creates a key from its two words.
    package init(k0: UInt64, k1: UInt64) {
        self.k0 = k0
        self.k1 = k1
    }

    /// Creates a key from 16 bytes in the SipHash reference order.
    package init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "a SipHash key has 16 bytes")
        self.k0 = SipHash128.littleEndianWord(bytes, at: 0)
        self.k1 = SipHash128.littleEndianWord(bytes, at: 8)
    }

    /// A key from the system's cryptographically secure generator (`getrandom`).
    package static func random() -> DedupeHashKey {
        var generator = SystemRandomNumberGenerator()
        return DedupeHashKey(k0: generator.next(), k1: generator.next())
    }
}

/// A 128-bit digest of a dedupe key: SipHash-2-4 with 128-bit output under the index's ``DedupeHashKey``.
package struct DedupeDigest: Hashable, Sendable, CustomStringConvertible {
    /// The first output word (output bytes 0...7, little-endian).
    package var first: UInt64
    /// The second output word (output bytes 8...15, little-endian).
    package var second: UInt64

    /// Creates a digest from its two words.
    package init(first: UInt64, second: UInt64) {
        self.first = first
        self.second = second
    }

    /// The 16 output bytes in the SipHash reference order (each word little-endian).
    package var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: self.first >> (8 * $0)) }
            + (0..<8).map { UInt8(truncatingIfNeeded: self.second >> (8 * $0)) }
    }

    /// Lower-case hex of ``bytes``.
    package var description: String {
        self.bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// SipHash-2-4 with 128-bit output (Aumasson and Bernstein; the `vectors_sip128` reference vectors are in the tests).
package enum SipHash128 {
    /// The digest of `bytes` under `key`.
    package static func digest(_ bytes: UnsafeRawBufferPointer, key: DedupeHashKey) -> DedupeDigest {
        var v0: UInt64 = key.k0 ^ 0x736f_6d65_7073_6575
        var v1: UInt64 = key.k1 ^ 0x646f_7261_6e64_6f6d
        var v2: UInt64 = key.k0 ^ 0x6c79_6765_6e65_7261
        var v3: UInt64 = key.k1 ^ 0x7465_6462_7974_6573
        v1 ^= 0xee

        @inline(__always)
        func round() {
            v0 &+= v1
            v1 = v1.rotatedLeft(13)
            v1 ^= v0
            v0 = v0.rotatedLeft(32)
            v2 &+= v3
            v3 = v3.rotatedLeft(16)
            v3 ^= v2
            v0 &+= v3
            v3 = v3.rotatedLeft(21)
            v3 ^= v0
            v2 &+= v1
            v1 = v1.rotatedLeft(17)
            v1 ^= v2
            v2 = v2.rotatedLeft(32)
        }

        let count = bytes.count
        let wholeWords = count / 8
        for i in 0..<wholeWords {
            var m: UInt64 = 0
            for j in 0..<8 { m |= UInt64(bytes[8 * i + j]) << (8 * j) }
            v3 ^= m
            round()
            round()
            v0 ^= m
        }
        var last = UInt64(truncatingIfNeeded: count) << 56
        for j in 0..<(count % 8) { last |= UInt64(bytes[8 * wholeWords + j]) << (8 * j) }
        v3 ^= last
        round()
        round()
        v0 ^= last

        v2 ^= 0xee
        for _ in 0..<4 { round() }
        let first = v0 ^ v1 ^ v2 ^ v3
        v1 ^= 0xdd
        for _ in 0..<4 { round() }
        let second = v0 ^ v1 ^ v2 ^ v3
        return DedupeDigest(first: first, second: second)
    }

    /// The digest of a byte array under `key`.
    package static func digest(_ bytes: [UInt8], key: DedupeHashKey) -> DedupeDigest {
        bytes.withUnsafeBytes { self.digest($0, key: key) }
    }

    /// The little-endian word at `index` of `bytes`.
    static func littleEndianWord(_ bytes: [UInt8], at index: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[index + $1]) << (8 * $1) }
    }
}

extension UInt64 {
    @inline(__always)
    fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 {
        (self << count) | (self >> (64 - count))
    }
}
