import LogStore
import TopicRouter
import WireProtocol

/// Splits one PUBLISH by the policy's verdicts into records for its topic (stamped with provenance headers) and
/// records for `__quarantine` (with the quarantine headers), then maps the two appends' base offsets back to one
/// result per record, in the request's order. Pure: no I/O.
struct PublishSorter {
    struct Accepted {
        var index: Int
        var record: LogRecord
    }

    struct Quarantined {
        var index: Int
        var record: LogRecord
        var reason: String
        var rule: String
        var message: String
    }

    /// A record refused on its own (the request as a whole was allowed): not appended anywhere.
    struct Refused {
        var index: Int
        var code: ErrorCode
        var message: String
    }

    private(set) var accepted: [Accepted] = []
    private(set) var quarantined: [Quarantined] = []
    private(set) var refused: [Refused] = []
    let count: Int

    /// Sorts `publish`, whose topic the principal may publish to (the caller checked `publishDecision`).
    static func sort(_ publish: Publish, principal: Principal, policy: Policy, receivedAtMillis: Int64) -> PublishSorter {
        var sorter = PublishSorter(count: publish.records.count)
        let receivedAt = String(receivedAtMillis)
        for (index, wire) in publish.records.enumerated() {
            let verdict = wire.value.withUnsafeReadableBytes {
                policy.recordVerdict(topic: publish.topic, headers: wire.headers, value: $0)
            }
            var record = LogRecord(wire: wire, receivedAtMillis: receivedAtMillis)
            switch verdict {
            case .accept:
                record.headers += [
                    LogHeader(RecordHeaderName.brokerReceivedAt, receivedAt),
                    LogHeader(RecordHeaderName.brokerProducer, principal.clientID),
                    LogHeader(RecordHeaderName.brokerPolicyVersion, policy.policyVersion),
                ]
                sorter.accepted.append(Accepted(index: index, record: record))
            case .quarantine(let reason, let rule, let message):
                record.headers += [
                    LogHeader(RecordHeaderName.quarantineTopic, publish.topic),
                    LogHeader(RecordHeaderName.quarantineProducer, principal.clientID),
                    LogHeader(RecordHeaderName.quarantineTime, receivedAt),
                    LogHeader(RecordHeaderName.quarantineReason, reason.rawValue),
                    LogHeader(RecordHeaderName.quarantineRule, rule),
                    LogHeader(RecordHeaderName.quarantinePolicyVersion, policy.policyVersion),
                    LogHeader(RecordHeaderName.quarantineMessage, message),
                ]
                sorter.quarantined.append(
                    Quarantined(index: index, record: record, reason: reason.rawValue, rule: rule, message: message)
                )
            case .refuse(let code, let reason, _):
                sorter.refused.append(Refused(index: index, code: ErrorCode(code), message: reason))
            }
        }
        return sorter
    }

    /// One result per record: OK with its topic offset, QUARANTINED with its `__quarantine` offset and the reason,
    /// or the refusal. The bases are the first offsets the two appends were given (ignored when nothing was sent).
    func results(acceptedBase: Int64, quarantinedBase: Int64) -> [PublishResult] {
        var results = [PublishResult](repeating: PublishResult(code: .internal, offset: -1), count: self.count)
        for (position, entry) in self.accepted.enumerated() {
            results[entry.index] = .ok(offset: acceptedBase + Int64(position))
        }
        for (position, entry) in self.quarantined.enumerated() {
            results[entry.index] = PublishResult(
                code: .quarantined,
                offset: quarantinedBase + Int64(position),
                message: "\(entry.reason): \(entry.message) (rule \(entry.rule))"
            )
        }
        for entry in self.refused {
            results[entry.index] = PublishResult(code: entry.code, offset: -1, message: entry.message)
        }
        return results
    }
}
