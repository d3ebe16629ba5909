#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The TLS checks: `[server.tls]` and the principals' `cert_identity`. Kept apart from the rest of the validator;
/// `validate` calls `validateTLS`, and `ConfigLoader.parse` calls `validateTLSFiles` (the only check that looks at
/// the file system).
extension ConfigValidator {
    /// `[server.tls]` consistent with itself, every `cert_identity` well-formed and unique, and every principal able
    /// to authenticate under the configured client-auth mode.
    ///
    /// - `cert_file` and `key_file` non-empty; `client_auth = "optional"` or `"required"` needs `client_ca_file`,
    ///   and `client_ca_file` without client auth is refused rather than silently ignored.
    /// - `cert_identity` is `cn:`, `dns:`, `email:` or `uri:` followed by a name; no two principals share one
    ///   (compared as `CertificateIdentity` normalises them).
    /// - A `cert_identity` needs a broker that verifies client certificates (`client_auth` optional or required).
    /// - Under `client_auth = "required"` tokens are never checked, so every principal needs a `cert_identity`
    ///   (a principal without one could never connect: with no `token_hash` either, it would otherwise be given a
    ///   generated token nobody can use).
    static func validateTLS(_ config: BrokerConfig, locator: ConfigLineLocator?) throws(ConfigError) {
        let clientAuth = config.server.tls?.clientAuth ?? .none
        if let tls = config.server.tls {
            func line(_ key: String) -> Int? { locator?.line(table: "server.tls", key: key) }
            for (key, value) in [("cert_file", tls.certFile), ("key_file", tls.keyFile)] where value.isEmpty {
                throw ConfigError(
                    "[server.tls] \(key) is empty; give the path of a PEM file",
                    line: line(key)
                )
            }
            if tls.clientAuth != .none, tls.clientCAFile?.isEmpty ?? true {
                throw ConfigError(
                    "[server.tls] client_auth = \"\(tls.clientAuth.rawValue)\" needs client_ca_file: the PEM file of "
                        + "the CA certificates that sign client certificates",
                    line: line(tls.clientCAFile == nil ? "client_auth" : "client_ca_file")
                )
            }
            if tls.clientAuth == .none, tls.clientCAFile != nil {
                throw ConfigError(
                    "[server.tls] has client_ca_file but client_auth = \"none\", so client certificates would never "
                        + "be checked; set client_auth = \"optional\" or \"required\", or remove client_ca_file",
                    line: line("client_ca_file")
                )
            }
        }
        var owners: [CertificateIdentity: String] = [:]
        for (index, principal) in config.principals.enumerated() {
            func line(_ key: String) -> Int? { locator?.line(table: "principals", index: index, key: key) }
            guard let text = principal.certIdentity else {
                if clientAuth == .required {
                    throw ConfigError(
                        "principal '\(principal.clientID)' has no cert_identity, but [server.tls] client_auth = "
                            + "\"required\" authenticates every client by its certificate and never checks tokens; "
                            + "give it cert_identity = \"cn:\(principal.clientID)\" (or dns:, email:, uri:)",
                        line: line("client_id")
                    )
                }
                continue
            }
            guard let identity = CertificateIdentity(parsing: text) else {
                throw ConfigError(
                    "principal '\(principal.clientID)': cert_identity must be cn:NAME, dns:NAME, email:ADDRESS or "
                        + "uri:URI (1…\(CertificateIdentity.maxValueLength) bytes, no control characters), got "
                        + "\"\(text)\"",
                    line: line("cert_identity")
                )
            }
            if let other = owners[identity] {
                throw ConfigError(
                    "principals '\(other)' and '\(principal.clientID)' both have cert_identity \"\(identity)\"; a "
                        + "certificate must map to one principal",
                    line: line("cert_identity")
                )
            }
            owners[identity] = principal.clientID
            guard clientAuth != .none else {
                throw ConfigError(
                    "principal '\(principal.clientID)' has cert_identity, but the broker does not verify client "
                        + "certificates; set [server.tls] client_auth = \"optional\" or \"required\" with "
                        + "client_ca_file",
                    line: line("cert_identity")
                )
            }
        }
    }

    /// Every file `[server.tls]` names passes `probe` (which returns what is wrong with a path, or nil).
    static func validateTLSFiles(
        _ tls: TLSSettings?,
        locator: ConfigLineLocator?,
        probe: (String) -> String?
    ) throws(ConfigError) {
        guard let tls else { return }
        let files: [(key: String, path: String?, what: String)] = [
            ("cert_file", tls.certFile, "the server certificate (PEM, optionally followed by its intermediates)"),
            ("key_file", tls.keyFile, "the server certificate's private key (PEM)"),
            ("client_ca_file", tls.clientCAFile, "the CA certificates that sign client certificates (PEM)"),
        ]
        for case (let key, let path?, let what) in files {
            guard let problem = probe(path) else { continue }
            throw ConfigError(
                "[server.tls] \(key) '\(path)' \(problem); it must be \(what)"
                    + (path.hasPrefix("/") ? "" : " (a relative path is resolved against brokerd's working directory)"),
                line: locator?.line(table: "server.tls", key: key)
            )
        }
    }
}

/// The file-system check behind `validateTLSFiles`: the only place TopicRouter touches the file system.
package enum TLSFileProbe {
    /// nil when `path` is a regular file (or a link to one) this process can read; otherwise what is wrong, fit to
    /// follow the path in a message ("does not exist", "is a directory", "cannot be read: Permission denied").
    package static func readableFileProblem(_ path: String) -> String? {
        var info = stat()
        guard stat(path, &info) == 0 else {
            return errno == ENOENT ? "does not exist" : "cannot be read: \(String(cString: strerror(errno)))"
        }
        if (info.st_mode & S_IFMT) == S_IFDIR { return "is a directory" }
        guard access(path, R_OK) == 0 else { return "cannot be read: \(String(cString: strerror(errno)))" }
        return nil
    }
}
