/* Read-only access to the admin panel's SQLite database; a connection to
 * PostgreSQL instead (driver = postgresql) hands each call to db-pg.c. */
#include "db.h"

#include <sqlite3.h>

#include "config.h"
#include "db-pg.h"
#include "util.h"

struct db {
        struct pgdb *pg; /* driver = postgresql: everything goes there */
        sqlite3 *handle;
        char *path;
        char errmsg[512];
        void *memo;
        void (*free_memo)(void *memo);
};

struct db_query {
        struct pgdb_query *pg;
        struct db *db;
        sqlite3_stmt *stmt;
};

static int errno_from_sqlite(int rc) {
        switch (rc & 0xff) {
        case SQLITE_OK:
                return 0;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CANTOPEN:
                return -ENOENT;
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
                return -EBADMSG;
        case SQLITE_IOERR:
        case SQLITE_FULL:
                return -EIO;
        case SQLITE_INTERRUPT:
                return -EINTR;
        default:
                return -EINVAL;
        }
}

static int fail(struct db *db, int rc) {
        snprintf(db->errmsg, sizeof(db->errmsg), "%s", sqlite3_errmsg(db->handle));
        return errno_from_sqlite(rc);
}

/* file: URI for path with ?mode=ro; path bytes that mean something in a
 * URI are %-escaped. */
static char *uri_for(const char *path) {
        static const char hex[] = "0123456789ABCDEF";
        size_t n = strlen(path);
        char *uri = malloc(5 + 3 * n + 9), *o = uri;

        if (!uri)
                return NULL;
        o = stpcpy(o, "file:");
        for (const unsigned char *s = (const unsigned char *)path; *s; s++) {
                if (*s == '%' || *s == '?' || *s == '#' || *s <= 0x20 || *s >= 0x7f) {
                        *o++ = '%';
                        *o++ = hex[*s >> 4];
                        *o++ = hex[*s & 15];
                } else
                        *o++ = (char)*s;
        }
        strcpy(o, "?mode=ro");
        return uri;
}

int db_open(const char *path, uint64_t busy_timeout_ms, struct db **ret, const char **errmsg) {
        static __thread char msg[512];
        _cleanup_free_ char *uri = NULL;
        struct db *db;
        int rc, r;

        /* SQLite's memory statistics take a global mutex on every malloc and
         * free: 14% of a cycle's instructions (bench/README.md). Only
         * possible before SQLite initialises; later calls change nothing. */
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

        db = calloc(1, sizeof(*db));
        uri = uri_for(path);
        if (!db || !uri || !(db->path = strdup(path))) {
                db_close(db);
                if (errmsg)
                        *errmsg = "out of memory";
                return -ENOMEM;
        }

        rc = sqlite3_open_v2(uri, &db->handle, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc == SQLITE_OK) {
                sqlite3_busy_timeout(db->handle, (int)busy_timeout_ms);
                sqlite3_extended_result_codes(db->handle, 1);
                /* Reading the schema proves the file is a database now,
                 * not at the first map. */
                rc = sqlite3_exec(db->handle, "PRAGMA schema_version", NULL, NULL, NULL);
        }
        if (rc != SQLITE_OK) {
                r = errno_from_sqlite(rc);
                if (r == -ENOENT && access(path, F_OK) == 0)
                        r = -EACCES;
                snprintf(msg, sizeof(msg), "%s",
                         r == -ENOENT ? "no such file"
                         : db->handle ? sqlite3_errmsg(db->handle)
                                      : sqlite3_errstr(rc));
                if (errmsg)
                        *errmsg = msg;
                db_close(db);
                return r;
        }
        *ret = db;
        return 0;
}

int db_open_config(const struct config *c, struct db **ret, const char **errmsg) {
        struct db *db;
        int r;

        if (c->db_driver == DB_DRIVER_SQLITE)
                return db_open(c->db_path, c->busy_timeout_ms, ret, errmsg);
        db = calloc(1, sizeof(*db));
        if (!db) {
                if (errmsg)
                        *errmsg = "out of memory";
                return -ENOMEM;
        }
        r = pgdb_open(c->pg_conninfo, c->pg_passfile, &db->pg, errmsg);
        if (r < 0) {
                free(db);
                return r;
        }
        *ret = db;
        return 0;
}

struct db *db_close(struct db *db) {
        if (!db)
                return NULL;
        if (db->memo && db->free_memo)
                db->free_memo(db->memo);
        pgdb_close(db->pg);
        sqlite3_close_v2(db->handle);
        free(db->path);
        free(db);
        return NULL;
}

int db_begin(struct db *db) {
        if (db->pg)
                return pgdb_begin(db->pg);
        int rc = sqlite3_exec(db->handle, "BEGIN", NULL, NULL, NULL);

        if (rc != SQLITE_OK)
                return fail(db, rc);
        rc = sqlite3_exec(db->handle, "PRAGMA schema_version", NULL, NULL, NULL);
        if (rc != SQLITE_OK) {
                int r = fail(db, rc);
                sqlite3_exec(db->handle, "ROLLBACK", NULL, NULL, NULL);
                return r;
        }
        return 0;
}

void db_end(struct db *db) {
        if (db->pg) {
                pgdb_end(db->pg);
                return;
        }
        if (!sqlite3_get_autocommit(db->handle))
                sqlite3_exec(db->handle, "COMMIT", NULL, NULL, NULL);
}

const char *db_errmsg(struct db *db) {
        if (db->pg)
                return pgdb_errmsg(db->pg);
        return db->errmsg;
}

int db_data_version(struct db *db, int64_t *ret) {
        sqlite3_stmt *stmt = NULL;
        int rc;

        if (db->pg) {
                /* PostgreSQL tells of changes by NOTIFY; nothing to compare. */
                *ret = 0;
                return 0;
        }
        rc = sqlite3_prepare_v2(db->handle, "PRAGMA data_version", -1, &stmt, NULL);
        if (rc == SQLITE_OK)
                rc = sqlite3_step(stmt);
        if (rc != SQLITE_ROW) {
                int r = fail(db, rc);
                sqlite3_finalize(stmt);
                return r;
        }
        *ret = sqlite3_column_int64(stmt, 0);
        sqlite3_finalize(stmt);
        return 0;
}

void *db_memo(const struct db *db) {
        return db->memo;
}

void db_set_memo(struct db *db, void *memo, void (*free_memo)(void *memo)) {
        if (db->memo && db->free_memo && db->memo != memo)
                db->free_memo(db->memo);
        db->memo = memo;
        db->free_memo = free_memo;
}

bool db_has_moved(struct db *db) {
        int moved = 0;

        if (db->pg)
                return false;
        if (sqlite3_file_control(db->handle, "main", SQLITE_FCNTL_HAS_MOVED, &moved) != SQLITE_OK)
                return false;
        return moved != 0;
}

int db_query_new(struct db *db, const char *sql, struct db_query **ret) {
        return db_query_new_mode(db, sql, DB_QUERY_SORTED, ret);
}

int db_query_new_mode(struct db *db, const char *sql, enum db_query_mode mode, struct db_query **ret) {
        _cleanup_free_ char *body = strdup(sql), *wrapped = NULL;
        struct db_query *q;
        size_t n;
        int rc;

        if (!body)
                return -ENOMEM;
        if (db->pg) {
                struct pgdb_query *pq = NULL;
                int r = pgdb_query_new(db->pg, sql, &pq);
                if (r < 0)
                        return r;
                q = calloc(1, sizeof(*q));
                if (!q) {
                        pgdb_query_free(pq);
                        return -ENOMEM;
                }
                q->db = db;
                q->pg = pq;
                *ret = q;
                return 0;
        }
        /* A trailing ';' would end the statement inside the wrapper. */
        n = strlen(body);
        while (n > 0 && strchr(" \t\r\n;", body[n - 1]))
                body[--n] = '\0';
        if (asprintf(&wrapped,
                     "WITH mapsyncd_q(k, v) AS (\n%s\n)\n"
                     "SELECT k, v FROM mapsyncd_q ORDER BY %s",
                     body,
                     mode == DB_QUERY_STREAM ? "k COLLATE BINARY" : "lower(k) COLLATE BINARY, v COLLATE BINARY") < 0)
                return -ENOMEM;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->db = db;
        rc = sqlite3_prepare_v2(db->handle, wrapped, -1, &q->stmt, NULL);
        if (rc != SQLITE_OK) {
                int r = fail(db, rc);
                /* "table mapsyncd_q has 3 values for 2 columns" names our
                 * wrapper; say it in the config's terms. */
                if (strstr(db->errmsg, "values for 2 columns"))
                        snprintf(db->errmsg, sizeof(db->errmsg),
                                 "the query must return exactly two columns (key, value)");
                db_query_free(q);
                return r;
        }
        *ret = q;
        return 0;
}

static enum db_type type_of(int t) {
        switch (t) {
        case SQLITE_INTEGER:
                return DB_INTEGER;
        case SQLITE_FLOAT:
                return DB_REAL;
        case SQLITE_BLOB:
                return DB_BLOB;
        case SQLITE_NULL:
                return DB_NULL;
        default:
                return DB_TEXT;
        }
}

bool db_is_utf8(struct db *db) {
        sqlite3_stmt *stmt = NULL;
        bool utf8 = false;

        if (db->pg)
                return false; /* sorted by PostgreSQL, never streamed */
        if (sqlite3_prepare_v2(db->handle, "PRAGMA encoding", -1, &stmt, NULL) == SQLITE_OK &&
            sqlite3_step(stmt) == SQLITE_ROW) {
                const unsigned char *e = sqlite3_column_text(stmt, 0);
                utf8 = e && strcmp((const char *)e, "UTF-8") == 0;
        }
        sqlite3_finalize(stmt);
        return utf8;
}

int db_query_next(struct db_query *q, struct db_row *row) {
        if (q->pg)
                return pgdb_query_next(q->pg, row);
        int rc = sqlite3_step(q->stmt);

        if (rc == SQLITE_DONE)
                return 0;
        if (rc != SQLITE_ROW)
                return fail(q->db, rc);

        /* The types before any conversion; the number, then text, then its
         * length: that order keeps the pointers valid. */
        int tk = sqlite3_column_type(q->stmt, 0), tv = sqlite3_column_type(q->stmt, 1);

        row->key_type = type_of(tk);
        row->value_type = type_of(tv);
        if (tv == SQLITE_INTEGER)
                row->value_int = sqlite3_column_int64(q->stmt, 1);
        else if (tv == SQLITE_FLOAT)
                row->value_real = sqlite3_column_double(q->stmt, 1);

        row->key = tk == SQLITE_NULL ? NULL : sqlite3_column_text(q->stmt, 0);
        row->key_len = row->key ? (size_t)sqlite3_column_bytes(q->stmt, 0) : 0;
        row->value = tv == SQLITE_NULL ? NULL : sqlite3_column_text(q->stmt, 1);
        row->value_len = row->value ? (size_t)sqlite3_column_bytes(q->stmt, 1) : 0;
        if ((tk != SQLITE_NULL && !row->key) || (tv != SQLITE_NULL && !row->value))
                return -ENOMEM;
        return 1;
}

struct db_query *db_query_free(struct db_query *q) {
        if (!q)
                return NULL;
        pgdb_query_free(q->pg);
        sqlite3_finalize(q->stmt);
        free(q);
        return NULL;
}
