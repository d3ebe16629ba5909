import Foundation

/// e2e-latency's records over the measured seconds, in windows of their scheduled send time: how many each window
/// had, how many of them arrived later than `slowMicros` after their schedule, and the latest. The percentile curve
/// says how long the tail is; this says when it happened: a p99 made of a few stalls (a window or two with
/// thousands of late records) calls for other causes than one made of a late record or two in most windows
/// (docs/benchmarks/HISTORY.md, round 26).
struct LatencyTimeline: Codable, Equatable, Sendable {
    /// One window's records.
    struct Window: Codable, Equatable, Sendable {
        /// Records scheduled in the window that arrived (at each consumer).
        var records = 0
        /// Of them, those that arrived more than `slowMicros` after their schedule.
        var slow = 0
        /// The latest arrival, in microseconds after its schedule.
        var maxMicros: UInt64 = 0
    }

    /// Each window's length, in milliseconds.
    let windowMillis: Int
    /// A record later than this (µs) is slow.
    let slowMicros: UInt64
    /// The windows from the start of the measured seconds.
    private(set) var windows: [Window]

    /// `seconds` of windows of `windowMillis` each (at least one).
    init(seconds: Double, windowMillis: Int = 100, slowMicros: UInt64) {
        precondition(windowMillis > 0, "a timeline's windows need a length")
        self.windowMillis = windowMillis
        self.slowMicros = slowMicros
        self.windows = Array(repeating: Window(), count: Swift.max(1, Int((seconds * 1000 / Double(windowMillis)).rounded(.up))))
    }

    /// Counts a record scheduled `scheduledNanos` after the measured seconds began that arrived `latencyMicros`
    /// after its schedule; a record scheduled outside the windows is not counted.
    mutating func record(scheduledNanos: UInt64, latencyMicros: UInt64) {
        let index = scheduledNanos / (UInt64(self.windowMillis) * 1_000_000)
        guard index < UInt64(self.windows.count) else { return }
        let i = Int(index)
        self.windows[i].records += 1
        if latencyMicros > self.slowMicros { self.windows[i].slow += 1 }
        if latencyMicros > self.windows[i].maxMicros { self.windows[i].maxMicros = latencyMicros }
    }

    /// Adds another consumer's timeline of the same shape.
    mutating func add(_ other: LatencyTimeline) {
        precondition(
            other.windowMillis == self.windowMillis && other.slowMicros == self.slowMicros
                && other.windows.count == self.windows.count,
            "timelines of different shapes"
        )
        for i in self.windows.indices {
            self.windows[i].records += other.windows[i].records
            self.windows[i].slow += other.windows[i].slow
            self.windows[i].maxMicros = Swift.max(self.windows[i].maxMicros, other.windows[i].maxMicros)
        }
    }

    /// The share of the records that were slow; nil when no window has records.
    var slowRecordsRatio: Double? {
        let records = self.windows.reduce(0) { $0 + $1.records }
        return records == 0 ? nil : Double(self.windows.reduce(0) { $0 + $1.slow }) / Double(records)
    }

    /// The result's figures: the share of records that were slow, the share of windows (of those with records)
    /// holding at least one slow record, the share of the slow records that the worst tenth of those windows
    /// held, and the median and 90th percentile of the windows' latest arrivals, named `PREFIX_100ms_...`. Empty
    /// when no window has records.
    func figures(prefix name: String = "timeline") -> [String: Double] {
        let used = self.windows.filter { $0.records > 0 }
        // No records, no ratio: `used` is then empty too.
        guard let slowRatio = self.slowRecordsRatio else { return [:] }
        let slow = used.reduce(0) { $0 + $1.slow }
        let bySlow = used.map(\.slow).sorted(by: >)
        let worstTenth = bySlow.prefix(Swift.max(1, used.count / 10)).reduce(0, +)
        let maxima = used.map(\.maxMicros).sorted()
        func percentile(_ p: Double) -> Double {
            Double(maxima[Swift.min(maxima.count - 1, Int(Double(maxima.count) * p))])
        }
        let prefix = "\(name)_\(self.windowMillis)ms"
        return [
            "\(prefix)_slow_records_ratio": slowRatio,
            "\(prefix)_windows_with_slow_ratio": Double(used.filter { $0.slow > 0 }.count) / Double(used.count),
            "\(prefix)_worst_tenth_of_slow_ratio": slow == 0 ? 0 : Double(worstTenth) / Double(slow),
            "\(prefix)_window_max_p50_us": percentile(0.5),
            "\(prefix)_window_max_p90_us": percentile(0.9),
        ]
    }
}

/// An SVG of a ``LatencyTimeline``: each window's latest arrival (log scale) and its share of slow records, over
/// the measured seconds, with the slow threshold drawn across; with `acknowledged` (a timeline of the same shape,
/// of when the records' PUBLISHes were acknowledged), each window's latest acknowledgement as a second line.
enum TimelinePlot {
    static func svg(_ timeline: LatencyTimeline, acknowledged: LatencyTimeline? = nil, title: String) -> String {
        let width = 800.0
        let height = 480.0
        let left = 70.0
        let right = 60.0
        let top = 64.0
        let bottom = 50.0
        let seconds = Double(timeline.windows.count * timeline.windowMillis) / 1000
        // Log10 of microseconds, from 100 µs up to the latest arrival (at least ten times the threshold, and 1 ms).
        let lowY = 2.0
        let latest = Swift.max(
            timeline.windows.map(\.maxMicros).max() ?? 1, acknowledged?.windows.map(\.maxMicros).max() ?? 1,
            timeline.slowMicros * 10
        )
        let axis = LogMicrosAxis(
            low: lowY, high: Swift.max(ceil(log10(Double(latest))), lowY + 1), bottom: height - bottom, top: top
        )
        func px(_ second: Double) -> Double { left + second / seconds * (width - left - right) }
        let py = axis.y
        func pyShare(_ share: Double) -> Double { height - bottom - share * (height - top - bottom) }
        var svg = LatencyPlot.opening(width: width, height: height, title: title)
        svg += axis.gridlines(left: px(0), right: px(seconds))
        for second in stride(from: 0.0, through: seconds, by: Swift.max(1, (seconds / 10).rounded())) {
            svg += "<text x=\"\(px(second))\" y=\"\(py(pow(10, lowY)) + 18)\" text-anchor=\"middle\">\(Int(second)) s</text>\n"
        }
        for step in 0...4 {
            let share = Double(step) / 4
            svg += "<text x=\"\(width - right + 6)\" y=\"\(pyShare(share) + 4)\" fill=\"#d1242f\">\(Int(share * 100))%</text>\n"
        }
        // Each window's share of slow records, as bars, under the latest arrivals' line.
        let barWidth = (width - left - right) / Double(timeline.windows.count)
        for (i, window) in timeline.windows.enumerated() where window.slow > 0 {
            let share = Double(window.slow) / Double(window.records)
            svg += String(
                format: "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#d1242f\" fill-opacity=\"0.35\"/>\n",
                px(Double(i * timeline.windowMillis) / 1000), pyShare(share), barWidth, pyShare(0) - pyShare(share)
            )
        }
        let threshold = Double(timeline.slowMicros)
        svg += "<line x1=\"\(px(0))\" y1=\"\(py(threshold))\" x2=\"\(px(seconds))\" y2=\"\(py(threshold))\" stroke=\"#d1242f\" stroke-dasharray=\"6,4\"/>\n"
        func line(_ windows: [LatencyTimeline.Window], colour: String) -> String {
            let points = windows.enumerated().filter { $0.element.records > 0 }.map { i, window in
                String(format: "%.1f,%.1f", px((Double(i) + 0.5) * Double(timeline.windowMillis) / 1000), py(Double(window.maxMicros)))
            }
            return "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.5\" points=\"\(points.joined(separator: " "))\"/>\n"
        }
        if let acknowledged { svg += line(acknowledged.windows, colour: "#2da44e") }
        svg += line(timeline.windows, colour: "#1f6feb")
        svg += LatencyPlot.axisTitles(
            x: "scheduled send time (measured seconds; windows of \(timeline.windowMillis) ms)",
            y: "latest arrival in the window", width: width, height: height
        )
        // The legend in two lines: in one, with the acknowledgements' line named, it ran past both edges.
        let green = acknowledged == nil ? "" : "; green: latest acknowledgement (durable)"
        svg += LatencyPlot.legend(
            [
                "blue: each window's latest arrival\(green)",
                "dashed: \(timeline.slowMicros) µs; red bars: share of the window's records later than that "
                    + "(right axis)",
            ],
            width: width
        )
        svg += "</svg>\n"
        return svg
    }
}
