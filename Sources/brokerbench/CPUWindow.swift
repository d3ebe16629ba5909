import Foundation

/// Where the machine's CPU went over a run's measured window: the whole machine (`/proc/stat`), the broker and
/// brokerbench itself (`/proc/PID/stat`), read when the window opens (a task sleeping until then) and again when
/// the load has finished. On a machine whose cores the broker and its load generator share, it says whether a run
/// was bound by the cores (none idle) and what each record cost each side.
struct CPUWindow: Sendable {
    /// One reading.
    struct Sample: Sendable {
        /// `monotonicNanos()` of the reading.
        var at: UInt64
        /// The machine's CPU seconds so far: busy (user, nice, system, irq, softirq), idle (idle and iowait), and
        /// taken by the hypervisor (steal).
        var busy: Double
        var idle: Double
        var steal: Double
        /// CPU seconds of the broker process (nil: not a process of its own, or unreadable) and of this one.
        var broker: Double?
        var bench: Double?

        static func read(brokerPid: Int32?) -> Sample? {
            guard let stat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let line = stat.split(separator: "\n").first(where: { $0.hasPrefix("cpu ") })
            else { return nil }
            // cpu user nice system idle iowait irq softirq steal guest guest_nice (USER_HZ ticks; guest time is
            // counted in user already).
            let ticks = line.split(separator: " ").dropFirst().compactMap { Double($0) }
            guard ticks.count >= 8 else { return nil }
            let hertz = Double(sysconf(Int32(_SC_CLK_TCK)))
            return Sample(
                at: monotonicNanos(),
                busy: (ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hertz,
                idle: (ticks[3] + ticks[4]) / hertz,
                steal: ticks[7] / hertz,
                broker: brokerPid.flatMap { ResourceSample.read(pid: $0)?.cpuSeconds },
                bench: ResourceSample.read(pid: getpid())?.cpuSeconds
            )
        }
    }

    private let brokerPid: Int32?
    /// The reading when the window opens (nil when it was cancelled before).
    private let opened: Task<Sample?, Never>

    /// Reads the machine at `measureFrom` (`monotonicNanos()`); `brokerPid` is the broker's process when it is not
    /// this one.
    init(measureFrom: UInt64, brokerPid: Int32?) {
        let pid = brokerPid == getpid() ? nil : brokerPid
        self.brokerPid = pid
        self.opened = Task {
            let now = monotonicNanos()
            if measureFrom > now { try? await Task.sleep(for: .nanoseconds(Int64(measureFrom - now))) }
            return Task.isCancelled ? nil : Sample.read(brokerPid: pid)
        }
    }

    /// Reads the machine again and returns the window's figures for `records` measured records:
    /// `cpu_machine_busy_cores`, `cpu_machine_idle_cores`, `cpu_steal_cores`, and per process `cpu_broker_cores` and
    /// `cpu_bench_cores` (the broker's only when it runs as a process of its own; embedded, the bench process's
    /// figure holds both), `cpu_other_cores` (the machine's busy less the two: kernel threads such as the file
    /// system's journal and the block device's completions, and any other process), and each side's
    /// `..._us_per_record`. Empty when the window never opened (the load ended in its warm-up).
    func finish(records: Int) async -> [String: Double] {
        self.opened.cancel()
        guard let start = await self.opened.value, let end = Sample.read(brokerPid: self.brokerPid),
            end.at > start.at
        else { return [:] }
        let seconds = Double(end.at - start.at) / 1e9
        func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }
        var extra: [String: Double] = [
            "cpu_machine_busy_cores": rounded((end.busy - start.busy) / seconds),
            "cpu_machine_idle_cores": rounded((end.idle - start.idle) / seconds),
            "cpu_steal_cores": rounded((end.steal - start.steal) / seconds),
        ]
        var other = end.busy - start.busy
        for (name, before, after) in [("broker", start.broker, end.broker), ("bench", start.bench, end.bench)] {
            guard let before, let after else { continue }
            other -= after - before
            extra["cpu_\(name)_cores"] = rounded((after - before) / seconds)
            if records > 0 {
                // Over the window's records: the window is about the measured one (the end is read once the last
                // acknowledgement came).
                extra["cpu_\(name)_us_per_record"] = rounded((after - before) / Double(records) * 1e6)
            }
        }
        extra["cpu_other_cores"] = rounded(other / seconds)
        return extra
    }
}
