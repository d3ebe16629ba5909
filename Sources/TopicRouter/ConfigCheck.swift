/// The property the `FuzzConfig` libFuzzer harness checks, here so that the regression test replaying the committed
/// corpus (TopicRouterTests) runs exactly the same code.
package enum ConfigCheck {
    /// What the check found wrong.
    package struct Violation: Error, CustomStringConvertible {
        package var description: String
    }

    /// Arbitrary text to the config parser and, when it parses, to policy building and decisions. The parser must
    /// answer with a config or a `ConfigError`, never crash or hang; a principal must authenticate with its token
    /// and, when it has a `cert_identity`, be the principal a certificate carrying that name maps to.
    package static func check(_ text: String) throws(Violation) {
        guard let config = try? ConfigLoader.parse(text) else { return }
        let hashed = config.withTokenHashes(
            Dictionary(uniqueKeysWithValues: config.principals.map { ($0.clientID, Credentials.hash(token: "fuzz")) })
        )
        guard let policy = try? Policy(config: hashed) else { return }
        for principal in hashed.principals {
            guard case .authenticated(let who) = policy.authenticate(clientID: principal.clientID, token: Array("fuzz".utf8))
            else {
                throw Violation(description: "principal '\(principal.clientID)' failed to authenticate with its token")
            }
            if let text = principal.certIdentity, let identity = CertificateIdentity(parsing: text) {
                guard case .authenticated(who) = policy.authenticate(certificate: [identity], clientID: "") else {
                    throw Violation(description: "principal '\(principal.clientID)' is not mapped from \(identity)")
                }
            }
            for topic in hashed.topics {
                _ = policy.subscribeDecision(principal: who, topic: topic.name)
                _ = policy.publishDecision(principal: who, topic: topic.name)
            }
        }
    }
}
