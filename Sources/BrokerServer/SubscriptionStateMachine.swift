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
    }

    /// The next offset this subscription will deliver.
    private(set) var nextOffset: Int64
    /// Records the consumer has allowed and not yet received.
    private(set) var credit: UInt64
    /// The highest visible end of the log this subscription has been told about.
    private var knownEnd: Int64
    private var readInFlight = false
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

    /// A read finished with these offsets (ascending). Returns how many of them to deliver and the next action.
    mutating func readCompleted(offsets first: Int64?, count: Int, endOffset: Int64) -> (deliver: Int, next: Action) {
        self.readInFlight = false
        if endOffset > self.knownEnd { self.knownEnd = endOffset }
        guard !self.isEnded else { return (0, .none) }
        let deliverable = Int(min(UInt64(count), self.credit))
        if deliverable > 0, let first {
            self.credit -= UInt64(deliverable)
            // Offsets may skip (e.g. retention or a compacted range); continue after the last delivered one.
            self.nextOffset = first + Int64(deliverable)
        }
        return (deliverable, self.nextAction())
    }

    /// The read found the subscription behind the log start (retention deleted what it wanted); skip ahead.
    mutating func fellBehind(logStart: Int64) -> Action {
        self.readInFlight = false
        if logStart > self.nextOffset { self.nextOffset = logStart }
        return self.nextAction()
    }

    /// Advances `nextOffset` past the last delivered record when offsets are not contiguous.
    mutating func delivered(upTo lastOffset: Int64) {
        if lastOffset + 1 > self.nextOffset { self.nextOffset = lastOffset + 1 }
    }

    /// The subscription ended (unsubscribe, error, connection closed). No action follows.
    mutating func end() {
        self.isEnded = true
    }

    private mutating func nextAction() -> Action {
        guard !self.isEnded, !self.readInFlight, self.credit > 0, self.nextOffset < self.knownEnd else {
            return .none
        }
        self.readInFlight = true
        let maxRecords = Int(min(self.credit, UInt64(self.maxRecordsPerRead)))
        return .read(from: self.nextOffset, maxRecords: maxRecords)
    }
}
