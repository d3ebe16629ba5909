// A cache prefetch hint for LogStore's dedupe table (Swift has no prefetch of its own). Static inline, so the
// Swift compiler inlines it as the single `prefetcht0` instruction.
#ifndef BROKERD_PREFETCH_H
#define BROKERD_PREFETCH_H

/// Asks the CPU to start loading the cache line at `address` for a read soon. A hint only: it never faults,
/// whatever the address, and changes no result.
static inline void brokerd_prefetch(const void *address) {
    __builtin_prefetch(address, 0, 3);
}

#endif
