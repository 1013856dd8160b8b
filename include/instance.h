/* One mapsyncd per state: an instance lock (flock on STATE_DIR/lock, which
 * holds the PID of its owner), taken by the daemon and by --once before
 * they write anything; and, once it is held, the removal of what an
 * earlier run killed mid-write left behind: temporary files of the
 * configured outputs, of the state files (owed hooks, owed webhook
 * deliveries, the file sets' manifests) and of the metrics file. */
#pragma once

#include <sys/types.h>

#include "config.h"

#define INSTANCE_LOCK_FILE "lock"

/* Takes the lock for c->state_dir (creating the directory, mode 0700, if
 * need be). Returns the lock's descriptor (kept open, close-on-exec, for
 * the life of the process); -EBUSY when another process holds it, after
 * logging its PID and how to make it sync; another negative errno when
 * state_dir cannot be used (logged; the caller goes on without a lock,
 * as it goes on without persisting owed hooks). */
int instance_lock(const struct config *c);

/* The PID written in a lock file, or 0 when unknown. */
pid_t instance_lock_owner(int fd);

/* Removes leftover temporary files (replace_sweep) of every output, of
 * the state files (and "owed-hooks.XXXXXX" and "owed-webhooks.XXXXXX",
 * as version 0.1 and its successors up to the webhooks' move to replace.h
 * named them) and of the metrics file; logs what it removed. Call only
 * while holding the lock. Returns how many files were removed. */
unsigned instance_sweep(const struct config *c);
