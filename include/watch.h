/* Watching the database: an inotify source on its directory, filtered to
 * the database, its -wal and its -journal, so that a commit (which in WAL
 * mode only touches -wal) or a replacement by rename or delete and create
 * is seen. Events only say "look": the caller confirms a change with PRAGMA
 * data_version and the file's identity. */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

struct watch;

/* overflow: the kernel dropped events; only a full sync is safe. lost: the
 * directory went away; the watch must be made anew. */
typedef void (*watch_fn)(void *userdata, bool overflow, bool lost);

/* Watches the directory of db_path. -ENOENT when it does not exist. */
int watch_new(sd_event *event, const char *db_path, watch_fn fn, void *userdata, struct watch **ret);

/* NULL-safe; returns NULL. */
struct watch *watch_free(struct watch *w);
