import NIOConcurrencyHelpers

/// State shared between threads, behind a lock: `let state = Locked(State())`, then `state.withLock { ... }`.
///
/// A pthread mutex (swift-nio's `NIOLockedValueBox`) rather than `Synchronization.Mutex`: on Linux `Mutex` locks with
/// a raw futex that ThreadSanitizer cannot see, so `make tsan` reported every access made under it as a data race
/// (a 10-line program incrementing a counter under `Mutex` from 8 threads shows it, with the exact total). Under
/// this lock TSan checks the code for real. The call shape is `Mutex`'s, so the two read alike.
package typealias Locked<Value> = NIOLockedValueBox<Value>

extension NIOLockedValueBox {
    /// Runs `body` on the value while holding the lock, keeping the closure's typed error (`withLockedValue`
    /// rethrows it untyped).
    @inlinable
    package func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        do {
            return try self.withLockedValue { value in try body(&value) }
        } catch {
            throw error as! Failure  // only `body` throws in here, and it throws `Failure`
        }
    }
}
