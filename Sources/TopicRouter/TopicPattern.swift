/// A compiled topic pattern: `*` matches any run of characters (dots included, possibly empty); every other
/// character matches itself.
///
/// The pattern is split once, at compile time, into the literal text before the first `*` (`prefix`), the
/// literal text after the last `*` (`suffix`) and the literal runs between stars (`middle`). A name matches when
/// it starts with the prefix, ends with the suffix, and the middle runs occur in order, without overlapping, in
/// what lies between. Taking each middle run at its leftmost possible position is always right for `*`-only
/// patterns (a later position can only leave less room for the runs after it), so matching is one pass with no
/// backtracking and no recursion: O(n·m) worst case for a name of n bytes and a pattern of m bytes.
package struct TopicPattern: Equatable, Sendable, CustomStringConvertible {
    /// The pattern as written in the config.
    package let text: String
    private let hasStar: Bool
    private let prefix: [UInt8]
    private let middle: [[UInt8]]
    private let suffix: [UInt8]

    /// Compiles `text`. Any string is a valid pattern here; the config loader restricts the alphabet.
    package init(_ text: String) {
        self.text = text
        let bytes = Array(text.utf8)
        let star = UInt8(ascii: "*")
        let runs = bytes.split(separator: star, omittingEmptySubsequences: false).map { Array($0) }
        if runs.count == 1 {
            self.hasStar = false
            self.prefix = bytes
            self.middle = []
            self.suffix = []
        } else {
            self.hasStar = true
            self.prefix = runs[0]
            self.suffix = runs[runs.count - 1]
            self.middle = runs[1..<(runs.count - 1)].filter { !$0.isEmpty }
        }
    }

    /// The pattern text.
    package var description: String { self.text }

    /// Whether `name` matches the whole pattern.
    package func matches(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { self.matches(bytes: $0) }
    }

    private func matches(bytes name: UnsafeBufferPointer<UInt8>) -> Bool {
        guard self.hasStar else { return name.elementsEqual(self.prefix) }
        guard name.count >= self.prefix.count + self.suffix.count else { return false }
        guard Self.occurs(self.prefix, in: name, at: 0) else { return false }
        let end = name.count - self.suffix.count
        guard Self.occurs(self.suffix, in: name, at: end) else { return false }
        var position = self.prefix.count
        for run in self.middle {
            guard let found = Self.firstOccurrence(of: run, in: name, from: position, before: end) else {
                return false
            }
            position = found + run.count
        }
        return true
    }

    /// Whether `needle` is at `offset` in `haystack` (the caller has checked it fits).
    private static func occurs(_ needle: [UInt8], in haystack: UnsafeBufferPointer<UInt8>, at offset: Int) -> Bool {
        var index = 0
        while index < needle.count {
            if haystack[offset + index] != needle[index] { return false }
            index += 1
        }
        return true
    }

    /// The leftmost start of `needle` in `haystack[from..<before]`, entirely inside that range.
    private static func firstOccurrence(
        of needle: [UInt8],
        in haystack: UnsafeBufferPointer<UInt8>,
        from start: Int,
        before end: Int
    ) -> Int? {
        guard end - start >= needle.count else { return nil }
        var candidate = start
        while candidate + needle.count <= end {
            if Self.occurs(needle, in: haystack, at: candidate) { return candidate }
            candidate += 1
        }
        return nil
    }
}
