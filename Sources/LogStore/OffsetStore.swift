// SKELETON: the LogStore helper fills in the implementation. Signatures are the contract.

/// Durable committed offsets of consumer groups, keyed by (group, topic).
package final class OffsetStore: Sendable {
    /// Opens (or creates) the offset file at `path`, recovering from a torn tail.
    package init(path: String) throws(LogStoreError) {
        fatalError("unimplemented")
    }
    /// The committed next-offset for the group on the topic, if any.
    package func committed(group: String, topic: String) -> Int64? {
        fatalError("unimplemented")
    }
    /// Durably records the group's next offset (fsynced before it returns).
    package func commit(group: String, topic: String, offset: Int64) throws(LogStoreError) {
        fatalError("unimplemented")
    }
}
