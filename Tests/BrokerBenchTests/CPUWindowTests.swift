import Foundation
import Testing

@testable import brokerbench

/// brokerbench's readings of the machine beside its load: how long a process's threads waited for a core
/// (`ThreadWaits`, `/proc/PID/task/TID/schedstat`) and what a block device did (`DiskCounters`,
/// `/sys/dev/block/MAJOR:MINOR/stat`). docs/BENCHMARKS.md ("What else a result holds") reads run results by these
/// figures.
@Suite("brokerbench's CPU window: run-queue waits and disk counters")
struct CPUWindowTests {
    @Test("a disk stat line with flush counters gives the window's writes, bytes, time per write and per flush")
    func diskFigures() throws {
        // reads (4), writes: 1,000 I/Os, 10 merges, 80,000 sectors, 70 ms; in flight; busy 500 ms; weighted;
        // discards (4); flushes: 400, 16 ms.
        let before = try #require(
            DiskCounters.parse("  10 0 80 5 1000 10 80000 70 0 500 900 0 0 0 0 400 16\n")
        )
        let after = try #require(
            DiskCounters.parse("  10 0 80 5 3000 30 280000 230 1 1500 2900 0 0 0 0 1400 56\n")
        )
        #expect(before.writes == 1000 && before.writeSectors == 80000 && before.flushes == 400)
        let figures = after.figures(since: before, seconds: 2)
        #expect(figures["disk_write_ios_per_s"] == 1000)
        #expect(figures["disk_write_mb_per_s"] == 51.2)  // 200,000 sectors of 512 bytes in 2 s
        #expect(figures["disk_write_ms_per_io"] == 0.08)  // 160 ms over 2,000 writes
        #expect(figures["disk_busy"] == 0.5)
        #expect(figures["disk_flushes_per_s"] == 500)
        #expect(figures["disk_flush_ms_per_io"] == 0.04)  // 40 ms over 1,000 flushes
    }

    @Test("a kernel without flush counters (11 fields) gives no flush figures; a line that is not counters, nothing")
    func diskLineShapes() throws {
        let old = try #require(DiskCounters.parse("1 2 3 4 5 6 7 8 9 10 11"))
        #expect(old.flushes == nil && old.flushMillis == nil)
        let figures = old.figures(since: old, seconds: 1)
        #expect(figures["disk_flushes_per_s"] == nil && figures["disk_flush_ms_per_io"] == nil)
        #expect(figures["disk_write_ms_per_io"] == nil)  // no write in the window: no time per write
        #expect(DiskCounters.parse("1 2 3") == nil)
        #expect(DiskCounters.parse("1 2 3 4 5 six 7 8 9 10 11 12 13 14 15 16 17") == nil)
    }

    @Test("the temporary directory's block device counts a file's fsynced writes; /proc has no device")
    func diskOfDirectory() throws {
        #expect(DiskCounters.statPath(of: "/proc") == nil)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("cpuwindow-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let statPath = try #require(
            DiskCounters.statPath(of: directory.path), "no block device holds \(directory.path)"
        )
        let before = try #require(DiskCounters.read(statPath: statPath))
        // 1 MiB written and fsynced: at least 2,048 more sectors written, whatever else the machine writes meanwhile.
        let file = directory.appendingPathComponent("data").path
        let fd = open(file, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        try #require(fd >= 0)
        let bytes = [UInt8](repeating: 0x5A, count: 1 << 20)
        let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        #expect(written == bytes.count)
        #expect(fsync(fd) == 0)
        close(fd)
        let after = try #require(DiskCounters.read(statPath: statPath))
        #expect(after.writes > before.writes)
        #expect(after.writeSectors - before.writeSectors >= 2048, "\(after.writeSectors - before.writeSectors) sectors")
    }

    @Test("run-queue waits: a schedstat line's second field; threads that started count whole, ended ones not at all")
    func waitArithmetic() {
        #expect(ThreadWaits.runQueueNanos(schedstat: "388895995 42753590 1114\n") == 42_753_590)
        #expect(ThreadWaits.runQueueNanos(schedstat: "388895995") == nil)
        let before = ThreadWaits(waited: [1: (1_000_000_000, true), 2: (500_000_000, false), 3: (7, false)])
        // Thread 3 ended; thread 4 started in the window.
        let after = ThreadWaits(waited: [1: (1_250_000_000, true), 2: (600_000_000, false), 4: (50_000_000, false)])
        #expect(after.waitedSince(before) == 0.4)
        #expect(after.waitedSince(before, eventLoopsOnly: true) == 0.25)
    }

    @Test("more busy threads than cores make this process's threads wait for a core")
    func contendedThreadsWait() throws {
        guard FileManager.default.fileExists(atPath: "/proc/self/schedstat") else {
            // A kernel without CONFIG_SCHED_INFO keeps no waits: brokerbench reports none (nil), never zeros.
            #expect(ThreadWaits.read(pid: getpid()) == nil)
            return
        }
        let before = try #require(ThreadWaits.read(pid: getpid()))
        // Two more spinning threads than cores, each for 400 ms of wall clock: some are always ready and not running.
        // Read at 300 ms, while they still run (a thread that has ended is gone from /proc, its waits with it).
        let spinners = ProcessInfo.processInfo.activeProcessorCount + 2
        let start = DispatchTime.now().uptimeNanoseconds
        let until = start + 400_000_000
        let threads = (0..<spinners).map { _ in
            Thread {
                var spins = 0
                while DispatchTime.now().uptimeNanoseconds < until { spins &+= 1 }
                _ = spins
            }
        }
        for thread in threads { thread.start() }
        Thread.sleep(forTimeInterval: 0.3)
        let during = try #require(ThreadWaits.read(pid: getpid()))
        while threads.contains(where: { !$0.isFinished }) { Thread.sleep(forTimeInterval: 0.01) }
        // About (spinners - cores) x 0.3 s of waiting among them; a tenth of one spinner's share is plenty.
        #expect(during.waitedSince(before) > 0.03, "waited \(during.waitedSince(before)) s")
    }
}
