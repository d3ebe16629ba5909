import TopicRouter
import WireProtocol

/// The authentication lifecycle of one connection, as a pure state machine.
///
/// Nothing but HELLO is accepted before authentication; every wrong transition ends in a close action.
struct ConnectionStateMachine {
    private enum State {
        case awaitingHello
        case authenticating
        case authenticated(Principal)
        case closed
    }

    /// What the handler must do with a received frame.
    enum Action: Equatable {
        /// Check this HELLO's credentials and report `authenticationSucceeded` or `authenticationFailed`.
        case authenticate(Hello, correlationID: UInt32)
        /// Serve this request for the authenticated principal.
        case serve(TaggedFrame, Principal)
        /// Send this error and keep the connection.
        case sendError(ErrorFrame, correlationID: UInt32)
        /// Send this error, then close the connection.
        case sendErrorAndClose(ErrorFrame, correlationID: UInt32)
        /// Drop the frame (the connection is closing).
        case ignore
    }

    private var state: State = .awaitingHello

    /// The principal once authenticated.
    var principal: Principal? {
        if case .authenticated(let principal) = self.state { return principal }
        return nil
    }

    /// A frame was decoded.
    mutating func frameReceived(_ tagged: TaggedFrame) -> Action {
        switch self.state {
        case .awaitingHello:
            guard case .hello(let hello) = tagged.frame else {
                self.state = .closed
                return .sendErrorAndClose(
                    ErrorFrame(code: .unauthenticated, message: "the first frame must be HELLO"),
                    correlationID: tagged.correlationID
                )
            }
            guard hello.protocolVersion == WireConstants.protocolVersion else {
                self.state = .closed
                return .sendErrorAndClose(
                    ErrorFrame(
                        code: .unsupportedVersion,
                        message: "protocol version \(hello.protocolVersion) is not supported; this broker speaks \(WireConstants.protocolVersion)"
                    ),
                    correlationID: tagged.correlationID
                )
            }
            self.state = .authenticating
            return .authenticate(hello, correlationID: tagged.correlationID)
        case .authenticating:
            // A pipelined frame behind HELLO before the answer: not allowed, the client must wait for HELLO_OK.
            self.state = .closed
            return .sendErrorAndClose(
                ErrorFrame(code: .unauthenticated, message: "wait for HELLO_OK before sending requests"),
                correlationID: tagged.correlationID
            )
        case .authenticated(let principal):
            if case .hello = tagged.frame {
                return .sendError(
                    ErrorFrame(code: .invalidRequest, message: "already authenticated"),
                    correlationID: tagged.correlationID
                )
            }
            return .serve(tagged, principal)
        case .closed:
            return .ignore
        }
    }

    /// The credential check passed.
    mutating func authenticationSucceeded(_ principal: Principal) {
        if case .authenticating = self.state { self.state = .authenticated(principal) }
    }

    /// A config reload changed the authenticated principal's role (or its clearance).
    mutating func principalChanged(_ principal: Principal) {
        if case .authenticated = self.state { self.state = .authenticated(principal) }
    }

    /// The credential check failed; the handler sends UNAUTHENTICATED and closes.
    mutating func authenticationFailed() {
        self.state = .closed
    }

    /// The stream could not be decoded; the handler sends the error and closes.
    mutating func decodeFailed() {
        self.state = .closed
    }
}
