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

    @Flag(name: .long, help: "One JSON object per limiter.")
    var json = false

    func run() async throws {
        try await runReportingErrors {
            let client = try await self.connection.connect()
            let states = try await client.limits(limiter: self.limiter, key: self.key)
            await client.close()
            if self.json {
                for state in states {
                    var fields = [
                        "\"limiter\":\(JSONText.quoted(state.limiter))",
                        "\"direction\":\(JSONText.quoted(state.direction == 0 ? "publish" : "delivery"))",
                        "\"key_kind\":\(JSONText.quoted(state.keyKind))", "\"action\":\(JSONText.quoted(state.action))",
                        "\"limit\":\(JSONText.quoted(state.limit))", "\"keys_held\":\(state.keysHeld)",
                        "\"capacity\":\(state.capacity)",
                    ]
                    if !state.stateKey.isEmpty {
                        fields += [
                            "\"key\":\(JSONText.quoted(state.stateKey))", "\"used\":\(state.used)",
                            "\"retry_after_ms\":\(state.retryAfterMillis)",
                        ]
                    }
                    print("{" + fields.joined(separator: ",") + "}")
                }
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
