/// Stable numeric error codes carried by ERROR frames and per-record publish results.
/// New codes may be added; existing values never change. Documented in docs/PROTOCOL.md.
package struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The number on the wire.
    package var rawValue: UInt16
    /// Wraps a wire number; unknown numbers are kept (their `name` is `CODE_<n>`).
    package init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Success (only in per-record results).
    package static let ok = ErrorCode(rawValue: 0)
    /// Bad credentials, no HELLO first, a frame before HELLO_OK, or the handshake timeout. The connection closes.
    package static let unauthenticated = ErrorCode(rawValue: 1)
    /// The topic is above the role's clearance or outside its subscribe patterns.
    package static let notCleared = ErrorCode(rawValue: 2)
    /// The topic is outside the role's publish patterns.
    package static let notAuthorized = ErrorCode(rawValue: 3)
    /// The topic is not declared or has no open log.
    package static let unknownTopic = ErrorCode(rawValue: 4)
    /// The bytes are not a valid frame. The connection closes.
    package static let malformedFrame = ErrorCode(rawValue: 5)
    /// The declared body length is above the receiver's limit. The connection closes.
    package static let frameTooLarge = ErrorCode(rawValue: 6)
    /// The protocol version is not 1. The connection closes.
    package static let unsupportedVersion = ErrorCode(rawValue: 7)
    /// The broker could not read or write its log or offset store.
    package static let storageFailure = ErrorCode(rawValue: 8)
    /// Reserved for rate limits (not sent yet); `retryAfterMillis` says when to retry.
    package static let rateLimited = ErrorCode(rawValue: 9)
    /// Per-record result: the record failed policy and was appended to `__quarantine` instead of its topic.
    package static let quarantined = ErrorCode(rawValue: 10)
    /// A broker-side fault.
    package static let `internal` = ErrorCode(rawValue: 11)
    /// CREDIT or UNSUBSCRIBE named a subscription that does not exist on this connection.
    package static let unknownSubscription = ErrorCode(rawValue: 12)
    /// The requested offset is outside the log.
    package static let offsetOutOfRange = ErrorCode(rawValue: 13)
    /// A well-formed request the broker will not serve (limits, missing group, wrong direction).
    package static let invalidRequest = ErrorCode(rawValue: 14)
    /// The broker is stopping and takes no new publishes.
    package static let shuttingDown = ErrorCode(rawValue: 15)
    /// ADMIN_RELOAD (or SIGHUP): the new config failed validation; the message lists the errors and the running
    /// policy is unchanged.
    package static let configRejected = ErrorCode(rawValue: 16)
    /// The principal's role lacks the capability an operator request needs (`quarantine.replay`, `admin`).
    package static let capabilityRequired = ErrorCode(rawValue: 17)
    /// The broker's disk is full: nothing of the record was stored, the topic stays writable, and the same
    /// publish succeeds once space is freed. Retry later (with the same dedupe key).
    package static let storageFull = ErrorCode(rawValue: 18)
    /// The broker already holds `server.max_connections` connections: sent right after accept, with correlation
    /// id 0, and the connection closes. Retry later, with backoff.
    package static let connectionLimit = ErrorCode(rawValue: 19)

    /// Every code this build knows, in numeric order (the rows of the table in docs/PROTOCOL.md section 8).
    package static let allKnown: [ErrorCode] = [
        .ok, .unauthenticated, .notCleared, .notAuthorized, .unknownTopic, .malformedFrame, .frameTooLarge,
        .unsupportedVersion, .storageFailure, .rateLimited, .quarantined, .internal, .unknownSubscription,
        .offsetOutOfRange, .invalidRequest, .shuttingDown, .configRejected, .capabilityRequired,
        .storageFull, .connectionLimit,
    ]

    /// The upper-snake-case name used in docs, logs and brokerctl output.
    package var name: String {
        switch self {
        case .ok: "OK"
        case .unauthenticated: "UNAUTHENTICATED"
        case .notCleared: "NOT_CLEARED"
        case .notAuthorized: "NOT_AUTHORIZED"
        case .unknownTopic: "UNKNOWN_TOPIC"
        case .malformedFrame: "MALFORMED_FRAME"
        case .frameTooLarge: "FRAME_TOO_LARGE"
        case .unsupportedVersion: "UNSUPPORTED_VERSION"
        case .storageFailure: "STORAGE_FAILURE"
        case .rateLimited: "RATE_LIMITED"
        case .quarantined: "QUARANTINED"
        case .internal: "INTERNAL"
        case .unknownSubscription: "UNKNOWN_SUBSCRIPTION"
        case .offsetOutOfRange: "OFFSET_OUT_OF_RANGE"
        case .invalidRequest: "INVALID_REQUEST"
        case .shuttingDown: "SHUTTING_DOWN"
        case .configRejected: "CONFIG_REJECTED"
        case .capabilityRequired: "CAPABILITY_REQUIRED"
        case .storageFull: "STORAGE_FULL"
        case .connectionLimit: "CONNECTION_LIMIT"
        default: "CODE_\(self.rawValue)"
        }
    }

    /// Same as `name`.
    package var description: String { self.name }
}
