import NIOCore
import Testing
import TopicRouter
import WireProtocol

@testable import BrokerServer

@Suite("SubscriptionStateMachine")
struct SubscriptionStateMachineTests {
    @Test("no read without credit, and no read past the known end")
    func waitsForCreditAndData() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 0, initialCredit: 0)
        #expect(machine.dataAvailable(endOffset: 10) == .none)
        #expect(machine.creditReceived(3) == .read(from: 0, maxRecords: 3))
        // One read at a time.
        #expect(machine.creditReceived(5) == .none)
        let (deliver, next) = machine.readCompleted(offsets: 0, count: 3, endOffset: 10)
        #expect(deliver == 3)
        #expect(next == .read(from: 3, maxRecords: 5))
        let (deliver2, next2) = machine.readCompleted(offsets: 3, count: 5, endOffset: 10)
        #expect(deliver2 == 5)
        #expect(next2 == .none)  // credit exhausted
        #expect(machine.credit == 0)
        #expect(machine.nextOffset == 8)
    }

    @Test("a read that returns more than the credit delivers only the credit")
    func neverExceedsCredit() {
        var machine = SubscriptionStateMachine(startOffset: 5, endOffset: 100, initialCredit: 2)
        #expect(machine.dataAvailable(endOffset: 100) == .read(from: 5, maxRecords: 2))
        let (deliver, next) = machine.readCompleted(offsets: 5, count: 50, endOffset: 100)
        #expect(deliver == 2)
        #expect(next == .none)
        #expect(machine.nextOffset == 7)
    }

    @Test("caught up: waits for data, then reads from where it stopped")
    func caughtUp() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 2, initialCredit: 100, maxRecordsPerRead: 10)
        #expect(machine.dataAvailable(endOffset: 2) == .read(from: 0, maxRecords: 10))
        #expect(machine.readCompleted(offsets: 0, count: 2, endOffset: 2).next == .none)
        #expect(machine.dataAvailable(endOffset: 2) == .none)
        #expect(machine.dataAvailable(endOffset: 3) == .read(from: 2, maxRecords: 10))
    }

    @Test("an ended subscription never reads again and delivers nothing from an in-flight read")
    func ended() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 10, initialCredit: 10)
        #expect(machine.dataAvailable(endOffset: 10) == .read(from: 0, maxRecords: 10))
        machine.end()
        #expect(machine.readCompleted(offsets: 0, count: 10, endOffset: 10).deliver == 0)
        #expect(machine.creditReceived(10) == .none)
        #expect(machine.dataAvailable(endOffset: 20) == .none)
    }

    @Test("falling behind retention skips to the log start")
    func fellBehind() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 50, initialCredit: 10)
        #expect(machine.dataAvailable(endOffset: 50) == .read(from: 0, maxRecords: 10))
        #expect(machine.fellBehind(logStart: 30) == .read(from: 30, maxRecords: 10))
    }
}

@Suite("ConnectionStateMachine")
struct ConnectionStateMachineTests {
    let hello = TaggedFrame(correlationID: 1, frame: .hello(Hello(clientID: "crm-automation", credential: ByteBuffer(string: "t"))))
    let ping = TaggedFrame(correlationID: 2, frame: .ping(nonce: 1))
    let principal = Principal(clientID: "crm-automation", role: "crm", clearance: "non_phi")

    @Test("only HELLO is accepted first; anything else is UNAUTHENTICATED and close")
    func helloFirst() {
        var machine = ConnectionStateMachine()
        guard case .sendErrorAndClose(let error, let correlationID) = machine.frameReceived(self.ping) else {
            Issue.record("expected close")
            return
        }
        #expect(error.code == .unauthenticated)
        #expect(correlationID == 2)
        #expect(machine.frameReceived(self.hello) == .ignore)
    }

    @Test("HELLO, success, then requests are served for the principal")
    func authenticated() {
        var machine = ConnectionStateMachine()
        guard case .authenticate(_, 1) = machine.frameReceived(self.hello) else {
            Issue.record("expected authenticate")
            return
        }
        machine.authenticationSucceeded(self.principal)
        #expect(machine.frameReceived(self.ping) == .serve(self.ping, self.principal))
        guard case .sendError(let error, _) = machine.frameReceived(self.hello) else {
            Issue.record("a second HELLO is an error")
            return
        }
        #expect(error.code == .invalidRequest)
    }

    @Test("a failed HELLO closes; an unsupported version is refused")
    func failures() {
        var machine = ConnectionStateMachine()
        _ = machine.frameReceived(self.hello)
        machine.authenticationFailed()
        #expect(machine.frameReceived(self.ping) == .ignore)

        var other = ConnectionStateMachine()
        let v9 = TaggedFrame(correlationID: 4, frame: .hello(Hello(protocolVersion: 9, clientID: "x", credential: ByteBuffer())))
        guard case .sendErrorAndClose(let error, 4) = other.frameReceived(v9) else {
            Issue.record("expected close")
            return
        }
        #expect(error.code == .unsupportedVersion)
    }
}
