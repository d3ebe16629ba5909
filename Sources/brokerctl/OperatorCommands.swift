import ArgumentParser
import BrokerClient
import Foundation
import NIOCore
import WireProtocol

/// Reads a reserved topic from `start` up to its end at subscribe time, calling `body` for each record.
func readToEnd(
    _ client: BrokerClient,
    topic: String,
    from start: StartPosition,
    body: (DeliveredRecord) throws -> Bool
) async throws {
    let subscription = try await client.subscribe(topic: topic, start: start, credit: 1024)
    guard subscription.info.startOffset < subscription.info.endOffset else { return }
    for try await record in subscription {
        guard try body(record) else { return }
        if record.offset + 1 >= subscription.info.endOffset { return }
    }
}

extension DeliveredRecord {
    /// The first header with this name, as text.
    func header(_ name: String) -> String? {
        self.record.headers.first { $0.name == name }.map { String(decoding: $0.value.readableBytesView, as: UTF8.self) }
    }

    var valueText: String { String(decoding: self.record.value.readableBytesView, as: UTF8.self) }
}

/// Milliseconds since the epoch as an ISO 8601 UTC time.
func isoTime(millis: String?) -> String {
    guard let millis, let value = Double(millis) else { return "-" }
    return ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: value / 1000))
}

struct QuarantineCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quarantine",
        abstract: "Review and replay records that failed policy (needs quarantine.read / quarantine.replay).",
        subcommands: [QuarantineList.self, QuarantineShow.self, QuarantineReplay.self]
    )
}

/// Filters on quarantined records.
struct QuarantineFilter: ParsableArguments {
    @Option(name: .long, help: "Only records published to this topic.")
    var topic: String?

    @Option(name: .long, help: "Only records quarantined for this reason code (e.g. FORBIDDEN_FIELD).")
    var reason: String?

    func matches(_ record: DeliveredRecord) -> Bool {
        (self.topic == nil || record.header(RecordHeaderName.quarantineTopic) == self.topic)
            && (self.reason == nil || record.header(RecordHeaderName.quarantineReason) == self.reason)
    }
}

struct QuarantineList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List quarantined records.")

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var filter: QuarantineFilter

    @Flag(name: .long, help: "One JSON object per record.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            var rows: [[String]] = []
            try await readToEnd(client, topic: ReservedTopic.quarantine, from: .earliest) { record in
                guard self.filter.matches(record) else { return true }
                if self.json {
                    print(jsonLine(record))
                } else {
                    rows.append([
                        "\(record.offset)", isoTime(millis: record.header(RecordHeaderName.quarantineTime)),
                        record.header(RecordHeaderName.quarantineTopic) ?? "-",
                        record.header(RecordHeaderName.quarantineProducer) ?? "-",
                        record.header(RecordHeaderName.quarantineReason) ?? "-",
                        record.header(RecordHeaderName.quarantineMessage) ?? "",
                    ])
                }
                return true
            }
            await client.close()
            if !self.json { printTable(["OFFSET", "TIME", "TOPIC", "PRODUCER", "REASON", "MESSAGE"], rows) }
        }
    }
}

struct QuarantineShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Show one quarantined record whole.")

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Its offset in __quarantine.")
    var offset: Int64

    @Flag(name: .long, help: "As one JSON object.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            var found: DeliveredRecord?
            try await readToEnd(client, topic: ReservedTopic.quarantine, from: .offset(self.offset)) { record in
                if record.offset == self.offset { found = record }
                return false
            }
            await client.close()
            guard let record = found else { throw CLIError("no record at offset \(self.offset) of __quarantine") }
            if self.json {
                print(jsonLine(record))
                return
            }
            print("offset     \(record.offset)")
            print("timestamp  \(isoTime(millis: String(record.record.timestamp)))")
            if let key = record.record.key { print("key        \(String(decoding: key.readableBytesView, as: UTF8.self))") }
            for header in record.record.headers {
                print("header     \(header.name) = \(String(decoding: header.value.readableBytesView, as: UTF8.self))")
            }
            print("value      \(record.valueText)")
        }
    }
}

struct QuarantineReplay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Re-evaluate quarantined records under the current policy; append those that now pass (at most once)."
    )

    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var filter: QuarantineFilter

    @Argument(help: "Offsets in __quarantine.")
    var offsets: [Int64] = []

    @Flag(name: .long, help: "Replay every quarantined record matching --topic/--reason.")
    var allMatching = false

    @Flag(name: .long, help: "One JSON document: {\"results\":[...]}, one result per offset.")
    var json = false

    func validate() throws {
        // Exactly one of the two: offsets given, or --all-matching.
        guard self.offsets.isEmpty == self.allMatching else {
            throw ValidationError("give OFFSET... or --all-matching [--topic T] [--reason R], not both")
        }
    }

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            var offsets = self.offsets
            if self.allMatching {
                try await readToEnd(client, topic: ReservedTopic.quarantine, from: .earliest) { record in
                    if self.filter.matches(record) { offsets.append(record.offset) }
                    return true
                }
            }
            var failures = 0
            var collected: [JSON] = []
            let chunk = Int(client.session.maxRecordsPerPublish)
            for start in stride(from: 0, to: offsets.count, by: chunk) {
                for result in try await client.replay(offsets: Array(offsets[start..<min(start + chunk, offsets.count)])) {
                    let earlier = result.isEarlier ? " (replayed earlier)" : ""
                    if self.json {
                        if result.outcome != .replayed { failures += 1 }
                        collected.append(replayResultJSON(result))
                        continue
                    }
                    switch result.outcome {
                    case .replayed:
                        print("\(result.quarantineOffset): REPLAYED to \(result.topic) offset=\(result.newOffset)\(earlier)")
                    case .stillQuarantined:
                        failures += 1
                        print("\(result.quarantineOffset): STILL_QUARANTINED \(result.reason): \(result.message)\(earlier)")
                    default:
                        failures += 1
                        print("\(result.quarantineOffset): \(result.outcome): \(result.message)")
                    }
                }
            }
            await client.close()
            if self.json { JSON.object([("results", .array(collected))]).print() }
            if failures > 0 { throw ExitCode(1) }
        }
    }
}

func replayResultJSON(_ result: ReplayResult) -> JSON {
    .object([
        ("quarantine_offset", .int(result.quarantineOffset)), ("outcome", .string("\(result.outcome)")),
        ("earlier", .bool(result.isEarlier)), ("topic", .string(result.topic)),
        ("new_offset", .nonNegative(result.newOffset)), ("reason", .string(result.reason)),
        ("message", .string(result.message)),
    ])
}

struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Read the audit ledger (needs audit.read).",
        subcommands: [AuditTail.self]
    )
}

struct AuditTail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "tail", abstract: "The newest audit entries.")

    @OptionGroup var connection: ConnectionOptions

    @Option(name: .long, help: "How many entries (the newest that match).")
    var count: Int = 20

    @Option(name: .long, help: "Only entries of this principal.")
    var principal: String?

    @Option(name: .long, help: "Only entries about this topic.")
    var topic: String?

    @Flag(name: .long, help: "The stored JSON objects, one per line.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            guard self.count > 0 else { throw CLIError("--count wants at least 1") }
            let client = try await self.connection.connect()
            var newest: [(offset: Int64, entry: [String: Any], text: String)] = []
            try await readToEnd(client, topic: ReservedTopic.audit, from: .earliest) { record in
                let text = record.valueText
                guard let entry = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
                    return true
                }
                if let principal = self.principal, entry["principal"] as? String != principal { return true }
                if let topic = self.topic, entry["topic"] as? String != topic { return true }
                newest.append((record.offset, entry, text))
                if newest.count > self.count { newest.removeFirst() }
                return true
            }
            await client.close()
            if self.json {
                for item in newest { print(item.text) }
                return
            }
            let rows = newest.map { item -> [String] in
                let entry = item.entry
                func text(_ key: String) -> String { (entry[key] as? String).flatMap { $0.isEmpty ? nil : $0 } ?? "-" }
                let count = (entry["count"] as? Int).map { " ×\($0)" } ?? ""
                return [
                    isoTime(millis: (entry["time"] as? NSNumber).map { "\($0.int64Value)" }), text("principal"),
                    text("action") + count, text("topic"), text("decision"), text("reason"), text("rule"),
                    text("policy_version"),
                ]
            }
            printTable(["TIME", "PRINCIPAL", "ACTION", "TOPIC", "DECISION", "REASON", "RULE", "POLICY"], rows)
        }
    }
}

struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Administrative requests (needs the admin capability).",
        subcommands: [AdminReload.self]
    )
}

struct AdminReload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload",
        abstract: "Re-read the broker's config file and apply it atomically (the same as SIGHUP)."
    )

    @OptionGroup var connection: ConnectionOptions

    @Flag(name: .long, help: "One JSON document: {\"policy_version\":...,\"message\":...}.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            let ok: ReloadOK
            do {
                ok = try await client.reload()
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if self.json {
                JSON.object([("policy_version", .string(ok.policyVersion)), ("message", .string(ok.message))]).print()
            } else {
                print("policy \(ok.policyVersion): \(ok.message)")
            }
        }
    }
}
