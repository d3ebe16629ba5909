import Foundation
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
        let first = machine.readCompleted(offsets: [0, 1, 2], deliverable: [true, true, true], endOffset: 10)
        #expect(first == .init(consumed: 3, deliver: [0, 1, 2], next: .read(from: 3, maxRecords: 5)))
        let second = machine.readCompleted(offsets: Array(3...7), deliverable: Array(repeating: true, count: 5), endOffset: 10)
        #expect(second.deliver.count == 5)
        #expect(second.next == .none)  // credit exhausted
        #expect(machine.credit == 0)
        #expect(machine.nextOffset == 8)
    }

    @Test("a read that returns more than the credit delivers only the credit")
    func neverExceedsCredit() {
        var machine = SubscriptionStateMachine(startOffset: 5, endOffset: 100, initialCredit: 2)
        #expect(machine.dataAvailable(endOffset: 100) == .read(from: 5, maxRecords: 2))
        let outcome = machine.readCompleted(offsets: Array(5..<55), deliverable: Array(repeating: true, count: 50), endOffset: 100)
        #expect(outcome == .init(consumed: 2, deliver: [0, 1], next: .none))
        #expect(machine.nextOffset == 7)
    }

    @Test("caught up: waits for data, then reads from where it stopped")
    func caughtUp() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 2, initialCredit: 100, maxRecordsPerRead: 10)
        #expect(machine.dataAvailable(endOffset: 2) == .read(from: 0, maxRecords: 10))
        #expect(machine.readCompleted(offsets: [0, 1], deliverable: [true, true], endOffset: 2).next == .none)
        #expect(machine.dataAvailable(endOffset: 2) == .none)
        #expect(machine.dataAvailable(endOffset: 3) == .read(from: 2, maxRecords: 10))
    }

    @Test("an ended subscription never reads again and delivers nothing from an in-flight read")
    func ended() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 10, initialCredit: 10)
        #expect(machine.dataAvailable(endOffset: 10) == .read(from: 0, maxRecords: 10))
        machine.end()
        #expect(machine.readCompleted(offsets: Array(0..<10), deliverable: Array(repeating: true, count: 10), endOffset: 10).deliver == [])
        #expect(machine.creditReceived(10) == .none)
        #expect(machine.dataAvailable(endOffset: 20) == .none)
    }

    @Test("withheld records cost no credit and are consumed; consumption stops at a deliverable record without credit")
    func withheldCostNoCredit() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 10, initialCredit: 2)
        #expect(machine.dataAvailable(endOffset: 10) == .read(from: 0, maxRecords: 2))
        // 0 withheld, 1 deliverable, 2 withheld, 3 deliverable, 4 deliverable (no credit left for it).
        let outcome = machine.readCompleted(offsets: [0, 1, 2, 3, 4], deliverable: [false, true, false, true, true], endOffset: 10)
        #expect(outcome == .init(consumed: 4, deliver: [1, 3], next: .none))
        #expect(machine.nextOffset == 4)
        #expect(machine.credit == 0)
        // All withheld: consumed, nothing sent, and the next read follows at once while credit remains.
        #expect(machine.creditReceived(1) == .read(from: 4, maxRecords: 1))
        let skipped = machine.readCompleted(offsets: [4, 5], deliverable: [false, false], endOffset: 10)
        #expect(skipped == .init(consumed: 2, deliver: [], next: .read(from: 6, maxRecords: 1)))
    }

    @Test("a delivery quota stops a read short: the rest waits in the log, credit kept, resume reads on")
    func paced() {
        var machine = SubscriptionStateMachine(startOffset: 0, endOffset: 10, initialCredit: 5)
        #expect(machine.dataAvailable(endOffset: 10) == .read(from: 0, maxRecords: 5))
        let flags = [true, false, true, true, true]
        #expect(machine.deliveryCandidates(flags) == 4)
        // The quota lets 2 of the 4 go now; the next may go in 50 ms.
        let outcome = machine.readCompleted(offsets: [0, 1, 2, 3, 4], deliverable: flags, endOffset: 10, allowed: 2, retryAfterNanos: 50_000_000)
        #expect(outcome == .init(consumed: 3, deliver: [0, 2], next: .resume(afterNanos: 50_000_000)))
        #expect(machine.nextOffset == 3)
        #expect(machine.credit == 3)
        // While paced nothing reads, whatever arrives.
        #expect(machine.dataAvailable(endOffset: 20) == .none)
        #expect(machine.creditReceived(10) == .none)
        #expect(machine.paceElapsed() == .read(from: 3, maxRecords: 13))
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

@Suite("AuditEntry")
struct AuditEntryTests {
    @Test("an entry is one JSON object with the documented keys; count is omitted when 1")
    func json() throws {
        var entry = AuditEntry(
            time: 1_700_000_000_000, principal: "crm-automation", action: "subscribe.refuse", topic: "clinical.referral",
            decision: "refuse", reason: "NOT_CLEARED", rule: "subscribe.pattern", policyVersion: "pv-0123456789ab",
            detail: "role 'crm' has no subscribe pattern matching \"clinical.referral\""
        )
        let object = try #require(try JSONSerialization.jsonObject(with: Data(entry.json.utf8)) as? [String: Any])
        #expect(Set(object.keys) == ["time", "principal", "action", "topic", "decision", "reason", "rule", "policy_version", "detail"])
        #expect(object["time"] as? Int64 == 1_700_000_000_000)
        #expect(object["detail"] as? String == entry.detail)
        entry.count = 3
        let counted = try #require(try JSONSerialization.jsonObject(with: Data(entry.json.utf8)) as? [String: Any])
        #expect(counted["count"] as? Int == 3)
    }
}
