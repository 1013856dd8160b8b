/* Unit tests of hook.h on real processes and a real sd-event loop: exit
 * statuses, signals, the timeout (SIGTERM, then SIGKILL), the environment,
 * the output bound (lines and bytes, then one line with the count), a hook
 * that writes as fast as it can while timers are served, default signal
 * dispositions and an empty mask in the hook, and the record of a running
 * hook's process group that keeps it from running twice at once. */
#include "hook.h"

#include <sys/wait.h>

#include "util.h"

#include "loop.h"

static char *tmpdir;
static sd_event *event;
static struct hooks *hooks;

struct done {
        bool called;
        unsigned n_called;
        struct hook_result res;
        uint64_t at;
};

static void on_done(void *userdata, const struct hook_result *res) {
        struct done *d = userdata;

        d->called = true;
        d->n_called++;
        d->res = *res;
        d->at = loop_now_usec();
}

static int start(const char *command, uint64_t timeout_usec, struct done *d) {
        struct hook_spec spec = {
                .name = "test",
                .map = "m",
                .command = command,
                .timeout_usec = timeout_usec,
                .log_max_lines = 100,
                .log_max_bytes = 65536,
        };
        *d = (struct done){0};
        return hooks_start(hooks, &spec, on_done, d);
}

static void run(const char *command, uint64_t timeout_usec, struct done *d) {
        if (!CHECK_INT(start(command, timeout_usec, d), 0))
                return;
        CHECK(loop_until(event, &d->called, 20000000));
}

static void test_outcomes(void) {
        struct done d;

        run("exit 0", 5000000, &d);
        CHECK_INT(d.res.outcome, HOOK_SUCCEEDED);
        CHECK_INT(d.res.code, 0);
        run("exit 3", 5000000, &d);
        CHECK_INT(d.res.outcome, HOOK_FAILED);
        CHECK_INT(d.res.code, 3);
        run("kill -9 $$", 5000000, &d);
        CHECK_INT(d.res.outcome, HOOK_KILLED);
        CHECK_INT(d.res.code, 9);
        run("exec /nonexistent/program", 5000000, &d);
        CHECK_INT(d.res.outcome, HOOK_FAILED);
        CHECK_INT(d.res.code, 127);
        CHECK_INT(d.n_called, 1);
        CHECK_UINT(hooks_running(hooks), 0);
}

static void test_timeout(void) {
        struct done d;
        uint64_t t0 = loop_now_usec();

        run("exec sleep 30", 300000, &d);
        CHECK_INT(d.res.outcome, HOOK_TIMED_OUT);
        CHECK_INT(d.res.code, SIGTERM);
        CHECK(d.at - t0 >= 300000);
        CHECK(d.at - t0 < 4000000);
}

static void test_terminate_then_kill(void) {
        struct done d;
        uint64_t t0;

        /* Ignores SIGTERM: SIGKILL after the grace. */
        REQUIRE_INT(start("trap '' TERM; while :; do sleep 0.05; done", 30000000, &d), 0);
        CHECK_UINT(hooks_running(hooks), 1);
        /* Let the shell set its trap. */
        {
                bool never = false;
                loop_until(event, &never, 300000);
        }
        t0 = loop_now_usec();
        hooks_terminate(hooks, 200000);
        CHECK(loop_until(event, &d.called, 10000000));
        CHECK_INT(d.res.outcome, HOOK_KILLED);
        CHECK_INT(d.res.code, SIGKILL);
        CHECK(d.at - t0 >= 200000);
        CHECK(d.at - t0 < 5000000);
        CHECK_UINT(hooks_running(hooks), 0);
}

static void test_environment(void) {
        _cleanup_free_ char *out = test_path(tmpdir, "env"), *cmd = NULL, *text = NULL;
        const char *env[] = {"MAPSYNCD_MAP=vmailbox", "MAPSYNCD_ROWS=12"};
        struct hook_spec spec = {
                .name = "env",
                .command = NULL,
                .env = env,
                .n_env = 2,
                .timeout_usec = 5000000,
                .log_max_lines = 10,
                .log_max_bytes = 1000,
        };
        struct done d = {0};

        setenv("NOTIFY_SOCKET", "/run/systemd/notify", 1);
        setenv("MAPSYNCD_STALE", "x", 1);
        setenv("KEEP_ME", "yes", 1);
        REQUIRE(asprintf(&cmd, "env > %s; ls /proc/self/fd >> %s", out, out) > 0);
        spec.command = cmd;
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &d), 0);
        CHECK(loop_until(event, &d.called, 10000000));
        text = test_read_file(out, NULL);
        REQUIRE(text);
        CHECK_CONTAINS(text, "MAPSYNCD_MAP=vmailbox\n");
        CHECK_CONTAINS(text, "MAPSYNCD_ROWS=12\n");
        CHECK_CONTAINS(text, "KEEP_ME=yes\n");
        CHECK(!strstr(text, "NOTIFY_SOCKET"));
        CHECK(!strstr(text, "MAPSYNCD_STALE"));
        unsetenv("NOTIFY_SOCKET");
        unsetenv("MAPSYNCD_STALE");
        unsetenv("KEEP_ME");
}

static char *run_logged(const char *command, uint64_t max_lines, uint64_t max_bytes) {
        struct loop_capture c;
        struct hook_spec spec = {
                .name = "out",
                .command = command,
                .timeout_usec = 10000000,
                .log_max_lines = max_lines,
                .log_max_bytes = max_bytes,
        };
        struct done d = {0};

        loop_capture_begin(&c, LOG_INFO);
        if (hooks_start(hooks, &spec, on_done, &d) == 0)
                loop_until(event, &d.called, 20000000);
        return loop_capture_end(&c);
}

static void test_output_logged(void) {
        _cleanup_free_ char *log = run_logged("echo one; echo two >&2; printf 'no newline'", 100, 65536);

        CHECK_CONTAINS(log, "out: hook: one\n");
        CHECK_CONTAINS(log, "out: hook: two\n");
        CHECK_CONTAINS(log, "out: hook: no newline\n");
        CHECK(!strstr(log, "not logged"));
}

static void test_output_bound_lines(void) {
        _cleanup_free_ char *log =
                run_logged("i=0; while [ $i -lt 500 ]; do echo line $i; i=$((i+1)); done", 10, 65536);

        CHECK_UINT(count_lines_with(log, "out: hook: line "), 10);
        CHECK_CONTAINS(log, "out: hook: line 9\n");
        CHECK(!strstr(log, "out: hook: line 10\n"));
        CHECK_CONTAINS(log, "out: hook: 490 more lines of output not logged");
        CHECK_UINT(count_lines_with(log, "more lines of output not logged"), 1);
}

static void test_output_bound_bytes(void) {
        /* 29 bytes a line: 3 fit in 100. */
        _cleanup_free_ char *log =
                run_logged("for i in 1 2 3 4 5 6; do echo abcdefghijklmnopqrstuvwxyz-$i; done", 100, 100);

        CHECK_UINT(count_lines_with(log, "out: hook: abc"), 3);
        CHECK_CONTAINS(log, "out: hook: 3 more lines of output not logged");
        free(log);
        log = run_logged("echo a; echo b", 0, 100);
        CHECK_UINT(count_lines_with(log, "out: hook: a"), 0);
        CHECK_CONTAINS(log, "out: hook: 2 more lines of output not logged");
}

static void test_long_line_split(void) {
        /* 3000 bytes without a newline: pieces of at most 1024 bytes. */
        _cleanup_free_ char *log = run_logged("head -c 3000 /dev/zero | tr '\\0' x", 100, 65536);

        CHECK_UINT(count_lines_with(log, "out: hook: xxxx"), 3);
}

static void test_control_characters_escaped(void) {
        _cleanup_free_ char *log = run_logged("printf 'a\\033[31mb\\tc\\n'", 100, 65536);

        CHECK(!strchr(log, '\033'));
        CHECK_CONTAINS(log, "out: hook: a");
}

struct tick {
        unsigned n;
        uint64_t first;
};

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        struct tick *t = userdata;

        if (t->n++ == 0)
                t->first = loop_now_usec();
        sd_event_source_set_time(s, usec + 50000);
        sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

/* A hook writing as fast as it can: a timer of the same loop keeps firing,
 * the timeout ends it on time, and the log holds the bound. */
static void test_fast_writer_does_not_starve_the_loop(void) {
        struct loop_capture c;
        struct hook_spec spec = {
                .name = "spew",
                .command = "yes spewspewspewspewspewspew",
                .timeout_usec = 1000000,
                .log_max_lines = 100,
                .log_max_bytes = 65536,
        };
        struct done d = {0};
        struct tick t = {0};
        sd_event_source *timer = NULL;
        uint64_t t0 = loop_now_usec();
        char *log;

        REQUIRE(sd_event_add_time_relative(event, &timer, CLOCK_MONOTONIC, 100000, 1000, on_tick, &t) >= 0);
        sd_event_source_set_enabled(timer, SD_EVENT_ON);
        loop_capture_begin(&c, LOG_INFO);
        if (hooks_start(hooks, &spec, on_done, &d) == 0)
                loop_until(event, &d.called, 15000000);
        log = loop_capture_end(&c);
        sd_event_source_disable_unref(timer);

        CHECK(d.called);
        CHECK_INT(d.res.outcome, HOOK_TIMED_OUT);
        CHECK(d.at - t0 < 1000000 + 3000000);
        /* The timer fired at 100 ms and then every 50 ms meanwhile. */
        CHECK(t.n >= 5);
        CHECK(t.first > 0 && t.first - t0 < 600000);
        CHECK(count_lines_with(log, "spew: hook: spew") <= 100);
        CHECK_UINT(count_lines_with(log, "spew: hook: spew"), 100);
        CHECK_UINT(count_lines_with(log, "more lines of output not logged"), 1);
        free(log);
}

static void test_signal_dispositions_default(void) {
        _cleanup_free_ char *out = test_path(tmpdir, "sig"), *cmd = NULL, *text = NULL;
        struct sigaction ign = {.sa_handler = SIG_IGN}, old_pipe, old_usr2;
        sigset_t block, old_mask;
        struct done d;

        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, &old_pipe);
        sigaction(SIGUSR2, &ign, &old_usr2);
        sigemptyset(&block);
        sigaddset(&block, SIGHUP);
        sigprocmask(SIG_BLOCK, &block, &old_mask);
        REQUIRE(asprintf(&cmd, "grep -E '^Sig(Ign|Blk):' /proc/self/status > %s", out) > 0);
        run(cmd, 5000000, &d);
        sigaction(SIGPIPE, &old_pipe, NULL);
        sigaction(SIGUSR2, &old_usr2, NULL);
        sigprocmask(SIG_SETMASK, &old_mask, NULL);
        text = test_read_file(out, NULL);
        REQUIRE(text);
        CHECK_CONTAINS(text, "SigBlk:\t0000000000000000\n");
        /* Signals 32 and 33 are glibc's own: sigaction() refuses them (as
         * systemd's reset of signal handlers meets too), so whatever the
         * test's parent left there is inherited; every other one is reset. */
        const char *sig_ign = strstr(text, "SigIgn:\t");
        REQUIRE(sig_ign);
        unsigned long long mask = strtoull(sig_ign + strlen("SigIgn:\t"), NULL, 16);
        CHECK_UINT(mask & ~((1ull << (32 - 1)) | (1ull << (33 - 1))), 0);
}

/* A process group of the test's own, as an earlier mapsyncd's hook. */
static pid_t spawn_group(void) {
        pid_t pid = fork();

        if (pid == 0) {
                setpgid(0, 0);
                execl("/bin/sleep", "sleep", "30", (char *)NULL);
                _exit(127);
        }
        setpgid(pid, pid);
        return pid;
}

static void test_running_record(void) {
        _cleanup_free_ char *rec = test_path(tmpdir, "hook.pid"), *out = test_path(tmpdir, "pid"), *cmd = NULL,
                            *text = NULL;
        struct hook_spec spec = {
                .name = "rec",
                .timeout_usec = 10000000,
                .log_max_lines = 10,
                .log_max_bytes = 1000,
                .running_path = rec,
        };
        struct done a = {0}, b = {0};
        char buf[32];
        pid_t other;

        /* The record names the hook's process group while it runs, and
         * goes when it has ended. */
        REQUIRE(asprintf(&cmd, "echo $$ > %s; cat %s >> %s; sleep 0.3", out, rec, out) > 0);
        spec.command = cmd;
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &a), 0);
        CHECK(loop_until(event, &a.called, 10000000));
        CHECK_INT(a.res.outcome, HOOK_SUCCEEDED);
        text = test_read_file(out, NULL);
        REQUIRE(text);
        {
                int p1 = 0, p2 = -1;
                CHECK_INT(sscanf(text, "%d\n%d\n", &p1, &p2), 2);
                CHECK(p1 > 1);
                CHECK_INT(p1, p2);
        }
        CHECK(access(rec, F_OK) < 0);

        /* While it runs, the same record refuses a second start. */
        spec.command = "sleep 0.3";
        a = (struct done){0};
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &a), 0);
        CHECK_INT(hooks_start(hooks, &spec, on_done, &b), -EBUSY);
        CHECK(loop_until(event, &a.called, 10000000));
        CHECK(!b.called);

        /* A group of another process (an earlier mapsyncd's hook). */
        other = spawn_group();
        REQUIRE(other > 0);
        snprintf(buf, sizeof(buf), "%d\n", (int)other);
        REQUIRE_INT(test_write_file(rec, buf, strlen(buf), 0600), 0);
        CHECK_INT(hooks_start(hooks, &spec, on_done, &b), -EBUSY);
        /* force: started all the same. */
        spec.force = true;
        spec.command = "exit 0";
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &b), 0);
        CHECK(loop_until(event, &b.called, 10000000));
        spec.force = false;
        /* Once that group is gone, the stale record does not count. */
        REQUIRE_INT(test_write_file(rec, buf, strlen(buf), 0600), 0);
        kill(other, SIGKILL);
        waitpid(other, NULL, 0);
        b = (struct done){0};
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &b), 0);
        CHECK(loop_until(event, &b.called, 10000000));
        CHECK_INT(b.res.outcome, HOOK_SUCCEEDED);

        /* Garbage in the record: stale. */
        static const char *const junk[] = {"", "x\n", "1\n", "-5\n", "99999999999999\n", "12 13\n"};
        for (size_t i = 0; i < ARRAY_SIZE(junk); i++) {
                REQUIRE_INT(test_write_file(rec, junk[i], strlen(junk[i]), 0600), 0);
                b = (struct done){0};
                if (!CHECK_INT(hooks_start(hooks, &spec, on_done, &b), 0))
                        continue;
                CHECK(loop_until(event, &b.called, 10000000));
        }

        /* A descendant that left the group (a daemon it started) does
         * not hold the next run back. */
        spec.command = "setsid sleep 1 > /dev/null 2>&1 & exit 0";
        a = (struct done){0};
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &a), 0);
        CHECK(loop_until(event, &a.called, 10000000));
        spec.command = "exit 0";
        b = (struct done){0};
        CHECK_INT(hooks_start(hooks, &spec, on_done, &b), 0);
        CHECK(loop_until(event, &b.called, 10000000));

        /* A record that cannot be written: the hook runs all the same. */
        spec.running_path = "/nonexistent/dir/x.pid";
        b = (struct done){0};
        REQUIRE_INT(hooks_start(hooks, &spec, on_done, &b), 0);
        CHECK(loop_until(event, &b.called, 10000000));
        CHECK_INT(b.res.outcome, HOOK_SUCCEEDED);
}

static void test_several_and_free(void) {
        struct done d[2];

        REQUIRE_INT(start("exit 0", 5000000, &d[0]), 0);
        REQUIRE_INT(start("exit 1", 5000000, &d[1]), 0);
        CHECK_UINT(hooks_running(hooks), 2);
        CHECK(loop_until(event, &d[0].called, 10000000));
        CHECK(loop_until(event, &d[1].called, 10000000));
        CHECK_INT(d[0].res.outcome, HOOK_SUCCEEDED);
        CHECK_INT(d[1].res.outcome, HOOK_FAILED);
        CHECK(hooks_free(NULL) == NULL);
}

/* Freeing the runner kills what runs, without calling back. */
static void test_free_kills(void) {
        sd_event *e2 = NULL;
        struct hooks *h2 = NULL;
        struct done d = {0};
        struct hook_spec spec = {.name = "long", .command = "exec sleep 30", .timeout_usec = 60000000};
        uint64_t t0;

        REQUIRE(sd_event_new(&e2) >= 0);
        REQUIRE_INT(hooks_new(e2, &h2), 0);
        REQUIRE_INT(hooks_start(h2, &spec, on_done, &d), 0);
        CHECK_UINT(hooks_running(h2), 1);
        t0 = loop_now_usec();
        CHECK(hooks_free(h2) == NULL);
        CHECK(loop_now_usec() - t0 < 2000000);
        CHECK(!d.called);
        sd_event_unref(e2);
}

int main(void) {
        log_init(LOG_CRIT);
        loop_block_sigchld();
        tmpdir = test_mkdtemp();
        if (sd_event_new(&event) < 0 || hooks_new(event, &hooks) < 0)
                abort();
        RUN(test_outcomes);
        RUN(test_timeout);
        RUN(test_terminate_then_kill);
        RUN(test_environment);
        RUN(test_output_logged);
        RUN(test_output_bound_lines);
        RUN(test_output_bound_bytes);
        RUN(test_long_line_split);
        RUN(test_control_characters_escaped);
        RUN(test_fast_writer_does_not_starve_the_loop);
        RUN(test_signal_dispositions_default);
        RUN(test_running_record);
        RUN(test_several_and_free);
        RUN(test_free_kills);
        hooks_free(hooks);
        sd_event_unref(event);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
