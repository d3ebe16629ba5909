import BrokerClient
import Foundation
import NIOCore
import WireProtocol

/// durable-publish three times on the same broker: first on plain topics (no consent_scope header, none required,
/// no dedupe keys, no limiters); then on the plain topics with the policy records' bytes (the same three headers
/// and values, the scope and the unique key under names of the same length that no check reads: what the longer
/// records cost without any check); then on the policy topics (dedupe keys on every record, two publish limiters
/// that apply but never trigger, consent scopes checked against the topic's list). Each part runs --warmup then
/// --duration. The result's main figures are the policy half's; the throughputs and their ratios are extras.
struct PolicyLoad {
    let target: BenchTarget
    let parameters: BenchParameters

    /// The consent scope every policy record carries.
    static let recordScope = "educational"
    /// The policy topics' consent_scopes.
    static let allowedScopes = ["educational", "operational_notice"]
    /// How many recipients each batch's records are spread over (the per-recipient window limiter's keys).
    static let recipients = 64

    /// The plain half's headers: the two the plain topics require.
    static let plainHeaders = benchHeaders.filter { $0.name != RecordHeaderName.consentScope }
    /// The same-records part's stand-ins for `consent_scope` and `dedupe-key`: as long, read by no check.
    static let standInScopeHeader = "x-bench-scope"
    static let standInKeyHeader = "x-bench-id"

    func run() async throws -> BenchResult {
        guard !self.target.policyTopics.isEmpty else { throw BenchError("policy-overhead: no policy topics") }
        FileHandle.standardError.write(Data("policy-overhead 1/3: plain topics \(self.target.topics)\n".utf8))
        let plain = try await PublishLoad(
            target: self.target, parameters: self.parameters, scenario: .policyOverhead,
            headers: Self.plainHeaders, dedupeKeys: false, label: "plain"
        ).run()
        // A spawned broker's publish stages of each part: the plain half's now, the next part's from here on.
        let plainStages = self.target.markBrokerStages()
        FileHandle.standardError.write(
            Data("policy-overhead 2/3: the policy records' bytes, no checks, on \(self.target.topics)\n".utf8)
        )
        let standIn = WireHeader(name: Self.standInScopeHeader, value: ByteBuffer(string: Self.recordScope))
        var sameRecordsLoad = PublishLoad(
            target: self.target, parameters: self.parameters, scenario: .policyOverhead,
            headers: Self.plainHeaders + [standIn], recipients: Self.recipients, dedupeKeys: true,
            label: "same-records"
        )
        sameRecordsLoad.keyHeader = Self.standInKeyHeader
        let sameRecords = try await sameRecordsLoad.run()
        let sameRecordsStages = self.target.markBrokerStages()
        FileHandle.standardError.write(
            Data("policy-overhead 3/3: dedupe keys, limiters, consent on \(self.target.policyTopics)\n".utf8)
        )
        let scope = WireHeader(name: RecordHeaderName.consentScope, value: ByteBuffer(string: Self.recordScope))
        var result = try await PublishLoad(
            target: self.target, parameters: self.parameters, scenario: .policyOverhead,
            topics: self.target.policyTopics, headers: Self.plainHeaders + [scope], recipients: Self.recipients,
            dedupeKeys: true, label: "policy"
        ).run()
        result.latencyLabel = "publish ack latency per request, policy half (\(self.parameters.batch) records)"
        result.extra["plain_records_per_s"] = plain.recordsPerSecond
        result.extra["plain_errors"] = Double(plain.errors)
        if let latency = plain.latency { result.extra["plain_ack_p99_us"] = latency.p99 }
        result.extra["policy_records_per_s"] = result.recordsPerSecond
        result.extra["policy_errors"] = Double(result.errors)
        if let latency = result.latency { result.extra["policy_ack_p99_us"] = latency.p99 }
        // One part's throughput over another's (0 when that one measured nothing).
        func ratio(_ part: BenchResult, over base: BenchResult) -> Double {
            base.recordsPerSecond > 0 ? part.recordsPerSecond / base.recordsPerSecond : 0
        }
        result.extra["policy_over_plain_ratio"] = ratio(result, over: plain)
        result.extra["same_records_records_per_s"] = sameRecords.recordsPerSecond
        result.extra["same_records_errors"] = Double(sameRecords.errors)
        result.extra["same_records_over_plain_ratio"] = ratio(sameRecords, over: plain)
        result.extra["policy_over_same_records_ratio"] = ratio(result, over: sameRecords)
        result.errors += plain.errors + sameRecords.errors
        for (prefix, part) in [("plain_", plain), ("same_records_", sameRecords)] {
            for (key, value) in part.extra where key.hasPrefix("cpu_") || key.hasPrefix("disk_") {
                result.extra[prefix + key] = value
            }
        }
        let topics = self.target.topics
        result.extra.merge(plainStages?.extras(prefix: "plain_", topics: topics) ?? [:]) { current, _ in current }
        result.extra.merge(sameRecordsStages?.extras(prefix: "same_records_", topics: topics) ?? [:]) { current, _ in
            current
        }
        result.extra.merge(self.target.brokerStages()?.extras(topics: self.target.policyTopics) ?? [:]) { current, _ in
            current
        }
        // Show the limiters applied: how many keys each holds now (bench-made brokers grant LIMITS; others may not).
        do {
            let client = try await self.target.connect()
            defer { Task { await client.close() } }
            for state in try await client.limits() where state.limiter.hasPrefix("bench_") {
                result.extra["\(state.limiter.dropFirst(6))_limiter_keys"] = Double(state.keysHeld)
            }
        } catch {
            FileHandle.standardError.write(Data("policy-overhead: could not read the limiters' state: \(error)\n".utf8))
        }
        return result
    }
}

/// Fills one topic to --recovery-bytes of log, then restarts the spawned brokerd twice, after SIGTERM and after
/// SIGKILL, timing each from launch to its "listening" line. Checks the log's end offset survives both.
struct RecoveryRun {
    let target: BenchTarget
    let parameters: BenchParameters

    static let defaultBytes: Int64 = 10 << 30

    func run() async throws -> BenchResult {
        let p = self.parameters
        guard case .spawned = self.target.kind, let dataDir = self.target.dataDir else {
            throw BenchError("recovery needs --spawn: it kills and restarts brokerd")
        }
        let want = p.recoveryBytes ?? Self.defaultBytes
        let free = try freeBytes(at: dataDir)
        guard free / 2 >= want else {
            throw BenchError(
                "recovery: \(mebibytes(want)) MiB of log needs twice that free, but \(dataDir) has "
                    + "\(mebibytes(free)) MiB free; give a smaller --recovery-bytes or a --data-dir on a bigger disk"
            )
        }
        let topic = self.target.topics[0]
        let logDir = dataDir + "/topics/" + topic

        FileHandle.standardError.write(Data("recovery: filling \(topic) to \(mebibytes(want)) MiB of log\n".utf8))
        let fill = p.filling(records: nil)
        let stop = StopFlag()
        let monitor = Task {
            var lastPrint = monotonicNanos()
            while !Task.isCancelled {
                let size = logBytes(in: logDir)
                if size >= want {
                    stop.set()
                    return
                }
                if monotonicNanos() - lastPrint >= 1_000_000_000 {
                    lastPrint = monotonicNanos()
                    FileHandle.standardError.write(
                        Data("recovery: \(mebibytes(size)) / \(mebibytes(want)) MiB of log on disk\n".utf8)
                    )
                }
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        let filled: BenchResult
        do {
            filled = try await PublishLoad(
                target: self.target, parameters: fill, scenario: .recovery, topics: [topic], stop: stop,
                label: "recovery fill"
            ).run()
        } catch {
            monitor.cancel()
            throw error
        }
        monitor.cancel()
        let size = logBytes(in: logDir)
        let endBefore = try await self.endOffset(of: topic)
        // The fill's publish stages, read before the restarts start new brokerd processes with empty metrics.
        let fillStages = self.target.brokerStages()
        FileHandle.standardError.write(
            Data("recovery: filled \(mebibytes(size)) MiB, \(endBefore) records; SIGTERM and restart\n".utf8)
        )

        let clean = try await self.target.restart(after: .terminate)
        let endAfterClean = try await self.endOffset(of: topic)
        let cleanLine = String(format: "recovery: listening %.3f s after launch", clean.secondsToListen)
        FileHandle.standardError.write(Data((cleanLine + "; SIGKILL and restart\n").utf8))
        let crash = try await self.target.restart(after: .kill)
        let endAfterCrash = try await self.endOffset(of: topic)
        FileHandle.standardError.write(
            Data(String(format: "recovery: listening %.3f s after launch\n", crash.secondsToListen).utf8)
        )

        var result = BenchResult(
            scenario: Scenario.recovery.rawValue, parameters: p, measuredSeconds: filled.measuredSeconds,
            records: filled.records, recordBytes: p.recordSize, errors: filled.errors,
            latencyLabel: "", histogram: nil
        )
        let marker = "no clean-shutdown marker"
        result.extra["log_bytes"] = Double(size)
        result.extra["log_gib"] = Double(size) / Double(1 << 30)
        result.extra["fill_log_mb_per_s"] = Double(size) / max(filled.measuredSeconds, 1e-9) / 1_000_000
        result.extra["restart_after_sigterm_s"] = clean.secondsToListen
        result.extra["restart_after_sigkill_s"] = crash.secondsToListen
        result.extra["end_offset_before"] = Double(endBefore)
        result.extra["records_lost_after_sigterm"] = Double(endBefore - endAfterClean)
        result.extra["records_lost_after_sigkill"] = Double(endBefore - endAfterCrash)
        // 1 when brokerd's output shows the expected path: clean open after SIGTERM, validation after SIGKILL.
        result.extra["sigterm_restart_clean"] = clean.output.contains(marker) ? 0 : 1
        result.extra["sigkill_restart_validated"] = crash.output.contains(marker) ? 1 : 0
        result.extra.merge(fillStages?.extras(topics: [topic]) ?? [:]) { current, _ in current }
        return result
    }

    /// The topic's end offset as the broker reports it.
    private func endOffset(of topic: String) async throws -> Int64 {
        let client = try await self.target.connect()
        defer { Task { await client.close() } }
        guard let info = try await client.listTopics().first(where: { $0.name == topic }) else {
            throw BenchError("recovery: the broker does not list topic \(topic)")
        }
        return info.endOffset
    }
}

/// Bytes free to an unprivileged user on the file system holding `path`.
func freeBytes(at path: String) throws -> Int64 {
    var stats = statvfs()
    guard statvfs(path, &stats) == 0 else {
        throw BenchError("statvfs \(path): \(String(cString: strerror(errno)))")
    }
    return Int64(stats.f_bavail) * Int64(stats.f_frsize)
}

/// The total size of the segment files (`*.log`) in `directory`; 0 if it does not exist yet.
func logBytes(in directory: String) -> Int64 {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return 0 }
    var total: Int64 = 0
    for name in names where name.hasSuffix(".log") {
        let attributes = try? FileManager.default.attributesOfItem(atPath: directory + "/" + name)
        total += (attributes?[.size] as? NSNumber)?.int64Value ?? 0
    }
    return total
}

func mebibytes(_ bytes: Int64) -> String { String(format: "%.1f", Double(bytes) / 1_048_576) }
