/// Stable numeric error codes carried by ERROR frames and per-record publish results.
/// New codes may be added; existing values never change. Documented in docs/PROTOCOL.md.
package struct ErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    package var rawValue: UInt16
    package init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Success (only in per-record results).
    package static let ok = ErrorCode(rawValue: 0)
    package static let unauthenticated = ErrorCode(rawValue: 1)
    package static let notCleared = ErrorCode(rawValue: 2)
    package static let notAuthorized = ErrorCode(rawValue: 3)
    package static let unknownTopic = ErrorCode(rawValue: 4)
    package static let malformedFrame = ErrorCode(rawValue: 5)
    package static let frameTooLarge = ErrorCode(rawValue: 6)
    package static let unsupportedVersion = ErrorCode(rawValue: 7)
    package static let storageFailure = ErrorCode(rawValue: 8)
    package static let rateLimited = ErrorCode(rawValue: 9)
    package static let quarantined = ErrorCode(rawValue: 10)
    package static let `internal` = ErrorCode(rawValue: 11)
    package static let unknownSubscription = ErrorCode(rawValue: 12)
    package static let offsetOutOfRange = ErrorCode(rawValue: 13)
    package static let invalidRequest = ErrorCode(rawValue: 14)
    package static let shuttingDown = ErrorCode(rawValue: 15)

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
        default: "CODE_\(self.rawValue)"
        }
    }

    package var description: String { self.name }
}
