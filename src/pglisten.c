/* LISTEN on a connection of its own, on the event loop: a small state
 * machine of connecting (PQconnectPoll), listening (LISTEN sent, its
 * result awaited), up (notifications), and waiting to reconnect. */
#include "pglisten.h"

#include <libpq-fe.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define BACKOFF_MIN_USEC (250ULL * 1000ULL)
#define BACKOFF_MAX_USEC (30ULL * 1000000ULL)

enum state {
        STATE_IDLE, /* waiting for the reconnect timer */
        STATE_CONNECTING,
        STATE_LISTENING, /* LISTEN sent */
        STATE_UP,
};

struct pglisten {
        sd_event *event;
        char *conninfo, *passfile, *channel;
        pglisten_fn fn;
        void *userdata;
        PGconn *conn;
        enum state state;
        sd_event_source *io;
        int io_fd;
        sd_event_source *timer; /* reconnect, or the connect timeout */
        unsigned n_failures;
        uint64_t n_connects;
        char problem[512];
};

static void start_connect(struct pglisten *l);

uint64_t pglisten_backoff_usec(unsigned n_failures) {
        uint64_t d = BACKOFF_MIN_USEC;

        for (unsigned i = 1; i < n_failures && d < BACKOFF_MAX_USEC; i++)
                d *= 2;
        return d < BACKOFF_MAX_USEC ? d : BACKOFF_MAX_USEC;
}

static void set_problem(struct pglisten *l, const char *what, const char *why) {
        size_t n;

        if (!why || !*why)
                why = !*what ? "connection closed" : "";
        snprintf(l->problem, sizeof(l->problem), "%s%s", what, why);
        n = strlen(l->problem);
        while (n > 0 && (l->problem[n - 1] == '\n' || l->problem[n - 1] == ' '))
                l->problem[--n] = '\0';
        for (char *c = l->problem; *c; c++)
                if (*c == '\n' || *c == '\t')
                        *c = ' ';
}

static void drop_connection(struct pglisten *l) {
        l->io = sd_event_source_disable_unref(l->io);
        l->io_fd = -1;
        PQfinish(l->conn);
        l->conn = NULL;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void arm_timer(struct pglisten *l, uint64_t usec_rel) {
        /* From now, not from the loop iteration's start: a failed
         * connect may have taken a while. */
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (!l->timer) {
                if (sd_event_add_time(l->event, &l->timer, CLOCK_MONOTONIC, now + usec_rel, 1000, on_timer, l) < 0)
                        log_error("PostgreSQL LISTEN: could not arm a timer: %m");
                return;
        }
        sd_event_source_set_time(l->timer, now + usec_rel);
        sd_event_source_set_enabled(l->timer, SD_EVENT_ONESHOT);
}

/* Connecting failed or the connection broke: tell, and try again later. */
static void lost(struct pglisten *l, const char *what) {
        bool was_up = l->state == STATE_UP;
        uint64_t delay;

        set_problem(l, what, l->conn ? PQerrorMessage(l->conn) : NULL);
        drop_connection(l);
        l->state = STATE_IDLE;
        l->n_failures++;
        delay = was_up ? 0 : pglisten_backoff_usec(l->n_failures);
        arm_timer(l, delay);
        l->fn(l->userdata, PGLISTEN_LOST, l->problem);
}

static int watch_fd(struct pglisten *l, uint32_t events);

static void up(struct pglisten *l) {
        l->state = STATE_UP;
        l->n_failures = 0;
        l->n_connects++;
        l->problem[0] = '\0';
        if (l->timer)
                sd_event_source_set_enabled(l->timer, SD_EVENT_OFF);
        l->fn(l->userdata, PGLISTEN_CONNECTED, "");
}

/* Reads what arrived: LISTEN's result, notifications, or the end. */
static void consume(struct pglisten *l) {
        PGnotify *n;
        PGresult *res;

        if (!PQconsumeInput(l->conn)) {
                lost(l, "");
                return;
        }
        while (!PQisBusy(l->conn) && (res = PQgetResult(l->conn))) {
                ExecStatusType st = PQresultStatus(res);
                if (l->state == STATE_LISTENING && st == PGRES_COMMAND_OK) {
                        PQclear(res);
                        /* Drain the end of the command, then say so. */
                        while (!PQisBusy(l->conn) && (res = PQgetResult(l->conn)))
                                PQclear(res);
                        up(l);
                        continue;
                }
                if (st == PGRES_FATAL_ERROR) {
                        char why[300];
                        snprintf(why, sizeof(why), "%s", PQresultErrorMessage(res));
                        PQclear(res);
                        drop_connection(l);
                        lost(l, why);
                        return;
                }
                PQclear(res);
        }
        while (l->conn && (n = PQnotifies(l->conn))) {
                bool ours = streq(n->relname, l->channel);
                if (ours && l->state == STATE_UP)
                        l->fn(l->userdata, PGLISTEN_NOTIFIED, n->extra ? n->extra : "");
                PQfreemem(n);
        }
        if (l->conn && PQstatus(l->conn) == CONNECTION_BAD)
                lost(l, "");
}

static void send_listen(struct pglisten *l) {
        char sql[100];

        /* The channel is a plain lower-case identifier (config.c). */
        snprintf(sql, sizeof(sql), "LISTEN %s", l->channel);
        if (PQsetnonblocking(l->conn, 1) < 0 || !PQsendQuery(l->conn, sql)) {
                lost(l, "LISTEN failed: ");
                return;
        }
        l->state = STATE_LISTENING;
        if (PQflush(l->conn) == 1)
                watch_fd(l, EPOLLIN | EPOLLOUT);
        else
                watch_fd(l, EPOLLIN);
}

static void poll_connect(struct pglisten *l) {
        switch (PQconnectPoll(l->conn)) {
        case PGRES_POLLING_READING:
                watch_fd(l, EPOLLIN);
                break;
        case PGRES_POLLING_WRITING:
                watch_fd(l, EPOLLOUT);
                break;
        case PGRES_POLLING_OK:
                send_listen(l);
                break;
        case PGRES_POLLING_FAILED:
        default:
                lost(l, "");
                break;
        }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct pglisten *l = userdata;

        switch (l->state) {
        case STATE_CONNECTING:
                poll_connect(l);
                break;
        case STATE_LISTENING:
        case STATE_UP:
                if ((revents & EPOLLOUT) && PQflush(l->conn) == 0)
                        watch_fd(l, EPOLLIN);
                if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                        consume(l);
                break;
        case STATE_IDLE:
                break;
        }
        return 0;
}

/* (Re)points the io source at the connection's socket, which libpq may
 * change while connecting (one per address tried). */
static int watch_fd(struct pglisten *l, uint32_t events) {
        int fd = PQsocket(l->conn), r;

        if (fd < 0) {
                lost(l, "");
                return -EBADF;
        }
        if (l->io && fd == l->io_fd)
                return sd_event_source_set_io_events(l->io, events);
        l->io = sd_event_source_disable_unref(l->io);
        r = sd_event_add_io(l->event, &l->io, fd, events, on_io, l);
        if (r < 0) {
                set_problem(l, "could not watch the connection: ", strerror(-r));
                lost(l, "");
                return r;
        }
        l->io_fd = fd;
        return 0;
}

static void start_connect(struct pglisten *l) {
        /* Later entries override earlier ones: defaults, then the
         * conninfo, then the configuration's passfile. Keepalives find a
         * peer gone without a word (a partition) within about 25 s. */
        const char *keys[] = {"application_name", "client_encoding", "keepalives_idle", "keepalives_interval",
                              "keepalives_count", "dbname",          "passfile",        NULL};
        const char *values[] = {"mapsyncd", "UTF8", "10", "5", "3", l->conninfo, l->passfile, NULL};

        l->conn = PQconnectStartParams(keys, values, 1);
        if (!l->conn || PQstatus(l->conn) == CONNECTION_BAD) {
                lost(l, "");
                return;
        }
        l->state = STATE_CONNECTING;
        arm_timer(l, PGLISTEN_CONNECT_TIMEOUT_USEC);
        /* As if PQconnectPoll() had said PGRES_POLLING_WRITING. */
        watch_fd(l, EPOLLOUT);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct pglisten *l = userdata;

        switch (l->state) {
        case STATE_IDLE:
                start_connect(l);
                break;
        case STATE_CONNECTING:
        case STATE_LISTENING:
                drop_connection(l);
                lost(l, "timed out connecting");
                break;
        case STATE_UP:
                break;
        }
        return 0;
}

int pglisten_new(sd_event *event, const char *conninfo, const char *passfile, const char *channel, pglisten_fn fn,
                 void *userdata, struct pglisten **ret) {
        struct pglisten *l = calloc(1, sizeof(*l));

        if (!l)
                return -ENOMEM;
        l->event = sd_event_ref(event);
        l->fn = fn;
        l->userdata = userdata;
        l->io_fd = -1;
        l->conninfo = strdup(conninfo);
        l->passfile = passfile ? strdup(passfile) : NULL;
        l->channel = strdup(channel);
        if (!l->conninfo || !l->channel || (passfile && !l->passfile)) {
                pglisten_free(l);
                return -ENOMEM;
        }
        *ret = l;
        start_connect(l);
        return 0;
}

struct pglisten *pglisten_free(struct pglisten *l) {
        if (!l)
                return NULL;
        drop_connection(l);
        sd_event_source_disable_unref(l->timer);
        sd_event_unref(l->event);
        free(l->conninfo);
        free(l->passfile);
        free(l->channel);
        free(l);
        return NULL;
}

bool pglisten_connected(const struct pglisten *l) {
        return l->state == STATE_UP;
}

const char *pglisten_problem(const struct pglisten *l) {
        return l->problem;
}

uint64_t pglisten_n_connects(const struct pglisten *l) {
        return l->n_connects;
}
