/* Watching the database: inotify on the directory that really holds it
 * (every symlink on the path resolved), filtered to the database, its -wal
 * and its -journal, so that a commit (which in WAL mode only touches -wal)
 * or a replacement by rename or delete and create is seen; and on the
 * directory of each symlink on the path, for that link's name, so that a
 * re-pointed link (a deploy tool's "current") is seen. Events only say
 * "look": the caller confirms a change with the file's identity and
 * version (db_probe). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

struct watch;

enum {
        WATCH_OVERFLOW = 1 << 0,  /* the kernel dropped events: only a full sync is safe */
        WATCH_LOST = 1 << 1,      /* a directory went away: watch it anew */
        WATCH_WAL_WRITE = 1 << 2, /* -wal was written: a commit may follow, invisibly */
        WATCH_DB_WRITE = 1 << 3,  /* the database file itself was written */
        WATCH_RELINK = 1 << 4,    /* a symlink on the path was replaced or removed */
};

/* flags: WATCH_* bits, 0 for any other event on the database's files. */
typedef void (*watch_fn)(void *userdata, unsigned flags);

/* Watches what db_path really names. -ENOENT when a directory on the way
 * does not exist; -EMFILE, -ENOSPC, -ENOSYS... when inotify cannot. */
int watch_new(sd_event *event, const char *db_path, watch_fn fn, void *userdata, struct watch **ret);

/* Whether each watched directory's path still names the directory that
 * is watched (not so after a mount over it or a rename of it). */
bool watch_is_current(const struct watch *w);

/* The real path of the database the watch was set up for. */
const char *watch_real_path(const struct watch *w);

/* How many symlinks on the path are watched. */
size_t watch_n_links(const struct watch *w);

/* Called for each symlink on the way: its real directory and its name. */
typedef int (*watch_link_fn)(void *userdata, const char *dir, const char *name);

/* Resolves path as the kernel does (the last component need not exist);
 * *real: the real path (malloc'd). link_fn may be NULL. */
int watch_resolve(const char *path, char **real, watch_link_fn link_fn, void *userdata);

/* NULL-safe; returns NULL. */
struct watch *watch_free(struct watch *w);
