/* Unit tests of daemon.h: daemon_run() and daemon_run_forced() driven for
 * real, each run in a forked child (the daemon blocks, and takes its
 * signals through signalfd) on a real SQLite file, a real configuration
 * file, real hook processes and a private NOTIFY_SOCKET that this process
 * binds and reads. The parent commits to the database, sends signals and
 * judges the map files, what the hooks recorded, the sd_notify messages,
 * the metrics file, the log and the exit status.
 *
 * DAEMON_ONCE: every map written and its hooks run in order, an unchanged
 * second run writes nothing and runs nothing, a failing query or hook or a
 * missing database gives 1 (and the hook is run again by the next run),
 * the shrink guard holds a map and daemon_run_forced() publishes it.
 * DAEMON_WATCH: READY=1 after the first cycle and its hooks (STATUS
 * first), a second instance on the same state_dir refused, a commit
 * reaching its map after the debounce, a burst giving its cycles within
 * max_delay and not one per commit, SIGUSR1 (a cycle without a change
 * writes nothing; a damaged file is put right), SIGHUP (a new map taken,
 * a broken file ignored and logged), SIGUSR2 and the shrink guard, a
 * missing database (READY=1 all the same, the maps follow once it is
 * there), SIGTERM waiting for the running hook with no cycle after
 * STOPPING=1, a second SIGTERM ending the hook's whole process group.
 *
 * Every wait is a loop with a generous deadline; nothing assumes speed. */
#include "daemon.h"

#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "log.h"
#include "util.h"

#include "loop.h"

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL
/* A deadline for what must happen; reached only when it does not. */
#define WAIT_USEC (60 * USEC_PER_SEC)

/* The child's status when LeakSanitizer found leaks in it. */
#define EXIT_LEAKS 97

/* Set by the AddressSanitizer runtime, absent otherwise. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));
#ifdef TEST_COVERAGE
extern void __gcov_dump(void);
#endif

static char *rootdir, *notify_path;
static struct env *cur_env; /* not freed yet (a REQUIRE returned early) */
static int notify_fd = -1;

/* --- small helpers ------------------------------------------------------ */

static uint64_t now(void) {
        return now_usec(CLOCK_MONOTONIC);
}

/* Every '@' of tmpl replaced by dir. */
static char *subst(const char *tmpl, const char *dir) {
        size_t n = 0, dl = strlen(dir);
        char *out, *o;

        for (const char *p = tmpl; *p; p++)
                n += *p == '@' ? dl : 1;
        out = o = malloc(n + 1);
        if (!out)
                abort();
        for (const char *p = tmpl; *p; p++) {
                if (*p == '@') {
                        memcpy(o, dir, dl);
                        o += dl;
                } else
                        *o++ = *p;
        }
        *o = '\0';
        return out;
}

/* --- one test's directory ----------------------------------------------- */

struct env {
        char *dir, *db, *conf, *log;
        pid_t pids[4]; /* children not reaped yet */
};

static char *env_path(const struct env *e, const char *name) {
        return test_path(e->dir, name);
}

static char *env_read(const struct env *e, const char *name) {
        _cleanup_free_ char *p = env_path(e, name);
        char *t = test_read_file(p, NULL);

        return t ? t : strdup("(missing)");
}

static bool env_exists(const struct env *e, const char *name) {
        _cleanup_free_ char *p = env_path(e, name);

        return access(p, F_OK) == 0;
}

static void env_touch(const struct env *e, const char *name) {
        _cleanup_free_ char *p = env_path(e, name);

        if (test_write_file(p, "", 0, 0600) < 0)
                abort();
}

/* Replaces a file the way an editor or a deploy tool does: a new file
 * renamed over it. */
static void env_write(const struct env *e, const char *name, const char *text, mode_t mode) {
        _cleanup_free_ char *p = env_path(e, name), *tmp = NULL;

        if (asprintf(&tmp, "%s.new", p) < 0 || test_write_file(tmp, text, strlen(text), mode) < 0 || rename(tmp, p) < 0)
                abort();
}

static int sql_at(const char *path, const char *sql) {
        sqlite3 *h = NULL;
        char *err = NULL;
        int rc = sqlite3_open_v2(path, &h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);

        if (rc == SQLITE_OK)
                rc = sqlite3_busy_timeout(h, 10000);
        if (rc == SQLITE_OK)
                rc = sqlite3_exec(h, sql, NULL, NULL, &err);
        if (rc != SQLITE_OK)
                fprintf(stderr, "sqlite3_exec(%s): %s\n", sql, err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        sqlite3_close(h);
        return rc;
}

static int env_sql(const struct env *e, const char *sql) {
        return sql_at(e->db, sql);
}

/* The map hooks' script: records "MAP ROWS" in DIR/hooks; map c fails
 * while DIR/fail-c exists, and while DIR/gate exists it records its
 * process group in DIR/started and waits for DIR/release (then writes
 * DIR/finished). */
static const char hook_script[] = "D=@\n"
                                  "if [ \"$MAPSYNCD_MAP\" = c ] && [ -e \"$D/fail-c\" ]; then exit 3; fi\n"
                                  "if [ \"$MAPSYNCD_MAP\" = c ] && [ -e \"$D/gate\" ]; then\n"
                                  "  echo $$ > \"$D/started.tmp\" && mv \"$D/started.tmp\" \"$D/started\"\n"
                                  "  while [ ! -e \"$D/release\" ]; do sleep 0.05; done\n"
                                  "  echo done > \"$D/finished\"\n"
                                  "fi\n"
                                  "echo \"$MAPSYNCD_MAP $MAPSYNCD_ROWS\" >> \"$D/hooks\"\n";

struct opts {
        unsigned debounce_ms, max_delay_ms;
        const char *c_query; /* map c's query; NULL: its rows of t */
        const char *extra;   /* sections after the standard ones ('@': the directory) */
        const char *sync;    /* lines added to [sync] */
};

/* Maps a, b (reload r) and c (no reload) of table t(m, k, v). */
static void env_config(const struct env *e, const struct opts *o) {
        _cleanup_free_ char *tmpl = NULL, *text = NULL;

        if (asprintf(&tmpl,
                     "[database]\npath = @/db.sqlite\n"
                     "[sync]\ndebounce_ms = %u\nmax_delay_ms = %u\nstate_dir = @/state\n"
                     "metrics_file = @/metrics.prom\n%s"
                     "[map a]\noutput = @/out/a\nquery = SELECT k, v FROM t WHERE m = 'a'\n"
                     "on_change = sh @/hook.sh\nreload = r\n"
                     "[map b]\noutput = @/out/b\nquery = SELECT k, v FROM t WHERE m = 'b'\n"
                     "on_change = sh @/hook.sh\nreload = r\n"
                     "[map c]\noutput = @/out/c\nquery = %s\non_change = sh @/hook.sh\n"
                     "[reload r]\ncommand = echo \"reload $MAPSYNCD_MAP\" >> @/hooks\n%s",
                     o->debounce_ms ? o->debounce_ms : 100, o->max_delay_ms ? o->max_delay_ms : 2000,
                     o->sync ? o->sync : "", o->c_query ? o->c_query : "SELECT k, v FROM t WHERE m = 'c'",
                     o->extra ? o->extra : "") < 0)
                abort();
        text = subst(tmpl, e->dir);
        env_write(e, "mapsyncd.conf", text, 0600);
}

static struct env *env_new(const char *name, const struct opts *o, bool with_db) {
        struct env *e = calloc(1, sizeof(*e));
        _cleanup_free_ char *out = NULL, *script = NULL;

        if (!e)
                abort();
        cur_env = e;
        e->dir = test_path(rootdir, name);
        e->db = env_path(e, "db.sqlite");
        e->conf = env_path(e, "mapsyncd.conf");
        e->log = env_path(e, "log");
        out = env_path(e, "out");
        if (mkdir(e->dir, 0700) < 0 || mkdir(out, 0755) < 0)
                abort();
        script = subst(hook_script, e->dir);
        env_write(e, "hook.sh", script, 0600);
        env_config(e, o);
        if (with_db && env_sql(e, "PRAGMA journal_mode=WAL; CREATE TABLE t(m, k, v);"
                                  "INSERT INTO t VALUES ('a', 'k1', 'v1'), ('a', 'k2', 'v2'), ('b', 'x', '1'),"
                                  "('c', 'p', 'q');") != SQLITE_OK)
                abort();
        return e;
}

/* Kills what a failed test left running (the daemon, a waiting hook). */
static void env_free(struct env *e) {
        _cleanup_free_ char *started = env_read(e, "started");
        int pgid = atoi(started) > 1 ? getpgid(atoi(started)) : -1;

        for (size_t i = 0; i < ARRAY_SIZE(e->pids); i++)
                if (e->pids[i] > 0) {
                        kill(e->pids[i], SIGKILL);
                        waitpid(e->pids[i], NULL, 0);
                }
        if (pgid > 1)
                kill(-pgid, SIGKILL);
        test_rm_rf(e->dir);
        free(e->dir);
        free(e->db);
        free(e->conf);
        free(e->log);
        free(e);
        cur_env = NULL;
}

/* --- the notification socket --------------------------------------------- */

static char *notes[4096];
static size_t n_notes;

/* Reads what came, waiting at most timeout_usec for the first message. */
static void notes_read(uint64_t timeout_usec) {
        struct pollfd p = {.fd = notify_fd, .events = POLLIN};
        char buf[4096];

        if (poll(&p, 1, (int)(timeout_usec / USEC_PER_MSEC)) <= 0)
                return;
        for (;;) {
                ssize_t n = recv(notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n < 0)
                        return;
                buf[n] = '\0';
                if (n_notes == ARRAY_SIZE(notes))
                        abort();
                notes[n_notes] = strdup(buf);
                if (!notes[n_notes++])
                        abort();
        }
}

static void notes_clear(void) {
        notes_read(0);
        for (size_t i = 0; i < n_notes; i++)
                free(notes[i]);
        n_notes = 0;
}

/* Whether a line of msg starts with prefix and holds sub (NULL: anything). */
static bool note_has(const char *msg, const char *prefix, const char *sub) {
        for (const char *l = msg; l && *l;) {
                const char *nl = strchr(l, '\n');
                size_t len = nl ? (size_t)(nl - l) : strlen(l);

                if (strncmp(l, prefix, strlen(prefix)) == 0) {
                        if (!sub)
                                return true;
                        char *line = strndup(l, len);
                        bool found = line && strstr(line, sub);
                        free(line);
                        if (found)
                                return true;
                }
                l = nl ? nl + 1 : NULL;
        }
        return false;
}

/* The index of the first message from `from` on with such a line, waiting
 * for it at most timeout_usec; -1 if none came. */
static ssize_t notes_wait(const char *prefix, const char *sub, size_t from, uint64_t timeout_usec) {
        uint64_t end = now() + timeout_usec;

        for (;;) {
                for (size_t i = from; i < n_notes; i++)
                        if (note_has(notes[i], prefix, sub))
                                return (ssize_t)i;
                from = n_notes;
                uint64_t t = now();
                if (t >= end)
                        return -1;
                notes_read(end - t < 100 * USEC_PER_MSEC ? end - t : 100 * USEC_PER_MSEC);
        }
}

/* The last message before `before` with such a line, or NULL. */
static const char *notes_last(const char *prefix, size_t before) {
        for (size_t i = before; i > 0; i--)
                if (note_has(notes[i - 1], prefix, NULL))
                        return notes[i - 1];
        return NULL;
}

/* Sleeps ms, reading the notifications meanwhile: a daemon's sd_notify()
 * blocks once the socket's queue (10 datagrams) is full. */
static void idle_ms(unsigned ms) {
        uint64_t end = now() + ms * USEC_PER_MSEC;

        for (uint64_t t; (t = now()) < end;)
                notes_read(end - t);
}

/* --- the daemon in a child ------------------------------------------------ */

static _Noreturn void child_exit(int status) {
        /* _exit() skips atexit(): the leak check and the coverage data of
         * this process would be lost with it. */
        if (__lsan_do_recoverable_leak_check && __lsan_do_recoverable_leak_check() != 0 && status == 0)
                status = EXIT_LEAKS;
#ifdef TEST_COVERAGE
        __gcov_dump();
#endif
        _exit(status);
}

/* Runs the daemon as main() does (config_load, then daemon_run or, with
 * force, daemon_run_forced) in a child logging to log (NULL: e->log). */
static pid_t spawn_log(struct env *e, enum daemon_mode mode, bool force, const char *log) {
        pid_t pid;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0)
                abort();
        if (pid == 0) {
                struct config_errors errors = {};
                struct config *c = NULL;
                int fd = open(log ? log : e->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
                        _exit(120);
                close(fd);
                close(notify_fd);
                setenv("NOTIFY_SOCKET", notify_path, 1);
                unsetenv("WATCHDOG_USEC");
                unsetenv("WATCHDOG_PID");
                unsetenv("LISTEN_FDS");
                unsetenv("LISTEN_PID");
                unsetenv("LISTEN_FDNAMES");
                unsetenv("JOURNAL_STREAM");
                log_init(LOG_DEBUG);
                int r = config_load(e->conf, &c, &errors);
                for (size_t i = 0; i < errors.n_msgs; i++)
                        log_error("%s", errors.msgs[i]);
                config_errors_done(&errors);
                if (r < 0)
                        child_exit(78);
                child_exit(force ? daemon_run_forced(c, e->conf, mode, true) : daemon_run(c, e->conf, mode));
        }
        for (size_t i = 0; i < ARRAY_SIZE(e->pids); i++)
                if (e->pids[i] <= 0) {
                        e->pids[i] = pid;
                        return pid;
                }
        abort();
}

static pid_t spawn(struct env *e, enum daemon_mode mode) {
        return spawn_log(e, mode, false, NULL);
}

/* Waits for the child to end; its exit status, or -1 when it did not
 * end in time (it is killed then), or 128 + signal. */
static int wait_exit(struct env *e, pid_t pid, uint64_t timeout_usec) {
        uint64_t end = now() + timeout_usec;
        int status = 0;
        pid_t r;

        while ((r = waitpid(pid, &status, WNOHANG)) == 0 && now() < end)
                idle_ms(10);
        if (r < 0) {
                fprintf(stderr, "    waitpid(%d): %s\n", (int)pid, strerror(errno));
                return -2;
        }
        if (r == 0) {
                fprintf(stderr, "    child %d still runs after %llu s: killed\n", (int)pid,
                        (unsigned long long)(timeout_usec / USEC_PER_SEC));
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
        }
        for (size_t i = 0; i < ARRAY_SIZE(e->pids); i++)
                if (e->pids[i] == pid)
                        e->pids[i] = 0;
        if (r == 0)
                return -1;
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return WEXITSTATUS(status);
}

/* The process group of pid, from /proc/PID/stat; -1 if none. */
static int proc_pgrp(const char *pid, char *state) {
        char path[300], buf[512];
        const char *p;
        int pgrp;
        FILE *f;
        size_t k;

        snprintf(path, sizeof(path), "/proc/%s/stat", pid);
        f = fopen(path, "re");
        if (!f)
                return -1;
        k = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[k] = '\0';
        /* pid (comm) state ppid pgrp ...; comm may hold anything. */
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 1, " %c %*d %d", state, &pgrp) != 2)
                return -1;
        return pgrp;
}

/* Processes of group pgid that are not zombies. */
static unsigned group_live(int pgid) {
        DIR *d = opendir("/proc");
        unsigned n = 0;

        if (!d)
                abort();
        for (struct dirent *de; (de = readdir(d));) {
                char state = 0;

                if (de->d_name[0] >= '1' && de->d_name[0] <= '9' && proc_pgrp(de->d_name, &state) == pgid &&
                    state != 'Z')
                        n++;
        }
        closedir(d);
        return n;
}

/* Whether the child still runs (it is not reaped here). */
static bool alive(pid_t pid) {
        siginfo_t si = {0};

        return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

/* Runs DAEMON_ONCE to its end; its exit status. */
static int run_once(struct env *e, bool force) {
        pid_t pid = spawn_log(e, DAEMON_ONCE, force, NULL);

        return wait_exit(e, pid, WAIT_USEC);
}

/* Starts DAEMON_WATCH and waits for its READY=1. */
static pid_t start_watch(struct env *e) {
        pid_t pid;

        notes_clear();
        pid = spawn(e, DAEMON_WATCH);
        if (notes_wait("READY=1", NULL, 0, WAIT_USEC) < 0) {
                _cleanup_free_ char *log = env_read(e, "log");
                test_failf(__FILE__, __LINE__, "no READY=1 from the daemon; its log:\n%s", log);
                return -1;
        }
        return pid;
}

/* SIGTERM, STOPPING=1, exit status 0. */
static void stop_watch(struct env *e, pid_t pid) {
        size_t from = n_notes;

        CHECK_INT(kill(pid, SIGTERM), 0);
        CHECK(notes_wait("STOPPING=1", NULL, from, WAIT_USEC) >= 0);
        CHECK_INT(wait_exit(e, pid, WAIT_USEC), 0);
}

/* Waits until the file holds want (or the deadline); whether it did. */
static bool wait_content(const struct env *e, const char *name, const char *want) {
        uint64_t end = now() + WAIT_USEC;

        for (;;) {
                _cleanup_free_ char *t = env_read(e, name);
                if (streq(t, want))
                        return true;
                if (now() >= end) {
                        CHECK_STR(t, want);
                        return false;
                }
                idle_ms(10);
        }
}

/* A metric of the metrics file (its first line starting with name and a
 * space), or -1. */
static long long metric(const struct env *e, const char *name) {
        _cleanup_free_ char *t = env_read(e, "metrics.prom");
        size_t n = strlen(name);

        for (const char *l = t; l && *l;) {
                if (strncmp(l, name, n) == 0 && l[n] == ' ')
                        return strtoll(l + n + 1, NULL, 10);
                l = strchr(l, '\n');
                l = l ? l + 1 : NULL;
        }
        return -1;
}

static bool wait_metric_at_least(const struct env *e, const char *name, long long min) {
        uint64_t end = now() + WAIT_USEC;

        while (metric(e, name) < min) {
                if (now() >= end) {
                        CHECK_INT(metric(e, name), min);
                        return false;
                }
                idle_ms(10);
        }
        return true;
}

static void stat_out(const struct env *e, const char *name, struct stat *st) {
        _cleanup_free_ char *p = NULL;

        if (asprintf(&p, "%s/out/%s", e->dir, name) < 0)
                abort();
        if (stat(p, st) < 0)
                *st = (struct stat){0};
}

static bool same_file(const struct stat *a, const struct stat *b) {
        return a->st_ino && a->st_ino == b->st_ino && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
               a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static const char first_hooks[] = "a 2\nb 1\nc 1\nreload a b\n";

/* --- DAEMON_ONCE ------------------------------------------------------------ */

/* Every map written, the hooks in order (each map's on_change in config
 * order, then the reload once, naming its maps); a second run over the
 * same data writes nothing and runs no hook. */
static void test_once_writes_every_map(void) {
        struct env *e = env_new("once", &(struct opts){0}, true);
        struct stat a1, b1, a2, b2;

        CHECK_INT(run_once(e, false), 0);
        {
                _cleanup_free_ char *a = env_read(e, "out/a"), *b = env_read(e, "out/b"), *c = env_read(e, "out/c"),
                                    *h = env_read(e, "hooks");
                CHECK_STR(a, "k1\tv1\nk2\tv2\n");
                CHECK_STR(b, "x\t1\n");
                CHECK_STR(c, "p\tq\n");
                CHECK_STR(h, first_hooks);
        }
        stat_out(e, "a", &a1);
        stat_out(e, "b", &b1);
        CHECK_INT(run_once(e, false), 0);
        stat_out(e, "a", &a2);
        stat_out(e, "b", &b2);
        CHECK(same_file(&a1, &a2));
        CHECK(same_file(&b1, &b2));
        {
                _cleanup_free_ char *h = env_read(e, "hooks");
                CHECK_STR(h, first_hooks);
        }
        env_free(e);
}

/* A map whose query fails: 1, the others written and their hooks run. */
static void test_once_query_fails(void) {
        struct env *e = env_new("once-query", &(struct opts){.c_query = "SELECT k, v FROM no_such_table"}, true);
        _cleanup_free_ char *a = NULL, *h = NULL, *log = NULL;

        CHECK_INT(run_once(e, false), 1);
        a = env_read(e, "out/a");
        CHECK_STR(a, "k1\tv1\nk2\tv2\n");
        CHECK(!env_exists(e, "out/c"));
        h = env_read(e, "hooks");
        CHECK_STR(h, "a 2\nb 1\nreload a b\n");
        log = env_read(e, "log");
        CHECK_CONTAINS(log, "no_such_table");
        env_free(e);
}

/* A failing hook: 1, the maps in place; the next run runs the hook again
 * (nothing changed meanwhile) and gives 0. */
static void test_once_hook_fails(void) {
        struct env *e = env_new("once-hook", &(struct opts){0}, true);
        _cleanup_free_ char *c = NULL, *h = NULL, *log = NULL, *owed = NULL, *h2 = NULL;

        env_touch(e, "fail-c");
        CHECK_INT(run_once(e, false), 1);
        c = env_read(e, "out/c");
        CHECK_STR(c, "p\tq\n");
        h = env_read(e, "hooks");
        CHECK_STR(h, "a 2\nb 1\nreload a b\n");
        log = env_read(e, "log");
        CHECK_CONTAINS(log, "hook failed");
        owed = env_read(e, "state/owed-hooks");
        CHECK_CONTAINS(owed, "c");
        {
                _cleanup_free_ char *p = env_path(e, "fail-c");
                unlink(p);
        }
        CHECK_INT(run_once(e, false), 0);
        h2 = env_read(e, "hooks");
        CHECK_STR(h2, "a 2\nb 1\nreload a b\nc 1\n");
        env_free(e);
}

/* No database: 1, nothing written, the reason logged. */
static void test_once_database_missing(void) {
        struct env *e = env_new("once-nodb", &(struct opts){0}, false);
        _cleanup_free_ char *log = NULL;

        CHECK_INT(run_once(e, false), 1);
        CHECK(!env_exists(e, "out/a"));
        CHECK(!env_exists(e, "hooks"));
        log = env_read(e, "log");
        CHECK_CONTAINS(log, "unavailable");
        env_free(e);
}

/* 30 lines, then 5: the guard (max_shrink 50 %) holds the file and the run
 * gives 1; daemon_run_forced() publishes it and gives 0. */
static void test_once_shrink_guard_forced(void) {
        struct env *e = env_new("once-shrink", &(struct opts){0}, true);
        _cleanup_free_ char *a1 = NULL, *a2 = NULL, *a3 = NULL, *log = NULL, *h = NULL;
        size_t lines = 0;

        REQUIRE_INT(env_sql(e, "DELETE FROM t WHERE m = 'a';"
                               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)"
                               "INSERT INTO t SELECT 'a', printf('k%02d', i), 'v' FROM n;"),
                    SQLITE_OK);
        CHECK_INT(run_once(e, false), 0);
        a1 = env_read(e, "out/a");
        for (const char *p = a1; (p = strchr(p, '\n')); p++)
                lines++;
        CHECK_UINT(lines, 30);
        REQUIRE_INT(env_sql(e, "DELETE FROM t WHERE m = 'a' AND k > 'k05'"), SQLITE_OK);
        CHECK_INT(run_once(e, false), 1);
        a2 = env_read(e, "out/a");
        CHECK_STR(a2, a1);
        log = env_read(e, "log");
        CHECK_CONTAINS(log, "max_shrink");
        CHECK_INT(run_once(e, true), 0);
        a3 = env_read(e, "out/a");
        CHECK_STR(a3, "k01\tv\nk02\tv\nk03\tv\nk04\tv\nk05\tv\n");
        h = env_read(e, "hooks");
        CHECK_STR(h, "a 30\nb 1\nc 1\nreload a b\na 5\nreload a\n");
        env_free(e);
}

/* --- DAEMON_WATCH ------------------------------------------------------------ */

/* READY=1 once the first cycle and its hooks are over, the STATUS before
 * it current; a --once on the same state_dir refused, naming the daemon;
 * a commit reaching its map, not before the debounce, the other maps not
 * touched. */
static void test_watch_ready_and_commit(void) {
        struct env *e = env_new("watch", &(struct opts){.debounce_ms = 300}, true);
        _cleanup_free_ char *once_log = env_path(e, "once-log");
        struct stat b1, b2;
        ssize_t ready;
        pid_t pid = start_watch(e), once;
        uint64_t t0, t1;

        if (pid < 0)
                goto out;
        /* Right at READY=1: the maps and every hook of the first cycle. */
        {
                _cleanup_free_ char *a = env_read(e, "out/a"), *h = env_read(e, "hooks");
                CHECK_STR(a, "k1\tv1\nk2\tv2\n");
                CHECK_STR(h, first_hooks);
        }
        ready = notes_wait("READY=1", NULL, 0, 0);
        CHECK(ready >= 0);
        {
                const char *status = ready >= 0 ? notes_last("STATUS=", (size_t)ready) : NULL;
                CHECK_CONTAINS(status, "STATUS=3 maps, 0 failed");
                CHECK_CONTAINS(status, "0 hooks owed");
        }

        /* The instance lock: a second instance gives 1 at once. */
        once = spawn_log(e, DAEMON_ONCE, false, once_log);
        CHECK_INT(wait_exit(e, once, WAIT_USEC), 1);
        {
                _cleanup_free_ char *log = test_read_file(once_log, NULL), *want = NULL;
                REQUIRE(asprintf(&want, "another mapsyncd (PID %d)", (int)pid) > 0);
                CHECK_CONTAINS(log, want);
        }
        CHECK(alive(pid));

        stat_out(e, "b", &b1);
        t0 = now();
        REQUIRE_INT(env_sql(e, "UPDATE t SET v = 'new' WHERE k = 'k1'"), SQLITE_OK);
        CHECK(wait_content(e, "out/a", "k1\tnew\nk2\tv2\n"));
        t1 = now();
        /* Started before the commit: at least the debounce. */
        if (!CHECK(t1 - t0 >= 300 * USEC_PER_MSEC))
                fprintf(stderr, "    the map changed %llu ms after the commit\n",
                        (unsigned long long)((t1 - t0) / USEC_PER_MSEC));
        CHECK(wait_content(e, "hooks", "a 2\nb 1\nc 1\nreload a b\na 2\nreload a\n"));
        stat_out(e, "b", &b2);
        CHECK(same_file(&b1, &b2));
        stop_watch(e, pid);
out:
        env_free(e);
}

/* Commits every 60 ms for 2.5 s (debounce 300 ms, max_delay 800 ms): a
 * cycle comes while the burst goes on, and only a few, not one per
 * commit; the last commit reaches the map. */
static void test_watch_burst(void) {
        const unsigned debounce_ms = 300, max_delay_ms = 800, period_ms = 60, burst_ms = 2500;
        struct env *e =
                env_new("burst", &(struct opts){.debounce_ms = debounce_ms, .max_delay_ms = max_delay_ms}, true);
        pid_t pid = start_watch(e);
        long long s0, s1;
        uint64_t start, last = 0, seen = 0, end;
        unsigned n = 0, quiet = 0;
        char want[64];

        if (pid < 0)
                goto out;
        REQUIRE(wait_metric_at_least(e, "mapsyncd_syncs_total", 1));
        s0 = metric(e, "mapsyncd_syncs_total");
        start = now();
        while (now() - start < burst_ms * USEC_PER_MSEC) {
                char sql[128];
                uint64_t t;

                snprintf(sql, sizeof(sql), "UPDATE t SET v = 'burst%u' WHERE k = 'k1'", n);
                REQUIRE_INT(env_sql(e, sql), SQLITE_OK);
                t = now();
                /* A gap as long as half the debounce (a loaded machine)
                 * may let a cycle in: allowed for below. */
                if (n > 0 && t - last >= debounce_ms * USEC_PER_MSEC / 2)
                        quiet++;
                last = t;
                n++;
                if (!seen) {
                        _cleanup_free_ char *a = env_read(e, "out/a");
                        if (strstr(a, "burst"))
                                seen = t;
                }
                uint64_t next = start + n * period_ms * USEC_PER_MSEC;
                t = now();
                if (next > t)
                        idle_ms((unsigned)((next - t) / USEC_PER_MSEC));
        }
        end = now();
        s1 = metric(e, "mapsyncd_syncs_total");
        if (!CHECK(seen != 0))
                fprintf(stderr, "    no cycle in %u ms of commits (max_delay_ms = %u)\n", burst_ms, max_delay_ms);
        {
                long long allowed = (long long)((end - start) / (max_delay_ms * USEC_PER_MSEC)) + 2 + quiet;
                if (!CHECK(s1 - s0 >= 1 && s1 - s0 <= allowed))
                        fprintf(stderr, "    %lld cycles during %u commits in %llu ms (%u quiet gaps); at most %lld\n",
                                s1 - s0, n, (unsigned long long)((end - start) / USEC_PER_MSEC), quiet, allowed);
        }
        snprintf(want, sizeof(want), "k1\tburst%u\nk2\tv2\n", n - 1);
        CHECK(wait_content(e, "out/a", want));
        stop_watch(e, pid);
out:
        env_free(e);
}

/* SIGUSR1: a cycle although nothing changed, which writes nothing and runs
 * no hook; and one that renders every map, so a damaged file is put
 * right (and its hooks run). */
static void test_watch_sigusr1(void) {
        struct env *e = env_new("usr1", &(struct opts){0}, true);
        pid_t pid = start_watch(e);
        struct stat a1, a2;
        long long s0;

        if (pid < 0)
                goto out;
        REQUIRE(wait_metric_at_least(e, "mapsyncd_syncs_total", 1));
        s0 = metric(e, "mapsyncd_syncs_total");
        stat_out(e, "a", &a1);
        CHECK_INT(kill(pid, SIGUSR1), 0);
        CHECK(wait_metric_at_least(e, "mapsyncd_syncs_total", s0 + 1));
        stat_out(e, "a", &a2);
        CHECK(same_file(&a1, &a2));

        env_write(e, "out/a", "damaged\n", 0640);
        CHECK_INT(kill(pid, SIGUSR1), 0);
        CHECK(wait_content(e, "out/a", "k1\tv1\nk2\tv2\n"));
        /* Only the second cycle's hooks: the first one ran none. */
        CHECK(wait_content(e, "hooks", "a 2\nb 1\nc 1\nreload a b\na 2\nreload a\n"));
        {
                _cleanup_free_ char *log = env_read(e, "log");
                CHECK_UINT(count_lines_with(log, "SIGUSR1: syncing now"), 2);
        }
        stop_watch(e, pid);
out:
        env_free(e);
}

/* SIGHUP: RELOADING=1, then READY=1; a new map is written; then a broken
 * file is logged with its line and ignored: the map it adds is not
 * written, the previous configuration keeps working. */
static void test_watch_sighup(void) {
        struct env *e = env_new("hup", &(struct opts){0}, true);
        const char *map_d = "[map d]\noutput = @/out/d\nquery = SELECT k, v FROM t WHERE m = 'd'\n";
        const char *map_e = "[map e]\noutput = @/out/e\nquery = SELECT k, v FROM t WHERE m = 'c'\n";
        pid_t pid = start_watch(e);
        ssize_t rl, rd;
        size_t from;

        if (pid < 0)
                goto out;
        REQUIRE_INT(env_sql(e, "INSERT INTO t VALUES ('d', 'dk', 'dv')"), SQLITE_OK);
        env_config(e, &(struct opts){.extra = map_d});
        from = n_notes;
        CHECK_INT(kill(pid, SIGHUP), 0);
        rl = notes_wait("RELOADING=1", NULL, from, WAIT_USEC);
        CHECK(rl >= 0);
        CHECK(rl >= 0 && note_has(notes[rl], "MONOTONIC_USEC=", NULL));
        rd = rl >= 0 ? notes_wait("READY=1", NULL, (size_t)rl + 1, WAIT_USEC) : -1;
        CHECK(rd >= 0);
        CHECK(wait_content(e, "out/d", "dk\tdv\n"));
        CHECK(notes_wait("STATUS=", "4 maps, 0 failed", from, WAIT_USEC) >= 0);
        {
                _cleanup_free_ char *log = env_read(e, "log");
                CHECK_CONTAINS(log, "reloaded: 4 maps");
        }

        /* Broken: an unknown key in [sync], and a map e. */
        env_config(e, &(struct opts){.extra = map_e, .sync = "no_such_key = 1\n"});
        from = n_notes;
        CHECK_INT(kill(pid, SIGHUP), 0);
        rl = notes_wait("RELOADING=1", NULL, from, WAIT_USEC);
        CHECK(rl >= 0);
        CHECK(rl >= 0 && notes_wait("READY=1", NULL, (size_t)rl + 1, WAIT_USEC) >= 0);
        {
                _cleanup_free_ char *log = env_read(e, "log"), *line = NULL;
                CHECK_CONTAINS(log, "has errors (see above): ignored; still running the previous one");
                /* The key is on line 8 of the file: the last of [sync]. */
                REQUIRE(asprintf(&line, "%s:8:", e->conf) > 0);
                CHECK_CONTAINS(log, line);
                CHECK_CONTAINS(log, "no_such_key");
        }
        /* Still the previous one: d follows the database, e is not written. */
        REQUIRE_INT(env_sql(e, "UPDATE t SET v = 'dv2' WHERE m = 'd'"), SQLITE_OK);
        CHECK(wait_content(e, "out/d", "dk\tdv2\n"));
        CHECK(!env_exists(e, "out/e"));
        stop_watch(e, pid);
out:
        env_free(e);
}

/* The shrink guard in the daemon: the map is held (STATUS and the metric
 * say so, the file stays), SIGUSR2 publishes it for one cycle. */
static void test_watch_shrink_sigusr2(void) {
        struct env *e = env_new("usr2", &(struct opts){0}, true);
        _cleanup_free_ char *a1 = NULL;
        pid_t pid;
        size_t from;

        REQUIRE_INT(env_sql(e, "DELETE FROM t WHERE m = 'a';"
                               "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30)"
                               "INSERT INTO t SELECT 'a', printf('k%02d', i), 'v' FROM n;"),
                    SQLITE_OK);
        pid = start_watch(e);
        if (pid < 0)
                goto out;
        a1 = env_read(e, "out/a");
        from = n_notes;
        REQUIRE_INT(env_sql(e, "DELETE FROM t WHERE m = 'a' AND k > 'k05'"), SQLITE_OK);
        CHECK(notes_wait("STATUS=", "shrink guard holds a (SIGUSR2 publishes)", from, WAIT_USEC) >= 0);
        {
                _cleanup_free_ char *a2 = env_read(e, "out/a");
                CHECK_STR(a2, a1);
        }
        CHECK_INT(metric(e, "mapsyncd_map_shrink_held{map=\"a\"}"), 1);
        from = n_notes;
        CHECK_INT(kill(pid, SIGUSR2), 0);
        CHECK(wait_content(e, "out/a", "k01\tv\nk02\tv\nk03\tv\nk04\tv\nk05\tv\n"));
        {
                /* The metrics file is written just before STATUS. */
                ssize_t i = notes_wait("STATUS=", "3 maps, 0 failed", from, WAIT_USEC);
                CHECK(i >= 0);
                CHECK(i >= 0 && !strstr(notes[i], "shrink guard"));
        }
        CHECK_INT(metric(e, "mapsyncd_map_shrink_held{map=\"a\"}"), 0);
        stop_watch(e, pid);
out:
        env_free(e);
}

/* No database at start: READY=1 all the same (STATUS says why), nothing
 * written; once the file is there the maps follow. */
static void test_watch_database_missing(void) {
        struct env *e = env_new("nodb", &(struct opts){0}, false);
        pid_t pid = start_watch(e);
        ssize_t ready;

        if (pid < 0)
                goto out;
        ready = notes_wait("READY=1", NULL, 0, 0);
        CHECK_CONTAINS(ready >= 0 ? notes_last("STATUS=", (size_t)ready) : NULL, "unavailable");
        CHECK(!env_exists(e, "out/a"));
        /* Made aside and renamed into place, as a deploy would. */
        {
                _cleanup_free_ char *tmp = env_path(e, "db.tmp");
                REQUIRE_INT(sql_at(tmp, "CREATE TABLE t(m, k, v);"
                                        "INSERT INTO t VALUES ('a', 'k1', 'v1'), ('b', 'x', '1'), ('c', 'p', 'q');"),
                            SQLITE_OK);
                REQUIRE_INT(rename(tmp, e->db), 0);
        }
        CHECK(wait_content(e, "out/a", "k1\tv1\n"));
        CHECK(wait_content(e, "hooks", "a 1\nb 1\nc 1\nreload a b\n"));
        CHECK(notes_wait("STATUS=", "3 maps, 0 failed", (size_t)ready, WAIT_USEC) >= 0);
        stop_watch(e, pid);
out:
        env_free(e);
}

/* Starts map c's waiting hook (DIR/gate) with a commit; its process
 * group (the hook's /bin/sh -c, which the script's shell need not be),
 * or 0. */
static int start_waiting_hook(struct env *e) {
        uint64_t end = now() + WAIT_USEC;

        env_touch(e, "gate");
        if (!CHECK_INT(env_sql(e, "UPDATE t SET v = 'q2' WHERE m = 'c'"), SQLITE_OK))
                return 0;
        while (!env_exists(e, "started")) {
                if (!CHECK(now() < end))
                        return 0;
                idle_ms(10);
        }
        _cleanup_free_ char *started = env_read(e, "started");
        int pgid = getpgid(atoi(started));
        CHECK(pgid > 1);
        return pgid > 1 ? pgid : 0;
}

/* SIGTERM while a hook runs: STOPPING=1, the daemon waits for the hook
 * (which ends on its own and is not killed), starts no cycle meanwhile (a
 * debounce armed before the signal never fires), then exits 0. */
static void test_watch_sigterm_waits_for_hook(void) {
        /* The hook's timeout out of the way: only the stop may end it. */
        struct env *e = env_new("term", &(struct opts){.debounce_ms = 500, .sync = "hook_timeout_s = 3600\n"}, true);
        pid_t pid = start_watch(e);
        size_t from;
        int pgid;
        uint64_t end;

        if (pid < 0)
                goto out;
        pgid = start_waiting_hook(e);
        REQUIRE(pgid > 1);
        /* A change whose debounce runs when the signal comes. */
        REQUIRE_INT(env_sql(e, "UPDATE t SET v = 'late' WHERE k = 'k1'"), SQLITE_OK);
        idle_ms(100);
        from = n_notes;
        CHECK_INT(kill(pid, SIGTERM), 0);
        CHECK(notes_wait("STOPPING=1", NULL, from, WAIT_USEC) >= 0);
        /* The debounce's time and more: the daemon still waits, writes
         * nothing. */
        end = now() + 1500 * USEC_PER_MSEC;
        while (now() < end && alive(pid))
                idle_ms(20);
        CHECK(alive(pid));
        {
                _cleanup_free_ char *a = env_read(e, "out/a");
                CHECK_STR(a, "k1\tv1\nk2\tv2\n");
        }
        CHECK_INT(kill(-pgid, 0), 0);
        env_touch(e, "release");
        CHECK_INT(wait_exit(e, pid, WAIT_USEC), 0);
        CHECK(env_exists(e, "finished"));
        {
                _cleanup_free_ char *a = env_read(e, "out/a"), *h = env_read(e, "hooks"), *log = env_read(e, "log");
                CHECK_STR(a, "k1\tv1\nk2\tv2\n");
                CHECK_STR(h, "a 2\nb 1\nc 1\nreload a b\nc 1\n");
                CHECK_CONTAINS(log, "stopping once the running hook has ended");
        }
out:
        env_free(e);
}

/* A second SIGTERM: the running hook's whole process group is stopped
 * (TERM, then KILL), and the daemon exits 0 once it has ended. */
static void test_watch_second_sigterm(void) {
        struct env *e = env_new("term2", &(struct opts){.sync = "hook_timeout_s = 3600\n"}, true);
        pid_t pid = start_watch(e);
        size_t from;
        int pgid;
        uint64_t end;

        if (pid < 0)
                goto out;
        pgid = start_waiting_hook(e);
        REQUIRE(pgid > 1);
        from = n_notes;
        CHECK_INT(kill(pid, SIGTERM), 0);
        CHECK(notes_wait("STOPPING=1", NULL, from, WAIT_USEC) >= 0);
        end = now() + 500 * USEC_PER_MSEC;
        while (now() < end && alive(pid))
                idle_ms(20);
        REQUIRE(alive(pid));
        CHECK_INT(kill(pid, SIGTERM), 0);
        CHECK_INT(wait_exit(e, pid, WAIT_USEC), 0);
        /* Nothing of the hook's group is left (its sleep included: it
         * got the signal with the shell, but may take a moment to die). */
        end = now() + WAIT_USEC;
        while (group_live(pgid) > 0 && now() < end)
                idle_ms(10);
        CHECK_UINT(group_live(pgid), 0);
        CHECK(!env_exists(e, "finished"));
        {
                _cleanup_free_ char *log = env_read(e, "log");
                CHECK_CONTAINS(log, "again: stopping running hooks");
        }
out:
        env_free(e);
}

/* The mtime rule's timer is a timer too: a passwd map held for the next
 * wall-clock second when SIGTERM comes (a hook still runs, so the daemon
 * waits) is not replaced after STOPPING=1. The file is given the current
 * second as its mtime and changed in the database at once, so that the
 * cycle holds it back; tried again when the second ran out before the
 * signal could be sent. */
static void test_watch_sigterm_disarms_pace(void) {
        const char *map_p = "[map p]\noutput = @/out/p\nquery = SELECT k, v FROM t WHERE m = 'p'\nformat = passwd\n";
        struct env *e = env_new("pace", &(struct opts){.debounce_ms = 20, .extra = map_p}, true);
        _cleanup_free_ char *pp = env_path(e, "out/p");
        char before[32] = "u:0\n";
        size_t from = 0;
        pid_t pid;
        int pgid;
        bool sent = false;

        REQUIRE_INT(env_sql(e, "INSERT INTO t VALUES ('p', 'u', '0')"), SQLITE_OK);
        pid = start_watch(e);
        if (pid < 0)
                goto out;
        REQUIRE(wait_content(e, "out/p", before));
        pgid = start_waiting_hook(e);
        REQUIRE(pgid > 1);
        for (unsigned attempt = 1; attempt <= 5 && !sent; attempt++) {
                struct timespec ts, times[2];
                char sql[96], content[32];
                _cleanup_free_ char *log0 = env_read(e, "log");
                size_t log_len = strlen(log0);
                uint64_t end = now() + WAIT_USEC;

                /* Early in a second: the cycle comes in the same one. */
                for (;;) {
                        clock_gettime(CLOCK_REALTIME, &ts);
                        if (ts.tv_nsec < 100000000L)
                                break;
                        idle_ms((unsigned)((1000000000L - ts.tv_nsec) / 1000000L) + 1);
                }
                times[0] = times[1] = (struct timespec){ts.tv_sec, 0};
                REQUIRE_INT(utimensat(AT_FDCWD, pp, times, 0), 0);
                snprintf(sql, sizeof(sql), "UPDATE t SET v = '%u' WHERE m = 'p'", attempt);
                snprintf(content, sizeof(content), "u:%u\n", attempt);
                REQUIRE_INT(env_sql(e, sql), SQLITE_OK);
                /* Held back (the log says so), or already replaced. */
                for (;;) {
                        _cleanup_free_ char *log = env_read(e, "log"), *cur = env_read(e, "out/p");
                        struct timespec t2;

                        if (strstr(log + log_len, "replacing it in the next one")) {
                                clock_gettime(CLOCK_REALTIME, &t2);
                                if (t2.tv_sec == ts.tv_sec && t2.tv_nsec < 700000000L) {
                                        from = n_notes;
                                        CHECK_INT(kill(pid, SIGTERM), 0);
                                        sent = true;
                                }
                                break;
                        }
                        if (streq(cur, content))
                                break;
                        REQUIRE(now() < end);
                        idle_ms(5);
                }
                if (!sent) {
                        REQUIRE(wait_content(e, "out/p", content));
                        snprintf(before, sizeof(before), "%s", content);
                }
        }
        REQUIRE(sent);
        CHECK(notes_wait("STOPPING=1", NULL, from, WAIT_USEC) >= 0);
        /* Past the next second: the daemon still waits for the hook. */
        idle_ms(1500);
        CHECK(alive(pid));
        {
                _cleanup_free_ char *cur = env_read(e, "out/p");
                CHECK_STR(cur, before);
        }
        env_touch(e, "release");
        CHECK_INT(wait_exit(e, pid, WAIT_USEC), 0);
        {
                _cleanup_free_ char *cur = env_read(e, "out/p");
                CHECK_STR(cur, before);
        }
out:
        env_free(e);
}

/* A test, then what it left if it returned early. */
#define RUN_ENV(fn)                                                                                                    \
        do {                                                                                                           \
                RUN(fn);                                                                                               \
                if (cur_env)                                                                                           \
                        env_free(cur_env);                                                                             \
        } while (0)

int main(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        log_init(LOG_CRIT);
        rootdir = test_mkdtemp();
        notify_path = test_path(rootdir, "notify");
        if (strlen(notify_path) >= sizeof(sa.sun_path))
                abort();
        strcpy(sa.sun_path, notify_path);
        notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                abort();

        RUN_ENV(test_once_writes_every_map);
        RUN_ENV(test_once_query_fails);
        RUN_ENV(test_once_hook_fails);
        RUN_ENV(test_once_database_missing);
        RUN_ENV(test_once_shrink_guard_forced);
        RUN_ENV(test_watch_ready_and_commit);
        RUN_ENV(test_watch_burst);
        RUN_ENV(test_watch_sigusr1);
        RUN_ENV(test_watch_sighup);
        RUN_ENV(test_watch_shrink_sigusr2);
        RUN_ENV(test_watch_database_missing);
        RUN_ENV(test_watch_sigterm_waits_for_hook);
        RUN_ENV(test_watch_second_sigterm);
        RUN_ENV(test_watch_sigterm_disarms_pace);

        notes_clear();
        close(notify_fd);
        test_rm_rf(rootdir);
        free(rootdir);
        free(notify_path);
        return test_end();
}
