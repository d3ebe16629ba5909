import Foundation

/// How late records would be if making them durable were all a broker did: back-to-back group-commit cycles (write a
/// batch, fdatasync it) on a file of zeros, as a topic's log runs them under `fsync = "always"`, and for records
/// arriving evenly in time, the share that waits longer than a threshold for the cycle that covers them (the first
/// cycle that starts after the record arrives, as group commit takes everything that came while the last one ran).
///
/// e2e-latency delivers a record only once it is durable, so this share, measured on the same file system with
/// nothing else running, is a floor under the run's share of late records: what the machine's disk and kernel take
/// before the broker, the network and the consumer add anything (docs/benchmarks/HISTORY.md, round 28). `brokerbench
/// floor` measures it alone, optionally beside threads that keep the cores busy; e2e-latency measures it after each
/// run.
struct DurabilityFloor {
    /// One cycle: its write and fdatasync, `monotonicNanos()` at the start and at the fdatasync's return.
    struct Cycle: Equatable {
        var start: UInt64
        var end: UInt64
    }

    /// The zeros the cycles write over (preallocated and synced first, as brokerd's segments are: no write grows the
    /// file, so no fdatasync has the inode to write). Writes wrap around within it.
    static let fileBytes = 64 << 20
    /// The write size when none is known: about what e2e-latency's log writes per fdatasync at 500,000 records/s.
    static let defaultWriteBytes = 64 << 10

    /// For records arriving evenly from the first cycle's start to the last's, the share whose wait for durability
    /// (from arrival to the end of the first cycle starting after it) exceeds `thresholdNanos`. 0 with fewer than
    /// two cycles.
    ///
    /// A record arriving in `[cycles[i-1].start, cycles[i].start)` is durable at `cycles[i].end`: it waits longer
    /// than the threshold when it arrived before `cycles[i].end - threshold`.
    static func lateShare(_ cycles: [Cycle], thresholdNanos: UInt64) -> Double {
        guard cycles.count >= 2, let first = cycles.first, let last = cycles.last, last.start > first.start else {
            return 0
        }
        var late: UInt64 = 0
        for index in 1..<cycles.count {
            let from = cycles[index - 1].start
            let to = cycles[index].start
            guard cycles[index].end > thresholdNanos else { continue }
            let lateUntil = min(to, cycles[index].end - thresholdNanos)
            if lateUntil > from { late += lateUntil - from }
        }
        return Double(late) / Double(last.start - first.start)
    }

    /// The figures for a result's `extra`, each `PREFIXNAME`: `late_ratio` (``lateShare(_:thresholdNanos:)`` at
    /// `slowMicros`), `cycles_per_s`, `cycle_p50_us`, `cycle_p99_us`, `cycle_max_us` (each cycle's write and
    /// fdatasync), `write_bytes` and `seconds`. Empty with fewer than two cycles.
    static func figures(_ cycles: [Cycle], slowMicros: Int, writeBytes: Int, prefix: String) -> [String: Double] {
        guard cycles.count >= 2, let first = cycles.first, let last = cycles.last, last.end > first.start else {
            return [:]
        }
        var histogram = makeHistogram()
        for cycle in cycles { histogram.record((cycle.end &- cycle.start) / 1000) }
        let seconds = Double(last.end - first.start) / 1e9
        let share = Self.lateShare(cycles, thresholdNanos: UInt64(slowMicros) * 1000)
        return [
            "\(prefix)late_ratio": (share * 1e5).rounded() / 1e5,
            "\(prefix)cycles_per_s": (Double(cycles.count) / seconds).rounded(),
            "\(prefix)cycle_p50_us": Double(histogram.valueAtPercentile(50)),
            "\(prefix)cycle_p99_us": Double(histogram.valueAtPercentile(99)),
            "\(prefix)cycle_max_us": Double(histogram.max),
            "\(prefix)write_bytes": Double(writeBytes),
            "\(prefix)seconds": (seconds * 100).rounded() / 100,
        ]
    }

    /// `writeBytes` rounded up to whole pages, at least one and at most a quarter of the file: each write starts
    /// and ends on a page boundary, so none has the kernel read a page first (brokerd pads its writes the same
    /// way, docs/STORAGE.md "Preallocation").
    static func pageRounded(_ writeBytes: Int) -> Int {
        let pages = max(1, (writeBytes + 4095) / 4096)
        return min(pages * 4096, Self.fileBytes / 4)
    }

    /// Runs cycles of `writeBytes` (page-rounded) for `seconds` on a temporary file in `directory` (removed after),
    /// while `busyThreads` threads each keep a core busy for `busyFraction` of every 500 µs. Throws when the file
    /// cannot be made or a write or fdatasync fails.
    static func measure(
        directory: String, writeBytes: Int, seconds: Double, busyThreads: Int = 0, busyFraction: Double = 0
    ) throws -> [Cycle] {
        try withScratchFile(in: directory, named: "floor") { fd, fail in
            let zeros = [UInt8](repeating: 0, count: 1 << 20)
            for chunk in 0..<(Self.fileBytes >> 20) {
                let written = zeros.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(chunk << 20)) }
                guard written == zeros.count else { throw fail("write zeros to") }
            }
            guard fdatasync(fd) == 0 else { throw fail("fdatasync") }

            let size = Self.pageRounded(writeBytes)
            let batch = [UInt8](repeating: 0x7B, count: size)
            let stop = Counter(0)
            let spinners = (0..<busyThreads).map { _ in
                Thread { Self.spin(fraction: busyFraction, until: stop) }
            }
            for spinner in spinners { spinner.start() }
            defer { stop.add(1) }

            var cycles: [Cycle] = []
            cycles.reserveCapacity(Int(seconds * 20_000))
            var offset = 0
            let until = monotonicNanos() + UInt64(seconds * 1e9)
            while true {
                let start = monotonicNanos()
                if start >= until { break }
                let written = batch.withUnsafeBytes { pwrite(fd, $0.baseAddress, size, off_t(offset)) }
                guard written == size, fdatasync(fd) == 0 else { throw fail("write/fdatasync") }
                cycles.append(Cycle(start: start, end: monotonicNanos()))
                offset += size
                if offset + size > Self.fileBytes { offset = 0 }
            }
            return cycles
        }
    }

    /// Busy for `fraction` of every 500 µs, asleep for the rest, until `stop` is above 0.
    private static func spin(fraction: Double, until stop: Counter) {
        let period: UInt64 = 500_000
        let busy = UInt64(Double(period) * min(1, max(0, fraction)))
        var sink: UInt64 = 0
        while stop.value == 0 {
            let busyUntil = monotonicNanos() + busy
            while monotonicNanos() < busyUntil { sink &+= 1 }
            if busy < period { usleep(UInt32((period - busy) / 1000)) }
        }
        withExtendedLifetime(sink) {}
    }
}
