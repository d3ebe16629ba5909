import TOMLKit

/// Whether a limiter counts records as they are published or as they are delivered.
package enum LimiterDirection: String, CaseIterable, Equatable, Hashable, Sendable {
    /// Counted when a producer publishes (`applies_to = "publish"`).
    case publish
    /// Counted when the broker delivers to a subscriber (`applies_to = "delivery"`); delivery is paced, never dropped.
    case delivery
}

/// What a limiter keeps a separate limit for (`key`).
package enum LimiterKeyKind: String, CaseIterable, Equatable, Hashable, Sendable {
    /// The value of the record header named by `key_header` (default `recipient`); records without it are not
    /// limited by this limiter.
    case recipient
    /// Each consent scope the record carries (only those among the limiter's `consent_scopes`, when it has them).
    case consentScope = "consent_scope"
    /// The topic's sensitivity class.
    case sensitivityClass = "class"
    /// The publishing client id (publish only).
    case producer
    /// The connection the record arrived on (publish only).
    case connection
    /// The subscribing client id (delivery only).
    case subscriber
    /// The consumer group, or the client id when the subscription has no group (delivery only).
    case group
    /// One limit shared by every record the limiter applies to.
    case global

    /// Whether this key makes sense in `direction`.
    package func isValid(in direction: LimiterDirection) -> Bool {
        switch self {
        case .recipient, .consentScope, .sensitivityClass, .global: return true
        case .producer, .connection: return direction == .publish
        case .subscriber, .group: return direction == .delivery
        }
    }
}

/// What happens to a record a limiter refuses (`action`).
package enum LimiterAction: String, CaseIterable, Equatable, Hashable, Sendable {
    /// PUBLISH_ACK result RATE_LIMITED with a retry-after (publish only; the default there).
    case reject
    /// The record goes to `__quarantine` with reason RATE_LIMITED and the limiter's name (publish only).
    case quarantine
    /// The record waits until the limiter allows it (the only action of delivery limiters, their default).
    case delay
}

/// A limiter's limit: a token bucket, or an exact sliding window.
package enum LimiterLimit: Equatable, Sendable {
    /// `rate` records per second on average, at most `burst` at once (`rate`, `burst`).
    case tokenBucket(ratePerSecond: Double, burst: Int)
    /// At most `cap` records in any window of `windowMillis` milliseconds (`cap`, `window_ms`).
    case window(cap: Int, windowMillis: Int64)
}

/// A `[[limiters]]` entry: plain, validated data. The server builds Throttle's limiter set from these.
package struct LimiterDeclaration: Equatable, Sendable {
    /// The default of `key_header`.
    package static let defaultKeyHeader = "recipient"
    /// The default of `max_keys`.
    package static let defaultMaxKeys = 100_000

    /// Unique name, `[a-z0-9_.-]` (`name`).
    package var name: String
    /// Publish or delivery (`applies_to`).
    package var direction: LimiterDirection
    /// What it keeps a limit per (`key`).
    package var key: LimiterKeyKind
    /// The header holding the recipient for `key = "recipient"` (`key_header`, default `recipient`).
    package var keyHeader: String = LimiterDeclaration.defaultKeyHeader
    /// Records per key (`rate` + `burst`, or `cap` + `window_ms`).
    package var limit: LimiterLimit
    /// Delivery only: bytes per second per key (`bytes_per_second`), nil for no byte limit.
    package var bytesPerSecond: Double? = nil
    /// Delivery only: the byte burst (`burst_bytes`); nil takes one second's worth of `bytesPerSecond`.
    package var burstBytes: Int? = nil
    /// Topic patterns it applies to (`topics`); nil for every declared topic.
    package var topics: [String]? = nil
    /// Consent scopes (`consent_scopes`); when set, it applies only to records carrying one of them.
    package var consentScopes: [String]? = nil
    /// Sensitivity classes (`classes`); when set, it applies only to topics of these classes.
    package var classes: [String]? = nil
    /// What happens to a record over the limit (`action`).
    package var action: LimiterAction
    /// The most keys held at once (`max_keys`); a full table of active keys refuses new keys (fails closed).
    package var maxKeys: Int = LimiterDeclaration.defaultMaxKeys

    /// The record headers whose values decide this limiter's keys, in the order its key reader reads them:
    /// `consent_scope` when it is keyed or filtered by consent scope, then the `key_header` of one keyed by
    /// recipient. `PublishSorter.sort` notes where they are (`LimiterEngine.headerNames`), and two records whose
    /// headers of these names hold the same values in the same order get the same keys (`LimiterKeyReader`).
    package var keyHeaderNames: [String] {
        var names: [String] = []
        if self.consentScopes != nil || self.key == .consentScope { names.append(RecordRules.consentScopeHeader) }
        if self.key == .recipient, !names.contains(self.keyHeader) { names.append(self.keyHeader) }
        return names
    }

    /// A limiter with no filters; the action defaults to `reject` for publish and `delay` for delivery.
    package init(
        name: String,
        direction: LimiterDirection,
        key: LimiterKeyKind,
        limit: LimiterLimit,
        action: LimiterAction? = nil
    ) {
        self.name = name
        self.direction = direction
        self.key = key
        self.limit = limit
        self.action = action ?? (direction == .publish ? .reject : .delay)
    }

    /// One second's worth of bytes when `burst_bytes` is not given (at least 1), or nil without a byte limit.
    package var effectiveBurstBytes: Int? {
        guard let rate = self.bytesPerSecond else { return nil }
        if let burst = self.burstBytes { return burst }
        return Int(min(max(rate.rounded(.up), 1), Double(LimiterRules.maxBurst)))
    }

    /// Whether this limiter applies to records of `topic` at all (patterns, classes, and the topic allowing one of
    /// the filter's consent scopes). Per-record conditions are `Policy.limiterKeys`' job.
    package func applies(to topic: TopicPolicy) -> Bool {
        if let topics = self.topics, !topics.contains(where: { TopicPattern($0).matches(topic.name) }) { return false }
        if let classes = self.classes, !classes.contains(topic.sensitivity) { return false }
        if let scopes = self.consentScopes, !scopes.contains(where: { topic.consentScopes.contains($0) }) {
            return false
        }
        return true
    }
}

/// The bounds `[[limiters]]` values are validated against.
package enum LimiterRules {
    /// Largest `burst` and `burst_bytes` (Throttle's `TokenBucket.maxBurst`).
    package static let maxBurst = 1_000_000_000
    /// Largest `rate` and `bytes_per_second` (Throttle's `TokenBucket.maxRatePerSecond`).
    package static let maxRate = 1_000_000_000.0
    /// Smallest `rate`: about one record every 31 years; Throttle keeps rates to 10⁻⁹ per second.
    package static let minRate = 1e-9
    /// Largest `cap` (Throttle's `WindowCap.maxLimit`: the window keeps one time per allowed event).
    package static let maxCap = 4096
    /// Largest `max_keys`.
    package static let maxKeys = 100_000_000
    /// Longest `window_ms`: 366 days.
    package static let maxWindowMillis: Int64 = 366 * 86_400_000
}

extension ConfigDecoder {
    static let limiterKeys = [
        "name", "applies_to", "key", "key_header", "rate", "burst", "cap", "window_ms", "bytes_per_second",
        "burst_bytes", "topics", "consent_scopes", "classes", "action", "max_keys",
    ]

    static func decodeLimiter(_ reader: TableReader) throws(ConfigError) -> LimiterDeclaration {
        try reader.checkKeys(Self.limiterKeys)
        let name = try reader.requiredString("name")
        let owner = "limiter '\(name)'"
        let directionText = try reader.requiredString("applies_to")
        guard let direction = LimiterDirection(rawValue: directionText) else {
            throw ConfigError(
                "\(owner): applies_to must be \"publish\" or \"delivery\", got \"\(directionText)\"",
                line: reader.line("applies_to")
            )
        }
        let keyText = try reader.requiredString("key")
        guard let key = LimiterKeyKind(rawValue: keyText) else {
            throw ConfigError(
                "\(owner): unknown key \"\(keyText)\"; keys are "
                    + LimiterKeyKind.allCases.map(\.rawValue).joined(separator: ", "),
                line: reader.line("key")
            )
        }
        let rate = try reader.number("rate")
        let burst = try reader.integer("burst")
        let cap = try reader.integer("cap")
        let window = try reader.integer("window_ms")
        let limit: LimiterLimit
        switch (rate, burst, cap, window) {
        case (let rate?, let burst?, nil, nil):
            limit = .tokenBucket(ratePerSecond: rate, burst: burst)
        case (nil, nil, let cap?, let window?):
            limit = .window(cap: cap, windowMillis: Int64(window))
        case (.some, _, .some, _), (.some, _, _, .some), (_, .some, .some, _), (_, .some, _, .some):
            throw ConfigError(
                "\(owner) has both a token bucket (rate, burst) and a window (cap, window_ms); give one of them",
                line: reader.line(cap != nil ? "cap" : "window_ms")
            )
        case (.some, nil, nil, nil):
            throw ConfigError("\(owner) has rate but no burst; a token bucket needs both", line: reader.line("rate"))
        case (nil, .some, nil, nil):
            throw ConfigError("\(owner) has burst but no rate; a token bucket needs both", line: reader.line("burst"))
        case (nil, nil, .some, nil):
            throw ConfigError(
                "\(owner) has cap but no window_ms; a window needs both (e.g. cap = 3, window_ms = 86400000)",
                line: reader.line("cap")
            )
        case (nil, nil, nil, .some):
            throw ConfigError("\(owner) has window_ms but no cap; a window needs both", line: reader.line("window_ms"))
        case (nil, nil, nil, nil):
            throw ConfigError(
                "\(owner) has no limit; give rate and burst (a token bucket) or cap and window_ms (a window)",
                line: reader.line(nil)
            )
        }
        var action: LimiterAction? = nil
        if let actionText = try reader.string("action") {
            guard let parsed = LimiterAction(rawValue: actionText) else {
                throw ConfigError(
                    "\(owner): action must be \"reject\", \"quarantine\" or \"delay\", got \"\(actionText)\"",
                    line: reader.line("action")
                )
            }
            action = parsed
        }
        var limiter = LimiterDeclaration(name: name, direction: direction, key: key, limit: limit, action: action)
        if let header = try reader.string("key_header") {
            guard key == .recipient else {
                throw ConfigError(
                    "\(owner) has key_header but key = \"\(key.rawValue)\"; key_header names the header of "
                        + "key = \"recipient\"",
                    line: reader.line("key_header")
                )
            }
            limiter.keyHeader = header
        }
        limiter.bytesPerSecond = try reader.number("bytes_per_second")
        limiter.burstBytes = try reader.integer("burst_bytes")
        limiter.topics = try reader.stringArray("topics")
        limiter.consentScopes = try reader.stringArray("consent_scopes")
        limiter.classes = try reader.stringArray("classes")
        if let maxKeys = try reader.integer("max_keys") { limiter.maxKeys = maxKeys }
        return limiter
    }
}

extension TableReader {
    /// A number (an integer or a floating-point value), nil when the key is absent.
    func number(_ key: String) throws(ConfigError) -> Double? {
        guard let value = self.table[key] else { return nil }
        if let integer = value.int { return Double(integer) }
        guard let double = value.double else {
            throw ConfigError(
                "'\(key)' in \(self.label) must be a number, got \(Self.describe(value))",
                line: self.line(key)
            )
        }
        return double
    }
}

extension ConfigValidator {
    /// Names of limiters: `[a-z0-9_.-]`, 1…255 bytes.
    static func isLimiterName(_ name: String) -> Bool {
        guard !name.isEmpty, name.utf8.count <= Self.maxIdentifierLength else { return false }
        return name.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"),
                UInt8(ascii: "."), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }

    /// Every problem of the `[[limiters]]` rules (the first of each rule); `topics` are the declared topics.
    static func limiterProblems(
        _ limiters: [LimiterDeclaration],
        topics: [TopicPolicy],
        classes: [String],
        scopes: Set<String>,
        locator: ConfigLineLocator?
    ) -> [ConfigError] {
        var problems = ConfigProblems()
        var names = Set<String>()
        for (index, limiter) in limiters.enumerated() {
            problems.check { () throws(ConfigError) in
                try Self.validateLimiter(
                    limiter,
                    line: { locator?.line(table: "limiters", index: index, key: $0) },
                    seen: &names,
                    topics: topics,
                    classes: classes,
                    scopes: scopes
                )
            }
        }
        return problems.errors
    }

    /// One `[[limiters]]` rule; `seen` collects the names so far.
    private static func validateLimiter(
        _ limiter: LimiterDeclaration,
        line: (String) -> Int?,
        seen names: inout Set<String>,
        topics: [TopicPolicy],
        classes: [String],
        scopes: Set<String>
    ) throws(ConfigError) {
        let owner = "limiter '\(limiter.name)'"
        guard Self.isLimiterName(limiter.name) else {
            throw ConfigError(
                "invalid limiter name '\(limiter.name)'; use 1…\(Self.maxIdentifierLength) of a-z 0-9 _ . -",
                line: line("name")
            )
        }
        guard names.insert(limiter.name).inserted else {
            throw ConfigError(
                "duplicate limiter '\(limiter.name)'; limiter names must be unique",
                line: line("name")
            )
        }
        guard limiter.key.isValid(in: limiter.direction) else {
            let valid = LimiterKeyKind.allCases.filter { $0.isValid(in: limiter.direction) }.map(\.rawValue)
            throw ConfigError(
                "\(owner): key \"\(limiter.key.rawValue)\" cannot be used on a \(limiter.direction.rawValue) "
                    + "limiter; \(limiter.direction.rawValue) keys are \(valid.joined(separator: ", "))",
                line: line("key")
            )
        }
        if limiter.key == .recipient {
            let header = limiter.keyHeader
            guard !header.isEmpty, header.utf8.count <= Self.maxFieldNameLength,
                header.utf8.allSatisfy(Self.isNameByte)
            else {
                throw ConfigError(
                    "\(owner) has invalid key_header '\(header)'; use 1…\(Self.maxFieldNameLength) of "
                        + "A-Z a-z 0-9 . _ -",
                    line: line("key_header")
                )
            }
        }
        switch limiter.limit {
        case .tokenBucket(let rate, let burst):
            guard rate.isFinite, rate >= LimiterRules.minRate, rate <= LimiterRules.maxRate else {
                throw ConfigError(
                    "\(owner): rate must be a number of records per second in "
                        + "\(LimiterRules.minRate)…\(Int(LimiterRules.maxRate)), got \(rate)",
                    line: line("rate")
                )
            }
            guard (1...LimiterRules.maxBurst).contains(burst) else {
                throw ConfigError(
                    "\(owner): burst must be in 1…\(LimiterRules.maxBurst), got \(burst)",
                    line: line("burst")
                )
            }
        case .window(let cap, let windowMillis):
            guard (1...LimiterRules.maxCap).contains(cap) else {
                throw ConfigError(
                    "\(owner): cap must be in 1…\(LimiterRules.maxCap), got \(cap); for higher volumes use "
                        + "rate and burst",
                    line: line("cap")
                )
            }
            guard (1...LimiterRules.maxWindowMillis).contains(windowMillis) else {
                throw ConfigError(
                    "\(owner): window_ms must be in 1…\(LimiterRules.maxWindowMillis) (366 days), "
                        + "got \(windowMillis)",
                    line: line("window_ms")
                )
            }
        }
        if limiter.bytesPerSecond != nil || limiter.burstBytes != nil {
            guard limiter.direction == .delivery else {
                throw ConfigError(
                    "\(owner): bytes_per_second and burst_bytes apply to delivery limiters only",
                    line: line(limiter.bytesPerSecond != nil ? "bytes_per_second" : "burst_bytes")
                )
            }
            guard let bytes = limiter.bytesPerSecond else {
                throw ConfigError(
                    "\(owner) has burst_bytes but no bytes_per_second; give both",
                    line: line("burst_bytes")
                )
            }
            guard bytes.isFinite, bytes >= 1, bytes <= LimiterRules.maxRate else {
                throw ConfigError(
                    "\(owner): bytes_per_second must be in 1…\(Int(LimiterRules.maxRate)), got \(bytes)",
                    line: line("bytes_per_second")
                )
            }
            if let burst = limiter.burstBytes, !(1...LimiterRules.maxBurst).contains(burst) {
                throw ConfigError(
                    "\(owner): burst_bytes must be in 1…\(LimiterRules.maxBurst), got \(burst)",
                    line: line("burst_bytes")
                )
            }
        }
        if limiter.direction == .delivery && limiter.action != .delay {
            throw ConfigError(
                "\(owner): a delivery limiter can only delay (records wait in the log and are never dropped), "
                    + "got action \"\(limiter.action.rawValue)\"; remove action or set action = \"delay\"",
                line: line("action")
            )
        }
        guard (1...LimiterRules.maxKeys).contains(limiter.maxKeys) else {
            throw ConfigError(
                "\(owner): max_keys must be in 1…\(LimiterRules.maxKeys), got \(limiter.maxKeys)",
                line: line("max_keys")
            )
        }
        if let patterns = limiter.topics {
            guard !patterns.isEmpty else {
                throw ConfigError(
                    "\(owner) has topics = []; leave the key out to apply to every topic",
                    line: line("topics")
                )
            }
            try Self.requireUnique(patterns, of: owner, key: "topics", line: line("topics"))
            for pattern in patterns {
                guard !pattern.isEmpty,
                    pattern.utf8.allSatisfy({ Self.isNameByte($0) || $0 == UInt8(ascii: "*") })
                else {
                    throw ConfigError(
                        "\(owner) has invalid topic pattern '\(pattern)'; patterns use A-Z a-z 0-9 . _ - and * "
                            + "(any run of characters)",
                        line: line("topics")
                    )
                }
                let compiled = TopicPattern(pattern)
                guard topics.contains(where: { compiled.matches($0.name) }) else {
                    throw ConfigError(
                        "\(owner) has topic pattern '\(pattern)', which matches no declared topic",
                        line: line("topics")
                    )
                }
            }
        }
        if let filter = limiter.consentScopes {
            guard !filter.isEmpty else {
                throw ConfigError(
                    "\(owner) has consent_scopes = []; leave the key out to apply whatever the scope",
                    line: line("consent_scopes")
                )
            }
            try Self.requireDeclared(
                filter,
                in: scopes,
                of: owner,
                key: "consent_scopes",
                line: line("consent_scopes")
            )
        }
        if let filter = limiter.classes {
            guard !filter.isEmpty else {
                throw ConfigError(
                    "\(owner) has classes = []; leave the key out to apply to every class",
                    line: line("classes")
                )
            }
            try Self.requireUnique(filter, of: owner, key: "classes", line: line("classes"))
            if let unknown = filter.first(where: { !classes.contains($0) }) {
                throw ConfigError(
                    "\(owner) names class '\(unknown)', which is not declared; declared classes: "
                        + classes.joined(separator: ", "),
                    line: line("classes")
                )
            }
        }
        guard topics.contains(where: { limiter.applies(to: $0) }) else {
            throw ConfigError(
                "limiter '\(limiter.name)' applies to no declared topic: no topic matches all of its filters "
                    + "(topics, classes, and a topic allowing one of its consent_scopes)",
                line: line("name")
            )
        }
    }
}

extension Policy {
    /// The keys `limiter` counts `headers`' record under, or [] when the limiter does not apply to this record.
    ///
    /// `limiter` should be one of `limiters(for: topic, direction:)`; the topic-level filters are not checked again.
    /// Per record: with a `consent_scopes` filter the record must carry one of those scopes (in a `consent_scope`
    /// header), else []. Then by key:
    /// - `recipient`: every distinct non-empty value of the `key_header` headers; a record without one is not
    ///   limited by this limiter (a topic that must always be capped should require the header);
    /// - `consent_scope`: every distinct scope the record carries (only those in the filter, when there is one);
    /// - `class`: the topic's class; `producer` and `subscriber`: the principal's client id; `connection`: the
    ///   connection id in decimal; `group`: the consumer group, or the client id without one; `global`: "*".
    package func limiterKeys<Headers: Collection>(
        _ limiter: LimiterDeclaration,
        topic: String,
        headers: Headers,
        principal: Principal,
        connectionID: UInt64,
        group: String? = nil
    ) -> [String] where Headers.Element: PolicyHeaderView {
        self.limiterKeys(limiter, topic: topic, principal: principal, connectionID: connectionID, group: group) {
            headers.forEachPolicyHeader(named: $0, $1)
        }
    }

    /// `limiterKeys` over headers given by a visitor (see ``HeaderVisitor``).
    package func limiterKeys(
        _ limiter: LimiterDeclaration,
        topic: String,
        principal: Principal,
        connectionID: UInt64,
        group: String?,
        eachHeader: HeaderVisitor
    ) -> [String] {
        var scopes: [String] = []
        if limiter.consentScopes != nil || limiter.key == .consentScope {
            for scope in Self.consentScopes(eachHeader: eachHeader) where !scopes.contains(scope) {
                if let filter = limiter.consentScopes, !filter.contains(scope) { continue }
                scopes.append(scope)
            }
            if limiter.consentScopes != nil && scopes.isEmpty { return [] }
        }
        switch limiter.key {
        case .recipient:
            var keys: [String] = []
            eachHeader(limiter.keyHeader) { _, bytes in
                let value = String(decoding: bytes, as: UTF8.self)
                if !value.isEmpty && !keys.contains(value) { keys.append(value) }
                return true
            }
            return keys
        case .consentScope:
            return scopes
        case .sensitivityClass:
            guard let policy = self.topic(named: topic) ?? self.reservedTopic(named: topic) else { return [] }
            return [policy.sensitivity]
        case .producer, .subscriber:
            return [principal.clientID]
        case .connection:
            return [String(connectionID)]
        case .group:
            return [group ?? principal.clientID]
        case .global:
            return ["*"]
        }
    }
}

/// A record's limiter keys as UTF-8 bytes, in storage reused from one record to the next (nothing is allocated per
/// record once it has grown): what `Policy.limiterKeys` gives as `String`s, found without building them.
package struct LimiterKeyBytes {
    /// The keys' bytes, one after the other, in the first `used` bytes (the rest is room kept from earlier records).
    private var storage: [UInt8] = []
    private var used = 0
    /// Where each key ends in `storage`, in the first `count` entries; key `n` starts where key `n - 1` ends.
    private var ends: [Int] = []
    /// The number of keys.
    package private(set) var count = 0

    /// No keys.
    package init() {}

    /// Forgets the keys, keeping the storage.
    package mutating func removeAll() {
        self.used = 0
        self.count = 0
    }

    /// Calls `body` with key `index`'s bytes (valid only for the call). Not generic, so that it is compiled once
    /// here and callers in other modules do not run an unspecialized generic.
    package func withKey(_ index: Int, _ body: (UnsafeRawBufferPointer) -> Void) {
        precondition(index >= 0 && index < self.count, "no limiter key \(index)")
        let start = index == 0 ? 0 : self.ends[index - 1]
        self.storage.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0[start..<self.ends[index]])) }
    }

    /// The keys as strings, in order.
    package var strings: [String] {
        var strings: [String] = []
        strings.reserveCapacity(self.count)
        for index in 0..<self.count { self.withKey(index) { strings.append(String(decoding: $0, as: UTF8.self)) } }
        return strings
    }

    /// Adds `key` unless a key with the same bytes is already there.
    mutating func appendDistinct(_ key: UnsafeRawBufferPointer) {
        for index in 0..<self.count {
            var same = false
            self.withKey(index) { same = $0.elementsEqual(key) }
            if same { return }
        }
        let end = self.used + key.count
        if self.storage.count < end {
            self.storage.append(contentsOf: repeatElement(0, count: end - self.storage.count))
        }
        if let source = key.baseAddress {
            self.storage.withUnsafeMutableBytes {
                $0.baseAddress!.advanced(by: self.used).copyMemory(from: source, byteCount: key.count)
            }
        }
        self.used = end
        if self.ends.count > self.count { self.ends[self.count] = end } else { self.ends.append(end) }
        self.count += 1
    }
}

/// One limiter's keys for the records of one request (one topic, one principal, one connection): `limiterKeys` with
/// everything that does not depend on the record's headers settled once (``Policy/limiterKeyReader``), and keys
/// read as bytes into ``LimiterKeyBytes`` instead of `String`s.
///
/// A class: the publish path calls `keys` for every record and limiter, and calling it on a struct kept in the judge
/// copied the struct out first (its source and filter arrays retained and released, outlined: about 450
/// instructions per record and limiter, callgrind). Immutable, so sharing it is safe.
package final class LimiterKeyReader: Sendable {
    fileprivate enum Source: Sendable {
        /// The distinct non-empty values of the headers of this name (`recipient`).
        case header(String)
        /// The distinct consent scopes (`consent_scope`).
        case scopes
        /// These keys, whatever the record (`class`, `producer`, `connection`, `subscriber`, `group`, `global`; none
        /// for `class` on a topic the policy does not know).
        case fixed([[UInt8]])
    }

    fileprivate let source: Source
    /// The limiter's `consent_scopes` as bytes; nil without the filter.
    fileprivate let filter: [[UInt8]]?
    /// False when bytes cannot decide what `String`s would (a filter name that is not ASCII): `keys` then always
    /// declines.
    fileprivate let exact: Bool

    /// The names of the headers whose values alone decide `keys` (the limiter's `LimiterDeclaration.keyHeaderNames`).
    package let keyHeaderNames: [String]
    /// The key header of a limiter whose key is that header's value and nothing else (keyed by recipient, no consent
    /// scope filter): a record with exactly one header of this name has its value as its one key when the value is
    /// ASCII and not empty, and no key when it is empty (`keys` declines a value that is not ASCII). Nil otherwise.
    package let soleKeyHeader: String?

    fileprivate init(source: Source, filter: [[UInt8]]?, exact: Bool, keyHeaderNames: [String]) {
        self.source = source
        self.filter = filter
        self.exact = exact
        self.keyHeaderNames = keyHeaderNames
        if case .header(let name) = source, filter == nil, exact {
            self.soleKeyHeader = name
        } else {
            self.soleKeyHeader = nil
        }
    }

    /// The record's keys, exactly those `limiterKeys` gives (the same keys, in the same order) as UTF-8 bytes in
    /// `keys` (emptied first). Returns false, with `keys` unspecified, when it declines to decide: a consent scope
    /// entry or a header value that is not ASCII, where `String` equality (canonical equivalence) may join values
    /// whose bytes differ. The caller then asks `limiterKeys`.
    package func keys(eachHeader: HeaderVisitor, into keys: inout LimiterKeyBytes) -> Bool {
        keys.removeAll()
        guard self.exact else { return false }
        var ascii = true
        if self.filter != nil || self.isScopeKeyed {
            var matched = false
            eachHeader(RecordRules.consentScopeHeader) { _, value in
                RecordRules.forEachListItem(value) { item in
                    guard !item.isEmpty else { return true }
                    guard Self.isASCII(item) else {
                        ascii = false
                        return false
                    }
                    if let filter = self.filter, !filter.contains(where: { Self.equal($0, item) }) { return true }
                    matched = true
                    if self.isScopeKeyed { keys.appendDistinct(item) }
                    return true
                }
                return ascii
            }
            guard ascii else { return false }
            if self.filter != nil && !matched { return true }
        }
        switch self.source {
        case .header(let name):
            eachHeader(name) { _, value in
                guard !value.isEmpty else { return true }
                guard Self.isASCII(value) else {
                    ascii = false
                    return false
                }
                keys.appendDistinct(value)
                return true
            }
            return ascii
        case .scopes:
            return true
        case .fixed(let fixed):
            for key in fixed { key.withUnsafeBytes { keys.appendDistinct($0) } }
            return true
        }
    }

    private var isScopeKeyed: Bool {
        if case .scopes = self.source { return true }
        return false
    }

    /// Whether `bytes` are exactly `entry`.
    private static func equal(_ entry: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard entry.count == bytes.count else { return false }
        return entry.withUnsafeBytes { stored in
            for index in 0..<stored.count where stored[index] != bytes[index] { return false }
            return true
        }
    }

    /// Whether every byte of `bytes` is below 0x80 (eight at a time, then the rest): the keys `keys` reads as bytes.
    package static func isASCII(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var bits: UInt64 = 0
        var offset = 0
        while offset + 8 <= bytes.count {
            bits |= bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            offset += 8
        }
        while offset < bytes.count {
            bits |= UInt64(bytes[offset])
            offset += 1
        }
        return bits & 0x8080_8080_8080_8080 == 0
    }
}

extension Policy {
    /// `limiter`'s ``LimiterKeyReader`` for the records of one request on `topic` (the arguments of `limiterKeys`
    /// other than the headers).
    package func limiterKeyReader(
        _ limiter: LimiterDeclaration,
        topic: String,
        principal: Principal,
        connectionID: UInt64,
        group: String? = nil
    ) -> LimiterKeyReader {
        let source: LimiterKeyReader.Source
        switch limiter.key {
        case .recipient:
            source = .header(limiter.keyHeader)
        case .consentScope:
            source = .scopes
        case .sensitivityClass, .producer, .subscriber, .connection, .group, .global:
            // The record's headers play no part in these (but for the filter, checked per record): the keys
            // `limiterKeys` gives the unfiltered limiter for no headers at all.
            var unfiltered = limiter
            unfiltered.consentScopes = nil
            let fixed = self.limiterKeys(
                unfiltered, topic: topic, principal: principal, connectionID: connectionID, group: group
            ) { _, _ in }
            source = .fixed(fixed.map { Array($0.utf8) })
        }
        let filter = limiter.consentScopes.map { $0.map { Array($0.utf8) } }
        let exact = filter?.allSatisfy { $0.allSatisfy { $0 < 0x80 } } ?? true
        return LimiterKeyReader(source: source, filter: filter, exact: exact, keyHeaderNames: limiter.keyHeaderNames)
    }
}
