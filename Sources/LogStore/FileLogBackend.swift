import Logging

// SKELETON: the LogStore helper fills in the implementation. Signatures are the contract.

/// The on-disk segmented log: one directory per topic under `directory`.
package final class FileLogBackend: LogBackend {
    package init(directory: String, logger: Logger) throws(LogStoreError) {
        fatalError("unimplemented")
    }
    package func openTopic(name: String, config: TopicLogConfig) async throws(LogStoreError) -> any TopicLog {
        fatalError("unimplemented")
    }
    package func closeAll() async {
        fatalError("unimplemented")
    }
}
