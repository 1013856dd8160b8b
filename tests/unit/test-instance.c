/* Unit tests of instance.h: the instance lock (taken once, refused to a
 * second taker with the owner's PID in the message, state_dir created
 * 0700 or refused when it cannot be trusted) and the sweep of what an
 * earlier run killed mid-write left behind: the temporary files of every
 * output, of the state files (owed hooks, owed webhook deliveries, the
 * file sets' manifests, and the names an older version gave them) and of
 * the metrics file, and nothing else. */
#include "instance.h"

#include <sys/file.h>

#include "util.h"

#include "loop.h"

static char *tmpdir;

static struct config *parse(const char *text) {
        struct config_errors e = {0};
        struct config *c = NULL;

        if (config_parse_string("test.conf", text, &c, &e) < 0) {
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "config: %s\n", e.msgs[i]);
                c = NULL;
        }
        config_errors_done(&e);
        return c;
}

static struct config *config_in(const char *dir) {
        _cleanup_free_ char *text = NULL;

        if (asprintf(&text,
                     "[database]\npath = %s/db.sqlite\n[sync]\nstate_dir = %s/state\nmetrics_file = %s/metrics/prom\n"
                     "[map m]\noutput = %s/out/m\nquery = SELECT 1, 2\n"
                     "[files keys]\ndirectory = %s/keys\nquery = SELECT 'a', 'b'\n",
                     dir, dir, dir, dir, dir) < 0)
                abort();
        return parse(text);
}

static void test_lock(void) {
        _cleanup_free_ char *dir = test_path(tmpdir, "lock"), *state = NULL, *lock = NULL;
        struct config *c;
        struct stat st;
        struct loop_capture cap;
        char *logged;
        int fd, fd2;

        REQUIRE_INT(mkdir(dir, 0755), 0);
        c = config_in(dir);
        REQUIRE(c);
        state = test_path(dir, "state");
        lock = test_path(state, INSTANCE_LOCK_FILE);

        fd = instance_lock(c);
        CHECK(fd >= 0);
        /* Created for this user alone. */
        REQUIRE_INT(stat(state, &st), 0);
        CHECK_UINT(st.st_mode & 07777, 0700);
        CHECK_INT(instance_lock_owner(fd), getpid());
        CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
        /* The lock is an flock: another open file description is refused
         * (as another process would be), and told who holds it. */
        loop_capture_begin(&cap, LOG_INFO);
        fd2 = instance_lock(c);
        logged = loop_capture_end(&cap);
        CHECK_INT(fd2, -EBUSY);
        char want[128];
        snprintf(want, sizeof(want), "another mapsyncd (PID %d) runs with state_dir %s", (int)getpid(), state);
        CHECK_CONTAINS(logged, want);
        CHECK_CONTAINS(logged, "kill -USR1");
        free(logged);
        /* Released with its descriptor: the next start takes it. */
        close(fd);
        fd = instance_lock(c);
        CHECK(fd >= 0);
        close(fd);
        config_free(c);
}

static void test_lock_owner(void) {
        _cleanup_free_ char *f = test_path(tmpdir, "owner");
        int fd;

        REQUIRE_INT(test_write_file(f, "1234\n", 5, 0600), 0);
        fd = open(f, O_RDONLY | O_CLOEXEC);
        REQUIRE(fd >= 0);
        CHECK_INT(instance_lock_owner(fd), 1234);
        close(fd);
        /* Not a PID: unknown, never a guess. */
        const char *bad[] = {"", "0\n", "-5\n", "12ab\n", "99999999999\n", "pid 7\n"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                REQUIRE_INT(test_write_file(f, bad[i], strlen(bad[i]), 0600), 0);
                fd = open(f, O_RDONLY | O_CLOEXEC);
                REQUIRE(fd >= 0);
                CHECK_INT(instance_lock_owner(fd), 0);
                close(fd);
        }
        unlink(f);
}

static void test_lock_untrusted_state_dir(void) {
        _cleanup_free_ char *dir = test_path(tmpdir, "untrusted"), *state = NULL;
        struct config *c;
        struct loop_capture cap;
        char *logged;
        int fd;

        REQUIRE_INT(mkdir(dir, 0755), 0);
        c = config_in(dir);
        REQUIRE(c);
        state = test_path(dir, "state");
        REQUIRE_INT(mkdir(state, 0700), 0);
        REQUIRE_INT(chmod(state, 0777), 0);
        loop_capture_begin(&cap, LOG_INFO);
        fd = instance_lock(c);
        logged = loop_capture_end(&cap);
        CHECK_INT(fd, -EPERM);
        CHECK_CONTAINS(logged, "cannot be trusted");
        CHECK_CONTAINS(logged, "writable by others");
        free(logged);
        /* Nothing was created in it. */
        _cleanup_free_ char *lock = test_path(state, INSTANCE_LOCK_FILE);
        CHECK(access(lock, F_OK) < 0);
        /* A state_dir that is a file. */
        REQUIRE_INT(rmdir(state), 0);
        REQUIRE_INT(test_write_file(state, "x", 1, 0600), 0);
        loop_capture_begin(&cap, LOG_INFO);
        fd = instance_lock(c);
        free(loop_capture_end(&cap));
        CHECK(fd < 0);
        config_free(c);
}

static void touch(const char *dir, const char *name) {
        _cleanup_free_ char *p = test_path(dir, name);

        if (test_write_file(p, "partial", 7, 0600) < 0)
                abort();
}

static bool exists(const char *dir, const char *name) {
        _cleanup_free_ char *p = test_path(dir, name);

        return access(p, F_OK) == 0;
}

static void test_sweep(void) {
        _cleanup_free_ char *dir = test_path(tmpdir, "sweep"), *state = NULL, *out = NULL, *metrics = NULL;
        struct config *c;
        struct loop_capture cap;
        char *logged;
        int fd;

        REQUIRE_INT(mkdir(dir, 0755), 0);
        c = config_in(dir);
        REQUIRE(c);
        state = test_path(dir, "state");
        out = test_path(dir, "out");
        metrics = test_path(dir, "metrics");
        REQUIRE_INT(mkdir(out, 0755), 0);
        REQUIRE_INT(mkdir(metrics, 0755), 0);
        fd = instance_lock(c);
        REQUIRE(fd >= 0);

        /* Left by a run killed mid-write. */
        const char *gone_out[] = {".m.Ab12Z9"};
        const char *gone_metrics[] = {".prom.x0x0x0"};
        const char *gone_state[] = {
                ".owed-hooks.q1w2e3",          /* the owed-hooks file (replace.h) */
                ".owed-webhooks.Zz9Yy8",       /* owed webhook deliveries */
                ".files-keys.manifest.aaaaaa", /* the [files keys] manifest */
                "owed-hooks.AbCdEf",           /* owed hooks, as 0.1 named its temporary file */
        };
        /* Not mapsyncd's leftovers: kept. */
        const char *kept_out[] = {"m", ".m.toolong1", ".m.short", ".m.ab-cd!", ".other.Ab12Z9", "m.Ab12Z9"};
        const char *kept_state[] = {"owed-hooks",     "owed-webhooks",      "files-keys.manifest",
                                    "owed-hooks.bak", "owed-hooks.AbCdEfG", ".files-other.manifest.aaaaaa",
                                    "notes.Ab12Z9"};

        for (size_t i = 0; i < sizeof(gone_out) / sizeof(*gone_out); i++)
                touch(out, gone_out[i]);
        for (size_t i = 0; i < sizeof(gone_metrics) / sizeof(*gone_metrics); i++)
                touch(metrics, gone_metrics[i]);
        for (size_t i = 0; i < sizeof(gone_state) / sizeof(*gone_state); i++)
                touch(state, gone_state[i]);
        for (size_t i = 0; i < sizeof(kept_out) / sizeof(*kept_out); i++)
                touch(out, kept_out[i]);
        for (size_t i = 0; i < sizeof(kept_state) / sizeof(*kept_state); i++)
                touch(state, kept_state[i]);
        /* A directory with a temporary file's name is no file of ours. */
        _cleanup_free_ char *subdir = test_path(out, ".m.dir123");
        REQUIRE_INT(mkdir(subdir, 0700), 0);

        loop_capture_begin(&cap, LOG_INFO);
        unsigned n = instance_sweep(c);
        logged = loop_capture_end(&cap);
        CHECK_UINT(n, 2 + sizeof(gone_state) / sizeof(*gone_state));
        for (size_t i = 0; i < sizeof(gone_out) / sizeof(*gone_out); i++)
                if (!CHECK(!exists(out, gone_out[i])))
                        fprintf(stderr, "    left %s/%s\n", out, gone_out[i]);
        for (size_t i = 0; i < sizeof(gone_metrics) / sizeof(*gone_metrics); i++)
                CHECK(!exists(metrics, gone_metrics[i]));
        for (size_t i = 0; i < sizeof(gone_state) / sizeof(*gone_state); i++)
                if (!CHECK(!exists(state, gone_state[i])))
                        fprintf(stderr, "    left %s/%s\n", state, gone_state[i]);
        for (size_t i = 0; i < sizeof(kept_out) / sizeof(*kept_out); i++)
                if (!CHECK(exists(out, kept_out[i])))
                        fprintf(stderr, "    removed %s/%s\n", out, kept_out[i]);
        for (size_t i = 0; i < sizeof(kept_state) / sizeof(*kept_state); i++)
                if (!CHECK(exists(state, kept_state[i])))
                        fprintf(stderr, "    removed %s/%s\n", state, kept_state[i]);
        CHECK(exists(out, ".m.dir123"));
        CHECK_CONTAINS(logged, "left by an earlier run");
        free(logged);
        /* A second sweep finds nothing. */
        loop_capture_begin(&cap, LOG_INFO);
        CHECK_UINT(instance_sweep(c), 0);
        free(loop_capture_end(&cap));
        close(fd);
        config_free(c);
}

/* A file of another user with a temporary file's name is not removed: it
 * cannot be a leftover of this user's run. */
static void test_sweep_other_owner(void) {
        _cleanup_free_ char *dir = test_path(tmpdir, "owner-sweep"), *out = NULL, *tmp = NULL;
        struct config *c;
        struct loop_capture cap;
        int fd;

        if (geteuid() != 0) {
                fprintf(stderr, "test_sweep_other_owner needs root for chown\n");
                CHECK(geteuid() == 0);
                return;
        }
        REQUIRE_INT(mkdir(dir, 0755), 0);
        c = config_in(dir);
        REQUIRE(c);
        out = test_path(dir, "out");
        REQUIRE_INT(mkdir(out, 0755), 0);
        fd = instance_lock(c);
        REQUIRE(fd >= 0);
        touch(out, ".m.Qwerty");
        tmp = test_path(out, ".m.Qwerty");
        REQUIRE_INT(chown(tmp, 65534, 65534), 0);
        loop_capture_begin(&cap, LOG_INFO);
        CHECK_UINT(instance_sweep(c), 0);
        free(loop_capture_end(&cap));
        CHECK(exists(out, ".m.Qwerty"));
        close(fd);
        config_free(c);
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_lock);
        RUN(test_lock_owner);
        RUN(test_lock_untrusted_state_dir);
        RUN(test_sweep);
        RUN(test_sweep_other_owner);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
