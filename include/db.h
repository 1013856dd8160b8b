/* The admin panel's database, read-only. SQLite result codes stay inside
 * db.c; callers get negative errno values and db_errmsg(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct db;
struct db_query;

/* One row of a map query: key and value bytes, NULL shown as data == NULL. */
struct db_row {
        const unsigned char *key;
        size_t key_len;
        const unsigned char *value;
        size_t value_len;
        /* Longer than the row-size bound (db_set_limits): key or value is
         * then NULL and *_len holds the size it has in the database. */
        bool key_too_long;
        bool value_too_long;
};

/* Opens path read-only (it is never written, no journal is created).
 * Returns 0, or -ENOENT (missing), -EACCES, -EBUSY, -EBADMSG (not a
 * database), -EIO...; *errmsg (may be NULL) then points to a static or
 * thread-local description valid until the next call. */
int db_open(const char *path, uint64_t busy_timeout_ms, struct db **ret, const char **errmsg);

/* Closes; NULL-safe; returns NULL. */
struct db *db_close(struct db *db);

/* Starts a read transaction and takes its snapshot at once, so every
 * query until db_end() sees one moment. */
int db_begin(struct db *db);

/* Ends the read transaction. */
void db_end(struct db *db);

/* Description of the last failure on this connection. */
const char *db_errmsg(struct db *db);

/* PRAGMA data_version: changes when another connection commits. */
int db_data_version(struct db *db, int64_t *ret);

/* Whether the file this connection reads was renamed or deleted. */
bool db_has_moved(struct db *db);

/* Prepares a map query wrapped so that it yields exactly two columns in
 * canonical order (lower-cased key, then value). -EINVAL with db_errmsg()
 * for bad SQL or a column count other than two. */
int db_query_new(struct db *db, const char *sql, struct db_query **ret);

/* The row-size bound of later queries (0: none): a key or value longer
 * (in bytes) is never copied by the query: it is replaced with NULL before
 * the rows are sorted, and the row is flagged (struct db_row). */
void db_set_limits(struct db *db, uint64_t max_key_bytes, uint64_t max_value_bytes);

/* Checks a map query as written: one statement only, and read-only
 * (sqlite3_stmt_readonly). Returns 0, or -EINVAL with db_errmsg() saying
 * why. */
int db_query_check(struct db *db, const char *sql);

/* Next row: 1 and *row filled, 0 at the end, or a negative errno. */
int db_query_next(struct db_query *q, struct db_row *row);

/* Finalizes; NULL-safe; returns NULL. */
struct db_query *db_query_free(struct db_query *q);
