/* Replacing a map file atomically. The rendering is streamed, hashed with
 * SHA-256 and compared with the current file on the way; while it matches,
 * nothing is written. At the first difference a temporary file is created
 * in the output's directory and filled; output_commit() then fsyncs it and
 * renames it over the output, so a reader sees the old file or the new one,
 * never a part. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "config.h"

#define SHA256_HEX_LEN 64

struct output;

/* Starts a rendering of m->output. With dry_run nothing is ever written:
 * the rendering is kept in memory for output_diff(). */
int output_new(const struct map_config *m, bool dry_run, struct output **ret);

/* Unlinks an uncommitted temporary file; NULL-safe; returns NULL. */
struct output *output_free(struct output *o);

/* Appends rendered bytes (a render_write_fn). */
int output_write(void *o, const void *data, size_t n);

/* Ends the rendering: flushes and hashes. */
int output_finish(struct output *o);

/* After output_finish(): whether the rendering differs from the file. */
bool output_changed(const struct output *o);

/* Hex SHA-256 of the rendering, after output_finish(). */
const char *output_sha256(const struct output *o);

/* Size in bytes of the rendering. */
uint64_t output_size(const struct output *o);

/* Makes the rendering the output: when changed, sets mode, owner and an
 * mtime at least one second past the old file's, fsyncs, renames over the
 * output and fsyncs the directory; when unchanged, only corrects mode and
 * owner of the existing file. Logs what failed, naming the file. */
int output_commit(struct output *o);

/* Dry runs: lines of the rendering missing from the file (*added) and
 * lines of the file missing from the rendering (*removed). */
int output_diff(struct output *o, uint64_t *added, uint64_t *removed);
