/* Unit tests of jobs.h with real hook processes on a real sd-event loop:
 * the owed-hooks file (round trip, every kind of corruption, a file of an
 * older version, an unsafe state directory), owed only once installed (a
 * crash between prepare and commit keeps the hook), reloads held back by a
 * failing map hook, causes as a set and never cut, config reloads carrying
 * owed hooks by name, a hook whose earlier run (of a killed process) still
 * runs, retries and --once. */
#include "jobs.h"

#include <sys/wait.h>

#include "util.h"

#include "loop.h"

static char *tmpdir;
static sd_event *event;
static struct hooks *hooks;

struct idle {
        bool flag;
        unsigned n;
};

static void on_idle(void *userdata) {
        struct idle *i = userdata;

        i->flag = true;
        i->n++;
}

/* A config of maps a, b, c (recording hooks; a's fails while DIR/fail-a
 * exists) and reload r named by a and b, state in DIR/state. */
static struct config *make_config(const char *extra) {
        _cleanup_free_ char *text = NULL;
        struct config_errors e = {0};
        struct config *c = NULL;
        const char *rec = "echo \"$MAPSYNCD_MAP $MAPSYNCD_SHA256 $MAPSYNCD_ROWS\" >>";

        if (asprintf(&text,
                     "[database]\npath = /db\n[sync]\nhook_timeout_s = 1\nstate_dir = %s/state\n"
                     "[map a]\noutput = /out/a\nquery = SELECT 1, 2\nreload = r\n"
                     "on_change = [ -e %s/fail-a ] && exit 1; %s %s/log\n"
                     "[map b]\noutput = /out/b\nquery = SELECT 1, 2\nreload = r\non_change = %s %s/log\n"
                     "[map c]\noutput = /out/c\nquery = SELECT 1, 2\non_change = %s %s/log\n"
                     "[reload r]\ncommand = echo \"reload $MAPSYNCD_RELOAD $MAPSYNCD_MAP\" >> %s/log; [ ! -e "
                     "%s/fail-r ]\n%s",
                     tmpdir, tmpdir, rec, tmpdir, rec, tmpdir, rec, tmpdir, tmpdir, tmpdir, extra ? extra : "") < 0)
                abort();
        if (config_parse_string("t.conf", text, &c, &e) < 0) {
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "%s\n", e.msgs[i]);
                abort();
        }
        config_errors_done(&e);
        return c;
}

/* A cycle in which the maps marked 'C' changed, 'F' failed, '.' did not
 * change. */
struct fake_cycle {
        struct sync_cycle cy;
        struct map_result res[64];
};

static void fake(struct fake_cycle *f, const struct config *c, const char *status, char tag) {
        *f = (struct fake_cycle){0};
        f->cy.config = c;
        f->cy.results = f->res;
        for (size_t i = 0; i < c->n_maps; i++) {
                f->res[i].status = status[i] == 'C' ? MAP_CHANGED : status[i] == 'F' ? MAP_FAILED : MAP_UNCHANGED;
                memset(f->res[i].sha256, tag, SHA256_HEX_LEN);
                f->res[i].rows = i + 1;
        }
}

static char *path_in(const char *name) {
        return test_path(tmpdir, name);
}

static char *read_in(const char *name) {
        _cleanup_free_ char *p = path_in(name);
        char *t = test_read_file(p, NULL);

        return t ? t : strdup("");
}

static void write_in(const char *name, const char *text, size_t n) {
        _cleanup_free_ char *p = path_in(name);

        if (test_write_file(p, text, n, 0600) < 0)
                abort();
}

static void rm_in(const char *name) {
        _cleanup_free_ char *p = path_in(name);

        unlink(p);
}

/* Kicks the jobs and runs the loop until they are idle. */
static bool kick_settle(struct jobs *j, struct idle *idle, uint64_t timeout_usec) {
        idle->flag = false;
        jobs_kick(j);
        return loop_until(event, &idle->flag, timeout_usec);
}

/* Runs the loop until the jobs are idle. */
static bool settle(struct idle *idle, uint64_t timeout_usec) {
        idle->flag = false;
        return loop_until(event, &idle->flag, timeout_usec);
}

static struct jobs *new_jobs(const struct config *c, bool retry, struct idle *idle) {
        struct jobs *j = NULL;

        if (jobs_new(event, hooks, c, retry, on_idle, idle, &j) < 0)
                abort();
        return j;
}

static void reset(void) {
        rm_in("log");
        rm_in("fail-a");
        rm_in("fail-r");
        rm_in("state/owed-hooks");
}

static void test_round_trip(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *file = NULL, *log = NULL;

        reset();
        jobs_hold(j, true);
        fake(&f, c, "C.C", '1');
        jobs_prepare(j, &f.cy);
        /* Recorded before the commit; nothing owed in memory yet. */
        file = read_in("state/owed-hooks");
        CHECK_STR(file, "# mapsyncd: hooks owed, run at the next start\nversion 2\nmap a\nmap c\nreload r a\n");
        CHECK_UINT(jobs_owed(j), 0);
        jobs_commit(j, &f.cy);
        CHECK_UINT(jobs_owed(j), 3);
        free(file);
        file = read_in("state/owed-hooks");
        CHECK_STR(file, "# mapsyncd: hooks owed, run at the next start\nversion 2\nmap a\nmap c\nreload r a\n");
        jobs_free(j);

        /* The next start owes the same, with the causes. */
        j = new_jobs(c, true, &idle);
        jobs_load(j);
        CHECK_UINT(jobs_owed(j), 3);
        /* Map hooks wait for a rendering (their hash). */
        CHECK(kick_settle(j, &idle, 5000000));
        log = read_in("log");
        CHECK_STR(log, "");
        fake(&f, c, "...", '2');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        free(log);
        log = read_in("log");
        CHECK_STR(log, "a 2222222222222222222222222222222222222222222222222222222222222222 1\n"
                       "c 2222222222222222222222222222222222222222222222222222222222222222 3\n"
                       "reload r a\n");
        CHECK_UINT(jobs_owed(j), 0);
        free(file);
        file = path_in("state/owed-hooks");
        CHECK(access(file, F_OK) < 0);
        CHECK_UINT(jobs_failures(j), 0);
        jobs_free(j);
        config_free(c);
}

static void test_failed_replace_owes_nothing(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *log = NULL, *state = path_in("state/owed-hooks");

        reset();
        fake(&f, c, "C..", '1');
        jobs_prepare(j, &f.cy);
        CHECK(access(state, F_OK) == 0);
        /* The rename failed: sync_commit() made it MAP_FAILED. */
        f.res[0].status = MAP_FAILED;
        jobs_commit(j, &f.cy);
        CHECK_UINT(jobs_owed(j), 0);
        CHECK(access(state, F_OK) < 0);
        CHECK(kick_settle(j, &idle, 5000000));
        log = read_in("log");
        CHECK_STR(log, "");

        /* A partial cycle: b in place, a not. */
        fake(&f, c, "CC.", '3');
        jobs_prepare(j, &f.cy);
        f.res[0].status = MAP_FAILED;
        jobs_commit(j, &f.cy);
        free(log);
        log = read_in("state/owed-hooks");
        CHECK_STR(log, "# mapsyncd: hooks owed, run at the next start\nversion 2\nmap b\nreload r b\n");
        CHECK(kick_settle(j, &idle, 10000000));
        free(log);
        log = read_in("log");
        /* a's hash is not known (never installed): only b and r ran. */
        CHECK_STR(log, "b 3333333333333333333333333333333333333333333333333333333333333333 2\nreload r b\n");
        jobs_free(j);
        config_free(c);
}

/* A map whose hook is owed (and failing) and whose next replace fails:
 * the retry names the file still in place, not the rendering that was
 * not installed. */
static void test_failed_replace_keeps_the_hash(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *log = NULL;

        reset();
        write_in("fail-a", "", 0);
        fake(&f, c, "C..", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        CHECK_UINT(jobs_failures(j), 1);
        /* The next rendering of a is not installed. */
        fake(&f, c, "C..", '7');
        jobs_prepare(j, &f.cy);
        f.res[0].status = MAP_FAILED;
        jobs_commit(j, &f.cy);
        rm_in("fail-a");
        CHECK(settle(&idle, 10000000));
        log = read_in("log");
        CHECK_STR(log, "a 1111111111111111111111111111111111111111111111111111111111111111 1\nreload r a\n");
        jobs_free(j);
        config_free(c);
}

/* A crash after the renames, before jobs_commit(): the hooks are found in
 * the file at the next start. */
static void test_crash_after_rename_keeps_the_hook(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;

        reset();
        fake(&f, c, ".C.", '1');
        jobs_prepare(j, &f.cy);
        jobs_free(j); /* the crash */
        j = new_jobs(c, true, &idle);
        jobs_load(j);
        CHECK_UINT(jobs_owed(j), 2);
        jobs_free(j);
        config_free(c);
}

static void test_reload_held_back(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        char why[200];
        _cleanup_free_ char *log = NULL;

        reset();
        write_in("fail-a", "", 0);
        fake(&f, c, "CC.", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        log = read_in("log");
        /* a failed, b ran; r waits for a. */
        CHECK_STR(log, "b 1111111111111111111111111111111111111111111111111111111111111111 2\n");
        CHECK_UINT(jobs_failures(j), 1);
        CHECK_UINT(jobs_held(j, why, sizeof(why)), 1);
        CHECK_STR(why, "reload r held back: the hook of map a failed");
        CHECK_UINT(jobs_owed(j), 2);
        /* The retry (1 s) succeeds; then r runs, with both causes. */
        rm_in("fail-a");
        CHECK(settle(&idle, 10000000));
        free(log);
        log = read_in("log");
        CHECK_STR(log, "b 1111111111111111111111111111111111111111111111111111111111111111 2\n"
                       "a 1111111111111111111111111111111111111111111111111111111111111111 1\n"
                       "reload r a b\n");
        CHECK_UINT(jobs_held(j, why, sizeof(why)), 0);
        CHECK_STR(why, "");
        CHECK_UINT(jobs_owed(j), 0);
        jobs_free(j);
        config_free(c);
}

static void test_causes_are_a_set(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *log = NULL;

        reset();
        write_in("fail-r", "", 0);
        for (int k = 0; k < 3; k++) {
                fake(&f, c, "C..", (char)('1' + k));
                jobs_prepare(j, &f.cy);
                jobs_commit(j, &f.cy);
                CHECK(kick_settle(j, &idle, 10000000));
        }
        free(log);
        log = read_in("state/owed-hooks");
        CHECK_STR(log, "# mapsyncd: hooks owed, run at the next start\nversion 2\nreload r a\n");
        fake(&f, c, ".C.", '9');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        rm_in("fail-r");
        CHECK(kick_settle(j, &idle, 10000000));
        free(log);
        log = read_in("log");
        CHECK_UINT(count_lines_with(log, "reload r a\n"), 3);
        CHECK_UINT(count_lines_with(log, "reload r a b"), 1);
        CHECK(!strstr(log, "a a"));
        CHECK_UINT(jobs_owed(j), 0);
        jobs_free(j);
        config_free(c);
}

/* 40 maps of 40-byte names: MAPSYNCD_MAP of 1,639 bytes, whole. */
static void test_causes_never_cut(void) {
        _cleanup_free_ char *text = NULL, *want = NULL, *log = NULL;
        size_t tlen = 0, wlen = 0;
        struct config_errors e = {0};
        struct config *c = NULL;
        struct idle idle = {0};
        struct jobs *j;
        struct fake_cycle f;
        char status[41], line[300];

        reset();
        snprintf(line, sizeof(line), "[database]\npath = /db\n[sync]\nstate_dir = %s/state\n", tmpdir);
        str_append(&text, &tlen, line, strlen(line));
        for (int i = 0; i < 40; i++) {
                char name[41];
                snprintf(name, sizeof(name), "map%02d-%034d", i, 0);
                snprintf(line, sizeof(line), "[map %s]\noutput = /out/%d\nquery = SELECT 1, 2\nreload = r\n", name, i);
                str_append(&text, &tlen, line, strlen(line));
                if (i)
                        str_append(&want, &wlen, " ", 1);
                str_append(&want, &wlen, name, strlen(name));
                status[i] = 'C';
        }
        status[40] = '\0';
        snprintf(line, sizeof(line), "[reload r]\ncommand = printf %%s \"$MAPSYNCD_MAP\" > %s/log\n", tmpdir);
        str_append(&text, &tlen, line, strlen(line));
        REQUIRE_INT(config_parse_string("t.conf", text, &c, &e), 0);
        config_errors_done(&e);
        REQUIRE_UINT(c->n_maps, 40);
        j = new_jobs(c, true, &idle);
        fake(&f, c, status, '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        log = read_in("log");
        CHECK_UINT(strlen(want), 40 * 40 + 39);
        CHECK_STR(log, want);
        jobs_free(j);
        config_free(c);
}

struct load_case {
        const char *what;
        const char *text;
        size_t len; /* 0: strlen(text) */
        unsigned owed;
        const char *warning; /* in the log; NULL: none */
};

static void test_load_corruption(void) {
        static const char nul_line[] = "map a\nmap \0b\nmap c\n";
        static const struct load_case cases[] = {
                {"empty file", "", 0, 0, NULL},
                {"comments only", "# x\n\n# y\n", 0, 0, NULL},
                {"unknown kind", "version 2\nbogus a\nmap a\n", 0, 1, "not an owed hook"},
                {"NUL byte", nul_line, sizeof(nul_line) - 1, 2, "holds a NUL byte"},
                {"no final newline", "version 2\nmap a\nmap c", 0, 2, "last line has no newline"},
                {"truncated name", "version 2\nmap a\nmap vmail", 0, 1, "which the configuration no longer has"},
                {"unknown map", "map zzz\nmap b\n", 0, 1, "owed hook of map zzz, which the configuration no longer"},
                {"unknown reload", "reload q\n", 0, 0, "owed hook of reload q"},
                {"no name", "map \n", 0, 0, "owed hook without a name"},
                {"bad version", "version x\nmap a\n", 0, 1, "not a version: x"},
                {"newer version", "version 9\nmap a\nfuture thing\nreload r a\n", 0, 2,
                 "written by a newer mapsyncd (version 9"},
                {"unknown cause", "version 2\nreload r a zzz\n", 0, 1, "reload r caused by map zzz"},
                {"text after map", "version 2\nmap a extra\n", 0, 1, "text after the map's name"},
                {"duplicates", "map a\nmap a\nreload r a\nreload r a\n", 0, 2, NULL},
                {"binary garbage", "\xff\xfe\x01\x02\nmap\tb\n\x80map c\n", 0, 0, "not an owed hook"},
                {"CRLF", "map a\r\n", 0, 0, "which the configuration no longer has"},
        };
        struct config *c = make_config(NULL);

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                const struct load_case *k = &cases[i];
                struct idle idle = {0};
                struct jobs *j = new_jobs(c, true, &idle);
                struct loop_capture cap;
                char *log;

                reset();
                write_in("state/owed-hooks", k->text, k->len ? k->len : strlen(k->text));
                loop_capture_begin(&cap, LOG_INFO);
                jobs_load(j);
                log = loop_capture_end(&cap);
                if (!CHECK_UINT(jobs_owed(j), k->owed))
                        fprintf(stderr, "    case: %s\n", k->what);
                if (k->warning && !CHECK_CONTAINS(log, k->warning))
                        fprintf(stderr, "    case: %s\n", k->what);
                if (k->warning && strstr(log, "warning"))
                        /* Each names the file and the line. */
                        CHECK_CONTAINS(log, "/state/owed-hooks:");
                if (!k->warning && !CHECK(!strstr(log, "warning")))
                        fprintf(stderr, "    case: %s: %s\n", k->what, log);
                free(log);
                jobs_free(j);
        }
        /* A very long line. */
        {
                size_t n = 200000;
                char *big = malloc(n + 16);
                struct idle idle = {0};
                struct jobs *j = new_jobs(c, true, &idle);
                struct loop_capture cap;
                char *log;

                REQUIRE(big);
                memcpy(big, "map ", 4);
                memset(big + 4, 'x', n);
                memcpy(big + 4 + n, "\nmap b\n", 8);
                write_in("state/owed-hooks", big, strlen(big));
                loop_capture_begin(&cap, LOG_INFO);
                jobs_load(j);
                log = loop_capture_end(&cap);
                CHECK_UINT(jobs_owed(j), 1);
                CHECK_CONTAINS(log, "which the configuration no longer has");
                free(log);
                free(big);
                jobs_free(j);
        }
        /* Not a file. */
        {
                _cleanup_free_ char *p = path_in("state/owed-hooks");
                struct idle idle = {0};
                struct jobs *j = new_jobs(c, true, &idle);
                struct loop_capture cap;
                char *log;

                reset();
                REQUIRE(mkdir(p, 0700) == 0);
                loop_capture_begin(&cap, LOG_INFO);
                jobs_load(j);
                log = loop_capture_end(&cap);
                CHECK_UINT(jobs_owed(j), 0);
                CHECK_CONTAINS(log, "Could not read owed hooks from");
                CHECK_CONTAINS(log, "state/owed-hooks");
                free(log);
                rmdir(p);
                jobs_free(j);
        }
        config_free(c);
}

/* Version 1 (no version line, no causes): the reload's causes are the
 * owed maps that name it, and it still waits for them. */
static void test_load_version_1(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *log = NULL;

        reset();
        static const char v1[] = "# mapsyncd: hooks owed, run at the next start\nmap b\nreload r\n";

        write_in("state/owed-hooks", v1, sizeof(v1) - 1);
        jobs_load(j);
        CHECK_UINT(jobs_owed(j), 2);
        fake(&f, c, "...", '5');
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        log = read_in("log");
        CHECK_STR(log, "b 5555555555555555555555555555555555555555555555555555555555555555 2\nreload r b\n");
        jobs_free(j);

        /* A reload alone: every map naming it. */
        reset();
        write_in("state/owed-hooks", "reload r\n", 9);
        j = new_jobs(c, true, &idle);
        jobs_load(j);
        CHECK(kick_settle(j, &idle, 10000000));
        free(log);
        log = read_in("log");
        CHECK_STR(log, "reload r a b\n");
        jobs_free(j);
        config_free(c);
}

static void test_unsafe_state_dir(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *state = path_in("state"), *file = path_in("state/owed-hooks"), *log = NULL,
                            *hooks_log = NULL;
        struct loop_capture cap;

        reset();
        REQUIRE(chmod(state, 0777) == 0);
        loop_capture_begin(&cap, LOG_INFO);
        fake(&f, c, "..C", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        log = loop_capture_end(&cap);
        chmod(state, 0700);
        CHECK(access(file, F_OK) < 0);
        CHECK_UINT(count_lines_with(log, "is writable by others than its owner"), 1);
        /* The hook ran all the same (without its lock). */
        hooks_log = read_in("log");
        CHECK_STR(hooks_log, "c 1111111111111111111111111111111111111111111111111111111111111111 3\n");
        jobs_free(j);
        config_free(c);
}

static void test_set_config_carries_over(void) {
        struct config *c = make_config(NULL), *c2;
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *text = NULL, *log = NULL;
        struct config_errors e = {0};

        reset();
        jobs_hold(j, true);
        fake(&f, c, "CCC", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK_UINT(jobs_owed(j), 4);
        /* New order: c, b (a gone); r named by b only. */
        REQUIRE(asprintf(&text,
                         "[database]\npath = /db\n[sync]\nstate_dir = %s/state\n"
                         "[map c]\noutput = /out/c\nquery = SELECT 1, 2\non_change = echo \"$MAPSYNCD_MAP "
                         "$MAPSYNCD_SHA256\" >> %s/log\n"
                         "[map b]\noutput = /out/b\nquery = SELECT 1, 2\nreload = r\n"
                         "[reload r]\ncommand = echo \"reload $MAPSYNCD_MAP\" >> %s/log\n",
                         tmpdir, tmpdir, tmpdir) > 0);
        REQUIRE_INT(config_parse_string("t2.conf", text, &c2, &e), 0);
        config_errors_done(&e);
        REQUIRE_INT(jobs_set_config(j, c2), 0);
        config_free(c);
        /* c and r; b has no on_change any more. */
        CHECK_UINT(jobs_owed(j), 2);
        jobs_hold(j, false);
        CHECK(kick_settle(j, &idle, 10000000));
        log = read_in("log");
        CHECK_STR(log, "c 1111111111111111111111111111111111111111111111111111111111111111\nreload b\n");
        jobs_free(j);
        config_free(c2);
}

/* A process group of the test's own, as an earlier mapsyncd's hook left
 * running; its pid goes into the record of map c's hook. */
static pid_t spawn_group(const char *record) {
        char buf[32];
        pid_t pid = fork();

        if (pid == 0) {
                setpgid(0, 0);
                execl("/bin/sleep", "sleep", "30", (char *)NULL);
                _exit(127);
        }
        setpgid(pid, pid);
        snprintf(buf, sizeof(buf), "%d\n", (int)pid);
        if (test_write_file(record, buf, strlen(buf), 0600) < 0)
                abort();
        return pid;
}

static void end_group(pid_t pid) {
        kill(-pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

static void test_earlier_run_still_running(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, true, &idle);
        struct fake_cycle f;
        _cleanup_free_ char *record = path_in("state/hook-map-c.pid"), *log = NULL;
        struct loop_capture cap;
        bool never = false;
        uint64_t t0;
        pid_t other;

        reset();
        other = spawn_group(record);
        loop_capture_begin(&cap, LOG_INFO);
        fake(&f, c, "..C", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        idle.flag = false;
        jobs_kick(j);
        /* Waiting is not idle, and nothing runs. */
        loop_until(event, &never, 500000);
        CHECK(!idle.flag);
        CHECK_UINT(hooks_running(hooks), 0);
        end_group(other);
        CHECK(settle(&idle, 5000000));
        log = read_in("log");
        CHECK_STR(log, "c 1111111111111111111111111111111111111111111111111111111111111111 3\n");
        CHECK_UINT(jobs_failures(j), 0);
        CHECK(access(record, F_OK) < 0);

        /* Running past the bound (hook_timeout_s 1 + 5 s): started all the
         * same, with a warning. */
        other = spawn_group(record);
        fake(&f, c, "..C", '2');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        t0 = loop_now_usec();
        CHECK(kick_settle(j, &idle, 10000000));
        CHECK(loop_now_usec() - t0 >= 6000000);
        end_group(other);
        free(log);
        log = loop_capture_end(&cap);
        CHECK_CONTAINS(log,
                       "c: the same hook started by an earlier run still runs; waiting for it to end (at most 6 s)");
        CHECK_CONTAINS(log, "c: the same hook started by an earlier run still runs after 6 s, past its timeout; "
                            "starting it all the same");
        free(log);
        log = read_in("log");
        CHECK_UINT(count_lines_with(log, "c 2222"), 1);
        CHECK_UINT(jobs_failures(j), 0);
        jobs_free(j);
        config_free(c);
}

static void test_once_mode(void) {
        struct config *c = make_config(NULL);
        struct idle idle = {0};
        struct jobs *j = new_jobs(c, false, &idle);
        struct fake_cycle f;
        bool never = false;
        _cleanup_free_ char *file = NULL;

        reset();
        write_in("fail-a", "", 0);
        fake(&f, c, "C..", '1');
        jobs_prepare(j, &f.cy);
        jobs_commit(j, &f.cy);
        CHECK(kick_settle(j, &idle, 10000000));
        CHECK_UINT(jobs_failures(j), 1);
        /* Not retried; still owed, r too, for the next run. */
        loop_until(event, &never, 1300000);
        CHECK_UINT(jobs_failures(j), 1);
        CHECK_UINT(jobs_owed(j), 2);
        file = read_in("state/owed-hooks");
        CHECK_STR(file, "# mapsyncd: hooks owed, run at the next start\nversion 2\nmap a\nreload r a\n");
        CHECK_UINT(jobs_running(j), 0);
        jobs_free(j);
        config_free(c);
}

int main(void) {
        _cleanup_free_ char *state = NULL;

        log_init(LOG_CRIT);
        loop_block_sigchld();
        tmpdir = test_mkdtemp();
        state = test_path(tmpdir, "state");
        if (mkdir(state, 0700) < 0 || sd_event_new(&event) < 0 || hooks_new(event, &hooks) < 0)
                abort();
        RUN(test_round_trip);
        RUN(test_failed_replace_owes_nothing);
        RUN(test_failed_replace_keeps_the_hash);
        RUN(test_crash_after_rename_keeps_the_hook);
        RUN(test_reload_held_back);
        RUN(test_causes_are_a_set);
        RUN(test_causes_never_cut);
        RUN(test_load_corruption);
        RUN(test_load_version_1);
        RUN(test_unsafe_state_dir);
        RUN(test_set_config_carries_over);
        RUN(test_earlier_run_still_running);
        RUN(test_once_mode);
        hooks_free(hooks);
        sd_event_unref(event);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
