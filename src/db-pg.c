/* Read-only access to the admin panel's PostgreSQL database: one
 * REPEATABLE READ READ ONLY transaction per cycle, each map's query
 * wrapped and streamed row by row. */
#include "db-pg.h"

#include <libpq-fe.h>
#include <stdint.h>

#include "db.h"
#include "util.h"

struct pgdb {
        PGconn *conn;
        uint64_t lock_timeout_ms;
        char errmsg[512];
};

struct pgdb_query {
        struct pgdb *db;
        PGresult *row; /* the row handed out last */
        bool sent, done, failed;
        bool savepoint; /* runs under SAVEPOINT mapsyncd_map */
};

const char *pg_conninfo_problem(const char *conninfo) {
        static __thread char msg[300];
        PQconninfoOption *opts;
        char *err = NULL;
        const char *why = NULL;

        opts = PQconninfoParse(conninfo, &err);
        if (!opts) {
                size_t n;
                snprintf(msg, sizeof(msg), "not a libpq connection string: %s", err ? err : "out of memory");
                n = strlen(msg);
                while (n > 0 && msg[n - 1] == '\n')
                        msg[--n] = '\0';
                PQfreemem(err);
                return msg;
        }
        for (PQconninfoOption *o = opts; o->keyword; o++)
                if ((streq(o->keyword, "password") || streq(o->keyword, "sslpassword")) && o->val)
                        why = "holds a password; the configuration is no place for it: put it in a passfile "
                              "(passfile = ...) or use peer or certificate authentication";
        PQconninfoFree(opts);
        return why;
}

char *pg_wrap_query(const char *sql) {
        _cleanup_free_ char *body = strdup(sql);
        char *wrapped = NULL;
        size_t n;

        if (!body)
                return NULL;
        /* A trailing ';' would end the statement inside the wrapper. */
        n = strlen(body);
        while (n > 0 && strchr(" \t\r\n;", body[n - 1]))
                body[--n] = '\0';
        /* lower() under the "C" collation lower-cases ASCII bytes only, as
         * SQLite's lower() and mapsyncd do; under the database's locale it
         * would fold more (en_US: É becomes é). */
        if (asprintf(&wrapped,
                     "WITH mapsyncd_q(k, v) AS (\n%s\n)\n"
                     "SELECT k::text, v::text FROM mapsyncd_q ORDER BY lower(k::text COLLATE \"C\") COLLATE \"C\" "
                     "NULLS FIRST, v::text COLLATE \"C\" NULLS FIRST",
                     body) < 0)
                return NULL;
        return wrapped;
}

PGconn *pg_connect(const char *conninfo, const char *passfile, char *err, size_t errlen) {
        /* Later entries override earlier ones: the defaults first, then
         * what the conninfo says, then the passfile of the config. */
        const char *keys[] = {"connect_timeout", "application_name", "client_encoding", "dbname", "passfile", NULL};
        const char *values[] = {"10", "mapsyncd", "UTF8", conninfo, passfile, NULL};
        PGconn *conn;

        conn = PQconnectdbParams(keys, values, 1);
        if (!conn) {
                snprintf(err, errlen, "out of memory");
                return NULL;
        }
        if (PQstatus(conn) != CONNECTION_OK) {
                size_t n;
                snprintf(err, errlen, "%s", PQerrorMessage(conn));
                n = strlen(err);
                while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
                        err[--n] = '\0';
                for (char *c = err; *c; c++)
                        if (*c == '\n' || *c == '\t')
                                *c = ' ';
                PQfinish(conn);
                return NULL;
        }
        return conn;
}

/* The server's own words (its primary message and detail, without the
 * "ERROR:" prefix and the LINE excerpt, whose numbers count the wrapper's
 * lines), else libpq's. */
static void set_error(struct pgdb *db, const PGresult *res) {
        const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        const char *m = res ? PQresultErrorMessage(res) : "";
        size_t n;

        if (!m || !*m)
                m = PQerrorMessage(db->conn);
        if (!m || !*m)
                m = "out of memory";
        if (primary)
                snprintf(db->errmsg, sizeof(db->errmsg), "%s%s%s%s", primary, detail ? " (" : "", detail ? detail : "",
                         detail ? ")" : "");
        else
                snprintf(db->errmsg, sizeof(db->errmsg), "%s", m);
        n = strlen(db->errmsg);
        while (n > 0 && (db->errmsg[n - 1] == '\n' || db->errmsg[n - 1] == ' '))
                db->errmsg[--n] = '\0';
        for (char *c = db->errmsg; *c; c++)
                if (*c == '\n' || *c == '\t')
                        *c = ' ';
}

/* The errno of a failed command: the connection lost, or the statement. */
static int errno_of(struct pgdb *db, const PGresult *res) {
        const char *state;

        if (PQstatus(db->conn) != CONNECTION_OK)
                return -ECONNRESET;
        state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (!state)
                return -EIO;
        if (strncmp(state, "42", 2) == 0) /* syntax error or access rule violation */
                return strcmp(state, "42501") == 0 ? -EACCES : -EINVAL;
        if (strncmp(state, "53", 2) == 0) /* insufficient resources */
                return -ENOMEM;
        if (strncmp(state, "57", 2) == 0 || strncmp(state, "08", 2) == 0) /* shutdown, connection */
                return -ECONNRESET;
        if (strncmp(state, "40", 2) == 0 || strcmp(state, "55P03") == 0) /* deadlock, lock timeout */
                return -EBUSY;
        return -EIO;
}

/* Runs a command that returns no rows. */
static int exec_command(struct pgdb *db, const char *sql) {
        PGresult *res = PQexec(db->conn, sql);
        int r = 0;

        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                set_error(db, res);
                r = errno_of(db, res);
        }
        PQclear(res);
        return r;
}

int pgdb_open(const char *conninfo, const char *passfile, uint64_t lock_timeout_ms, struct pgdb **ret,
              const char **errmsg) {
        static __thread char msg[512];
        struct pgdb *db = calloc(1, sizeof(*db));

        if (!db) {
                if (errmsg)
                        *errmsg = "out of memory";
                return -ENOMEM;
        }
        db->lock_timeout_ms = lock_timeout_ms > 0 ? lock_timeout_ms : 1;
        db->conn = pg_connect(conninfo, passfile, msg, sizeof(msg));
        if (!db->conn) {
                if (errmsg)
                        *errmsg = msg;
                free(db);
                return strstr(msg, "authentication") || strstr(msg, "permission") ? -EACCES : -ECONNREFUSED;
        }
        *ret = db;
        return 0;
}

struct pgdb *pgdb_close(struct pgdb *db) {
        if (!db)
                return NULL;
        PQfinish(db->conn);
        free(db);
        return NULL;
}

int pgdb_begin(struct pgdb *db) {
        static const char begin[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
        int r;

        if (PQstatus(db->conn) != CONNECTION_OK)
                PQreset(db->conn);
        r = exec_command(db, begin);
        if (r == -ECONNRESET) {
                /* The server restarted since the last cycle: one new
                 * connection, then give up until the retry. */
                PQreset(db->conn);
                if (PQstatus(db->conn) != CONNECTION_OK) {
                        set_error(db, NULL);
                        return -ECONNRESET;
                }
                r = exec_command(db, begin);
        }
        if (r == 0) {
                /* A migration's ACCESS EXCLUSIVE lock would hold the cycle,
                 * and the event loop with it: give up after busy_timeout_ms
                 * as with SQLite's write lock, and retry. */
                char set[80];
                snprintf(set, sizeof(set), "SET LOCAL lock_timeout = '%llums'",
                         (unsigned long long)db->lock_timeout_ms);
                r = exec_command(db, set);
                if (r < 0)
                        (void)exec_command(db, "ROLLBACK");
        }
        return r;
}

void pgdb_end(struct pgdb *db) {
        if (PQtransactionStatus(db->conn) != PQTRANS_IDLE)
                (void)exec_command(db, "COMMIT");
}

const char *pgdb_errmsg(struct pgdb *db) {
        return db->errmsg;
}

int pgdb_query_new(struct pgdb *db, const char *sql, struct pgdb_query **ret) {
        _cleanup_free_ char *wrapped = pg_wrap_query(sql);
        struct pgdb_query *q;
        PGresult *res;
        bool savepoint;
        int r;

        if (!wrapped)
                return -ENOMEM;
        savepoint = PQtransactionStatus(db->conn) == PQTRANS_INTRANS;
        if (savepoint && (r = exec_command(db, "SAVEPOINT mapsyncd_map")) < 0)
                return r;

        /* The column count of the query itself: the wrapper's "(k, v)"
         * would take the first two of three without a word. */
        res = PQprepare(db->conn, "", sql, 0, NULL);
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                PQclear(res);
                res = PQdescribePrepared(db->conn, "");
                if (PQresultStatus(res) == PGRES_COMMAND_OK && PQnfields(res) != 2) {
                        snprintf(db->errmsg, sizeof(db->errmsg),
                                 "the query must return exactly two columns (key, value), not %d", PQnfields(res));
                        PQclear(res);
                        r = -EINVAL;
                        goto fail;
                }
        }
        if (PQresultStatus(res) == PGRES_COMMAND_OK) {
                PQclear(res);
                res = PQprepare(db->conn, "", wrapped, 0, NULL);
        }
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                set_error(db, res);
                r = errno_of(db, res);
                PQclear(res);
                goto fail;
        }
        PQclear(res);

        q = calloc(1, sizeof(*q));
        if (!q) {
                r = -ENOMEM;
                goto fail;
        }
        q->db = db;
        q->savepoint = savepoint;
        *ret = q;
        return 0;
fail:
        if (savepoint && r != -ECONNRESET)
                (void)exec_command(db, "ROLLBACK TO SAVEPOINT mapsyncd_map");
        return r;
}

int pgdb_query_next(struct pgdb_query *q, struct db_row *row) {
        struct pgdb *db = q->db;
        PGresult *res;

        PQclear(q->row);
        q->row = NULL;
        if (q->done)
                return 0;
        if (q->failed)
                return -EIO;
        if (!q->sent) {
                q->sent = true;
                if (!PQsendQueryPrepared(db->conn, "", 0, NULL, NULL, NULL, 0) || !PQsetSingleRowMode(db->conn)) {
                        set_error(db, NULL);
                        q->failed = true;
                        return errno_of(db, NULL);
                }
        }
        res = PQgetResult(db->conn);
        switch (PQresultStatus(res)) {
        case PGRES_SINGLE_TUPLE:
                q->row = res;
                row->key = PQgetisnull(res, 0, 0) ? NULL : (const unsigned char *)PQgetvalue(res, 0, 0);
                row->key_len = row->key ? (size_t)PQgetlength(res, 0, 0) : 0;
                row->value = PQgetisnull(res, 0, 1) ? NULL : (const unsigned char *)PQgetvalue(res, 0, 1);
                row->value_len = row->value ? (size_t)PQgetlength(res, 0, 1) : 0;
                return 1;
        case PGRES_TUPLES_OK: /* the end: a result without rows */
                PQclear(res);
                while ((res = PQgetResult(db->conn)))
                        PQclear(res);
                q->done = true;
                return 0;
        default: {
                int r;
                set_error(db, res);
                r = errno_of(db, res);
                PQclear(res);
                while ((res = PQgetResult(db->conn)))
                        PQclear(res);
                q->failed = true;
                return r;
        }
        }
}

struct pgdb_query *pgdb_query_free(struct pgdb_query *q) {
        PGresult *res;

        if (!q)
                return NULL;
        PQclear(q->row);
        /* Rows not read are read and dropped: the connection takes one
         * command at a time. */
        if (q->sent && !q->done && !q->failed)
                while ((res = PQgetResult(q->db->conn))) {
                        if (PQresultStatus(res) == PGRES_FATAL_ERROR)
                                q->failed = true;
                        PQclear(res);
                }
        if (q->savepoint && PQstatus(q->db->conn) == CONNECTION_OK)
                (void)exec_command(q->db,
                                   q->failed ? "ROLLBACK TO SAVEPOINT mapsyncd_map" : "RELEASE SAVEPOINT mapsyncd_map");
        free(q);
        return NULL;
}
