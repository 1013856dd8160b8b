/* The admin panel's database, read-only. SQLite result codes stay inside
 * db.c; callers get negative errno values and db_errmsg(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct db;
struct db_query;
struct config;

/* One row of a map query: key and value bytes, NULL shown as data == NULL. */
struct db_row {
        const unsigned char *key;
        size_t key_len;
        const unsigned char *value;
        size_t value_len;
};

/* Opens path read-only (it is never written, no journal is created).
 * Returns 0, or -ENOENT (missing), -EACCES, -EBUSY, -EBADMSG (not a
 * database), -EIO...; *errmsg (may be NULL) then points to a static or
 * thread-local description valid until the next call. */
int db_open(const char *path, uint64_t busy_timeout_ms, struct db **ret, const char **errmsg);

/* Opens the database of a configuration with its driver: db_open() for
 * sqlite; for postgresql a connection (conninfo, passfile), after which
 * every function here goes to db-pg.h. Same returns as db_open(). */
int db_open_config(const struct config *c, struct db **ret, const char **errmsg);

/* Closes; NULL-safe; returns NULL. */
struct db *db_close(struct db *db);

/* Starts a read transaction and takes its snapshot at once, so every
 * query until db_end() sees one moment. */
int db_begin(struct db *db);

/* Ends the read transaction. */
void db_end(struct db *db);

/* Description of the last failure on this connection. */
const char *db_errmsg(struct db *db);

/* PRAGMA data_version: changes when another connection commits.
 * PostgreSQL: always 0 (its changes come by NOTIFY). */
int db_data_version(struct db *db, int64_t *ret);

/* Whether the file this connection reads was renamed or deleted. */
bool db_has_moved(struct db *db);

/* Prepares a map query wrapped so that it yields exactly two columns in
 * canonical order (lower-cased key, then value). -EINVAL with db_errmsg()
 * for bad SQL or a column count other than two. */
int db_query_new(struct db *db, const char *sql, struct db_query **ret);

/* Next row: 1 and *row filled, 0 at the end, or a negative errno. */
int db_query_next(struct db_query *q, struct db_row *row);

/* Finalizes; NULL-safe; returns NULL. */
struct db_query *db_query_free(struct db_query *q);
