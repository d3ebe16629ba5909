#define _GNU_SOURCE
#include "table_memory.h"

#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#define HUGE_ALIGN ((size_t)2 << 20)

/// What a large table maps: `bytes` rounded up to whole 2 MiB pages (the same in alloc and free).
static size_t mapped_length(size_t bytes) {
    return (bytes + HUGE_ALIGN - 1) & ~(HUGE_ALIGN - 1);
}

void *brokerd_table_alloc(size_t bytes) {
    if (bytes < BROKERD_TABLE_HUGE_BYTES) {
        return calloc(1, bytes == 0 ? 1 : bytes);
    }
    if (bytes > SIZE_MAX - 2 * HUGE_ALIGN) {
        return NULL;
    }
    bytes = mapped_length(bytes);
    // Map one alignment more than asked, then unmap the unaligned head and the tail beyond `bytes`, so the
    // table starts on a 2 MiB boundary (a huge page can only back an aligned 2 MiB range).
    size_t mapped = bytes + HUGE_ALIGN;
    char *raw = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) {
        return NULL;
    }
    char *start = (char *)(((uintptr_t)raw + HUGE_ALIGN - 1) & ~(uintptr_t)(HUGE_ALIGN - 1));
    size_t head = (size_t)(start - raw);
    if (head > 0) {
        munmap(raw, head);
    }
    size_t tail = mapped - head - bytes;
    if (tail > 0) {
        munmap(start + bytes, tail);
    }
    (void)madvise(start, bytes, MADV_HUGEPAGE);
    return start;
}

void brokerd_table_free(void *memory, size_t bytes) {
    if (memory == NULL) {
        return;
    }
    if (bytes < BROKERD_TABLE_HUGE_BYTES) {
        free(memory);
    } else {
        munmap(memory, mapped_length(bytes));
    }
}
