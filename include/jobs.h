/* The hooks owed: each replaced map's on_change, then each reload a
 * replaced map names, once. They run one at a time in config order; a
 * failed one is retried with a capped exponential backoff until it
 * succeeds or a newer change of its map supersedes it. A reload keeps the
 * set of maps that caused it (MAPSYNCD_MAP) and runs only once the
 * on_change of each of them has succeeded for that map's current content:
 * a failing map hook holds its reloads back (jobs_held).
 *
 * Owed only what is installed, and no hook lost to a crash. The set is
 * kept in STATE_DIR/owed-hooks. A cycle goes:
 *   1. sync_render()   the new maps, in temporary files;
 *   2. jobs_prepare()  writes the file (fsync, rename, fsync of the
 *                      directory) with the hooks that the maps about to be
 *                      replaced would owe, and nothing in memory changes;
 *   3. sync_commit()   renames each new file over its output;
 *   4. jobs_commit()   owes the hooks of the maps whose new file is in
 *                      place, and only those; when a replace failed, the
 *                      file is written again without what it owed.
 * A crash after a rename (3) finds the hook in the file (2) and runs it at
 * the next start. A crash between 3 and 4 after a failed rename runs the
 * recorded hook at the next start for the file then in place, with the
 * hash rendered then: a needless run, never a hook for a file on no disk.
 *
 * Each hook is recorded in STATE_DIR/hook-{map,reload}-NAME.pid while it
 * runs (see hook.h), so it never runs twice at once, across restarts too:
 * a hook whose earlier run (of a killed process) still runs waits for it,
 * at most hook_timeout_s + 5 s (as long as a hook may run; its own
 * mapsyncd would have killed it by then), and then starts with a
 * warning. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "hook.h"
#include "sync.h"

struct jobs;

/* Called when no hook runs and none is due (retries may be waiting). */
typedef void (*jobs_idle_fn)(void *userdata);

/* retry: false for --once (a failed hook stays owed for the next run). */
int jobs_new(sd_event *event, struct hooks *hooks, const struct config *c, bool retry, jobs_idle_fn idle,
             void *userdata, struct jobs **ret);
struct jobs *jobs_free(struct jobs *j);

/* Adopts a new config: owed hooks carry over by map and reload name. The
 * config must outlive its use here. */
int jobs_set_config(struct jobs *j, const struct config *c);

/* Reads the owed hooks of an earlier run from the state directory. */
void jobs_load(struct jobs *j);

/* Step 2 above: records in the state file the hooks owed once cy's
 * changed maps are in place. Call between sync_render() and
 * sync_commit(). */
void jobs_prepare(struct jobs *j, const struct sync_cycle *cy);

/* Step 4 above: the maps replaced become owed (with their reloads);
 * every map whose file is in place keeps its hash and row count for the
 * hooks' environment. Call after sync_commit(). */
void jobs_commit(struct jobs *j, const struct sync_cycle *cy);

/* Starts the next due hook unless one runs or `hold` is set. */
void jobs_kick(struct jobs *j);
void jobs_hold(struct jobs *j, bool hold);

struct metrics;
/* Counts hook runs and failures there (NULL: not at all). */
void jobs_set_metrics(struct jobs *j, struct metrics *m);

/* Called after each hook run with its label ("vmailbox", "reload
 * postfix") and result. */
typedef void (*jobs_hook_fn)(void *userdata, const char *label, const struct hook_result *res);
void jobs_set_hook_observer(struct jobs *j, jobs_hook_fn fn, void *userdata);

unsigned jobs_owed(const struct jobs *j);

/* Owed reloads held back by a failed map hook; the first is described in
 * why (e.g. "reload postfix held back: the hook of map vmailbox failed"). */
unsigned jobs_held(const struct jobs *j, char *why, size_t size);
unsigned jobs_running(const struct jobs *j);

/* Hooks that failed since jobs_new (for --once's exit status). */
unsigned jobs_failures(const struct jobs *j);
