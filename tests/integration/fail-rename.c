/* LD_PRELOAD shim for the tests: while the file named by FAIL_RENAME_FLAG
 * exists, rename(), renameat() and renameat2() onto a path whose last
 * component is FAIL_RENAME fail with ENOSPC, as a full disk fails the
 * rename that needs a new directory block. */
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int should_fail(const char *newpath) {
        const char *name = getenv("FAIL_RENAME"), *flag = getenv("FAIL_RENAME_FLAG"), *base;

        if (!name || !flag || !newpath || access(flag, F_OK) < 0)
                return 0;
        base = strrchr(newpath, '/');
        base = base ? base + 1 : newpath;
        return strcmp(base, name) == 0;
}

int rename(const char *oldpath, const char *newpath) {
        int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");

        if (should_fail(newpath)) {
                errno = ENOSPC;
                return -1;
        }
        return real(oldpath, newpath);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath) {
        int (*real)(int, const char *, int, const char *) =
                (int (*)(int, const char *, int, const char *))dlsym(RTLD_NEXT, "renameat");

        if (should_fail(newpath)) {
                errno = ENOSPC;
                return -1;
        }
        return real(olddirfd, oldpath, newdirfd, newpath);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags) {
        int (*real)(int, const char *, int, const char *, unsigned int) =
                (int (*)(int, const char *, int, const char *, unsigned int))dlsym(RTLD_NEXT, "renameat2");

        if (should_fail(newpath)) {
                errno = ENOSPC;
                return -1;
        }
        return real(olddirfd, oldpath, newdirfd, newpath, flags);
}
