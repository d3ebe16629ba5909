// Group commit with one or more syncer threads, over preallocated zeros: appends CHUNK bytes at MBPS for SECONDS while
// each of NSYNC threads loops { take the written end; fdatasync; mark it durable }, and reports the latency from each
// write to the return of an fdatasync that covers it, and the pwrite's own time, with the file prepared by MODE:
//   0  none (the default): every write grows the file (an fdatasync then also writes the inode)
//   1  the whole file zeroed through the page cache first, then fdatasynced
//   2  the whole file zeroed with O_DIRECT first; each write padded with zeros to its page's end
//   3  as 2, writes not padded (the kernel reads the uncached page a write ends in first)
//   4  a thread zeroing with O_DIRECT in 4 MiB pieces, 8 MiB ahead of the writes; writes padded (brokerd since round 20)
//   5  as 4, writes not padded
// docs/BENCHMARKS.md, round 13 (as syncx.c: two syncers did worse than one) and round 20 (the modes).
//
//   cc -O2 -pthread syncp.c -o syncp && ./syncp 1 40 8192 5 /data/syncp.tmp && ./syncp 2 40 8192 5 /data/syncp.tmp
//   for m in 0 2 3 4 5; do ./syncp 1 50 50000 5 /data/syncp.tmp $m; done
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fd;
static long chunks;
static _Atomic long written, durable;
static _Atomic int stop;
static long *writeTime, *durableTime;
static long chunkSize; static const char *pathName; static _Atomic long zeroedTo;
static long wmax, wsum;
static void *zeroer(void *unused) {
    (void)unused;
    int dfd = open(pathName, O_WRONLY | O_DIRECT);
    char *z; posix_memalign((void **)&z, 4096, 4 << 20); memset(z, 0, 4 << 20);
    while (!atomic_load(&stop)) {
        long end = atomic_load(&written) * chunkSize;
        long at = atomic_load(&zeroedTo);
        if (at - end >= (8L << 20)) { usleep(200); continue; }
        if (pwrite(dfd, z, 4 << 20, at) != 4 << 20) { perror("dio"); exit(1); }
        atomic_store(&zeroedTo, at + (4 << 20));
    }
    close(dfd);
    return 0;
}

static long now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void *syncer(void *unused) {
    (void)unused;
    while (!atomic_load(&stop)) {
        long end = atomic_load(&written);
        if (end <= atomic_load(&durable)) {
            usleep(20);
            continue;
        }
        fdatasync(fd);
        long t = now();
        long seen = atomic_load(&durable);
        while (end > seen) {
            if (atomic_compare_exchange_weak(&durable, &seen, end)) {
                for (long i = seen; i < end; i++)
                    if (!durableTime[i]) durableTime[i] = t;
                break;
            }
        }
    }
    return 0;
}

static int compare(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: syncp NSYNC MBPS CHUNK SECONDS FILE [MODE] (FILE is removed after)\n");
        return 2;
    }
    int syncers = atoi(argv[1]);
    double mbps = atof(argv[2]);
    long chunk = atol(argv[3]);
    long interval = (long)(chunk / (mbps * 1e6) * 1e9);
    chunks = (long)(atof(argv[4]) * 1e9 / interval);
    if (syncers < 1 || syncers > 8) return 2;
    int mode = argc == 7 ? atoi(argv[6]) : 0; chunkSize = chunk; pathName = argv[5];
    fd = open(argv[5], O_CREAT | O_TRUNC | O_RDWR, 0600);
    long total = chunks * chunk + (8L << 20);
    if (mode == 1) {
        char *z = calloc(1, 1 << 20);
        for (long at = 0; at < total; at += 1 << 20) pwrite(fd, z, 1 << 20, at);
        fdatasync(fd);
    } else if (mode == 2 || mode == 3) {
        int dfd = open(argv[5], O_WRONLY | O_DIRECT);
        char *z; posix_memalign((void **)&z, 4096, 4 << 20); memset(z, 0, 4 << 20);
        for (long at = 0; at < total; at += 4 << 20) if (pwrite(dfd, z, 4 << 20, at) != 4 << 20) { perror("dio"); return 1; }
        fdatasync(dfd); close(dfd);
    }
    if (fd < 0) {
        perror("open");
        return 1;
    }
    writeTime = calloc(chunks, sizeof(long));
    durableTime = calloc(chunks, sizeof(long));
    char *buffer = calloc(1, chunk + 4096);
    memset(buffer, 'x', chunk);
    pthread_t threads[8];
    for (int i = 0; i < syncers; i++) pthread_create(&threads[i], 0, syncer, 0);
    pthread_t zt; if (mode >= 4) { pthread_create(&zt, 0, zeroer, 0); while (atomic_load(&zeroedTo) < (8L << 20)) usleep(100); }
    long start = now();
    for (long i = 0; i < chunks; i++) {
        long due = start + i * interval;
        while (now() < due) {
            long rest = due - now();
            if (rest > 50000) usleep(rest / 2000);
        }
        long len = chunk;
        if (mode >= 4) while ((i + 1) * chunk + 4096 > atomic_load(&zeroedTo)) usleep(10);
        if (mode == 2 || mode == 4) { long end = (i * chunk + chunk + 4095) & ~4095L; len = end - i * chunk; }
        if (pwrite(fd, buffer, len, i * chunk) != len) {
            perror("pwrite");
            return 1;
        }
        writeTime[i] = now(); { long w = writeTime[i] - due; wsum += w; if (w > wmax) wmax = w; }
        atomic_store(&written, i + 1);
    }
    while (atomic_load(&durable) < chunks) usleep(100);
    atomic_store(&stop, 1);
    for (int i = 0; i < syncers; i++) pthread_join(threads[i], 0);
    if (mode >= 4) pthread_join(zt, 0);
    long *latency = malloc(chunks * sizeof(long));
    for (long i = 0; i < chunks; i++) latency[i] = durableTime[i] - writeTime[i];
    qsort(latency, chunks, sizeof(long), compare);
    printf("mode %d syncers %d, %.0f MB/s in %ld-byte writes: p50 %ld, p90 %ld, p99 %ld, p99.9 %ld, max %ld µs\n", mode, syncers, mbps,
           chunk, latency[chunks / 2] / 1000, latency[chunks * 9 / 10] / 1000, latency[chunks * 99 / 100] / 1000,
           latency[chunks * 999 / 1000] / 1000, latency[chunks - 1] / 1000);
    printf("   write mean %ld max %ld µs\n", wsum / chunks / 1000, wmax / 1000);
    unlink(argv[5]);
    return 0;
}
