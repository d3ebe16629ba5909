import CFileIO
import Dispatch
import NIOCore
import NIOPosix
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
/// freed memory back to its host (free page reporting), each costs microseconds. An arena that keeps up to 8 MiB
/// free at its top, and requests up to ``mmapThreshold`` served from the arenas rather than each from a mapping of
/// its own, took 83,000 faults for the same run; at 2 MiB it was 1.1 million, at 4 MiB 104,000
/// (docs/benchmarks/HISTORY.md, round 23). A broker behind its load frees more at once (appends of up to 4 MiB of
/// records, their compressed copies, reads of whole batches): asked for more records than the machine carries
/// (e2e-latency at 631,200 a second), brokerd spent 2.9–3.9 µs of CPU per record with 8 MiB kept and 1.8–2.1 with
/// 32 MiB (the machine's page faults 1.3–5.4 million a run against 74,000–102,000), and fell seconds behind where
/// it otherwise kept the rate (round 32).
///
/// The cost is memory: up to ``trimThreshold`` freed at the top of each arena (glibc makes at most 8 arenas per
/// core; the threads that free large buffers are the event loops, the read pool and the logs' writers) stays with the
/// process while it is busy, instead of going back to the system at once; ``QuietTrim`` gives it back once the broker
/// is quiet. `brokerd_memory_free_held_bytes` shows how much that is (``heapUsage()``). An operator who wants glibc's
/// own behaviour back sets any `glibc.malloc` tunable in `GLIBC_TUNABLES`; brokerd then leaves the allocator to it
/// (docs/OPERATIONS.md "Run").
package enum AllocatorTuning {
    /// Free bytes an arena keeps at its top before giving memory back (`M_TRIM_THRESHOLD`).
    package static let trimThreshold: Int32 = 32 << 20
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

extension AllocatorTuning {
    /// The trim threshold in force while ``trimQuietHeap(eventLoops:readPool:readThreads:)`` runs (glibc's own
    /// starting value).
    private static let quietTrimThreshold: Int32 = 128 << 10

    /// Gives back to the system what the allocator holds free, for a broker that has gone quiet (``QuietTrim``);
    /// nothing when malloc is not glibc's.
    ///
    /// glibc's `malloc_trim(0)` gives back the whole pages of free chunks in every arena and the main arena's free
    /// top, but not the free tops of the other arenas, the threads' own, which is where the memory ``trimThreshold``
    /// keeps under load sits (up to 32 MiB each). glibc trims an arena's top when a free on it leaves a free chunk of
    /// at least 64 KiB and finds the top above the trim threshold. So, with the threshold lowered to
    /// ``quietTrimThreshold`` for the duration, a block of ``pokeBytes`` is allocated and freed at once on each thread
    /// that allocates batch and read buffers: the event loops, every thread of `readPool`, the dispatch worker threads
    /// (the logs' writers), and this one.
    /// Then `malloc_trim(0)`, and the threshold back. Threads it does not reach (a dispatch worker beyond those
    /// `concurrentPerform` uses) keep their arena's top until their next large free. Locks each arena in turn:
    /// milliseconds for a heap of tens of MiB, which is why it runs only when the broker is quiet.
    package static func trimQuietHeap(
        eventLoops: any EventLoopGroup, readPool: NIOThreadPool, readThreads: Int
    ) async {
        guard Self.isGlibcMalloc else { return }
        _ = brokerd_malloc_trim_threshold(Self.quietTrimThreshold)
        defer { _ = brokerd_malloc_trim_threshold(Self.trimThreshold) }
        for loop in eventLoops.makeIterator() { try? await loop.submit(Self.releaseThisThreadsTop).get() }
        await Self.onEachThread(
            of: readPool, threads: readThreads, eventLoop: eventLoops.next(), Self.releaseThisThreadsTop
        )
        DispatchQueue.concurrentPerform(iterations: 2 * System.coreCount) { _ in Self.releaseThisThreadsTop() }
        Self.releaseThisThreadsTop()
        _ = brokerd_malloc_trim()
    }

    /// The block ``releaseThisThreadsTop()`` allocates: at least glibc's 64 KiB (`FASTBIN_CONSOLIDATION_THRESHOLD`,
    /// the size of a free that makes it look at the arena's top) and well under ``mmapThreshold``, so that it comes
    /// from the calling thread's arena and not from a mapping of its own.
    private static let pokeBytes = 1 << 20

    /// Allocates and frees at once a block of ``pokeBytes`` on the calling thread: it comes from this thread's arena,
    /// and its free trims that arena's top against the threshold in force.
    private static func releaseThisThreadsTop() {
        brokerd_malloc_poke_arena(Self.pokeBytes)
    }

    /// Runs `body` once on each of `pool`'s `threads` threads: every job waits (at most 100 ms) until all of them
    /// have started, so no two share a thread, unless the pool is busy that long.
    private static func onEachThread(
        of pool: NIOThreadPool, threads: Int, eventLoop: any EventLoop, _ body: @escaping @Sendable () -> Void
    ) async {
        let started = DispatchGroup()
        for _ in 0..<threads { started.enter() }
        let jobs = (0..<threads).map { _ in
            pool.runIfActive(eventLoop: eventLoop) {
                started.leave()
                _ = started.wait(timeout: .now() + .milliseconds(100))
                body()
            }
        }
        for job in jobs { try? await job.get() }
    }
}

/// When brokerd gives back the memory its allocator keeps for reuse (``AllocatorTuning``): once no topic's log has
/// grown for `quietTicks` ticks in a row, one trim, and then none until some log grows again and goes quiet again.
///
/// Under load the allocator keeps up to ``AllocatorTuning/trimThreshold`` free at the top of each arena, so that
/// each batch's buffers are not faulted in again; when the load stops that memory would stay resident for as long as
/// the broker runs (12.6–20.4 MB in a many-connections run, docs/benchmarks/HISTORY.md rounds 23 and 24). A pure state
/// machine: the caller reads the activity (the sum of every log's end offset), ticks, and trims when told.
package struct QuietTrim: Sendable {
    package enum Action: Equatable, Sendable {
        case wait
        case trim
    }

    /// Ticks without a log growing before the trim.
    package let quietTicks: Int
    private var lastActivity: Int64?
    /// Ticks since the activity last changed: the trim is the tick this reaches `quietTicks`, once per quiet spell.
    private var quietFor = 0

    package init(quietTicks: Int = 2) {
        precondition(quietTicks >= 1, "a trim waits at least one quiet tick")
        self.quietTicks = quietTicks
    }

    /// One tick: `activity` is a figure that grows whenever the broker appends (the sum of every log's end offset).
    /// The first tick sets where activity starts from and counts as activity.
    package mutating func tick(activity: Int64) -> Action {
        guard activity == self.lastActivity else {
            self.lastActivity = activity
            self.quietFor = 0
            return .wait
        }
        self.quietFor += 1
        return self.quietFor == self.quietTicks ? .trim : .wait
    }
}
