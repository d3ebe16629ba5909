/// Credit-based flow control for one push subscription, as a pure state machine.
///
/// The handler feeds it facts (credit granted, data appended, a read finished) and performs the actions it returns.
/// Invariant: the records it lets the handler deliver never exceed the credit granted so far, so a stalled
/// consumer costs at most one read's worth of memory.
struct SubscriptionStateMachine {
    /// What the handler must do next.
    enum Action: Equatable {
        /// Nothing to do until the next input.
        case none
        /// Read up to `maxRecords` records starting at `from` off the event loop, then report `readCompleted`.
        case read(from: Int64, maxRecords: Int)
        /// A delivery quota paces this subscription: report `paceElapsed` after this many nanoseconds.
        case resume(afterNanos: UInt64)
    }

    /// The next offset this subscription will deliver.
    private(set) var nextOffset: Int64
    /// Records the consumer has allowed and not yet received.
    private(set) var credit: UInt64
    /// The highest visible end of the log this subscription has been told about.
    private var knownEnd: Int64
    private var readInFlight = false
    /// Waiting for a delivery quota (a `resume` action is outstanding).
    private(set) var isPaced = false
    private(set) var isEnded = false
    /// Upper bound of records per read, so one subscription cannot monopolise the read pool.
    let maxRecordsPerRead: Int

    init(startOffset: Int64, endOffset: Int64, initialCredit: UInt32, maxRecordsPerRead: Int = 512) {
        self.nextOffset = startOffset
        self.knownEnd = endOffset
        self.credit = UInt64(initialCredit)
        self.maxRecordsPerRead = maxRecordsPerRead
    }

    /// The consumer granted more credit.
    mutating func creditReceived(_ amount: UInt32) -> Action {
        // Saturate far below overflow: 2^40 outstanding records is effectively unlimited.
        self.credit = min(self.credit + UInt64(amount), 1 << 40)
        return self.nextAction()
    }

    /// The topic's visible end moved (a publish completed).
    mutating func dataAvailable(endOffset: Int64) -> Action {
        if endOffset > self.knownEnd { self.knownEnd = endOffset }
        return self.nextAction()
    }

    /// What to do with the records of a finished read.
    struct ReadOutcome: Equatable {
        /// How many records, from the first, are done with: delivered or withheld. The next read starts after them.
        var consumed: Int
        /// Indices of the records to send, ascending; never more than the credit.
        var deliver: [Int]
        var next: Action
    }

    /// A read finished with records at `offsets` (ascending); `deliverable[i]` says whether policy lets record `i`
    /// reach this subscriber now. Withheld records are consumed without credit; consumption stops at the first
    /// deliverable record there is no credit for. Nothing is delivered once the subscription ended.
    ///
    /// `allowed` is how many deliverable records a delivery quota lets go now (see `deliveryCandidates`); when it
    /// stops the delivery short, consumption stops there too, and the next action is `resume` after
    /// `retryAfterNanos`: the records wait in the log, and waiting costs no credit.
    mutating func readCompleted(
        offsets: [Int64], deliverable: [Bool], endOffset: Int64, allowed: Int = .max, retryAfterNanos: UInt64 = 0
    ) -> ReadOutcome {
        precondition(offsets.count == deliverable.count, "one deliverable flag per record")
        self.readInFlight = false
        if endOffset > self.knownEnd { self.knownEnd = endOffset }
        guard !self.isEnded else { return ReadOutcome(consumed: 0, deliver: [], next: .none) }
        var deliver: [Int] = []
        var consumed = 0
        var paced = false
        for index in offsets.indices {
            if deliverable[index] {
                if UInt64(deliver.count) == self.credit { break }
                if deliver.count == allowed {
                    paced = true
                    break
                }
                deliver.append(index)
            }
            consumed = index + 1
        }
        self.credit -= UInt64(deliver.count)
        // Offsets may skip (a retention gap); continue after the last consumed one.
        if consumed > 0 { self.nextOffset = max(self.nextOffset, offsets[consumed - 1] + 1) }
        if paced {
            self.isPaced = true
            return ReadOutcome(consumed: consumed, deliver: deliver, next: .resume(afterNanos: max(retryAfterNanos, 1)))
        }
        return ReadOutcome(consumed: consumed, deliver: deliver, next: self.nextAction())
    }

    /// How many of the deliverable records the credit would let go (the ones a delivery quota is asked about).
    func deliveryCandidates(_ deliverable: [Bool]) -> Int {
        Int(min(UInt64(deliverable.lazy.filter { $0 }.count), self.credit))
    }

    /// The delivery quota's wait is over.
    mutating func paceElapsed() -> Action {
        self.isPaced = false
        return self.nextAction()
    }

    /// The read found the subscription behind the log start (retention deleted what it wanted); skip ahead.
    mutating func fellBehind(logStart: Int64) -> Action {
        self.readInFlight = false
        if logStart > self.nextOffset { self.nextOffset = logStart }
        return self.nextAction()
    }

    /// The subscription ended (unsubscribe, error, connection closed). No action follows.
    mutating func end() {
        self.isEnded = true
    }

    private mutating func nextAction() -> Action {
        guard !self.isEnded, !self.readInFlight, !self.isPaced, self.credit > 0, self.nextOffset < self.knownEnd else {
            return .none
        }
        self.readInFlight = true
        let maxRecords = Int(min(self.credit, UInt64(self.maxRecordsPerRead)))
        return .read(from: self.nextOffset, maxRecords: maxRecords)
    }
}
