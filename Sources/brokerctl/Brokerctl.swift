import ArgumentParser
import BrokerClient
import Foundation
import NIOCore
import TopicRouter
import WireProtocol

/// brokerctl: publish, subscribe and inspect a running brokerd.
@main
struct Brokerctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "brokerctl",
        abstract: "Talk to a running brokerd.",
        discussion: """
            Identity comes from --client-id/--token, or --credentials FILE --as PRINCIPAL (the file brokerd writes \
            on first start), or the environment: BROKERD_SERVER, BROKERD_CLIENT_ID, BROKERD_TOKEN, \
            BROKERD_CREDENTIALS, BROKERD_AS. Against a TLS broker give --tls-ca (env BROKERD_TLS_CA); with mutual \
            TLS, --tls-cert and --tls-key (env BROKERD_TLS_CERT, BROKERD_TLS_KEY) are the identity and no token is \
            needed. Errors print the error code name and message and exit non-zero. Results print as aligned \
            tables; --json prints one JSON document instead (subscribe, quarantine list and audit tail, which print \
            records, print one JSON object per record). Shell completions: \
            brokerctl --generate-completion-script bash|zsh|fish.
            """,
        subcommands: [
            PublishCommand.self, SubscribeCommand.self, TopicsCommand.self, GroupsCommand.self, StatCommand.self,
            QuarantineCommand.self, AuditCommand.self, AdminCommand.self, LimitsCommand.self,
        ]
    )
}

/// How to reach the broker and who to be.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Broker address HOST:PORT (env BROKERD_SERVER; default 127.0.0.1:7420).")
    var server: String?

    @Option(name: .long, help: "Client id (env BROKERD_CLIENT_ID).")
    var clientID: String?

    @Option(name: .long, help: "Token (env BROKERD_TOKEN).")
    var token: String?

    @Option(name: .long, help: "Credentials file written by brokerd (env BROKERD_CREDENTIALS).")
    var credentials: String?

    @Option(name: .customLong("as"), help: "Principal to take from the credentials file (env BROKERD_AS).")
    var principal: String?

    @Option(name: .long, help: "Connect with TLS, trusting the CA certificates in this PEM file (env BROKERD_TLS_CA).")
    var tlsCa: String?

    @Option(name: .long, help: "Client certificate PEM file for mutual TLS; needs --tls-key (env BROKERD_TLS_CERT).")
    var tlsCert: String?

    @Option(name: .long, help: "Private key PEM file of --tls-cert (env BROKERD_TLS_KEY).")
    var tlsKey: String?

    @Option(
        name: .long,
        help: ArgumentHelp(
            "Name the broker's certificate must carry (default: the --server host; a certificate for the IP address "
                + "connected to is accepted too)."
        )
    )
    var tlsServerName: String?

    /// The TLS settings, or nil for plaintext: any --tls-* option (or its environment variable) turns TLS on.
    func tls(environment env: [String: String]) throws -> BrokerClientTLS? {
        let ca = self.tlsCa ?? env["BROKERD_TLS_CA"]
        let cert = self.tlsCert ?? env["BROKERD_TLS_CERT"]
        let key = self.tlsKey ?? env["BROKERD_TLS_KEY"]
        guard ca != nil || cert != nil || key != nil || self.tlsServerName != nil else { return nil }
        guard (cert == nil) == (key == nil) else {
            throw CLIError("--tls-cert and --tls-key go together")
        }
        return BrokerClientTLS(caFile: ca, certFile: cert, keyFile: key, serverName: self.tlsServerName)
    }

    func connect() async throws -> BrokerClient {
        let env = ProcessInfo.processInfo.environment
        let address = self.server ?? env["BROKERD_SERVER"] ?? "127.0.0.1:7420"
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw CLIError("--server wants HOST:PORT, got '\(address)'")
        }
        let host = String(address[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        var clientID = self.clientID ?? env["BROKERD_CLIENT_ID"]
        var token = self.token ?? env["BROKERD_TOKEN"]
        // An identity given on the command line wins over a credentials file named only in the environment.
        let explicit = self.clientID != nil || self.token != nil
        if let file = self.credentials ?? (explicit ? nil : env["BROKERD_CREDENTIALS"]) {
            guard let principal = self.principal ?? env["BROKERD_AS"] ?? clientID else {
                throw CLIError("--credentials needs --as PRINCIPAL")
            }
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                throw CLIError("cannot read credentials file \(file): \(error.localizedDescription)")
            }
            let tokens = try Credentials.parseCredentials(text)
            guard let found = tokens[principal] else {
                throw CLIError("no principal '\(principal)' in \(file); it has: \(tokens.keys.sorted().joined(separator: ", "))")
            }
            clientID = principal
            token = found
        }
        let tls = try self.tls(environment: env)
        if tls?.certFile != nil {
            // Mutual TLS: the certificate is the identity; a client id, if given, must be the one it maps to.
            clientID = clientID ?? ""
            token = token ?? ""
        }
        guard let clientID, let token else {
            throw CLIError(
                "no identity: give --client-id and --token, --credentials FILE --as PRINCIPAL, or (mutual TLS) "
                    + "--tls-cert and --tls-key"
            )
        }
        return try await BrokerClient.connect(host: host, port: port, clientID: clientID, token: token, tls: tls)
    }
}

/// A usage or environment error (exit 2), as opposed to a broker error (exit 1).
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a command body, printing broker errors as `CODE_NAME: message` and exiting non-zero.
func runReportingErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as BrokerClientError {
        FileHandle.standardError.write(Data("\(error.code.name): \(error.message)\n".utf8))
        throw ExitCode(1)
    } catch let error as CLIError {
        FileHandle.standardError.write(Data("error: \(error.description)\n".utf8))
        throw ExitCode(2)
    } catch let error as ConfigError {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(2)
    }
}

struct PublishCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish",
        abstract: "Publish one record per line of standard input; print one result line per record."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Topic to publish to.")
    var topic: String

    @Option(name: .long, help: "Record key for every record.")
    var key: String?

    @Option(name: .long, help: "Header NAME=VALUE for every record (repeatable).")
    var header: [String] = []

    @Option(name: .long, help: "Records per PUBLISH request.")
    var batch: Int = 100

    @Flag(name: .long, help: "One JSON document at the end: {\"results\":[...]}, one result per record.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            var headers: [WireHeader] = []
            for item in self.header {
                guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                    throw CLIError("--header wants NAME=VALUE, got '\(item)'")
                }
                headers.append(WireHeader(name: String(item[..<eq]), value: ByteBuffer(string: String(item[item.index(after: eq)...]))))
            }
            let client = try await self.connection.connect()
            var failures = 0
            var pending: [WireRecord] = []
            var collected: [JSON] = []
            func flush() async throws {
                guard !pending.isEmpty else { return }
                let results = try await client.publish(topic: self.topic, records: pending)
                for result in results {
                    if result.code != .ok { failures += 1 }
                    if self.json {
                        collected.append(publishResultJSON(result))
                    } else if result.code == .ok {
                        print("offset=\(result.offset)" + (result.isDuplicate ? " duplicate" : ""))
                    } else if result.code == .quarantined {
                        print("QUARANTINED quarantine_offset=\(result.offset)" + (result.isDuplicate ? " duplicate" : "") + ": \(result.message)")
                    } else {
                        print("\(result.code.name): \(result.message)")
                    }
                }
                pending.removeAll(keepingCapacity: true)
            }
            while let line = readLine(strippingNewline: true) {
                pending.append(WireRecord(key: self.key.map { ByteBuffer(string: $0) }, headers: headers, value: ByteBuffer(string: line)))
                if pending.count >= max(1, self.batch) {
                    do { try await flush() } catch {
                        await client.close()
                        throw error
                    }
                }
            }
            do {
                try await flush()
            } catch {
                await client.close()
                throw error
            }
            await client.close()
            if self.json { JSON.object([("results", .array(collected))]).print() }
            if failures > 0 { throw ExitCode(1) }
        }
    }
}

struct SubscribeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "subscribe",
        abstract: "Print records of a topic as they arrive."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "Topic to subscribe to.")
    var topic: String

    @Option(name: .long, help: "Start: earliest, latest, committed (needs --group), or an offset.")
    var from: String = "earliest"

    @Option(name: .long, help: "Consumer group; its offset is committed as records are printed.")
    var group: String?

    @Option(name: .long, help: "Exit after this many records.")
    var count: Int?

    @Flag(name: .long, help: "One JSON object per record.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let start: StartPosition
            switch self.from {
            case "earliest": start = .earliest
            case "latest": start = .latest
            case "committed": start = .committed
            default:
                guard let offset = Int64(self.from), offset >= 0 else {
                    throw CLIError("--from wants earliest, latest, committed or an offset, got '\(self.from)'")
                }
                start = .offset(offset)
            }
            if let count = self.count, count <= 0 { return }
            let client = try await self.connection.connect()
            let subscription = try await client.subscribe(topic: self.topic, group: self.group ?? "", start: start)
            var seen = 0
            for try await delivered in subscription {
                print(self.json ? jsonLine(delivered) : textLine(delivered))
                seen += 1
                let done = self.count.map { seen >= $0 } ?? false
                if let group = self.group, done || seen % 100 == 0 {
                    try await client.commit(group: group, topic: self.topic, offset: delivered.offset + 1)
                }
                if done { break }
            }
            await client.close()
        }
    }
}

/// One PublishResult as JSON: `offset` is the record's offset in its topic, or in `__quarantine` when QUARANTINED.
func publishResultJSON(_ result: PublishResult) -> JSON {
    .object([
        ("code", .string(result.code.name)), ("offset", .nonNegative(result.offset)),
        ("duplicate", .bool(result.isDuplicate)), ("retry_after_ms", .int(Int64(result.retryAfterMillis))),
        ("message", .string(result.message)),
    ])
}

func textLine(_ delivered: DeliveredRecord) -> String {
    let value = String(decoding: delivered.record.value.readableBytesView, as: UTF8.self)
    let key = delivered.record.key.map { " key=" + String(decoding: $0.readableBytesView, as: UTF8.self) } ?? ""
    return "\(delivered.offset)\(key) \(value)"
}

func jsonLine(_ delivered: DeliveredRecord) -> String {
    let record = delivered.record
    let headers = record.headers.map { "\(JSONText.quoted($0.name)):\(JSONText.quoted(String(decoding: $0.value.readableBytesView, as: UTF8.self)))" }
    let key = record.key.map { JSONText.quoted(String(decoding: $0.readableBytesView, as: UTF8.self)) } ?? "null"
    let value = JSONText.quoted(String(decoding: record.value.readableBytesView, as: UTF8.self))
    return "{\"offset\":\(delivered.offset),\"timestamp\":\(record.timestamp),\"key\":\(key),\"headers\":{\(headers.joined(separator: ","))},\"value\":\(value)}"
}
