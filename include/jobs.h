/* The hooks owed: each changed map's on_change, then each reload a changed
 * map names, once. They run one at a time in config order; a failed one is
 * retried with a capped exponential backoff until it succeeds or a newer
 * change of its map supersedes it. The set is kept in STATE_DIR/owed-hooks
 * (written before a map is replaced), so a hook owed when the process dies
 * runs at the next start. */
#pragma once

#include <stdbool.h>
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

/* Records the cycle's results: maps about to change become owed (with
 * their reloads), every rendered map's hash and row count is kept for the
 * hooks' environment. Then persists the owed set. Call between
 * sync_render() and sync_commit(). */
void jobs_prepare(struct jobs *j, const struct sync_cycle *cy);

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
unsigned jobs_running(const struct jobs *j);

/* Hooks that failed since jobs_new (for --once's exit status). */
unsigned jobs_failures(const struct jobs *j);
