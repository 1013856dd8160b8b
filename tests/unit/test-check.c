/* Unit tests of check_run (--check) with temporary files: a good setup
 * (its OK line on stdout, nothing on stderr, status 0), and each kind of
 * problem it reports as "FILE:LINE: message" on stderr with status 1: a
 * database that cannot be opened, a query that does not prepare, that
 * writes or that has two statements, an output directory that is missing,
 * not a directory or writable by others, a state_dir that is a file or
 * writable by others, a webhook's unreadable secret_file, a [files] set's
 * directory and query, the [api] socket's directory; several at once. */
#include "check.h"

#include <sqlite3.h>

#include "log.h"
#include "util.h"

#include "test.h"

static char *tmpdir, *dbpath, *outdir, *statedir;

static void create_db(void) {
        sqlite3 *h = NULL;
        char *err = NULL;

        if (sqlite3_open(dbpath, &h) != SQLITE_OK ||
            sqlite3_exec(h, "CREATE TABLE t(k, v); INSERT INTO t VALUES ('a', 'b');", NULL, NULL, &err) != SQLITE_OK)
                abort();
        sqlite3_close(h);
}

/* The config: [database] path at line 2, [sync] state_dir at line 4, map a
 * at line 5 (its query at line 7), map b at line 8 (its query at line 10),
 * then extra. */
static struct config *make_config(const char *db, const char *state, const char *out_a, const char *query_a,
                                  const char *extra) {
        _cleanup_free_ char *text = NULL;
        struct config_errors e = {0};
        struct config *c = NULL;

        if (asprintf(&text,
                     "[database]\npath = %s\n"
                     "[sync]\nstate_dir = %s\n"
                     "[map a]\noutput = %s\nquery = %s\n"
                     "[map b]\noutput = %s/b\nquery = SELECT k, v FROM t\n%s",
                     db ? db : dbpath, state ? state : statedir, out_a, query_a ? query_a : "SELECT k, v FROM t",
                     outdir, extra ? extra : "") < 0)
                abort();
        if (config_parse_string("t.conf", text, &c, &e) < 0) {
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "%s\n", e.msgs[i]);
                abort();
        }
        config_errors_done(&e);
        return c;
}

struct outcome {
        int status;
        char *out, *err;
};

/* Runs check_run with stdout and stderr sent to files. */
static void run_check(const struct config *c, struct outcome *o) {
        _cleanup_free_ char *po = test_path(tmpdir, "stdout"), *pe = test_path(tmpdir, "stderr");
        int so, se, fo, fe;

        fflush(stdout);
        fflush(stderr);
        so = dup(STDOUT_FILENO);
        se = dup(STDERR_FILENO);
        fo = open(po, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        fe = open(pe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (so < 0 || se < 0 || fo < 0 || fe < 0 || dup2(fo, STDOUT_FILENO) < 0 || dup2(fe, STDERR_FILENO) < 0)
                abort();
        close(fo);
        close(fe);
        o->status = check_run(c);
        fflush(stdout);
        fflush(stderr);
        dup2(so, STDOUT_FILENO);
        dup2(se, STDERR_FILENO);
        close(so);
        close(se);
        o->out = test_read_file(po, NULL);
        o->err = test_read_file(pe, NULL);
        if (!o->out || !o->err)
                abort();
}

static void outcome_done(struct outcome *o) {
        free(o->out);
        free(o->err);
        *o = (struct outcome){0};
}

static int count_newlines(const char *s) {
        int n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

static char *out_a(void) {
        return test_path(outdir, "a");
}

static void test_ok(void) {
        _cleanup_free_ char *a = out_a(), *want = NULL;
        struct config *c = make_config(NULL, NULL, a, NULL, NULL);
        struct outcome o;

        run_check(c, &o);
        CHECK_INT(o.status, 0);
        CHECK_STR(o.err, "");
        if (asprintf(&want, "t.conf: OK: 2 maps, database %s\n", dbpath) < 0)
                abort();
        CHECK_STR(o.out, want);
        /* Nothing written: no output, no file in the state directory. */
        CHECK_INT(access(a, F_OK), -1);
        {
                _cleanup_free_ char *names = test_list_dir(statedir);
                CHECK_STR(names, "");
        }
        outcome_done(&o);
        config_free(c);
}

static void test_state_dir_missing_is_fine(void) {
        _cleanup_free_ char *a = out_a(), *missing = test_path(tmpdir, "no-state");
        struct config *c = make_config(NULL, missing, a, NULL, NULL);
        struct outcome o;

        /* The daemon creates it: not a problem for --check. */
        run_check(c, &o);
        CHECK_INT(o.status, 0);
        CHECK_STR(o.err, "");
        CHECK_INT(access(missing, F_OK), -1);
        outcome_done(&o);
        config_free(c);
}

static void test_database_missing(void) {
        _cleanup_free_ char *a = out_a(), *db = test_path(tmpdir, "nowhere/admin.sqlite"), *want = NULL;
        struct config *c = make_config(db, NULL, a, NULL, NULL);
        struct outcome o;

        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        /* The line of [database] path. */
        if (asprintf(&want, "t.conf:2: database %s: ", db) < 0)
                abort();
        CHECK_PREFIX(o.err, want);
        /* One line: without a database the queries are not checked. */
        CHECK_INT(count_newlines(o.err), 1);
        outcome_done(&o);
        config_free(c);
}

static void test_database_not_sqlite(void) {
        _cleanup_free_ char *a = out_a(), *db = test_path(tmpdir, "garbage.sqlite"), *want = NULL;
        struct config *c;
        struct outcome o;
        char junk[4096];

        memset(junk, 'j', sizeof(junk));
        CHECK_INT(test_write_file(db, junk, sizeof(junk), 0600), 0);
        c = make_config(db, NULL, a, NULL, NULL);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        if (asprintf(&want, "t.conf:2: database %s: ", db) < 0)
                abort();
        CHECK_PREFIX(o.err, want);
        CHECK_CONTAINS(o.err, "not a database");
        outcome_done(&o);
        config_free(c);
}

static void check_bad_query(const char *query, const char *why) {
        _cleanup_free_ char *a = out_a();
        struct config *c = make_config(NULL, NULL, a, query, NULL);
        struct outcome o;

        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        /* The line of the query, the map's name, the database's reason. */
        CHECK_PREFIX(o.err, "t.conf:7: [map a] query: ");
        CHECK_CONTAINS(o.err, why);
        CHECK_INT(count_newlines(o.err), 1);
        outcome_done(&o);
        config_free(c);
}

static void test_bad_queries(void) {
        check_bad_query("SELECT nope, v FROM t", "no such column: nope");
        check_bad_query("SELECT k, v FROM missing_table", "no such table: missing_table");
        check_bad_query("DELETE FROM t", "");
        check_bad_query("SELECT k, v FROM t; SELECT k, v FROM t", "");
        check_bad_query("SELEC k", "syntax error");
}

static void test_writing_query_message(void) {
        _cleanup_free_ char *a = out_a();
        struct config *c = make_config(NULL, NULL, a, "UPDATE t SET v = 'x'", NULL);
        struct outcome o;
        char *v;

        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_PREFIX(o.err, "t.conf:7: [map a] query: ");
        /* The database is untouched. */
        {
                sqlite3 *h = NULL;
                sqlite3_stmt *st = NULL;
                REQUIRE(sqlite3_open(dbpath, &h) == SQLITE_OK);
                REQUIRE(sqlite3_prepare_v2(h, "SELECT v FROM t", -1, &st, NULL) == SQLITE_OK);
                REQUIRE(sqlite3_step(st) == SQLITE_ROW);
                v = strdup((const char *)sqlite3_column_text(st, 0));
                sqlite3_finalize(st);
                sqlite3_close(h);
                CHECK_STR(v, "b");
                free(v);
        }
        outcome_done(&o);
        config_free(c);
}

static void check_output_dir(const char *out, const char *why) {
        _cleanup_free_ char *want = NULL;
        struct config *c = make_config(NULL, NULL, out, NULL, NULL);
        struct outcome o;

        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        if (asprintf(&want, "t.conf:5: [map a] cannot write into the directory of %s: %s", out, why) < 0)
                abort();
        CHECK_PREFIX(o.err, want);
        CHECK_INT(count_newlines(o.err), 1);
        outcome_done(&o);
        config_free(c);
}

static void test_output_dirs(void) {
        _cleanup_free_ char *missing = test_path(tmpdir, "nodir/a"), *file = test_path(tmpdir, "plain"),
                            *under_file = test_path(tmpdir, "plain/a"), *open_dir = test_path(tmpdir, "open"),
                            *in_open = test_path(tmpdir, "open/a"), *sticky = test_path(tmpdir, "sticky"),
                            *in_sticky = test_path(tmpdir, "sticky/a"), *why_open = NULL;

        check_output_dir(missing, strerror(ENOENT));
        CHECK_INT(test_write_file(file, "", 0, 0600), 0);
        check_output_dir(under_file, "not a directory");
        /* Writable by anyone (not sticky): refused, naming the directory. */
        CHECK_INT(mkdir(open_dir, 0700), 0);
        CHECK_INT(chmod(open_dir, 0777), 0);
        if (asprintf(&why_open, "%s is ", open_dir) < 0)
                abort();
        check_output_dir(in_open, why_open);
        /* Sticky and writable by anyone (as /tmp): accepted. */
        CHECK_INT(mkdir(sticky, 0700), 0);
        CHECK_INT(chmod(sticky, 01777), 0);
        {
                struct config *c = make_config(NULL, NULL, in_sticky, NULL, NULL);
                struct outcome o;
                run_check(c, &o);
                CHECK_INT(o.status, 0);
                CHECK_STR(o.err, "");
                outcome_done(&o);
                config_free(c);
        }
}

static void test_state_dir_problems(void) {
        _cleanup_free_ char *a = out_a(), *file = test_path(tmpdir, "state-file"),
                            *open_dir = test_path(tmpdir, "state-open"), *sticky = test_path(tmpdir, "state-sticky"),
                            *want = NULL;
        struct config *c;
        struct outcome o;

        /* A file. */
        CHECK_INT(test_write_file(file, "", 0, 0600), 0);
        c = make_config(NULL, file, a, NULL, NULL);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        if (asprintf(&want, "t.conf:4: state_dir %s: not a directory\n", file) < 0)
                abort();
        CHECK_STR(o.err, want);
        free(want);
        want = NULL;
        outcome_done(&o);
        config_free(c);

        /* Writable by anyone. */
        CHECK_INT(mkdir(open_dir, 0700), 0);
        CHECK_INT(chmod(open_dir, 0777), 0);
        c = make_config(NULL, open_dir, a, NULL, NULL);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        if (asprintf(&want, "t.conf:4: state_dir %s: %s is ", open_dir, open_dir) < 0)
                abort();
        CHECK_PREFIX(o.err, want);
        free(want);
        want = NULL;
        outcome_done(&o);
        config_free(c);

        /* Sticky and writable by anyone: mapsyncd will not use it either. */
        CHECK_INT(mkdir(sticky, 0700), 0);
        CHECK_INT(chmod(sticky, 01777), 0);
        c = make_config(NULL, sticky, a, NULL, NULL);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        if (asprintf(&want, "t.conf:4: state_dir %s is writable by others than its owner", sticky) < 0)
                abort();
        CHECK_PREFIX(o.err, want);
        outcome_done(&o);
        config_free(c);
}

static void test_webhook_secret(void) {
        _cleanup_free_ char *a = out_a(), *secret = test_path(tmpdir, "no.secret"), *extra = NULL;
        struct config *c;
        struct outcome o;

        if (asprintf(&extra, "[webhook panel]\nurl = http://127.0.0.1:9/h\nsecret_file = %s\nmaps = a\n", secret) < 0)
                abort();
        c = make_config(NULL, NULL, a, NULL, extra);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        /* [webhook panel] is line 11. */
        CHECK_PREFIX(o.err, "t.conf:11: [webhook panel] secret_file ");
        CHECK_CONTAINS(o.err, secret);
        outcome_done(&o);
        config_free(c);
}

static void test_files_and_api(void) {
        _cleanup_free_ char *a = out_a(), *keys = test_path(tmpdir, "keys"), *nokeys = test_path(tmpdir, "nokeys"),
                            *sock = test_path(tmpdir, "nosockdir/api.sock"), *extra = NULL, *want = NULL;
        struct config *c;
        struct outcome o;

        CHECK_INT(mkdir(keys, 0700), 0);
        /* A good [files] set: counted in the OK line. */
        if (asprintf(&extra, "[files dkim]\ndirectory = %s\nquery = SELECT k, v FROM t\n", keys) < 0)
                abort();
        c = make_config(NULL, NULL, a, NULL, extra);
        run_check(c, &o);
        CHECK_INT(o.status, 0);
        CHECK_STR(o.err, "");
        if (asprintf(&want, "t.conf: OK: 2 maps, 1 file set, database %s\n", dbpath) < 0)
                abort();
        CHECK_STR(o.out, want);
        outcome_done(&o);
        config_free(c);
        free(extra);
        free(want);
        want = NULL;

        /* Its directory missing, its query bad; the API socket's directory
         * missing. [files dkim] is line 11, [api] line 14. */
        if (asprintf(&extra, "[files dkim]\ndirectory = %s\nquery = SELECT nope, v FROM t\n[api]\nlisten = %s\n",
                     nokeys, sock) < 0)
                abort();
        c = make_config(NULL, NULL, a, NULL, extra);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        CHECK_INT(count_newlines(o.err), 3);
        CHECK_PREFIX(o.err, "t.conf:11: [files dkim] query: no such column: nope\n");
        if (asprintf(&want, "t.conf:11: [files dkim] cannot write into directory %s: %s\n", nokeys, strerror(ENOENT)) <
            0)
                abort();
        CHECK_CONTAINS(o.err, want);
        free(want);
        if (asprintf(&want, "t.conf:14: [api] cannot create %s: %s (unless systemd passes the socket)\n", sock,
                     strerror(ENOENT)) < 0)
                abort();
        CHECK_CONTAINS(o.err, want);
        outcome_done(&o);
        config_free(c);
}

static void test_several_problems(void) {
        _cleanup_free_ char *missing = test_path(tmpdir, "nodir/a"), *file = test_path(tmpdir, "state-file2");
        struct config *c;
        struct outcome o;

        CHECK_INT(test_write_file(file, "", 0, 0600), 0);
        c = make_config(NULL, file, missing, "SELECT nope FROM t", NULL);
        run_check(c, &o);
        CHECK_INT(o.status, 1);
        CHECK_STR(o.out, "");
        /* Every problem, in the order of the file's checks. */
        CHECK_INT(count_newlines(o.err), 3);
        CHECK_PREFIX(o.err, "t.conf:7: [map a] query: ");
        CHECK_CONTAINS(o.err, "t.conf:5: [map a] cannot write into the directory of ");
        CHECK_CONTAINS(o.err, "t.conf:4: state_dir ");
        outcome_done(&o);
        config_free(c);
}

int main(void) {
        log_init(LOG_CRIT);
        tmpdir = test_mkdtemp();
        dbpath = test_path(tmpdir, "admin.sqlite");
        outdir = test_path(tmpdir, "out");
        statedir = test_path(tmpdir, "state");
        if (mkdir(outdir, 0755) < 0 || mkdir(statedir, 0700) < 0)
                abort();
        create_db();
        RUN(test_ok);
        RUN(test_state_dir_missing_is_fine);
        RUN(test_database_missing);
        RUN(test_database_not_sqlite);
        RUN(test_bad_queries);
        RUN(test_writing_query_message);
        RUN(test_output_dirs);
        RUN(test_state_dir_problems);
        RUN(test_webhook_secret);
        RUN(test_files_and_api);
        RUN(test_several_problems);
        test_rm_rf(tmpdir);
        free(tmpdir);
        free(dbpath);
        free(outdir);
        free(statedir);
        return test_end();
}
