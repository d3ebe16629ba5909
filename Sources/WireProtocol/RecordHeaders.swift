/// Names of the record headers the broker reads and writes (docs/PROTOCOL.md, "Record headers the broker reads and
/// writes"). Names are lowercase ASCII; values are UTF-8 text.
package enum RecordHeaderName {
    // MARK: set by producers, read by the broker

    /// Deduplication key, 1 to `maxDedupeKeyBytes` bytes: a second record with the same key within the topic's
    /// dedupe window is not appended; its result carries `PublishResult.duplicateFlag` and the original offset.
    package static let dedupeKey = "dedupe-key"
    /// What happened, e.g. `education.completed`.
    package static let eventType = "event_type"
    /// The producing system, kept as the producer set it.
    package static let sourceSystem = "source_system"
    /// One or more consent scopes, comma-separated, e.g. `treatment_support,educational`.
    package static let consentScope = "consent_scope"
    /// The intended recipient, when the event has one.
    package static let recipient = "recipient"

    // MARK: set by the broker on every accepted record

    /// The prefix of every broker-stamped header; a producer's record carrying one is quarantined
    /// (reason `RESERVED_HEADER`).
    package static let brokerPrefix = "broker-"
    /// The broker's receive time, milliseconds since the Unix epoch, decimal.
    package static let brokerReceivedAt = "broker-received-at"
    /// The producer's client id.
    package static let brokerProducer = "broker-producer"
    /// The policy version that accepted the record.
    package static let brokerPolicyVersion = "broker-policy-version"

    // MARK: added to a record appended by a quarantine replay

    /// The record's offset in `__quarantine`, decimal.
    package static let replayedFrom = "replayed-from"
    /// The client id of the operator who replayed it.
    package static let replayedBy = "replayed-by"
    /// The policy version that accepted the replay.
    package static let replayPolicyVersion = "replay-policy-version"

    // MARK: on `__quarantine` records

    /// The topic the record was published to.
    package static let quarantineTopic = "quarantine-topic"
    /// The producer's client id.
    package static let quarantineProducer = "quarantine-producer"
    /// When the broker quarantined it, milliseconds since the Unix epoch, decimal.
    package static let quarantineTime = "quarantine-time"
    /// The stable reason code, e.g. `FORBIDDEN_FIELD`.
    package static let quarantineReason = "quarantine-reason"
    /// The id of the rule that fired.
    package static let quarantineRule = "quarantine-rule"
    /// The policy version that refused it.
    package static let quarantinePolicyVersion = "quarantine-policy-version"
    /// Human-readable detail.
    package static let quarantineMessage = "quarantine-message"

    /// Longest `dedupe-key` value in bytes.
    package static let maxDedupeKeyBytes = 256

    /// Headers a producer sets and the broker reads.
    package static let producerSet: [String] = [
        Self.dedupeKey, Self.eventType, Self.sourceSystem, Self.consentScope, Self.recipient,
    ]
    /// Headers the broker stamps on every accepted record.
    package static let brokerSet: [String] = [Self.brokerReceivedAt, Self.brokerProducer, Self.brokerPolicyVersion]
    /// Headers the broker adds to a replayed record.
    package static let replaySet: [String] = [Self.replayedFrom, Self.replayedBy, Self.replayPolicyVersion]
    /// Headers the broker adds to a `__quarantine` record, in the order it appends them.
    package static let quarantineSet: [String] = [
        Self.quarantineTopic, Self.quarantineProducer, Self.quarantineTime, Self.quarantineReason,
        Self.quarantineRule, Self.quarantinePolicyVersion, Self.quarantineMessage,
    ]
}

/// The reserved topics the broker writes itself. Never publishable by clients (NOT_AUTHORIZED).
package enum ReservedTopic {
    /// Records that failed policy, with their `quarantine-*` headers. Readable with capability `quarantine.read`.
    package static let quarantine = "__quarantine"
    /// The audit ledger, one JSON object per record. Readable with capability `audit.read`.
    package static let audit = "__audit"
}

/// The `action` values of `__audit` entries (docs/PROTOCOL.md section 8.5).
package enum AuditAction {
    /// HELLO accepted.
    package static let authSuccess = "auth.success"
    /// HELLO refused.
    package static let authFailure = "auth.failure"
    /// SUBSCRIBE allowed.
    package static let subscribeAllow = "subscribe.allow"
    /// SUBSCRIBE refused.
    package static let subscribeRefuse = "subscribe.refuse"
    /// PUBLISH refused as a whole.
    package static let publishRefuse = "publish.refuse"
    /// A published record was quarantined.
    package static let publishQuarantine = "publish.quarantine"
    /// Records withheld from a subscriber for consent (aggregated, with `count`).
    package static let deliveryWithhold = "delivery.withhold"
    /// A live subscription ended because the policy no longer allows it.
    package static let subscriptionRevoke = "subscription.revoke"
    /// One quarantined record was replayed (whatever the outcome).
    package static let quarantineReplay = "quarantine.replay"
    /// A config reload was applied.
    package static let configReloadAccept = "config.reload.accept"
    /// A config reload was rejected; the old policy stays.
    package static let configReloadReject = "config.reload.reject"
    /// Records a limiter rejected, quarantined or delayed (aggregated per limiter and decision, with `count`).
    package static let limiterExceeded = "limiter.exceeded"

    /// Every action, in the order docs/PROTOCOL.md lists them.
    package static let all: [String] = [
        Self.authSuccess, Self.authFailure, Self.subscribeAllow, Self.subscribeRefuse, Self.publishRefuse,
        Self.publishQuarantine, Self.deliveryWithhold, Self.subscriptionRevoke, Self.quarantineReplay,
        Self.configReloadAccept, Self.configReloadReject, Self.limiterExceeded,
    ]
}
