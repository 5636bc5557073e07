/* Preloaded into the sandbox's sshd: the "sshd-slow-writes MS" fault.
 *
 * Each write to a socket waits MS milliseconds first, read from the file named by
 * QUILT_SANDBOX_SLOW_WRITES (the host's faults/sshd-slow-writes; absent: no wait), re-read
 * at most five times a second. An sshd short of CPU writes late like this, and then sends
 * a command's exit status while the command's pipe still holds output: the client sees
 * data, exit status, more data, EOF (the ordering quilt-ops must read to the end).
 * Pipes and files are never slowed, only the network.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static long delay_us;
static struct timespec checked;

static void refresh(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed_ms = (now.tv_sec - checked.tv_sec) * 1000 + (now.tv_nsec - checked.tv_nsec) / 1000000;
    if (checked.tv_sec != 0 && elapsed_ms < 200) return;
    checked = now;
    delay_us = 0;
    const char *path = getenv("QUILT_SANDBOX_SLOW_WRITES");
    if (path == NULL) return;
    FILE *f = fopen(path, "r");
    if (f == NULL) return;
    double ms = 0;
    if (fscanf(f, "%lf", &ms) == 1 && ms > 0 && ms < 1000) delay_us = (long)(ms * 1000);
    fclose(f);
}

ssize_t write(int fd, const void *buf, size_t count) {
    struct stat st;
    if (real_write == NULL) real_write = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    refresh();
    if (delay_us > 0 && fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) usleep((useconds_t)delay_us);
    return real_write(fd, buf, count);
}
