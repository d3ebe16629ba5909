import CFileIO
#if canImport(Glibc)
import Glibc
#endif

/// How brokerd (and brokerbench) set up glibc's allocator before they start their threads, and what it holds.
///
/// A topic's appender (a `DispatchQueue` thread) allocates each batch's body and LZ4 output and frees them after the
/// write, with the PUBLISHes' stored records the event loops built. With glibc's defaults (an arena gives back what
/// is free at its top once that passes the trim threshold: 128 KiB at first, then twice the largest chunk freed from
/// a mapping of its own) the group of buffers freed after each write is given back (`madvise(MADV_DONTNEED)`) and
/// the next batch faults the same pages in again, zeroed by the kernel: 680,000 page faults in brokerd over one
/// policy-overhead run, 18,000 a second, most of them on the appenders' threads. On a virtual machine that hands
/// freed memory back to its host (free page reporting), each costs microseconds. An arena that keeps up to
/// ``trimThreshold`` free at its top, and requests up to ``mmapThreshold`` served from the arenas rather than each
/// from a mapping of its own, took 83,000 faults for the same run; at 2 MiB it was 1.1 million, at 4 MiB 104,000
/// (docs/BENCHMARKS.md, round 23).
///
/// The cost is memory: up to ``trimThreshold`` freed at the top of each arena (glibc makes at most 8 arenas per
/// core) stays with the process instead of going back to the system at once. `brokerd_memory_free_held_bytes` shows
/// how much that is (``heapUsage()``). An operator who wants glibc's own behaviour back sets any `glibc.malloc`
/// tunable in `GLIBC_TUNABLES`; brokerd then leaves the allocator to it (docs/OPERATIONS.md "Run").
package enum AllocatorTuning {
    /// Free bytes an arena keeps at its top before giving memory back (`M_TRIM_THRESHOLD`).
    package static let trimThreshold: Int32 = 8 << 20
    /// Requests at least this large get a mapping of their own (`M_MMAP_THRESHOLD`; glibc's largest).
    package static let mmapThreshold: Int32 = 32 << 20

    /// What ``configure(environment:)`` did.
    package enum Outcome: Equatable, Sendable {
        /// Both thresholds were set.
        case tuned
        /// `GLIBC_TUNABLES` names a `glibc.malloc` tunable: left to it.
        case leftToTunables
        /// malloc is a sanitizer's (a ThreadSanitizer or AddressSanitizer build), or glibc refused a setting: the
        /// allocator's defaults stand.
        case unavailable
    }

    /// Sets both thresholds unless `GLIBC_TUNABLES` (from `environment`, default the process's) says anything about
    /// `glibc.malloc`. Call it first thing, before the event loops start.
    @discardableResult
    package static func configure(environment: String? = Self.tunablesVariable()) -> Outcome {
        if let environment, environment.contains("glibc.malloc.") { return .leftToTunables }
        guard Self.isGlibcMalloc else { return .unavailable }
        return brokerd_malloc_thresholds(Self.mmapThreshold, Self.trimThreshold) == 1 ? .tuned : .unavailable
    }

    /// Whether malloc is glibc's own: false under a sanitizer's runtime, whose allocator glibc's settings and counts
    /// do not reach.
    package static let isGlibcMalloc = brokerd_malloc_is_glibc() == 1

    /// What the allocator holds now (glibc's `mallinfo2`): bytes handed out and not had back, and bytes it keeps
    /// free for the next allocations; nil when malloc is not glibc's (``isGlibcMalloc``). RSS less the two is mostly
    /// code, stacks and mappings of brokerd's own (the dedupe table's). Locks each arena in turn while it counts: for
    /// a scrape, not for a hot path.
    package static func heapUsage() -> (allocated: Int, freeHeld: Int)? {
        guard Self.isGlibcMalloc else { return nil }
        var allocated = 0
        var freeHeld = 0
        brokerd_heap_usage(&allocated, &freeHeld)
        return (allocated, freeHeld)
    }

    /// The process's `GLIBC_TUNABLES`, if set.
    package static func tunablesVariable() -> String? {
        getenv("GLIBC_TUNABLES").map { String(cString: $0) }
    }
}
