/// The stable rule ids that decisions carry, for the audit ledger and for operators.
///
/// Every decision names the rule that produced it. Rule ids are dotted lowercase strings and never change
/// meaning; new rules get new ids.
///
/// | rule id | decision | outcome |
/// |---|---|---|
/// | `subscribe.unknown_topic` | subscribe | UNKNOWN_TOPIC: the topic is neither declared nor reserved |
/// | `subscribe.role` | subscribe | NOT_CLEARED: the principal's role is not in this policy |
/// | `subscribe.pattern` | subscribe | NOT_CLEARED: no `subscribe` pattern of the role matches |
/// | `subscribe.clearance` | subscribe | NOT_CLEARED: the topic's class is above the role's clearance |
/// | `subscribe.purpose` | subscribe | NOT_CLEARED: the role and the topic share no purpose |
/// | `subscribe.capability` | subscribe | reserved topic: allowed, or NOT_CLEARED for lack of the capability |
/// | `subscribe.allowed` | subscribe | allowed: pattern, clearance and purpose all hold |
/// | `publish.unknown_topic` | publish | UNKNOWN_TOPIC |
/// | `publish.reserved_topic` | publish | NOT_AUTHORIZED: `__quarantine` and `__audit` are written by the broker only |
/// | `publish.role` | publish | NOT_AUTHORIZED: the principal's role is not in this policy |
/// | `publish.pattern` | publish | NOT_AUTHORIZED: no `publish` pattern matches |
/// | `record.reserved_header` | publish | quarantine RESERVED_HEADER |
/// | `record.dedupe_key` | publish | quarantine INVALID_DEDUPE_KEY |
/// | `topic.required_headers` | publish | quarantine MISSING_HEADER |
/// | `topic.consent_scopes` | publish | quarantine CONSENT_SCOPE_NOT_ALLOWED |
/// | `topic.payload_json` | publish | quarantine INVALID_JSON |
/// | `topic.forbidden_fields` | publish | quarantine FORBIDDEN_FIELD |
/// | `topic.allowed_fields` | publish | quarantine FIELD_NOT_ALLOWED |
/// | `delivery.consent_scope` | delivery | withheld: none of the record's scopes may be received by the role |
/// | `delivery.consent_missing` | delivery | withheld: the topic requires `consent_scope` and the record has none |
/// | `delivery.unknown_topic` | delivery | withheld: the topic is no longer declared |
/// | `delivery.role` | delivery | withheld: the subscriber's role is no longer in this policy |
package enum PolicyRule {
    /// See the table on `PolicyRule`.
    package static let subscribeUnknownTopic = "subscribe.unknown_topic"
    /// See the table on `PolicyRule`.
    package static let subscribeRole = "subscribe.role"
    /// See the table on `PolicyRule`.
    package static let subscribePattern = "subscribe.pattern"
    /// See the table on `PolicyRule`.
    package static let subscribeClearance = "subscribe.clearance"
    /// See the table on `PolicyRule`.
    package static let subscribePurpose = "subscribe.purpose"
    /// See the table on `PolicyRule`.
    package static let subscribeCapability = "subscribe.capability"
    /// See the table on `PolicyRule`.
    package static let subscribeAllowed = "subscribe.allowed"
    /// See the table on `PolicyRule`.
    package static let publishUnknownTopic = "publish.unknown_topic"
    /// See the table on `PolicyRule`.
    package static let publishReservedTopic = "publish.reserved_topic"
    /// See the table on `PolicyRule`.
    package static let publishRole = "publish.role"
    /// See the table on `PolicyRule`.
    package static let publishPattern = "publish.pattern"
    /// See the table on `PolicyRule`.
    package static let recordReservedHeader = "record.reserved_header"
    /// See the table on `PolicyRule`.
    package static let recordDedupeKey = "record.dedupe_key"
    /// See the table on `PolicyRule`.
    package static let topicRequiredHeaders = "topic.required_headers"
    /// See the table on `PolicyRule`.
    package static let topicConsentScopes = "topic.consent_scopes"
    /// See the table on `PolicyRule`.
    package static let topicPayloadJSON = "topic.payload_json"
    /// See the table on `PolicyRule`.
    package static let topicForbiddenFields = "topic.forbidden_fields"
    /// See the table on `PolicyRule`.
    package static let topicAllowedFields = "topic.allowed_fields"
    /// See the table on `PolicyRule`.
    package static let deliveryConsentScope = "delivery.consent_scope"
    /// See the table on `PolicyRule`.
    package static let deliveryConsentMissing = "delivery.consent_missing"
    /// See the table on `PolicyRule`.
    package static let deliveryUnknownTopic = "delivery.unknown_topic"
    /// See the table on `PolicyRule`.
    package static let deliveryRole = "delivery.role"

    /// Every rule id above, in table order.
    package static let all = [
        subscribeUnknownTopic, subscribeRole, subscribePattern, subscribeClearance, subscribePurpose,
        subscribeCapability, subscribeAllowed, publishUnknownTopic, publishReservedTopic, publishRole, publishPattern,
        recordReservedHeader, recordDedupeKey, topicRequiredHeaders, topicConsentScopes, topicPayloadJSON,
        topicForbiddenFields, topicAllowedFields, deliveryConsentScope, deliveryConsentMissing,
        deliveryUnknownTopic, deliveryRole,
    ]
}

/// Why a published record was quarantined instead of appended to its topic. The raw values are the stable
/// reason codes shown to producers (PUBLISH_ACK QUARANTINED), operators and auditors.
///
/// Checks run in this order and the first failure wins (after the topic and publish-pattern checks, which refuse
/// rather than quarantine):
///
/// | code | rule id | when |
/// |---|---|---|
/// | `RESERVED_HEADER` | `record.reserved_header` | a header name starts with a reserved prefix (below) |
/// | `INVALID_DEDUPE_KEY` | `record.dedupe_key` | a `dedupe-key` header is empty, longer than 256 bytes, or repeated |
/// | `MISSING_HEADER` | `topic.required_headers` | a header in the topic's `required_headers` is absent or empty |
/// | `CONSENT_SCOPE_NOT_ALLOWED` | `topic.consent_scopes` | a `consent_scope` entry is empty, undeclared, disallowed |
/// | `INVALID_JSON` | `topic.payload_json` | `payload = "json"` and the value is not one valid JSON object |
/// | `FORBIDDEN_FIELD` | `topic.forbidden_fields` | a key at any depth is a forbidden field (ASCII case ignored) |
/// | `FIELD_NOT_ALLOWED` | `topic.allowed_fields` | a top-level key is not in `allowed_fields` (exact match) |
///
/// Reserved header prefixes (`RecordRules.reservedHeaderPrefixes`, ASCII case ignored): `broker-`, `quarantine-`,
/// `replayed-`, `replay-`. A topic's consent scopes are its `consent_scopes`; its record must list scopes that are
/// declared at the top level and allowed on the topic.
package enum QuarantineReason: String, CaseIterable, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// A producer sent a header only the broker may set.
    case reservedHeader = "RESERVED_HEADER"
    /// The `dedupe-key` header is empty, too long or repeated.
    case invalidDedupeKey = "INVALID_DEDUPE_KEY"
    /// A required header is absent or empty.
    case missingHeader = "MISSING_HEADER"
    /// A consent scope the topic does not allow (or that is not declared at all).
    case consentScopeNotAllowed = "CONSENT_SCOPE_NOT_ALLOWED"
    /// The topic requires a JSON object and the value is not one.
    case invalidJSON = "INVALID_JSON"
    /// The value contains a forbidden field.
    case forbiddenField = "FORBIDDEN_FIELD"
    /// The value has a top-level field outside the topic's allowed fields.
    case fieldNotAllowed = "FIELD_NOT_ALLOWED"

    /// The stable reason code.
    package var code: String { self.rawValue }
    /// The rule id that produces this reason.
    package var rule: String {
        switch self {
        case .reservedHeader: return PolicyRule.recordReservedHeader
        case .invalidDedupeKey: return PolicyRule.recordDedupeKey
        case .missingHeader: return PolicyRule.topicRequiredHeaders
        case .consentScopeNotAllowed: return PolicyRule.topicConsentScopes
        case .invalidJSON: return PolicyRule.topicPayloadJSON
        case .forbiddenField: return PolicyRule.topicForbiddenFields
        case .fieldNotAllowed: return PolicyRule.topicAllowedFields
        }
    }
    /// The reason code.
    package var description: String { self.rawValue }
}

extension RefusalCode {
    /// The stable upper-snake code (`NOT_CLEARED`, …), as on the wire and in the audit ledger.
    package var code: String {
        switch self {
        case .unauthenticated: return "UNAUTHENTICATED"
        case .notCleared: return "NOT_CLEARED"
        case .notAuthorized: return "NOT_AUTHORIZED"
        case .unknownTopic: return "UNKNOWN_TOPIC"
        }
    }
}

/// A subscribe decision with the rule that produced it.
package struct SubscribeVerdict: Equatable, Sendable {
    /// Allow, or the refusal with its reason.
    package var decision: Decision
    /// The rule id (see `PolicyRule`), for allowances as well as refusals.
    package var ruleID: String
    /// Creates a verdict.
    package init(_ decision: Decision, ruleID: String) {
        self.decision = decision
        self.ruleID = ruleID
    }
}

/// What to do with one published record.
package enum PublishVerdict: Equatable, Sendable {
    /// Append it to its topic.
    case accept
    /// Refuse the whole PUBLISH with `code` (NOT_AUTHORIZED or UNKNOWN_TOPIC); nothing is appended anywhere.
    case refuse(RefusalCode, reason: String, rule: String)
    /// Append it to `__quarantine` instead of its topic, with this reason, rule id and human-readable message.
    case quarantine(QuarantineReason, rule: String, message: String)
}

/// Whether one stored record may be sent to one subscriber.
package enum DeliveryVerdict: Equatable, Sendable {
    /// Send it.
    case deliver
    /// Skip it (count and audit it): `scope` is the record's consent scopes as one comma-separated string ("" when
    /// it has none), `rule` the rule id.
    case withhold(scope: String, rule: String)
}
