#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Logging
import TopicRouter

/// Gives principals declared without a token hash a generated token, kept in `<data-dir>/credentials.toml`.
///
/// The file is created with mode 0600 on first start and reused afterwards, so tokens stay stable across restarts.
/// Only the embedded default config relies on this; a production config declares `token_hash` for every principal.
package enum CredentialBootstrap {
    /// The credentials file for a data directory.
    package static func credentialsPath(dataDir: String) -> String {
        dataDir + "/credentials.toml"
    }

    /// Returns the config with every principal hashed, and the path of the file when tokens were generated now.
    package static func fillMissingTokens(
        _ config: BrokerConfig,
        logger: Logger
    ) throws -> (config: BrokerConfig, generatedFile: String?) {
        // A principal with a cert_identity and no token_hash authenticates by certificate only: no token for it.
        let missing = config.principals.filter { $0.tokenHash == nil && $0.certIdentity == nil }.map(\.clientID)
        guard !missing.isEmpty else { return (config, nil) }
        try makeDirectory(config.server.dataDir)
        let path = self.credentialsPath(dataDir: config.server.dataDir)
        var tokens: [String: String] = [:]
        var generated = false
        if let text = try readFileIfPresent(path) {
            tokens = try Credentials.parseCredentials(text)
        }
        for clientID in missing where tokens[clientID] == nil {
            tokens[clientID] = Credentials.generateToken()
            generated = true
        }
        if generated {
            let entries = tokens.keys.sorted().map { (clientID: $0, token: tokens[$0]!) }
            try writeFileAtomically(path, contents: Credentials.renderCredentials(entries), mode: 0o600)
            logger.notice("generated tokens for principals without token_hash", metadata: [
                "brokerd.credentials": "\(path)", "brokerd.principals": "\(missing.joined(separator: ","))",
            ])
        }
        // Only the principals that need one: a token left in the file for a principal that is now certificate-only
        // must not authenticate it.
        let hashes = tokens.filter { missing.contains($0.key) }.mapValues { Credentials.hash(token: $0) }
        return (config.withTokenHashes(hashes), generated ? path : nil)
    }
}

/// Reads a whole file as UTF-8 text; nil when it does not exist.
func readFileIfPresent(_ path: String) throws -> String? {
    try readBytesIfPresent(path).map { String(decoding: $0, as: UTF8.self) }
}

/// Reads a whole file; nil when it does not exist.
func readBytesIfPresent(_ path: String) throws -> [UInt8]? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 {
        if errno == ENOENT { return nil }
        throw BrokerFileError(path: path, operation: "open", errno: errno)
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            throw BrokerFileError(path: path, operation: "read", errno: errno)
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return bytes
}

/// Writes `contents` to a temp file with `mode`, fsyncs it, and renames it over `path`.
func writeFileAtomically(_ path: String, contents: String, mode: mode_t) throws {
    try writeBytesAtomically(path, bytes: Array(contents.utf8), mode: mode)
}

/// Writes `bytes` to a temp file with `mode`, fsyncs it, and renames it over `path`.
func writeBytesAtomically(_ path: String, bytes: [UInt8], mode: mode_t) throws {
    let temp = path + ".tmp"
    let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)
    guard fd >= 0 else { throw BrokerFileError(path: temp, operation: "open", errno: errno) }
    var ok = true
    var failedErrno: Int32 = 0
    var written = 0
    while written < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
        if n < 0 {
            if errno == EINTR { continue }
            ok = false
            failedErrno = errno
            break
        }
        written += n
    }
    if ok && fchmod(fd, mode) != 0 { ok = false; failedErrno = errno }
    if ok && fsync(fd) != 0 { ok = false; failedErrno = errno }
    close(fd)
    guard ok else {
        unlink(temp)
        throw BrokerFileError(path: temp, operation: "write", errno: failedErrno)
    }
    guard rename(temp, path) == 0 else { throw BrokerFileError(path: path, operation: "rename", errno: errno) }
}

/// A file operation outside the log failed.
package struct BrokerFileError: Error, CustomStringConvertible {
    package var path: String
    package var operation: String
    package var errno: Int32
    package var description: String { "\(self.operation) \(self.path): \(String(cString: strerror(self.errno)))" }
}

extension BrokerServer {
    /// Reads a UTF-8 text file; nil when it does not exist.
    package static func readTextFile(_ path: String) throws -> String? {
        try readFileIfPresent(path)
    }
}
