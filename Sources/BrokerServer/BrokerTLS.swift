import NIOCore
import NIOSSL
import TopicRouter

/// TLS on the listener: the server context built from `[server.tls]`, and the names a verified client certificate
/// carries (for mapping it to a principal in `Policy.authenticate(certificate:clientID:)`).
package enum BrokerTLS {
    /// Loads the certificate chain, its key and (with client auth) the client CAs, and builds the server context.
    ///
    /// TLS 1.2 is the minimum. `client_auth = "required"` verifies a client certificate against the client CAs and
    /// fails the handshake without one; `"optional"` verifies one if presented; `"none"` does not ask for one.
    /// Errors name the config key and the file.
    package static func makeServerContext(_ settings: TLSSettings) throws(TLSSetupError) -> NIOSSLContext {
        let chain = try Self.loadCertificates(settings.certFile, key: "cert_file")
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        } catch {
            throw TLSSetupError(
                "[server.tls] key_file '\(settings.keyFile)' is not a usable PEM private key (\(error)); an "
                    + "encrypted key is not supported"
            )
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(privateKey)
        )
        configuration.minimumTLSVersion = .tlsv12
        if settings.clientAuth != .none, let caFile = settings.clientCAFile {
            configuration.trustRoots = .certificates(try Self.loadCertificates(caFile, key: "client_ca_file"))
            configuration.certificateVerification =
                settings.clientAuth == .required ? .noHostnameVerification : .optionalVerification
            configuration.sendCANameList = true  // lets a client with several certificates pick the right one
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("[server.tls]: cannot build the TLS context from cert_file and key_file: \(error)")
        }
    }

    /// Every certificate in a PEM file; at least one.
    private static func loadCertificates(_ path: String, key: String) throws(TLSSetupError) -> [NIOSSLCertificate] {
        let certificates: [NIOSSLCertificate]
        do {
            certificates = try NIOSSLCertificate.fromPEMFile(path)
        } catch {
            throw TLSSetupError("[server.tls] \(key) '\(path)' is not a PEM certificate file (\(error))")
        }
        guard !certificates.isEmpty else {
            throw TLSSetupError("[server.tls] \(key) '\(path)' holds no PEM certificate")
        }
        return certificates
    }

    /// The names a certificate carries, in the form `cert_identity` matches: every common name of its subject
    /// (`cn:`), then its DNS, e-mail and URI subject alternative names (`dns:`, `email:`, `uri:`), in certificate
    /// order. Names that are not valid UTF-8 or contain control characters are left out: no `cert_identity` can
    /// equal them (the validator refuses control characters), and they would only garble the log.
    ///
    /// Subject alternative names are read with NIOSSL's `_subjectAlternativeNames()`, the accessor NIOSSL's own
    /// hostname verification uses; it saves linking swift-certificates into the server for three string fields.
    static func identities(of certificate: NIOSSLCertificate) -> [CertificateIdentity] {
        var identities: [CertificateIdentity] = []
        for name in certificate.subjectName where name.type == .commonName {
            if Self.isPrintable(name.value) { identities.append(CertificateIdentity(kind: .cn, value: name.value)) }
        }
        for alternative in certificate._subjectAlternativeNames() {
            let kind: CertificateIdentity.Kind
            switch alternative.nameType {
            case .dnsName: kind = .dns
            case .email: kind = .email
            case .uri: kind = .uri
            default: continue
            }
            let text = alternative.contents.withUnsafeBufferPointer { String(validating: $0, as: UTF8.self) }
            if let text, Self.isPrintable(text) { identities.append(CertificateIdentity(kind: kind, value: text)) }
        }
        return identities
    }

    private static func isPrintable(_ text: String) -> Bool {
        !text.isEmpty && !text.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f })
    }

    /// Whether `error` comes from the TLS layer (a failed handshake, a bad record, an unclean close).
    static func isTLSError(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError || error is NIOSSLExtraError
    }

    /// Whether `error` is a TLS peer closing the TCP connection without a TLS close_notify (after the handshake
    /// that is an ordinary disconnect, not worth a warning).
    static func isUncleanShutdown(_ error: any Error) -> Bool {
        if case .uncleanShutdown = error as? NIOSSLError { return true }
        return false
    }
}

/// The TLS material in `[server.tls]` could not be loaded; the message names the key and the file.
package struct TLSSetupError: Error, CustomStringConvertible, Sendable {
    /// What is wrong.
    package var message: String
    /// Creates the error.
    package init(_ message: String) { self.message = message }
    /// The message.
    package var description: String { self.message }
}
