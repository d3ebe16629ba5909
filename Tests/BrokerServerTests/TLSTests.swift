import BrokerClient
import Foundation
import NIOCore
import NIOPosix
import Testing
import TopicRouter
import WireProtocol

/// TLS and mutual TLS over real sockets, with certificates made at test time (`TestPKI`).
@Suite("TLS and mutual TLS")
struct TLSTests {
    /// The test scenario (TestBroker.makeConfig) with TLS from `pki`, an auditor principal, and, unless client auth
    /// is "none", `cert_identity = "cn:<client id>"` on every principal.
    static func start(
        _ pki: TestPKI,
        clientAuth: ClientAuthMode,
        handshakeTimeoutSeconds: Int = 10,
        identities: [String: String] = [:]
    ) async throws -> TestBroker {
        try await TestBroker.start { config in
            config.server.tls = TLSSettings(
                certFile: pki.serverCert,
                keyFile: pki.serverKey,
                clientCAFile: clientAuth == .none ? nil : pki.caFile,
                clientAuth: clientAuth
            )
            config.server.handshakeTimeoutSeconds = handshakeTimeoutSeconds
            config.roles.append(RolePolicy(name: "auditor", clearance: "phi", publish: [], subscribe: [], capabilities: [.auditRead]))
            config.principals.append(
                PrincipalEntry(clientID: "compliance-auditor", role: "auditor", tokenHash: Credentials.hash(token: TestBroker.token(for: "compliance-auditor")))
            )
            guard clientAuth != .none else { return }
            for index in config.principals.indices {
                let id = config.principals[index].clientID
                config.principals[index].certIdentity = identities[id] ?? "cn:\(id)"
            }
        }
    }

    /// A TLS client trusting the test CA, presenting `certificate` if given.
    static func connect(
        _ broker: TestBroker,
        _ pki: TestPKI,
        certificate: (cert: String, key: String)? = nil,
        clientID: String = "",
        token: String = "",
        caFile: String? = nil
    ) async throws -> BrokerClient {
        let tls = BrokerClientTLS(caFile: caFile ?? pki.caFile, certFile: certificate?.cert, keyFile: certificate?.key)
        return try await BrokerClient.connect(host: "127.0.0.1", port: broker.port, clientID: clientID, token: token, tls: tls)
    }

    /// The first `__audit` entry matching `match`, read over TLS as the auditor (by certificate when client auth is
    /// on, by token otherwise); polled, since the ledger is written asynchronously. Also returns every entry read.
    static func auditEntry(
        _ broker: TestBroker,
        _ pki: TestPKI,
        byCertificate: Bool,
        where match: @escaping ([String: Any]) -> Bool
    ) async throws -> (match: [String: Any]?, all: [[String: Any]]) {
        let auditor = byCertificate
            ? try await Self.connect(broker, pki, certificate: try pki.client("auditor", subject: "/CN=compliance-auditor"))
            : try await Self.connect(broker, pki, clientID: "compliance-auditor", token: TestBroker.token(for: "compliance-auditor"))
        defer { Task { await auditor.close() } }
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        var entries: [[String: Any]] = []
        while ContinuousClock.now < deadline {
            entries = try await PolicyPlaneTests.readAll(auditor, ReservedTopic.audit).compactMap {
                try JSONSerialization.jsonObject(with: Data($0.record.value.readableBytesView)) as? [String: Any]
            }
            if let found = entries.first(where: match) { return (found, entries) }
            try await Task.sleep(for: .milliseconds(100))
        }
        return (nil, entries)
    }

    static func isTLSFailure(_ entry: [String: Any]) -> Bool {
        entry["action"] as? String == AuditAction.authFailure
            && (entry["detail"] as? String ?? "").hasPrefix("TLS handshake failed")
    }

    @Test("publish and subscribe over TLS with tokens; a plaintext client gets nowhere")
    func publishSubscribeOverTLS() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .none)
        defer { broker.removeData() }
        let producer = try await Self.connect(broker, pki, clientID: "learning-portal", token: TestBroker.token(for: "learning-portal"))
        let records = (1...5).map(educationEvent)
        let results = try await producer.publish(topic: "education.completed", records: records)
        #expect(results.map(\.code) == Array(repeating: .ok, count: 5))

        let crm = try await Self.connect(broker, pki, clientID: "crm-automation", token: TestBroker.token(for: "crm-automation"))
        #expect(crm.session.role == "crm")
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest)
        let delivered = try await collect(subscription, count: 5)
        #expect(delivered.map(\.record.producerPart) == records)

        // The same credentials without TLS: the broker's TLS handler refuses the bytes, no HELLO_OK comes back.
        await #expect(throws: (any Error).self) {
            _ = try await BrokerClient.connect(host: "127.0.0.1", port: broker.port, clientID: "crm-automation", token: TestBroker.token(for: "crm-automation"))
        }
        // A client that does not trust the broker's CA refuses the broker.
        await #expect(throws: BrokerClientError.self) {
            _ = try await Self.connect(broker, pki, clientID: "crm-automation", token: TestBroker.token(for: "crm-automation"), caFile: pki.otherCAFile)
        }
        await producer.close()
        await crm.close()
        await broker.stop()
    }

    @Test("mutual TLS: the principal comes from the certificate and its role's clearance applies")
    func principalFromCertificate() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .required)
        defer { broker.removeData() }
        let producer = try await Self.connect(broker, pki, certificate: try pki.client("portal", subject: "/CN=learning-portal"))
        #expect(producer.session.role == "producer")
        _ = try await producer.publish(topic: "clinical.referral", records: [educationEvent(1)])
        _ = try await producer.publish(topic: "education.completed", records: [educationEvent(2)])

        // No client id in HELLO: the certificate names the principal (CRM, cleared up to non_phi).
        let crmCertificate = try pki.client("crm", subject: "/O=Example/CN=crm-automation")
        let crm = try await Self.connect(broker, pki, certificate: crmCertificate)
        #expect(crm.session.role == "crm")
        #expect(crm.session.clearance == "non_phi")
        do {
            _ = try await crm.subscribe(topic: "clinical.referral", start: .earliest)
            Issue.record("a CRM principal must not read a PHI topic")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
        }
        // support.* is in the CRM role's patterns; its pseudonymous class is above the role's clearance.
        do {
            _ = try await crm.subscribe(topic: "support.milestone", start: .earliest)
            Issue.record("a CRM principal must not read a pseudonymous topic")
        } catch let error as BrokerClientError {
            #expect(error.code == .notCleared)
            #expect(error.message.contains("cleared up to 'non_phi'"), "\(error)")
        }
        let subscription = try await crm.subscribe(topic: "education.completed", start: .earliest)
        #expect(try await collect(subscription, count: 1).map(\.record.producerPart) == [educationEvent(2)])

        // Naming the mapped principal in HELLO is accepted too; the token is not looked at.
        let named = try await Self.connect(broker, pki, certificate: crmCertificate, clientID: "crm-automation", token: "not-a-token")
        #expect(named.session.role == "crm")

        let audit = try await Self.auditEntry(broker, pki, byCertificate: true) {
            $0["action"] as? String == AuditAction.authSuccess && $0["principal"] as? String == "crm-automation"
        }
        #expect((audit.match?["detail"] as? String)?.contains("by client certificate (cn:crm-automation)") == true)
        for client in [producer, crm, named] { await client.close() }
        await broker.stop()
    }

    @Test("subject alternative names map by kind: email and dns match ignoring case; a CN never matches a dns identity")
    func subjectAlternativeNames() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(
            pki,
            clientAuth: .required,
            identities: ["crm-automation": "email:CRM-Bot@Example.org", "support-desk": "dns:support-desk.example.org"]
        )
        defer { broker.removeData() }
        let crm = try await Self.connect(broker, pki, certificate: try pki.client("crm-mail", subject: "/CN=bot 7", san: "email:crm-bot@example.org"))
        #expect(crm.session.role == "crm")
        let desk = try await Self.connect(broker, pki, certificate: try pki.client("desk", subject: "/CN=desk", san: "DNS:Support-Desk.example.org,URI:spiffe://example.org/desk"))
        #expect(desk.session.role == "patient_support")
        do {
            _ = try await Self.connect(broker, pki, certificate: try pki.client("desk-cn", subject: "/CN=support-desk.example.org"))
            Issue.record("a common name must not match a dns: identity")
        } catch let error as BrokerClientError {
            #expect(error.code == .unauthenticated)
            #expect(error.message.contains("(cn:support-desk.example.org) maps to no principal"))
        }
        await crm.close()
        await desk.close()
        await broker.stop()
    }

    @Test("a client certificate signed by another CA is refused in the TLS handshake, and audited")
    func otherCARefused() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .required)
        defer { broker.removeData() }
        let forged = try pki.client("forged", subject: "/CN=ops-admin", byOtherCA: true)
        await #expect(throws: (any Error).self) {
            let client = try await Self.connect(broker, pki, certificate: forged)
            // TLS 1.3: the client may finish its side before the broker checked its certificate; then the HELLO fails.
            try await client.ping()
        }
        let audit = try await Self.auditEntry(broker, pki, byCertificate: true, where: Self.isTLSFailure)
        #expect(audit.match != nil)
        #expect(!audit.all.contains { $0["principal"] as? String == "ops-admin" })
        await broker.stop()
    }

    @Test("a plaintext client against a TLS listener is closed before any HELLO handling")
    func plaintextClientClosed() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .none)
        defer { broker.removeData() }
        let bytes = try await Self.rawExchange(port: broker.port, send: encode(hello("crm-automation")))
        #expect(bytes.closed)
        // Whatever came back (a TLS alert, or nothing) is not a brokerd frame.
        #expect(!bytes.received.starts(with: [0x42, 0x4B]))
        let audit = try await Self.auditEntry(broker, pki, byCertificate: false, where: Self.isTLSFailure)
        #expect(audit.match != nil)
        #expect(!audit.all.contains { $0["principal"] as? String == "crm-automation" })
        await broker.stop()
    }

    @Test("a verified client certificate that maps to no principal is refused with UNAUTHENTICATED, saying why")
    func unmappedCertificate() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .required)
        defer { broker.removeData() }
        do {
            _ = try await Self.connect(broker, pki, certificate: try pki.client("stranger", subject: "/CN=stranger", san: "DNS:stranger.example.org"))
            Issue.record("an unmapped certificate must be refused")
        } catch let error as BrokerClientError {
            #expect(error.code == .unauthenticated)
            #expect(error.message == "authentication failed: the client certificate (cn:stranger, dns:stranger.example.org) maps to no principal")
        }
        let audit = try await Self.auditEntry(broker, pki, byCertificate: true) {
            $0["action"] as? String == AuditAction.authFailure && ($0["detail"] as? String ?? "").contains("maps to no principal")
        }
        #expect(audit.match != nil)
        await broker.stop()
    }

    @Test("client auth required: a token-only client is refused, and a token cannot override the certificate's principal")
    func tokenCannotImpersonate() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .required)
        defer { broker.removeData() }
        // No certificate: the TLS handshake fails (or, under TLS 1.3, the connection dies before HELLO_OK).
        await #expect(throws: (any Error).self) {
            let client = try await Self.connect(broker, pki, clientID: "ops-admin", token: TestBroker.token(for: "ops-admin"))
            try await client.ping()
        }
        // A CRM certificate with the operator's valid token in HELLO: refused, not upgraded to the operator.
        do {
            _ = try await Self.connect(
                broker, pki, certificate: try pki.client("crm", subject: "/CN=crm-automation"),
                clientID: "ops-admin", token: TestBroker.token(for: "ops-admin")
            )
            Issue.record("a token must not impersonate another principal over a certificate")
        } catch let error as BrokerClientError {
            #expect(error.code == .unauthenticated)
            #expect(error.message.contains("HELLO names client id 'ops-admin' but the client certificate maps to principal 'crm-automation'"))
        }
        await broker.stop()
    }

    @Test("client auth optional: no certificate means token authentication; a certificate wins over a token")
    func optionalClientAuth() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .optional)
        defer { broker.removeData() }
        let admin = try await Self.connect(broker, pki, clientID: "ops-admin", token: TestBroker.token(for: "ops-admin"))
        #expect(admin.session.role == "operator")
        let crm = try await Self.connect(broker, pki, certificate: try pki.client("crm", subject: "/CN=crm-automation"))
        #expect(crm.session.role == "crm")
        await #expect(throws: BrokerClientError.self) {
            _ = try await Self.connect(broker, pki, clientID: "ops-admin", token: "wrong-token-0123456789")
        }
        await admin.close()
        await crm.close()
        await broker.stop()
    }

    @Test("the handshake timeout closes a connection that never starts the TLS handshake")
    func handshakeTimeoutCoversTLS() async throws {
        let pki = try TestPKI.make()
        defer { pki.remove() }
        let broker = try await Self.start(pki, clientAuth: .required, handshakeTimeoutSeconds: 1)
        defer { broker.removeData() }
        let silent = try await Self.rawExchange(port: broker.port, send: [], timeout: .seconds(20))
        #expect(silent.closed)
        #expect(silent.received.isEmpty)
        await broker.stop()
    }

    /// Connects over plain TCP, writes `send`, and reads raw bytes until the broker closes (or `timeout`, which
    /// fails the test).
    static func rawExchange(port: Int, send: [UInt8], timeout: Duration = .seconds(10)) async throws -> (received: [UInt8], closed: Bool) {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            if !send.isEmpty { try await outbound.write(ByteBuffer(bytes: send)) }
            return try await withThrowingTaskGroup(of: [UInt8]?.self) { group in
                group.addTask {
                    var received: [UInt8] = []
                    do {
                        for try await chunk in inbound { received += chunk.readableBytesView }
                    } catch {
                        // A reset counts as closed.
                    }
                    return received
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                guard let received = first else { throw TimeoutError(what: "waiting for the broker to close") }
                return (received, true)
            }
        }
    }
}
