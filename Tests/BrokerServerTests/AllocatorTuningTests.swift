import BrokerServer
import Foundation
import Testing

/// brokerd's allocator settings (``AllocatorTuning``): freed buffers stay mapped for the next ones.
@Suite("Allocator tuning")
struct AllocatorTuningTests {
    @Test("an operator's glibc.malloc tunables win; otherwise both thresholds are set")
    func outcome() {
        #expect(AllocatorTuning.configure(environment: "glibc.malloc.trim_threshold=131072") == .leftToTunables)
        #expect(AllocatorTuning.configure(environment: "glibc.pthread.rseq=0:glibc.malloc.arena_max=2") == .leftToTunables)
        // Under ThreadSanitizer (`make tsan`) malloc is the sanitizer's: nothing to tune.
        let expected: AllocatorTuning.Outcome = AllocatorTuning.isGlibcMalloc ? .tuned : .unavailable
        #expect(AllocatorTuning.configure(environment: "glibc.pthread.rseq=0") == expected)
        #expect(AllocatorTuning.configure(environment: nil) == expected)
    }

    /// The pattern that made brokerd fault 18,000 pages a second: a group of large buffers in use together, then all
    /// freed. With glibc's defaults (the mmap threshold rises to 1 MiB after the first free, the trim threshold to
    /// 2 MiB) the 3 MiB freed at the arena's top is given back each round and faulted in again by the next one: 768
    /// faults a round. Tuned, the rounds after the first reuse the same pages. Other tests' threads may share this
    /// thread's arena and take freed pages meanwhile, so the bound is a quarter of what untuned rounds fault.
    @Test(
        "buffers freed in a group are reused without faulting their pages in again",
        .enabled(if: AllocatorTuning.isGlibcMalloc, "malloc is a sanitizer's")
    )
    func freedGroupStaysMapped() throws {
        #expect(AllocatorTuning.configure(environment: nil) == .tuned)
        let bufferBytes = 1 << 20
        let rounds = 20
        func round() {
            let buffers = (0..<3).map { _ in malloc(bufferBytes)! }
            for buffer in buffers {
                // One write per page: each page not mapped yet costs a fault.
                for page in stride(from: 0, to: bufferBytes, by: 4096) {
                    buffer.storeBytes(of: 1, toByteOffset: page, as: UInt8.self)
                }
            }
            buffers.forEach { free($0) }
        }
        round()  // the first round maps its pages, tuned or not
        let before = try Self.minorFaultsOfThisThread()
        for _ in 0..<rounds { round() }
        let faults = try Self.minorFaultsOfThisThread() - before
        // 3 MiB is 768 pages: untuned, every round faults that many in again.
        #expect(faults < rounds * 768 / 4, "\(faults) page faults over \(rounds) rounds of 3 MiB")
    }

    /// `minflt` of the calling thread (field 10 of /proc/thread-self/stat): faults of other tests' threads do not
    /// count. The test body has no suspension point, so it stays on one thread.
    private static func minorFaultsOfThisThread() throws -> Int {
        let stat = try String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8)
        // The command name (field 2) is in parentheses and may contain spaces: count fields after its `)`.
        let afterName = stat[stat.index(after: try #require(stat.lastIndex(of: ")")))...]
        let fields = afterName.split(separator: " ")
        // fields[0] is field 3 (state), so field 10 is fields[7].
        return try #require(Int(fields[7]))
    }
}
