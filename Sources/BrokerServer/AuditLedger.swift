import Logging
import LogStore
import NIOCore
import WireProtocol

/// One audited decision (docs/PROTOCOL.md 8.5).
struct AuditEntry: Equatable, Sendable {
    var time: Int64
    var principal: String
    var action: String
    var topic: String
    var decision: String
    var reason: String = ""
    var rule: String = ""
    var policyVersion: String
    var count: Int = 1
    var detail: String = ""

    /// The entry as the one-line JSON object stored as the `__audit` record's value.
    var json: String {
        var text = "{\"time\":\(self.time)"
        text += ",\"principal\":" + JSONText.quoted(self.principal)
        text += ",\"action\":" + JSONText.quoted(self.action)
        text += ",\"topic\":" + JSONText.quoted(self.topic)
        text += ",\"decision\":" + JSONText.quoted(self.decision)
        text += ",\"reason\":" + JSONText.quoted(self.reason)
        text += ",\"rule\":" + JSONText.quoted(self.rule)
        text += ",\"policy_version\":" + JSONText.quoted(self.policyVersion)
        if self.count != 1 { text += ",\"count\":\(self.count)" }
        text += ",\"detail\":" + JSONText.quoted(self.detail)
        return text + "}"
    }
}

/// Appends audit entries to the reserved `__audit` topic through its ordered, group-committing appender.
///
/// `record` never blocks and never fails the decision it records: the decision has been made; a ledger write that
/// fails (the audit log's storage failed) is logged at error level with the whole entry.
final class AuditLedger: Sendable {
    private let appender: TopicAppender
    private let metrics: BrokerMetrics
    private let logger: Logger

    init(appender: TopicAppender, metrics: BrokerMetrics, logger: Logger) {
        self.appender = appender
        self.metrics = metrics
        self.logger = logger
    }

    /// Queues the entry for the ledger; it is durable once the `__audit` append it joins completes.
    func record(_ entry: AuditEntry) {
        let record = LogRecord(key: nil, headers: [], value: ByteBuffer(string: entry.json), timestamp: entry.time)
        let logger = self.logger
        let metrics = self.metrics
        self.appender.enqueue([record]) { result in
            switch result {
            case .success:
                metrics.auditWritten(entry.action)
            case .failure(let error):
                metrics.auditFailures.increment()
                logger.error(
                    "audit entry not written",
                    metadata: ["brokerd.error": "\(error)", "brokerd.audit_entry": "\(entry.json)"]
                )
            }
        }
    }
}
