// CRC-32C with the SSE4.2 `crc32` instruction (see include/crc32c_hw.h).
#include "crc32c_hw.h"

#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int brokerd_crc32c_hw_available(void) {
    // Reads the CPU's feature bits (cpuid), which compiler-rt / libgcc cache at start-up.
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") ? 1 : 0;
}

// Compiled for SSE4.2 on its own, so the rest of the program keeps the baseline x86-64 target and still runs on a
// CPU without it; LogStore never calls this there.
__attribute__((target("sse4.2"))) uint32_t brokerd_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    // Up to 7 single bytes, so that the 8-byte loads below are aligned.
    while (count > 0 && ((uintptr_t)p & 7) != 0) {
        crc = _mm_crc32_u8(crc, *p);
        p++;
        count--;
    }
    uint64_t wide = crc;
    // Four words per iteration: one dependent chain (the instruction's latency bounds it), less loop overhead.
    while (count >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8);
        memcpy(&w1, p + 8, 8);
        memcpy(&w2, p + 16, 8);
        memcpy(&w3, p + 24, 8);
        wide = _mm_crc32_u64(wide, w0);
        wide = _mm_crc32_u64(wide, w1);
        wide = _mm_crc32_u64(wide, w2);
        wide = _mm_crc32_u64(wide, w3);
        p += 32;
        count -= 32;
    }
    while (count >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        wide = _mm_crc32_u64(wide, w);
        p += 8;
        count -= 8;
    }
    crc = (uint32_t)wide;
    while (count > 0) {
        crc = _mm_crc32_u8(crc, *p);
        p++;
        count--;
    }
    return crc;
}

#else

int brokerd_crc32c_hw_available(void) { return 0; }

// No instruction to use on this architecture: a plain bitwise CRC-32C, correct but slow. LogStore does not call it
// (brokerd_crc32c_hw_available() is 0); it exists so the symbol links everywhere.
uint32_t brokerd_crc32c_hw_update(uint32_t crc, const void *bytes, size_t count) {
    const unsigned char *p = (const unsigned char *)bytes;
    while (count > 0) {
        crc ^= *p++;
        for (int bit = 0; bit < 8; bit++) { crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1; }
        count--;
    }
    return crc;
}

#endif
