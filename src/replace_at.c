/* One file replaced atomically through its directory's descriptor. */
#include "replace_at.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "util.h"

static int tmp_create(int dir_fd, char name[static sizeof(REPLACE_TMP_PREFIX) + 16]) {
        static const char hex[] = "0123456789abcdef";

        for (unsigned attempt = 0; attempt < 100; attempt++) {
                unsigned char rnd[8];
                size_t o = strlen(REPLACE_TMP_PREFIX);
                int fd;

                if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
                        uint64_t t = now_usec(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32) ^ attempt;
                        memcpy(rnd, &t, sizeof(rnd));
                }
                memcpy(name, REPLACE_TMP_PREFIX, o);
                for (size_t i = 0; i < sizeof(rnd); i++) {
                        name[o++] = hex[rnd[i] >> 4];
                        name[o++] = hex[rnd[i] & 15];
                }
                name[o] = '\0';
                fd = openat(dir_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
                if (fd >= 0 || errno != EEXIST)
                        return fd < 0 ? -errno : fd;
        }
        return -EEXIST;
}

int replace_file_at(int dir_fd, const char *name, const void *data, size_t len, const struct replace_opts *o) {
        char tmp[sizeof(REPLACE_TMP_PREFIX) + 16];
        _cleanup_close_ int fd = -1;
        const unsigned char *p = data;
        int r;

        fd = tmp_create(dir_fd, tmp);
        if (fd < 0)
                return fd;
        if ((o->uid != (uid_t)-1 || o->gid != (gid_t)-1) && fchown(fd, o->uid, o->gid) < 0)
                goto fail;
        if (fchmod(fd, o->mode) < 0)
                goto fail;
        while (len > 0) {
                ssize_t k = write(fd, p, len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        goto fail;
                p += k;
                len -= (size_t)k;
        }
        if (fsync(fd) < 0)
                goto fail;
        if (renameat(dir_fd, tmp, dir_fd, name) < 0)
                goto fail;
        if (o->sync_dir && fsync(dir_fd) < 0)
                return -errno; /* renamed: only its durability is in doubt */
        return 0;
fail:
        r = -errno;
        unlinkat(dir_fd, tmp, 0);
        return r;
}
