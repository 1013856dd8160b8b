/* --check and --dry-run: what a sync would do, without doing it. */
#pragma once

#include "config.h"

/* Opens the database, prepares every query, checks every output directory
 * and the state directory. Prints each problem as "FILE:LINE: message" (or
 * "FILE: message" for a default value, which has no line) on
 * stderr. Returns the exit status: 0, or 1. */
int check_run(const struct config *c);

/* Renders every map and prints, per map, "unchanged" or "would change:
 * +A -R lines" on stdout; writes nothing and runs no hook. Returns the
 * exit status: 0, or 1 when a map or the database failed. */
int check_dry_run(const struct config *c);
