import Foundation
import Testing

@testable import brokerbench

/// e2e-latency's latency timeline: which window of the measured seconds each record falls in (by its scheduled
/// send time), what counts as slow, the figures a result reports, and the plot and JSON that show it.
@Suite("brokerbench's latency timeline")
struct LatencyTimelineTests {
    @Test("a record falls in the window of its scheduled time; slow is later than the threshold; outside, nothing")
    func windows() {
        var timeline = LatencyTimeline(seconds: 1, windowMillis: 100, slowMicros: 2000)
        #expect(timeline.windows.count == 10)
        timeline.record(scheduledNanos: 0, latencyMicros: 500)
        timeline.record(scheduledNanos: 99_999_999, latencyMicros: 2000)  // at the threshold: not slow
        timeline.record(scheduledNanos: 100_000_000, latencyMicros: 2001)
        timeline.record(scheduledNanos: 999_999_999, latencyMicros: 7000)
        timeline.record(scheduledNanos: 1_000_000_000, latencyMicros: 9_999_999)  // after the last window
        #expect(timeline.windows[0] == LatencyTimeline.Window(records: 2, slow: 0, maxMicros: 2000))
        #expect(timeline.windows[1] == LatencyTimeline.Window(records: 1, slow: 1, maxMicros: 2001))
        #expect(timeline.windows[9] == LatencyTimeline.Window(records: 1, slow: 1, maxMicros: 7000))
        #expect(timeline.windows.reduce(0) { $0 + $1.records } == 4)
        // A run shorter than a window still has one; a partial last window counts.
        #expect(LatencyTimeline(seconds: 0.01, slowMicros: 1).windows.count == 1)
        #expect(LatencyTimeline(seconds: 1.05, slowMicros: 1).windows.count == 11)
    }

    @Test("the figures: slow share of records, windows with a slow record, the worst tenth's share, window maxima")
    func figures() {
        var timeline = LatencyTimeline(seconds: 2, windowMillis: 100, slowMicros: 1000)
        // 20 windows of 100 records each; window 3 has 50 slow records (latest 9 ms), window 7 has 10 (latest 4 ms),
        // and every other window's latest is 10 µs times its index plus 100.
        for window in 0..<20 {
            for record in 0..<100 {
                let scheduled = UInt64(window) * 100_000_000 + UInt64(record) * 1_000_000
                var latency = UInt64(100 + 10 * window)
                if window == 3 && record < 50 { latency = record == 0 ? 9000 : 1500 }
                if window == 7 && record < 10 { latency = record == 0 ? 4000 : 1200 }
                timeline.record(scheduledNanos: scheduled, latencyMicros: latency)
            }
        }
        let figures = timeline.figures()
        #expect(figures["timeline_100ms_slow_records_ratio"] == 60.0 / 2000)
        #expect(figures["timeline_100ms_windows_with_slow_ratio"] == 2.0 / 20)
        #expect(figures["timeline_100ms_worst_tenth_of_slow_ratio"] == 1.0)  // the 2 worst windows hold all 60
        // Window maxima sorted: 18 of 100 + 10 i (i ≠ 3, 7), then 4000 and 9000; the 11th (index 10) is i = 12.
        #expect(figures["timeline_100ms_window_max_p50_us"] == 220)
        #expect(figures["timeline_100ms_window_max_p90_us"] == 4000)
        // A timeline with no record reports nothing rather than zeros.
        #expect(LatencyTimeline(seconds: 1, slowMicros: 1000).figures().isEmpty)
        // The acknowledgements' timeline reports the same figures under its own names.
        let acks = timeline.figures(prefix: "ack_timeline")
        #expect(acks.count == 5 && acks["ack_timeline_100ms_slow_records_ratio"] == 60.0 / 2000)
    }

    @Test("consumers' timelines add up: counts summed, the latest arrival the latest of both")
    func adding() {
        var first = LatencyTimeline(seconds: 0.2, windowMillis: 100, slowMicros: 1000)
        var second = first
        first.record(scheduledNanos: 10, latencyMicros: 3000)
        second.record(scheduledNanos: 20, latencyMicros: 500)
        second.record(scheduledNanos: 150_000_000, latencyMicros: 1500)
        first.add(second)
        #expect(first.windows[0] == LatencyTimeline.Window(records: 2, slow: 1, maxMicros: 3000))
        #expect(first.windows[1] == LatencyTimeline.Window(records: 1, slow: 1, maxMicros: 1500))
    }

    @Test("the plot draws the windows with records, the threshold, and a bar for each window with slow records")
    func plot() {
        var timeline = LatencyTimeline(seconds: 1, windowMillis: 100, slowMicros: 2000)
        timeline.record(scheduledNanos: 0, latencyMicros: 300)
        timeline.record(scheduledNanos: 250_000_000, latencyMicros: 45_000)
        timeline.record(scheduledNanos: 250_000_001, latencyMicros: 200)
        let svg = TimelinePlot.svg(timeline, title: "e2e <test> & more")
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
        #expect(svg.contains("e2e &lt;test> &amp; more"))
        let polyline = svg.split(separator: "\n").first { $0.hasPrefix("<polyline") }
        #expect(polyline?.split(separator: " ").filter { $0.contains(",") }.count == 2)  // two windows had records
        #expect(svg.components(separatedBy: "fill=\"#d1242f\" fill-opacity").count == 2)  // one window had slow ones
        #expect(svg.contains("stroke-dasharray"))
        #expect(svg.contains(">100 ms</text>"))  // the log scale reaches the latest arrival, 45 ms
        // With the acknowledgements' timeline: a second line, green, of their latest per window, on the same scale.
        var acknowledged = LatencyTimeline(seconds: 1, windowMillis: 100, slowMicros: 2000)
        acknowledged.record(scheduledNanos: 0, latencyMicros: 150)
        acknowledged.record(scheduledNanos: 250_000_000, latencyMicros: 300)
        acknowledged.record(scheduledNanos: 950_000_000, latencyMicros: 400_000)
        let both = TimelinePlot.svg(timeline, acknowledged: acknowledged, title: "both")
        let lines = both.split(separator: "\n").filter { $0.hasPrefix("<polyline") }
        #expect(lines.count == 2 && lines[0].contains("#2da44e") && lines[1].contains("#1f6feb"))
        #expect(lines[0].split(separator: " ").filter { $0.contains(",") }.count == 3)
        #expect(both.contains(">1 s</text>") && both.contains("latest acknowledgement"))
        // The legend fits the 800-pixel width: no line of it over 110 characters at 11 pixels.
        let legend = both.split(separator: "\n").filter { $0.contains("font-size=\"11\"") }
        #expect(legend.count == 2)
        for line in legend {
            let text = line.split(separator: ">", maxSplits: 1)[1].dropLast("</text>".count)
            #expect(text.count <= 110, "\(text.count) characters: \(text)")
        }
        #expect(!svg.contains("#2da44e"))
        // A 1 µs threshold and no record: still a scale (100 µs to 1 ms) and no NaN.
        let empty = TimelinePlot.svg(LatencyTimeline(seconds: 1, slowMicros: 1), title: "empty")
        #expect(empty.contains(">1 ms</text>") && !empty.contains("nan") && !empty.contains("inf"))
    }

    @Test("--slow-micros is checked: 0 and more than an hour are refused")
    func slowMicrosOption() throws {
        #expect(try LoadOptions.parse(["--slow-micros", "500"]).resolved(for: .e2eLatency).slowMicros == 500)
        for bad in ["0", "3600000001"] {
            #expect(throws: (any Error).self) { try LoadOptions.parse(["--slow-micros", bad]).resolved(for: .e2eLatency) }
        }
    }

    @Test("a result carries its timelines in JSON; the timeline plot goes beside the percentile plot")
    func jsonAndPath() throws {
        var timeline = LatencyTimeline(seconds: 0.3, windowMillis: 100, slowMicros: 2000)
        timeline.record(scheduledNanos: 120_000_000, latencyMicros: 2500)
        let parameters = try LoadOptions.parse(["--duration", "0.3"]).resolved(for: .e2eLatency)
        var result = BenchResult(
            scenario: "e2e-latency", parameters: parameters, measuredSeconds: 0.3, records: 1, recordBytes: 256,
            errors: 0, latencyLabel: "test", histogram: nil
        )
        result.timeline = timeline
        var acknowledged = LatencyTimeline(seconds: 0.3, windowMillis: 100, slowMicros: 2000)
        acknowledged.record(scheduledNanos: 210_000_000, latencyMicros: 900)
        result.ackTimeline = acknowledged
        let json = try JSONSerialization.jsonObject(with: result.jsonData()) as? [String: Any]
        let acks = try #require((json?["ackTimeline"] as? [String: Any])?["windows"] as? [[String: Any]])
        #expect(acks.count == 3 && acks[2]["records"] as? Int == 1 && acks[2]["maxMicros"] as? Int == 900)
        let encoded = try #require(json?["timeline"] as? [String: Any])
        #expect(encoded["windowMillis"] as? Int == 100 && encoded["slowMicros"] as? Int == 2000)
        let windows = try #require(encoded["windows"] as? [[String: Any]])
        #expect(windows.count == 3 && windows[1]["slow"] as? Int == 1 && windows[1]["maxMicros"] as? Int == 2500)
        #expect((json?["parameters"] as? [String: Any])?["slowMicros"] as? Int == 2000)
        #expect(RunCommand.timelinePlotPath("out/e2e-latency-1.svg") == "out/e2e-latency-1-timeline.svg")
        #expect(RunCommand.timelinePlotPath("plot") == "plot-timeline.svg")
    }
}
