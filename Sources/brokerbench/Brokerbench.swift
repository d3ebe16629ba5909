import ArgumentParser
import Foundation
import BrokerServer

/// brokerbench: load generator and latency recorder for brokerd.
@main
struct Brokerbench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brokerbench",
        abstract: "Drive brokerd with producers and consumers and measure throughput and latency.",
        discussion: """
            A broker to measure: --embedded starts one in this process on a temp directory; --spawn starts \
            the brokerd binary built beside brokerbench as a separate process (its CPU and RSS are then reported \
            on their own); --server HOST:PORT drives a running broker (give an identity allowed to publish and \
            subscribe to the bench topics, and --broker-pid to report its CPU and RSS).
            Every run prints progress each second, a table at the end, and writes a JSON result and an SVG plot of \
            the latency percentile curve; `sweep` runs e2e-latency at several rates and plots its p99 against the \
            rate.
            """,
        subcommands: [RunCommand.self, ListCommand.self, FloorCommand.self, SweepCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

struct ListCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the scenarios.")

    func run() async throws {
        for scenario in Scenario.allCases {
            print(scenario.rawValue.padding(toLength: 18, withPad: " ", startingAt: 0) + scenario.summary)
        }
    }
}

struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run one scenario.")

    @Argument(help: "Scenario: \(Scenario.allCases.map(\.rawValue).joined(separator: ", ")).")
    var scenario: Scenario

    @OptionGroup var target: TargetOptions
    @OptionGroup var load: LoadOptions

    @Option(name: .long, help: "Where to write the JSON result (default brokerbench-SCENARIO.json).")
    var output: String?

    @Option(name: .long, help: "Where to write the SVG latency plot (default brokerbench-SCENARIO.svg).")
    var plot: String?

    @Option(
        name: .long,
        help: """
            e2e-latency with --spawn or --embedded: seconds of the durability floor measured after the run, in the \
            broker's data directory (see `brokerbench floor`; 0: not measured).
            """
    )
    var floorSeconds: Double = 5

    func validate() throws {
        guard self.floorSeconds >= 0, self.floorSeconds <= 600 else { throw ValidationError("--floor-seconds wants 0...600") }
    }

    func run() async throws {
        // The load generator frees on other threads what it allocates, like brokerd: same allocator settings.
        AllocatorTuning.configure()
        if self.scenario == .recovery, !self.target.spawn {
            throw ValidationError("recovery needs --spawn: it kills and restarts brokerd, so it must own the process")
        }
        let parameters = try self.load.resolved(for: self.scenario)
        let final = try await self.scenario.measure(self.target, parameters: parameters) { broker, stages in
            self.scenario == .e2eLatency ? self.durabilityFloor(broker, stages: stages, parameters: parameters) : [:]
        }
        print(final.table())
        let jsonPath = self.output ?? "brokerbench-\(self.scenario.rawValue).json"
        try final.jsonData().write(to: URL(fileURLWithPath: jsonPath))
        print("result: \(jsonPath)")
        if let histogram = final.latencyHistogram {
            let svgPath = self.plot ?? "brokerbench-\(self.scenario.rawValue).svg"
            try LatencyPlot.svg(histogram: histogram, title: "\(self.scenario.rawValue): \(final.latencyLabel)")
                .write(toFile: svgPath, atomically: true, encoding: .utf8)
            print("plot:   \(svgPath)")
            if let timeline = final.timeline {
                let timelinePath = Self.timelinePlotPath(svgPath)
                try TimelinePlot.svg(
                    timeline, acknowledged: final.ackTimeline,
                    title: "\(self.scenario.rawValue): \(final.latencyLabel), over time"
                )
                    .write(toFile: timelinePath, atomically: true, encoding: .utf8)
                print("plot:   \(timelinePath) (latency over time)")
            }
        } else {
            print("plot:   none (\(self.scenario.rawValue) has no latency figures)")
        }
    }
}

extension Scenario {
    /// Starts the broker `options` name, runs the scenario on it and stops it: the result with the broker's resources,
    /// its publish stages (a spawned brokerd's) and the machine. `beforeStop` adds figures taken while the broker is
    /// still up, its data directory still there (e2e-latency's durability floor).
    func measure(
        _ options: TargetOptions, parameters: BenchParameters,
        beforeStop: (BenchTarget, BrokerStages?) -> [String: Double] = { _, _ in [:] }
    ) async throws -> BenchResult {
        let broker = try await BenchTarget.start(
            options, parameters: parameters, policyOverhead: self == .policyOverhead
        )
        let result: BenchResult
        do {
            result = try await self.run(on: broker, parameters: parameters)
        } catch {
            await broker.stop()
            throw error
        }
        let resources = broker.resources()
        // Where the broker's time went (a spawned brokerd's sampled publish stages over the run, warm-up
        // included), unless the scenario already reported them for the part it measures (recovery reads its fill's
        // before restarting brokerd: the brokerd running now has published nothing).
        let stages = result.extra["broker_timed_requests"] != nil || self == .recovery ? nil : broker.brokerStages()
        let more = beforeStop(broker, stages)
        await broker.stop()
        var final = result
        final.extra.merge(stages?.extras(topics: broker.topics) ?? [:]) { current, _ in current }
        final.extra.merge(more) { current, _ in current }
        final.broker = resources
        final.machine = MachineInfo.current()
        return final
    }
}

extension RunCommand {
    /// e2e-latency's durability floor (``DurabilityFloor``), measured in the broker's data directory once the run is
    /// over, with cycles as large as the run's (its logs' bytes per fdatasync; 64 KiB when the broker's metrics are
    /// not read): `durability_floor_*`. Only `durability_floor_seconds` 0 for a remote broker (the disk here is not
    /// its disk) or with `--floor-seconds 0`; nothing when it could not be measured (said on standard error: a run
    /// never fails for it, but `summarize.py --check` fails such a result).
    func durabilityFloor(_ broker: BenchTarget, stages: BrokerStages?, parameters: BenchParameters) -> [String: Double] {
        guard self.floorSeconds > 0, let directory = broker.dataDir else { return ["durability_floor_seconds": 0] }
        let writeBytes = DurabilityFloor.pageRounded(
            stages?.logBytesPerFsync(topics: broker.topics).map { Int($0) } ?? DurabilityFloor.defaultWriteBytes
        )
        FileHandle.standardError.write(
            Data("durability floor: \(self.floorSeconds) s of \(writeBytes)-byte writes, each fdatasynced\n".utf8)
        )
        do {
            let cycles = try DurabilityFloor.measure(directory: directory, writeBytes: writeBytes, seconds: self.floorSeconds)
            return DurabilityFloor.figures(
                cycles, slowMicros: parameters.slowMicros, writeBytes: writeBytes, prefix: "durability_floor_"
            )
        } catch {
            FileHandle.standardError.write(Data("durability floor not measured: \(error)\n".utf8))
            return [:]
        }
    }

    /// Where the latency timeline's plot goes: beside the percentile plot, `-timeline` before its `.svg`
    /// (`e2e-1.svg` → `e2e-1-timeline.svg`; a name without `.svg` gets `-timeline.svg` appended).
    static func timelinePlotPath(_ plotPath: String) -> String {
        (plotPath.hasSuffix(".svg") ? String(plotPath.dropLast(4)) : plotPath) + "-timeline.svg"
    }
}

extension Scenario: ExpressibleByArgument {}

/// `brokerbench floor`: the durability floor alone (``DurabilityFloor``), to see what a machine's disk allows before
/// running e2e-latency on it, or what busy cores do to it.
struct FloorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor",
        abstract: "Measure the durability floor: the share of records late before any broker work.",
        discussion: """
            Runs back-to-back cycles of one write and one fdatasync on a file of zeros in --directory, as a \
            topic's log does under fsync = "always" with group commit, and prints, for records arriving evenly in \
            time, the share that would wait longer than --slow-micros for the cycle covering them, with the \
            cycles' times. e2e-latency delivers a record only once it is durable: its share of late records cannot \
            be lower on the same disk and load (docs/benchmarks/HISTORY.md, round 28).
            """
    )

    @Option(help: "Where to put the temporary file (the broker's data file system; default: the temp directory).")
    var directory: String = NSTemporaryDirectory()

    @Option(help: "Seconds of cycles.")
    var seconds: Double = 10

    @Option(help: "Bytes per write, rounded up to whole pages (e2e-latency's log writes 12,000-64,000 per fdatasync).")
    var writeBytes: Int = DurabilityFloor.defaultWriteBytes

    @Option(help: "A record waiting longer than this many microseconds counts as late.")
    var slowMicros: Int = 2000

    @Option(help: "Threads keeping the cores busy meanwhile, each for --busy-fraction of every 500 µs.")
    var busyThreads: Int = 0

    @Option(help: "The share of every 500 µs each busy thread spins.")
    var busyFraction: Double = 0.8

    func validate() throws {
        guard self.seconds > 0, self.seconds <= 3600 else { throw ValidationError("--seconds wants (0, 3600]") }
        guard self.writeBytes > 0 else { throw ValidationError("--write-bytes wants a positive number") }
        guard self.slowMicros >= 1 else { throw ValidationError("--slow-micros wants 1 or more") }
        guard (0...64).contains(self.busyThreads) else { throw ValidationError("--busy-threads wants 0...64") }
        guard (0...1).contains(self.busyFraction) else { throw ValidationError("--busy-fraction wants 0...1") }
    }

    func run() throws {
        let writeBytes = DurabilityFloor.pageRounded(self.writeBytes)
        let cycles = try DurabilityFloor.measure(
            directory: self.directory, writeBytes: writeBytes, seconds: self.seconds, busyThreads: self.busyThreads,
            busyFraction: self.busyFraction
        )
        let figures = DurabilityFloor.figures(cycles, slowMicros: self.slowMicros, writeBytes: writeBytes, prefix: "")
        guard !figures.isEmpty else { throw BenchError("floor: fewer than two cycles in \(self.seconds) s") }
        print("brokerbench floor: \(self.busyThreads) busy threads at \(self.busyFraction), late = over \(self.slowMicros) µs")
        for (name, value) in figures.sorted(by: { $0.key < $1.key }) {
            print(name.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%14.5g", value))
        }
    }
}
