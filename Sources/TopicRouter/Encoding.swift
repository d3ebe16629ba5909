/// Byte ↔ text encodings the module needs (hex for digests, base64url for tokens), without Foundation.
enum ByteEncoding {
    private static let hexDigits = Array("0123456789abcdef".utf8)
    private static let base64URLAlphabet = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8
    )

    /// Lowercase hex, two digits per byte.
    static func lowercaseHex<Bytes: Sequence<UInt8>>(_ bytes: Bytes) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(Self.hexDigits[Int(byte >> 4)])
            out.append(Self.hexDigits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes lowercase hex (an even number of `0-9a-f`); nil for anything else, uppercase included.
    static func decodeLowercaseHex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = Self.hexValue(digits[index]), let low = Self.hexValue(digits[index + 1]) else {
                return nil
            }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return digit - UInt8(ascii: "a") + 10
        default: return nil
        }
    }

    /// Base64url (RFC 4648 §5) without `=` padding.
    static func base64URLWithoutPadding(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index + 3 <= bytes.count {
            let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
            out.append(Self.base64URLAlphabet[Int(group >> 18 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group >> 12 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group >> 6 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group & 0x3f)])
            index += 3
        }
        switch bytes.count - index {
        case 1:
            let group = UInt32(bytes[index]) << 16
            out.append(Self.base64URLAlphabet[Int(group >> 18 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group >> 12 & 0x3f)])
        case 2:
            let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8
            out.append(Self.base64URLAlphabet[Int(group >> 18 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group >> 12 & 0x3f)])
            out.append(Self.base64URLAlphabet[Int(group >> 6 & 0x3f)])
        default:
            break
        }
        return String(decoding: out, as: UTF8.self)
    }
}
