import BrokerClient
import BrokerServer
import Foundation
import Locking
import Testing
import TopicRouter
import WireProtocol

/// The brokerd executable as users run it: embedded default config, generated credentials, SIGTERM.
@Suite("brokerd process")
struct BrokerdProcessTests {
    /// The brokerd binary built next to the test bundle.
    static var brokerdPath: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for dir in [beside, beside.deletingLastPathComponent()] {
            let candidate = dir.appendingPathComponent("brokerd").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return root.appendingPathComponent(".build/debug/brokerd").path
    }

    /// A running brokerd child process and the ports it reported.
    final class Daemon: Sendable {
        let process: ChildProcess
        let port: Int
        /// The metrics endpoint's port; nil when brokerd reported `brokerd.metrics_address=off`.
        let metricsPort: Int?
        let output: OutputBuffer

        init(process: ChildProcess, port: Int, metricsPort: Int?, output: OutputBuffer) {
            self.process = process
            self.port = port
            self.metricsPort = metricsPort
            self.output = output
        }

        /// Starts brokerd on ephemeral ports: the broker's and, unless `arguments` turn metrics off, the metrics
        /// endpoint's (never the users' default 9420, so tests and a running brokerd never collide).
        static func start(dataDir: String, arguments: [String] = []) async throws -> Daemon {
            let metrics = arguments.contains("--no-metrics") ? [] : ["--metrics-listen", "127.0.0.1:0"]
            let process = try ChildProcess.launch(
                BrokerdProcessTests.brokerdPath,
                ["--data-dir", dataDir, "--listen", "127.0.0.1:0"] + metrics + arguments
            )
            let output = process.output
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(30))
            while clock.now < deadline {
                let text = output.text
                if let range = text.range(of: #"brokerd\.address=\[?IPv4\]?127\.0\.0\.1/127\.0\.0\.1:(\d+)"#, options: .regularExpression) {
                    let port = Int(text[range].split(separator: ":").last!)!
                    let metricsPort = text.range(
                        of: #"brokerd\.metrics_address=\[?IPv4\]?127\.0\.0\.1/127\.0\.0\.1:(\d+)"#, options: .regularExpression
                    ).map { Int(text[$0].split(separator: ":").last!)! }
                    return Daemon(process: process, port: port, metricsPort: metricsPort, output: output)
                }
                if !process.isRunning { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            process.signal(SIGTERM)
            throw TimeoutError(what: "brokerd to listen; output:\n\(output.text)")
        }

        /// Sends SIGTERM and waits for the exit status.
        func terminate() async throws -> Int32 {
            self.process.signal(SIGTERM)
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(30))
            while self.process.isRunning, clock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            guard let status = self.process.poll() else {
                self.process.signal(SIGINT)
                throw TimeoutError(what: "brokerd to exit after SIGTERM")
            }
            return status
        }
    }

    @Test("brokerd generates 0600 credentials, serves the default scenario, stops on SIGTERM and resumes exactly")
    func sigtermAndResume() async throws {
        let dataDir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let daemon = try await Daemon.start(dataDir: dataDir)
        let credentialsPath = dataDir + "/credentials.toml"
        let attributes = try FileManager.default.attributesOfItem(atPath: credentialsPath)
        #expect((attributes[.posixPermissions] as? NSNumber)?.intValue == 0o600)
        let tokens = try Credentials.parseCredentials(String(contentsOfFile: credentialsPath, encoding: .utf8))
        #expect(Set(tokens.keys).isSuperset(of: ["learning-portal", "crm-automation", "support-desk"]))

        let producer = try await BrokerClient.connect(host: "127.0.0.1", port: daemon.port, clientID: "learning-portal", token: tokens["learning-portal"]!)
        let results = try await producer.publish(topic: "education.completed", records: (0..<25).map(educationEvent))
        #expect(results.map(\.offset) == Array(0..<25))
        let crm = try await BrokerClient.connect(host: "127.0.0.1", port: daemon.port, clientID: "crm-automation", token: tokens["crm-automation"]!)
        do {
            _ = try await crm.subscribe(topic: "clinical.referral", start: .earliest)
            Issue.record("crm must not read the PHI topic")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        #expect(try await daemon.terminate() == 0)
        #expect(daemon.output.text.contains("logs closed cleanly"))

        // Restart on the same data: the same tokens still work and nothing was lost.
        let again = try await Daemon.start(dataDir: dataDir)
        let consumer = try await BrokerClient.connect(host: "127.0.0.1", port: again.port, clientID: "crm-automation", token: tokens["crm-automation"]!)
        let got = try await collect(try await consumer.subscribe(topic: "education.completed", start: .earliest), count: 25)
        #expect(got.map(\.record.producerPart) == (0..<25).map(educationEvent))
        await consumer.close()
        #expect(try await again.terminate() == 0)
    }

    @Test("SIGHUP re-reads --config: a rejected file changes nothing; an accepted one revokes a live subscription")
    func sighupReload() async throws {
        let dataDir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let configPath = dataDir + "/brokerd.toml"
        try ConfigLoader.embeddedDefault.write(toFile: configPath, atomically: true, encoding: .utf8)
        let daemon = try await Daemon.start(dataDir: dataDir, arguments: ["--config", configPath])
        let tokens = try Credentials.parseCredentials(String(contentsOfFile: dataDir + "/credentials.toml", encoding: .utf8))
        let crm = try await BrokerClient.connect(host: "127.0.0.1", port: daemon.port, clientID: "crm-automation", token: tokens["crm-automation"]!)
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest)

        func waitForOutput(_ text: String) async throws {
            let deadline = ContinuousClock.now.advanced(by: .seconds(20))
            while !daemon.output.text.contains(text), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
            #expect(daemon.output.text.contains(text), "brokerd never said '\(text)'")
        }
        try "classes = [".write(toFile: configPath, atomically: true, encoding: .utf8)
        daemon.process.signal(SIGHUP)
        try await waitForOutput("SIGHUP: config reload rejected")

        let revoked = ConfigLoader.embeddedDefault.replacingOccurrences(
            of: "subscribe = [\"education.*\"]\npurposes = [\"commercial_analytics\"]",
            with: "subscribe = []\npurposes = [\"commercial_analytics\"]"
        )
        #expect(revoked != ConfigLoader.embeddedDefault)
        try revoked.write(toFile: configPath, atomically: true, encoding: .utf8)
        daemon.process.signal(SIGHUP)
        try await waitForOutput("SIGHUP: config reloaded")
        do {
            for try await _ in subscription { Issue.record("nothing was published; nothing may arrive") }
            Issue.record("the subscription must end with an error")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        await crm.close()
        #expect(try await daemon.terminate() == 0)
    }

    @Test("brokerd serves Prometheus metrics on --metrics-listen and reports the port; --no-metrics serves none")
    func metricsEndpoint() async throws {
        let dataDir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let daemon = try await Daemon.start(dataDir: dataDir)
        let metricsPort = try #require(daemon.metricsPort, "brokerd.metrics_address in:\n\(daemon.output.text)")
        #expect(metricsPort != 9420 && metricsPort != daemon.port)
        let tokens = try Credentials.parseCredentials(String(contentsOfFile: dataDir + "/credentials.toml", encoding: .utf8))
        let producer = try await BrokerClient.connect(host: "127.0.0.1", port: daemon.port, clientID: "learning-portal", token: tokens["learning-portal"]!)
        #expect(try await producer.publish(topic: "education.completed", records: (0..<3).map(educationEvent)).count == 3)
        let scrape = try await MetricsScrape.get(port: metricsPort)
        #expect(scrape.status == 200)
        #expect(scrape.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        let exposition = scrape.exposition
        #expect(exposition.value("brokerd_publish_results_total", ["topic": "education.completed", "outcome": "ok"]) == 3)
        #expect(exposition.value("brokerd_connections_open") == 1)
        // The bucket layout brokerd configures: an fsync is measured from 50 µs up.
        #expect(exposition.value("brokerd_log_fsync_duration_seconds_bucket", ["topic": "education.completed", "le": "0.00005"]) != nil)
        await producer.close()
        #expect(try await daemon.terminate() == 0)

        let quiet = try await Daemon.start(dataDir: dataDir, arguments: ["--no-metrics"])
        #expect(quiet.metricsPort == nil)
        #expect(quiet.output.text.contains("brokerd.metrics_address=off"))
        #expect(try await quiet.terminate() == 0)
    }

    /// Under load brokerd's allocator keeps freed buffers for reuse (up to 32 MiB at the top of each thread's arena,
    /// `AllocatorTuning`), which `malloc_trim` alone never gives back; once quiet, brokerd gives them back
    /// (`QuietTrim`). A process of its own, so that its arenas hold only brokerd's memory.
    @Test(
        "brokerd gives back the memory it kept for reuse under load once it is quiet",
        .enabled(if: AllocatorTuning.isGlibcMalloc, "a sanitizer's malloc: brokerd leaves it alone")
    )
    func quietTrimGivesMemoryBack() async throws {
        let dataDir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let daemon = try await Daemon.start(dataDir: dataDir)
        let metricsPort = try #require(daemon.metricsPort)
        func trims() async throws -> Double {
            try await MetricsScrape.get(port: metricsPort).exposition.value(BrokerMetrics.memoryTrims) ?? 0
        }
        /// Polls (at most 15 s) until brokerd has trimmed more than `count` times; returns how many it has.
        func trimAfter(_ count: Double) async throws -> Double {
            let deadline = ContinuousClock.now.advanced(by: .seconds(15))
            while try await trims() <= count, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
            return try await trims()
        }
        // Anonymous memory only: the pages of brokerd's code the load runs for the first time (0.5-0.64 MiB of a
        // debug build's) are resident too, and are neither in use nor kept by the allocator.
        func residentKiB() throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(daemon.process.pid)/status", encoding: .utf8)
            let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") })
            return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
        }
        func allocatedKiB() async throws -> Int {
            let bytes = try await MetricsScrape.get(port: metricsPort).exposition.value(BrokerMetrics.memoryAllocated)
            return Int(try #require(bytes)) >> 10
        }
        let started = try await trimAfter(0)
        #expect(started >= 1, "no trim after the start's recovery")
        let idle = try residentKiB()
        let allocatedIdle = try await allocatedKiB()
        let tokens = try Credentials.parseCredentials(String(contentsOfFile: dataDir + "/credentials.toml", encoding: .utf8))
        let producer = try await BrokerClient.connect(host: "127.0.0.1", port: daemon.port, clientID: "learning-portal", token: tokens["learning-portal"]!)
        // About 32 MB of records, 1 MB PUBLISHes eight at a time: multi-MiB batches on the log's writer.
        let records = (0..<4_000).map(educationEvent)
        for _ in 0..<4 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        let results = try await producer.publish(topic: "education.completed", records: records)
                        #expect(results.count == 4_000)
                    }
                }
                try await group.waitForAll()
            }
        }
        let loaded = try residentKiB()
        // The count now, not the start's: on a busy machine a pause between the publishes may have had its trim.
        let published = try await trims()
        #expect(try await trimAfter(published) > published, "no trim once the publishes stopped")
        let after = try residentKiB()
        let inUse = try await allocatedKiB() - allocatedIdle
        // Anonymous RSS grew by the memory now in use (the log's recent batches, say) and by memory freed and kept;
        // after the trim it is back to the memory in use.
        let figures =
            "anonymous RSS \(idle) KiB idle, \(loaded) loaded, \(after) after the trim; \(inUse) KiB more in use"
        #expect(loaded - idle > inUse + 1_024, "\(figures): too little kept to see a trim")
        #expect(after - idle < inUse + 512, "\(figures)")
        await producer.close()
        #expect(try await daemon.terminate() == 0)
    }

    @Test("brokerd --print-default-config prints a config that parses")
    func printDefaultConfig() throws {
        let printed = try ChildProcess.run(Self.brokerdPath, ["--print-default-config"])
        #expect(printed.status == 0)
        let config = try ConfigLoader.parse(printed.out)
        #expect(config.topics.map(\.name).contains("clinical.referral"))
    }

    @Test("brokerd check-config: every problem with FILE:LINE and a hint, exit 1; a clean file exits 0; no file 2")
    func checkConfig() throws {
        func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
            let result = try ChildProcess.run(Self.brokerdPath, ["check-config"] + arguments)
            return (result.status, result.out + result.err)
        }
        let dir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let bad = dir + "/bad.toml"
        let lines = [
            #"classes = ["non_phi", "phi"]"#,  // 1
            "[[topics]]", #"name = "clinical.referral""#, #"class = "phi""#,  // 2-4
            "[[roles]]", #"name = "crm""#, #"clearance = "non_phi""#, #"subscribe = ["*"]"#,  // 5-8
            "[[principals]]", #"client_id = "crm-automation""#, #"role = "crm""#,  // 9-11
            "[[principals]]", #"client_id = "crm-automation""#, #"role = "crmm""#,  // 12-14
        ]
        try (lines.joined(separator: "\n") + "\n").write(toFile: bad, atomically: true, encoding: .utf8)
        let failed = try run([bad])
        #expect(failed.status == 1, "\(failed.output)")
        #expect(failed.output.contains("\(bad):8: error: role 'crm' is cleared up to 'non_phi'"), "\(failed.output)")
        #expect(failed.output.contains("\(bad):13: error: duplicate principal 'crm-automation'"), "\(failed.output)")
        #expect(failed.output.contains("    hint: client ids must be unique"), "\(failed.output)")
        #expect(failed.output.contains("\(bad): 2 errors, 0 warnings"), "\(failed.output)")

        let json = try run(["--json", bad])
        #expect(json.status == 1)
        let document = try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any]
        #expect(document?["ok"] as? Bool == false)
        #expect((document?["problems"] as? [[String: Any]])?.compactMap { $0["line"] as? Int } == [8, 13])

        let good = dir + "/good.toml"
        try ConfigLoader.embeddedDefault.write(toFile: good, atomically: true, encoding: .utf8)
        let clean = try run([good])
        #expect(clean.status == 0, "\(clean.output)")
        #expect(clean.output.contains("\(good): OK (0 errors, 1 warning)"), "\(clean.output)")
        #expect(try run(["--strict", good]).status == 1)
        #expect(try run([dir + "/missing.toml"]).status == 2)
        // With a token hash for every principal the policy version is known offline, and it is the one brokerd runs.
        let hashed = dir + "/hashed.toml"
        let withHashes = try ConfigLoader.parse(ConfigLoader.embeddedDefault).principals.reduce(ConfigLoader.embeddedDefault) {
            text, principal in
            text.replacingOccurrences(
                of: "client_id = \"\(principal.clientID)\"\n",
                with: "client_id = \"\(principal.clientID)\"\ntoken_hash = \"\(Credentials.hash(token: principal.clientID))\"\n"
            )
        }
        try withHashes.write(toFile: hashed, atomically: true, encoding: .utf8)
        let versioned = try run([hashed])
        let expected = try Policy(config: try ConfigLoader.parse(withHashes)).policyVersion
        #expect(versioned.output.contains("policy version: \(expected)"), "\(versioned.output)")
    }

    @Test("crash consistency: brokerd SIGKILLed under load 3 times loses, duplicates and corrupts nothing (brokersoak)")
    func shortSoak() async throws {
        let brokerd = Self.brokerdPath
        let soak = URL(fileURLWithPath: brokerd).deletingLastPathComponent().appendingPathComponent("brokersoak").path
        let dataDir = TestBroker.makeTempDir()
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let process = try ChildProcess.launch(
            soak,
            ["--cycles", "3", "--brokerd", brokerd, "--data-dir", dataDir, "--min-run-ms", "300", "--max-run-ms", "900"]
        )
        // Bounded: three cycles take seconds; a hung soak is killed after two minutes.
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(120))
        while process.isRunning, clock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
        process.signal(SIGKILL)
        let status = process.waitUntilExit()
        _ = process.waitForOutput()
        let text = process.output.text
        #expect(status == 0, "brokersoak output:\n\(text)")
        #expect(text.contains("cycles=3 "), "\(text)")
        #expect(text.contains("lost=0 duplicated=0 corrupt=0 misplaced=0 commit_regressions=0 forgotten_keys=0"), "\(text)")
        #expect(!text.contains("VIOLATION"), "\(text)")
        // It really ran: records were acknowledged before the kills.
        let acked = text.firstMatch(of: /acked=(\d+)/).flatMap { Int($0.1) } ?? 0
        #expect(acked > 0, "\(text)")
    }
}
