/* LD_PRELOAD shim for the fault suite: makes opening a file named
 * FAIL_OPEN_NAME (its last path component) for reading fail with errno
 * FAIL_OPEN_ERRNO (a number: 13 EACCES, 24 EMFILE, 5 EIO), as a broken
 * disk, a full descriptor table or an unreadable file would. Opens that
 * create (O_CREAT) are not touched. */
/* Every name is defined below: no 64-bit redirection of open(). */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int should_fail(const char *path, int flags) {
        const char *name = getenv("FAIL_OPEN_NAME"), *e = getenv("FAIL_OPEN_ERRNO"), *base;

        if (!name || !e || !path || (flags & O_CREAT) || (flags & O_ACCMODE) != O_RDONLY)
                return 0;
        base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (strcmp(base, name) != 0)
                return 0;
        errno = atoi(e);
        return 1;
}

static mode_t mode_arg(int flags, va_list ap) {
        return (flags & (O_CREAT | O_TMPFILE)) ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
        int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
        va_list ap;
        mode_t mode;

        va_start(ap, flags);
        mode = mode_arg(flags, ap);
        va_end(ap);
        if (should_fail(path, flags))
                return -1;
        return real(path, flags, mode);
}

int open64(const char *path, int flags, ...) {
        int (*real)(const char *, int, ...) = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open64");
        va_list ap;
        mode_t mode;

        va_start(ap, flags);
        mode = mode_arg(flags, ap);
        va_end(ap);
        if (should_fail(path, flags))
                return -1;
        return real(path, flags, mode);
}

int openat(int dir_fd, const char *path, int flags, ...) {
        int (*real)(int, const char *, int, ...) = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat");
        va_list ap;
        mode_t mode;

        va_start(ap, flags);
        mode = mode_arg(flags, ap);
        va_end(ap);
        if (should_fail(path, flags))
                return -1;
        return real(dir_fd, path, flags, mode);
}

int openat64(int dir_fd, const char *path, int flags, ...) {
        int (*real)(int, const char *, int, ...) = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, "openat64");
        va_list ap;
        mode_t mode;

        va_start(ap, flags);
        mode = mode_arg(flags, ap);
        va_end(ap);
        if (should_fail(path, flags))
                return -1;
        return real(dir_fd, path, flags, mode);
}
