// TEMPORARY: removed when the wire branch merges.
extension WireProtocolError {
    package var correlationID: UInt32? { nil }
}
