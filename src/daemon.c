/* The engine: one sync cycle at a time, hooks after it, and in watch mode
 * the loop that feeds inotify events, timers and cycles to the detection
 * state machine (detect.c) and does what it asks. */
#include "daemon.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "api.h"
#include "db.h"
#include "detect.h"
#include "hook.h"
#include "instance.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pglisten.h"
#include "sync.h"
#include "util.h"
#include "watch.h"
#include "webhook.h"

#define USEC_PER_MSEC   1000ULL
#define USEC_PER_SEC    1000000ULL
#define STOP_GRACE_USEC (2 * USEC_PER_SEC)
/* sd-event's default accuracy (250 ms) would add to every debounce. */
#define TIMER_ACCURACY_USEC (1 * USEC_PER_MSEC)

struct daemon {
        sd_event *event;
        struct config *config;
        const char *config_path;
        enum daemon_mode mode;
        struct hooks *hooks;
        struct jobs *jobs;
        struct metrics *metrics;

        /* Detection: the state machine, its one timer, the watch. */
        struct detect *detect;
        sd_event_source *detect_timer;
        struct watch *watch;
        struct pglisten *listen; /* driver = postgresql: instead of watch */
        char *real_path;         /* what db_path resolved to at the last watch */
        bool in_detect;          /* daemon_detect_run() is running */
        char watch_problem[300];
        struct db *db; /* driver = postgresql: the connection, kept between cycles */
        void *memo;    /* sqlite: sync's memo of the last cycle's connection */
        void (*free_memo)(void *memo);
        uint64_t memo_identity; /* of the database file it was made for */

        bool first_cycle_done;
        bool full_next; /* the next cycle renders every map (SIGHUP, SIGUSR1,
                         * the API, after a failure), not only the changed */
        bool ready_sent;
        bool stopping;
        bool sync_failing; /* the last cycle could not read the database */
        unsigned n_cycles;
        unsigned failures; /* --once: maps or database failed */

        char problem[512];
        char last_change[300];
        unsigned n_maps_failed;
        char shrink_held[256]; /* maps the shrink guard holds, for STATUS */
        int lock_fd;           /* the instance lock; -1: none */
        sd_event_source *pace; /* a map held for the next wall-clock second */
        bool force_shrink;     /* next sync publishes what the shrink guard holds */
        bool pacing;           /* this sync only completes a cycle the mtime rule held back */

        /* The control API: cycles are numbered (generation); one may be
         * asked for, to start at the next turn of the loop. */
        uint64_t generation;
        sd_event_source *sync_now, *sync_deadline;
        struct api *api;
        struct webhooks *webhooks;
};

static void daemon_sync(struct daemon *d);
static void daemon_detect_run(struct daemon *d);
static void daemon_detect_soon(struct daemon *d);
static void daemon_on_change(void *userdata, unsigned flags);

static void arm(struct daemon *d, sd_event_source **s, uint64_t usec_abs, sd_event_time_handler_t fn) {
        if (!*s) {
                if (sd_event_add_time(d->event, s, CLOCK_MONOTONIC, usec_abs, TIMER_ACCURACY_USEC, fn, d) < 0)
                        log_error("Could not arm a timer: %m");
                return;
        }
        sd_event_source_set_time(*s, usec_abs);
        sd_event_source_set_enabled(*s, SD_EVENT_ONESHOT);
}

static void disarm(sd_event_source *s) {
        if (s)
                sd_event_source_set_enabled(s, SD_EVENT_OFF);
}

/* STATUS= and the metrics file. */
static void daemon_update_status(struct daemon *d) {
        unsigned owed = jobs_owed(d->jobs);
        char held[300];

        if (d->listen)
                metrics_listening(d->metrics, pglisten_connected(d->listen), pglisten_n_connects(d->listen));
        if (d->config->metrics_file)
                metrics_write(d->metrics, d->config->metrics_file, owed);
        if (d->mode != DAEMON_WATCH)
                return;
        if (jobs_held(d->jobs, held + 2, sizeof(held) - 2) > 0)
                memcpy(held, "; ", 2);
        else
                held[0] = '\0';
        if (d->problem[0])
                notify_status("%s; serving the last maps; %u hooks owed%s%s%s", d->problem, owed, held,
                              d->watch_problem[0] ? "; " : "", d->watch_problem);
        else if (d->shrink_held[0])
                notify_status("%zu maps, %u failed; shrink guard holds %s (SIGUSR2 publishes); %s; %u hooks owed%s",
                              d->config->n_maps, d->n_maps_failed, d->shrink_held,
                              d->last_change[0] ? d->last_change : "no change since start", owed, held);
        else if (d->listen && !pglisten_connected(d->listen))
                notify_status("%zu maps, %u failed; %s; connecting to PostgreSQL for change notifications; %u hooks "
                              "owed%s",
                              d->config->n_maps, d->n_maps_failed,
                              d->last_change[0] ? d->last_change : "no change since start", owed, held);
        else
                notify_status("%zu maps, %u failed; %s; %u hooks owed%s%s%s", d->config->n_maps, d->n_maps_failed,
                              d->last_change[0] ? d->last_change : "no change since start", owed, held,
                              d->watch_problem[0] ? "; " : "", d->watch_problem);
}

static void daemon_set_problem(struct daemon *d, const char *msgid, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

static void daemon_set_problem(struct daemon *d, const char *msgid, const char *fmt, ...) {
        char buf[sizeof(d->problem)];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        /* Said once while it lasts, not at every retry. */
        if (!streq(buf, d->problem) || d->mode == DAEMON_ONCE)
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = msgid), "%s", buf);
        snprintf(d->problem, sizeof(d->problem), "%s", buf);
}

static void daemon_clear_problem(struct daemon *d) {
        /* Maps read, but no notification comes until LISTEN is back. */
        if (d->listen && !pglisten_connected(d->listen))
                return;
        if (d->problem[0])
                log_notice("database %s is available again", d->config->db_path);
        d->problem[0] = '\0';
}

static void daemon_maybe_done(struct daemon *d) {
        /* The hook processes, not the jobs: a hook whose section a SIGHUP
         * dropped still runs. */
        if (!d->first_cycle_done || hooks_running(d->hooks) > 0)
                return;
        if (d->mode == DAEMON_ONCE || d->stopping) {
                daemon_update_status(d);
                sd_event_exit(d->event, 0);
                return;
        }
        /* Status and metrics first: whoever READY=1 wakes finds them current. */
        daemon_update_status(d);
        if (!d->ready_sent) {
                d->ready_sent = true;
                notify_ready();
                if (d->watch_problem[0])
                        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_STARTED), "ready: %s", d->watch_problem);
                else
                        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_STARTED), "ready: watching %s",
                                   d->config->db_path);
        }
}

static void daemon_on_jobs_idle(void *userdata) {
        struct daemon *d = userdata;

        api_hooks_idle(d->api);
        daemon_maybe_done(d);
}

static void daemon_on_hook(void *userdata, const char *label, const struct hook_result *res) {
        struct daemon *d = userdata;

        api_hook_done(d->api, label, res);
}

static void daemon_note_changes(struct daemon *d, const struct sync_cycle *cy) {
        char when[32], names[256] = "";
        size_t n = 0;
        time_t t = time(NULL);
        struct tm tm;

        for (size_t i = 0; i < d->config->n_maps; i++) {
                if (cy->results[i].status != MAP_CHANGED)
                        continue;
                n += (size_t)snprintf(names + n, n < sizeof(names) ? sizeof(names) - n : 0, "%s%s", n ? " " : "",
                                      d->config->maps[i].name);
                if (n >= sizeof(names))
                        n = sizeof(names) - 1;
        }
        for (size_t i = 0; i < d->config->n_files; i++) {
                if (cy->set_results[i].status != MAP_CHANGED)
                        continue;
                n += (size_t)snprintf(names + n, n < sizeof(names) ? sizeof(names) - n : 0, "%s%s", n ? " " : "",
                                      d->config->files[i].name);
                if (n >= sizeof(names))
                        n = sizeof(names) - 1;
        }
        if (!names[0])
                return;
        localtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(d->last_change, sizeof(d->last_change), "last change %s (%s)", when, names);
}

/* The maps the shrink guard holds, for STATUS. */
static void daemon_note_shrink(struct daemon *d, const struct sync_cycle *cy) {
        size_t n = 0;

        d->shrink_held[0] = '\0';
        for (size_t i = 0; i < d->config->n_maps; i++) {
                if (!cy->results[i].shrink_held)
                        continue;
                n += (size_t)snprintf(d->shrink_held + n, n < sizeof(d->shrink_held) ? sizeof(d->shrink_held) - n : 0,
                                      "%s%s", n ? " " : "", d->config->maps[i].name);
                if (n >= sizeof(d->shrink_held))
                        n = sizeof(d->shrink_held) - 1;
        }
}

static int daemon_on_pace(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        d->pacing = true;
        daemon_sync(d);
        return 0;
}

/* A map held back by the mtime rule is replaced in the next wall-clock
 * second: at most 1 s later, which Dovecot's once-a-second check imposes
 * anyway. Changes until then are coalesced into that one replacement. */
static void daemon_schedule_pace(struct daemon *d) {
        uint64_t wall = now_usec(CLOCK_REALTIME);
        uint64_t delay = USEC_PER_SEC - wall % USEC_PER_SEC + 2 * USEC_PER_MSEC;

        arm(d, &d->pace, now_usec(CLOCK_MONOTONIC) + delay, daemon_on_pace);
}

/* One full cycle: snapshot, render, record owed hooks, replace, hooks. The
 * connection lives for the cycle only: held between cycles it would keep
 * the WAL's shared memory and a lock that stop the panel from changing the
 * journal mode. */
static void daemon_sync(struct daemon *d) {
        struct sync_cycle *cy = NULL;
        struct db *db = NULL;
        struct db_state st = {0};
        struct detect_reading rd;
        const char *msg = NULL;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        unsigned changed, failed = 0;
        bool sqlite = d->config->db_driver == DB_DRIVER_SQLITE;
        /* Startup, signals, the API, retries: every map. */
        bool only_changed = !d->full_next && d->first_cycle_done && d->mode == DAEMON_WATCH;
        int r = 0;

        disarm(d->pace);
        /* A cycle that only completes one the mtime rule held back keeps
         * its generation (API clients wait for it), unless a sync was
         * asked for meanwhile. */
        int enabled = SD_EVENT_OFF;
        if (d->sync_now)
                sd_event_source_get_enabled(d->sync_now, &enabled);
        if (!d->pacing || enabled != SD_EVENT_OFF) {
                disarm(d->sync_now);
                disarm(d->sync_deadline);
                d->generation++;
        }
        d->pacing = false;
        d->full_next = false;
        /* A directory mounted over or renamed: what is watched is not what
         * the path names any more. */
        if (d->watch && !watch_is_current(d->watch))
                daemon_on_change(d, WATCH_LOST);
        /* Read before the snapshot: a commit after it shows as a change. */
        if (sqlite)
                db_probe(d->config->db_path, &st);
        rd = (struct detect_reading){st.error, st.identity, st.version};
        if (d->detect)
                detect_cycle_started(d->detect, start, &rd);

        if (sqlite || !d->db)
                r = db_open_config(d->config, &db, &msg);
        else
                db = TAKE_PTR(d->db);
        if (r < 0)
                daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s unavailable: %s", d->config->db_path, msg);
        else {
                /* What sync learnt on the last connection to the same file. */
                if (sqlite && d->memo && d->memo_identity == st.identity && !st.error)
                        db_set_memo(db, TAKE_PTR(d->memo), d->free_memo);
                r = sync_render_flags(db, d->config,
                                      (d->mode == DAEMON_WATCH ? SYNC_PACE : 0) | (d->force_shrink ? SYNC_FORCE : 0) |
                                              (only_changed ? SYNC_ONLY_CHANGED : 0),
                                      &cy);
                d->force_shrink = false;
                if (r < 0)
                        daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s unreadable: %s", d->config->db_path,
                                           db_errmsg(db));
                else if (db_validate(db) < 0) {
                        /* Read without locks and changed meanwhile: nothing
                         * of it is used. */
                        log_info("database %s: %s", d->config->db_path, db_errmsg(db));
                        cy = sync_cycle_free(cy);
                        r = -ESTALE;
                }
        }
        if (db && sqlite) {
                if (d->memo && d->free_memo)
                        d->free_memo(d->memo);
                d->memo = db_take_memo(db, &d->free_memo);
                d->memo_identity = st.identity;
        }
        /* A PostgreSQL connection is kept (it holds nothing that blocks the
         * panel); but after a failure that is not "busy", a fresh one. */
        if (!sqlite && (r >= 0 || r == -EBUSY))
                d->db = TAKE_PTR(db);
        db = db_close(db);
        if (r < 0) {
                d->failures++;
                d->n_cycles++;
                /* At ERR once while it lasts (the problem itself is said
                 * once too); the retries' failures at DEBUG. */
                if (r != -ESTALE)
                        log_submit(d->sync_failing ? LOG_DEBUG : LOG_ERR, LOG_FIELDS(.message_id = MSGID_SYNC_FAILED),
                                   "sync failed: kept every map as it was");
                d->sync_failing = r != -ESTALE || d->sync_failing;
                metrics_cycle(d->metrics, d->config, NULL, now_usec(CLOCK_MONOTONIC) - start);
                api_cycle_end(d->api, d->generation, NULL);
                goto done;
        }
        daemon_clear_problem(d);
        d->sync_failing = false;

        jobs_prepare(d->jobs, cy);
        cy->report_all = !d->first_cycle_done;
        sync_commit(cy);
        jobs_commit(d->jobs, cy);
        changed = sync_count(cy, MAP_CHANGED);
        failed = sync_count(cy, MAP_FAILED);
        d->n_maps_failed = failed;
        d->failures += failed;
        d->n_cycles++;
        daemon_note_changes(d, cy);
        daemon_note_shrink(d, cy);
        if (sync_count(cy, MAP_DEFERRED) > 0) {
                /* A forced cycle stays forced for the maps it held back. */
                d->force_shrink = (cy->flags & SYNC_FORCE) != 0;
                daemon_schedule_pace(d);
        }
        log_submit(changed || failed ? LOG_INFO : LOG_DEBUG,
                   LOG_FIELDS(.message_id = failed ? MSGID_SYNC_FAILED : MSGID_SYNC_DONE,
                              .duration_ms = (int64_t)elapsed_ms(start)),
                   "sync: %u changed, %zu unchanged, %u failed in %llu ms", changed,
                   d->config->n_maps + d->config->n_files - changed - failed, failed,
                   (unsigned long long)elapsed_ms(start));
        metrics_cycle(d->metrics, d->config, cy, now_usec(CLOCK_MONOTONIC) - start);
        api_cycle_end(d->api, d->generation, cy);
        webhooks_cycle(d->webhooks, d->generation, cy);
        sync_cycle_free(cy);
done:
        /* A failed cycle (database busy, corrupt, missing; a map not
         * written) is tried again with a backoff, without waiting for
         * another change. */
        if (d->detect)
                detect_cycle_done(d->detect, now_usec(CLOCK_MONOTONIC), r >= 0 && failed == 0);
        if (r < 0 || failed > 0)
                d->full_next = true;
        d->first_cycle_done = true;
        jobs_kick(d->jobs);
        daemon_update_status(d);
        /* Run from another source (the API, the mtime pacing): the cycle
         * changed what detection waits for. */
        if (d->detect && !d->in_detect)
                daemon_detect_soon(d);
}

/* Resolves the database's path again and watches what it names now. */
static void daemon_rewatch(struct daemon *d) {
        int r;

        d->watch = watch_free(d->watch);
        if (d->config->db_driver != DB_DRIVER_SQLITE) {
                detect_watch_result(d->detect, now_usec(CLOCK_MONOTONIC), 0); /* LISTEN instead */
                return;
        }
        r = watch_new(d->event, d->config->db_path, daemon_on_change, d, &d->watch);
        if (r >= 0) {
                const char *real = watch_real_path(d->watch);
                if (!d->real_path || !streq(real, d->real_path)) {
                        if (!streq(real, d->config->db_path))
                                log_info("database %s is %s; watching its directory and %zu symlinks",
                                         d->config->db_path, real, watch_n_links(d->watch));
                        free(d->real_path);
                        d->real_path = strdup(real);
                }
        }
        detect_watch_result(d->detect, now_usec(CLOCK_MONOTONIC), r);
}

/* The detection problem (no watch), said once when it starts and once when
 * it ends. */
static void daemon_report_watch(struct daemon *d) {
        int err = 0;

        if (detect_problem(d->detect, &err) == DETECT_WATCH_FAILED) {
                snprintf(d->watch_problem, sizeof(d->watch_problem), "cannot watch %s (%s): polling it every %llu s",
                         d->config->db_path, strerror(-err),
                         (unsigned long long)(detect_poll_usec(d->detect) / USEC_PER_SEC));
                log_submit(LOG_WARNING, LOG_FIELDS(.message_id = MSGID_DB_UNAVAILABLE), "%s; watching again later",
                           d->watch_problem);
        } else if (d->watch_problem[0]) {
                d->watch_problem[0] = '\0';
                log_notice("watching %s again", d->config->db_path);
        }
        daemon_update_status(d);
}

static int daemon_on_detect_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* Does what detection asks until it is idle, then arms its timer. */
static void daemon_detect_run(struct daemon *d) {
        uint64_t next;

        if (!d->detect || d->in_detect)
                return;
        d->in_detect = true;
        while (!d->stopping) {
                uint64_t now = now_usec(CLOCK_MONOTONIC);
                enum detect_action a = detect_next(d->detect, now);
                struct db_state st;
                struct detect_reading rd;

                if (a == DETECT_IDLE)
                        break;
                switch (a) {
                case DETECT_CHECK: /* never asked for when unversioned (PostgreSQL) */
                        if (d->watch && !watch_is_current(d->watch))
                                daemon_on_change(d, WATCH_LOST);
                        db_probe(d->config->db_path, &st);
                        rd = (struct detect_reading){st.error, st.identity, st.version};
                        detect_checked(d->detect, now, &rd);
                        break;
                case DETECT_SYNC:
                        daemon_sync(d);
                        break;
                case DETECT_REWATCH:
                        daemon_rewatch(d);
                        break;
                case DETECT_REPORT:
                        daemon_report_watch(d);
                        break;
                case DETECT_IDLE:
                        break;
                }
        }
        d->in_detect = false;
        next = d->stopping ? DETECT_NEVER : detect_wakeup(d->detect);
        if (next == DETECT_NEVER)
                disarm(d->detect_timer);
        else
                arm(d, &d->detect_timer, next, daemon_on_detect_timer);
}

static int daemon_on_detect_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        detect_timer_expired(d->detect, now_usec(CLOCK_MONOTONIC));
        daemon_detect_run(d);
        return 0;
}

/* Only recorded here; the work is done from the timer, outside the inotify
 * dispatch (a rewatch frees the sources being dispatched). */
static void daemon_detect_soon(struct daemon *d) {
        uint64_t next = detect_wakeup(d->detect);

        if (next != DETECT_NEVER && !d->stopping)
                arm(d, &d->detect_timer, next, daemon_on_detect_timer);
}

static void daemon_on_change(void *userdata, unsigned flags) {
        struct daemon *d = userdata;
        unsigned ev = DETECT_EV_FILE;

        if (flags & WATCH_WAL_WRITE)
                ev |= DETECT_EV_WAL_WRITE;
        if (flags & WATCH_DB_WRITE)
                ev |= DETECT_EV_DB_WRITE;
        if (flags & WATCH_OVERFLOW)
                ev |= DETECT_EV_OVERFLOW;
        if (flags & WATCH_LOST)
                ev |= DETECT_EV_LOST;
        if (flags & WATCH_RELINK)
                ev |= DETECT_EV_RELINK;
        detect_event(d->detect, now_usec(CLOCK_MONOTONIC), ev);
        daemon_detect_soon(d);
}

/* Another source says the data changed: handled like a file event that no
 * version can confirm (debounced, then a sync). */
static void daemon_data_changed(struct daemon *d, const char *source) {
        if (!d->detect)
                return;
        log_submit(LOG_DEBUG, NULL, "%s: the data changed", source);
        detect_event(d->detect, now_usec(CLOCK_MONOTONIC), DETECT_EV_CHANGED);
        daemon_detect_soon(d);
}

/* Sync now, skipping the debounce (why is logged). */
static void daemon_sync_soon(struct daemon *d, const char *why) {
        if (!d->detect)
                return;
        log_info("%s: syncing now", why);
        d->full_next = true;
        detect_request_sync(d->detect, now_usec(CLOCK_MONOTONIC));
        daemon_detect_soon(d);
}

/* PostgreSQL's change notifications: a NOTIFY is a change (debounced as
 * inotify events are); after every (re)connect a full sync, as what was
 * notified while nobody listened is lost. */
static void daemon_on_pglisten(void *userdata, enum pglisten_event event, const char *detail) {
        struct daemon *d = userdata;

        switch (event) {
        case PGLISTEN_CONNECTED:
                log_info("PostgreSQL: listening on channel %s (%s)", d->config->pg_channel,
                         pglisten_n_connects(d->listen) > 1 ? "reconnected; syncing" : "connected");
                if (d->stopping)
                        return;
                detect_request_sync(d->detect, now_usec(CLOCK_MONOTONIC));
                daemon_detect_soon(d);
                break;
        case PGLISTEN_NOTIFIED:
                log_debug("PostgreSQL: notification on %s (%s)", d->config->pg_channel, detail);
                daemon_data_changed(d, "PostgreSQL");
                break;
        case PGLISTEN_LOST:
                daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s: no change notifications: %s; reconnecting",
                                   d->config->db_path, detail);
                daemon_update_status(d);
                break;
        }
}

static int daemon_listen(struct daemon *d) {
        const struct config *c = d->config;
        int r = pglisten_new(d->event, c->pg_conninfo, c->pg_passfile, c->pg_channel, daemon_on_pglisten, d,
                             &d->listen);

        if (r < 0)
                log_error("Could not listen for PostgreSQL notifications: %s", strerror(-r));
        return r;
}

static bool same_database(const struct config *a, const struct config *b) {
        if (a->db_driver != b->db_driver || !streq(a->db_path, b->db_path) || a->busy_timeout_ms != b->busy_timeout_ms)
                return false;
        if (a->db_driver == DB_DRIVER_SQLITE)
                return true;
        return streq(a->pg_conninfo, b->pg_conninfo) && streq(a->pg_channel, b->pg_channel) &&
               (a->pg_passfile == b->pg_passfile ||
                (a->pg_passfile && b->pg_passfile && streq(a->pg_passfile, b->pg_passfile)));
}

static struct detect_config daemon_detect_config(const struct config *c) {
        return (struct detect_config){
                .debounce_usec = c->debounce_ms * USEC_PER_MSEC,
                .max_delay_usec = c->max_delay_ms * USEC_PER_MSEC,
                .poll_usec = c->poll_interval_s * USEC_PER_SEC,
                /* Nothing like the file's version to compare: every look syncs. */
                .unversioned = c->db_driver != DB_DRIVER_SQLITE,
        };
}

static int daemon_on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;
        struct config_errors errors = {};
        struct config *nc = NULL, *old = d->config;
        int r;

        if (d->stopping)
                return 0;
        notify_reloading();
        log_info("reloading configuration %s", d->config_path);
        r = config_load(d->config_path, &nc, &errors);
        for (size_t i = 0; i < errors.n_msgs; i++)
                log_error("%s", errors.msgs[i]);
        config_errors_done(&errors);
        if (r >= 0)
                r = jobs_set_config(d->jobs, nc);
        if (r < 0) {
                config_free(nc);
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_CONFIG_IGNORED),
                           "configuration %s has errors (%s): ignored; still running the previous one", d->config_path,
                           r == -ENOMEM ? "out of memory" : "see above");
                notify_ready();
                daemon_update_status(d);
                return 0;
        }
        if ((d->webhooks || nc->n_webhooks > 0) &&
            (d->webhooks ? webhooks_set_config(d->webhooks, nc) : webhooks_new(d->event, nc, &d->webhooks)) < 0)
                log_warning("webhooks: out of memory adopting the new configuration");
        if (d->api && api_set_config(d->api, nc) < 0) {
                /* Reported as the maps of the old config until the next reload. */
                log_warning("api: out of memory adopting the new configuration");
        }
        if ((old->api.line == 0) != (nc->api.line == 0) || (old->api.line && !streq(old->api.listen, nc->api.listen)))
                log_warning("[api] listen takes effect at the next start, not at a reload");
        d->config = nc;
        struct detect_config dc = daemon_detect_config(nc);
        detect_set_config(d->detect, &dc, now_usec(CLOCK_MONOTONIC));
        if (!same_database(old, nc)) {
                d->db = db_close(d->db);
                d->watch = watch_free(d->watch);
                d->listen = pglisten_free(d->listen);
                d->problem[0] = '\0';
                if (nc->db_driver != DB_DRIVER_SQLITE)
                        (void)daemon_listen(d);
                else
                        daemon_rewatch(d);
        }
        config_free(old);
        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_CONFIG_RELOADED), "configuration %s reloaded: %zu maps",
                   d->config_path, nc->n_maps);
        d->full_next = true;
        detect_request_sync(d->detect, now_usec(CLOCK_MONOTONIC));
        daemon_detect_run(d);
        notify_ready();
        return 0;
}

static int daemon_on_sync_now(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        d->full_next = true;
        daemon_sync(d);
        return 0;
}

/* A forced cycle, skipping the debounce: SYNC_GATHER_USEC after the first
 * request, once the loop has nothing else to do (requests read in the
 * meantime share it), and within SYNC_NOW_MAX_USEC whatever else comes in.
 * Its generation goes to *ret. */
#define SYNC_GATHER_USEC  (2 * USEC_PER_MSEC)
#define SYNC_NOW_MAX_USEC (20 * USEC_PER_MSEC)
static int daemon_request_sync(void *userdata, uint64_t *ret) {
        struct daemon *d = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        int enabled = SD_EVENT_OFF, r;

        if (d->stopping)
                return -ESHUTDOWN;
        if (!d->sync_now) {
                r = sd_event_add_time(d->event, &d->sync_now, CLOCK_MONOTONIC, now + SYNC_GATHER_USEC, 0,
                                      daemon_on_sync_now, d);
                if (r >= 0)
                        r = sd_event_source_set_priority(d->sync_now, SD_EVENT_PRIORITY_IDLE);
                if (r < 0)
                        return r;
                arm(d, &d->sync_deadline, now + SYNC_NOW_MAX_USEC, daemon_on_sync_now);
        } else if (sd_event_source_get_enabled(d->sync_now, &enabled) >= 0 && enabled == SD_EVENT_OFF) {
                sd_event_source_set_time(d->sync_now, now + SYNC_GATHER_USEC);
                sd_event_source_set_enabled(d->sync_now, SD_EVENT_ONESHOT);
                arm(d, &d->sync_deadline, now + SYNC_NOW_MAX_USEC, daemon_on_sync_now);
        }
        *ret = d->generation + 1;
        return 0;
}

static enum api_state daemon_api_state(void *userdata) {
        struct daemon *d = userdata;
        int due = SD_EVENT_OFF;

        if (d->problem[0])
                return API_STATE_DB_UNAVAILABLE;
        if (d->sync_now && sd_event_source_get_enabled(d->sync_now, &due) < 0)
                due = SD_EVENT_OFF;
        if (due != SD_EVENT_OFF || jobs_running(d->jobs) > 0)
                return API_STATE_SYNCING;
        if (d->n_maps_failed > 0 || jobs_owed(d->jobs) > 0)
                return API_STATE_RETRYING;
        return API_STATE_IDLE;
}

static unsigned daemon_api_hooks_owed(void *userdata) {
        struct daemon *d = userdata;

        return jobs_owed(d->jobs);
}

static const struct api_ops daemon_api_ops = {
        .request_sync = daemon_request_sync,
        .state = daemon_api_state,
        .hooks_owed = daemon_api_hooks_owed,
};

/* The API when [api] asks for it, on the socket systemd passed if any. */
static int daemon_setup_api(struct daemon *d) {
        int n = sd_listen_fds(true), fd = -1;

        if (n < 0) {
                log_warning("Could not take the sockets passed by systemd: %s", strerror(-n));
                n = 0;
        }
        if (n > 0) {
                fd = SD_LISTEN_FDS_START;
                if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
                        log_error("the socket passed by systemd is not a listening AF_UNIX stream socket");
                        return -EINVAL;
                }
                for (int i = 1; i < n; i++)
                        close(SD_LISTEN_FDS_START + i);
                if (n > 1)
                        log_warning("systemd passed %d sockets; using the first", n);
        }
        if (!d->config->api.line) {
                if (fd >= 0) {
                        log_warning("systemd passed a socket but the configuration has no [api] section: no API");
                        close(fd);
                }
                return 0;
        }
        return api_new(d->event, d->config, fd, &daemon_api_ops, d, &d->api);
}

static int daemon_on_sigusr1(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;

        if (d->stopping)
                return 0;
        daemon_sync_soon(d, "SIGUSR1");
        return 0;
}

static int daemon_on_sigusr2(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;

        if (d->stopping)
                return 0;
        log_notice("SIGUSR2: publishing what the shrink guard holds");
        d->force_shrink = true;
        daemon_sync_soon(d, "SIGUSR2");
        return 0;
}

static int daemon_on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;

        if (d->stopping) {
                /* The second: the hooks get SIGTERM, SIGKILL after the
                 * grace, and the loop ends when they have. */
                log_notice("%s again: stopping running hooks", strsignal((int)si->ssi_signo));
                hooks_terminate(d->hooks, STOP_GRACE_USEC);
                return 0;
        }
        d->stopping = true;
        notify_stopping();
        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_STOPPING), "%s: stopping%s", strsignal((int)si->ssi_signo),
                   hooks_running(d->hooks) ? " once the running hook has ended" : "");
        /* Nothing starts any more: no cycle (timers, the mtime rule's
         * pacing, inotify), no hook.
         * Only the running hooks' completion is served. */
        disarm(d->detect_timer);
        disarm(d->sync_now);
        disarm(d->sync_deadline);
        disarm(d->pace);
        d->watch = watch_free(d->watch);
        d->listen = pglisten_free(d->listen);
        jobs_hold(d->jobs, true);
        d->first_cycle_done = true;
        daemon_maybe_done(d);
        return 0;
}

static struct daemon *daemon_free(struct daemon *d) {
        if (!d)
                return NULL;
        d->api = api_free(d->api);
        d->webhooks = webhooks_free(d->webhooks);
        sd_event_source_disable_unref(d->sync_now);
        sd_event_source_disable_unref(d->sync_deadline);
        sd_event_source_disable_unref(d->pace);
        d->jobs = jobs_free(d->jobs);
        d->hooks = hooks_free(d->hooks);
        metrics_free(d->metrics);
        watch_free(d->watch);
        sd_event_source_disable_unref(d->detect_timer);
        detect_free(d->detect);
        free(d->real_path);
        pglisten_free(d->listen);
        db_close(d->db);
        if (d->memo && d->free_memo)
                d->free_memo(d->memo);
        config_free(d->config);
        sd_event_unref(d->event);
        if (d->lock_fd >= 0)
                close(d->lock_fd);
        free(d);
        return NULL;
}

static int daemon_setup(struct daemon *d) {
        int r;

        r = sd_event_new(&d->event);
        if (r < 0)
                return r;
        r = hooks_new(d->event, &d->hooks);
        if (r < 0)
                return r;
        r = jobs_new(d->event, d->hooks, d->config, d->mode == DAEMON_WATCH, daemon_on_jobs_idle, d, &d->jobs);
        if (r < 0)
                return r;
        r = metrics_new(&d->metrics);
        if (r < 0)
                return r;
        jobs_set_metrics(d->jobs, d->metrics);
        jobs_set_hook_observer(d->jobs, daemon_on_hook, d);
        r = sd_event_add_signal(d->event, NULL, SIGTERM, daemon_on_sigterm, d);
        if (r >= 0)
                r = sd_event_add_signal(d->event, NULL, SIGINT, daemon_on_sigterm, d);
        if (r < 0)
                return r;
        if (d->mode != DAEMON_WATCH)
                return 0;

        r = sd_event_add_signal(d->event, NULL, SIGHUP, daemon_on_sighup, d);
        if (r >= 0)
                r = sd_event_add_signal(d->event, NULL, SIGUSR1, daemon_on_sigusr1, d);
        if (r >= 0)
                r = sd_event_add_signal(d->event, NULL, SIGUSR2, daemon_on_sigusr2, d);
        if (r < 0)
                return r;
        /* Pings WATCHDOG=1 when the service manager asks for it. */
        r = sd_event_set_watchdog(d->event, true);
        if (r < 0)
                return r;
        struct detect_config dc = daemon_detect_config(d->config);
        d->detect = detect_new(&dc, now_usec(CLOCK_MONOTONIC));
        if (!d->detect)
                return -ENOMEM;
        r = daemon_setup_api(d);
        if (r < 0)
                return r;
        if (d->config->n_webhooks > 0) {
                r = webhooks_new(d->event, d->config, &d->webhooks);
                if (r < 0)
                        return r;
        }
        if (d->config->db_driver != DB_DRIVER_SQLITE) {
                r = daemon_listen(d);
                if (r < 0)
                        return r;
        } else
                daemon_rewatch(d);
        return 0;
}

int daemon_run(struct config *config, const char *config_path, enum daemon_mode mode) {
        return daemon_run_forced(config, config_path, mode, false);
}

int daemon_run_forced(struct config *config, const char *config_path, enum daemon_mode mode, bool force_shrink) {
        struct daemon *d;
        sigset_t mask;
        int r, status;

        d = calloc(1, sizeof(*d));
        if (!d) {
                config_free(config);
                log_error("Could not start: out of memory");
                return 1;
        }
        d->config = config;
        d->config_path = config_path;
        d->mode = mode;
        d->force_shrink = force_shrink;
        /* Before anything is written: one instance per state, and only then
         * the leftovers of earlier runs are surely not another's work. */
        d->lock_fd = instance_lock(config);
        if (d->lock_fd == -EBUSY || d->lock_fd == -ENOMEM) {
                daemon_free(d);
                return 1;
        }
        if (d->lock_fd >= 0)
                instance_sweep(config);

        /* Blocked before any source exists: sd-event takes them through
         * signalfd, and a signal in between is not lost. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGUSR1);
        sigaddset(&mask, SIGUSR2);
        sigprocmask(SIG_BLOCK, &mask, NULL);

        r = daemon_setup(d);
        if (r < 0) {
                log_error("Could not start: %s", strerror(-r));
                daemon_free(d);
                return 1;
        }
        if (mode == DAEMON_WATCH)
                log_info("mapsyncd starting: %zu maps from %s", d->config->n_maps, d->config->db_path);

        jobs_load(d->jobs);
        if (d->detect)
                daemon_detect_run(d); /* its first action is the first sync */
        else
                daemon_sync(d);

        r = sd_event_loop(d->event);
        if (r < 0)
                log_error("Event loop failed: %s", strerror(-r));
        if (mode == DAEMON_ONCE)
                status = r < 0 || d->failures > 0 || jobs_failures(d->jobs) > 0 ? 1 : 0;
        else
                status = r < 0 ? 1 : 0;
        daemon_free(d);
        return status;
}
