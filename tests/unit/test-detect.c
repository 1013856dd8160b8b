/* The change-detection state machine, driven by a fake clock and a fake
 * database: every transition of detect.h, without I/O. */
#include "detect.h"

#include "test.h"
#include "util.h"

#define MS  1000ULL
#define SEC 1000000ULL

/* The fake world: the database's committed state as a reader would see it
 * now, and what the machine asked for. */
struct world {
        struct detect *d;
        uint64_t now;
        struct detect_reading db; /* what a reading returns now */
        bool cycle_ok;            /* how the next cycles end */
        int watch_r;              /* what setting up the watch returns */
        unsigned checks, syncs, rewatches, reports;
        struct detect_reading synced; /* what the last cycle started from */
        uint64_t last_sync_at;
        unsigned wakeups; /* timer expiries */
        /* A cycle that starts while another event comes in: events fed
         * between detect_cycle_started and detect_cycle_done. */
        unsigned mid_cycle_flags;
        /* A commit that becomes visible during the next cycle, after its
         * snapshot. */
        bool mid_cycle_commit;
};

static void world_init(struct world *w, uint64_t debounce_ms, uint64_t max_delay_ms, uint64_t poll_s) {
        struct detect_config c = {
                .debounce_usec = debounce_ms * MS, .max_delay_usec = max_delay_ms * MS, .poll_usec = poll_s * SEC};

        *w = (struct world){.now = 1000 * SEC, .cycle_ok = true};
        w->db.identity = 1;
        w->db.version = 100;
        w->d = detect_new(&c, w->now);
        if (!w->d)
                abort();
}

/* Does what the machine asks until it is idle, as daemon.c does. */
static void drain(struct world *w) {
        for (unsigned guard = 0; guard < 1000; guard++) {
                switch (detect_next(w->d, w->now)) {
                case DETECT_IDLE:
                        return;
                case DETECT_CHECK:
                        w->checks++;
                        detect_checked(w->d, w->now, &w->db);
                        break;
                case DETECT_SYNC:
                        w->syncs++;
                        w->synced = w->db;
                        w->last_sync_at = w->now;
                        detect_cycle_started(w->d, w->now, &w->db);
                        if (w->mid_cycle_flags) {
                                detect_event(w->d, w->now, w->mid_cycle_flags);
                                w->mid_cycle_flags = 0;
                        }
                        if (w->mid_cycle_commit) {
                                w->db.version++;
                                w->mid_cycle_commit = false;
                        }
                        detect_cycle_done(w->d, w->now, w->cycle_ok);
                        break;
                case DETECT_REWATCH:
                        w->rewatches++;
                        detect_watch_result(w->d, w->now, w->watch_r);
                        break;
                case DETECT_REPORT:
                        w->reports++;
                        break;
                }
        }
        test_failf(__FILE__, __LINE__, "detect_next never became idle");
}

/* Lets time pass until t, firing the timer whenever it is due. */
static void run_until(struct world *w, uint64_t t) {
        drain(w);
        for (;;) {
                uint64_t next = detect_wakeup(w->d);
                if (next > t)
                        break;
                if (next > w->now)
                        w->now = next;
                w->wakeups++;
                detect_timer_expired(w->d, w->now);
                drain(w);
        }
        w->now = t;
        drain(w);
}

static void run_for(struct world *w, uint64_t usec) {
        run_until(w, w->now + usec);
}

static void event(struct world *w, unsigned flags) {
        detect_event(w->d, w->now, flags);
        drain(w);
}

static void commit_visible(struct world *w) {
        w->db.version++;
}

static void world_done(struct world *w) {
        w->d = detect_free(w->d);
}

static void test_first_sync_then_idle(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        CHECK_UINT(w.syncs, 1);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        run_for(&w, 3600 * SEC);
        CHECK_UINT(w.syncs, 1);
        CHECK_UINT(w.wakeups, 0);
        world_done(&w);
}

static void test_debounce_then_check(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(detect_wakeup(w.d), w.now + 200 * MS);
        run_for(&w, 199 * MS);
        CHECK_UINT(w.checks, 0);
        commit_visible(&w);
        run_for(&w, 1 * MS);
        CHECK_UINT(w.checks, 1);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(w.synced.version, 101);
        /* A change found: no quick looks after the cycle. */
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        world_done(&w);
}

static void test_unchanged_burst_gets_two_quick_looks(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_FILE);
        run_for(&w, 10 * SEC);
        CHECK_UINT(w.syncs, 1);
        CHECK_UINT(w.checks, 1 + DETECT_SHORT_LOOKS);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        world_done(&w);
}

static void test_quick_look_finds_late_commit(void) {
        struct world w;

        world_init(&w, 0, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.checks, 1);
        run_for(&w, 100 * MS);
        commit_visible(&w);
        run_for(&w, 1 * SEC);
        CHECK_UINT(w.syncs, 2);
        world_done(&w);
}

static void test_max_delay_caps_debounce(void) {
        struct world w;
        uint64_t start;

        world_init(&w, 200, 1000, 0);
        drain(&w);
        start = w.now;
        for (int i = 0; i < 30; i++) {
                commit_visible(&w);
                event(&w, DETECT_EV_FILE);
                run_for(&w, 100 * MS);
        }
        CHECK_UINT(w.syncs, 4); /* the first, then every max_delay */
        CHECK(w.last_sync_at >= start + 1000 * MS && w.last_sync_at <= start + 3100 * MS);
        world_done(&w);
}

/* Issue 10, case 1: two back-to-back slow commits, each visible 500 ms
 * after its last -wal write, debounce 200 ms. */
static void test_two_slow_commits(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_WAL_WRITE); /* commit 1 written */
        run_for(&w, 500 * MS);
        commit_visible(&w); /* commit 1 visible, commit 2 written at once */
        event(&w, DETECT_EV_WAL_WRITE);
        run_for(&w, 500 * MS);
        commit_visible(&w); /* commit 2 visible: no event */
        run_for(&w, 10 * SEC);
        CHECK_UINT(w.synced.version, 102);
        world_done(&w);
}

/* The rule: a cycle that starts while a later commit is in flight does not
 * end the follow. Commit 1 shows at once; commit 2, written 1 ms later
 * (its last -wal write before the cycle), shows 3 s later with no event;
 * the cycle for commit 1 starts between. */
static void test_cycle_while_later_commit_in_flight(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_WAL_WRITE | DETECT_EV_FILE);
        commit_visible(&w);
        run_for(&w, 1 * MS);
        event(&w, DETECT_EV_WAL_WRITE); /* commit 2's frames */
        run_for(&w, 200 * MS);
        CHECK_UINT(w.syncs, 2); /* the cycle for commit 1 */
        CHECK_UINT(w.synced.version, 101);
        run_for(&w, 3 * SEC);
        commit_visible(&w);
        run_for(&w, 6 * SEC);
        CHECK_UINT(w.synced.version, 102);
        CHECK_UINT(w.syncs, 3);
        world_done(&w);
}

/* The same inside the cycle: the event comes between the cycle's start and
 * its end (its snapshot misses commit 2). */
static void test_event_during_cycle_not_lost(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        commit_visible(&w);
        event(&w, DETECT_EV_FILE);
        w.mid_cycle_flags = DETECT_EV_WAL_WRITE;
        w.mid_cycle_commit = true; /* visible right after the snapshot */
        run_for(&w, 200 * MS);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(w.synced.version, 101);
        run_for(&w, 1 * SEC);
        CHECK_UINT(w.syncs, 3);
        CHECK_UINT(w.synced.version, 102);
        world_done(&w);
}

static void test_follow_window_from_last_wal_write_then_idle(void) {
        struct world w;
        uint64_t t0, wakeups;

        world_init(&w, 0, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_WAL_WRITE);
        t0 = w.now;
        run_for(&w, 100 * SEC);
        CHECK(detect_following(w.d));
        event(&w, DETECT_EV_WAL_WRITE); /* a later write: the window starts again */
        run_until(&w, t0 + 100 * SEC + DETECT_FOLLOW_USEC - 1);
        CHECK(detect_following(w.d));
        CHECK(detect_wakeup(w.d) != DETECT_NEVER);
        /* A commit that shows late in the window is still found. */
        commit_visible(&w);
        run_until(&w, t0 + 100 * SEC + DETECT_FOLLOW_USEC + 10 * SEC);
        CHECK_UINT(w.synced.version, 101);
        CHECK(!detect_following(w.d));
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        wakeups = w.wakeups;
        run_for(&w, 3600 * SEC);
        CHECK_UINT(w.wakeups, wakeups); /* idle: zero wakeups */
        /* Bounded: the gaps grow to 5 s. */
        CHECK(w.checks < 2 * (DETECT_FOLLOW_USEC / (5 * SEC) + 10));
        world_done(&w);
}

static void test_follow_ends_after_window(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_WAL_WRITE);
        run_for(&w, DETECT_FOLLOW_USEC - 1 * SEC);
        CHECK(detect_following(w.d));
        run_for(&w, 2 * SEC);
        CHECK(!detect_following(w.d));
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        CHECK_UINT(w.syncs, 1);
        world_done(&w);
}

static void test_n_slow_commits(void) {
        static const uint64_t debounces[] = {0, 200, 1000};
        static const unsigned ns[] = {2, 5, 20};

        for (size_t i = 0; i < ARRAY_SIZE(debounces); i++)
                for (size_t j = 0; j < ARRAY_SIZE(ns); j++) {
                        struct world w;

                        world_init(&w, debounces[i], 5000, 0);
                        drain(&w);
                        for (unsigned k = 0; k < ns[j]; k++) {
                                event(&w, DETECT_EV_WAL_WRITE | DETECT_EV_FILE);
                                run_for(&w, 500 * MS); /* the fsync */
                                commit_visible(&w);
                        }
                        run_for(&w, 20 * SEC);
                        if (!CHECK_UINT(w.synced.version, 100 + ns[j]))
                                fprintf(stderr, "  debounce %llu ms, %u commits\n", (unsigned long long)debounces[i],
                                        ns[j]);
                        world_done(&w);
                }
}

static void test_db_write_syncs_without_version_change(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_DB_WRITE | DETECT_EV_FILE);
        run_for(&w, 200 * MS);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(w.checks, 0);
        world_done(&w);
}

static void test_overflow_and_other_source_sync(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_OVERFLOW);
        run_for(&w, 300 * MS);
        CHECK_UINT(w.syncs, 2);
        /* Another source's "changed" is debounced like an event. */
        event(&w, DETECT_EV_CHANGED);
        run_for(&w, 100 * MS);
        CHECK_UINT(w.syncs, 2);
        run_for(&w, 100 * MS);
        CHECK_UINT(w.syncs, 3);
        world_done(&w);
}

static void test_request_sync_skips_debounce(void) {
        struct world w;

        world_init(&w, 1000, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_FILE);
        detect_request_sync(w.d, w.now);
        drain(&w);
        CHECK_UINT(w.syncs, 2);
        /* The pending burst was covered by that cycle. */
        run_for(&w, 5 * SEC);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(w.checks, 0);
        world_done(&w);
}

static void test_identity_change_syncs(void) {
        struct world w;

        world_init(&w, 0, 5000, 0);
        drain(&w);
        w.db.identity = 2; /* replaced by rename, same version by chance */
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(w.synced.identity, 2);
        world_done(&w);
}

static void test_failed_cycle_retries_with_backoff(void) {
        struct world w;

        world_init(&w, 0, 5000, 0);
        w.cycle_ok = false;
        drain(&w);
        CHECK_UINT(w.syncs, 1);
        CHECK_UINT(detect_wakeup(w.d), w.now + 1 * SEC);
        run_for(&w, 1 * SEC);
        CHECK_UINT(w.syncs, 2);
        CHECK_UINT(detect_wakeup(w.d), w.now + 2 * SEC);
        run_for(&w, 2 * SEC);
        CHECK_UINT(w.syncs, 3);
        CHECK_UINT(detect_wakeup(w.d), w.now + 4 * SEC);
        /* An event meanwhile: a look finds no base, so it syncs. */
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.syncs, 4);
        w.cycle_ok = true;
        run_for(&w, 60 * SEC);
        CHECK_UINT(w.syncs, 5);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        for (int i = 0; i < 20; i++) {
                w.cycle_ok = false;
                detect_request_sync(w.d, w.now);
                drain(&w);
        }
        CHECK_UINT(detect_wakeup(w.d), w.now + 60 * SEC); /* capped */
        world_done(&w);
}

static void test_unreadable_database(void) {
        struct world w;

        world_init(&w, 0, 5000, 0);
        drain(&w);
        w.db.error = -ENOENT;
        w.cycle_ok = false;
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.syncs, 2);
        /* The same error again at a look: no new cycle (the retry runs). */
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.syncs, 3); /* no base after a failed cycle */
        run_for(&w, 500 * MS);
        CHECK_UINT(w.syncs, 3);
        /* Another error, then the database back. */
        w.db.error = 0;
        w.cycle_ok = true;
        run_for(&w, 2 * SEC);
        CHECK_UINT(w.syncs, 4);
        CHECK_INT(w.synced.error, 0);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        world_done(&w);
}

static void test_same_error_is_no_change(void) {
        struct world w;

        world_init(&w, 0, 5000, 0);
        w.db.error = -ENOENT;
        drain(&w); /* the first cycle reads the error but reports it: ok */
        CHECK_UINT(w.syncs, 1);
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.checks, 1);
        CHECK_UINT(w.syncs, 1);
        w.db.error = -ENOTSUP; /* a FIFO now */
        event(&w, DETECT_EV_FILE);
        CHECK_UINT(w.syncs, 2);
        world_done(&w);
}

static void test_poll(void) {
        struct world w;

        world_init(&w, 200, 5000, 5);
        drain(&w);
        CHECK_UINT(detect_wakeup(w.d), w.now + 5 * SEC);
        run_for(&w, 5 * SEC);
        CHECK_UINT(w.checks, 1);
        CHECK_UINT(w.syncs, 1);
        commit_visible(&w);
        run_for(&w, 5 * SEC);
        CHECK_UINT(w.checks, 2);
        CHECK_UINT(w.syncs, 2);
        run_for(&w, 50 * SEC);
        CHECK_UINT(w.checks, 12);
        /* A new interval, then none. */
        struct detect_config c = {.debounce_usec = 200 * MS, .max_delay_usec = 5000 * MS, .poll_usec = 1 * SEC};
        detect_set_config(w.d, &c, w.now);
        CHECK_UINT(detect_wakeup(w.d), w.now + 1 * SEC);
        c.poll_usec = 0;
        detect_set_config(w.d, &c, w.now);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        world_done(&w);
}

static void test_watch_fails_then_polls_and_recovers(void) {
        struct world w;
        int err;

        world_init(&w, 200, 5000, 0);
        w.watch_r = -EMFILE;
        /* daemon.c sets the watch up before the first cycle. */
        detect_watch_result(w.d, w.now, -EMFILE);
        drain(&w);
        CHECK_UINT(w.reports, 1);
        CHECK_INT(detect_problem(w.d, &err), DETECT_WATCH_FAILED);
        CHECK_INT(err, -EMFILE);
        CHECK_UINT(detect_poll_usec(w.d), DETECT_FALLBACK_POLL_USEC);
        CHECK_UINT(w.syncs, 1);
        /* Polling finds a change within the fallback interval. */
        commit_visible(&w);
        run_for(&w, DETECT_FALLBACK_POLL_USEC);
        CHECK_UINT(w.syncs, 2);
        /* Rewatch tries back off; the problem is reported once. */
        run_for(&w, 60 * SEC);
        CHECK(w.rewatches >= 3 && w.rewatches <= 6);
        CHECK_UINT(w.reports, 1);
        /* The watch works again: reported, a sync, no more polling. */
        w.watch_r = 0;
        run_for(&w, 60 * SEC);
        CHECK_UINT(w.reports, 2);
        CHECK_INT(detect_problem(w.d, NULL), DETECT_OK);
        CHECK_UINT(w.syncs, 3);
        CHECK_UINT(detect_wakeup(w.d), DETECT_NEVER);
        world_done(&w);
}

static void test_poll_shorter_than_fallback(void) {
        struct world w;

        world_init(&w, 200, 5000, 1);
        detect_watch_result(w.d, w.now, -ENOSPC);
        drain(&w);
        CHECK_UINT(detect_poll_usec(w.d), 1 * SEC);
        world_done(&w);
}

static void test_lost_watch_and_relink(void) {
        struct world w;

        world_init(&w, 200, 5000, 0);
        drain(&w);
        event(&w, DETECT_EV_LOST);
        CHECK_UINT(w.rewatches, 1);
        run_for(&w, 200 * MS);
        CHECK_UINT(w.syncs, 2);
        event(&w, DETECT_EV_RELINK);
        CHECK_UINT(w.rewatches, 2);
        run_for(&w, 200 * MS);
        CHECK_UINT(w.syncs, 3);
        /* The directory is not there now: polling, until it is. */
        w.watch_r = -ENOENT;
        event(&w, DETECT_EV_LOST);
        CHECK_UINT(w.reports, 1);
        w.watch_r = 0;
        run_for(&w, 3 * SEC);
        CHECK_UINT(w.reports, 2);
        CHECK_INT(detect_problem(w.d, NULL), DETECT_OK);
        world_done(&w);
}

/* PostgreSQL: no version, so each look is a sync; another source's
 * "changed" is debounced. */
static void test_unversioned(void) {
        struct world w;
        struct detect_config c = {
                .debounce_usec = 100 * MS, .max_delay_usec = 1000 * MS, .poll_usec = 5 * SEC, .unversioned = true};

        world_init(&w, 100, 1000, 5);
        detect_set_config(w.d, &c, w.now);
        drain(&w);
        CHECK_UINT(w.syncs, 1);
        event(&w, DETECT_EV_CHANGED);
        event(&w, DETECT_EV_CHANGED);
        run_for(&w, 99 * MS);
        CHECK_UINT(w.syncs, 1);
        run_for(&w, 1 * MS);
        CHECK_UINT(w.syncs, 2);
        run_for(&w, 5 * SEC); /* the poll syncs too */
        CHECK_UINT(w.syncs, 3);
        CHECK_UINT(w.checks, 0);
        world_done(&w);
}

/* Random events, commits that show with random delays (some slow, some in
 * the middle of a cycle), failures: after a quiet period the last cycle
 * started from the database's last state. */
static void test_random_interleavings(void) {
        uint64_t seed = 0x5eed1234abcdULL;
        const char *s = getenv("DETECT_SEED");

        if (s)
                seed = strtoull(s, NULL, 0);
        for (unsigned round = 0; round < 300; round++) {
                uint64_t state = seed + round * 0x9e3779b97f4a7c15ULL, round_seed = state;
                struct world w;
                uint64_t debounce = test_rand(&state) % 3 == 0 ? 0 : test_rand(&state) % 1200;

                world_init(&w, debounce, debounce + test_rand(&state) % 3000, test_rand(&state) % 4 == 0 ? 3 : 0);
                drain(&w);
                for (unsigned step = 0; step < 40; step++) {
                        unsigned r = (unsigned)(test_rand(&state) % 10);
                        if (r < 4) { /* a WAL commit: frames now, visible after its fsync */
                                event(&w, DETECT_EV_WAL_WRITE | DETECT_EV_FILE);
                                run_for(&w, test_rand(&state) % (3 * SEC));
                                commit_visible(&w);
                        } else if (r < 5) { /* a rollback commit */
                                commit_visible(&w);
                                event(&w, DETECT_EV_DB_WRITE | DETECT_EV_FILE);
                        } else if (r < 6) { /* a reader: events, nothing new */
                                event(&w, DETECT_EV_FILE);
                        } else if (r < 7) { /* a commit shows during the next cycle */
                                event(&w, DETECT_EV_WAL_WRITE | DETECT_EV_FILE);
                                w.mid_cycle_commit = true;
                        } else if (r < 8) {
                                w.cycle_ok = !w.cycle_ok;
                        } else if (r < 9) { /* replaced by rename */
                                w.db.identity++;
                                commit_visible(&w);
                                event(&w, DETECT_EV_FILE);
                        }
                        run_for(&w, test_rand(&state) % (2 * SEC));
                }
                if (w.mid_cycle_commit) { /* no cycle came: it shows now */
                        commit_visible(&w);
                        w.mid_cycle_commit = false;
                }
                w.cycle_ok = true;
                run_for(&w, DETECT_FOLLOW_USEC + 70 * SEC);
                if (!CHECK_UINT(w.synced.version, w.db.version) || !CHECK_UINT(w.synced.identity, w.db.identity) ||
                    !CHECK(detect_poll_usec(w.d) ? detect_wakeup(w.d) <= w.now + detect_poll_usec(w.d)
                                                 : detect_wakeup(w.d) == DETECT_NEVER)) {
                        fprintf(stderr, "  round %u: DETECT_SEED=0x%llx (round seed 0x%llx)\n", round,
                                (unsigned long long)seed, (unsigned long long)round_seed);
                        world_done(&w);
                        return;
                }
                world_done(&w);
        }
        printf("# DETECT_SEED=0x%llx, 300 rounds\n", (unsigned long long)seed);
}

int main(void) {
        RUN(test_first_sync_then_idle);
        RUN(test_debounce_then_check);
        RUN(test_unchanged_burst_gets_two_quick_looks);
        RUN(test_quick_look_finds_late_commit);
        RUN(test_max_delay_caps_debounce);
        RUN(test_two_slow_commits);
        RUN(test_cycle_while_later_commit_in_flight);
        RUN(test_event_during_cycle_not_lost);
        RUN(test_follow_window_from_last_wal_write_then_idle);
        RUN(test_follow_ends_after_window);
        RUN(test_n_slow_commits);
        RUN(test_db_write_syncs_without_version_change);
        RUN(test_overflow_and_other_source_sync);
        RUN(test_request_sync_skips_debounce);
        RUN(test_identity_change_syncs);
        RUN(test_failed_cycle_retries_with_backoff);
        RUN(test_unreadable_database);
        RUN(test_same_error_is_no_change);
        RUN(test_poll);
        RUN(test_watch_fails_then_polls_and_recovers);
        RUN(test_poll_shorter_than_fallback);
        RUN(test_lost_watch_and_relink);
        RUN(test_unversioned);
        RUN(test_random_interleavings);
        return test_end();
}
