import NIOCore
import Testing

@testable import brokerbench

/// e2e-latency's schedule: which records are due when.
@Suite("e2e-latency's schedule")
struct EndToEndScheduleTests {
    @Test("a record is due, and leaves, at its scheduled time, not one interval after it")
    func due() {
        #expect(EndToEndLoad.due(elapsedNanos: 0, rate: 2000) == 1)  // record 0 at the start
        #expect(EndToEndLoad.due(elapsedNanos: 499_999, rate: 2000) == 1)
        #expect(EndToEndLoad.due(elapsedNanos: 500_000, rate: 2000) == 2)  // record 1's time: 500 µs
        #expect(EndToEndLoad.due(elapsedNanos: 1_000_000_000, rate: 2000) == 2001)
        // Exact against the stamps at rates whose intervals are not whole nanoseconds too.
        for rate in [1, 3, 7, 2000, 575_810, 100_000_000] {
            for n in [1, 2, 3, 10, 999, 1_000_003] {
                let time = EndToEndLoad.scheduled(n, start: 0, rate: rate)
                #expect(EndToEndLoad.due(elapsedNanos: time, rate: rate) == n + 1, "rate \(rate), record \(n)")
                #expect(EndToEndLoad.due(elapsedNanos: time - 1, rate: rate) == n, "rate \(rate), record \(n)")
            }
        }
    }

    @Test("the producer ticks every pace, or at the next record's time when that is later")
    func tickDelay() {
        let pace = TimeAmount.microseconds(100)
        // 2,000 records/s: the next record 500 µs away, its time; 20,000: 50 µs away, a pace.
        #expect(EndToEndLoad.tickDelay(pace: pace, nextDue: 1_500_000, now: 1_000_000) == .microseconds(500))
        #expect(EndToEndLoad.tickDelay(pace: pace, nextDue: 1_050_000, now: 1_000_000) == pace)
        // Records already due (held back by a full window, or the tick late): a pace.
        #expect(EndToEndLoad.tickDelay(pace: pace, nextDue: 900_000, now: 1_000_000) == pace)
        #expect(EndToEndLoad.tickDelay(pace: pace, nextDue: 1_000_000, now: 1_000_000) == pace)
    }
}
