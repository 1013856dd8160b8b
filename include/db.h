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

/* Next row: 1 and *row filled, 0 at the end, or a negative errno. */
int db_query_next(struct db_query *q, struct db_row *row);

/* Finalizes; NULL-safe; returns NULL. */
struct db_query *db_query_free(struct db_query *q);
