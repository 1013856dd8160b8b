/* Change detection as a state machine: see detect.h for the rules. */
#include "detect.h"

#include <stdlib.h>

#include "util.h"

/* Gaps between the looks that follow a -wal write, then the last one
 * again until the follow window is over; the quick looks of a burst that
 * did not write -wal (readers closing, a journal deleted) are the first
 * DETECT_SHORT_LOOKS of them. */
static const uint64_t look_usec[] = {20 * DETECT_USEC_PER_MSEC, 200 * DETECT_USEC_PER_MSEC, 1 * DETECT_USEC_PER_SEC,
                                     2 * DETECT_USEC_PER_SEC, 5 * DETECT_USEC_PER_SEC};
#define RETRY_MIN_USEC   (1 * DETECT_USEC_PER_SEC)
#define RETRY_MAX_USEC   (60 * DETECT_USEC_PER_SEC)
#define REWATCH_MIN_USEC (2 * DETECT_USEC_PER_SEC)
#define REWATCH_MAX_USEC (60 * DETECT_USEC_PER_SEC)

struct detect {
        struct detect_config c;
        struct detect_reading base; /* what the last cycle started from (have_base) */

        uint64_t burst_start; /* first event of the burst (burst) */
        uint64_t debounce_at;
        uint64_t look_at;    /* the next follow or quick look */
        uint64_t last_wal;   /* the last -wal write (following) */
        uint64_t retry_at;   /* a failed cycle's retry */
        uint64_t poll_at;    /* the next poll */
        uint64_t rewatch_at; /* the next try to watch (watch_down) */

        unsigned n_looks;    /* follow looks since the last -wal write */
        unsigned short_left; /* quick looks left for a burst without -wal writes */
        unsigned n_failures; /* cycles failed in a row */
        unsigned n_rewatch;  /* tries to watch failed in a row */
        int watch_error;
        enum detect_problem reported;
        int reported_error;

        bool burst;          /* events seen, debounce running */
        bool force;          /* the next due look syncs without comparing */
        bool sync_now;       /* sync at once */
        bool following;      /* -wal was written less than DETECT_FOLLOW_USEC ago */
        bool follow_changed; /* a cycle ran since the last follow look */
        bool have_base;
        bool watch_down;
        bool rewatch_now;
};

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

static uint64_t backoff(uint64_t min, uint64_t max, unsigned n) {
        unsigned shift = n > 0 ? n - 1 : 0;
        return shift >= 16 || (min << shift) > max ? max : min << shift;
}

uint64_t detect_poll_usec(const struct detect *d) {
        if (!d->watch_down)
                return d->c.poll_usec;
        return d->c.poll_usec > 0 ? min_u64(d->c.poll_usec, DETECT_FALLBACK_POLL_USEC) : DETECT_FALLBACK_POLL_USEC;
}

static void restart_poll(struct detect *d, uint64_t now) {
        uint64_t p = detect_poll_usec(d);
        d->poll_at = p > 0 ? now + p : DETECT_NEVER;
}

struct detect *detect_new(const struct detect_config *c, uint64_t now) {
        struct detect *d = calloc(1, sizeof(*d));

        if (!d)
                return NULL;
        d->c = *c;
        d->sync_now = true;
        d->look_at = DETECT_NEVER;
        d->retry_at = DETECT_NEVER;
        d->rewatch_at = DETECT_NEVER;
        restart_poll(d, now);
        return d;
}

struct detect *detect_free(struct detect *d) {
        free(d);
        return NULL;
}

void detect_set_config(struct detect *d, const struct detect_config *c, uint64_t now) {
        d->c = *c;
        if (d->burst)
                d->debounce_at = min_u64(now + c->debounce_usec, d->burst_start + c->max_delay_usec);
        restart_poll(d, now);
}

/* After a look that found nothing new, or a cycle: the next look. */
static void schedule_look(struct detect *d, uint64_t now) {
        d->look_at = DETECT_NEVER;
        if (d->following) {
                uint64_t end = d->last_wal + DETECT_FOLLOW_USEC;
                unsigned k = d->n_looks < ARRAY_SIZE(look_usec) ? d->n_looks : (unsigned)ARRAY_SIZE(look_usec) - 1;

                if (now >= end && !d->follow_changed) {
                        d->following = false; /* the version held for the whole window */
                        return;
                }
                /* A change seen at the end of the window gets one more look. */
                d->n_looks++;
                d->look_at = now >= end ? now + look_usec[k] : min_u64(now + look_usec[k], end);
                d->follow_changed = false;
        } else if (d->short_left > 0) {
                d->look_at = now + look_usec[DETECT_SHORT_LOOKS - d->short_left];
                d->short_left--;
        }
}

void detect_event(struct detect *d, uint64_t now, unsigned flags) {
        if (flags & DETECT_EV_WAL_WRITE) {
                d->following = true;
                d->last_wal = now;
                d->n_looks = 0;
        }
        if (flags & (DETECT_EV_DB_WRITE | DETECT_EV_OVERFLOW | DETECT_EV_LOST | DETECT_EV_RELINK | DETECT_EV_CHANGED))
                d->force = true;
        if (flags & (DETECT_EV_LOST | DETECT_EV_RELINK))
                d->rewatch_now = true;
        if (!d->burst) {
                d->burst = true;
                d->burst_start = now;
        }
        d->debounce_at = min_u64(now + d->c.debounce_usec, d->burst_start + d->c.max_delay_usec);
        /* The debounce's look comes first; the follow goes on after it. */
        d->look_at = DETECT_NEVER;
}

void detect_timer_expired(struct detect *d, uint64_t now) {
        /* Nothing to record: detect_next() compares each deadline with now. */
        (void)d;
        (void)now;
}

static bool same_state(const struct detect_reading *a, const struct detect_reading *b) {
        if (a->error || b->error)
                return a->error == b->error;
        return a->identity == b->identity && a->version == b->version;
}

void detect_checked(struct detect *d, uint64_t now, const struct detect_reading *rd) {
        if (!d->have_base || !same_state(rd, &d->base)) {
                d->sync_now = true;
                return;
        }
        schedule_look(d, now);
}

void detect_cycle_started(struct detect *d, uint64_t now, const struct detect_reading *rd) {
        (void)now;
        /* The cycle's snapshot comes after every event so far and after rd:
         * whatever they announced and is visible, it sees. What is not yet
         * visible (a WAL commit in its fsync) the follow still watches for:
         * following and last_wal stay as they are. */
        d->base = *rd;
        d->have_base = true;
        d->follow_changed = d->following;
        d->burst = false;
        d->force = false;
        d->sync_now = false;
        d->look_at = DETECT_NEVER;
        d->short_left = 0;
        d->retry_at = DETECT_NEVER;
}

void detect_cycle_done(struct detect *d, uint64_t now, bool ok) {
        if (!ok) {
                /* The maps do not show the base: the next look syncs, and
                 * the retry comes without waiting for a change. */
                d->have_base = false;
                d->n_failures++;
                d->retry_at = now + backoff(RETRY_MIN_USEC, RETRY_MAX_USEC, d->n_failures);
                return;
        }
        d->n_failures = 0;
        if (!d->burst)
                schedule_look(d, now);
}

void detect_watch_result(struct detect *d, uint64_t now, int r) {
        if (r >= 0) {
                if (d->watch_down) {
                        d->watch_down = false;
                        d->sync_now = true; /* what changed while nobody watched */
                }
                d->watch_error = 0;
                d->n_rewatch = 0;
                d->rewatch_at = DETECT_NEVER;
                restart_poll(d, now);
                return;
        }
        if (!d->watch_down) {
                d->watch_down = true;
                restart_poll(d, now);
        }
        d->watch_error = r;
        d->n_rewatch++;
        d->rewatch_at = now + backoff(REWATCH_MIN_USEC, REWATCH_MAX_USEC, d->n_rewatch);
}

void detect_request_sync(struct detect *d, uint64_t now) {
        (void)now;
        d->sync_now = true;
}

enum detect_problem detect_problem(const struct detect *d, int *error) {
        if (error)
                *error = d->watch_down ? d->watch_error : 0;
        return d->watch_down ? DETECT_WATCH_FAILED : DETECT_OK;
}

enum detect_action detect_next(struct detect *d, uint64_t now) {
        int error;
        enum detect_problem p = detect_problem(d, &error);
        bool due = false;

        if (p != d->reported || error != d->reported_error) {
                d->reported = p;
                d->reported_error = error;
                return DETECT_REPORT;
        }
        if (d->rewatch_now || (d->watch_down && d->rewatch_at <= now)) {
                d->rewatch_now = false;
                d->rewatch_at = DETECT_NEVER;
                return DETECT_REWATCH;
        }
        if (d->sync_now) {
                d->sync_now = false;
                return DETECT_SYNC;
        }
        if (d->burst && d->debounce_at <= now) {
                d->burst = false;
                d->short_left = DETECT_SHORT_LOOKS;
                due = true;
        }
        if (d->look_at <= now) {
                d->look_at = DETECT_NEVER;
                due = true;
        }
        if (d->retry_at <= now) {
                d->retry_at = DETECT_NEVER;
                d->force = true;
                due = true;
        }
        if (d->poll_at <= now) {
                uint64_t p_usec = detect_poll_usec(d);
                d->poll_at = p_usec > 0 ? now + p_usec : DETECT_NEVER;
                due = true;
        }
        if (!due)
                return DETECT_IDLE;
        if (d->force || !d->have_base || d->c.unversioned) {
                d->force = false;
                return DETECT_SYNC;
        }
        return DETECT_CHECK;
}

uint64_t detect_wakeup(const struct detect *d) {
        uint64_t t = DETECT_NEVER;
        int error;
        enum detect_problem p = detect_problem(d, &error);

        if (d->sync_now || d->rewatch_now || p != d->reported || error != d->reported_error)
                return 0;
        if (d->burst)
                t = d->debounce_at;
        t = min_u64(t, d->look_at);
        t = min_u64(t, d->retry_at);
        t = min_u64(t, d->poll_at);
        if (d->watch_down)
                t = min_u64(t, d->rewatch_at);
        return t;
}

bool detect_following(const struct detect *d) {
        return d->following;
}
