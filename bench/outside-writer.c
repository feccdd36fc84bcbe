// bench/outside-writer.c: a checkpoint writer outside the trainer, for bench/checkpoint-steps.
//
//   outside-writer DIR BYTES PERIOD_MS SECONDS LOG
//
// Every PERIOD_MS for SECONDS, at nice 19, writes BYTES (page-aligned storage in 2 MB pages,
// O_DIRECT where the filesystem allows) to a temporary file in DIR, fsyncs it, renames it over
// ckpt-K, fsyncs DIR and removes the file three back: what Lockstep's checkpoint writer does to
// the disk, without the trainer. Each write's start and end (CLOCK_MONOTONIC seconds, the clock
// the step trace uses) go to LOG, one line each, so the steps it slows can be lined up with it.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: outside-writer DIR BYTES PERIOD_MS SECONDS LOG\n"); return 2; }
    const char *dir = argv[1];
    size_t bytes = (size_t)atoll(argv[2]);
    double period = atof(argv[3]) / 1e3, seconds = atof(argv[4]);
    FILE *log = fopen(argv[5], "w");
    if (!log || bytes == 0 || period <= 0) { fprintf(stderr, "outside-writer: bad arguments or cannot open %s\n", argv[5]); return 2; }
    setpriority(PRIO_PROCESS, 0, 19);
    size_t huge = 2u << 20, size = (bytes + huge - 1) / huge * huge;
    void *buffer = aligned_alloc(huge, size);
    madvise(buffer, size, MADV_HUGEPAGE);
    memset(buffer, 1, size);
    char tmp[4096], name[4096];
    snprintf(tmp, sizeof tmp, "%s/.ckpt.tmp", dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd < 0) { perror(dir); return 1; }
    double end = now() + seconds, next = now() + period;
    for (int k = 0; now() < end; k++) {
        while (now() < next) usleep(500);
        next += period;
        double t0 = now();
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0644);
        size_t padded = (bytes + 4095) / 4096 * 4096;
        if (fd < 0 || pwrite(fd, buffer, padded, 0) != (ssize_t)padded) {
            if (fd >= 0) close(fd);
            fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);   // no O_DIRECT here: the page cache
            if (fd < 0 || pwrite(fd, buffer, bytes, 0) != (ssize_t)bytes) { perror(tmp); return 1; }
        }
        if (ftruncate(fd, (off_t)bytes) != 0 || fsync(fd) != 0) { perror(tmp); return 1; }
        close(fd);
        snprintf(name, sizeof name, "%s/ckpt-%d", dir, k);
        if (rename(tmp, name) != 0) { perror(name); return 1; }
        fsync(dfd);
        if (k >= 3) { snprintf(name, sizeof name, "%s/ckpt-%d", dir, k - 3); unlink(name); }
        fprintf(log, "%.6f\t%.6f\n", t0, now());
        fflush(log);   // the script stops this process with a signal
    }
    fclose(log);
    return 0;
}
