/* Atomic replacement of files, relative to one directory descriptor. */
#include "replace.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>

#include "util.h"

int replace_open_dir(const char *dir) {
        int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

        return fd < 0 ? -errno : fd;
}

static void random_suffix(char *s) {
        static const char chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        unsigned char b[REPLACE_TMP_RANDOM];

        if (getrandom(b, sizeof(b), GRND_NONBLOCK) != (ssize_t)sizeof(b)) {
                /* Only the name's uniqueness depends on it (O_EXCL does the
                 * rest): time and pid do for the rare early boot. */
                uint64_t x = now_usec(CLOCK_MONOTONIC) ^ ((uint64_t)getpid() << 32);
                for (size_t i = 0; i < sizeof(b); i++, x >>= 7)
                        b[i] = (unsigned char)x;
        }
        for (size_t i = 0; i < sizeof(b); i++)
                s[i] = chars[b[i] % (sizeof(chars) - 1)];
        s[REPLACE_TMP_RANDOM] = '\0';
}

int replace_begin(struct replace *r, int dir_fd, const char *name) {
        size_t len = strlen(name);
        struct stat st;

        *r = (struct replace){.dir_fd = dir_fd, .fd = -1, .step = "create"};
        if (len == 0 || strchr(name, '/') || streq(name, ".") || streq(name, ".."))
                return -EINVAL;
        if (len + 2 + REPLACE_TMP_RANDOM > NAME_MAX)
                return -ENAMETOOLONG;
        memcpy(r->name, name, len + 1);
        for (unsigned attempt = 0; attempt < 100; attempt++) {
                snprintf(r->tmp, sizeof(r->tmp), ".%s.", name);
                random_suffix(r->tmp + len + 2);
                /* mode 0600: private until committed. */
                r->fd = openat(dir_fd, r->tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0600);
                if (r->fd >= 0)
                        break;
                if (errno != EEXIST) {
                        int e = -errno;
                        r->tmp[0] = '\0';
                        return e;
                }
        }
        if (r->fd < 0) {
                r->tmp[0] = '\0';
                return -EEXIST;
        }
        if (fstat(r->fd, &st) < 0) {
                int e = -errno;
                replace_abort(r);
                return e;
        }
        r->dev = st.st_dev;
        r->ino = st.st_ino;
        return 0;
}

int replace_write(struct replace *r, const void *data, size_t n) {
        const char *p = data;

        r->step = "write";
        if (r->fd < 0)
                return -EBADF;
        while (n > 0) {
                ssize_t k = write(r->fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

int replace_suspend(struct replace *r) {
        if (r->fd < 0)
                return 0;
        r->step = "write";
        if (close(r->fd) < 0 && errno != EINTR) {
                r->fd = -1;
                return -errno;
        }
        r->fd = -1;
        return 0;
}

int replace_resume(struct replace *r, int dir_fd) {
        struct stat st;
        int fd;

        r->step = "reopen";
        if (r->fd >= 0)
                return 0;
        if (!r->tmp[0])
                return -ENOENT;
        r->dir_fd = dir_fd;
        fd = openat(dir_fd, r->tmp, O_RDWR | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_dev != r->dev || st.st_ino != r->ino || !S_ISREG(st.st_mode)) {
                close(fd);
                /* Someone else's file under our name: not ours to remove. */
                r->tmp[0] = '\0';
                return -ESTALE;
        }
        if (lseek(fd, 0, SEEK_END) < 0) {
                int e = -errno;
                close(fd);
                return e;
        }
        r->fd = fd;
        return 0;
}

int replace_commit(struct replace *r, const struct replace_meta *meta) {
        struct timespec ts[2];
        int e;

        e = replace_resume(r, r->dir_fd);
        if (e < 0)
                return e;
        r->step = "set the owner of";
        if ((meta->uid != (uid_t)-1 || meta->gid != (gid_t)-1) && fchown(r->fd, meta->uid, meta->gid) < 0)
                return -errno;
        /* After fchown, which may clear setuid bits (none are allowed). */
        r->step = "set the mode of";
        if (fchmod(r->fd, meta->mode & 0777) < 0)
                return -errno;
        ts[0] = (struct timespec){.tv_nsec = UTIME_NOW};
        ts[1] = meta->mtime ? *meta->mtime : (struct timespec){.tv_nsec = UTIME_NOW};
        r->step = "set the mtime of";
        if (futimens(r->fd, ts) < 0)
                return -errno;
        r->step = "write";
        if (fsync(r->fd) < 0)
                return -errno;
        r->step = "replace";
        if (renameat(r->dir_fd, r->tmp, r->dir_fd, r->name) < 0)
                return -errno;
        r->tmp[0] = '\0';
        close(r->fd);
        r->fd = -1;
        r->dir_sync_error = fsync(r->dir_fd) < 0 ? errno : 0;
        return 0;
}

void replace_abort(struct replace *r) {
        if (r->fd >= 0)
                close(r->fd);
        r->fd = -1;
        if (r->tmp[0])
                unlinkat(r->dir_fd, r->tmp, 0);
        r->tmp[0] = '\0';
}

int replace_file(const char *path, const void *data, size_t n, const struct replace_meta *meta, const char **step) {
        _cleanup_free_ char *dir = NULL;
        _cleanup_close_ int dir_fd = -1;
        const char *slash = strrchr(path, '/');
        struct replace r;
        int e;

        if (step)
                *step = "open the directory of";
        if (!slash || !slash[1])
                return -EINVAL;
        dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
        if (!dir)
                return -ENOMEM;
        dir_fd = replace_open_dir(dir);
        if (dir_fd < 0)
                return dir_fd;
        e = replace_begin(&r, dir_fd, slash + 1);
        if (e >= 0)
                e = replace_write(&r, data, n);
        if (e >= 0)
                e = replace_commit(&r, meta);
        if (step)
                *step = r.step;
        if (e < 0)
                replace_abort(&r);
        else if (r.dir_sync_error) {
                if (step)
                        *step = "sync the directory of";
                return 1;
        }
        return e < 0 ? e : 0;
}

bool replace_is_temp_name(const char *entry, const char *name) {
        size_t n = strlen(name), len = strlen(entry);

        if (len != n + 2 + REPLACE_TMP_RANDOM || entry[0] != '.' || strncmp(entry + 1, name, n) != 0 ||
            entry[n + 1] != '.')
                return false;
        for (const char *c = entry + n + 2; *c; c++)
                if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
                        return false;
        return true;
}

int replace_sweep(int dir_fd, const char *name) {
        DIR *d;
        struct dirent *de;
        int fd, n = 0;

        fd = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        d = fdopendir(fd);
        if (!d) {
                int e = -errno;
                close(fd);
                return e;
        }
        while ((de = readdir(d))) {
                struct stat st;

                if (!replace_is_temp_name(de->d_name, name))
                        continue;
                if (fstatat(dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        continue;
                if (!S_ISREG(st.st_mode) || st.st_uid != geteuid())
                        continue;
                if (unlinkat(dir_fd, de->d_name, 0) == 0)
                        n++;
        }
        closedir(d);
        return n;
}
