import Foundation
import Testing

@testable import brokerbench

/// The durability floor (docs/benchmarks/HISTORY.md, round 28): the share of evenly arriving records that wait longer
/// than a threshold for the group-commit cycle covering them, and the cycles measured on a real file.
@Suite("brokerbench's durability floor")
struct DurabilityFloorTests {
    /// Back-to-back cycles of `micros` each, from 0, in nanoseconds.
    static func cycles(_ micros: [UInt64]) -> [DurabilityFloor.Cycle] {
        var at: UInt64 = 1_000_000_000
        return micros.map { length in
            defer { at += length * 1000 }
            return DurabilityFloor.Cycle(start: at, end: at + length * 1000)
        }
    }

    @Test("steady cycles shorter than half the threshold make no record late")
    func steady() {
        let cycles = Self.cycles(Array(repeating: 200, count: 1000))
        #expect(DurabilityFloor.lateShare(cycles, thresholdNanos: 2_000_000) == 0)
        // A record that arrives just after a cycle starts waits for it and the next: up to two cycles.
        #expect(DurabilityFloor.lateShare(cycles, thresholdNanos: 300_000) > 0)
    }

    @Test("one slow cycle makes late the records that arrived more than the threshold before its end")
    func oneStall() {
        // 99 cycles of 100 µs, then one of 5,000 µs, then 100 cycles of 100 µs: the records arriving during the
        // 99th cycle wait for the 5 ms one (from 5.1 ms down to 5.0), and those arriving during it wait for the
        // next, which ends 100 µs after it (from 5.1 ms down to 0.1).
        let cycles = Self.cycles(Array(repeating: 100, count: 99) + [5000] + Array(repeating: 100, count: 100))
        let total = Double(cycles.last!.start - cycles.first!.start)
        // Late at 2 ms: the whole 100 µs before the slow cycle, and its first 5,100 - 2,000 = 3,100 µs.
        let expected = (100_000.0 + 3_100_000.0) / total
        #expect(abs(DurabilityFloor.lateShare(cycles, thresholdNanos: 2_000_000) - expected) < 1e-12)
        // A threshold above the longest wait makes nothing late.
        #expect(DurabilityFloor.lateShare(cycles, thresholdNanos: 5_200_000) == 0)
    }

    @Test("fewer than two cycles give no share and no figures")
    func tooFew() {
        #expect(DurabilityFloor.lateShare([], thresholdNanos: 1) == 0)
        #expect(DurabilityFloor.lateShare(Self.cycles([100]), thresholdNanos: 1) == 0)
        #expect(DurabilityFloor.figures(Self.cycles([100]), slowMicros: 2000, writeBytes: 4096, prefix: "x_").isEmpty)
    }

    @Test("the figures name the share, the cycles' rate and times, the write size and the seconds")
    func figures() {
        let cycles = Self.cycles(Array(repeating: 100, count: 99) + [5000] + Array(repeating: 100, count: 100))
        let figures = DurabilityFloor.figures(cycles, slowMicros: 2000, writeBytes: 8192, prefix: "durability_floor_")
        #expect(figures["durability_floor_late_ratio"] == (3_200_000.0 / 24_800_000.0 * 1e5).rounded() / 1e5)
        #expect(figures["durability_floor_cycle_p50_us"] == 100)
        #expect(figures["durability_floor_cycle_max_us"].map { abs($0 - 5000) <= 5 } == true)  // HdrHistogram's precision
        #expect(figures["durability_floor_write_bytes"] == 8192)
        #expect(figures["durability_floor_seconds"] == 0.02)  // 24.9 ms of cycles
        #expect(figures["durability_floor_cycles_per_s"] == (200 / 0.0249).rounded())
    }

    @Test("write sizes are whole pages, at least one, at most a quarter of the file")
    func pageRounding() {
        #expect(DurabilityFloor.pageRounded(1) == 4096)
        #expect(DurabilityFloor.pageRounded(4096) == 4096)
        #expect(DurabilityFloor.pageRounded(50_000) == 53_248)
        #expect(DurabilityFloor.pageRounded(1 << 30) == DurabilityFloor.fileBytes / 4)
    }

    @Test("cycles on a real file follow one another, each a write and an fdatasync; the file is removed after")
    func measured() throws {
        let directory = NSTemporaryDirectory() + "floor-test-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cycles = try DurabilityFloor.measure(
            directory: directory, writeBytes: 8192, seconds: 0.2, busyThreads: 1, busyFraction: 0.5
        )
        #expect(cycles.count >= 2)
        for (previous, next) in zip(cycles, cycles.dropFirst()) {
            #expect(previous.start < previous.end && previous.end <= next.start)
        }
        let spanned = Double(cycles.last!.end - cycles.first!.start) / 1e9
        #expect(spanned > 0.15 && spanned < 5)
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
    }

    @Test("e2e-latency sizes its floor's writes by the bytes its topics' logs appended per fdatasync in the run")
    func bytesPerFsync() throws {
        func exposition(bytes: Int, syncs: Int) -> String {
            """
            brokerd_publish_stage_seconds_count{stage="total"} 10
            brokerd_log_fsync_duration_seconds_sum{topic="bench.0"} 0.5
            brokerd_log_fsync_duration_seconds_count{topic="bench.0"} \(syncs)
            brokerd_log_fsync_duration_seconds_count{topic="__audit"} 7
            brokerd_log_bytes{topic="bench.0"} \(bytes)
            brokerd_log_bytes{topic="__audit"} 999
            """
        }
        let base = try #require(BrokerStages(exposition: exposition(bytes: 1_000_000, syncs: 100), readAt: 1_000_000_000))
        let now = try #require(BrokerStages(exposition: exposition(bytes: 6_000_000, syncs: 200), readAt: 3_000_000_000))
        #expect(now.logBytes == ["bench.0": 6_000_000, "__audit": 999])
        // Since the base: 5,000,000 bytes over 100 fdatasyncs of bench.0 (the audit topic is not one of the topics).
        let span = now.since(base, startedAt: 0)
        #expect(span.logBytesPerFsync(topics: ["bench.0"]) == 50_000)
        #expect(span.logBytesPerFsync(topics: ["bench.1"]) == nil)
        #expect(now.logBytesPerFsync(topics: ["bench.0"]) == 30_000)
    }

    @Test("a directory that cannot hold the file fails the measurement with its path")
    func unwritable() {
        #expect(throws: BenchError.self) {
            try DurabilityFloor.measure(directory: "/nonexistent-\(UUID().uuidString)", writeBytes: 4096, seconds: 0.1)
        }
    }
}
