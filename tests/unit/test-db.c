/* Unit tests of db.h on real SQLite files made with the sqlite3 library:
 * read-only opening, the query wrapper (two columns, canonical order),
 * snapshots, data_version, and that reading never writes the database. */
#include "db.h"

#include <sqlite3.h>

#include "log.h"
#include "render.h"
#include "util.h"

#include "test.h"

static char *tmpdir;

struct seed_row {
        const char *key;
        const char *value; /* NULL: SQL NULL (unless blob_len) */
        size_t blob_len;   /* > 0: value is a blob of this length */
        bool integer;      /* value is an integer (text given) */
};

/* Rows in no particular order; the same set in any order must render to
 * the same bytes. */
static const struct seed_row seed_rows[] = {
        {"bob@example.com", "bob@example.com", 0, false},
        {"Alias@Example.com", "z@example.com", 0, false},
        {"alias@example.com", "a@example.com", 0, false},
        {"ALIAS@example.com", "m@example.com", 0, false},
        {"alias@example.com", "a@example.com", 0, false}, /* exact duplicate */
        {"carol@example.com", NULL, 0, false},            /* invalid: NULL */
        {"dave@example.com", "d\n@evil\tx", 0, false},    /* invalid: newline */
        {"\xc3\x89mile@example.com", "e", 0, false},
        {"\xc3\xa9mile@example.com", "e2", 0, false},
        {NULL, "x", 0, false},  /* invalid: NULL key */
        {"a b", "c", 0, false}, /* invalid: space */
        {"Bob@Example.com", "bob2@example.com", 0, false},
        {"BOB@example.com", "bob@example.com", 0, false}, /* duplicate in another case */
        {"zed", "9", 0, false},
        {"zed", "10", 0, false},
        {"blob@example.com", "pw\0x", 4, false}, /* invalid: NUL in a blob */
        {"num@example.com", "42", 0, true},
};

static const char expected_postfix[] = "alias@example.com\ta@example.com, m@example.com, z@example.com\n"
                                       "bob@example.com\tbob2@example.com, bob@example.com\n"
                                       "num@example.com\t42\n"
                                       "zed\t10, 9\n"
                                       "\xc3\x89mile@example.com\te\n"
                                       "\xc3\xa9mile@example.com\te2\n";

static const char expected_passwd[] = "alias@example.com:a@example.com\n"
                                      "bob@example.com:bob2@example.com\n"
                                      "num@example.com:42\n"
                                      "zed:10\n"
                                      "\xc3\x89mile@example.com:e\n"
                                      "\xc3\xa9mile@example.com:e2\n";

static int exec(sqlite3 *h, const char *sql) {
        char *err = NULL;
        int rc = sqlite3_exec(h, sql, NULL, NULL, &err);

        if (rc != SQLITE_OK) {
                fprintf(stderr, "sqlite3_exec(%s): %s\n", sql, err ? err : sqlite3_errstr(rc));
                sqlite3_free(err);
        }
        return rc;
}

/* Creates a database with table t(k, v) holding rows in the order given
 * by perm (NULL: as listed). */
static bool create_db(const char *path, bool wal, const struct seed_row *rows, size_t n, const size_t *perm) {
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        bool ok = false;

        unlink(path);
        if (sqlite3_open(path, &h) != SQLITE_OK)
                goto out;
        if (exec(h, "PRAGMA synchronous=OFF") != SQLITE_OK ||
            exec(h, wal ? "PRAGMA journal_mode=WAL" : "PRAGMA journal_mode=DELETE") != SQLITE_OK ||
            exec(h, "CREATE TABLE t(k, v); CREATE TABLE other(x INTEGER); BEGIN") != SQLITE_OK)
                goto out;
        if (sqlite3_prepare_v2(h, "INSERT INTO t(k, v) VALUES (?, ?)", -1, &st, NULL) != SQLITE_OK)
                goto out;
        for (size_t i = 0; i < n; i++) {
                const struct seed_row *r = &rows[perm ? perm[i] : i];

                sqlite3_reset(st);
                if (r->key)
                        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
                else
                        sqlite3_bind_null(st, 1);
                if (r->blob_len)
                        sqlite3_bind_blob(st, 2, r->value, (int)r->blob_len, SQLITE_STATIC);
                else if (r->integer)
                        sqlite3_bind_int64(st, 2, atoll(r->value));
                else if (r->value)
                        sqlite3_bind_text(st, 2, r->value, -1, SQLITE_STATIC);
                else
                        sqlite3_bind_null(st, 2);
                if (sqlite3_step(st) != SQLITE_DONE)
                        goto out;
        }
        if (exec(h, "COMMIT") != SQLITE_OK)
                goto out;
        ok = true;
out:
        if (!ok)
                fprintf(stderr, "create_db(%s): %s\n", path, h ? sqlite3_errmsg(h) : "cannot open");
        sqlite3_finalize(st);
        sqlite3_close(h);
        return ok;
}

static bool writer_exec(const char *path, const char *sql) {
        sqlite3 *h = NULL;
        bool ok = sqlite3_open(path, &h) == SQLITE_OK && exec(h, "PRAGMA synchronous=OFF") == SQLITE_OK &&
                  exec(h, sql) == SQLITE_OK;

        sqlite3_close(h);
        return ok;
}

/* Renders one query of an open database into out. */
static int render_query(struct db *db, const char *sql, enum map_format format, struct test_buf *out,
                        struct render *stats) {
        struct map_config m = {
                .name = (char *)"m",
                .output = (char *)"/nonexistent/m",
                .format = format,
                .mode = 0640,
                .uid = (uid_t)-1,
                .gid = (gid_t)-1,
        };
        struct db_query *q = NULL;
        struct db_row row;
        struct render r;
        int k;

        k = db_query_new(db, sql, &q);
        if (k < 0)
                return k;
        render_init(&r, &m, test_buf_write, out);
        while ((k = db_query_next(q, &row)) > 0) {
                k = render_row(&r, &row);
                if (k < 0)
                        break;
        }
        if (k == 0)
                k = render_finish(&r);
        if (stats)
                *stats = r;
        render_done(&r);
        db_query_free(q);
        return k;
}

static void test_open_errors(void) {
        _cleanup_free_ char *missing = test_path(tmpdir, "missing.sqlite");
        _cleanup_free_ char *nodir = test_path(tmpdir, "no/such/dir/db.sqlite");
        _cleanup_free_ char *junk = test_path(tmpdir, "junk.sqlite");
        struct db *db = (struct db *)0x1;
        const char *msg = NULL;
        char text[2048];

        CHECK_INT(db_open(missing, 100, &db, &msg), -ENOENT);
        CHECK(db == (struct db *)0x1);
        CHECK_STR(msg, "no such file");
        CHECK_INT(access(missing, F_OK), -1); /* not created */
        msg = NULL;
        CHECK_INT(db_open(nodir, 100, &db, &msg), -ENOENT);
        CHECK_STR(msg, "no such file");
        CHECK_INT(db_open(missing, 100, &db, NULL), -ENOENT); /* errmsg may be NULL */

        /* A file that is not a database. */
        for (size_t i = 0; i < sizeof(text); i++)
                text[i] = "this is not a database\n"[i % 23];
        REQUIRE_INT(test_write_file(junk, text, sizeof(text), 0644), 0);
        msg = NULL;
        CHECK_INT(db_open(junk, 100, &db, &msg), -EBADMSG);
        CHECK(db == (struct db *)0x1);
        CHECK_STR(msg, "file is not a database");
        size_t len = 0;
        char *after = test_read_file(junk, &len);
        CHECK_MEM(after, len, text, sizeof(text));
        free(after);
        CHECK(db_close(NULL) == NULL);
}

static void test_open_ok(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "ok.sqlite");
        struct db *db = NULL;
        const char *msg = NULL;
        int64_t v = -1;

        REQUIRE(create_db(path, false, seed_rows, 2, NULL));
        REQUIRE_INT(db_open(path, 100, &db, &msg), 0);
        REQUIRE(db);
        CHECK_INT(db_data_version(db, &v), 0);
        CHECK(v >= 0);
        CHECK(!db_has_moved(db));
        CHECK(db_close(db) == NULL);

        /* Bytes that mean something in a URI, in the file name. */
        _cleanup_free_ char *odd = test_path(tmpdir, "odd name %41?mode=rw#x.sqlite");
        REQUIRE(create_db(odd, false, seed_rows, 2, NULL));
        REQUIRE_INT(db_open(odd, 100, &db, &msg), 0);
        struct test_buf out = {0};
        CHECK_INT(render_query(db, "SELECT k, v FROM t", MAP_FORMAT_POSTFIX, &out, NULL), 0);
        CHECK_STR(out.data, "alias@example.com\tz@example.com\nbob@example.com\tbob@example.com\n");
        test_buf_done(&out);
        db_close(db);
        /* Had "%41" been decoded, SQLite would have looked for this one. */
        _cleanup_free_ char *uri_like = test_path(tmpdir, "odd name A");
        CHECK_INT(access(uri_like, F_OK), -1);
}

/* The rows as db_query_next() gives them: sorted by lower(key), then
 * value, NULLs first; blobs with their length; numbers as text. */
static void test_query_rows(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "rows.sqlite");
        struct db *db = NULL;
        struct db_query *q = NULL;
        struct db_row row;
        char prev_key[256] = "";
        size_t n = 0;
        int k;

        REQUIRE(create_db(path, false, seed_rows, ARRAY_SIZE(seed_rows), NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
        REQUIRE_INT(db_query_new(db, "SELECT k, v FROM t", &q), 0);
        while ((k = db_query_next(q, &row)) > 0) {
                char lower[256] = "";

                if (n == 0) {
                        CHECK(row.key == NULL); /* NULL sorts first */
                        CHECK_UINT(row.key_len, 0);
                        CHECK_MEM(row.value, row.value_len, "x", 1);
                } else {
                        REQUIRE(row.key && row.key_len < sizeof(lower));
                        for (size_t i = 0; i < row.key_len; i++)
                                lower[i] =
                                        (char)(row.key[i] >= 'A' && row.key[i] <= 'Z' ? row.key[i] + 32 : row.key[i]);
                        if (!CHECK(strcmp(prev_key, lower) <= 0))
                                fprintf(stderr, "    \"%s\" after \"%s\"\n", lower, prev_key);
                        memcpy(prev_key, lower, sizeof(lower));
                }
                if (n == 1)
                        CHECK_MEM(row.key, row.key_len, "a b", 3);
                if (n >= 2 && n <= 5) {
                        static const char *const alias_values[] = {"a@example.com", "a@example.com", "m@example.com",
                                                                   "z@example.com"};
                        CHECK_MEM(lower, strlen(lower), "alias@example.com", 17);
                        CHECK_MEM(row.value, row.value_len, alias_values[n - 2], strlen(alias_values[n - 2]));
                }
                if (row.key && row.key_len == 16 && memcmp(row.key, "blob@example.com", 16) == 0)
                        CHECK_MEM(row.value, row.value_len, "pw\0x", 4);
                if (row.key && row.key_len == 15 && memcmp(row.key, "num@example.com", 15) == 0)
                        CHECK_MEM(row.value, row.value_len, "42", 2);
                if (row.key && row.key_len == 17 && memcmp(row.key, "carol@example.com", 17) == 0) {
                        CHECK(row.value == NULL);
                        CHECK_UINT(row.value_len, 0);
                }
                n++;
        }
        CHECK_INT(k, 0);
        CHECK_UINT(n, ARRAY_SIZE(seed_rows));
        db_query_free(q);
        CHECK(db_query_free(NULL) == NULL);
        db_close(db);
}

/* The same rows inserted in five orders (fixed seeds), in WAL and
 * rollback-journal databases, render to identical bytes. */
static void test_canonical_order(void) {
        struct test_buf first_pf = {0}, first_pw = {0};

        for (unsigned s = 0; s < 5; s++) {
                size_t perm[ARRAY_SIZE(seed_rows)];
                uint64_t state = 0x9e3779b97f4a7c15ULL * (s + 1);
                char name[32];
                struct db *db = NULL;
                struct test_buf pf = {0}, pw = {0};
                struct render st;

                for (size_t i = 0; i < ARRAY_SIZE(perm); i++)
                        perm[i] = i;
                for (size_t i = ARRAY_SIZE(perm) - 1; i > 0; i--) {
                        size_t j = (size_t)(test_rand(&state) % (i + 1)), t = perm[i];
                        perm[i] = perm[j];
                        perm[j] = t;
                }
                snprintf(name, sizeof(name), "perm%u.sqlite", s);
                _cleanup_free_ char *path = test_path(tmpdir, name);
                REQUIRE(create_db(path, s % 2 == 1, seed_rows, ARRAY_SIZE(seed_rows), perm));
                REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
                CHECK_INT(db_begin(db), 0);
                CHECK_INT(render_query(db, "SELECT k, v FROM t", MAP_FORMAT_POSTFIX, &pf, &st), 0);
                CHECK_UINT(st.n_rows, ARRAY_SIZE(seed_rows));
                CHECK_UINT(st.n_lines, 6);
                CHECK_UINT(st.n_invalid, 5);
                CHECK_UINT(st.n_bytes, sizeof(expected_postfix) - 1);
                CHECK_INT(render_query(db, "SELECT k, v FROM t;", MAP_FORMAT_PASSWD, &pw, &st), 0);
                CHECK_UINT(st.n_lines, 6);
                CHECK_UINT(st.n_invalid, 5);
                /* alias: m, z; bob: bob@ twice (the kept value is bob2@); zed: 9 */
                CHECK_UINT(st.n_duplicates, 5);
                db_end(db);
                db_close(db);

                if (!CHECK_MEM(pf.data, pf.len, expected_postfix, sizeof(expected_postfix) - 1) ||
                    !CHECK_MEM(pw.data, pw.len, expected_passwd, sizeof(expected_passwd) - 1))
                        fprintf(stderr, "    permutation %u\n", s);
                if (s == 0) {
                        first_pf = pf;
                        first_pw = pw;
                        continue;
                }
                CHECK_MEM(pf.data, pf.len, first_pf.data, first_pf.len);
                CHECK_MEM(pw.data, pw.len, first_pw.data, first_pw.len);
                test_buf_done(&pf);
                test_buf_done(&pw);
        }
        test_buf_done(&first_pf);
        test_buf_done(&first_pw);
}

/* A query's own ORDER BY or LIMIT does not change the canonical order. */
static void test_query_own_order(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "order.sqlite");
        struct db *db = NULL;
        struct test_buf out = {0};

        REQUIRE(create_db(path, false, seed_rows, ARRAY_SIZE(seed_rows), NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
        CHECK_INT(render_query(db, "SELECT k, v FROM t ORDER BY k DESC, v DESC", MAP_FORMAT_POSTFIX, &out, NULL), 0);
        CHECK_MEM(out.data, out.len, expected_postfix, sizeof(expected_postfix) - 1);
        test_buf_done(&out);
        /* Column names do not matter, expressions work. */
        CHECK_INT(render_query(db, "SELECT upper(k) AS email, 'x' || v AS \"the value\" FROM t WHERE k LIKE 'z%'",
                               MAP_FORMAT_POSTFIX, &out, NULL),
                  0);
        CHECK_STR(out.data, "zed\tx10, x9\n");
        test_buf_done(&out);
        /* Empty result. */
        CHECK_INT(render_query(db, "SELECT k, v FROM t WHERE 0", MAP_FORMAT_POSTFIX, &out, NULL), 0);
        CHECK_UINT(out.len, 0);
        test_buf_done(&out);
        db_close(db);
}

static void test_query_errors(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "errors.sqlite");
        struct db *db = NULL;
        struct db_query *q = (struct db_query *)0x1;

        REQUIRE(create_db(path, false, seed_rows, 3, NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);

        CHECK_INT(db_query_new(db, "SELECT k, v, 1 FROM t", &q), -EINVAL);
        CHECK(q == (struct db_query *)0x1);
        CHECK_CONTAINS(db_errmsg(db), "two columns");
        CHECK(!strstr(db_errmsg(db), "mapsyncd_q")); /* the wrapper is not shown */
        CHECK_INT(db_query_new(db, "SELECT k FROM t", &q), -EINVAL);
        CHECK_CONTAINS(db_errmsg(db), "two columns");

        CHECK_INT(db_query_new(db, "SELEC k, v FROM t", &q), -EINVAL);
        CHECK_CONTAINS(db_errmsg(db), "syntax error");
        CHECK_CONTAINS(db_errmsg(db), "SELEC");
        CHECK_INT(db_query_new(db, "SELECT k, v FROM nosuchtable", &q), -EINVAL);
        CHECK_STR(db_errmsg(db), "no such table: nosuchtable");
        CHECK_INT(db_query_new(db, "SELECT k, nosuchcolumn FROM t", &q), -EINVAL);
        CHECK_STR(db_errmsg(db), "no such column: nosuchcolumn");

        /* One statement only: a second one is refused, not run. */
        CHECK_INT(db_query_new(db, "SELECT k, v FROM t; DROP TABLE t", &q), -EINVAL);
        CHECK_INT(db_query_new(db, "INSERT INTO t VALUES (1, 2) RETURNING k, v", &q), -EINVAL);
        CHECK_INT(db_query_new(db, "DELETE FROM t RETURNING k, v", &q), -EINVAL);
        CHECK(q == (struct db_query *)0x1);

        /* Trailing ';' and white space are accepted. */
        q = NULL;
        CHECK_INT(db_query_new(db, "SELECT k, v FROM t;", &q), 0);
        q = db_query_free(q);
        CHECK_INT(db_query_new(db, "SELECT k, v FROM t ; \n\t;; \r\n", &q), 0);
        q = db_query_free(q);
        /* A trailing SQL comment does not swallow the wrapper. */
        CHECK_INT(db_query_new(db, "SELECT k, v FROM t -- the map", &q), 0);
        q = db_query_free(q);
        db_close(db);

        /* Nothing was dropped or inserted. */
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;
        REQUIRE_INT(sqlite3_open_v2(path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        CHECK_INT(sqlite3_prepare_v2(h, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
        CHECK_INT(sqlite3_step(st), SQLITE_ROW);
        CHECK_INT(sqlite3_column_int(st, 0), 3);
        sqlite3_finalize(st);
        sqlite3_close(h);
}

static int count_rows(struct db *db) {
        struct test_buf out = {0};
        struct render st;
        int k = render_query(db, "SELECT k, v FROM t", MAP_FORMAT_POSTFIX, &out, &st);

        test_buf_done(&out);
        return k < 0 ? k : (int)st.n_rows;
}

/* data_version changes when another connection commits, not otherwise. */
static void check_data_version(bool wal) {
        _cleanup_free_ char *path = test_path(tmpdir, wal ? "dv-wal.sqlite" : "dv-rollback.sqlite");
        struct db *db = NULL;
        int64_t v1 = -1, v2 = -1, v3 = -1;

        REQUIRE(create_db(path, wal, seed_rows, 3, NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
        CHECK_INT(count_rows(db), 3);
        CHECK_INT(db_data_version(db, &v1), 0);
        CHECK_INT(count_rows(db), 3);
        CHECK_INT(db_data_version(db, &v2), 0);
        CHECK_INT(v2, v1);
        REQUIRE(writer_exec(path, "INSERT INTO t VALUES ('new@example.com', 'n')"));
        CHECK_INT(db_data_version(db, &v3), 0);
        CHECK(v3 != v1);
        CHECK_INT(count_rows(db), 4);
        /* A commit to another table counts too. */
        REQUIRE(writer_exec(path, "INSERT INTO other VALUES (1)"));
        CHECK_INT(db_data_version(db, &v1), 0);
        CHECK(v1 != v3);
        db_close(db);
}

static void test_data_version_wal(void) {
        check_data_version(true);
}

static void test_data_version_rollback(void) {
        check_data_version(false);
}

/* Between db_begin() and db_end() every query sees one moment. */
static void test_snapshot(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "snapshot.sqlite");
        struct db *db = NULL;

        REQUIRE(create_db(path, true, seed_rows, 3, NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
        CHECK_INT(db_begin(db), 0);
        /* The snapshot is taken at db_begin(), before any map query. */
        REQUIRE(writer_exec(path, "INSERT INTO t VALUES ('early@example.com', 'e')"));
        CHECK_INT(count_rows(db), 3);
        REQUIRE(writer_exec(path, "INSERT INTO t VALUES ('late@example.com', 'l')"));
        CHECK_INT(count_rows(db), 3);
        db_end(db);
        CHECK_INT(count_rows(db), 5);
        /* Again, with a second snapshot. */
        CHECK_INT(db_begin(db), 0);
        REQUIRE(writer_exec(path, "DELETE FROM t"));
        CHECK_INT(count_rows(db), 5);
        db_end(db);
        CHECK_INT(count_rows(db), 0);
        db_end(db); /* without a transaction: harmless */
        db_close(db);
}

/* Reading leaves the database file byte for byte as it was and creates no
 * rollback journal. */
static void check_untouched(bool wal) {
        _cleanup_free_ char *path = test_path(tmpdir, wal ? "ro-wal.sqlite" : "ro-rollback.sqlite");
        _cleanup_free_ char *journal = NULL;
        char *before, *after;
        size_t nb = 0, na = 0;
        struct stat st1, st2;
        struct db *db = NULL;
        int64_t v;

        REQUIRE(create_db(path, wal, seed_rows, ARRAY_SIZE(seed_rows), NULL));
        REQUIRE(asprintf(&journal, "%s-journal", path) > 0);
        before = test_read_file(path, &nb);
        REQUIRE(before);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_INT((unsigned char)before[18], wal ? 2 : 1); /* file format: 2 = WAL */

        for (int i = 0; i < 2; i++) {
                struct test_buf out = {0};
                REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
                CHECK_INT(db_begin(db), 0);
                CHECK_INT(render_query(db, "SELECT k, v FROM t", MAP_FORMAT_POSTFIX, &out, NULL), 0);
                CHECK_INT(render_query(db, "SELECT k, v FROM t", MAP_FORMAT_PASSWD, &out, NULL), 0);
                CHECK_INT(access(journal, F_OK), -1);
                db_end(db);
                CHECK_INT(db_data_version(db, &v), 0);
                CHECK(!db_has_moved(db));
                db_close(db);
                test_buf_done(&out);
        }

        after = test_read_file(path, &na);
        CHECK_MEM(after, na, before, nb);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(access(journal, F_OK), -1);
        CHECK_INT(errno, ENOENT);
        free(before);
        free(after);
}

static void test_untouched_wal(void) {
        check_untouched(true);
}

static void test_untouched_rollback(void) {
        check_untouched(false);
}

static void test_has_moved(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "moving.sqlite");
        _cleanup_free_ char *moved = test_path(tmpdir, "moved.sqlite");
        struct db *db = NULL;

        REQUIRE(create_db(path, false, seed_rows, 3, NULL));
        REQUIRE_INT(db_open(path, 100, &db, NULL), 0);
        CHECK(!db_has_moved(db));
        REQUIRE_INT(rename(path, moved), 0);
        CHECK(db_has_moved(db));
        /* Reading goes on from the file it has open. */
        CHECK_INT(count_rows(db), 3);
        db_close(db);
        CHECK_INT(db_open(path, 100, &db, NULL), -ENOENT);
}

int main(void) {
        log_init(LOG_ERR); /* the skipped rows are render's tests */
        tmpdir = test_mkdtemp();
        RUN(test_open_errors);
        RUN(test_open_ok);
        RUN(test_query_rows);
        RUN(test_canonical_order);
        RUN(test_query_own_order);
        RUN(test_query_errors);
        RUN(test_data_version_wal);
        RUN(test_data_version_rollback);
        RUN(test_snapshot);
        RUN(test_untouched_wal);
        RUN(test_untouched_rollback);
        RUN(test_has_moved);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
