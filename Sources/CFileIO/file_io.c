#define _GNU_SOURCE
#include <fcntl.h>
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
