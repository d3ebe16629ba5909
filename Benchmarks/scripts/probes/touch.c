// What a new page costs on this machine: maps SIZE_MIB of anonymous memory, writes one byte per 4 KiB page (the
// first touch: a page fault, and on a VM whose freed memory goes back to the host, a fault there too), then
// memsets the whole region (the same pages, now present); 4 rounds, unmapping in between. docs/BENCHMARKS.md,
// round 13.
//
//   cc -O2 touch.c -o touch && ./touch 512
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: touch SIZE_MIB\n");
        return 2;
    }
    size_t size = (size_t)atol(argv[1]) << 20, pages = size / 4096;
    for (int round = 0; round < 4; round++) {
        char *p = mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        double t0 = now();
        for (size_t i = 0; i < size; i += 4096) p[i] = 1;
        double t1 = now();
        memset(p, 2, size);
        double t2 = now();
        printf("round %d: first touch %.0f ns per page, memset afterwards %.0f ns per page\n", round,
               (t1 - t0) / pages * 1e9, (t2 - t1) / pages * 1e9);
        munmap(p, size);
    }
    return 0;
}
