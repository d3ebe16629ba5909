import Testing
import WireProtocol

@Suite("ErrorCode")
struct ErrorCodeTests {
    /// The wire numbers are a contract: once shipped they never change.
    static let table: [(code: ErrorCode, raw: UInt16, name: String)] = [
        (.ok, 0, "OK"),
        (.unauthenticated, 1, "UNAUTHENTICATED"),
        (.notCleared, 2, "NOT_CLEARED"),
        (.notAuthorized, 3, "NOT_AUTHORIZED"),
        (.unknownTopic, 4, "UNKNOWN_TOPIC"),
        (.malformedFrame, 5, "MALFORMED_FRAME"),
        (.frameTooLarge, 6, "FRAME_TOO_LARGE"),
        (.unsupportedVersion, 7, "UNSUPPORTED_VERSION"),
        (.storageFailure, 8, "STORAGE_FAILURE"),
        (.rateLimited, 9, "RATE_LIMITED"),
        (.quarantined, 10, "QUARANTINED"),
        (.internal, 11, "INTERNAL"),
        (.unknownSubscription, 12, "UNKNOWN_SUBSCRIPTION"),
        (.offsetOutOfRange, 13, "OFFSET_OUT_OF_RANGE"),
        (.invalidRequest, 14, "INVALID_REQUEST"),
        (.shuttingDown, 15, "SHUTTING_DOWN"),
        (.configRejected, 16, "CONFIG_REJECTED"),
        (.capabilityRequired, 17, "CAPABILITY_REQUIRED"),
        (.storageFull, 18, "STORAGE_FULL"),
        (.connectionLimit, 19, "CONNECTION_LIMIT"),
    ]

    @Test("each code keeps its number and name", arguments: Self.table)
    func stable(code: ErrorCode, raw: UInt16, name: String) {
        #expect(code.rawValue == raw)
        #expect(code.name == name)
        #expect("\(code)" == name)
    }

    @Test("allKnown is every code of the table, in numeric order, without gaps")
    func allKnown() {
        #expect(ErrorCode.allKnown == Self.table.map(\.code))
        #expect(ErrorCode.allKnown.map(\.rawValue) == Array(0..<UInt16(ErrorCode.allKnown.count)))
    }

    @Test("unknown codes are kept and named by number", arguments: [UInt16(ErrorCode.allKnown.count), 99, .max])
    func unknown(raw: UInt16) {
        let code = ErrorCode(rawValue: raw)
        #expect(code.rawValue == raw)
        #expect(code.name == "CODE_\(raw)")
        #expect(!ErrorCode.allKnown.contains(code))
    }
}
