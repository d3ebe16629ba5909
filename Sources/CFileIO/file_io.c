#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include "file_io.h"

int brokerd_write_out(int fd, int64_t offset, int64_t count) {
    return sync_file_range(fd, (off64_t)offset, (off64_t)count,
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
}

uint32_t brokerd_enable_direct_io(int fd, uint32_t max_alignment) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) != 0) return 0;
    if (!(stx.stx_mask & STATX_DIOALIGN) || stx.stx_dio_offset_align == 0 || stx.stx_dio_mem_align == 0) return 0;
    uint32_t alignment = stx.stx_dio_offset_align > stx.stx_dio_mem_align ? stx.stx_dio_offset_align
                                                                           : stx.stx_dio_mem_align;
    // Both alignments are powers of two, so the larger is a multiple of the smaller.
    if (alignment > max_alignment || max_alignment % alignment != 0) return 0;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_DIRECT) != 0) return 0;
    return alignment;
}

int brokerd_o_direct_flag(void) { return O_DIRECT; }

void *brokerd_mremap_grow(void *address, size_t old_size, size_t new_size) {
    void *moved = mremap(address, old_size, new_size, MREMAP_MAYMOVE);
    return moved == MAP_FAILED ? NULL : moved;
}

int brokerd_populate_write(void *address, size_t size) {
#ifdef MADV_POPULATE_WRITE
    return madvise(address, size, MADV_POPULATE_WRITE);
#else
    return madvise(address, size, 23);  // MADV_POPULATE_WRITE, Linux 5.14; EINVAL on older kernels
#endif
}

int brokerd_malloc_is_glibc(void) {
    return dlsym(RTLD_DEFAULT, "__tsan_init") == NULL && dlsym(RTLD_DEFAULT, "__asan_init") == NULL;
}

int brokerd_malloc_thresholds(int mmap_threshold, int trim_threshold) {
    // Setting M_TRIM_THRESHOLD also stops glibc raising M_MMAP_THRESHOLD by itself, so both are set.
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
}

void brokerd_heap_usage(size_t *allocated, size_t *free_held) {
    struct mallinfo2 info = mallinfo2();
    *allocated = info.uordblks + info.hblkhd;
    *free_held = info.fordblks;
}

int brokerd_malloc_trim(void) { return malloc_trim(0); }

int brokerd_malloc_trim_threshold(int trim_threshold) { return mallopt(M_TRIM_THRESHOLD, trim_threshold); }

void brokerd_malloc_poke_arena(size_t size) {
    void *block = malloc(size);
    if (block != NULL) {
        *(volatile char *)block = 0;
        free(block);
    }
}
