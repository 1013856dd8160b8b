/* Whether a path may be trusted by a daemon that runs as root: the file
 * and every directory above it must be owned by root or by this process's
 * user, and writable by no one else. A directory writable by group or
 * others is accepted only with the sticky bit (as /tmp), where others can
 * add names but not rename or remove ours. Used for the configuration file,
 * state_dir and the directories mapsyncd writes maps into. */
#pragma once

#include <limits.h>
#include <sys/stat.h>

/* The leaf itself may be a sticky, world-writable directory (an output
 * directory such as /tmp); without it the leaf must be writable by its
 * owner only (the configuration file, state_dir). */
#define TRUST_LEAF_STICKY_OK 1U

/* Why a path is not trusted. */
struct trust_problem {
        char path[PATH_MAX]; /* the component at fault */
        char why[160];       /* "owned by uid 1000", "writable by its group"... */
};

/* Checks the metadata of one file or directory; NULL when trusted, else a
 * static description of the problem. */
const char *trust_stat(const struct stat *st, unsigned flags);

/* Checks path (resolved with realpath(3), so symlinks count as what they
 * name) and each directory above it. Returns 0 when trusted; -EPERM with
 * *p filled when not; another negative errno (p->why says which) when a
 * component cannot be examined, e.g. -ENOENT. */
int trust_path(const char *path, unsigned flags, struct trust_problem *p);

/* trust_path() for a directory already opened (dir_fd): its own metadata
 * from fstat, its ancestors by the path. */
int trust_dir_fd(int dir_fd, const char *path, unsigned flags, struct trust_problem *p);
