import ArgumentParser
import BrokerServer
import Foundation

/// `brokerbench sweep`: e2e-latency at several rates, to see how the publish-to-deliver tail grows with the rate and
/// at what rate it leaves a bound. issue 5 asks for a p99 under 2 ms at half the durable-publish rate; where that is
/// missed, this says what rate the machine does carry within it (docs/BENCHMARKS.md, "e2e-latency against the rate").
struct SweepCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run e2e-latency at several rates: the publish-to-deliver tail against the rate.",
        discussion: """
            Runs e2e-latency --runs times at each of --rates, each run on a broker of its own (--spawn, --embedded; \
            with --server, the same broker), the rates in turn: every rate's first run, then every rate's second, \
            and so on, so that a slow spell of the machine spreads over the rates instead of falling on one. \
            Prints, per rate, the median (min-max) of the records/s delivered, of publish-to-deliver's p50 and p99, \
            of the share of records later than --slow-micros and of both processes' CPU per record, and how many \
            runs kept the p99 within --p99-micros; then the highest rate up to which every run kept it (at that \
            rate and at every lower one), and the same for the median. Writes into --output-dir every run's result \
            as `run e2e-latency` writes it (e2e-latency-RATE-N.json; no durability floor), the sweep \
            (sweep.json) and a plot of the p99 against the rate (sweep.svg).
            """
    )

    @Option(help: "The rates to run e2e-latency at, records/s, comma-separated (e.g. 200000,300000,400000).")
    var rates: String

    @Option(help: "Runs at each rate.")
    var runs: Int = 3

    @Option(help: "The bound on publish-to-deliver p99, µs (issue 5's target: 2000).")
    var p99Micros: Int = 2000

    @Option(help: "Where to write the results (created when missing).")
    var outputDir: String = "brokerbench-sweep"

    @OptionGroup var target: TargetOptions
    @OptionGroup var load: LoadOptions

    func validate() throws {
        _ = try Self.parseRates(self.rates)
        guard (1...100).contains(self.runs) else { throw ValidationError("--runs wants 1...100") }
        guard self.p99Micros >= 1 else { throw ValidationError("--p99-micros wants 1 or more") }
        guard self.load.rate == nil else { throw ValidationError("sweep takes its rates from --rates, not --rate") }
    }

    /// `--rates`: whole records/s within ``LoadOptions/rates``, each once, in ascending order.
    static func parseRates(_ text: String) throws -> [Int] {
        var rates: [Int] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = item.trimmingCharacters(in: .whitespaces)
            guard let rate = Int(trimmed), LoadOptions.rates.contains(rate) else {
                throw ValidationError(
                    "--rates wants records/s from \(LoadOptions.rates) separated by commas (e.g. 200000,300000), "
                        + "got '\(trimmed)'"
                )
            }
            guard !rates.contains(rate) else { throw ValidationError("--rates names \(rate) twice") }
            rates.append(rate)
        }
        guard rates.count <= 50 else { throw ValidationError("--rates wants at most 50 rates") }
        return rates.sorted()
    }

    func run() async throws {
        // The load generator frees on other threads what it allocates, like brokerd: same allocator settings.
        AllocatorTuning.configure()
        try await self.sweep()
    }

    /// The sweep itself (``run()`` without the process-wide allocator settings, for tests).
    func sweep() async throws {
        let rates = try Self.parseRates(self.rates)
        let base = try self.load.resolved(for: .e2eLatency)
        try FileManager.default.createDirectory(atPath: self.outputDir, withIntermediateDirectories: true)
        var points: [SweepPoint] = []
        do {
            for run in 1...self.runs {
                for rate in rates {
                    print("sweep: \(rate) records/s, run \(run) of \(self.runs)")
                    var parameters = base
                    parameters.rate = rate
                    var target = self.target
                    // A broker of its own: with --data-dir, a directory of its own in it.
                    target.dataDir = self.target.dataDir.map { $0 + "/\(rate)-\(run)" }
                    // No durability floor after each run (`run e2e-latency --floor-seconds 0`): said so in the result.
                    let result = try await Scenario.e2eLatency.measure(target, parameters: parameters) { _, _ in
                        ["durability_floor_seconds": 0]
                    }
                    let path = self.outputDir + "/e2e-latency-\(rate)-\(run).json"
                    try result.jsonData().write(to: URL(fileURLWithPath: path))
                    points.append(SweepPoint(rate: rate, run: run, result: result))
                }
            }
        } catch {
            // A run that could not be made (the broker did not start, a connection failed) ends the sweep; what
            // ran before it is still summarized and written.
            print("sweep: stopped after \(points.count) run(s): \(error)")
            try self.write(points, slowMicros: base.slowMicros)
            throw error
        }
        try self.write(points, slowMicros: base.slowMicros)
    }

    /// Prints the sweep of `points` as a table and writes `sweep.json` and `sweep.svg`.
    private func write(_ points: [SweepPoint], slowMicros: Int) throws {
        let sweep = Sweep(boundMicros: self.p99Micros, slowMicros: slowMicros, points: points, machine: .current())
        print(sweep.table())
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(sweep).write(to: URL(fileURLWithPath: self.outputDir + "/sweep.json"))
        try SweepPlot.svg(sweep).write(toFile: self.outputDir + "/sweep.svg", atomically: true, encoding: .utf8)
        print("results: \(self.outputDir)/e2e-latency-RATE-N.json, \(self.outputDir)/sweep.json")
        print("plot:    \(self.outputDir)/sweep.svg")
    }
}

/// One e2e-latency run of a sweep: what the sweep's table and plot show of it.
struct SweepPoint: Codable, Equatable, Sendable {
    /// Records/s asked for.
    var rate: Int
    /// Which run at this rate, from 1.
    var run: Int
    /// Records/s delivered in the measured seconds.
    var recordsPerSecond: Double
    /// Publish-to-deliver percentiles, µs; nil when no measured record arrived.
    var p50Micros: Double?
    var p99Micros: Double?
    var p999Micros: Double?
    /// The share of measured records later than the sweep's `slowMicros`.
    var slowRecordsRatio: Double?
    /// CPU per delivered record, µs: the broker's (nil unless it ran as a process of its own) and brokerbench's.
    var brokerMicrosPerRecord: Double?
    var benchMicrosPerRecord: Double?
    /// Records that failed or never arrived.
    var errors: Int
}

// In an extension, so that the memberwise initializer stays.
extension SweepPoint {
    /// The figures of an e2e-latency result.
    init(rate: Int, run: Int, result: BenchResult) {
        self.init(
            rate: rate, run: run, recordsPerSecond: result.recordsPerSecond, p50Micros: result.latency?.p50,
            p99Micros: result.latency?.p99, p999Micros: result.latency?.p999,
            slowRecordsRatio: result.timeline?.slowRecordsRatio,
            brokerMicrosPerRecord: result.extra["cpu_broker_us_per_record"],
            benchMicrosPerRecord: result.extra["cpu_bench_us_per_record"], errors: result.errors
        )
    }

    /// Whether the run's p99 was within `bound` µs with every record delivered.
    func kept(_ bound: Int) -> Bool {
        guard let p99 = self.p99Micros else { return false }
        return p99 <= Double(bound) && self.errors == 0
    }
}

/// A sweep's runs and what they add up to.
struct Sweep: Codable, Sendable {
    /// The bound on the p99, µs.
    var boundMicros: Int
    /// A record later than this (µs) counts as slow.
    var slowMicros: Int
    /// Every run, in the order they ran.
    var points: [SweepPoint]
    var machine: MachineInfo?
    /// The highest rate up to which every run kept the bound (at it and at every lower rate); nil: not the lowest.
    var highestRateEveryRunKept: Int?
    /// The same for the median p99 (and no errors in any run at the rate).
    var highestRateMedianKept: Int?
    /// Per rate, ascending.
    var rows: [Row]

    /// One rate's runs: medians and ranges.
    struct Row: Codable, Equatable, Sendable {
        var rate: Int
        var runs: Int
        /// How many runs kept the p99 within the bound, with every record delivered.
        var runsKept: Int
        var recordsPerSecond: Spread
        var p50Micros: Spread?
        var p99Micros: Spread?
        var slowRecordsRatio: Spread?
        var brokerMicrosPerRecord: Spread?
        var benchMicrosPerRecord: Spread?
        var errors: Int
    }

    /// The median and range of some runs' figure.
    struct Spread: Codable, Equatable, Sendable {
        var median: Double
        var min: Double
        var max: Double

        /// nil for no values. The median of an even count is the mean of the middle two.
        init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            let middle = sorted.count / 2
            self.median = sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
            self.min = sorted[0]
            self.max = sorted[sorted.count - 1]
        }
    }

    init(boundMicros: Int, slowMicros: Int, points: [SweepPoint], machine: MachineInfo?) {
        self.boundMicros = boundMicros
        self.slowMicros = slowMicros
        self.points = points
        self.machine = machine
        let byRate = Dictionary(grouping: points, by: \.rate)
        self.rows = byRate.keys.sorted().map { rate in
            let runs = byRate[rate]!
            return Row(
                rate: rate, runs: runs.count, runsKept: runs.filter { $0.kept(boundMicros) }.count,
                recordsPerSecond: Spread(runs.map(\.recordsPerSecond))!,
                p50Micros: Spread(runs.compactMap(\.p50Micros)), p99Micros: Spread(runs.compactMap(\.p99Micros)),
                slowRecordsRatio: Spread(runs.compactMap(\.slowRecordsRatio)),
                brokerMicrosPerRecord: Spread(runs.compactMap(\.brokerMicrosPerRecord)),
                benchMicrosPerRecord: Spread(runs.compactMap(\.benchMicrosPerRecord)),
                errors: runs.reduce(0) { $0 + $1.errors }
            )
        }
        // A run without a p99 (nothing arrived) kept no bound, and its rate's median keeps none either.
        func lastKept(_ kept: (Row) -> Bool) -> Int? {
            self.rows.prefix { kept($0) }.last?.rate
        }
        self.highestRateEveryRunKept = lastKept { $0.runsKept == $0.runs }
        self.highestRateMedianKept = lastKept { row in
            guard row.errors == 0, let p99 = row.p99Micros, byRate[row.rate]!.allSatisfy({ $0.p99Micros != nil }) else {
                return false
            }
            return p99.median <= Double(boundMicros)
        }
    }

    /// The end-of-sweep table.
    func table() -> String {
        func grouped(_ value: Double) -> String {
            guard value.isFinite else { return "\(value)" }
            let digits = String(Int(value.rounded()))
            var out = ""
            for (i, character) in digits.reversed().enumerated() {
                if i > 0, i % 3 == 0, character != "-" { out.append(",") }
                out.append(character)
            }
            return String(out.reversed())
        }
        func spread(_ value: Spread?, _ format: (Double) -> String) -> String {
            guard let value else { return "-" }
            return value.min == value.max
                ? format(value.median) : "\(format(value.median)) (\(format(value.min))-\(format(value.max)))"
        }
        let decimals = { (digits: Int) in { (value: Double) in String(format: "%.\(digits)f", value) } }
        let header = [
            "rate asked", "delivered/s", "p50 µs", "p99 µs", "share > \(grouped(Double(self.slowMicros))) µs",
            "brokerd µs/rec", "brokerbench µs/rec", "runs kept",
        ]
        var cells = [header]
        for row in self.rows {
            cells.append([
                grouped(Double(row.rate)), spread(row.recordsPerSecond, grouped), spread(row.p50Micros, grouped),
                spread(row.p99Micros, grouped), spread(row.slowRecordsRatio, decimals(4)),
                spread(row.brokerMicrosPerRecord, decimals(2)), spread(row.benchMicrosPerRecord, decimals(2)),
                "\(row.runsKept)/\(row.runs)" + (row.errors > 0 ? " (\(row.errors) errors)" : ""),
            ])
        }
        let widths = header.indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        var lines = ["", "brokerbench sweep: e2e-latency, p99 bound \(grouped(Double(self.boundMicros))) µs"]
        for line in cells {
            lines.append(
                line.enumerated().map { column, text in
                    String(repeating: " ", count: widths[column] - text.count) + text
                }.joined(separator: "  ")
            )
        }
        func rate(_ value: Int?) -> String { value.map { "\(grouped(Double($0))) records/s" } ?? "none of the rates" }
        lines.append("highest rate up to which every run kept the bound: \(rate(self.highestRateEveryRunKept))")
        lines.append("highest rate up to which the median p99 kept it:   \(rate(self.highestRateMedianKept))")
        if let machine = self.machine { lines.append("machine: \(machine.summary)") }
        return lines.joined(separator: "\n")
    }
}

/// An SVG of a sweep: publish-to-deliver p99 (log scale) against the rate asked; a dot per run, a line through each
/// rate's median, the bound dashed.
enum SweepPlot {
    static func svg(_ sweep: Sweep) -> String {
        let width = 800.0
        let height = 480.0
        let left = 70.0
        let right = 40.0
        let top = 64.0
        let bottom = 50.0
        let p99s = sweep.points.compactMap(\.p99Micros)
        let bound = Double(sweep.boundMicros)
        // Log10 of microseconds, from a power of ten at or below the lowest p99 (and 100 µs) to one above the
        // highest (and ten times the bound).
        let low = floor(log10(Swift.max(1, Swift.min(p99s.min() ?? 100, 100))))
        let axis = LogMicrosAxis(
            low: low, high: Swift.max(ceil(log10(Swift.max(p99s.max() ?? 1, bound * 10))), low + 1),
            bottom: height - bottom, top: top
        )
        // The rate axis, from 0 to a round step above the highest rate.
        let highest = Double(sweep.rows.last?.rate ?? 1)
        let magnitude = pow(10, floor(log10(highest)))
        let step = Swift.max(1, [1.0, 2, 5, 10].map { $0 * magnitude / 10 }.first { highest / $0 <= 10 } ?? magnitude)
        let maxX = (highest / step).rounded(.down) * step + step
        func px(_ rate: Double) -> Double { left + rate / maxX * (width - left - right) }
        let title = "e2e-latency: publish-to-deliver p99 against the rate"
        var svg = LatencyPlot.opening(width: width, height: height, title: title)
        svg += axis.gridlines(left: px(0), right: px(maxX))
        for tick in stride(from: 0.0, through: maxX, by: step) {
            let label = Self.rateLabel(tick)
            svg += "<text x=\"\(px(tick))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(label)</text>\n"
        }
        let boundY = axis.y(bound)
        svg += "<line x1=\"\(px(0))\" y1=\"\(boundY)\" x2=\"\(px(maxX))\" y2=\"\(boundY)\" stroke=\"#d1242f\" "
            + "stroke-dasharray=\"6,4\"/>\n"
        for point in sweep.points {
            guard let p99 = point.p99Micros else { continue }
            let colour = point.kept(sweep.boundMicros) ? "#1f6feb" : "#d1242f"
            let centre = String(format: "cx=\"%.1f\" cy=\"%.1f\"", px(Double(point.rate)), axis.y(p99))
            svg += "<circle \(centre) r=\"4\" fill=\"\(colour)\" fill-opacity=\"0.5\"/>\n"
        }
        let medians = sweep.rows.compactMap { row in
            row.p99Micros.map { String(format: "%.1f,%.1f", px(Double(row.rate)), axis.y($0.median)) }
        }
        let line = medians.joined(separator: " ")
        svg += "<polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\" points=\"\(line)\"/>\n"
        svg += LatencyPlot.axisTitles(
            x: "rate asked (records/s)", y: "publish-to-deliver p99", width: width, height: height
        )
        svg += LatencyPlot.legend(
            [
                "a dot per run (red: over the bound or a record lost); line: each rate's median; dashed: the bound, "
                    + "\(sweep.boundMicros) µs"
            ],
            width: width
        )
        svg += "</svg>\n"
        return svg
    }

    /// `250k`, `1.5M`, `0`.
    static func rateLabel(_ rate: Double) -> String {
        if rate >= 1_000_000 { return String(format: "%gM", rate / 1_000_000) }
        if rate >= 1000 { return String(format: "%gk", rate / 1000) }
        return String(format: "%g", rate)
    }
}
