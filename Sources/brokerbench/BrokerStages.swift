import BrokerServer
import Foundation

/// The spawned broker's stage histograms (docs/METRICS.md), read from its metrics endpoint: where its sampled PUBLISH
/// requests (`brokerd_publish_stage_seconds`) and its sampled DELIVERs (`brokerd_delivery_stage_seconds`) spent their
/// time inside the broker.
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

    /// One metric's stages, by stage label.
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

        /// Parses `metric`'s histograms out of a Prometheus text exposition (empty when it has none).
        init(exposition: String, metric: String) {
            for line in exposition.split(separator: "\n") where line.hasPrefix(metric) {
                let parts = line.split(separator: " ")
                guard parts.count >= 2, let value = Double(parts[parts.count - 1]),
                    let stage = BrokerStages.label("stage", in: parts[0])
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

    /// The samples taken after `base`.
    func since(_ base: BrokerStages?) -> BrokerStages {
        BrokerStages(publish: self.publish.since(base?.publish), delivery: self.delivery.since(base?.delivery))
    }

    /// Figures for the result's `extra`: the publish stages as `PREFIXbroker_STAGE_...` with
    /// `PREFIXbroker_timed_requests`, the delivery stages as `PREFIXbroker_delivery_STAGE_...` with
    /// `PREFIXbroker_timed_delivers` (only when some DELIVER was timed).
    func extras(prefix: String = "") -> [String: Double] {
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
        return extra
    }

    /// Both metrics' histograms in a Prometheus text exposition; nil when it has neither.
    init?(exposition: String) {
        self.publish = Histograms(exposition: exposition, metric: BrokerMetrics.publishStage)
        self.delivery = Histograms(exposition: exposition, metric: BrokerMetrics.deliveryStage)
        if self.publish.stages.isEmpty && self.delivery.stages.isEmpty { return nil }
    }

    private init(publish: Histograms, delivery: Histograms) {
        self.publish = publish
        self.delivery = delivery
    }

    /// The value of label `name` in a series like `metric_bucket{stage="total",le="0.001"}`.
    fileprivate static func label(_ name: String, in series: Substring) -> String? {
        guard let start = series.range(of: "\(name)=\"") else { return nil }
        let rest = series[start.upperBound...]
        guard let end = rest.firstIndex(of: "\"") else { return nil }
        return String(rest[..<end])
    }

    /// GETs `/metrics` from 127.0.0.1:`port` (HTTP/1.0, the whole body until the server closes); nil on any
    /// failure, with the reason on standard error: the stage figures are extra, a run never fails for them.
    static func scrape(port: Int) -> BrokerStages? {
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
        return BrokerStages(exposition: String(decoding: response, as: UTF8.self))
    }
}
