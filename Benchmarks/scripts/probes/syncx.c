// Group commit with one or more syncer threads: appends CHUNK bytes at MBPS for SECONDS while each of NSYNC threads
// loops { take the written end; fdatasync; mark it durable }, and reports the latency from each write to the
// return of an fdatasync that covers it. docs/BENCHMARKS.md, round 13 (two syncers did worse than one).
//
//   cc -O2 -pthread syncx.c -o syncx && ./syncx 1 40 8192 5 /data/syncx.tmp && ./syncx 2 40 8192 5 /data/syncx.tmp
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
    if (argc != 6) {
        fprintf(stderr, "usage: syncx NSYNC MBPS CHUNK SECONDS FILE (removed after)\n");
        return 2;
    }
    int syncers = atoi(argv[1]);
    double mbps = atof(argv[2]);
    long chunk = atol(argv[3]);
    long interval = (long)(chunk / (mbps * 1e6) * 1e9);
    chunks = (long)(atof(argv[4]) * 1e9 / interval);
    if (syncers < 1 || syncers > 8) return 2;
    fd = open(argv[5], O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    writeTime = calloc(chunks, sizeof(long));
    durableTime = calloc(chunks, sizeof(long));
    char *buffer = malloc(chunk);
    memset(buffer, 'x', chunk);
    pthread_t threads[8];
    for (int i = 0; i < syncers; i++) pthread_create(&threads[i], 0, syncer, 0);
    long start = now();
    for (long i = 0; i < chunks; i++) {
        long due = start + i * interval;
        while (now() < due) {
            long rest = due - now();
            if (rest > 50000) usleep(rest / 2000);
        }
        if (pwrite(fd, buffer, chunk, i * chunk) != chunk) {
            perror("pwrite");
            return 1;
        }
        writeTime[i] = now();
        atomic_store(&written, i + 1);
    }
    while (atomic_load(&durable) < chunks) usleep(100);
    atomic_store(&stop, 1);
    for (int i = 0; i < syncers; i++) pthread_join(threads[i], 0);
    long *latency = malloc(chunks * sizeof(long));
    for (long i = 0; i < chunks; i++) latency[i] = durableTime[i] - writeTime[i];
    qsort(latency, chunks, sizeof(long), compare);
    printf("syncers %d, %.0f MB/s in %ld-byte writes: p50 %ld, p90 %ld, p99 %ld, p99.9 %ld, max %ld µs\n", syncers, mbps,
           chunk, latency[chunks / 2] / 1000, latency[chunks * 9 / 10] / 1000, latency[chunks * 99 / 100] / 1000,
           latency[chunks * 999 / 1000] / 1000, latency[chunks - 1] / 1000);
    unlink(argv[5]);
    return 0;
}
