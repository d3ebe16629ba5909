import Foundation

/// A throwaway PKI made at test time with the `openssl` binary in a temp directory: a CA, a server certificate for
/// 127.0.0.1 and localhost, and client certificates. Nothing is committed; `remove()` deletes it all.
/// (`make deps` installs Debian's openssl when it is missing.)
final class TestPKI: Sendable {
    let dir: String

    /// PEM of the test CA (trust root for the server certificate, and `client_ca_file`).
    var caFile: String { self.dir + "/ca.pem" }
    /// PEM of a second, unrelated CA.
    var otherCAFile: String { self.dir + "/other-ca.pem" }
    var serverCert: String { self.dir + "/server.pem" }
    var serverKey: String { self.dir + "/server.key" }

    private init(dir: String) {
        self.dir = dir
    }

    /// A new CA, a second CA, and a server certificate (CN=localhost, SAN DNS:localhost and IP:127.0.0.1).
    static func make() throws -> TestPKI {
        let pki = TestPKI(dir: TestBroker.makeTempDir())
        try """
            [req]
            distinguished_name = dn
            prompt = no
            [dn]
            CN = brokerd test CA
            [v3_ca]
            basicConstraints = critical,CA:TRUE
            keyUsage = critical,keyCertSign,cRLSign
            subjectKeyIdentifier = hash
            """.write(toFile: pki.dir + "/openssl.cnf", atomically: true, encoding: .utf8)
        for name in ["ca", "other-ca"] {
            try pki.openssl([
                "req", "-x509", "-config", pki.dir + "/openssl.cnf", "-extensions", "v3_ca", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(pki.dir)/\(name).key",
                "-out", "\(pki.dir)/\(name).pem", "-days", "2", "-subj", "/CN=brokerd test \(name)",
            ])
        }
        try pki.issue(name: "server", subject: "/CN=localhost", san: "DNS:localhost,IP:127.0.0.1", usage: "serverAuth")
        return pki
    }

    /// Issues a client certificate `name.pem` / `name.key` with `subject` and optional subject alternative names,
    /// signed by the test CA, or by the other CA when `byOtherCA`. Returns (cert, key) paths.
    @discardableResult
    func client(_ name: String, subject: String, san: String? = nil, byOtherCA: Bool = false) throws -> (cert: String, key: String) {
        try self.issue(name: name, subject: subject, san: san, usage: "clientAuth", ca: byOtherCA ? "other-ca" : "ca")
        return (self.dir + "/\(name).pem", self.dir + "/\(name).key")
    }

    private func issue(name: String, subject: String, san: String?, usage: String, ca: String = "ca") throws {
        var extensions = """
            basicConstraints = CA:FALSE
            keyUsage = critical,digitalSignature
            extendedKeyUsage = \(usage)
            authorityKeyIdentifier = keyid

            """
        if let san { extensions += "subjectAltName = \(san)\n" }
        try extensions.write(toFile: "\(self.dir)/\(name).ext", atomically: true, encoding: .utf8)
        try self.openssl([
            "req", "-new", "-config", self.dir + "/openssl.cnf", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(self.dir)/\(name).key", "-out",
            "\(self.dir)/\(name).csr", "-subj", subject,
        ])
        try self.openssl([
            "x509", "-req", "-in", "\(self.dir)/\(name).csr", "-CA", "\(self.dir)/\(ca).pem", "-CAkey",
            "\(self.dir)/\(ca).key", "-set_serial", "\(UInt32.random(in: 1...UInt32.max))", "-days", "2",
            "-extfile", "\(self.dir)/\(name).ext", "-out", "\(self.dir)/\(name).pem",
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let candidates = ["/usr/bin/openssl", "/usr/local/bin/openssl", "/bin/openssl"]
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw PKIError(message: "no openssl binary (looked in \(candidates)); run `make deps`")
        }
        let (status, text) = try spawnAndCollect(path, arguments)
        guard status == 0 else {
            throw PKIError(message: "openssl \(arguments.joined(separator: " ")) failed (\(status)): \(text)")
        }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: self.dir)
    }

    struct PKIError: Error, CustomStringConvertible {
        var message: String
        var description: String { self.message }
    }
}

/// Runs `path` with `arguments` (``ChildProcess/run(_:_:environment:input:)``) and returns its exit status and its
/// stdout and stderr, one after the other. The TLS tests make most of the test run's child processes, one
/// `openssl` per key and certificate.
func spawnAndCollect(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let result = try ChildProcess.run(path, arguments)
    return (result.status, result.out + result.err)
}
