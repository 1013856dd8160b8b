/* The sync engine around the event loop: the first sync, hooks, and (as a
 * daemon) watching, debouncing, signals and service notifications. */
#pragma once

#include <stdbool.h>

#include "config.h"

enum daemon_mode {
        DAEMON_ONCE,  /* one full sync and its hooks, then return */
        DAEMON_WATCH, /* run until SIGTERM/SIGINT */
};

/* Runs mapsyncd on config (ownership passes to the daemon; config_path is
 * re-read on SIGHUP). Returns the process exit status: 0, or 1 when (once)
 * a map, the database or a hook failed, or (watch) setup failed. */
int daemon_run(struct config *config, const char *config_path, enum daemon_mode mode);

/* daemon_run(), the first cycle publishing what the shrink guard would
 * hold (--once --force). In watch mode SIGUSR2 does the same for one
 * cycle. */
int daemon_run_forced(struct config *config, const char *config_path, enum daemon_mode mode, bool force_shrink);
