/* LD_PRELOAD shim for the tests: makes fsync() and fdatasync() of a file
 * whose name ends in "-wal" take SLOW_FSYNC_MS milliseconds, as on a slow
 * disk. A WAL commit becomes visible to readers only after that fsync, long
 * after its last inotify event. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void slow_if_wal(int fd) {
        char link[64], path[4096];
        const char *ms = getenv("SLOW_FSYNC_MS");
        ssize_t n;

        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        n = readlink(link, path, sizeof(path) - 1);
        if (!ms || n < 4)
                return;
        path[n] = '\0';
        if (strcmp(path + n - 4, "-wal") == 0) {
                long v = atol(ms);
                struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
                nanosleep(&ts, NULL);
        }
}

int fsync(int fd) {
        int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
        slow_if_wal(fd);
        return real(fd);
}

int fdatasync(int fd) {
        int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
        slow_if_wal(fd);
        return real(fd);
}
