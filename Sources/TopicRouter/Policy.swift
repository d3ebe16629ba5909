// SKELETON: the TopicRouter helper fills in the implementation. Signatures are the contract.

/// An authenticated client.
package struct Principal: Equatable, Sendable {
    package var clientID: String
    package var role: String
    package var clearance: String
    package init(clientID: String, role: String, clearance: String) {
        self.clientID = clientID
        self.role = role
        self.clearance = clearance
    }
}

/// Why a request was refused; maps one to one onto wire error codes in BrokerServer.
package enum RefusalCode: Equatable, Sendable {
    case unauthenticated
    case notCleared
    case notAuthorized
    case unknownTopic
}

/// A routing decision.
package enum Decision: Equatable, Sendable {
    case allow
    case refuse(RefusalCode, reason: String)
}

/// The outcome of HELLO's credential check.
package enum AuthDecision: Equatable, Sendable {
    case authenticated(Principal)
    /// `reason` is for the broker's log; clients only ever see a generic message.
    case refused(reason: String)
}

/// Immutable, validated policy: pure decisions over (principal, topic).
package struct Policy: Sendable {
    package let config: BrokerConfig
    /// Builds the policy; every principal must have a token hash.
    package init(config: BrokerConfig) throws(ConfigError) {
        fatalError("unimplemented")
    }
    /// Checks the token against the principal's stored hash in constant time.
    package func authenticate(clientID: String, token: [UInt8]) -> AuthDecision {
        fatalError("unimplemented")
    }
    /// NOT_CLEARED when above clearance or outside subscribe patterns; UNKNOWN_TOPIC when not declared.
    package func subscribeDecision(principal: Principal, topic: String) -> Decision {
        fatalError("unimplemented")
    }
    /// NOT_AUTHORIZED when outside publish patterns; UNKNOWN_TOPIC when not declared.
    package func publishDecision(principal: Principal, topic: String) -> Decision {
        fatalError("unimplemented")
    }
    /// The declared topic, if any.
    package func topic(named name: String) -> TopicPolicy? {
        fatalError("unimplemented")
    }
}

/// Token generation and hashing.
package enum Credentials {
    /// A new random token: 32 bytes from the system CSPRNG, base64url without padding.
    package static func generateToken() -> String {
        fatalError("unimplemented")
    }
    /// `sha256:<64 lowercase hex>` of the token's UTF-8 bytes.
    package static func hash(token: String) -> String {
        fatalError("unimplemented")
    }
}
