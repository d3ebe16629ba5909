import BrokerClient
import BrokerServer
import Foundation
import NIOCore
import WireProtocol

/// many-connections, second half: subscribers that stop reading. Each opens a plain TCP connection, sends HELLO and
/// a SUBSCRIBE from the earliest record with `credit` records of credit, and then never reads its socket (a
/// consumer that hung). The broker may push only the credit granted; what it keeps for such a subscriber — the
/// DELIVERs its socket did not take and the read-ahead of its last read — must stay within that credit, however
/// much the topic holds. The figures are the broker's RSS growth per stalled subscriber, beside the credit's bytes,
/// and (a spawned brokerd, from its metrics) the growth of what its allocator has handed out: RSS also counts memory
/// freed during the run that the allocator keeps for later (`brokerd_memory_free_held_bytes`, `AllocatorTuning`).
/// brokerd gives that back once it has gone quiet (`QuietTrim`), so both RSS samples wait for its next trim.
struct StalledSubscribers {
    let target: BenchTarget
    /// A client of the many-connections run, used to fill the topic.
    let producer: BrokerClient
    let count: Int
    let credit: Int
    let recordSize: Int

    /// Fills the bench topic with 4x the credit (at least 20,000 records), opens the stalled subscribers, waits for
    /// the broker to push what it may, and reports the broker's RSS growth. The connections close at the end.
    func run(pid: Int32) async throws -> [String: Double] {
        let topic = self.target.topics[0]
        let fill = max(20_000, 4 * self.credit)
        let payloads = makePayloads(size: self.recordSize)
        var trims = self.brokerTrims()
        var published = 0
        while published < fill {
            let records = (0..<min(1_000, fill - published)).map {
                WireRecord(headers: benchHeaders, value: payloads[(published + $0) % payloads.count])
            }
            let results = try await self.producer.publish(topic: topic, records: records)
            if let failed = results.first(where: { $0.code != .ok }) {
                throw BenchError("filling \(topic) for the stalled subscribers failed: \(failed.code)")
            }
            published += records.count
        }
        try await Task.sleep(for: .seconds(1))
        trims = try await self.nextTrim(after: trims)
        guard let before = ResourceSample.read(pid: pid) else { return [:] }
        let heapBefore = self.target.brokerValues(Self.heapGauges)
        var sockets: [Int32] = []
        defer { for fd in sockets { close(fd) } }
        for _ in 0..<self.count {
            sockets.append(try self.openStalled(topic: topic))
        }
        // The broker pushes until the credit is spent or the socket stops taking bytes; give it time to get there.
        try await Task.sleep(for: .seconds(3))
        trims = try await self.nextTrim(after: trims)
        guard let after = ResourceSample.read(pid: pid) else { return [:] }
        let heapAfter = self.target.brokerValues(Self.heapGauges)
        // What one credit's worth of records weighs on the wire (value and headers; framing adds a few bytes).
        let headerBytes = benchHeaders.reduce(0) { $0 + $1.name.utf8.count + $1.value.readableBytes + 8 }
        let subscribers = Double(max(1, self.count))
        var figures = [
            "stalled_subscribers": Double(self.count),
            "stalled_credit_records": Double(self.credit),
            "stalled_topic_records": Double(fill),
            "stalled_credit_bytes": Double(self.credit * (self.recordSize + headerBytes + 24)),
            "rss_growth_per_stalled_sub_bytes":
                Double(after.rssBytes - before.rssBytes) / subscribers,
        ]
        if let start = heapBefore[BrokerMetrics.memoryAllocated], let end = heapAfter[BrokerMetrics.memoryAllocated] {
            figures["allocated_growth_per_stalled_sub_bytes"] = (end - start) / subscribers
        }
        if let held = heapAfter[BrokerMetrics.memoryFreeHeld] { figures["broker_free_held_mb"] = held / 1_048_576 }
        if let trims { figures["broker_quiet_trims"] = trims }
        return figures
    }

    /// How many times the broker has trimmed its heap when quiet; nil when it does not say (not spawned, or not
    /// trimming: a sanitizer's malloc, or `GLIBC_TUNABLES` naming glibc.malloc).
    private func brokerTrims() -> Double? {
        self.target.brokerValues([BrokerMetrics.memoryTrims])[BrokerMetrics.memoryTrims]
    }

    /// Waits (at most 10 s) for the broker's next quiet trim after `count` of them; returns the count then.
    private func nextTrim(after count: Double?) async throws -> Double? {
        guard let count else { return nil }
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while ContinuousClock.now < deadline {
            if let now = self.brokerTrims(), now > count { return now }
            try await Task.sleep(for: .milliseconds(100))
        }
        return self.brokerTrims()
    }

    private static let heapGauges = [BrokerMetrics.memoryAllocated, BrokerMetrics.memoryFreeHeld]

    /// Connects, sends HELLO and SUBSCRIBE, and returns the socket without ever reading from it.
    private func openStalled(topic: String) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(self.target.host, String(self.target.port), &hints, &list) == 0, let first = list else {
            throw BenchError("cannot resolve \(self.target.host)")
        }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, first.pointee.ai_socktype, first.pointee.ai_protocol)
        guard fd >= 0 else { throw BenchError("socket: \(String(cString: strerror(errno)))") }
        // A small receive buffer, so that little of what the broker sends hides in this end's kernel buffer.
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        guard connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else {
            let problem = String(cString: strerror(errno))
            close(fd)
            throw BenchError("connect to \(self.target.host):\(self.target.port): \(problem)")
        }
        var bytes = ByteBuffer()
        let hello = Hello(clientID: self.target.clientID, credential: ByteBuffer(string: self.target.token))
        FrameCodec.encode(TaggedFrame(correlationID: 1, frame: .hello(hello)), into: &bytes)
        let subscribe = Subscribe(topic: topic, start: .earliest, initialCredit: UInt32(self.credit))
        FrameCodec.encode(TaggedFrame(correlationID: 2, frame: .subscribe(subscribe)), into: &bytes)
        let written = bytes.withUnsafeReadableBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard written == bytes.readableBytes else {
            close(fd)
            throw BenchError("sending HELLO and SUBSCRIBE wrote \(written) of \(bytes.readableBytes) bytes")
        }
        return fd
    }
}
