/* Unit tests of notify.h against a private AF_UNIX datagram socket given
 * as NOTIFY_SOCKET: the exact datagrams of READY=1, RELOADING=1 (with
 * MONOTONIC_USEC), STOPPING=1 and STATUS= (newlines folded, length bound),
 * WATCHDOG=1 and its rate limit (in child processes, since the module
 * decides once per process whether the watchdog is on), and silence
 * without NOTIFY_SOCKET. */
#include "notify.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "util.h"

#include "test.h"

static char *tmpdir, *sock_path;
static int sock = -1;

/* The next datagram within timeout_ms, NUL-terminated, or NULL. */
static char *receive(int timeout_ms) {
        struct pollfd p = {.fd = sock, .events = POLLIN};
        char buf[4096];
        ssize_t n;

        if (poll(&p, 1, timeout_ms) <= 0)
                return NULL;
        n = recv(sock, buf, sizeof(buf) - 1, MSG_DONTWAIT);
        if (n < 0)
                return NULL;
        buf[n] = '\0';
        return strdup(buf);
}

/* Every datagram already queued, dropped. */
static void drain(void) {
        char *m;

        while ((m = receive(0)))
                free(m);
}

static void expect(const char *want) {
        char *m = receive(2000);

        CHECK_STR(m, want);
        free(m);
}

static void expect_nothing(void) {
        char *m = receive(100);

        CHECK_STR(m, NULL);
        free(m);
}

static void test_ready_stopping(void) {
        drain();
        notify_ready();
        expect("READY=1");
        notify_stopping();
        expect("STOPPING=1");
        expect_nothing();
}

static void test_reloading(void) {
        struct timespec ts;
        uint64_t before, after, got = 0;
        char *m;

        drain();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        before = (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
        notify_reloading();
        clock_gettime(CLOCK_MONOTONIC, &ts);
        after = (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000;
        m = receive(2000);
        REQUIRE(m);
        CHECK_PREFIX(m, "RELOADING=1\nMONOTONIC_USEC=");
        if (sscanf(m, "RELOADING=1\nMONOTONIC_USEC=%" SCNu64, &got) == 1) {
                CHECK(got >= before);
                CHECK(got <= after);
        } else
                CHECK(!"MONOTONIC_USEC is a number");
        /* Exactly two lines, no trailing newline. */
        CHECK_INT(strchr(m, '\n') == strrchr(m, '\n'), true);
        CHECK(m[strlen(m) - 1] != '\n');
        free(m);
}

static void test_status(void) {
        char longer[1000];

        drain();
        notify_status("%zu maps, %u failed", (size_t)3, 1u);
        expect("STATUS=3 maps, 1 failed");
        /* A newline in the text (a path, a database error) cannot start
         * another assignment: it becomes a space. */
        notify_status("database %s unavailable", "/x\nREADY=1\nSTATUS=forged");
        expect("STATUS=database /x READY=1 STATUS=forged unavailable");
        notify_status("%s", "");
        expect("STATUS=");
        /* Cut at 511 bytes of text. */
        memset(longer, 'a', sizeof(longer) - 1);
        longer[sizeof(longer) - 1] = '\0';
        notify_status("%s", longer);
        {
                char *m = receive(2000);
                REQUIRE(m);
                CHECK_PREFIX(m, "STATUS=aaaa");
                CHECK_UINT(strlen(m), strlen("STATUS=") + 511);
                free(m);
        }
        expect_nothing();
}

/* Runs fn in a child with the environment set as given (NULL: unset), so
 * that the watchdog's once-per-process decision starts afresh; pid_value
 * "$$" is the child's own pid. Returns the child's exit status. */
static int in_child(const char *usec, const char *pid_value, void (*fn)(void)) {
        pid_t pid = fork();
        int status;

        if (pid < 0)
                abort();
        if (pid == 0) {
                if (usec)
                        setenv("WATCHDOG_USEC", usec, 1);
                else
                        unsetenv("WATCHDOG_USEC");
                if (pid_value && streq(pid_value, "$$")) {
                        char own[32];
                        snprintf(own, sizeof(own), "%d", (int)getpid());
                        setenv("WATCHDOG_PID", own, 1);
                } else if (pid_value)
                        setenv("WATCHDOG_PID", pid_value, 1);
                else
                        unsetenv("WATCHDOG_PID");
                fn();
                _exit(0);
        }
        if (waitpid(pid, &status, 0) != pid)
                abort();
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void kick_three_quickly(void) {
        notify_watchdog_kick();
        notify_watchdog_kick();
        notify_watchdog_kick();
}

/* With a 2 s interval: one WATCHDOG=1 at once, none for the next calls
 * within a quarter of the interval (500 ms), then one again. */
static void kick_rate(void) {
        struct timespec pause = {0, 600 * 1000 * 1000};

        kick_three_quickly();
        nanosleep(&pause, NULL);
        kick_three_quickly();
}

static void test_watchdog(void) {
        char pid_buf[32];

        drain();
        CHECK_INT(in_child("2000000", NULL, kick_rate), 0);
        expect("WATCHDOG=1");
        expect("WATCHDOG=1");
        expect_nothing();

        /* No WATCHDOG_USEC: the watchdog is off and nothing is sent. */
        CHECK_INT(in_child(NULL, NULL, kick_three_quickly), 0);
        expect_nothing();

        /* WATCHDOG_PID naming another process: not this one's watchdog. */
        snprintf(pid_buf, sizeof(pid_buf), "%d", (int)getpid());
        CHECK_INT(in_child("2000000", pid_buf, kick_three_quickly), 0);
        expect_nothing();

        /* WATCHDOG_PID naming the child itself: on. */
        CHECK_INT(in_child("2000000", "$$", kick_three_quickly), 0);
        expect("WATCHDOG=1");
        expect_nothing();
}

static void all_calls(void) {
        notify_ready();
        notify_reloading();
        notify_status("x");
        notify_stopping();
        notify_watchdog_kick();
}

static void test_no_socket(void) {
        const char *saved = getenv("NOTIFY_SOCKET");
        char *copy = saved ? strdup(saved) : NULL;

        drain();
        unsetenv("NOTIFY_SOCKET");
        all_calls();
        CHECK_INT(in_child("2000000", NULL, all_calls), 0);
        expect_nothing();
        /* A socket that is not there: the calls fail quietly. */
        setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
        all_calls();
        expect_nothing();
        if (copy)
                setenv("NOTIFY_SOCKET", copy, 1);
        free(copy);
        /* And with it set again, messages arrive. */
        notify_ready();
        expect("READY=1");
}

int main(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        tmpdir = test_mkdtemp();
        sock_path = test_path(tmpdir, "notify");
        if (strlen(sock_path) >= sizeof(sa.sun_path))
                abort();
        strcpy(sa.sun_path, sock_path);
        sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (sock < 0 || bind(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                abort();
        setenv("NOTIFY_SOCKET", sock_path, 1);
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");

        RUN(test_ready_stopping);
        RUN(test_reloading);
        RUN(test_status);
        RUN(test_watchdog);
        RUN(test_no_socket);

        close(sock);
        test_rm_rf(tmpdir);
        free(sock_path);
        free(tmpdir);
        return test_end();
}
