import ArgumentParser
import BrokerClient
import Foundation
import Locking
import NIOCore
import TopicRouter
import WireProtocol

/// Crash-consistency soak: brokerd as a real process, SIGKILLed at random moments under load, then checked.
@main
struct BrokerSoak: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brokersoak",
        abstract: "Kill brokerd at random moments under load and check that nothing acknowledged is lost.",
        discussion: """
            Each cycle starts brokerd (embedded default config) on one data directory, checks everything acknowledged \
            so far, retries the records whose acknowledgement the last kill cut off, runs producers with dedupe keys \
            and a consumer group that commits, and SIGKILLs brokerd at a random moment. Checks: every acknowledged \
            record is present exactly once, at its offset, byte for byte; no key appears twice; the group's \
            committed offset never goes below one the broker acknowledged; acknowledged dedupe keys are still known. \
            Exit status 1 on any violation.
            """
    )

    @Option(help: "Kill/restart cycles.") var cycles = 5
    @Option(help: "Seed of the random kill times (printed, so a run can be repeated).") var seed: UInt64?
    @Option(help: "Path of the brokerd binary (default: beside this executable).") var brokerd: String?
    @Option(help: "Data directory (default: a new temporary one, removed after a clean run).") var dataDir: String?
    @Option(help: "Producer connections.") var producers = 2
    @Option(help: "Records per PUBLISH.") var batch = 20
    @Option(help: "Shortest run before the kill, in milliseconds.") var minRunMs = 200
    @Option(help: "Longest run before the kill, in milliseconds.") var maxRunMs = 1500

    func run() async throws {
        let seed = self.seed ?? UInt64.random(in: 1...UInt64(UInt32.max))
        let brokerd = self.brokerd
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("brokerd").path
        guard FileManager.default.isExecutableFile(atPath: brokerd) else {
            throw ValidationError("no brokerd binary at \(brokerd); build it or pass --brokerd")
        }
        guard self.cycles > 0, self.producers > 0, self.batch > 0, self.minRunMs >= 0, self.maxRunMs >= self.minRunMs
        else { throw ValidationError("cycles, producers and batch must be positive; 0 <= min-run-ms <= max-run-ms") }
        let dir = self.dataDir ?? NSTemporaryDirectory() + "brokersoak-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        say("brokersoak: seed=\(seed) cycles=\(self.cycles) data-dir=\(dir)")
        var soak = Soak(brokerd: brokerd, dataDir: dir, seed: seed, producers: self.producers, batch: self.batch)
        for cycle in 1...self.cycles {
            let runFor = soak.random(in: self.minRunMs...self.maxRunMs)
            try await soak.cycle(cycle, killAfterMillis: runFor)
        }
        try await soak.finalCheck()
        say(soak.totals.line)
        if soak.totals.violations > 0 {
            say("brokersoak: FAILED; data directory kept at \(dir)")
            throw ExitCode(1)
        }
        if self.dataDir == nil { try? FileManager.default.removeItem(atPath: dir) }
    }
}

/// Counts printed at the end.
struct Totals {
    var cycles = 0
    var acked = 0
    var lost = 0
    var duplicated = 0
    var corrupt = 0
    var misplaced = 0
    var commitRegressions = 0
    var forgottenKeys = 0
    var retriedAfterKill = 0
    var violations: Int { self.lost + self.duplicated + self.corrupt + self.misplaced + self.commitRegressions + self.forgottenKeys }
    var line: String {
        "brokersoak: cycles=\(self.cycles) acked=\(self.acked) lost=\(self.lost) duplicated=\(self.duplicated) "
            + "corrupt=\(self.corrupt) misplaced=\(self.misplaced) commit_regressions=\(self.commitRegressions) "
            + "forgotten_keys=\(self.forgottenKeys) retried_after_kill=\(self.retriedAfterKill)"
    }
}

/// What the producers and the consumer learned during one run, shared by their tasks.
final class RunLedger: Sendable {
    struct State {
        var acked: [String: Int64] = [:]
        var inFlight: Set<String> = []
        var committed: Int64 = 0
    }
    let state = Locked(State())
}

struct Soak {
    static let topic = "education.completed"
    static let group = "soak-consumer"

    let brokerd: String
    let dataDir: String
    let producers: Int
    let batch: Int
    var rng: SplitMix
    var totals = Totals()
    /// Every acknowledged key and the offset it was acknowledged at.
    var acked: [String: Int64] = [:]
    /// Keys sent whose answer the kill cut off: retried with the same key after the restart.
    var unanswered: Set<String> = []
    /// Keys acknowledged since the last restart's checks (by the run that was killed, and by the retries).
    var recentKeys: [String] = []
    /// The highest committed offset the broker acknowledged.
    var committed: Int64 = 0
    var nextKey = 0

    init(brokerd: String, dataDir: String, seed: UInt64, producers: Int, batch: Int) {
        self.brokerd = brokerd
        self.dataDir = dataDir
        self.producers = producers
        self.batch = batch
        self.rng = SplitMix(state: seed)
    }

    mutating func random(in range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self.rng) }

    /// The record for a key: its value is a function of the key, so any change to it is visible.
    static func record(_ key: String) -> WireRecord {
        let json = #"{"event_type":"account.education.completed","source_system":"learning_portal","#
            + #""account_id":"acct_\#(key)","payload":{"module_id":"soak-\#(key)","completion_status":"completed"}}"#
        return WireRecord(
            key: ByteBuffer(string: key),
            headers: [
                WireHeader(name: "event_type", value: ByteBuffer(string: "account.education.completed")),
                WireHeader(name: "source_system", value: ByteBuffer(string: "learning_portal")),
                WireHeader(name: "consent_scope", value: ByteBuffer(string: "educational")),
                WireHeader(name: RecordHeaderName.dedupeKey, value: ByteBuffer(string: key)),
            ],
            value: ByteBuffer(string: json),
            timestamp: 0
        )
    }

    mutating func cycle(_ number: Int, killAfterMillis: Int) async throws {
        let daemon = try await Daemon.start(brokerd: self.brokerd, dataDir: self.dataDir)
        do {
            let credentials = try Credentials.parseCredentials(
                String(contentsOfFile: self.dataDir + "/credentials.toml", encoding: .utf8)
            )
            try await self.verify(port: daemon.port, credentials: credentials, after: "kill \(number - 1)")
            self.recentKeys = []
            try await self.retryUnanswered(port: daemon.port, credentials: credentials)
            let ledger = RunLedger()
            ledger.state.withLock { $0.committed = self.committed }
            let firstKey = self.nextKey
            self.nextKey += 1_000_000
            let load = Task { [producers, batch] in
                await Self.load(port: daemon.port, credentials: credentials, ledger: ledger, producers: producers, batch: batch, firstKey: firstKey)
            }
            try await Task.sleep(for: .milliseconds(killAfterMillis))
            daemon.kill()
            await load.value
            let run = ledger.state.withLock { $0 }
            for (key, offset) in run.acked { self.acked[key] = offset }
            self.recentKeys += run.acked.keys
            self.unanswered.formUnion(run.inFlight)
            self.committed = max(self.committed, run.committed)
            self.totals.cycles += 1
            say(
                "cycle \(number): killed after \(killAfterMillis) ms; acked \(run.acked.count) (total \(self.acked.count)), "
                    + "unanswered \(run.inFlight.count), committed \(self.committed)"
            )
        } catch {
            daemon.kill()
            throw error
        }
    }

    /// A last restart, the checks once more, then a clean stop.
    mutating func finalCheck() async throws {
        let daemon = try await Daemon.start(brokerd: self.brokerd, dataDir: self.dataDir)
        let credentials = try Credentials.parseCredentials(
            String(contentsOfFile: self.dataDir + "/credentials.toml", encoding: .utf8)
        )
        try await self.verify(port: daemon.port, credentials: credentials, after: "the last kill")
        self.totals.acked = self.acked.count
        let status = try await daemon.terminate()
        if status != 0 { throw ValidationError("brokerd exited with status \(status) after SIGTERM") }
    }

    /// Reads the whole topic and checks it against every acknowledgement so far.
    mutating func verify(port: Int, credentials: [String: String], after: String) async throws {
        guard !self.acked.isEmpty || self.committed > 0 else { return }
        let consumer = try await Self.connect(port: port, as: "crm-automation", credentials)
        let subscription = try await consumer.subscribe(topic: Self.topic, start: .earliest, credit: 512)
        let end = subscription.info.endOffset
        var byKey: [String: Int64] = [:]
        var next = subscription.info.startOffset
        if next < end {
            for try await delivered in subscription {
                if delivered.offset != next { self.fail("after \(after): offset \(delivered.offset) where \(next) was due") }
                next = delivered.offset + 1
                let key = delivered.record.key.map { String(buffer: $0) } ?? ""
                let expected = Self.record(key)
                if delivered.record.value != expected.value {
                    self.totals.corrupt += 1
                    self.fail("after \(after): offset \(delivered.offset) (key \(key)) has a value that was never sent")
                }
                if byKey.updateValue(delivered.offset, forKey: key) != nil {
                    self.totals.duplicated += 1
                    self.fail("after \(after): key \(key) appears twice")
                }
                if next >= end { break }
            }
        }
        try await consumer.unsubscribe(subscription.info.subscriptionID)
        for (key, offset) in self.acked {
            guard let found = byKey[key] else {
                self.totals.lost += 1
                self.fail("after \(after): acknowledged key \(key) (offset \(offset)) is gone")
                continue
            }
            if found != offset {
                self.totals.misplaced += 1
                self.fail("after \(after): key \(key) acknowledged at \(offset) is at \(found)")
            }
        }
        // The group's committed offset never goes below one the broker acknowledged.
        let resume = try await consumer.subscribe(topic: Self.topic, group: Self.group, start: .committed, credit: 1)
        if resume.info.startOffset < self.committed {
            self.totals.commitRegressions += 1
            self.fail("after \(after): committed offset \(resume.info.startOffset) < acknowledged \(self.committed)")
        }
        try await consumer.unsubscribe(resume.info.subscriptionID)
        await consumer.close()
        // Acknowledged dedupe keys are still known: a retry gets the original offset back, flagged duplicate.
        let producer = try await Self.connect(port: port, as: "learning-portal", credentials)
        // Sampled from the keys acknowledged in the run the kill cut short (and the retries after it): the newest
        // keys, always within the topic's dedupe_max_keys. Older ones may be evicted by that bound once the soak has
        // acknowledged more than it (1,000,000 on education.completed), as documented (docs/SECURITY.md 4.7).
        var sample: [(String, Int64)] = []
        for _ in 0..<min(20, self.recentKeys.count) {
            let key = self.recentKeys[self.random(in: 0...(self.recentKeys.count - 1))]
            if let offset = self.acked[key] { sample.append((key, offset)) }
        }
        if !sample.isEmpty {
            let results = try await producer.publish(topic: Self.topic, records: sample.map { Self.record($0.0) })
            for ((key, offset), result) in zip(sample, results) where !(result.code == .ok && result.isDuplicate && result.offset == offset) {
                self.totals.forgottenKeys += 1
                self.fail("after \(after): retry of acknowledged key \(key) got \(result.code.name) offset \(result.offset) duplicate=\(result.isDuplicate), not \(offset)")
            }
        }
        await producer.close()
    }

    /// Sends again, with the same keys, the records whose answers the kill cut off; each is then acknowledged once.
    mutating func retryUnanswered(port: Int, credentials: [String: String]) async throws {
        guard !self.unanswered.isEmpty else { return }
        let producer = try await Self.connect(port: port, as: "learning-portal", credentials)
        let keys = self.unanswered.sorted()
        for start in stride(from: 0, to: keys.count, by: 100) {
            let slice = Array(keys[start..<min(start + 100, keys.count)])
            let results = try await producer.publish(topic: Self.topic, records: slice.map(Self.record))
            for (key, result) in zip(slice, results) where result.code == .ok {
                self.acked[key] = result.offset
                self.recentKeys.append(key)
                self.unanswered.remove(key)
                self.totals.retriedAfterKill += 1
            }
        }
        await producer.close()
    }

    /// Producers and a committing consumer, until the broker dies.
    static func load(port: Int, credentials: [String: String], ledger: RunLedger, producers: Int, batch: Int, firstKey: Int) async {
        await withTaskGroup(of: Void.self) { group in
            for producer in 0..<producers {
                group.addTask {
                    guard let client = try? await Self.connect(port: port, as: "learning-portal", credentials) else { return }
                    var sequence = 0
                    while true {
                        let keys = (0..<batch).map { "k\(firstKey + producer * 100_000 + sequence + $0)" }
                        sequence += batch
                        guard sequence < 100_000 else { break }
                        ledger.state.withLock { $0.inFlight.formUnion(keys) }
                        guard let results = try? await client.publish(topic: Self.topic, records: keys.map(Self.record)) else { break }
                        ledger.state.withLock { state in
                            for (key, result) in zip(keys, results) where result.code == .ok {
                                state.acked[key] = result.offset
                                state.inFlight.remove(key)
                            }
                        }
                    }
                    await client.close()
                }
            }
            group.addTask {
                guard let client = try? await Self.connect(port: port, as: "crm-automation", credentials),
                    let subscription = try? await client.subscribe(topic: Self.topic, group: Self.group, start: .committed, credit: 256)
                else { return }
                var consumed = 0
                do {
                    for try await delivered in subscription {
                        consumed += 1
                        if consumed % 50 == 0 {
                            try await client.commit(group: Self.group, topic: Self.topic, offset: delivered.offset + 1)
                            ledger.state.withLock { $0.committed = max($0.committed, delivered.offset + 1) }
                        }
                    }
                } catch {}
                await client.close()
            }
        }
    }

    static func connect(port: Int, as principal: String, _ credentials: [String: String]) async throws -> BrokerClient {
        guard let token = credentials[principal] else { throw ValidationError("no token for \(principal) in credentials.toml") }
        return try await BrokerClient.connect(host: "127.0.0.1", port: port, clientID: principal, token: token)
    }

    func fail(_ message: String) {
        say("VIOLATION: \(message)")
    }
}

/// brokerd as a child process.
final class Daemon: Sendable {
    let process: Process
    let port: Int

    private init(process: Process, port: Int) {
        self.process = process
        self.port = port
    }

    static func start(brokerd: String, dataDir: String) async throws -> Daemon {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: brokerd)
        process.arguments = [
            "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--log-level", "notice",
        ]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        let output = Locked("")
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let text = String(decoding: handle.availableData, as: UTF8.self)
            // Keeps the tail only: brokerd logs for as long as it runs.
            output.withLock { $0 = String(($0 + text).suffix(16_384)) }
        }
        try process.run()
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(60))
        while clock.now < deadline, process.isRunning {
            let text = output.withLock { $0 }
            if let range = text.range(of: #"brokerd\.address=\[IPv4\]127\.0\.0\.1/127\.0\.0\.1:(\d+)"#, options: .regularExpression),
                let port = Int(text[range].split(separator: ":").last ?? "")
            {
                return Daemon(process: process, port: port)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
        throw ValidationError("brokerd did not start listening; its output:\n\(output.withLock { $0 })")
    }

    func kill() {
        Glibc.kill(self.process.processIdentifier, SIGKILL)
        self.process.waitUntilExit()
    }

    func terminate() async throws -> Int32 {
        Glibc.kill(self.process.processIdentifier, SIGTERM)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(30))
        while self.process.isRunning, clock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if self.process.isRunning {
            self.kill()
            throw ValidationError("brokerd did not exit within 30 s of SIGTERM")
        }
        return self.process.terminationStatus
    }
}

/// Writes a line to standard output at once (unbuffered), so progress shows in a pipe or a file too.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

/// SplitMix64: a small seeded generator, so a run with the printed seed kills at the same moments.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        self.state &+= 0x9E37_79B9_7F4A_7C15
        var z = self.state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
