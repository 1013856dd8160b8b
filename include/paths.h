/* The files a configuration names, resolved to what they really are, and
 * the rule that an output can never be one of mapsyncd's other files: the
 * database (and its -wal, -shm and -journal), the configuration, the state
 * directory's files, the metrics file, or another map's output. Checked by
 * resolved path and by device and inode when the configuration is loaded
 * (and reloaded), and by device and inode again when a map is written. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

#include "config.h"

/* Resolves path to an absolute path without symlinks, "." or "..": with
 * realpath(3) when it exists; else its directory's realpath plus its name;
 * else lexically. Returns a new string or NULL (out of memory). */
char *paths_resolve(const char *path);

/* Checks every path of c (loaded from c->path) and rewrites each map's
 * output to its resolved form. Appends one "FILE:LINE: ..." message per
 * problem to *errors and returns -EINVAL when there is any, -ENOMEM, or 0. */
int paths_check_config(struct config *c, struct config_errors *errors);

/* Whether st (a file about to be read or replaced as an output) is one of
 * the protected files of c, by device and inode; then *what (of size n)
 * says which ("the database /var/lib/x.sqlite"). */
bool paths_protected(const struct config *c, const struct stat *st, char *what, size_t n);
