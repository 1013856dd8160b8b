/* Unit tests of sync.h on a real SQLite file and real output files: a
 * first cycle writes every map, an unchanged one writes nothing, one
 * failing map (bad SQL, invalid rows with on_invalid = fail, a replace
 * that fails between render and commit) keeps its file and leaves the
 * others alone, dry runs count added and removed lines and write nothing,
 * the database is never written, and every map of a cycle comes from one
 * snapshot even when a writer commits between two renderings (read
 * through a second, writing connection in the middle of the cycle). */
#include "sync.h"

#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "util.h"

#include "test.h"

static char *tmpdir, *dbpath;

static int exec_sql(const char *sql) {
        sqlite3 *h = NULL;
        char *err = NULL;
        int rc = sqlite3_open(dbpath, &h);

        if (rc == SQLITE_OK)
                rc = sqlite3_exec(h, sql, NULL, NULL, &err);
        if (rc != SQLITE_OK)
                fprintf(stderr, "sqlite3_exec(%s): %s\n", sql, err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        sqlite3_close(h);
        return rc;
}

static void create_db(void) {
        unlink(dbpath);
        if (exec_sql("PRAGMA journal_mode=WAL; CREATE TABLE t(m, k, v);"
                     "INSERT INTO t VALUES ('a', 'k1', 'v1'), ('a', 'k2', 'v2'), ('b', 'x', '1'), ('c', 'p', 'q');") !=
            SQLITE_OK)
                abort();
}

static char *out_path(const char *name) {
        char *p;

        if (asprintf(&p, "%s/out/%s", tmpdir, name) < 0)
                abort();
        return p;
}

static struct config *make_config(const char *c_query, const char *extra_c) {
        _cleanup_free_ char *text = NULL;
        struct config_errors e = {0};
        struct config *c = NULL;

        if (asprintf(&text,
                     "[database]\npath = %s\n"
                     "[map a]\noutput = %s/out/a\nquery = SELECT k, v FROM t WHERE m = 'a'\n"
                     "[map b]\noutput = %s/out/b\nquery = SELECT k, v FROM t WHERE m = 'b'\nformat = passwd\n"
                     "[map c]\noutput = %s/out/c\nquery = %s\n%s",
                     dbpath, tmpdir, tmpdir, tmpdir, c_query ? c_query : "SELECT k, v FROM t WHERE m = 'c'",
                     extra_c ? extra_c : "") < 0)
                abort();
        if (config_parse_string("t.conf", text, &c, &e) < 0) {
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "%s\n", e.msgs[i]);
                abort();
        }
        config_errors_done(&e);
        return c;
}

static struct db *open_db(void) {
        struct db *db = NULL;

        if (db_open(dbpath, 1000, &db, NULL) < 0)
                abort();
        return db;
}

static char *read_out(const char *name) {
        _cleanup_free_ char *p = out_path(name);
        char *t = test_read_file(p, NULL);

        return t ? t : strdup("(missing)");
}

static void cycle(struct db *db, const struct config *c, const char *want_status) {
        struct sync_cycle *cy = NULL;

        if (!CHECK_INT(sync_render(db, c, false, &cy), 0))
                return;
        sync_commit(cy);
        for (size_t i = 0; i < c->n_maps; i++) {
                int want = want_status[i] == 'C' ? MAP_CHANGED : want_status[i] == 'F' ? MAP_FAILED : MAP_UNCHANGED;
                if (!CHECK_INT(cy->results[i].status, want))
                        fprintf(stderr, "    map %s\n", c->maps[i].name);
        }
        sync_cycle_free(cy);
}

static void test_first_then_unchanged(void) {
        struct config *c = make_config(NULL, NULL);
        struct db *db = open_db();
        struct sync_cycle *cy = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL, *pa = out_path("a");
        struct stat st1, st2, dbst1, dbst2;

        REQUIRE(stat(dbpath, &dbst1) == 0);
        REQUIRE_INT(sync_render(db, c, false, &cy), 0);
        CHECK_UINT(sync_count(cy, MAP_CHANGED), 3);
        CHECK_UINT(cy->results[0].rows, 2);
        CHECK_UINT(strspn(cy->results[0].sha256, "0123456789abcdef"), SHA256_HEX_LEN);
        /* Nothing in place before the commit. */
        CHECK(access(pa, F_OK) < 0);
        sync_commit(cy);
        CHECK_UINT(sync_count(cy, MAP_CHANGED), 3);
        sync_cycle_free(cy);
        a = read_out("a");
        b = read_out("b");
        CHECK_STR(a, "k1\tv1\nk2\tv2\n");
        CHECK_STR(b, "x:1\n");
        REQUIRE(stat(pa, &st1) == 0);
        cycle(db, c, "...");
        REQUIRE(stat(pa, &st2) == 0);
        CHECK_UINT(st1.st_ino, st2.st_ino);
        CHECK_INT(st1.st_mtime, st2.st_mtime);
        /* The database is only read. */
        REQUIRE(stat(dbpath, &dbst2) == 0);
        CHECK_INT(dbst1.st_mtim.tv_nsec, dbst2.st_mtim.tv_nsec);
        CHECK_INT(dbst1.st_size, dbst2.st_size);
        db_close(db);
        config_free(c);
}

static void test_one_map_fails(void) {
        struct config *c = make_config("SELECT k, v FROM no_such_table", NULL), *c2;
        struct db *db = open_db();
        _cleanup_free_ char *a = NULL, *cc = NULL;

        REQUIRE_INT(exec_sql("UPDATE t SET v = 'v1b' WHERE k = 'k1'"), SQLITE_OK);
        cycle(db, c, "C.F");
        a = read_out("a");
        CHECK_STR(a, "k1\tv1b\nk2\tv2\n");
        cc = read_out("c");
        CHECK_STR(cc, "p\tq\n");
        config_free(c);
        /* Invalid rows with on_invalid = fail: c kept as it was. */
        c2 = make_config("SELECT k, NULL FROM t WHERE m = 'c'", "on_invalid = fail\n");
        cycle(db, c2, "..F");
        free(cc);
        cc = read_out("c");
        CHECK_STR(cc, "p\tq\n");
        config_free(c2);
        db_close(db);
}

/* The rename fails (the output became a directory after the rendering):
 * the map is MAP_FAILED, nothing of it is left, the others are in place. */
static void test_commit_fails(void) {
        struct config *c = make_config(NULL, NULL);
        struct db *db = open_db();
        struct sync_cycle *cy = NULL;
        _cleanup_free_ char *pb = out_path("b"), *inner = NULL, *a = NULL;
        DIR *dir;
        unsigned temps = 0;

        REQUIRE_INT(exec_sql("UPDATE t SET v = 'NEW' WHERE m IN ('a', 'b')"), SQLITE_OK);
        REQUIRE_INT(sync_render(db, c, false, &cy), 0);
        CHECK_INT(cy->results[1].status, MAP_CHANGED);
        REQUIRE(unlink(pb) == 0);
        REQUIRE(mkdir(pb, 0700) == 0);
        REQUIRE(asprintf(&inner, "%s/keep", pb) > 0);
        REQUIRE_INT(test_write_file(inner, "x", 1, 0600), 0);
        sync_commit(cy);
        CHECK_INT(cy->results[0].status, MAP_CHANGED);
        CHECK_INT(cy->results[1].status, MAP_FAILED);
        CHECK_UINT(sync_count(cy, MAP_FAILED), 1);
        sync_cycle_free(cy);
        a = read_out("a");
        CHECK_STR(a, "k1\tNEW\nk2\tNEW\n");
        {
                _cleanup_free_ char *outdir = NULL;
                REQUIRE(asprintf(&outdir, "%s/out", tmpdir) > 0);
                dir = opendir(outdir);
                REQUIRE(dir);
                for (struct dirent *e; (e = readdir(dir));)
                        temps += e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
                closedir(dir);
        }
        CHECK_UINT(temps, 0);
        unlink(inner);
        rmdir(pb);
        cycle(db, c, ".C.");
        db_close(db);
        config_free(c);
}

static void test_dry_run(void) {
        struct config *c = make_config(NULL, NULL);
        struct db *db = open_db();
        struct sync_cycle *cy = NULL;
        _cleanup_free_ char *before = read_out("a"), *after = NULL;

        REQUIRE_INT(exec_sql("DELETE FROM t WHERE k = 'k2'; INSERT INTO t VALUES ('a', 'k3', 'v3'), ('a', 'k4', 'v4')"),
                    SQLITE_OK);
        REQUIRE_INT(sync_render(db, c, true, &cy), 0);
        sync_commit(cy);
        CHECK_INT(cy->results[0].status, MAP_CHANGED);
        CHECK_UINT(cy->results[0].added, 2);
        CHECK_UINT(cy->results[0].removed, 1);
        CHECK_INT(cy->results[1].status, MAP_UNCHANGED);
        sync_cycle_free(cy);
        after = read_out("a");
        CHECK_STR(after, before);
        cycle(db, c, "C..");
        db_close(db);
        config_free(c);
}

/* A writer commits a change of a and c after a was rendered: the cycle
 * still shows the old state in both (one snapshot). The rendering of map
 * b is a query slow by construction (a recursive CTE), so that the commit
 * lands while the cycle is between a and c. */
static void test_one_snapshot(void) {
        struct config *c;
        struct db *db = open_db();
        struct sync_cycle *cy = NULL;
        _cleanup_free_ char *a = NULL, *cc = NULL;
        pid_t pid;
        int status;

        c = make_config(NULL, NULL);
        cycle(db, c, "...");
        config_free(c);
        /* b: counts to 1,000,000 before giving its row. */
        {
                struct config_errors e = {0};
                _cleanup_free_ char *text = NULL;
                REQUIRE(asprintf(&text,
                                 "[database]\npath = %s\n"
                                 "[map a]\noutput = %s/out/a\nquery = SELECT k, v FROM t WHERE m = 'a'\n"
                                 "[map b]\noutput = %s/out/b\nquery = WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL "
                                 "SELECT i + 1 FROM n WHERE i < 1000000)\n  SELECT 'x', max(i) FROM n\nformat = "
                                 "passwd\n"
                                 "[map c]\noutput = %s/out/c\nquery = SELECT k, v FROM t WHERE m = 'c'\n",
                                 dbpath, tmpdir, tmpdir, tmpdir) > 0);
                REQUIRE_INT(config_parse_string("t.conf", text, &c, &e), 0);
                config_errors_done(&e);
        }
        /* The writer waits for the cycle to be inside b's query: it
         * commits 100 ms after the fork; b's query takes longer. */
        pid = fork();
        if (pid == 0) {
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                _exit(exec_sql("UPDATE t SET v = 'SNAP' WHERE m IN ('a', 'c')") == SQLITE_OK ? 0 : 1);
        }
        REQUIRE(pid > 0);
        {
                struct timespec t0, t1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                REQUIRE_INT(sync_render(db, c, false, &cy), 0);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                /* The commit came while the cycle ran (b took long enough). */
                CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > 300);
        }
        REQUIRE(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        sync_commit(cy);
        /* a and c both old (b changed: its file was x:1). */
        CHECK_INT(cy->results[0].status, MAP_UNCHANGED);
        CHECK_INT(cy->results[2].status, MAP_UNCHANGED);
        sync_cycle_free(cy);
        a = read_out("a");
        CHECK(!strstr(a, "SNAP"));
        /* The next cycle sees the commit in both. */
        cycle(db, c, "C.C");
        free(a);
        a = read_out("a");
        cc = read_out("c");
        CHECK(strstr(a, "SNAP") != NULL);
        CHECK_STR(cc, "p\tSNAP\n");
        db_close(db);
        config_free(c);
}

int main(void) {
        _cleanup_free_ char *out = NULL;

        log_init(LOG_CRIT);
        tmpdir = test_mkdtemp();
        dbpath = test_path(tmpdir, "db.sqlite");
        out = test_path(tmpdir, "out");
        if (mkdir(out, 0755) < 0)
                abort();
        create_db();
        RUN(test_first_then_unchanged);
        RUN(test_one_map_fails);
        RUN(test_commit_fails);
        RUN(test_dry_run);
        RUN(test_one_snapshot);
        test_rm_rf(tmpdir);
        free(tmpdir);
        free(dbpath);
        return test_end();
}
