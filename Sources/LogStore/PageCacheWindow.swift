import DequeModule

/// Which of a log's written bytes to drop from the kernel's page cache, so that the cache holds only the newest
/// `limit` bytes the log wrote (`TopicLogConfig.pageCacheBytes`). A pure state machine: the writer reports each
/// range it wrote, in order, and gets back the ranges to drop, oldest first, in whole pages and at least `step`
/// bytes at a time (one `posix_fadvise` call per range, not one per batch).
///
/// Why: every page the log writes is a page the page cache takes, and it keeps it until memory runs short. On a
/// machine that hands free memory back to its host (a virtual machine with free page reporting or a balloon), a
/// page the host has taken back costs microseconds to fault in again when the cache takes it; a log that drops its
/// older pages hands the writer pages it just freed instead (docs/benchmarks/HISTORY.md, round 24). Pages a reader
/// brings in again (a consumer further behind than `limit`) are left to the kernel.
struct PageCacheWindow<File: AnyObject & Sendable>: Sendable {
    /// One contiguous range of a file, written and still cached.
    private struct Span {
        var file: File
        var start: Int64
        var end: Int64
    }

    /// Bytes of the newest writes left to the cache.
    let limit: Int64
    /// The least a drop covers: the window grows to `limit + step` before it drops `step` or more.
    let step: Int64
    /// The page size: drops start and end on page boundaries (the kernel drops only whole pages).
    let pageBytes: Int64
    private var spans: Deque<Span> = []
    /// Bytes in `spans`.
    private(set) var cachedBytes: Int64 = 0

    init(limit: Int64, step: Int64 = 4 << 20, pageBytes: Int64 = 4096) {
        precondition(limit > 0 && step > 0 && pageBytes > 0 && step % pageBytes == 0, "a window of whole pages")
        self.limit = limit
        self.step = step
        self.pageBytes = pageBytes
    }

    /// The log wrote `range` of `file`, after everything reported before. Returns the ranges to drop now, oldest
    /// first; a range of another file than the last is a new span (a roll).
    mutating func wrote(_ file: File, _ range: Range<Int64>) -> [(file: File, range: Range<Int64>)] {
        guard !range.isEmpty else { return [] }
        if let last = self.spans.last, last.file === file, last.end == range.lowerBound {
            self.spans[self.spans.count - 1].end = range.upperBound
        } else {
            self.spans.append(Span(file: file, start: range.lowerBound, end: range.upperBound))
        }
        self.cachedBytes += Int64(range.count)
        guard self.cachedBytes - self.limit >= self.step else { return [] }
        var excess = self.cachedBytes - self.limit
        var drops: [(file: File, range: Range<Int64>)] = []
        while excess > 0, var first = self.spans.first {
            let isLast = self.spans.count == 1
            var end = min(first.end, first.start + excess)
            // A span's end is dropped only once the file has moved on: the page the writer is in stays whole.
            if end < first.end || isLast { end = end / self.pageBytes * self.pageBytes }
            guard end > first.start else { break }
            drops.append((first.file, first.start..<end))
            excess -= end - first.start
            self.cachedBytes -= end - first.start
            first.start = end
            if first.start == first.end {
                self.spans.removeFirst()
            } else {
                self.spans[0] = first
                break
            }
        }
        return drops
    }

    /// `file` is gone (retention deleted it): its spans leave the window without a drop, so the window holds no
    /// reference to it (an open descriptor would keep the deleted file's blocks allocated) and does not count
    /// bytes the kernel frees with it.
    mutating func forget(_ file: File) {
        for span in self.spans where span.file === file { self.cachedBytes -= span.end - span.start }
        self.spans.removeAll { $0.file === file }
    }
}
