/* Path trust: owner and write permission of a path and its ancestors. */
#include "trust.h"

#include <stdio.h>

#include "util.h"

const char *trust_stat(const struct stat *st, unsigned flags) {
        bool dir = S_ISDIR(st->st_mode);

        if (st->st_uid != 0 && st->st_uid != geteuid())
                return "owned by another user than root or this one";
        if (!(st->st_mode & (S_IWGRP | S_IWOTH)))
                return NULL;
        if (dir && (st->st_mode & S_ISVTX) && (flags & TRUST_LEAF_STICKY_OK))
                return NULL;
        return st->st_mode & S_IWOTH ? "writable by others" : "writable by its group";
}

static int fail(struct trust_problem *p, const char *path, size_t len, const char *why, int e) {
        snprintf(p->path, sizeof(p->path), "%.*s", (int)len, path);
        snprintf(p->why, sizeof(p->why), "%s", why);
        return e;
}

/* Checks the directories above the canonical path `real` (length len of
 * the leaf's position): each must be trusted, a sticky one accepted. */
static int check_ancestors(const char *real, size_t leaf, struct trust_problem *p) {
        for (size_t end = leaf; end > 0;) {
                struct stat st;
                const char *why;

                while (end > 0 && real[end - 1] != '/')
                        end--;
                if (end == 0)
                        break;
                /* real[0..end-1) is the parent; "/" itself when end == 1. */
                size_t n = end > 1 ? end - 1 : 1;
                char dir[PATH_MAX];

                snprintf(dir, sizeof(dir), "%.*s", (int)n, real);
                if (lstat(dir, &st) < 0)
                        return fail(p, real, n, strerror(errno), -errno);
                why = trust_stat(&st, TRUST_LEAF_STICKY_OK);
                if (why)
                        return fail(p, real, n, why, -EPERM);
                end = n == 1 ? 0 : n;
        }
        return 0;
}

int trust_path(const char *path, unsigned flags, struct trust_problem *p) {
        char real[PATH_MAX];
        struct stat st;
        const char *why;

        if (!realpath(path, real))
                return fail(p, path, strlen(path), strerror(errno), -errno);
        if (lstat(real, &st) < 0)
                return fail(p, real, strlen(real), strerror(errno), -errno);
        why = trust_stat(&st, flags);
        if (why)
                return fail(p, real, strlen(real), why, -EPERM);
        return check_ancestors(real, strlen(real), p);
}

int trust_dir_fd(int dir_fd, const char *path, unsigned flags, struct trust_problem *p) {
        char real[PATH_MAX];
        struct stat st;
        const char *why;

        if (fstat(dir_fd, &st) < 0)
                return fail(p, path, strlen(path), strerror(errno), -errno);
        why = trust_stat(&st, flags);
        if (why)
                return fail(p, path, strlen(path), why, -EPERM);
        if (!realpath(path, real))
                return fail(p, path, strlen(path), strerror(errno), -errno);
        return check_ancestors(real, strlen(real), p);
}
