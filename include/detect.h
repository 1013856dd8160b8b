/* Change detection: when to look at the database and when to sync, as one
 * state machine without I/O and without a clock. The caller (daemon.c)
 * feeds it inputs with the current monotonic time and does what it asks:
 *
 *   inputs:  detect_event()          inotify (or another source) saw something
 *            detect_timer_expired()  the one timer it asked for fired
 *            detect_checked()        the database's identity and version, read
 *            detect_cycle_started()  a sync cycle began (with the reading
 *                                    taken just before its snapshot)
 *            detect_cycle_done()     the cycle ended, well or not
 *            detect_watch_result()   setting up the watch worked or failed
 *            detect_request_sync()   sync now, skipping the debounce
 *   outputs: detect_next()           CHECK, SYNC, REWATCH, REPORT or IDLE
 *            detect_wakeup()         when to call detect_timer_expired()
 *            detect_problem()        the detection problem to report (once)
 *
 * The rules:
 * - Events start a burst; the check comes debounce after the last event,
 *   at most max_delay after the first.
 * - A check compares the database's identity and version with those read
 *   before the last cycle's snapshot: different (or unknown, or unreadable)
 *   means sync.
 * - A burst that wrote -wal is followed: a WAL commit becomes visible only
 *   after its fsync and a wal-index update that raises no event. Checks go
 *   on, with growing gaps, until the version has stayed the same for
 *   DETECT_FOLLOW_USEC measured from the LAST -wal write, across cycles (a
 *   cycle does not end the follow). Then no timer is left: idle means zero
 *   wakeups. Any other burst gets DETECT_SHORT_LOOKS quick looks.
 * - A write to the database file itself, lost events (overflow), a lost
 *   watch, a re-pointed symlink or another source's "changed" sync without
 *   trusting the version.
 * - A failed cycle is retried with a backoff (1 s doubling to 60 s).
 * - Polling: every poll_usec a check. When the watch cannot be set up the
 *   machine polls every DETECT_FALLBACK_POLL_USEC (or poll_usec when that is
 *   shorter), reports the problem once, and asks for REWATCH with a backoff
 *   until the watch works again; then it syncs once (what changed while
 *   nobody watched) and reports the problem gone. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define DETECT_USEC_PER_MSEC      1000ULL
#define DETECT_USEC_PER_SEC       1000000ULL
#define DETECT_NEVER              UINT64_MAX
#define DETECT_FOLLOW_USEC        (120 * DETECT_USEC_PER_SEC)
#define DETECT_FALLBACK_POLL_USEC (2 * DETECT_USEC_PER_SEC)
#define DETECT_SHORT_LOOKS        2

struct detect_config {
        uint64_t debounce_usec;
        uint64_t max_delay_usec;
        uint64_t poll_usec; /* 0: no polling while the watch works */
        bool unversioned;   /* no version to compare (PostgreSQL): every look syncs */
};

/* What an event says (bits). */
enum {
        DETECT_EV_FILE = 1 << 0,      /* something happened to the database's files */
        DETECT_EV_WAL_WRITE = 1 << 1, /* -wal was written: a commit may show later, invisibly */
        DETECT_EV_DB_WRITE = 1 << 2,  /* the database file itself was written */
        DETECT_EV_OVERFLOW = 1 << 3,  /* events were lost */
        DETECT_EV_LOST = 1 << 4,      /* the watch is gone: set it up again */
        DETECT_EV_RELINK = 1 << 5,    /* a symlink on the path changed: resolve and watch again */
        DETECT_EV_CHANGED = 1 << 6,   /* another source says the data changed */
};

enum detect_action {
        DETECT_IDLE,    /* nothing to do until detect_wakeup() or an input */
        DETECT_CHECK,   /* read identity and version, then detect_checked() */
        DETECT_SYNC,    /* run a cycle: detect_cycle_started() ... detect_cycle_done() */
        DETECT_REWATCH, /* resolve the path, set up the watch, detect_watch_result() */
        DETECT_REPORT,  /* detect_problem() changed: log it (or that it is over) */
};

/* One reading of the database: error 0 and its identity (which file) and
 * version (which committed state), or a negative errno (missing, not a
 * regular file, unreadable). */
struct detect_reading {
        int error;
        uint64_t identity;
        uint64_t version;
};

enum detect_problem {
        DETECT_OK,
        DETECT_WATCH_FAILED, /* no watch: polling instead */
};

struct detect;

/* Starts with a first sync due at once. NULL when out of memory. */
struct detect *detect_new(const struct detect_config *c, uint64_t now);
struct detect *detect_free(struct detect *d);

/* New debounce, max delay, poll interval (SIGHUP). */
void detect_set_config(struct detect *d, const struct detect_config *c, uint64_t now);

void detect_event(struct detect *d, uint64_t now, unsigned flags);
void detect_timer_expired(struct detect *d, uint64_t now);
void detect_checked(struct detect *d, uint64_t now, const struct detect_reading *rd);
void detect_cycle_started(struct detect *d, uint64_t now, const struct detect_reading *rd);
void detect_cycle_done(struct detect *d, uint64_t now, bool ok);
/* r: 0, or the negative errno setting up the watch failed with. */
void detect_watch_result(struct detect *d, uint64_t now, int r);
void detect_request_sync(struct detect *d, uint64_t now);

/* The next thing to do now; each call consumes what it returns. */
enum detect_action detect_next(struct detect *d, uint64_t now);

/* When the next timer is due (absolute), DETECT_NEVER for none. */
uint64_t detect_wakeup(const struct detect *d);

/* The current problem and the errno behind it (DETECT_WATCH_FAILED). */
enum detect_problem detect_problem(const struct detect *d, int *error);

/* The poll interval in use now (0: none): poll_usec, or the fallback. */
uint64_t detect_poll_usec(const struct detect *d);

/* Whether -wal writes are still being followed (for tests and STATUS). */
bool detect_following(const struct detect *d);
