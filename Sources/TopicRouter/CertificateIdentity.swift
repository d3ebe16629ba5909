/// One name a verified client certificate carries, as `[[principals]] cert_identity` writes it: `cn:NAME` (the
/// subject's common name), `dns:NAME`, `email:ADDRESS` or `uri:URI` (subject alternative names of those types).
///
/// The kind is part of the identity, so a certificate whose common name happens to be `crm.example.org` never
/// matches `dns:crm.example.org`: a CA that issues common names freely cannot mint DNS identities that way.
/// DNS names and e-mail addresses are compared ignoring ASCII case (they are case-insensitive in practice); common
/// names and URIs are compared exactly. BrokerServer reads the names from the certificate; this type and the
/// mapping in `Policy` are pure.
package struct CertificateIdentity: Hashable, Sendable, CustomStringConvertible {
    /// Which part of the certificate a name comes from.
    package enum Kind: String, CaseIterable, Sendable {
        /// The subject's common name (every CN attribute of the subject).
        case cn
        /// A subject alternative name of type dNSName.
        case dns
        /// A subject alternative name of type rfc822Name.
        case email
        /// A subject alternative name of type uniformResourceIdentifier.
        case uri
    }

    /// Longest value accepted in `cert_identity`.
    package static let maxValueLength = 1024

    /// Where the name comes from.
    package let kind: Kind
    /// The name, normalised for comparison (ASCII-lowercased for `dns` and `email`).
    package let value: String

    /// An identity of `kind` with `value`, normalised.
    package init(kind: Kind, value: String) {
        self.kind = kind
        switch kind {
        case .dns, .email: self.value = RecordRules.asciiLowercased(value)
        case .cn, .uri: self.value = value
        }
    }

    /// Parses `KIND:VALUE`; nil when the kind is unknown or the value is empty, longer than `maxValueLength` bytes,
    /// or contains a control character.
    package init?(parsing text: String) {
        guard let colon = text.firstIndex(of: ":"), let kind = Kind(rawValue: String(text[..<colon])) else {
            return nil
        }
        let value = String(text[text.index(after: colon)...])
        guard !value.isEmpty, value.utf8.count <= Self.maxValueLength,
            !value.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f })
        else { return nil }
        self.init(kind: kind, value: value)
    }

    /// `KIND:VALUE`, as written in the config.
    package var description: String { "\(self.kind.rawValue):\(self.value)" }
}
