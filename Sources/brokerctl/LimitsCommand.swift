import ArgumentParser
import BrokerClient
import WireProtocol

struct LimitsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "limits",
        abstract: "Rate limiters and contact caps (needs the admin capability).",
        subcommands: [LimitsShow.self]
    )
}

struct LimitsShow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Every limiter, or one; with --key, how much of its limit that key has used and when it may go again."
    )

    @OptionGroup var connection: ConnectionOptions

    @Argument(help: "A limiter name (default: every limiter).")
    var limiter: String = ""

    @Option(name: .long, help: "A key: a recipient, a consent scope, a client id, a class ...")
    var key: String = ""

    @Flag(name: .long, help: "One JSON document: {\"limiters\":[...]}.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            let states = try await client.limits(limiter: self.limiter, key: self.key)
            await client.close()
            if self.json {
                let limiters = states.map { state -> JSON in
                    var fields: [(String, JSON)] = [
                        ("limiter", .string(state.limiter)),
                        ("direction", .string(state.direction == 0 ? "publish" : "delivery")),
                        ("key_kind", .string(state.keyKind)), ("action", .string(state.action)),
                        ("limit", .string(state.limit)), ("keys_held", .int(Int64(state.keysHeld))),
                        ("capacity", .int(state.capacity)),
                    ]
                    if !state.stateKey.isEmpty {
                        fields += [
                            ("key", .string(state.stateKey)), ("used", .int(state.used)),
                            ("retry_after_ms", .int(Int64(state.retryAfterMillis))),
                        ]
                    }
                    return .object(fields)
                }
                JSON.object([("limiters", .array(limiters))]).print()
                return
            }
            var header = ["LIMITER", "DIRECTION", "KEY", "ACTION", "LIMIT", "KEYS"]
            if !self.key.isEmpty { header += ["USED", "RETRY_AFTER"] }
            let rows = states.map { state -> [String] in
                var row = [
                    state.limiter, state.direction == 0 ? "publish" : "delivery", state.keyKind, state.action,
                    state.limit, "\(state.keysHeld)",
                ]
                if !self.key.isEmpty {
                    row += ["\(state.used)/\(state.capacity)", state.retryAfterMillis == 0 ? "now" : "\(state.retryAfterMillis) ms"]
                }
                return row
            }
            printTable(header, rows)
        }
    }
}
