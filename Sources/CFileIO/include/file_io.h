// Linux file calls Swift's Glibc module does not import (they sit behind _GNU_SOURCE), for LogStore's FileIO.
#ifndef BROKERD_FILE_IO_H
#define BROKERD_FILE_IO_H

#include <stdint.h>

/// sync_file_range(fd, offset, count, WAIT_BEFORE | WRITE | WAIT_AFTER): writes the range's dirty pages to the
/// device and waits for them. No metadata, no cache flush: nothing becomes durable. 0, or -1 with errno set.
int brokerd_write_out(int fd, int64_t offset, int64_t count);

#endif
