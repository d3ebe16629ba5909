// Linux file and memory calls Swift's Glibc module does not import (behind _GNU_SOURCE or in headers it leaves out),
// for LogStore's FileIO and the dedupe table, and glibc's allocator settings for brokerd's AllocatorTuning.
#ifndef BROKERD_FILE_IO_H
#define BROKERD_FILE_IO_H

#include <stddef.h>
#include <stdint.h>

/// sync_file_range(fd, offset, count, WAIT_BEFORE | WRITE | WAIT_AFTER): writes the range's dirty pages to the
/// device and waits for them. No metadata, no cache flush: nothing becomes durable. 0, or -1 with errno set.
int brokerd_write_out(int fd, int64_t offset, int64_t count);

/// Turns on O_DIRECT for `fd` when its file system reports direct I/O alignments (statx STATX_DIOALIGN) whose
/// larger one divides `max_alignment`. Returns that alignment, which every later write's address, size and file
/// offset must keep; 0 when the fd stays buffered (no support, an alignment too large, or a failed call).
uint32_t brokerd_enable_direct_io(int fd, uint32_t max_alignment);

/// The O_DIRECT open flag (Swift's Glibc module does not import it), for checking an fd's flags.
int brokerd_o_direct_flag(void);

/// mremap(address, old_size, new_size, MREMAP_MAYMOVE): the mapping at `address` grown to `new_size`, moved when it
/// cannot grow where it is (its page tables move; nothing is copied). NULL, with errno set, on failure.
void *brokerd_mremap_grow(void *address, size_t old_size, size_t new_size);

/// madvise(address, size, MADV_POPULATE_WRITE) (Linux 5.14): faults the range's pages in as a write would, without
/// writing to them. 0, or -1 with errno set (EINVAL on an older kernel).
int brokerd_populate_write(void *address, size_t size);

/// 1 when malloc is glibc's own, 0 when a sanitizer's runtime (ThreadSanitizer, AddressSanitizer) replaced it, so
/// that glibc's allocator settings and counts do not apply.
int brokerd_malloc_is_glibc(void);

/// mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold) (<malloc.h>): 1 when
/// glibc took both, 0 when it refused one.
int brokerd_malloc_thresholds(int mmap_threshold, int trim_threshold);

/// mallinfo2() (glibc 2.33): bytes the allocator has handed out and not had back (`uordblks + hblkhd`: chunks in
/// its arenas and chunks mapped on their own), and bytes it holds free in its arenas (`fordblks`: freed chunks and
/// the arenas' unused tops, kept for the next allocations). Locks each arena in turn while it counts.
void brokerd_heap_usage(size_t *allocated, size_t *free_held);

/// malloc_trim(0) (<malloc.h>): gives back to the system the whole pages of free chunks between used ones in every
/// arena (`madvise(MADV_DONTNEED)`; the chunks stay free, and a later allocation faults their pages in again) and the
/// free space at the top of the main arena; the tops of the other arenas stay (`brokerd_malloc_poke_arena`). 1 when
/// any memory was given back, else 0.
int brokerd_malloc_trim(void);

/// mallopt(M_TRIM_THRESHOLD, trim_threshold): 1 when glibc took it.
int brokerd_malloc_trim_threshold(int trim_threshold);

/// malloc(size) and free at once, on the calling thread: below the mmap threshold the block comes from this thread's
/// arena (its top or a free chunk), and a free of 64 KiB or more lets glibc trim that arena's top against the trim
/// threshold in force (malloc_trim leaves the tops of arenas other than the main one alone).
void brokerd_malloc_poke_arena(size_t size);

#endif
