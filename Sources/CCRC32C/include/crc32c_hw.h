// CRC-32C (Castagnoli) with the x86-64 SSE4.2 `crc32` instruction, for LogStore's CRC32C.
// LogStore calls brokerd_crc32c_hw_update only when brokerd_crc32c_hw_available() says the CPU has the
// instruction; otherwise (and on every other architecture) it uses its own slicing-by-8 tables.
#ifndef BROKERD_CRC32C_HW_H
#define BROKERD_CRC32C_HW_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this build runs on x86-64 and the CPU has SSE4.2 (the `crc32` instruction), else 0.
int brokerd_crc32c_hw_available(void);

/// Continues a CRC-32C over `count` bytes at `bytes`, in the register form: `crc` is the running value already
/// inverted (start from 0xFFFFFFFF, invert the result), as the instruction works. Call only when
/// brokerd_crc32c_hw_available() returned 1.
uint32_t brokerd_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count);

#endif
