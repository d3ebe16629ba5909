import Foundation
import Histogram

/// Latency percentiles in microseconds.
struct LatencySummary: Codable, Sendable {
    var count: UInt64
    var p50: Double
    var p90: Double
    var p99: Double
    var p999: Double
    var max: Double
    var mean: Double

    init(_ histogram: Histogram<UInt64>) {
        self.count = histogram.totalCount
        self.p50 = Double(histogram.valueAtPercentile(50))
        self.p90 = Double(histogram.valueAtPercentile(90))
        self.p99 = Double(histogram.valueAtPercentile(99))
        self.p999 = Double(histogram.valueAtPercentile(99.9))
        self.max = Double(histogram.max)
        self.mean = histogram.mean
    }
}

/// The broker's CPU time and memory over the run.
struct BrokerResources: Codable, Sendable {
    /// False when the broker ran inside brokerbench (the figures then include the load generator).
    var separateProcess: Bool
    var cpuSeconds: Double
    var rssBytes: Int
    var peakRssBytes: Int
}

/// Where the figures were taken.
struct MachineInfo: Codable, Sendable {
    var cores: Int
    var memoryBytes: UInt64
    var kernel: String
    var date: String
    /// The kernel's cpuidle driver (e.g. `haltpoll` in a KVM guest), when it has one.
    var cpuidleDriver: String?
    /// How long an idle vCPU polls before it halts (the `haltpoll` driver's `guest_halt_poll_ns`), when the kernel
    /// has that setting. At 0 every wake-up of a thread on an idle vCPU waits for the host to run that vCPU again:
    /// in this project's measurements that doubled the round trip of one request (docs/benchmarks/HISTORY.md, round
    /// 12).
    var guestHaltPollNanos: Int?

    static func current() -> MachineInfo {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return MachineInfo(
            cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryBytes: ProcessInfo.processInfo.physicalMemory,
            kernel: release,
            date: ISO8601DateFormatter().string(from: Date()),
            cpuidleDriver: Self.readSetting("/sys/devices/system/cpu/cpuidle/current_driver"),
            guestHaltPollNanos: Self.readSetting("/sys/module/haltpoll/parameters/guest_halt_poll_ns").flatMap { Int($0) }
        )
    }

    /// One line of a sysfs file, trimmed; nil when it cannot be read.
    private static func readSetting(_ path: String) -> String? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        let line = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return line.isEmpty ? nil : line
    }

    /// A line for the end-of-run table.
    var summary: String {
        var text = "\(self.cores) cores, \(self.memoryBytes >> 30) GiB, kernel \(self.kernel)"
        if let driver = self.cpuidleDriver { text += ", cpuidle \(driver)" }
        if let poll = self.guestHaltPollNanos { text += ", guest halt poll \(poll) ns" }
        return text
    }
}

/// One run's figures; written as JSON and printed as a table.
struct BenchResult: Codable, Sendable {
    var scenario: String
    var parameters: BenchParameters
    var measuredSeconds: Double
    var records: Int
    var recordsPerSecond: Double
    var megabytesPerSecond: Double
    var errors: Int
    var latencyLabel: String
    var latencyMicros: LatencySummary?
    var extra: [String: Double] = [:]
    var broker: BrokerResources?
    var machine: MachineInfo?
    /// e2e-latency: when in the measured seconds the records were late (``LatencyTimeline``).
    var timeline: LatencyTimeline?
    /// e2e-latency: the same for the records' acknowledgements, from each record's schedule to its PUBLISH's
    /// acknowledgement (the records durable), so a late window tells the append path from the delivery.
    var ackTimeline: LatencyTimeline?
    /// Not encoded; used for the plot.
    var latencyHistogram: Histogram<UInt64>?

    enum CodingKeys: String, CodingKey {
        case scenario, parameters, measuredSeconds, records, recordsPerSecond, megabytesPerSecond, errors, latencyLabel,
            latencyMicros, extra, broker, machine, timeline, ackTimeline
    }

    init(
        scenario: String, parameters: BenchParameters, measuredSeconds: Double, records: Int, recordBytes: Int,
        errors: Int, latencyLabel: String, histogram: Histogram<UInt64>?
    ) {
        self.scenario = scenario
        self.parameters = parameters
        self.measuredSeconds = measuredSeconds
        self.records = records
        let seconds = Swift.max(measuredSeconds, 1e-9)
        self.recordsPerSecond = Double(records) / seconds
        self.megabytesPerSecond = Double(records * recordBytes) / seconds / 1_000_000
        self.errors = errors
        self.latencyLabel = latencyLabel
        self.latencyHistogram = histogram.flatMap { $0.totalCount > 0 ? $0 : nil }
        self.latencyMicros = self.latencyHistogram.map(LatencySummary.init)
    }

    var latency: LatencySummary? { self.latencyMicros }

    func jsonData() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }

    func table() -> String {
        var lines: [String] = []
        func row(_ name: String, _ value: String) {
            lines.append((name.count < 42 ? name.padding(toLength: 42, withPad: " ", startingAt: 0) : name + " ") + value)
        }
        lines.append("")
        lines.append("brokerbench \(self.scenario)")
        row("measured seconds", String(format: "%.2f", self.measuredSeconds))
        row("records", "\(self.records)")
        row("records/s", String(format: "%.0f", self.recordsPerSecond))
        row("MB/s (values)", String(format: "%.1f", self.megabytesPerSecond))
        row("errors", "\(self.errors)")
        if let latency = self.latencyMicros {
            row("latency", self.latencyLabel)
            row("  p50 / p90 / p99 (µs)", String(format: "%.0f / %.0f / %.0f", latency.p50, latency.p90, latency.p99))
            row("  p99.9 / max (µs)", String(format: "%.0f / %.0f", latency.p999, latency.max))
        }
        for (key, value) in self.extra.sorted(by: { $0.key < $1.key }) {
            // Ratios, busy fractions, cores, seconds and a device's milliseconds per request need more than one
            // decimal to be read.
            let precise = key.hasSuffix("_ratio") || key.hasSuffix("_busy") || key.hasSuffix("_cores")
                || key.hasSuffix("_per_record") || key.hasPrefix("restart_") || key.hasSuffix("_gib")
                || key.hasSuffix("_ms_per_io")
            // A share under 1% (e2e-latency's late records against their durability floor) keeps five decimals.
            let small = value != 0 && abs(value) < 0.01
            row(key, String(format: precise ? (small ? "%.5f" : "%.3f") : "%.1f", value))
        }
        if let machine = self.machine { row("machine", machine.summary) }
        if let broker = self.broker {
            let whose = broker.separateProcess ? "broker" : "brokerbench + embedded broker"
            row("\(whose) CPU s", String(format: "%.2f", broker.cpuSeconds))
            row("\(whose) RSS / peak MB", String(format: "%.1f / %.1f", Double(broker.rssBytes) / 1_048_576, Double(broker.peakRssBytes) / 1_048_576))
        }
        return lines.joined(separator: "\n")
    }
}

/// An SVG of the latency percentile curve, HdrHistogram style: x is log10(1 / (1 - percentile)).
enum LatencyPlot {
    static func svg(histogram: Histogram<UInt64>, title: String) -> String {
        let width = 800.0
        let height = 480.0
        let left = 70.0
        let right = 40.0
        let top = 40.0
        let bottom = 50.0
        let maxX = 5.0  // up to 99.999%
        let points: [(Double, Double)] = stride(from: 0.0, through: maxX, by: 0.02).map { x in
            let percentile = 100 * (1 - pow(10, -x))
            return (x, Double(histogram.valueAtPercentile(Swift.min(percentile, 100))))
        }
        let maxY = Swift.max(1, (points.map(\.1).max() ?? 1) * 1.1)
        func px(_ x: Double) -> Double { left + x / maxX * (width - left - right) }
        func py(_ y: Double) -> Double { height - bottom - y / maxY * (height - top - bottom) }
        var svg = Self.opening(width: width, height: height, title: title)
        for (x, label) in [(0.0, "0%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%"), (5.0, "99.999%")] {
            svg += "<line x1=\"\(px(x))\" y1=\"\(py(0))\" x2=\"\(px(x))\" y2=\"\(py(maxY))\" stroke=\"#ddd\"/>\n"
            svg += "<text x=\"\(px(x))\" y=\"\(py(0) + 18)\" text-anchor=\"middle\">\(label)</text>\n"
        }
        for step in 0...5 {
            let y = maxY * Double(step) / 5
            svg += "<line x1=\"\(px(0))\" y1=\"\(py(y))\" x2=\"\(px(maxX))\" y2=\"\(py(y))\" stroke=\"#eee\"/>\n"
            svg += "<text x=\"\(left - 6)\" y=\"\(py(y) + 4)\" text-anchor=\"end\">\(Int(y))</text>\n"
        }
        let path = points.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
        svg += "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"\(path)\"/>\n"
        svg += Self.axisTitles(x: "percentile", y: "latency (µs)", width: width, height: height)
        svg += "</svg>\n"
        return svg
    }

    /// An SVG's opening of `width` by `height` on white, with `title` centred at the top; close it with `</svg>`.
    static func opening(width: Double, height: Double, title: String) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(Int(width / 2))" y="22" text-anchor="middle" font-size="15">\(Self.escape(title))</text>

        """
    }

    /// The x axis's title centred under the plot, and the y axis's turned up along its left edge.
    static func axisTitles(x: String, y: String, width: Double, height: Double) -> String {
        "<text x=\"\(Int(width / 2))\" y=\"\(Int(height - 12))\" text-anchor=\"middle\">\(x)</text>\n"
            + "<text transform=\"translate(16,\(Int(height / 2))) rotate(-90)\" text-anchor=\"middle\">\(y)</text>\n"
    }

    /// A legend of `lines` in small type, centred under the title, 14 pixels apart, around y = 44.
    static func legend(_ lines: [String], width: Double) -> String {
        let first = 44 - 6 * (lines.count - 1)
        return lines.enumerated().map { i, text in
            "<text x=\"\(Int(width / 2))\" y=\"\(first + 14 * i)\" text-anchor=\"middle\" font-size=\"11\">"
                + "\(text)</text>\n"
        }.joined()
    }

    /// `text` with `&` and `<` escaped, for an SVG text element.
    private static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    }
}

/// A vertical axis of microseconds on a log10 scale for the SVG plots: from 10^`low` µs at pixel `bottom` up to
/// 10^`high` µs at pixel `top`, a gridline and a label at each power of ten.
struct LogMicrosAxis {
    let low: Double
    let high: Double
    let bottom: Double
    let top: Double

    /// The pixel of `micros`, clamped to the axis.
    func y(_ micros: Double) -> Double {
        let exponent = Swift.min(Swift.max(log10(Swift.max(micros, 1)), self.low), self.high)
        return self.bottom - (exponent - self.low) / (self.high - self.low) * (self.bottom - self.top)
    }

    /// Each power of ten's gridline from `left` to `right`, labelled left of `left` (`100 µs`, `10 ms`, `1 s`).
    func gridlines(left: Double, right: Double) -> String {
        var svg = ""
        var exponent = self.low
        while exponent <= self.high {
            let micros = pow(10, exponent)
            let label =
                micros >= 1_000_000
                ? "\(Int(micros / 1_000_000)) s" : micros >= 1000 ? "\(Int(micros / 1000)) ms" : "\(Int(micros)) µs"
            let y = self.y(micros)
            svg += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(right)\" y2=\"\(y)\" stroke=\"#eee\"/>\n"
            svg += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(label)</text>\n"
            exponent += 1
        }
        return svg
    }
}
