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
 * the rendering is kept in memory for output_diff(). The directory is
 * opened once (O_NOFOLLOW) and must be trusted (trust.h); the current file
 * is opened without following a symlink: absent means ENOENT (or a
 * symlink or other non-regular file, which is replaced); any other error
 * fails the map, logged. With c, a current file that is one of the files
 * an output may never be (paths.h) fails the map too. Nothing stays open
 * after output_finish(). */
int output_new_checked(const struct config *c, const struct map_config *m, bool dry_run, struct output **ret);
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

/* Whether there was a current file (then *st, may be NULL, is its stat). */
bool output_old_stat(const struct output *o, struct stat *st);

/* Lines of the current file, after output_finish() of a changed map. */
uint64_t output_old_lines(const struct output *o);

/* The content is unchanged, but the file is replaced (a new inode) to
 * correct its mode or owner: the old inode has other names (hard links),
 * which must not change. */
bool output_relinked(const struct output *o);

/* Whether committing now would have to wait for the next wall-clock second:
 * a changed passwd-format map whose file was replaced in this second. */
bool output_needs_pacing(const struct output *o);

/* Makes the rendering the output (replace.h): when changed, sets mode,
 * owner and the current time as mtime (a passwd-format map's always in
 * another whole second than the old file's: it waits for the next second
 * if need be), fsyncs, renames over the output and fsyncs the directory;
 * the directory and the file at the name are checked again by device and
 * inode first. When unchanged, only corrects mode and owner of the
 * existing file (which has no other name). Logs what failed, naming the
 * file. */
int output_commit(struct output *o);

/* Dry runs: lines of the rendering missing from the file (*added) and
 * lines of the file missing from the rendering (*removed). */
int output_diff(struct output *o, uint64_t *added, uint64_t *removed);
