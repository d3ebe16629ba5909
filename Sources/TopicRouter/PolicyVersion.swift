import Crypto

/// The policy version: a stable hash of a validated configuration's effective policy (see `Policy.policyVersion`).
enum PolicyVersion {
    /// Bumped if the rendering below changes, so that versions from different renderings never collide.
    static let renderingTag = "brokerd-policy/2"

    /// `pv-` + the first 12 lowercase hex digits of SHA-256 over `canonicalRendering(config)`.
    static func compute(_ config: BrokerConfig) -> String {
        var hasher = SHA256()
        Self.canonicalRendering(config).withUnsafeBytes { hasher.update(bufferPointer: $0) }
        let digest = Array(hasher.finalize())
        return "pv-" + ByteEncoding.lowercaseHex(digest.prefix(6))
    }

    /// Every decision-relevant field, each string as `<byte count>:<bytes>`, each list as `#<count>` followed by
    /// its items, each record introduced by a tag. Sets and the topic, role and principal lists are sorted; the
    /// class list keeps its order (it is a ranking). Forbidden fields are the effective ones (the class default
    /// when unset), so an explicit list equal to the default gives the same version.
    static func canonicalRendering(_ config: BrokerConfig) -> [UInt8] {
        var out = Writer()
        out.string(Self.renderingTag)
        out.list(config.classes)
        out.set(config.purposes)
        out.set(config.consentScopes)
        let mostSensitive = config.classes.last ?? ""
        out.count(config.topics.count)
        for topic in config.topics.sorted(by: { $0.name < $1.name }) {
            out.string("topic")
            out.string(topic.name)
            out.string(topic.sensitivity)
            switch topic.fsync {
            case .always: out.string("always")
            case .never: out.string("never")
            case .interval(let milliseconds): out.string("interval:\(milliseconds)")
            }
            out.string(topic.compression.rawValue)
            out.string("\(topic.segmentBytes)")
            out.optional(topic.segmentMaxAgeMillis)
            out.optional(topic.retentionBytes)
            out.optional(topic.retentionMillis)
            out.set(topic.purposes)
            out.set(topic.consentScopes)
            out.set(topic.requiredHeaders)
            out.string(topic.payload.rawValue)
            if let allowed = topic.allowedFields {
                out.string("allowed")
                out.set(allowed)
            } else {
                out.string("any-field")
            }
            out.set(ConfigValidator.forbiddenFields(of: topic, mostSensitive: mostSensitive))
            out.string("\(topic.dedupeWindowMillis)")
            out.string("\(topic.dedupeMaxKeys)")
        }
        out.count(config.roles.count)
        for role in config.roles.sorted(by: { $0.name < $1.name }) {
            out.string("role")
            out.string(role.name)
            out.string(role.clearance)
            out.set(role.publish)
            out.set(role.subscribe)
            out.set(role.purposes)
            out.set(role.consentScopes)
            out.set(role.capabilities.map(\.rawValue))
        }
        out.count(config.principals.count)
        for principal in config.principals.sorted(by: { $0.clientID < $1.clientID }) {
            out.string("principal")
            out.string(principal.clientID)
            out.string(principal.role)
            out.string(principal.tokenHash ?? "-")
            // Only when set, so that the versions of configs without mutual TLS stay what they were.
            if let identity = principal.certIdentity {
                out.string("cert_identity")
                out.string(CertificateIdentity(parsing: identity)?.description ?? identity)
            }
        }
        out.count(config.limiters.count)
        for limiter in config.limiters.sorted(by: { $0.name < $1.name }) {
            out.string("limiter")
            out.string(limiter.name)
            out.string(limiter.direction.rawValue)
            out.string(limiter.key.rawValue)
            out.string(limiter.key == .recipient ? limiter.keyHeader : "-")
            switch limiter.limit {
            case .tokenBucket(let rate, let burst): out.string("bucket:\(rate):\(burst)")
            case .window(let cap, let windowMillis): out.string("window:\(cap):\(windowMillis)")
            }
            out.string(limiter.bytesPerSecond.map { "\($0)" } ?? "-")
            out.string(limiter.effectiveBurstBytes.map { "\($0)" } ?? "-")
            for filter in [limiter.topics, limiter.consentScopes, limiter.classes] {
                if let filter { out.set(filter) } else { out.string("any") }
            }
            out.string(limiter.action.rawValue)
            out.string("\(limiter.maxKeys)")
        }
        return out.bytes
    }

    private struct Writer {
        var bytes: [UInt8] = []

        mutating func string(_ text: String) {
            self.bytes.append(contentsOf: "\(text.utf8.count):".utf8)
            self.bytes.append(contentsOf: text.utf8)
        }

        mutating func count(_ count: Int) {
            self.bytes.append(contentsOf: "#\(count)".utf8)
        }

        mutating func list(_ items: [String]) {
            self.count(items.count)
            for item in items { self.string(item) }
        }

        /// Sorted and without duplicates: a set's meaning does not depend on order or repetition.
        mutating func set(_ items: [String]) {
            self.list(Set(items).sorted())
        }

        mutating func optional(_ value: Int64?) {
            self.string(value.map { "\($0)" } ?? "-")
        }
    }
}
