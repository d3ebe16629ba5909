// System time of writing 210 MB in 4 MiB pieces, buffered (each piece written out with sync_file_range, as
// LogStore's buffered snapshot does) or with O_DIRECT (as it does where the file system allows), then fsync.
// docs/BENCHMARKS.md, round 13.
//
//   cc -O2 dio.c -o dio && ./dio 0 /data/dio.tmp && ./dio 1 /data/dio.tmp   # 0 buffered, 1 O_DIRECT
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double seconds(struct timeval t) { return t.tv_sec + t.tv_usec / 1e6; }

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: dio 0|1 FILE (removed after)\n");
        return 2;
    }
    int direct = atoi(argv[1]);
    long piece = 4 << 20;
    int pieces = 50;
    char *buffer = mmap(0, piece, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(buffer, 7, piece);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0600);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    for (int i = 0; i < pieces; i++) {
        if (pwrite(fd, buffer, piece, (off_t)i * piece) != piece) {
            perror("pwrite");
            return 1;
        }
        if (!direct)
            sync_file_range(fd, (off_t)i * piece, piece,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    }
    fsync(fd);
    close(fd);
    getrusage(RUSAGE_SELF, &after);
    printf("%s: %.0f MB, user %.3f s, system %.3f s\n", direct ? "O_DIRECT" : "buffered", pieces * piece / 1e6,
           seconds(after.ru_utime) - seconds(before.ru_utime), seconds(after.ru_stime) - seconds(before.ru_stime));
    unlink(argv[2]);
    return 0;
}
