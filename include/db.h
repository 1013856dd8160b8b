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

/* Storage classes of a column value (DB_TEXT is 0, so that a row built
 * from strings alone is text). */
enum db_type {
        DB_TEXT = 0,
        DB_INTEGER,
        DB_REAL,
        DB_BLOB,
        DB_NULL,
};

/* One row of a map query: key and value bytes (as text), NULL shown as
 * data == NULL; the storage classes before conversion, and a number
 * value's number (for the canonical order, order.h). */
struct db_row {
        const unsigned char *key;
        size_t key_len;
        const unsigned char *value;
        size_t value_len;
        /* Longer than the row-size bound (db_set_limits): the size in bytes
         * it has in the database (key or value is then NULL); 0 when not. */
        uint64_t key_too_long;
        uint64_t value_too_long;
        enum db_type key_type, value_type;
        int64_t value_int;
        double value_real;
};

/* How db_query_new_mode() orders the rows. */
enum db_query_mode {
        DB_QUERY_SORTED, /* canonical: ORDER BY lower(k), v (SQLite sorts) */
        DB_QUERY_STREAM, /* ORDER BY k COLLATE BINARY: an index can give it
                          * without a sort; order.h makes it canonical */
};

/* What the database's files say without opening it through SQLite: which
 * file (identity: device and inode of the real file) and which committed
 * state (version: a 64-bit hash of the main file's size, times and 100
 * header bytes, and of the wal-index header in -shm, which names the last
 * commit in -wal; with no usable -shm, of -wal's size and times). Two
 * equal versions mean the same committed data (but for a 2^-64 hash
 * collision); a checkpoint may change the version of equal data. Every
 * file is opened O_NONBLOCK, after stat() showed a regular file. */
struct db_state {
        int error; /* 0, -ENOENT, -ENOTSUP (not a regular file), -EACCES... */
        uint64_t identity;
        uint64_t version;
        bool wal_format; /* header bytes 18 and 19 say WAL */
        bool wal_exists;
};

/* Fills *ret; returns ret->error. */
int db_probe(const char *path, struct db_state *ret);

/* A short description of a db_probe() error. */
const char *db_probe_strerror(int error);

/* Opens path read-only (it is never written, no journal is created).
 * Anything but a regular file is -ENOTSUP, and no file SQLite opens can
 * block. A WAL database without -wal whose -shm cannot be created (a
 * read-only directory) is opened immutable=1: db_validate() then says
 * whether what was read still holds. Returns 0, or -ENOENT (missing),
 * -EACCES, -EBUSY, -EBADMSG (not a database), -EIO...; *errmsg (may be
 * NULL) then points to a static or thread-local description valid until
 * the next call. */
int db_open(const char *path, uint64_t busy_timeout_ms, struct db **ret, const char **errmsg);

/* Whether db_open() had to read the database as immutable. */
bool db_is_immutable(const struct db *db);

/* After reading an immutable database: 0 when it is as it was before the
 * open (same file, same version, still no -wal), -ESTALE (db_errmsg) when
 * what was read must be thrown away. 0 for any other database. */
int db_validate(struct db *db);
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

/* What the caller learnt on this connection (sync.c's memory of the maps);
 * free_memo(memo) runs at db_close() or when another memo replaces it. */
void *db_memo(const struct db *db);
void db_set_memo(struct db *db, void *memo, void (*free_memo)(void *memo));

/* Whether the database is in WAL mode now (PRAGMA journal_mode). */
bool db_in_wal_mode(struct db *db);

/* PRAGMA schema_version of the current snapshot. */
int db_schema_version(struct db *db, int64_t *ret);

struct wal_pos;

/* The wal-index header as this connection's mapping of -shm shows it now
 * (wal.h). -EOPNOTSUPP (PostgreSQL), -ENOENT (no -shm mapped: not in WAL
 * mode, or no read yet), -EAGAIN (a writer was updating it). */
int db_wal_pos(struct db *db, struct wal_pos *ret);

/* wal_pages_between() on this connection's -wal handle. */
int db_wal_pages_between(struct db *db, const struct wal_pos *from, const struct wal_pos *to, size_t max_pages,
                         uint32_t **pages, size_t *n_pages);

struct wal_frames;

/* In the current snapshot, pinned at pos: owner[i] (malloc'd) names the
 * table whose b-tree holds pages[i], found by descent from the tables'
 * roots (btree.h), or is NULL when not found so (an index, overflow or
 * freelist page). Pages are read through the connection's own handles:
 * from the -wal frame frames (brought to pos first, kept by the caller
 * across cycles) names, else from the database file. -ESTALE when the WAL
 * is not of pos's generation or was reset under the reads, -E2BIG past
 * max_frames frames, -EOPNOTSUPP, -EIO, -ENOMEM. */
int db_page_owners(struct db *db, struct wal_frames *frames, const struct wal_pos *pos, size_t max_frames,
                   const uint32_t *pages, size_t n_pages, char **owner);

/* In the current snapshot: hit[i] says whether the b-tree of table
 * tables[i] holds one of pages[] (sorted, n_pages of them), by the dbstat
 * virtual table. */
int db_tables_with_pages(struct db *db, const char *const *tables, size_t n_tables, const uint32_t *pages,
                         size_t n_pages, bool *hit);
/* Detaches the memo (and its free function) without freeing it, for the
 * next connection to the same database. */
void *db_take_memo(struct db *db, void (**free_memo)(void *memo));

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
/* The same, in the given order. */
int db_query_new_mode(struct db *db, const char *sql, enum db_query_mode mode, struct db_query **ret);

/* Whether text compares as UTF-8 bytes on this database (PRAGMA encoding
 * UTF-8), which DB_QUERY_STREAM's checks assume. False for PostgreSQL,
 * whose queries are always sorted by the server. */
bool db_is_utf8(struct db *db);

/* The tables the query reads (SQLite's authorizer at prepare time, main's
 * ordinary tables, views resolved to theirs), valid while q lives; false
 * when that cannot be told exactly (other sources such as sqlite_schema or
 * virtual tables, functions like random() or datetime('now'), PostgreSQL):
 * then only a full rendering is sure. */
bool db_query_reads(const struct db_query *q, const char *const **tables, size_t *n_tables);

/* Next row: 1 and *row filled, 0 at the end, or a negative errno. */
int db_query_next(struct db_query *q, struct db_row *row);

/* Finalizes; NULL-safe; returns NULL. */
struct db_query *db_query_free(struct db_query *q);
