#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// brokerd's rule for plaintext listeners: without TLS it listens only on a loopback address, unless the operator
/// passes `--allow-plaintext`, and then it says so in a warning.
package enum PlaintextGuard {
    /// What brokerd does with a listen address.
    package enum Outcome: Equatable, Sendable {
        /// Go ahead: TLS is configured, or the address is loopback.
        case allowed
        /// Go ahead, and log this warning.
        case allowedWithWarning(String)
        /// Exit non-zero with this message.
        case refused(String)
    }

    /// The outcome for listening on `host` with or without TLS.
    package static func check(host: String, tls: Bool, allowPlaintext: Bool) -> Outcome {
        if tls || Self.isLoopback(host) { return .allowed }
        let display = host.contains(":") ? "[\(host)]" : host
        if allowPlaintext {
            return .allowedWithWarning(
                "listening on \(display) without TLS (--allow-plaintext): tokens and records cross the network in "
                    + "clear; configure [server.tls] (docs/SECURITY.md)"
            )
        }
        return .refused(
            "refusing to listen on \(display) without TLS: tokens and records would cross the network in clear. "
                + "Configure [server.tls] (docs/SECURITY.md), listen on a loopback address (127.0.0.1, ::1, "
                + "localhost), or pass --allow-plaintext to accept plaintext on this address"
        )
    }

    /// `localhost`, an IPv4 address in 127.0.0.0/8, `::1`, or `::ffff:127.x.y.z`; any spelling inet_pton accepts.
    package static func isLoopback(_ host: String) -> Bool {
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            return UInt32(bigEndian: v4.s_addr) >> 24 == 127
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }  // ::1
        let mapped = bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff
        return mapped && bytes[12] == 127  // ::ffff:127.0.0.0/104
    }
}
