import Foundation

/// Where the machine's CPU went over a run's measured window: the whole machine (`/proc/stat`), the broker and
/// brokerbench itself (`/proc/PID/stat`), read when the window opens (a task sleeping until then) and again when
/// the load has finished. On a machine whose cores the broker and its load generator share, it says whether a run
/// was bound by the cores (none idle) and what each record cost each side. Also how long each side's threads were
/// ready to run but waited for a core (`/proc/PID/task/TID/schedstat`), and what the disk holding the data
/// directory did (`/sys/dev/block/MAJOR:MINOR/stat`): together they tell a wait for the device from a wait for a
/// core, which brokerd's `log_fsync_mean_us` holds both of ("Round 25" in docs/benchmarks/HISTORY.md).
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
        /// Seconds the threads of the broker process (all, and its event loops alone) and of this one spent ready
        /// to run but waiting for a core; nil where unreadable.
        var brokerWait: ThreadWaits?
        var benchWait: ThreadWaits?
        /// The data directory's block device's counters; nil without a local data directory or where unreadable.
        var disk: DiskCounters?

        static func read(brokerPid: Int32?, disk device: String?) -> Sample? {
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
                bench: ResourceSample.read(pid: getpid())?.cpuSeconds,
                brokerWait: brokerPid.flatMap { ThreadWaits.read(pid: $0) },
                benchWait: ThreadWaits.read(pid: getpid()),
                disk: device.flatMap { DiskCounters.read(statPath: $0) }
            )
        }
    }

    private let brokerPid: Int32?
    /// The `stat` file of the data directory's block device.
    private let diskStat: String?
    /// The reading when the window opens (nil when it was cancelled before).
    private let opened: Task<Sample?, Never>

    /// Reads the machine at `measureFrom` (`monotonicNanos()`); `brokerPid` is the broker's process when it is not
    /// this one, `dataDir` its data directory when it is on this machine.
    init(measureFrom: UInt64, brokerPid: Int32?, dataDir: String?) {
        let pid = brokerPid == getpid() ? nil : brokerPid
        let device = dataDir.flatMap { DiskCounters.statPath(of: $0) }
        self.brokerPid = pid
        self.diskStat = device
        self.opened = Task {
            let now = monotonicNanos()
            if measureFrom > now { try? await Task.sleep(for: .nanoseconds(Int64(measureFrom - now))) }
            return Task.isCancelled ? nil : Sample.read(brokerPid: pid, disk: device)
        }
    }

    /// Reads the machine again and returns the window's figures for `records` measured records:
    /// `cpu_machine_busy_cores`, `cpu_machine_idle_cores`, `cpu_steal_cores`, and per process `cpu_broker_cores` and
    /// `cpu_bench_cores` (the broker's only when it runs as a process of its own; embedded, the bench process's
    /// figure holds both), `cpu_other_cores` (the machine's busy less the two: kernel threads such as the file
    /// system's journal and the block device's completions, and any other process), and each side's
    /// `..._us_per_record`; `cpu_broker_runq_wait_cores`, `cpu_broker_loops_runq_wait_cores` and
    /// `cpu_bench_runq_wait_cores` (``ThreadWaits``); and the `disk_…` figures (``DiskCounters``). Empty when the
    /// window never opened (the load ended in its warm-up).
    func finish(records: Int) async -> [String: Double] {
        self.opened.cancel()
        guard let start = await self.opened.value,
            let end = Sample.read(brokerPid: self.brokerPid, disk: self.diskStat),
            end.at > start.at
        else { return [:] }
        let seconds = Double(end.at - start.at) / 1e9
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
        if let before = start.brokerWait, let after = end.brokerWait {
            extra["cpu_broker_runq_wait_cores"] = rounded(after.waitedSince(before) / seconds)
            let loops = after.waitedSince(before, eventLoopsOnly: true)
            extra["cpu_broker_loops_runq_wait_cores"] = rounded(loops / seconds)
        }
        if let before = start.benchWait, let after = end.benchWait {
            extra["cpu_bench_runq_wait_cores"] = rounded(after.waitedSince(before) / seconds)
        }
        if let before = start.disk, let after = end.disk {
            extra.merge(after.figures(since: before, seconds: seconds)) { current, _ in current }
        }
        return extra
    }
}

/// How long the threads of one process spent ready to run but waiting for a core: the second field of each
/// thread's `/proc/PID/task/TID/schedstat` (nanoseconds on a run queue; the kernel keeps it with
/// `CONFIG_SCHED_INFO`, as Debian's kernels do). On a machine the broker shares with its load, this is where a
/// hand-off between threads (an event loop to the log's writer, the disk's completion to the thread waiting in
/// fdatasync) loses time when the cores are taken, whatever the devices do.
struct ThreadWaits: Sendable {
    /// Nanoseconds waited so far, by thread id, and whether the thread is one of NIO's event loops (`NIO-ELT-…`).
    var waited: [Int32: (nanos: UInt64, eventLoop: Bool)]

    static func read(pid: Int32) -> ThreadWaits? {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task") else { return nil }
        var waited: [Int32: (nanos: UInt64, eventLoop: Bool)] = [:]
        for name in tasks {
            guard let tid = Int32(name),
                let line = try? String(contentsOfFile: "/proc/\(pid)/task/\(name)/schedstat", encoding: .utf8),
                let nanos = Self.runQueueNanos(schedstat: line)
            else { continue }  // a thread that ended meanwhile, or no schedstat
            let comm = (try? String(contentsOfFile: "/proc/\(pid)/task/\(name)/comm", encoding: .utf8)) ?? ""
            waited[tid] = (nanos, comm.hasPrefix("NIO-ELT-"))
        }
        return waited.isEmpty ? nil : ThreadWaits(waited: waited)
    }

    /// The run-queue nanoseconds of a `schedstat` line: "on-CPU-ns run-queue-ns timeslices".
    static func runQueueNanos(schedstat: String) -> UInt64? {
        let fields = whitespaceFields(schedstat)
        return fields.count >= 3 ? UInt64(fields[1]) : nil
    }

    /// Seconds waited between `earlier` and this reading by the threads alive now (a thread that started meanwhile
    /// waited all of its figure in the window; one that ended is left out).
    func waitedSince(_ earlier: ThreadWaits, eventLoopsOnly: Bool = false) -> Double {
        var nanos: UInt64 = 0
        for (tid, now) in self.waited where !eventLoopsOnly || now.eventLoop {
            let before = earlier.waited[tid]?.nanos ?? 0
            if now.nanos > before { nanos += now.nanos - before }
        }
        return Double(nanos) / 1e9
    }
}

/// A block device's counters (`/sys/dev/block/MAJOR:MINOR/stat`, the kernel's Documentation/block/stat.rst): the
/// device holding the broker's data directory, so a run can say how long its writes and cache flushes took at the
/// device, against brokerd's `log_fsync_mean_us`, which also holds the syncing thread's wait for a core.
struct DiskCounters: Sendable {
    var writes: UInt64
    var writeSectors: UInt64
    var writeMillis: UInt64
    var busyMillis: UInt64
    /// Cache flushes (nil on kernels before 5.5, whose file has 15 fields or fewer).
    var flushes: UInt64?
    var flushMillis: UInt64?

    /// The `stat` file of the block device that holds `path` (its `st_dev`), nil when there is none (a network or
    /// virtual file system).
    static func statPath(of path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        // glibc's gnu_dev_major and gnu_dev_minor.
        let device = UInt64(info.st_dev)
        let major = (UInt32(truncatingIfNeeded: device >> 8) & 0xFFF) | (UInt32(truncatingIfNeeded: device >> 32) & ~0xFFF)
        let minor = (UInt32(truncatingIfNeeded: device) & 0xFF) | (UInt32(truncatingIfNeeded: device >> 12) & ~0xFF)
        let file = "/sys/dev/block/\(major):\(minor)/stat"
        return FileManager.default.isReadableFile(atPath: file) ? file : nil
    }

    static func read(statPath: String) -> DiskCounters? {
        (try? String(contentsOfFile: statPath, encoding: .utf8)).flatMap { Self.parse($0) }
    }

    /// The fields of a `stat` line: reads (1–4), writes (5–8: I/Os, merges, sectors, ms), in flight (9), busy ms
    /// (10), weighted ms (11), discards (12–15), flushes (16–17).
    static func parse(_ line: String) -> DiskCounters? {
        let fields = whitespaceFields(line).map { UInt64($0) }
        guard fields.count >= 11, !fields.contains(nil) else { return nil }
        return DiskCounters(
            writes: fields[4]!, writeSectors: fields[6]!, writeMillis: fields[7]!, busyMillis: fields[9]!,
            flushes: fields.count >= 17 ? fields[15] : nil, flushMillis: fields.count >= 17 ? fields[16] : nil
        )
    }

    /// The window's `disk_write_ios_per_s`, `disk_write_mb_per_s`, `disk_write_ms_per_io` (the device's time per
    /// write request, queue included), `disk_busy` (the fraction of the window with a request in flight), and,
    /// where the kernel counts them, `disk_flushes_per_s` and `disk_flush_ms_per_io`.
    func figures(since earlier: DiskCounters, seconds: Double) -> [String: Double] {
        let writes = Double(self.writes &- earlier.writes)
        var figures = [
            "disk_write_ios_per_s": rounded(writes / seconds),
            "disk_write_mb_per_s": rounded(Double(self.writeSectors &- earlier.writeSectors) * 512 / seconds / 1e6),
            "disk_busy": rounded(Double(self.busyMillis &- earlier.busyMillis) / 1000 / seconds),
        ]
        if writes > 0 {
            figures["disk_write_ms_per_io"] = rounded(Double(self.writeMillis &- earlier.writeMillis) / writes)
        }
        if let flushes = self.flushes, let before = earlier.flushes, let millis = self.flushMillis,
            let beforeMillis = earlier.flushMillis
        {
            let count = Double(flushes &- before)
            figures["disk_flushes_per_s"] = rounded(count / seconds)
            if count > 0 { figures["disk_flush_ms_per_io"] = rounded(Double(millis &- beforeMillis) / count) }
        }
        return figures
    }
}

/// A window figure to three decimals.
private func rounded(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

/// The space-separated fields of a `/proc` or `/sys` counters line.
private func whitespaceFields(_ line: String) -> [Substring] {
    line.split(whereSeparator: { $0 == " " || $0 == "\n" })
}
