/* LD_PRELOAD shim for the tests: inotify as it is where it does not work.
 * NO_INOTIFY=init: inotify_init1() fails (EMFILE: the per-user instance
 * limit). NO_INOTIFY=add: inotify_add_watch() fails (ENOSPC: the watch
 * limit). NO_INOTIFY=deaf: watches are added but no event ever comes, as
 * on NFS or FUSE (each watch is put on "/" for IN_DELETE_SELF only). */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>

static const char *mode(void) {
        const char *m = getenv("NO_INOTIFY");
        return m ? m : "";
}

int inotify_init1(int flags) {
        int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "inotify_init1");

        if (strcmp(mode(), "init") == 0) {
                errno = EMFILE;
                return -1;
        }
        return real(flags);
}

int inotify_init(void) {
        return inotify_init1(0);
}

int inotify_add_watch(int fd, const char *path, uint32_t mask) {
        int (*real)(int, const char *, uint32_t) =
                (int (*)(int, const char *, uint32_t))dlsym(RTLD_NEXT, "inotify_add_watch");

        if (strcmp(mode(), "add") == 0) {
                errno = ENOSPC;
                return -1;
        }
        if (strcmp(mode(), "deaf") == 0)
                return real(fd, "/", IN_DELETE_SELF | (mask & IN_ONLYDIR));
        return real(fd, path, mask);
}
