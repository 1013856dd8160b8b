/* Replacing one file in a directory atomically, through the directory's
 * file descriptor: a temporary file FILES_TMP_PREFIX-like ".mapsyncd-tmp.*"
 * created with O_EXCL|O_NOFOLLOW, its owner and mode set before any byte is
 * written, fsync, renameat over the name, and (optionally) fsync of the
 * directory. A reader sees the old file or the new one, never a part; a
 * symlink at the name is replaced, never followed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define REPLACE_TMP_PREFIX ".mapsyncd-tmp."

struct replace_opts {
        unsigned mode;
        uid_t uid; /* (uid_t)-1: keep the process's own */
        gid_t gid; /* (gid_t)-1: keep the process's own */
        bool sync_dir;
};

/* Writes data (len bytes) as dir_fd/name. Returns 0 or a negative errno;
 * on failure the temporary file is removed and name is as it was. */
int replace_file_at(int dir_fd, const char *name, const void *data, size_t len, const struct replace_opts *o);
