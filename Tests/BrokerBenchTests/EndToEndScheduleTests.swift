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
}
