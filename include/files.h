/* [files NAME] outputs: a directory of files, one per row of a two-column
 * query (file name, file content), for data that is no key/value map
 * (DKIM private keys). File names are untrusted and checked; each file is
 * replaced atomically and only when its bytes changed; a file whose row
 * left the query is removed, but only when mapsyncd wrote it: the names it
 * wrote are kept in a manifest, STATE_DIR/files-NAME.manifest. Contents
 * never reach a log line.
 *
 * Crash safety: a name is added to the manifest before its file is
 * written, and taken out only after its file was unlinked, so that after a
 * crash at any point no file of mapsyncd's is missing from the manifest.
 * Files are written through replace.h (a temporary ".NAME.XXXXXX", which
 * no valid name can be, renamed over NAME); the next commit that writes
 * sweeps such leftovers. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "db.h"

/* 255 bytes, the longest name, less what replace.h's temporary name
 * ".NAME.XXXXXX" adds: a longer name could never be written atomically. */
#define FILES_NAME_MAX    247
#define FILES_CONTENT_MAX (1024 * 1024)

struct files_set;

/* Why name (len bytes) cannot be a file name of a set, or NULL when it
 * can: only [A-Za-z0-9._-], not starting with '.', 1 to FILES_NAME_MAX
 * bytes. */
const char *files_check_name(const void *name, size_t len);

/* Why data cannot be the content of a file of this kind, or NULL. For
 * FILES_CONTENT_PEM_PRIVATE_KEY: exactly one unencrypted block
 * "-----BEGIN PRIVATE KEY-----" (or RSA PRIVATE KEY, EC PRIVATE KEY) of
 * base64 lines, ending with its END line and at most one line break, that
 * libcrypto reads as a private key. The reason never quotes the data. */
const char *files_check_content(enum files_content kind, const void *data, size_t len);

/* Phase 1, inside the caller's read transaction: runs the set's query,
 * checks every row (invalid ones follow on_invalid), reads the manifest
 * and compares with the files in the directory. c->files[index] is the
 * set. Returns 0 and *ret, or a negative errno (logged, naming the set)
 * when the set cannot be synced this cycle. */
int files_render(struct db *db, const struct config *c, size_t index, bool dry_run, struct files_set **ret);

/* Frees; NULL-safe; returns NULL. */
struct files_set *files_free(struct files_set *s);

/* After files_render: whether a file would be written or removed. */
bool files_changed(const struct files_set *s);

/* Valid rows (files of the set), files to write, files to remove, rows
 * dropped as invalid. */
uint64_t files_count(const struct files_set *s);
uint64_t files_n_written(const struct files_set *s);
uint64_t files_n_removed(const struct files_set *s);
uint64_t files_n_invalid(const struct files_set *s);

/* Names written and removed, sorted, separated by one space ("" when
 * none); the removed ones alone. Valid until files_free. */
const char *files_changed_names(const struct files_set *s);
const char *files_removed_names(const struct files_set *s);

/* Logs why rows were dropped (at most RENDER_LOG_LIMIT, then a count) at
 * the given priority; always LOG_ERR for on_invalid = fail. */
void files_log_invalid(const struct files_set *s, int priority);

/* Phase 2: puts the changes in place (manifest first, files, removals,
 * directory fsync, manifest again); corrects mode and owner of unchanged
 * files. Returns 0, or a negative errno when any step failed (logged);
 * what could be done is done. */
int files_commit(struct files_set *s);

/* The manifest's path for a set (for tests and --check). */
int files_manifest_path(const struct config *c, const struct files_config *f, char **ret);
