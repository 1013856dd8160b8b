/* LD_PRELOAD shim for the tests: makes renameat() and unlinkat() of a name
 * in a directory whose path ends in SLOW_RENAME_DIR take SLOW_RENAME_MS
 * milliseconds, so that a test can SIGKILL mapsyncd in the middle of a
 * file set's update (test_files). */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void slow_if_dir(int dir_fd) {
        const char *ms = getenv("SLOW_RENAME_MS"), *dir = getenv("SLOW_RENAME_DIR");
        char link[64], path[4096];
        ssize_t n;
        size_t k;

        if (!ms || !dir)
                return;
        snprintf(link, sizeof(link), "/proc/self/fd/%d", dir_fd);
        n = readlink(link, path, sizeof(path) - 1);
        if (n <= 0)
                return;
        path[n] = '\0';
        k = strlen(dir);
        if ((size_t)n >= k && strcmp(path + n - k, dir) == 0) {
                long v = atol(ms);
                struct timespec ts = {v / 1000, (v % 1000) * 1000000L};
                nanosleep(&ts, NULL);
        }
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
        int (*real)(int, const char *, int, const char *) =
                (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");
        slow_if_dir(newdirfd);
        return real(olddirfd, oldpath, newdirfd, newpath);
}

int unlinkat(int dirfd, const char *pathname, int flags) {
        int (*real)(int, const char *, int) = (int (*)(int, const char *, int))dlsym(RTLD_NEXT, "unlinkat");
        slow_if_dir(dirfd);
        return real(dirfd, pathname, flags);
}
