/* The engine: one sync cycle at a time, hooks after it, and in watch mode
 * the loop that turns inotify events into cycles. */
#include "daemon.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <time.h>

#include "api.h"
#include "db.h"
#include "hook.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "pglisten.h"
#include "sync.h"
#include "util.h"
#include "watch.h"
#include "webhook.h"

#define USEC_PER_MSEC 1000ULL
#define USEC_PER_SEC  1000000ULL
/* After a burst whose data_version showed nothing new, look again: a WAL
 * writer's last event (IN_MODIFY on -wal) comes before its commit is
 * visible, which takes its fsync and a wal-index update in -shm that raises
 * no event. A burst with -wal writes is followed until the commit shows, up
 * to RECHECK_WAL_MAX_USEC (a slow disk); any other burst (readers closing
 * the files) gets the first two looks only. */
static const uint64_t recheck_usec[] = {20 * USEC_PER_MSEC, 200 * USEC_PER_MSEC, 1 * USEC_PER_SEC, 2 * USEC_PER_SEC,
                                        5 * USEC_PER_SEC};
#define RECHECK_SHORT        2
#define RECHECK_WAL_MAX_USEC (120 * USEC_PER_SEC)
#define RETRY_SYNC_MIN_USEC  (1 * USEC_PER_SEC)
#define RETRY_SYNC_MAX_USEC  (60 * USEC_PER_SEC)
#define REWATCH_USEC         (2 * USEC_PER_SEC)
#define STOP_GRACE_USEC      (2 * USEC_PER_SEC)
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

        struct db *db;
        dev_t db_dev;
        ino_t db_ino;
        int64_t data_version;

        struct watch *watch;
        struct pglisten *listen; /* driver = postgresql: instead of watch */
        sd_event_source *debounce;
        sd_event_source *recheck;
        sd_event_source *retry_sync;
        sd_event_source *rewatch;
        sd_event_source *poll;
        uint64_t burst_start; /* 0: no burst pending */
        unsigned n_rechecks;
        bool wal_written;        /* the pending burst wrote -wal */
        uint64_t wal_written_at; /* when that burst began */
        bool force;              /* next check syncs without asking data_version */
        unsigned n_sync_failures;

        bool first_cycle_done;
        bool ready_sent;
        bool stopping;
        unsigned n_cycles;
        unsigned failures; /* --once: maps or database failed */

        char problem[512];
        char last_change[300];
        unsigned n_maps_failed;

        /* The control API: cycles are numbered (generation); one may be
         * asked for, to start at the next turn of the loop. */
        uint64_t generation;
        sd_event_source *sync_now, *sync_deadline;
        struct api *api;
        struct webhooks *webhooks;
};

static void daemon_sync(struct daemon *d);
static int daemon_on_recheck(sd_event_source *s, uint64_t usec, void *userdata);

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

        if (d->listen)
                metrics_listening(d->metrics, pglisten_connected(d->listen), pglisten_n_connects(d->listen));
        if (d->config->metrics_file)
                metrics_write(d->metrics, d->config->metrics_file, owed);
        if (d->mode != DAEMON_WATCH)
                return;
        if (d->problem[0])
                notify_status("%s; serving the last maps; %u hooks owed", d->problem, owed);
        else if (d->listen && !pglisten_connected(d->listen))
                notify_status("%zu maps, %u failed; %s; connecting to PostgreSQL for change notifications; %u hooks "
                              "owed",
                              d->config->n_maps, d->n_maps_failed,
                              d->last_change[0] ? d->last_change : "no change since start", owed);
        else
                notify_status("%zu maps, %u failed; %s; %u hooks owed", d->config->n_maps, d->n_maps_failed,
                              d->last_change[0] ? d->last_change : "no change since start", owed);
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
        if (!d->first_cycle_done || jobs_running(d->jobs) > 0)
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
                log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_STARTED), "ready: watching %s", d->config->db_path);
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

/* Whether the file at the database's path is no longer the one open. */
static bool daemon_db_replaced(struct daemon *d) {
        struct stat st;

        if (!d->db)
                return true;
        if (d->config->db_driver != DB_DRIVER_SQLITE)
                return false; /* a connection, not a file */
        if (stat(d->config->db_path, &st) < 0)
                return true;
        return st.st_dev != d->db_dev || st.st_ino != d->db_ino || db_has_moved(d->db);
}

static int daemon_open_db(struct daemon *d) {
        const char *msg = NULL;
        struct stat st;
        int r;

        if (d->db && daemon_db_replaced(d)) {
                log_info("database %s was replaced; reopening it", d->config->db_path);
                d->db = db_close(d->db);
        }
        if (d->db)
                return 0;
        r = db_open_config(d->config, &d->db, &msg);
        if (r < 0) {
                daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s unavailable: %s", d->config->db_path, msg);
                return r;
        }
        if (stat(d->config->db_path, &st) == 0) {
                d->db_dev = st.st_dev;
                d->db_ino = st.st_ino;
        }
        return 0;
}

static int daemon_on_retry_sync(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        d->force = true;
        daemon_sync(d);
        return 0;
}

/* A failed cycle (database busy, corrupt, missing; a map not written) is
 * tried again with a backoff, without waiting for another change. */
static void daemon_schedule_retry(struct daemon *d) {
        uint64_t delay;

        if (d->mode != DAEMON_WATCH)
                return;
        d->n_sync_failures++;
        delay = RETRY_SYNC_MIN_USEC << (d->n_sync_failures - 1 < 10 ? d->n_sync_failures - 1 : 10);
        if (delay > RETRY_SYNC_MAX_USEC)
                delay = RETRY_SYNC_MAX_USEC;
        arm(d, &d->retry_sync, now_usec(CLOCK_MONOTONIC) + delay, daemon_on_retry_sync);
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

/* One full cycle: snapshot, render, record owed hooks, replace, hooks. */
static void daemon_sync(struct daemon *d) {
        struct sync_cycle *cy = NULL;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        unsigned changed, failed;
        /* Startup, signals, retries, lost events: every map. */
        enum sync_scope scope = d->force || d->mode != DAEMON_WATCH ? SYNC_FULL : SYNC_CHANGED;
        int r;

        disarm(d->debounce);
        disarm(d->recheck);
        disarm(d->retry_sync);
        disarm(d->sync_now);
        disarm(d->sync_deadline);
        d->generation++;
        d->burst_start = 0;
        d->force = false;
        d->wal_written = false;
        d->n_rechecks = 0;

        r = daemon_open_db(d);
        if (r >= 0)
                r = db_data_version(d->db, &d->data_version);
        if (r >= 0) {
                r = sync_render_scope(d->db, d->config, false, scope, &cy);
                if (r < 0)
                        daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s unreadable: %s", d->config->db_path,
                                           db_errmsg(d->db));
        } else if (d->db)
                daemon_set_problem(d, MSGID_DB_UNAVAILABLE, "database %s unreadable: %s", d->config->db_path,
                                   db_errmsg(d->db));
        if (r < 0) {
                /* Corrupt or replaced under us: start from a fresh open. */
                if (r != -EBUSY)
                        d->db = db_close(d->db);
                d->failures++;
                d->n_cycles++;
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_SYNC_FAILED),
                           "sync failed: kept every map as it was");
                metrics_cycle(d->metrics, d->config, NULL, now_usec(CLOCK_MONOTONIC) - start);
                daemon_schedule_retry(d);
                api_cycle_end(d->api, d->generation, NULL);
                goto done;
        }
        daemon_clear_problem(d);

        jobs_prepare(d->jobs, cy);
        cy->report_all = !d->first_cycle_done;
        sync_commit(cy);
        changed = sync_count(cy, MAP_CHANGED);
        failed = sync_count(cy, MAP_FAILED);
        d->n_maps_failed = failed;
        d->failures += failed;
        d->n_cycles++;
        daemon_note_changes(d, cy);
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
        if (failed)
                daemon_schedule_retry(d);
        else
                d->n_sync_failures = 0;
done:
        d->first_cycle_done = true;
        jobs_kick(d->jobs);
        daemon_update_status(d);
}

/* The debounce (or a recheck, or the poll) is over: sync if the database
 * really changed. */
static void daemon_check(struct daemon *d) {
        int64_t v;

        if (d->force || !d->db || daemon_db_replaced(d)) {
                daemon_sync(d);
                return;
        }
        if (db_data_version(d->db, &v) < 0 || v != d->data_version) {
                d->n_rechecks = 0;
                daemon_sync(d);
                return;
        }
        if (d->wal_written && now_usec(CLOCK_MONOTONIC) - d->wal_written_at < RECHECK_WAL_MAX_USEC) {
                unsigned k = d->n_rechecks < ARRAY_SIZE(recheck_usec) ? d->n_rechecks : ARRAY_SIZE(recheck_usec) - 1;
                arm(d, &d->recheck, now_usec(CLOCK_MONOTONIC) + recheck_usec[k], daemon_on_recheck);
                d->n_rechecks++;
        } else if (d->n_rechecks < RECHECK_SHORT) {
                arm(d, &d->recheck, now_usec(CLOCK_MONOTONIC) + recheck_usec[d->n_rechecks], daemon_on_recheck);
                d->n_rechecks++;
        } else {
                if (d->wal_written)
                        log_warning("-wal of %s was written %llu s ago and no commit became visible; looking "
                                    "again at the next change",
                                    d->config->db_path, (unsigned long long)(RECHECK_WAL_MAX_USEC / USEC_PER_SEC));
                d->wal_written = false;
        }
}

static int daemon_on_debounce(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        d->burst_start = 0;
        d->n_rechecks = 0;
        daemon_check(d);
        return 0;
}

static int daemon_on_recheck(sd_event_source *s, uint64_t usec, void *userdata) {
        daemon_check(userdata);
        return 0;
}

static void daemon_on_change(void *userdata, unsigned flags);

static int daemon_watch(struct daemon *d) {
        int r = watch_new(d->event, d->config->db_path, daemon_on_change, d, &d->watch);

        if (r < 0)
                log_error("Could not watch the directory of %s: %s; trying again every %llu s", d->config->db_path,
                          strerror(-r), (unsigned long long)(REWATCH_USEC / USEC_PER_SEC));
        return r;
}

static int daemon_on_rewatch(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        if (!d->watch && daemon_watch(d) < 0) {
                arm(d, &d->rewatch, now_usec(CLOCK_MONOTONIC) + REWATCH_USEC, daemon_on_rewatch);
                return 0;
        }
        /* What changed while nobody watched. */
        d->force = true;
        daemon_check(d);
        return 0;
}

static void daemon_on_change(void *userdata, unsigned flags) {
        struct daemon *d = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC), deadline;
        bool lost = flags & WATCH_LOST, overflow = flags & WATCH_OVERFLOW;

        if ((flags & WATCH_WAL_WRITE) && !d->wal_written) {
                d->wal_written = true;
                d->wal_written_at = now;
        }
        if (lost) {
                d->watch = watch_free(d->watch);
                arm(d, &d->rewatch, now + REWATCH_USEC, daemon_on_rewatch);
        }
        if (overflow || lost)
                d->force = true;
        if (d->burst_start == 0)
                d->burst_start = now;
        deadline = now + d->config->debounce_ms * USEC_PER_MSEC;
        if (deadline > d->burst_start + d->config->max_delay_ms * USEC_PER_MSEC)
                deadline = d->burst_start + d->config->max_delay_ms * USEC_PER_MSEC;
        disarm(d->recheck);
        arm(d, &d->debounce, deadline, daemon_on_debounce);
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
                d->force = true;
                if (d->stopping)
                        return;
                daemon_sync(d);
                break;
        case PGLISTEN_NOTIFIED:
                log_debug("PostgreSQL: notification on %s (%s)", d->config->pg_channel, detail);
                d->force = true;
                daemon_on_change(d, 0);
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

static int daemon_on_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        if (!d->wal_written)
                d->n_rechecks = RECHECK_SHORT; /* the poll itself comes again */
        if (d->config->db_driver != DB_DRIVER_SQLITE)
                d->force = true; /* nothing like data_version to ask */
        daemon_check(d);
        sd_event_source_set_time(s, usec + d->config->poll_interval_s * USEC_PER_SEC);
        sd_event_source_set_enabled(s, SD_EVENT_ON);
        return 0;
}

static void daemon_setup_poll(struct daemon *d) {
        d->poll = sd_event_source_disable_unref(d->poll);
        if (d->config->poll_interval_s > 0 &&
            sd_event_add_time_relative(d->event, &d->poll, CLOCK_MONOTONIC, d->config->poll_interval_s * USEC_PER_SEC,
                                       0, daemon_on_poll, d) >= 0)
                sd_event_source_set_enabled(d->poll, SD_EVENT_ON);
}

static int daemon_on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;
        struct config_errors errors = {};
        struct config *nc = NULL, *old = d->config;
        int r;

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
        if (!same_database(old, nc)) {
                d->db = db_close(d->db);
                d->watch = watch_free(d->watch);
                d->listen = pglisten_free(d->listen);
                disarm(d->rewatch);
                d->problem[0] = '\0';
                if (nc->db_driver != DB_DRIVER_SQLITE)
                        (void)daemon_listen(d);
                else if (daemon_watch(d) < 0)
                        arm(d, &d->rewatch, now_usec(CLOCK_MONOTONIC) + REWATCH_USEC, daemon_on_rewatch);
        }
        config_free(old);
        daemon_setup_poll(d);
        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_CONFIG_RELOADED), "configuration %s reloaded: %zu maps",
                   d->config_path, nc->n_maps);
        d->force = true;
        daemon_sync(d);
        notify_ready();
        return 0;
}

static int daemon_on_sync_now(sd_event_source *s, uint64_t usec, void *userdata) {
        struct daemon *d = userdata;

        d->force = true;
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

        log_info("SIGUSR1: syncing now");
        d->force = true;
        daemon_sync(d);
        return 0;
}

static int daemon_on_sigterm(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        struct daemon *d = userdata;

        if (d->stopping) {
                log_notice("%s again: stopping running hooks", strsignal((int)si->ssi_signo));
                hooks_terminate(d->hooks, STOP_GRACE_USEC);
                return 0;
        }
        d->stopping = true;
        notify_stopping();
        log_submit(LOG_INFO, LOG_FIELDS(.message_id = MSGID_STOPPING), "%s: stopping%s", strsignal((int)si->ssi_signo),
                   jobs_running(d->jobs) ? " once the running hook has ended" : "");
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
        d->jobs = jobs_free(d->jobs);
        d->hooks = hooks_free(d->hooks);
        metrics_free(d->metrics);
        watch_free(d->watch);
        pglisten_free(d->listen);
        sd_event_source_disable_unref(d->debounce);
        sd_event_source_disable_unref(d->recheck);
        sd_event_source_disable_unref(d->retry_sync);
        sd_event_source_disable_unref(d->rewatch);
        sd_event_source_disable_unref(d->poll);
        db_close(d->db);
        config_free(d->config);
        sd_event_unref(d->event);
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
        if (r < 0)
                return r;
        /* Pings WATCHDOG=1 when the service manager asks for it. */
        r = sd_event_set_watchdog(d->event, true);
        if (r < 0)
                return r;
        r = sd_event_add_time(d->event, &d->recheck, CLOCK_MONOTONIC, UINT64_MAX, TIMER_ACCURACY_USEC,
                              daemon_on_recheck, d);
        if (r < 0)
                return r;
        sd_event_source_set_enabled(d->recheck, SD_EVENT_OFF);
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
        } else if (daemon_watch(d) < 0)
                arm(d, &d->rewatch, now_usec(CLOCK_MONOTONIC) + REWATCH_USEC, daemon_on_rewatch);
        daemon_setup_poll(d);
        return 0;
}

int daemon_run(struct config *config, const char *config_path, enum daemon_mode mode) {
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

        /* Blocked before any source exists: sd-event takes them through
         * signalfd, and a signal in between is not lost. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGUSR1);
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
        d->force = true;
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
