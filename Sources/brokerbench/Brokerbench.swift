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
            the latency percentile curve.
            """,
        subcommands: [RunCommand.self, ListCommand.self],
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

    func run() async throws {
        // The load generator frees on other threads what it allocates, like brokerd: same allocator settings.
        AllocatorTuning.configure()
        if self.scenario == .recovery, !self.target.spawn {
            throw ValidationError("recovery needs --spawn: it kills and restarts brokerd, so it must own the process")
        }
        let parameters = try self.load.resolved(for: self.scenario)
        let broker = try await BenchTarget.start(
            self.target, parameters: parameters, policyOverhead: self.scenario == .policyOverhead
        )
        let result: BenchResult
        do {
            result = try await self.scenario.run(on: broker, parameters: parameters)
        } catch {
            await broker.stop()
            throw error
        }
        let resources = broker.resources()
        // Where the broker's time went (a spawned brokerd's sampled publish stages over the run, warm-up
        // included), unless the scenario already reported them for the part it measures (recovery reads its fill's
        // before restarting brokerd: the brokerd running now has published nothing).
        let stages =
            result.extra["broker_timed_requests"] != nil || self.scenario == .recovery ? nil : broker.brokerStages()
        await broker.stop()
        var final = result
        final.extra.merge(stages?.extras(topics: broker.topics) ?? [:]) { current, _ in current }
        final.broker = resources
        final.machine = MachineInfo.current()
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

extension RunCommand {
    /// Where the latency timeline's plot goes: beside the percentile plot, `-timeline` before its `.svg`
    /// (`e2e-1.svg` → `e2e-1-timeline.svg`; a name without `.svg` gets `-timeline.svg` appended).
    static func timelinePlotPath(_ plotPath: String) -> String {
        (plotPath.hasSuffix(".svg") ? String(plotPath.dropLast(4)) : plotPath) + "-timeline.svg"
    }
}

extension Scenario: ExpressibleByArgument {}
