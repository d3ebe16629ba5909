import Foundation
import Testing

@testable import TopicRouter

/// `[server.tls]`, `cert_identity` and the certificate-to-principal mapping.
@Suite("TLS config and certificate identities")
struct TLSConfigTests {
    /// Every file exists (the probe that `parse` uses by default looks at the real file system).
    static let allFilesExist: @Sendable (String) -> String? = { _ in nil }

    /// Two principals: `c` (role r, token) and `d` (role r, `principal2` lines), then `tls` lines.
    /// Lines: 1 classes, 2 [server], 3 listen, 4-6 topic, 7-10 role, 11-14 principal c, then 15… as given.
    static func config(principal: [String] = [], principal2: [String]? = nil, tls: [String]? = nil) -> String {
        var lines = baseLines + principal
        if let principal2 { lines += ["[[principals]]", #"client_id = "d""#, #"role = "r""#] + principal2 }
        if let tls { lines += ["[server.tls]"] + tls }
        return document(lines)
    }

    static let requiredTLS = [
        #"cert_file = "/etc/brokerd/server.pem""#, #"key_file = "/etc/brokerd/server.key""#,
        #"client_ca_file = "/etc/brokerd/ca.pem""#, #"client_auth = "required""#,
    ]

    @Test("a full [server.tls] table and cert identities parse")
    func parses() throws {
        let text = Self.config(
            principal: [#"cert_identity = "cn:c""#],
            principal2: [#"cert_identity = "dns:D.Example.org""#],
            tls: Self.requiredTLS
        )
        let config = try ConfigLoader.parse(text, fileProbe: Self.allFilesExist)
        #expect(
            config.server.tls
                == TLSSettings(
                    certFile: "/etc/brokerd/server.pem",
                    keyFile: "/etc/brokerd/server.key",
                    clientCAFile: "/etc/brokerd/ca.pem",
                    clientAuth: .required
                )
        )
        #expect(config.principals.map(\.certIdentity) == ["cn:c", "dns:D.Example.org"])
        #expect(config.principals[1].tokenHash == nil)
        // Without the table the broker speaks plaintext; client_auth defaults to none.
        #expect(try ConfigLoader.parse(document(baseLines)).server.tls == nil)
        let plain = try ConfigLoader.parse(
            Self.config(tls: [#"cert_file = "a.pem""#, #"key_file = "a.key""#]),
            fileProbe: Self.allFilesExist
        )
        #expect(plain.server.tls?.clientAuth == ClientAuthMode.none)
    }

    static let errors: [ErrorCase] = [
        ErrorCase(
            label: "unknown key in [server.tls]",
            text: config(tls: [#"cert_fil = "a.pem""#, #"key_file = "a.key""#]),
            message: "unknown key 'cert_fil' in [server.tls]; did you mean cert_file?",
            line: 16
        ),
        ErrorCase(
            label: "missing key_file",
            text: config(tls: [#"cert_file = "a.pem""#]),
            message: "missing key 'key_file' in [server.tls]",
            line: 15
        ),
        ErrorCase(
            label: "tls is not a table",
            text: base(inserting: #"tls = "on""#, after: 3),
            message: "'tls' in [server] must be a table, got a string",
            line: 4
        ),
        ErrorCase(
            label: "unknown client_auth",
            text: config(tls: [#"cert_file = "a.pem""#, #"key_file = "a.key""#, #"client_auth = "sometimes""#]),
            message: #"'client_auth' in [server.tls] must be "none", "optional" or "required", got "sometimes""#,
            line: 18
        ),
        ErrorCase(
            label: "client auth without a client CA",
            text: config(tls: [#"cert_file = "a.pem""#, #"key_file = "a.key""#, #"client_auth = "optional""#]),
            message: #"client_auth = "optional" needs client_ca_file"#,
            line: 18
        ),
        ErrorCase(
            label: "a client CA without client auth",
            text: config(tls: [#"cert_file = "a.pem""#, #"key_file = "a.key""#, #"client_ca_file = "ca.pem""#]),
            message: #"has client_ca_file but client_auth = "none""#,
            line: 18
        ),
        ErrorCase(
            label: "an empty cert_file",
            text: config(tls: [#"cert_file = """#, #"key_file = "a.key""#]),
            message: "[server.tls] cert_file is empty",
            line: 16
        ),
        ErrorCase(
            label: "a malformed cert_identity",
            text: config(principal: [#"cert_identity = "subject:c""#], tls: requiredTLS),
            message: "principal 'c': cert_identity must be cn:NAME, dns:NAME, email:ADDRESS or uri:URI",
            line: 15
        ),
        ErrorCase(
            label: "an empty cert_identity name",
            text: config(principal: [#"cert_identity = "cn:""#], tls: requiredTLS),
            message: "principal 'c': cert_identity must be",
            line: 15
        ),
        ErrorCase(
            label: "two principals with one cert identity (DNS names compare ignoring case)",
            text: config(
                principal: [#"cert_identity = "dns:a.example.org""#],
                principal2: [#"cert_identity = "dns:A.Example.ORG""#],
                tls: requiredTLS
            ),
            message: #"principals 'c' and 'd' both have cert_identity "dns:a.example.org""#,
            line: 19
        ),
        ErrorCase(
            label: "a cert identity without TLS",
            text: config(principal: [#"cert_identity = "cn:c""#]),
            message: "principal 'c' has cert_identity, but the broker does not verify client certificates",
            line: 15
        ),
        ErrorCase(
            label: "client auth required and a principal without cert identity",
            text: config(principal: [#"cert_identity = "cn:c""#], principal2: [], tls: requiredTLS),
            message: "principal 'd' has no cert_identity, but [server.tls] client_auth = \"required\"",
            line: 17
        ),
    ]

    @Test("invalid TLS settings are refused with the line", arguments: Self.errors)
    func refused(_ errorCase: ErrorCase) {
        do {
            _ = try ConfigLoader.parse(errorCase.text, fileProbe: Self.allFilesExist)
            Issue.record("accepted: \(errorCase.label)")
        } catch {
            #expect(error.message.contains(errorCase.message), "\(error)")
            #expect(error.line == errorCase.line, "\(error)")
        }
    }

    @Test("missing or unreadable TLS files are refused at load, with the line and a hint")
    func missingFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tls-config-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "not checked here".write(toFile: dir + "/server.pem", atomically: true, encoding: .utf8)
        do {
            _ = try ConfigLoader.parse(Self.config(tls: [#"cert_file = "\#(dir)/server.pem""#, #"key_file = "\#(dir)/nope.key""#]))
            Issue.record("a missing key file was accepted")
        } catch {
            #expect(error.line == 17)
            #expect(error.message == "[server.tls] key_file '\(dir)/nope.key' does not exist; it must be the server certificate's private key (PEM)")
        }
        do {
            _ = try ConfigLoader.parse(Self.config(tls: [#"cert_file = "\#(dir)""#, #"key_file = "\#(dir)/server.pem""#]))
            Issue.record("a directory was accepted as cert_file")
        } catch {
            #expect(error.line == 16)
            #expect(error.message.hasPrefix("[server.tls] cert_file '\(dir)' is a directory"))
        }
        do {
            _ = try ConfigLoader.parse(Self.config(tls: [#"cert_file = "missing.pem""#, #"key_file = "missing.key""#]))
            Issue.record("a missing relative path was accepted")
        } catch {
            #expect(error.message.hasSuffix("(a relative path is resolved against brokerd's working directory)"))
        }
        let ok = try ConfigLoader.parse(
            Self.config(tls: [#"cert_file = "\#(dir)/server.pem""#, #"key_file = "\#(dir)/server.pem""#])
        )
        #expect(ok.server.tls?.certFile == dir + "/server.pem")
    }

    @Test("certificate identities parse by kind and normalise case where it does not matter")
    func identities() {
        #expect(CertificateIdentity(parsing: "cn:CRM Automation")?.description == "cn:CRM Automation")
        #expect(CertificateIdentity(parsing: "dns:CRM.Example.org")?.description == "dns:crm.example.org")
        #expect(CertificateIdentity(parsing: "email:Bot@Example.org")?.description == "email:bot@example.org")
        #expect(CertificateIdentity(parsing: "uri:spiffe://Example.org/A")?.description == "uri:spiffe://Example.org/A")
        for bad in ["crm", "CN:crm", "ip:127.0.0.1", "cn:", "dns:a\u{0}b", "cn:" + String(repeating: "x", count: 1025)] {
            #expect(CertificateIdentity(parsing: bad) == nil, "\(bad)")
        }
    }

    static func policy() throws -> Policy {
        let text = Self.config(
            principal: [#"cert_identity = "cn:c""#],
            principal2: [#"cert_identity = "email:d@example.org""#],
            tls: Self.requiredTLS
        )
        return try Policy(config: ConfigLoader.parse(text, fileProbe: Self.allFilesExist))
    }

    @Test("a certificate maps to exactly one principal; HELLO's client id must be empty or that principal's")
    func mapping() throws {
        let policy = try Self.policy()
        let c = Principal(clientID: "c", role: "r", clearance: "phi")
        let d = Principal(clientID: "d", role: "r", clearance: "phi")
        #expect(policy.authenticate(certificate: [.init(kind: .cn, value: "c")], clientID: "") == .authenticated(c))
        #expect(policy.authenticate(certificate: [.init(kind: .cn, value: "c")], clientID: "c") == .authenticated(c))
        #expect(
            policy.authenticate(certificate: [.init(kind: .cn, value: "x"), .init(kind: .email, value: "D@example.org")], clientID: "")
                == .authenticated(d)
        )
        #expect(
            policy.authenticate(certificate: [.init(kind: .cn, value: "c")], clientID: "d")
                == .refused(reason: "HELLO names client id 'd' but the client certificate maps to principal 'c'")
        )
        #expect(
            policy.authenticate(certificate: [.init(kind: .cn, value: "d"), .init(kind: .dns, value: "c")], clientID: "")
                == .refused(reason: "the client certificate (cn:d, dns:c) maps to no principal")
        )
        #expect(
            policy.authenticate(certificate: [.init(kind: .cn, value: "c"), .init(kind: .email, value: "d@example.org")], clientID: "")
                == .refused(reason: "the client certificate (cn:c, email:d@example.org) maps to more than one principal: 'c', 'd'")
        )
        #expect(policy.authenticate(certificate: [], clientID: "c") == .refused(reason: "the client certificate (no names) maps to no principal"))
    }

    @Test("a certificate-only principal has no token; one with both keeps its token")
    func certificateOnly() throws {
        let policy = try Self.policy()
        // d has cert_identity and no token_hash: no token authenticates it, whatever the bytes.
        #expect(
            policy.authenticate(clientID: "d", token: Array("token".utf8))
                == .refused(reason: "principal authenticates by client certificate only; no token is accepted")
        )
        #expect(policy.authenticate(clientID: "c", token: Array("token".utf8)) == .authenticated(Principal(clientID: "c", role: "r", clearance: "phi")))
        // Neither token_hash nor cert_identity: still refused when the policy is built.
        var config = try ConfigLoader.parse(Self.config(principal2: []))
        config.principals[1].tokenHash = nil
        #expect(throws: ConfigError.self) { try Policy(config: config) }
    }

    @Test("cert identities are part of the policy version, normalised; configs without them keep their version")
    func policyVersion() throws {
        let tls = [#"cert_file = "a.pem""#, #"key_file = "a.key""#, #"client_ca_file = "ca.pem""#, #"client_auth = "optional""#]
        let without = try Policy(config: ConfigLoader.parse(Self.config(tls: tls), fileProbe: Self.allFilesExist))
        let plain = try Policy(config: ConfigLoader.parse(document(baseLines)))
        #expect(without.policyVersion == plain.policyVersion)  // [server] (and so [server.tls]) is not policy
        let upper = try Policy(config: ConfigLoader.parse(Self.config(principal: [#"cert_identity = "dns:C.Example""#], tls: tls), fileProbe: Self.allFilesExist))
        let lower = try Policy(config: ConfigLoader.parse(Self.config(principal: [#"cert_identity = "dns:c.example""#], tls: tls), fileProbe: Self.allFilesExist))
        let other = try Policy(config: ConfigLoader.parse(Self.config(principal: [#"cert_identity = "cn:c.example""#], tls: tls), fileProbe: Self.allFilesExist))
        #expect(upper.policyVersion != without.policyVersion)
        #expect(upper.policyVersion == lower.policyVersion)
        #expect(other.policyVersion != lower.policyVersion)
    }
}
