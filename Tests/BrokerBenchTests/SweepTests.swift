import ArgumentParser
import Testing

@testable import brokerbench

/// `brokerbench sweep`: its options, the summary, the table and the plot. A sweep over real sockets runs in `make
/// bench-smoke` (checked there by `summarize.py --check`), not here: a broker under load beside the whole suite
/// starved its timing-bound tests.
@Suite("brokerbench sweep")
struct SweepTests {
    @Test("--rates: whole records/s in range, each once, sorted; anything else is refused with the reason")
    func rates() throws {
        #expect(try SweepCommand.parseRates("300000, 100000,200000") == [100_000, 200_000, 300_000])
        #expect(try SweepCommand.parseRates("5") == [5])
        for (text, reason) in [
            ("", "got ''"), ("100000,", "got ''"), ("abc", "got 'abc'"), ("0", "got '0'"), ("-5", "got '-5'"),
            ("1.5", "got '1.5'"), ("100000000000", "got '100000000000'"), ("100,100", "names 100 twice"),
        ] {
            #expect {
                try SweepCommand.parseRates(text)
            } throws: { error in
                "\(error)".contains(reason)
            }
        }
        let tooMany = (1...51).map(String.init).joined(separator: ",")
        #expect(throws: ValidationError.self) { try SweepCommand.parseRates(tooMany) }
        // The options: --rate belongs to `run`; --runs and the bound must make sense.
        func refused(_ arguments: [String], _ reason: String, run: Bool = false) {
            #expect {
                if run { _ = try RunCommand.parse(arguments) } else { _ = try SweepCommand.parse(arguments) }
            } throws: { error in
                SweepCommand.message(for: error).contains(reason)
            }
        }
        refused(["--rates", "1000", "--rate", "5", "--embedded"], "not --rate")
        refused(["--rates", "1000", "--embedded", "--runs", "0"], "--runs wants 1...100")
        refused(["--rates", "1000", "--embedded", "--runs", "101"], "--runs wants 1...100")
        refused(["--rates", "1000", "--embedded", "--p99-micros", "0"], "--p99-micros wants 1 or more")
        refused(["e2e-latency", "--embedded", "--rate", "0"], "--rate wants", run: true)
        refused(["e2e-latency", "--embedded", "--rate", "10000001"], "--rate wants", run: true)
        let sweep = try SweepCommand.parse(["--rates", "1000,2000", "--embedded"])
        #expect(sweep.runs == 3 && sweep.p99Micros == 2000)
    }

    static func point(_ rate: Int, _ run: Int, p99: Double?, errors: Int = 0) -> SweepPoint {
        SweepPoint(
            rate: rate, run: run, recordsPerSecond: Double(rate) - 1, p50Micros: p99.map { $0 / 2 }, p99Micros: p99,
            p999Micros: p99.map { $0 * 2 }, slowRecordsRatio: 0.001, brokerMicrosPerRecord: 3,
            benchMicrosPerRecord: nil, errors: errors
        )
    }

    @Test("the summary: medians and ranges per rate, runs that kept the bound, the highest rates kept up to")
    func summary() {
        let points = [
            Self.point(100, 1, p99: 900), Self.point(200, 1, p99: 1500), Self.point(300, 1, p99: 2500),
            Self.point(100, 2, p99: 1000), Self.point(200, 2, p99: 2100), Self.point(300, 2, p99: 1900),
            Self.point(100, 3, p99: 1100), Self.point(200, 3, p99: 1800), Self.point(300, 3, p99: 3000),
        ]
        let sweep = Sweep(boundMicros: 2000, slowMicros: 2000, points: points, machine: nil)
        #expect(sweep.rows.map(\.rate) == [100, 200, 300])
        #expect(sweep.rows.map(\.runsKept) == [3, 2, 1])
        #expect(sweep.rows[1].p99Micros?.median == 1800 && sweep.rows[1].p99Micros?.min == 1500)
        #expect(sweep.rows[0].brokerMicrosPerRecord?.median == 3 && sweep.rows[0].benchMicrosPerRecord == nil)
        #expect(sweep.highestRateEveryRunKept == 100)
        #expect(sweep.highestRateMedianKept == 200)
        let table = sweep.table()
        #expect(table.contains("p99 bound 2,000 µs"))
        #expect(table.contains("1,800 (1,500-2,100)") && table.contains("2/3") && table.contains("1/3"))
        #expect(table.contains("every run kept the bound: 100 records/s"))
        #expect(table.contains("median p99 kept it:   200 records/s"))
        // An even count's median is the mean of the middle two; a lower rate that failed caps the higher ones.
        #expect(Sweep.Spread([4, 1, 3, 2])?.median == 2.5 && Sweep.Spread([]) == nil)
        let capped = Sweep(
            boundMicros: 2000, slowMicros: 2000,
            points: [Self.point(100, 1, p99: 2500), Self.point(200, 1, p99: 1000)], machine: nil
        )
        #expect(capped.highestRateEveryRunKept == nil && capped.highestRateMedianKept == nil)
        #expect(capped.table().contains("every run kept the bound: none of the rates"))
        // A lost record, or a run where nothing arrived, keeps no bound however short its p99; nor does the median
        // of a rate with such a run, even when the runs that arrived were short.
        let lost = Sweep(
            boundMicros: 2000, slowMicros: 2000,
            points: [
                Self.point(100, 1, p99: 500), Self.point(200, 1, p99: 500, errors: 3), Self.point(300, 1, p99: nil),
            ],
            machine: nil
        )
        #expect(lost.rows.map(\.runsKept) == [1, 0, 0])
        #expect(lost.highestRateEveryRunKept == 100 && lost.highestRateMedianKept == 100)
        #expect(lost.table().contains("0/1 (3 errors)"))
        let silent = Sweep(
            boundMicros: 2000, slowMicros: 2000,
            points: [Self.point(100, 1, p99: 500), Self.point(200, 1, p99: 500), Self.point(200, 2, p99: nil)],
            machine: nil
        )
        #expect(silent.rows.map(\.runsKept) == [1, 1] && silent.rows[1].p99Micros?.median == 500)
        #expect(silent.highestRateEveryRunKept == 100 && silent.highestRateMedianKept == 100)
    }

    @Test("the plot: a dot per run that has a p99 (red over the bound), a median line through the rates, the bound")
    func plot() {
        let points = [
            Self.point(100_000, 1, p99: 900), Self.point(200_000, 1, p99: 2500), Self.point(300_000, 1, p99: nil),
            Self.point(100_000, 2, p99: 1100), Self.point(200_000, 2, p99: 4_000_000),
        ]
        let svg = SweepPlot.svg(Sweep(boundMicros: 2000, slowMicros: 2000, points: points, machine: nil))
        let circles = svg.split(separator: "\n").filter { $0.hasPrefix("<circle") }
        #expect(circles.count == 4)
        #expect(circles.filter { $0.contains("#d1242f") }.count == 2)
        let median = svg.split(separator: "\n").first { $0.hasPrefix("<polyline") }
        #expect(median?.split(separator: " ").filter { $0.contains(",") }.count == 2)  // 300k has no p99
        // The log scale reaches the highest p99 (4 s) and the rate axis the highest rate.
        #expect(svg.contains(">10 s</text>") && svg.contains(">100 µs</text>") && svg.contains(">300k</text>"))
        #expect(svg.contains("stroke-dasharray") && !svg.contains("nan") && !svg.contains("inf"))
        // A higher p99 is drawn higher up.
        func cy(_ line: Substring) -> Double {
            Double(line.split(separator: "\"")[3])!
        }
        #expect(cy(circles[0]) > cy(circles[1]))
        #expect(SweepPlot.rateLabel(1_500_000) == "1.5M" && SweepPlot.rateLabel(250_000) == "250k")
        // Nothing measured still draws.
        let empty = SweepPlot.svg(Sweep(boundMicros: 2000, slowMicros: 2000, points: [], machine: nil))
        #expect(empty.hasSuffix("</svg>\n") && !empty.contains("nan") && !empty.contains("inf"))
    }
}
