/* Unit tests of pglisten.h without a PostgreSQL server: the backoff, a
 * connection refused (told, tried again after the backoff, never
 * "connected"), and a peer that accepts and hangs up at once. The
 * integration tests (tests/integration/test_pg_daemon.py) drive LISTEN and
 * NOTIFY against a real cluster. */
#include "pglisten.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

#include "util.h"

#include "test.h"

static void test_backoff(void) {
        CHECK_UINT(pglisten_backoff_usec(1), 250000);
        CHECK_UINT(pglisten_backoff_usec(2), 500000);
        CHECK_UINT(pglisten_backoff_usec(3), 1000000);
        CHECK_UINT(pglisten_backoff_usec(7), 16000000);
        CHECK_UINT(pglisten_backoff_usec(8), 30000000);
        CHECK_UINT(pglisten_backoff_usec(1000), 30000000);
        CHECK_UINT(pglisten_backoff_usec(0), 250000);
}

struct seen {
        unsigned connected, notified, lost;
        uint64_t lost_at[4];
        char problem[512];
        sd_event *event;
        unsigned stop_after_lost;
};

static uint64_t mono_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

static void on_event(void *userdata, enum pglisten_event event, const char *detail) {
        struct seen *s = userdata;

        switch (event) {
        case PGLISTEN_CONNECTED:
                s->connected++;
                break;
        case PGLISTEN_NOTIFIED:
                s->notified++;
                break;
        case PGLISTEN_LOST:
                if (s->lost < ARRAY_SIZE(s->lost_at))
                        s->lost_at[s->lost] = mono_usec();
                s->lost++;
                snprintf(s->problem, sizeof(s->problem), "%s", detail);
                if (s->lost >= s->stop_after_lost)
                        sd_event_exit(s->event, 0);
                break;
        }
}

static int on_deadline(sd_event_source *src, uint64_t usec, void *userdata) {
        sd_event_exit(userdata, 1);
        return 0;
}

/* A loopback socket bound to a free port: listening or not. */
static int loopback(bool listening, int *port) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) < 0 || (listening && listen(fd, 4) < 0)) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        *port = ntohs(a.sin_port);
        return fd;
}

/* Accepts a connection and closes it at once. */
static int on_accept(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

        if (c >= 0)
                close(c);
        return 0;
}

static void run(struct seen *s, const char *conninfo, unsigned n_lost, int listen_fd) {
        sd_event_source *deadline = NULL, *io = NULL;
        struct pglisten *l = NULL;
        int r;

        CHECK(sd_event_new(&s->event) >= 0);
        s->stop_after_lost = n_lost;
        CHECK(sd_event_add_time_relative(s->event, &deadline, CLOCK_MONOTONIC, 20 * 1000000ULL, 0, on_deadline,
                                         s->event) >= 0);
        if (listen_fd >= 0)
                CHECK(sd_event_add_io(s->event, &io, listen_fd, EPOLLIN, on_accept, NULL) >= 0);
        CHECK_INT(pglisten_new(s->event, conninfo, NULL, "mapsyncd", on_event, s, &l), 0);
        CHECK(!pglisten_connected(l));
        r = sd_event_loop(s->event);
        CHECK_INT(r, 0); /* 1: the deadline came first */
        CHECK(!pglisten_connected(l));
        CHECK_STR(pglisten_problem(l), s->problem);
        CHECK_UINT(pglisten_n_connects(l), 0);
        pglisten_free(l);
        sd_event_source_disable_unref(io);
        sd_event_source_disable_unref(deadline);
        s->event = sd_event_unref(s->event);
}

static void test_refused_then_retried_with_backoff(void) {
        struct seen s = {0};
        char conninfo[200];
        int port = 0, fd = loopback(false, &port);

        CHECK(fd >= 0);
        snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=mail user=mapsyncd", port);
        run(&s, conninfo, 3, -1);
        close(fd);
        CHECK_UINT(s.lost, 3);
        CHECK_UINT(s.connected, 0);
        CHECK_CONTAINS(s.problem, "refused");
        CHECK(!strchr(s.problem, '\n'));
        /* 250 ms, then 500 ms between the attempts (timers may be late,
         * never early). */
        CHECK(s.lost_at[1] - s.lost_at[0] >= 240000);
        CHECK(s.lost_at[2] - s.lost_at[1] >= 490000);
}

static void test_peer_hangs_up(void) {
        struct seen s = {0};
        char conninfo[200];
        int port = 0, fd = loopback(true, &port);

        CHECK(fd >= 0);
        snprintf(conninfo, sizeof(conninfo), "host=127.0.0.1 port=%d dbname=mail user=mapsyncd sslmode=disable", port);
        run(&s, conninfo, 2, fd);
        close(fd);
        CHECK_UINT(s.lost, 2);
        CHECK_UINT(s.connected, 0);
        CHECK(s.problem[0] != '\0');
        CHECK(!strchr(s.problem, '\n'));
}

int main(void) {
        RUN(test_backoff);
        RUN(test_refused_then_retried_with_backoff);
        RUN(test_peer_hangs_up);
        return test_end();
}
