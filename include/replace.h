/* Replacing a file atomically, the one way every file of mapsyncd is
 * written (maps, the owed-hooks state file, metrics_file): the directory is
 * opened once (O_DIRECTORY | O_NOFOLLOW) and everything happens relative to
 * it; the new content goes into a temporary file ".NAME.XXXXXX" created
 * there with O_EXCL and mode 0600; owner, mode and mtime are set on it,
 * it is fsynced, renamed over NAME (renameat) and the directory is fsynced.
 * A reader sees the old file or the new one, never a part; a crash leaves
 * at most a temporary file, which replace_sweep() removes at the next
 * start. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

/* The random part of a temporary name: mkostemp's six characters. */
#define REPLACE_TMP_RANDOM 6

/* What the new file gets. */
struct replace_meta {
        unsigned mode;                /* permission bits, at most 0777 */
        uid_t uid;                    /* (uid_t)-1: this process's own */
        gid_t gid;                    /* (gid_t)-1: this process's own */
        const struct timespec *mtime; /* NULL: now */
};

/* One replacement in progress. */
struct replace {
        int dir_fd; /* not owned: the caller's directory */
        int fd;     /* the temporary file; -1 while suspended or done */
        dev_t dev;  /* of the temporary file, to find it again */
        ino_t ino;
        char name[NAME_MAX + 1]; /* the file to replace, in dir_fd */
        char tmp[NAME_MAX + 1];  /* the temporary file's name; "" when none */
        const char *step;        /* what failed last: "create", "write", "rename"... */
        int dir_sync_error;      /* after a commit: errno of the directory fsync, 0 when it worked */
};

/* Opens a directory to replace files in (O_RDONLY | O_DIRECTORY |
 * O_NOFOLLOW | O_CLOEXEC): a symlink in the directory's place is refused
 * (-ELOOP or -ENOTDIR). Returns the fd or a negative errno. */
int replace_open_dir(const char *dir);

/* Creates the temporary file for `name` (a plain file name, no '/') in
 * dir_fd. Returns 0 or a negative errno (r->step says "create"). */
int replace_begin(struct replace *r, int dir_fd, const char *name);

/* Appends bytes to the temporary file. */
int replace_write(struct replace *r, const void *data, size_t n);

/* Closes the temporary file's descriptor, keeping the file: a caller with
 * many replacements in flight holds no descriptor for the waiting ones. */
int replace_suspend(struct replace *r);

/* Opens the suspended temporary file again, in dir_fd (which must name the
 * same directory), and checks by device and inode that it is still the
 * file replace_begin() created. -ESTALE when it is not. */
int replace_resume(struct replace *r, int dir_fd);

/* Sets owner, mode and mtime of the temporary file, fsyncs it, renames it
 * over the name and fsyncs the directory. Resumes a suspended file first.
 * Returns 0 when the new file is in place (r->dir_sync_error tells whether
 * the directory sync failed, which only matters after a power loss), or a
 * negative errno with r->step naming what failed; then the temporary file
 * is still there for replace_abort(). */
int replace_commit(struct replace *r, const struct replace_meta *meta);

/* Closes and removes the temporary file, if any; safe to call twice. */
void replace_abort(struct replace *r);

/* The whole sequence for a small file held in memory: opens path's
 * directory, writes data, commits. On failure *step (may be NULL) names
 * what failed. */
int replace_file(const char *path, const void *data, size_t n, const struct replace_meta *meta, const char **step);

/* Whether entry is a temporary name of `name`: ".NAME." plus six letters or
 * digits. */
bool replace_is_temp_name(const char *entry, const char *name);

/* Removes leftovers of earlier runs in dir_fd: temporary files of `name`
 * (replace_is_temp_name) that are regular files owned by this process's
 * user, and nothing else. Returns how many were removed, or a negative
 * errno when the directory could not be read. The caller must hold the
 * instance lock, or it may remove another run's file in flight. */
int replace_sweep(int dir_fd, const char *name);
