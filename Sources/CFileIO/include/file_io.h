// Linux file calls Swift's Glibc module does not import (they sit behind _GNU_SOURCE), for LogStore's FileIO.
#ifndef BROKERD_FILE_IO_H
#define BROKERD_FILE_IO_H

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

#endif
