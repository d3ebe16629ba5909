// Memory for LogStore's dedupe table (DigestTable): zero-filled, and for large tables mapped on 2 MiB boundaries
// with transparent huge pages requested. A table of millions of keys is probed at random; with 4 KiB pages
// nearly every probe also misses the TLB, and on a virtual machine each such miss walks two page tables.
#ifndef BROKERD_TABLE_MEMORY_H
#define BROKERD_TABLE_MEMORY_H

#include <stddef.h>

/// Tables of at least this many bytes are mapped with huge pages requested; smaller ones come from calloc.
#define BROKERD_TABLE_HUGE_BYTES ((size_t)2 << 20)

/// `bytes` of zero-filled memory (free it with `brokerd_table_free` and the same `bytes`), or NULL when the
/// system has none. From `BROKERD_TABLE_HUGE_BYTES` up: an anonymous private mapping aligned to 2 MiB with
/// `MADV_HUGEPAGE` (a hint: where huge pages are off or unavailable the kernel uses 4 KiB pages, same result);
/// its pages are zeroed by the kernel when first touched, not up front.
void *brokerd_table_alloc(size_t bytes);

/// Releases memory from `brokerd_table_alloc(bytes)`; NULL does nothing.
void brokerd_table_free(void *memory, size_t bytes);

#endif
