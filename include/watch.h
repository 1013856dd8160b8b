/* Watching the database: an inotify source on its directory, filtered to
 * the database, its -wal and its -journal, so that a commit (which in WAL
 * mode only touches -wal) or a replacement by rename or delete and create
 * is seen. Events only say "look": the caller confirms a change with PRAGMA
 * data_version and the file's identity. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

struct watch;

enum {
        WATCH_OVERFLOW = 1 << 0,  /* the kernel dropped events: only a full sync is safe */
        WATCH_LOST = 1 << 1,      /* the directory went away: watch it anew */
        WATCH_WAL_WRITE = 1 << 2, /* -wal was written: a commit may follow, invisibly */
};

/* flags: WATCH_* bits, 0 for any other event on the database's files. */
typedef void (*watch_fn)(void *userdata, unsigned flags);

/* Watches the directory of db_path. -ENOENT when it does not exist. */
int watch_new(sd_event *event, const char *db_path, watch_fn fn, void *userdata, struct watch **ret);

/* NULL-safe; returns NULL. */
struct watch *watch_free(struct watch *w);
