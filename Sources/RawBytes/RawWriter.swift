import NIOCore

/// Writes big-endian integers and byte runs into a region sized beforehand; traps rather than write past its end.
/// Shared by the batch encoder (LogStore) and the frame encoder (WireProtocol), which may not import each other.
///
/// `public` and `@inlinable`, not `package`: with `package` access this toolchain (Swift 6.3.1) did not make the
/// bodies available to other modules, so every `put` was a call into an unspecialized generic (callgrind: about
/// 2,700 instructions per published record). The module is no product's, so `public` reaches no further than
/// `package` would.
public struct RawWriter {
    @usableFromInline let out: UnsafeMutableRawBufferPointer
    /// Bytes written so far.
    public var position: Int { self.written }
    @usableFromInline var written = 0

    /// A writer at the start of `out`.
    @inlinable
    public init(_ out: UnsafeMutableRawBufferPointer) {
        self.out = out
    }

    /// Writes `value` big-endian.
    @inlinable
    public mutating func put<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        precondition(self.written + size <= self.out.count, "write overflows the region's computed size")
        self.out.storeBytes(of: value.bigEndian, toByteOffset: self.written, as: T.self)
        self.written += size
    }

    /// Copies `bytes`.
    @inlinable
    public mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        precondition(self.written + bytes.count <= self.out.count, "write overflows the region's computed size")
        (self.out.baseAddress! + self.written).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        self.written += bytes.count
    }

    /// Copies the readable bytes of `buffer`.
    @inlinable
    public mutating func put(_ buffer: ByteBuffer) {
        let count = buffer.readableBytes
        guard count > 0 else { return }
        precondition(self.written + count <= self.out.count, "write overflows the region's computed size")
        // The closure captures no `inout self`, so it needs no dynamic exclusivity check.
        let destination = self.out.baseAddress! + self.written
        buffer.withUnsafeReadableBytes { destination.copyMemory(from: $0.baseAddress!, byteCount: count) }
        self.written += count
    }

    /// Copies the UTF-8 of `string`.
    @inlinable
    public mutating func put(_ string: String) {
        let count = string.utf8.count
        guard count > 0 else { return }
        precondition(self.written + count <= self.out.count, "write overflows the region's computed size")
        let destination = self.out.baseAddress! + self.written
        // Read in place where the string allows it (native strings, small ones too), not through `withUTF8` on a
        // local copy, which retained and released the string (callgrind: 109 → 66 instructions per call, one per
        // header name the client encodes).
        let copied: Void? = string.utf8.withContiguousStorageIfAvailable {
            destination.copyMemory(from: UnsafeRawPointer($0.baseAddress!), byteCount: count)
        }
        if copied == nil {
            var string = string
            string.withUTF8 { destination.copyMemory(from: UnsafeRawPointer($0.baseAddress!), byteCount: count) }
        }
        self.written += count
    }
}
