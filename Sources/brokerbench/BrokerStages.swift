import BrokerServer
import Foundation
import LogStore

/// The spawned broker's stage histograms (docs/METRICS.md), read from its metrics endpoint: where its sampled PUBLISH
/// requests (`brokerd_publish_stage_seconds`) and its sampled DELIVERs (`brokerd_delivery_stage_seconds`) spent their
/// time inside the broker, and how busy each topic's log was (`brokerd_log_append_duration_seconds`,
/// `brokerd_log_fsync_duration_seconds`, `brokerd_log_group_commit_records`).
struct BrokerStages: Sendable {
    /// One stage's histogram: cumulative bucket counts by upper bound (seconds), sum (seconds) and count.
    struct Stage: Sendable {
        var buckets: [(le: Double, count: Double)] = []
        var sum = 0.0
        var count = 0.0

        /// Mean in microseconds (0 without samples).
        var meanMicros: Double { self.count > 0 ? self.sum / self.count * 1e6 : 0 }

        /// The upper bound (µs) of the bucket holding the `quantile`-th sample: the true value is at most this and
        /// above the bucket below. Infinity when it is past the last finite bound.
        func boundMicros(at quantile: Double) -> Double {
            guard self.count > 0 else { return 0 }
            let rank = quantile * self.count
            for bucket in self.buckets.sorted(by: { $0.le < $1.le }) where bucket.count >= rank {
                return bucket.le * 1e6
            }
            return .infinity
        }

        /// The samples of `self` taken after `base` (an earlier read of the same histogram).
        func since(_ base: Stage?) -> Stage {
            guard let base else { return self }
            var result = Stage(sum: self.sum - base.sum, count: self.count - base.count)
            result.buckets = self.buckets.map { bucket in
                (bucket.le, bucket.count - (base.buckets.first { $0.le == bucket.le }?.count ?? 0))
            }
            return result
        }
    }

    /// One metric's histograms, by the value of one label (a stage, or a topic).
    struct Histograms: Sendable {
        var stages: [String: Stage] = [:]

        /// The samples taken after `base`.
        func since(_ base: Histograms?) -> Histograms {
            var result = Histograms()
            for (name, stage) in self.stages { result.stages[name] = stage.since(base?.stages[name]) }
            return result
        }

        /// Per stage of `names` its mean and the bucket bounds of its p50 and p99 in µs (each the upper bound of
        /// the bucket that holds it: the value is at most that, and above the bucket below)
        /// (`PREFIXSTAGE_mean_us`, `..._p50_le_us`, `..._p99_le_us`), and how many were timed (`countKey`).
        func extras(prefix: String, names: [String], countKey: String) -> [String: Double] {
            var extra: [String: Double] = [:]
            for name in names {
                guard let stage = self.stages[name], stage.count > 0 else { continue }
                extra["\(prefix)\(name)_mean_us"] = (stage.meanMicros * 10).rounded() / 10
                // A quantile past the last finite bound (1 s) has no bound to give: left out (JSON has no infinity).
                for (quantile, label) in [(0.5, "p50"), (0.99, "p99")] {
                    let bound = stage.boundMicros(at: quantile)
                    if bound.isFinite { extra["\(prefix)\(name)_\(label)_le_us"] = bound }
                }
            }
            if let total = self.stages["total"] { extra[countKey] = total.count }
            return extra
        }

        /// Parses `metric`'s histograms out of a Prometheus text exposition, keyed by the value of `label` (empty
        /// when it has none).
        init(exposition: String, metric: String, label: String = "stage") {
            for line in exposition.split(separator: "\n") where line.hasPrefix(metric) {
                let parts = line.split(separator: " ")
                guard parts.count >= 2, let value = Double(parts[parts.count - 1]),
                    let stage = BrokerStages.label(label, in: parts[0])
                else { continue }
                let series = parts[0].prefix { $0 != "{" }
                switch series.dropFirst(metric.count) {
                case "_bucket":
                    guard let bound = BrokerStages.label("le", in: parts[0]) else { continue }
                    let le = bound == "+Inf" ? Double.infinity : Double(bound) ?? .nan
                    self.stages[stage, default: Stage()].buckets.append((le, value))
                case "_sum": self.stages[stage, default: Stage()].sum = value
                case "_count": self.stages[stage, default: Stage()].count = value
                default: continue
                }
            }
        }

        private init() {}
    }

    /// The publish path's stages.
    var publish: Histograms
    /// The delivery path's stages.
    var delivery: Histograms
    /// Per topic: its log's appends (encoding, write and, under `always`, the wait for the fdatasync that covers it),
    /// its fdatasyncs, and the records each group-commit fdatasync made durable.
    var logAppends: Histograms
    var logSyncs: Histograms
    var logGroupCommits: Histograms
    /// Per topic: the bytes of its log's batches (`brokerd_log_bytes`; after `since`, those appended in the span).
    var logBytes: [String: Double]
    /// When it was read (`monotonicNanos()`).
    var readAt: UInt64
    /// The seconds its samples span (set by `since`: from the earlier read, or from the broker's start).
    var seconds: Double?

    /// The samples taken after `base`, or after `startedAt` (`monotonicNanos()`) when there is no earlier read.
    func since(_ base: BrokerStages?, startedAt: UInt64) -> BrokerStages {
        var result = self
        result.publish = self.publish.since(base?.publish)
        result.delivery = self.delivery.since(base?.delivery)
        result.logAppends = self.logAppends.since(base?.logAppends)
        result.logSyncs = self.logSyncs.since(base?.logSyncs)
        result.logGroupCommits = self.logGroupCommits.since(base?.logGroupCommits)
        for (topic, bytes) in self.logBytes { result.logBytes[topic] = bytes - (base?.logBytes[topic] ?? 0) }
        result.seconds = Double(self.readAt &- (base?.readAt ?? startedAt)) / 1e9
        return result
    }

    /// Figures for the result's `extra`: the publish stages as `PREFIXbroker_STAGE_...` with
    /// `PREFIXbroker_timed_requests`, the delivery stages as `PREFIXbroker_delivery_STAGE_...` with
    /// `PREFIXbroker_timed_delivers` (only when some DELIVER was timed), and the logs of `topics` (`logExtras`).
    func extras(prefix: String = "", topics: [String]) -> [String: Double] {
        var extra = self.publish.extras(
            prefix: "\(prefix)broker_", names: PublishStageTimers.stages, countKey: "\(prefix)broker_timed_requests"
        )
        if (self.delivery.stages["total"]?.count ?? 0) > 0 {
            extra.merge(
                self.delivery.extras(
                    prefix: "\(prefix)broker_delivery_", names: DeliveryStageTimers.stages,
                    countKey: "\(prefix)broker_timed_delivers"
                )
            ) { current, _ in current }
        }
        extra.merge(self.logExtras(prefix: prefix, topics: topics)) { current, _ in current }
        return extra
    }

    /// How the logs of those of `topics` that appended anything spent the span (`seconds`): `PREFIXlog_busy`, the
    /// fraction of it a topic's log had an append under way (the mean over those topics; over 1 when a topic's
    /// appends overlap), `PREFIXlog_fsync_busy` the same for its fdatasyncs, `PREFIXlog_appends_per_s` (all of
    /// them), `PREFIXlog_append_mean_us`, `PREFIXlog_fsync_mean_us` and `PREFIXlog_records_per_fsync` (records per
    /// group commit). Empty without a span or an append.
    func logExtras(prefix: String, topics: [String]) -> [String: Double] {
        let appends = topics.compactMap { self.logAppends.stages[$0] }.filter { $0.count > 0 }
        guard let seconds = self.seconds, seconds > 0, !appends.isEmpty else { return [:] }
        func total(_ histograms: Histograms) -> (sum: Double, count: Double) {
            topics.compactMap { histograms.stages[$0] }.reduce((0, 0)) { ($0.sum + $1.sum, $0.count + $1.count) }
        }
        func rounded(_ value: Double, _ scale: Double) -> Double { (value * scale).rounded() / scale }
        let append = total(self.logAppends)
        let sync = total(self.logSyncs)
        let group = total(self.logGroupCommits)
        let span = seconds * Double(appends.count)
        var extra = [
            "\(prefix)log_busy": rounded(append.sum / span, 1000),
            "\(prefix)log_appends_per_s": rounded(append.count / seconds, 1),
            "\(prefix)log_append_mean_us": rounded(append.sum / append.count * 1e6, 10),
        ]
        if sync.count > 0 {
            extra["\(prefix)log_fsync_busy"] = rounded(sync.sum / span, 1000)
            extra["\(prefix)log_fsync_mean_us"] = rounded(sync.sum / sync.count * 1e6, 10)
        }
        if group.count > 0 { extra["\(prefix)log_records_per_fsync"] = rounded(group.sum / group.count, 10) }
        if let bytes = self.logBytesPerFsync(topics: topics) { extra["\(prefix)log_bytes_per_fsync"] = bytes.rounded() }
        return extra
    }

    /// The bytes the logs of `topics` appended per fdatasync over the span (batches as stored: compressed, with
    /// their headers); nil without an fdatasync or a byte appended.
    func logBytesPerFsync(topics: [String]) -> Double? {
        let syncs = topics.compactMap { self.logSyncs.stages[$0]?.count }.reduce(0, +)
        let bytes = topics.compactMap { self.logBytes[$0] }.reduce(0, +)
        return syncs > 0 && bytes > 0 ? bytes / syncs : nil
    }

    /// The histograms in a Prometheus text exposition, read at `readAt`; nil when it has no publish or delivery
    /// stage.
    init?(exposition: String, readAt: UInt64) {
        self.publish = Histograms(exposition: exposition, metric: BrokerMetrics.publishStage)
        self.delivery = Histograms(exposition: exposition, metric: BrokerMetrics.deliveryStage)
        if self.publish.stages.isEmpty && self.delivery.stages.isEmpty { return nil }
        self.logAppends = Histograms(exposition: exposition, metric: LogMetrics.appendDurationName, label: "topic")
        self.logSyncs = Histograms(exposition: exposition, metric: LogMetrics.fsyncDurationName, label: "topic")
        self.logGroupCommits = Histograms(
            exposition: exposition, metric: LogMetrics.groupCommitRecordsName, label: "topic"
        )
        self.logBytes = Self.labelled(LogMetrics.bytesName, label: "topic", in: exposition)
        self.readAt = readAt
    }

    /// The values of labelled gauge `metric` (`metric{LABEL="x"} value`) in a Prometheus text exposition, by the
    /// value of `label`.
    static func labelled(_ metric: String, label: String, in exposition: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in exposition.split(separator: "\n") where line.hasPrefix(metric + "{") {
            let parts = line.split(separator: " ")
            guard parts.count >= 2, let value = Double(parts[parts.count - 1]),
                let key = Self.label(label, in: parts[0])
            else { continue }
            values[key] = value
        }
        return values
    }

    /// The value of label `name` in a series like `metric_bucket{stage="total",le="0.001"}`.
    fileprivate static func label(_ name: String, in series: Substring) -> String? {
        guard let start = series.range(of: "\(name)=\"") else { return nil }
        let rest = series[start.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }

    /// GETs `/metrics` from 127.0.0.1:`port` and reads the stages from it; nil on any failure (see ``exposition``).
    static func scrape(port: Int) -> BrokerStages? {
        let readAt = monotonicNanos()
        return Self.exposition(port: port).flatMap { BrokerStages(exposition: $0, readAt: readAt) }
    }

    /// The value of an unlabelled gauge or counter `metric` in a Prometheus text exposition.
    static func value(of metric: String, in exposition: String) -> Double? {
        for line in exposition.split(separator: "\n") where line.hasPrefix(metric + " ") {
            return Double(line.dropFirst(metric.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// GETs `/metrics` from 127.0.0.1:`port` (HTTP/1.0, the whole response until the server closes); nil on any
    /// failure, with the reason on standard error: the broker's figures are extra, a run never fails for them.
    static func exposition(port: Int) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        let request = Array("GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard connected == 0, write(fd, request, request.count) == request.count else {
            FileHandle.standardError.write(Data("brokerbench: could not reach brokerd's metrics on port \(port)\n".utf8))
            return nil
        }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let count = read(fd, &chunk, chunk.count)
            if count <= 0 { break }
            response += chunk[0..<count]
        }
        return String(decoding: response, as: UTF8.self)
    }
}
