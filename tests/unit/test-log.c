/* Unit tests of log.h: the lines written to stderr (captured through a
 * pipe) at each priority, the filter of log_init (-v), errno kept and %m,
 * the length bound, text passed through as it is (log.c does not escape:
 * callers escape what is untrusted), the choice of the journal by
 * JOURNAL_STREAM; and the journal records themselves (fields, priority,
 * MESSAGE_ID, numbers, a message with a newline), received on a private
 * /run/systemd/journal/socket in a child with its own mount namespace. */
#include "log.h"

#include <poll.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "util.h"

#include "test.h"

static int saved_stderr = -1, pipe_r = -1;

/* stderr into a pipe until capture_end(), which returns what was written
 * (to free). */
static void capture_begin(int max_priority) {
        int p[2];

        fflush(stderr);
        if (pipe2(p, O_CLOEXEC) < 0)
                abort();
        saved_stderr = dup(STDERR_FILENO);
        if (saved_stderr < 0 || dup2(p[1], STDERR_FILENO) < 0)
                abort();
        close(p[1]);
        pipe_r = p[0];
        log_init(max_priority);
}

static char *capture_end(void) {
        struct test_buf b = {0};
        char chunk[4096];
        ssize_t n;

        fflush(stderr);
        dup2(saved_stderr, STDERR_FILENO); /* closes the pipe's last writer */
        close(saved_stderr);
        while ((n = read(pipe_r, chunk, sizeof(chunk))) > 0)
                test_buf_write(&b, chunk, (size_t)n);
        close(pipe_r);
        log_init(LOG_CRIT);
        return b.data ? b.data : strdup("");
}

static unsigned count_lines(const char *s) {
        unsigned n = 0;

        for (; *s; s++)
                n += *s == '\n';
        return n;
}

static void test_prefixes(void) {
        char *out;

        capture_begin(LOG_DEBUG);
        log_submit(LOG_EMERG, NULL, "emerg");
        log_submit(LOG_ALERT, NULL, "alert");
        log_submit(LOG_CRIT, NULL, "crit");
        log_error("err %d", 3);
        log_warning("warning %s", "w");
        log_notice("notice");
        log_info("info");
        log_debug("debug");
        out = capture_end();
        CHECK_STR(out, "error: emerg\n"
                       "error: alert\n"
                       "error: crit\n"
                       "error: err 3\n"
                       "warning: warning w\n"
                       "notice\n"
                       "info\n"
                       "debug: debug\n");
        free(out);
}

static void log_every_level(void) {
        for (int p = LOG_EMERG; p <= LOG_DEBUG; p++)
                log_submit(p, NULL, "p%d", p);
}

static void test_filter(void) {
        char *out;

        /* Without -v (LOG_INFO): everything but debug. */
        capture_begin(LOG_INFO);
        log_every_level();
        out = capture_end();
        CHECK_STR(out, "error: p0\nerror: p1\nerror: p2\nerror: p3\nwarning: p4\np5\np6\n");
        free(out);
        /* With -v (LOG_DEBUG): everything. */
        capture_begin(LOG_DEBUG);
        log_every_level();
        out = capture_end();
        CHECK_STR(out, "error: p0\nerror: p1\nerror: p2\nerror: p3\nwarning: p4\np5\np6\ndebug: p7\n");
        free(out);
        /* A stricter bound. */
        capture_begin(LOG_WARNING);
        log_every_level();
        out = capture_end();
        CHECK_STR(out, "error: p0\nerror: p1\nerror: p2\nerror: p3\nwarning: p4\n");
        free(out);
        capture_begin(LOG_EMERG);
        log_every_level();
        out = capture_end();
        CHECK_STR(out, "error: p0\n");
        free(out);
}

static void test_errno(void) {
        char *out;

        capture_begin(LOG_INFO);
        errno = EXDEV;
        log_error("rename: %m");
        CHECK_INT(errno, EXDEV);
        errno = ENOSPC;
        log_debug("filtered: %m"); /* below the bound: errno kept too */
        CHECK_INT(errno, ENOSPC);
        errno = EACCES;
        log_info("%s %m", "open");
        CHECK_INT(errno, EACCES);
        out = capture_end();
        {
                _cleanup_free_ char *want = NULL;
                if (asprintf(&want, "error: rename: %s\nopen %s\n", strerror(EXDEV), strerror(EACCES)) < 0)
                        abort();
                CHECK_STR(out, want);
        }
        free(out);
}

static void test_length_bound(void) {
        char big[5000], *out;

        memset(big, 'k', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        capture_begin(LOG_INFO);
        log_warning("%s", big);
        log_info("after");
        out = capture_end();
        /* The text is cut at 2047 bytes (the prefix is not counted), and
         * the line still ends; the next record is whole. */
        CHECK_PREFIX(out, "warning: kkk");
        CHECK_UINT(strlen(out), strlen("warning: ") + 2047 + 1 + strlen("after\n"));
        CHECK_INT(count_lines(out), 2);
        free(out);
}

static void test_text_verbatim(void) {
        char *out;

        /* log.c writes what it is given: a format's arguments are data (no
         * second expansion), and it escapes nothing, so a caller that logs
         * untrusted text must escape it first (str_escape), as hook.c and
         * render.c do. A newline in the text starts a new line on stderr. */
        capture_begin(LOG_INFO);
        log_info("key %s", "%s%n%x");
        log_info("a\nb\tc\x1b[31m\x7f");
        out = capture_end();
        CHECK_STR(out, "key %s%n%x\na\nb\tc\x1b[31m\x7f\n");
        free(out);
        /* The escaped form callers use. */
        {
                char esc[64];
                capture_begin(LOG_INFO);
                log_info("key %s", str_escape("a\nb", 3, esc, sizeof(esc)));
                out = capture_end();
                CHECK_INT(count_lines(out), 1);
                CHECK_PREFIX(out, "key a\\");
                free(out);
        }
}

static void test_fields_not_on_stderr(void) {
        char *out;

        capture_begin(LOG_INFO);
        log_submit(LOG_NOTICE,
                   LOG_FIELDS(.message_id = MSGID_MAP_REPLACED, .map = "virtual", .sha256 = "ab", .rows = 7),
                   "virtual: replaced");
        out = capture_end();
        CHECK_STR(out, "virtual: replaced\n");
        free(out);
}

/* JOURNAL_STREAM naming stderr (device:inode) selects the journal; any
 * other value, or none, stderr. */
static void test_journal_stream_choice(void) {
        struct stat st;
        char v[64], *out;

        capture_begin(LOG_INFO);
        REQUIRE(fstat(STDERR_FILENO, &st) == 0);
        snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
        setenv("JOURNAL_STREAM", v, 1);
        log_init(LOG_INFO);
        CHECK_INT(log_to_journal(), 1);
        snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
        setenv("JOURNAL_STREAM", v, 1);
        log_init(LOG_INFO);
        CHECK_INT(log_to_journal(), 0);
        setenv("JOURNAL_STREAM", "garbage", 1);
        log_init(LOG_INFO);
        CHECK_INT(log_to_journal(), 0);
        setenv("JOURNAL_STREAM", "", 1);
        log_init(LOG_INFO);
        CHECK_INT(log_to_journal(), 0);
        unsetenv("JOURNAL_STREAM");
        log_init(LOG_INFO);
        CHECK_INT(log_to_journal(), 0);
        log_info("to stderr");
        out = capture_end();
        CHECK_STR(out, "to stderr\n");
        free(out);
}

/* ---- the journal, in a child with a private /run ---- */

struct field {
        char name[64];
        char *value;
        size_t len;
};

/* Parses one datagram of journald's native protocol: "NAME=value\n", or
 * "NAME\n" + 64-bit little-endian length + value + "\n". */
static size_t parse_record(const char *d, size_t n, struct field *out, size_t max) {
        size_t k = 0, o = 0;

        while (o < n && k < max) {
                const char *nl = memchr(d + o, '\n', n - o), *eq = memchr(d + o, '=', n - o);
                if (!nl)
                        break;
                if (eq && eq < nl) {
                        size_t nlen = (size_t)(eq - (d + o));
                        if (nlen >= sizeof(out[k].name))
                                break;
                        memcpy(out[k].name, d + o, nlen);
                        out[k].name[nlen] = '\0';
                        out[k].len = (size_t)(nl - eq - 1);
                        out[k].value = strndup(eq + 1, out[k].len);
                        o = (size_t)(nl - d) + 1;
                } else {
                        size_t nlen = (size_t)(nl - (d + o));
                        uint64_t len = 0;
                        if (nlen >= sizeof(out[k].name) || (size_t)(nl - d) + 1 + 8 > n)
                                break;
                        memcpy(out[k].name, d + o, nlen);
                        out[k].name[nlen] = '\0';
                        for (int i = 7; i >= 0; i--)
                                len = len << 8 | (unsigned char)nl[1 + i];
                        o = (size_t)(nl - d) + 1 + 8;
                        if (len > n - o)
                                break;
                        out[k].len = (size_t)len;
                        out[k].value = strndup(d + o, (size_t)len);
                        o += (size_t)len + 1;
                }
                k++;
        }
        return k;
}

static const char *field_get(const struct field *f, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq(f[i].name, name))
                        return f[i].value;
        return NULL;
}

static int journal_sock = -1;

/* The next record sent to the private journal: its fields (n returned). */
static size_t next_record(struct field *f, size_t max) {
        struct pollfd p = {.fd = journal_sock, .events = POLLIN};
        static char buf[65536];
        ssize_t n;

        if (poll(&p, 1, 2000) <= 0)
                return 0;
        n = recv(journal_sock, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
                return 0;
        return parse_record(buf, (size_t)n, f, max);
}

static void fields_free(struct field *f, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(f[i].value);
}

static void journal_checks(void) {
        struct field f[16];
        size_t n;
        char sha[65], name64[65];

        memset(sha, 'f', 64);
        sha[64] = '\0';
        memset(name64, 'm', 64); /* the longest name config.c allows */
        name64[64] = '\0';

        /* Fields of every kind, and nothing else (no CODE_FILE, CODE_LINE,
         * CODE_FUNC: they would name log.c's journal_send every time). */
        log_submit(LOG_NOTICE,
                   LOG_FIELDS(.message_id = MSGID_MAP_REPLACED, .map = name64, .hook = "postmap", .sha256 = sha,
                              .rows = 12345, .duration_ms = 0, .exit_status = -1),
                   "%s: replaced", "virtual");
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_UINT(n, 10);
        CHECK_STR(f[0].name, "MESSAGE");
        CHECK_STR(field_get(f, n, "MESSAGE"), "virtual: replaced");
        CHECK_STR(field_get(f, n, "PRIORITY"), "5");
        CHECK_STR(field_get(f, n, "SYSLOG_IDENTIFIER"), "mapsyncd");
        CHECK_STR(field_get(f, n, "MESSAGE_ID"), MSGID_MAP_REPLACED);
        CHECK_STR(field_get(f, n, "MAPSYNCD_MAP"), name64);
        CHECK_STR(field_get(f, n, "MAPSYNCD_HOOK"), "postmap");
        CHECK_STR(field_get(f, n, "MAPSYNCD_SHA256"), sha);
        CHECK_STR(field_get(f, n, "MAPSYNCD_ROWS"), "12345");
        CHECK_STR(field_get(f, n, "MAPSYNCD_DURATION_MS"), "0");
        CHECK_STR(field_get(f, n, "MAPSYNCD_EXIT_STATUS"), "-1");
        fields_free(f, n);

        /* No fields: the message, its priority, the identifier. Unset
         * numbers and NULL strings are left out. */
        log_error("plain %d", 1);
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_UINT(n, 3);
        CHECK_STR(field_get(f, n, "MESSAGE"), "plain 1");
        CHECK_STR(field_get(f, n, "PRIORITY"), "3");
        CHECK_STR(field_get(f, n, "SYSLOG_IDENTIFIER"), "mapsyncd");
        fields_free(f, n);
        log_submit(LOG_WARNING, LOG_FIELDS(.map = "aliases"), "w");
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_UINT(n, 4);
        CHECK_STR(field_get(f, n, "MAPSYNCD_MAP"), "aliases");
        CHECK_STR(field_get(f, n, "PRIORITY"), "4");
        CHECK(!field_get(f, n, "MAPSYNCD_ROWS"));
        CHECK(!field_get(f, n, "MESSAGE_ID"));
        fields_free(f, n);

        /* A newline in the message stays inside the one record's MESSAGE
         * (journald's binary form): no second record. */
        log_info("first\nMESSAGE=forged");
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_UINT(n, 3);
        CHECK_STR(field_get(f, n, "MESSAGE"), "first\nMESSAGE=forged");
        fields_free(f, n);

        /* The bound holds in the journal too. */
        log_debug("below the bound");
        log_init(LOG_INFO);
        log_debug("dropped");
        log_info("kept");
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_STR(field_get(f, n, "MESSAGE"), "below the bound");
        fields_free(f, n);
        n = next_record(f, ARRAY_SIZE(f));
        CHECK_STR(field_get(f, n, "MESSAGE"), "kept");
        fields_free(f, n);
}

static void test_journal_records(void) {
        pid_t pid;
        int status;

        fflush(stdout);
        fflush(stderr);
        pid = fork();
        REQUIRE(pid >= 0);
        if (pid == 0) {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                struct stat st;
                char v[64];

                /* A private /run: the journal socket is this test's. */
                if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
                    mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0) {
                        perror("a private mount namespace with /run");
                        _exit(2);
                }
                if (mkdir("/run/systemd", 0755) < 0 || mkdir("/run/systemd/journal", 0755) < 0)
                        _exit(3);
                strcpy(sa.sun_path, "/run/systemd/journal/socket");
                journal_sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                if (journal_sock < 0 || bind(journal_sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        _exit(4);
                /* stderr named by JOURNAL_STREAM, as systemd sets it. */
                if (fstat(STDERR_FILENO, &st) < 0)
                        _exit(5);
                snprintf(v, sizeof(v), "%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
                setenv("JOURNAL_STREAM", v, 1);
                log_init(LOG_DEBUG);
                if (!log_to_journal())
                        _exit(6);
                journal_checks();
                close(journal_sock);
                fflush(stdout);
                _exit(test_n_failures ? 1 : 0);
        }
        REQUIRE(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status));
        CHECK_INT(WEXITSTATUS(status), 0);
}

int main(void) {
        log_init(LOG_CRIT);
        unsetenv("JOURNAL_STREAM");
        RUN(test_prefixes);
        RUN(test_filter);
        RUN(test_errno);
        RUN(test_length_bound);
        RUN(test_text_verbatim);
        RUN(test_fields_not_on_stderr);
        RUN(test_journal_stream_choice);
        RUN(test_journal_records);
        return test_end();
}
