import NIOCore

/// Writes big-endian integers and byte runs into a region sized beforehand; traps rather than write past its end.
/// Shared by the batch encoder (LogStore) and the frame encoder (WireProtocol), which may not import each other.
package struct RawWriter {
    private let out: UnsafeMutableRawBufferPointer
    /// Bytes written so far.
    package private(set) var position = 0

    /// A writer at the start of `out`.
    @inlinable
    package init(_ out: UnsafeMutableRawBufferPointer) {
        self.out = out
    }

    /// Writes `value` big-endian.
    @inlinable
    package mutating func put<T: FixedWidthInteger>(_ value: T) {
        let size = MemoryLayout<T>.size
        precondition(self.position + size <= self.out.count, "write overflows the region's computed size")
        self.out.storeBytes(of: value.bigEndian, toByteOffset: self.position, as: T.self)
        self.position += size
    }

    /// Copies `bytes`.
    @inlinable
    package mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        precondition(self.position + bytes.count <= self.out.count, "write overflows the region's computed size")
        (self.out.baseAddress! + self.position).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
        self.position += bytes.count
    }

    /// Copies the readable bytes of `buffer`.
    @inlinable
    package mutating func put(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { self.put($0) }
    }

    /// Copies the UTF-8 of `string`.
    @inlinable
    package mutating func put(_ string: String) {
        var string = string
        string.withUTF8 { self.put(UnsafeRawBufferPointer($0)) }
    }
}
