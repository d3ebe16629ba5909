import CFileIO
import Glibc
import NIOCore

/// A failed file-system call: which call, on what, and the `errno` it set.
package struct FileIOError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The call that failed (`"fdatasync"`, `"pwrite"`, ...).
    package var operation: String
    /// The file or directory it was about (the caller's name for an fd).
    package var path: String
    /// The `errno` value; 0 for a failure without one (a short write).
    package var errno: Int32
    /// Creates an error.
    package init(operation: String, path: String, errno: Int32) {
        self.operation = operation
        self.path = path
        self.errno = errno
    }
    /// `strerror` text of `errno`.
    package var errnoText: String {
        self.errno == 0 ? "no errno" : String(cString: strerror(self.errno))
    }
    /// The write found no room: ENOSPC, EDQUOT, EFBIG, or a write that made no progress (errno 0). Such a failure
    /// leaves the file as it was once the partial write is cut off, unlike a failed fsync.
    package var isOutOfSpace: Bool {
        self.errno == ENOSPC || self.errno == EDQUOT || self.errno == EFBIG || self.errno == 0
    }
    /// "fdatasync /data/t/00000000000000000000.log: Input/output error (errno 5)".
    package var description: String { "\(self.operation) \(self.path): \(self.errnoText) (errno \(self.errno))" }
}

/// Every file operation LogStore performs, so tests can inject faults (and a later issue can simulate power loss).
///
/// File descriptors are plain `Int32`; each call names the path it concerns so errors can say it. Implementations
/// must be thread-safe: calls arrive concurrently from writer queues and reader threads.
package protocol FileIO: Sendable {
    /// Opens `path` with `open(2)` flags (O_CLOEXEC is added by the implementation) and returns the fd.
    func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32
    /// Closes a descriptor.
    func close(_ fd: Int32, path: String) throws(FileIOError)
    /// Writes at `offset`; returns the bytes written (may be short).
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String) throws(FileIOError) -> Int
    /// Reads at `offset` into `buffer`; returns the bytes read (0 at end of file).
    func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    /// `fdatasync(2)`: file data (and the metadata needed to read it) reaches stable storage.
    func fdatasync(_ fd: Int32, path: String) throws(FileIOError)
    /// `fsync(2)`: data and all metadata; also used on directories to make entries durable.
    func fsync(_ fd: Int32, path: String) throws(FileIOError)
    /// Sets the file size.
    func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError)
    /// The file size (`fstat`).
    func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64
    /// Atomically renames `from` to `to`.
    func rename(_ from: String, to: String) throws(FileIOError)
    /// Removes a file.
    func unlink(_ path: String) throws(FileIOError)
    /// Creates a directory (mode 0o755); succeeds if it already exists as a directory.
    func mkdir(_ path: String) throws(FileIOError)
    /// Names of the entries of a directory, without "." and "..", unsorted.
    func listDirectory(_ path: String) throws(FileIOError) -> [String]
    /// Writes the range's dirty pages to the device and waits for them (`sync_file_range` with WAIT_BEFORE,
    /// WRITE and WAIT_AFTER): no metadata and no cache flush, so nothing is made durable; it keeps a large write
    /// from sitting dirty until an fdatasync of the same file has to wait for all of it. May do nothing.
    func writeOut(_ fd: Int32, offset: Int64, count: Int64, path: String) throws(FileIOError)
    /// Writes `bytes` and then `zeros` zero bytes (at most ``zerosLimit``) from `offset`, as one write; returns
    /// how many bytes were written, which may be fewer than asked. By default through `pwrite` from a copy;
    /// ``PosixFileIO`` uses `pwritev`.
    func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, zeros: Int, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    /// Turns on direct I/O (`O_DIRECT`: writes go from the caller's memory to the device, not through the page
    /// cache) for `fd` when its file system supports it with an alignment that divides `maxAlignment`, and returns
    /// that alignment: every later write's address, size and file offset must be a multiple of it. Returns 0 when
    /// the fd stays buffered; never fails, since buffered writes are as correct, only costlier.
    func enableDirectIO(_ fd: Int32, maxAlignment: Int, path: String) -> Int
    /// Asks the kernel to drop the range's pages from the page cache (`posix_fadvise(POSIX_FADV_DONTNEED)`): the
    /// whole pages inside it that are clean; of dirty ones the kernel starts the write-back, and they stay. Advice:
    /// it never fails, and a later read of the range reads the device.
    func dropCachedPages(_ fd: Int32, range: Range<Int64>)
}

/// The most zeros one `FileIO.pwrite(_:_:zeros:at:path:)` writes: a page.
package let zerosLimit = 4096

/// `zerosLimit` zero bytes, the source of `PosixFileIO`'s written zeros.
private let zeroPage = [UInt8](repeating: 0, count: zerosLimit)

extension FileIO {
    /// See ``FileIO``: the bytes and the zeros copied into one buffer, written with `pwrite`.
    package func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, zeros: Int, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        precondition(zeros >= 0 && zeros <= zerosLimit, "at most \(zerosLimit) zeros")
        var joined = [UInt8](repeating: 0, count: bytes.count + zeros)
        joined.withUnsafeMutableBytes { $0.copyMemory(from: bytes) }
        let written = joined.withUnsafeBytes { raw in
            Result { () throws(FileIOError) -> Int in try self.pwrite(fd, raw, at: offset, path: path) }
        }
        return try written.get()
    }

    /// By default nothing is written early; the next fdatasync writes everything.
    package func writeOut(_ fd: Int32, offset: Int64, count: Int64, path: String) throws(FileIOError) {}
    /// By default files stay buffered.
    package func enableDirectIO(_ fd: Int32, maxAlignment: Int, path: String) -> Int { 0 }
    /// By default the pages are dropped, as ``PosixFileIO`` does: it changes no byte anyone reads.
    package func dropCachedPages(_ fd: Int32, range: Range<Int64>) {
        _ = posix_fadvise(fd, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_DONTNEED)
    }
}

/// The real POSIX implementation of ``FileIO``.
package struct PosixFileIO: FileIO {
    /// Creates the POSIX file I/O.
    package init() {}

    /// See ``FileIO``; retries on EINTR where that is safe.
    package func open(_ path: String, flags: Int32, mode: UInt32) throws(FileIOError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode_t(mode))
            if fd >= 0 { return fd }
            if Glibc.errno == EINTR { continue }
            throw FileIOError(operation: "open", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func close(_ fd: Int32, path: String) throws(FileIOError) {
        // Never retry close on EINTR on Linux: the descriptor is released either way.
        if Glibc.close(fd) != 0 && Glibc.errno != EINTR {
            throw FileIOError(operation: "close", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``; retries on EINTR where that is safe.
    package func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        while true {
            let written = Glibc.pwrite(fd, bytes.baseAddress, bytes.count, off_t(offset))
            if written >= 0 { return written }
            if Glibc.errno == EINTR { continue }
            throw FileIOError(operation: "pwrite", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``: one `pwritev` of the bytes and a slice of a page of zeros; retries on EINTR.
    package func pwrite(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, zeros: Int, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        precondition(zeros >= 0 && zeros <= zerosLimit, "at most \(zerosLimit) zeros")
        let written = zeroPage.withUnsafeBytes { page in
            var parts = [
                iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count),
                iovec(iov_base: UnsafeMutableRawPointer(mutating: page.baseAddress), iov_len: zeros),
            ]
            while true {
                let written = Glibc.pwritev(fd, &parts, 2, off_t(offset))
                if written >= 0 { return Result<Int, FileIOError>.success(written) }
                if Glibc.errno == EINTR { continue }
                return .failure(FileIOError(operation: "pwritev", path: path, errno: Glibc.errno))
            }
        }
        return try written.get()
    }

    /// See ``FileIO``; retries on EINTR where that is safe.
    package func pread(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        while true {
            let read = Glibc.pread(fd, buffer.baseAddress, buffer.count, off_t(offset))
            if read >= 0 { return read }
            if Glibc.errno == EINTR { continue }
            throw FileIOError(operation: "pread", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func fdatasync(_ fd: Int32, path: String) throws(FileIOError) {
        if Glibc.fdatasync(fd) != 0 {
            throw FileIOError(operation: "fdatasync", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func writeOut(_ fd: Int32, offset: Int64, count: Int64, path: String) throws(FileIOError) {
        while brokerd_write_out(fd, offset, count) != 0 {
            if Glibc.errno == EINTR { continue }
            throw FileIOError(operation: "sync_file_range", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``: statx's `STATX_DIOALIGN`, then `fcntl(F_SETFL, O_DIRECT)`.
    package func enableDirectIO(_ fd: Int32, maxAlignment: Int, path: String) -> Int {
        Int(brokerd_enable_direct_io(fd, UInt32(clamping: maxAlignment)))
    }

    /// See ``FileIO``.
    package func fsync(_ fd: Int32, path: String) throws(FileIOError) {
        if Glibc.fsync(fd) != 0 {
            throw FileIOError(operation: "fsync", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``; retries on EINTR where that is safe.
    package func ftruncate(_ fd: Int32, to size: Int64, path: String) throws(FileIOError) {
        while Glibc.ftruncate(fd, off_t(size)) != 0 {
            if Glibc.errno == EINTR { continue }
            throw FileIOError(operation: "ftruncate", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func fileSize(_ fd: Int32, path: String) throws(FileIOError) -> Int64 {
        var info = stat()
        if Glibc.fstat(fd, &info) != 0 {
            throw FileIOError(operation: "fstat", path: path, errno: Glibc.errno)
        }
        return Int64(info.st_size)
    }

    /// See ``FileIO``.
    package func rename(_ from: String, to: String) throws(FileIOError) {
        if Glibc.rename(from, to) != 0 {
            throw FileIOError(operation: "rename to \(to)", path: from, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func unlink(_ path: String) throws(FileIOError) {
        if Glibc.unlink(path) != 0 {
            throw FileIOError(operation: "unlink", path: path, errno: Glibc.errno)
        }
    }

    /// See ``FileIO``.
    package func mkdir(_ path: String) throws(FileIOError) {
        if Glibc.mkdir(path, 0o755) == 0 { return }
        let error = Glibc.errno
        var info = Glibc.stat()
        if error == EEXIST && lstat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR { return }
        throw FileIOError(operation: "mkdir", path: path, errno: error)
    }

    /// See ``FileIO``.
    package func listDirectory(_ path: String) throws(FileIOError) -> [String] {
        guard let dir = Glibc.opendir(path) else {
            throw FileIOError(operation: "opendir", path: path, errno: Glibc.errno)
        }
        defer { Glibc.closedir(dir) }
        var names: [String] = []
        while true {
            Glibc.errno = 0
            guard let entry = Glibc.readdir(dir) else {
                if Glibc.errno != 0 { throw FileIOError(operation: "readdir", path: path, errno: Glibc.errno) }
                return names
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
    }
}

extension FileIO {
    /// Writes all of `bytes` and then `zeros` zero bytes (at most ``zerosLimit``; with some, each call writes both,
    /// ``FileIO/pwrite(_:_:zeros:at:path:)``) at `offset`, looping over short writes; a write that makes no progress
    /// is an error.
    func writeAll(
        _ fd: Int32, _ bytes: UnsafeRawBufferPointer, zeros: Int = 0, at offset: Int64, path: String
    ) throws(FileIOError) {
        var done = 0
        let total = bytes.count + zeros
        while done < total {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[min(done, bytes.count)...])
            let at = offset + Int64(done)
            let written = zeros == 0
                ? try self.pwrite(fd, rest, at: at, path: path)
                : try self.pwrite(fd, rest, zeros: total - max(done, bytes.count), at: at, path: path)
            if written <= 0 {
                throw FileIOError(
                    operation: "\(zeros == 0 ? "pwrite" : "pwritev") (short write, \(done) of \(total) bytes)",
                    path: path,
                    errno: 0
                )
            }
            done += written
        }
    }

    /// Writes all readable bytes of `buffer`, then `zeros` zero bytes, at `offset` (as the raw-bytes `writeAll`).
    func writeAll(_ fd: Int32, _ buffer: ByteBuffer, zeros: Int = 0, at offset: Int64, path: String) throws(FileIOError) {
        let failure = buffer.withUnsafeReadableBytes { raw -> FileIOError? in
            do throws(FileIOError) {
                try self.writeAll(fd, raw, zeros: zeros, at: offset, path: path)
                return nil
            } catch {
                return error
            }
        }
        if let failure { throw failure }
    }

    /// Reads up to `buffer.count` bytes at `offset`, looping over short reads; returns fewer only at end of file.
    func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: Int64, path: String)
        throws(FileIOError) -> Int
    {
        var done = 0
        while done < buffer.count {
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let read = try self.pread(fd, into: rest, at: offset + Int64(done), path: path)
            if read == 0 { break }
            done += read
        }
        return done
    }

    /// Opens a directory and fsyncs it, making created, renamed or removed entries durable.
    func syncDirectory(_ path: String) throws(FileIOError) {
        let fd = try self.open(path, flags: O_RDONLY | O_DIRECTORY, mode: 0)
        defer { try? self.close(fd, path: path) }
        try self.fsync(fd, path: path)
    }
}
