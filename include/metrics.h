/* metrics_file: counters and gauges in the Prometheus text format, for
 * node_exporter's textfile collector; the file is replaced atomically. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "sync.h"

struct metrics;

int metrics_new(struct metrics **ret);
struct metrics *metrics_free(struct metrics *m);

/* Records a sync cycle: cy is NULL when the database could not be read. */
void metrics_cycle(struct metrics *m, const struct config *c, const struct sync_cycle *cy, uint64_t duration_usec);

/* driver = postgresql: whether LISTEN is in place, and connections made
 * since the start (the metrics file shows both only once this is called). */
void metrics_listening(struct metrics *m, bool listening, uint64_t connects);

/* Records a hook's end. */
void metrics_hook(struct metrics *m, const char *hook, bool succeeded);

/* Writes the file (temporary file, fsync, rename). Returns 0 or a negative
 * errno (logged). */
int metrics_write(struct metrics *m, const char *path, unsigned hooks_owed);
