/* The admin panel's database in PostgreSQL, read-only: the driver behind
 * db.h for driver = postgresql. libpq's result codes stay inside
 * db-pg.c; callers get negative errno values and pgdb_errmsg(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pgdb;
struct pgdb_query;
struct db_row;
typedef struct pg_conn PGconn;

/* Why a conninfo (key = value pairs or a postgresql:// URI) cannot be
 * used, or NULL: it does not parse, or it holds a password (a password
 * belongs in a passfile, not in the configuration's text). The text is
 * static or thread-local, valid until the next call. */
const char *pg_conninfo_problem(const char *conninfo);

/* The statement that runs a map query: exactly its rows, as text, sorted
 * by key lower-cased in ASCII only (lower() under COLLATE "C", as
 * SQLite's lower() and mapsyncd do),
 * in byte order (COLLATE "C"), then by value; NULLs first, as SQLite sorts
 * them. A trailing ';' is dropped. malloc'd; NULL when out of memory. */
char *pg_wrap_query(const char *sql);

/* Connects (blocking, connect_timeout 10 s unless the conninfo says
 * otherwise) with application_name mapsyncd and client_encoding UTF8.
 * passfile may be NULL. NULL on failure with the reason in err. */
PGconn *pg_connect(const char *conninfo, const char *passfile, char *err, size_t errlen);

/* Connects; each transaction waits at most lock_timeout_ms for a lock
 * (busy_timeout_ms; 0 counts as 1 ms), then fails with -EBUSY.
 * 0, or -ECONNREFUSED, -EACCES, -ENOMEM...; *errmsg (may be
 * NULL) then points to a thread-local description valid until the next
 * call. */
int pgdb_open(const char *conninfo, const char *passfile, uint64_t lock_timeout_ms, struct pgdb **ret,
              const char **errmsg);
struct pgdb *pgdb_close(struct pgdb *db);

/* BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY: every query until
 * pgdb_end() sees one snapshot. A connection found broken is reset once
 * first. */
int pgdb_begin(struct pgdb *db);
/* COMMIT. */
void pgdb_end(struct pgdb *db);
const char *pgdb_errmsg(struct pgdb *db);

/* Prepares a map query (see pg_wrap_query); -EINVAL with pgdb_errmsg()
 * for bad SQL or a column count other than two. Each query runs under a
 * savepoint of its own, so that one map's bad SQL fails that map only.
 * One query at a time per connection. */
int pgdb_query_new(struct pgdb *db, const char *sql, struct pgdb_query **ret);
/* Next row (streamed: single-row mode): 1 and *row filled, valid until
 * the next call; 0 at the end; or a negative errno. */
int pgdb_query_next(struct pgdb_query *q, struct db_row *row);
struct pgdb_query *pgdb_query_free(struct pgdb_query *q);
