/* Prometheus text-format metrics. */
#include "metrics.h"

#include <inttypes.h>
#include <time.h>

#include "log.h"
#include "replace.h"
#include "util.h"

struct metric_map {
        char *name;
        uint64_t rows, bytes, replacements;
        double last_change; /* unix time; 0: none since start */
        bool failed;
        bool shrink_held; /* failed by the shrink guard */
        bool present;     /* in the current config */
};

struct metric_hook {
        char *name;
        uint64_t runs, failures;
};

struct metrics {
        struct metric_map *maps;
        size_t n_maps;
        struct metric_hook *hooks;
        size_t n_hooks;
        uint64_t cycles, cycle_failures;
        double last_success; /* unix time */
        double last_duration;
        bool db_available;
        int db_listening; /* -1: not PostgreSQL */
        uint64_t db_reconnects;
};

int metrics_new(struct metrics **ret) {
        *ret = calloc(1, sizeof(**ret));
        if (!*ret)
                return -ENOMEM;
        (*ret)->db_listening = -1;
        return 0;
}

void metrics_listening(struct metrics *m, bool listening, uint64_t connects) {
        m->db_listening = listening;
        m->db_reconnects = connects > 0 ? connects - 1 : 0;
}

struct metrics *metrics_free(struct metrics *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_maps; i++)
                free(m->maps[i].name);
        for (size_t i = 0; i < m->n_hooks; i++)
                free(m->hooks[i].name);
        free(m->maps);
        free(m->hooks);
        free(m);
        return NULL;
}

static struct metric_map *map_get(struct metrics *m, const char *name) {
        struct metric_map *v;

        for (size_t i = 0; i < m->n_maps; i++)
                if (streq(m->maps[i].name, name))
                        return &m->maps[i];
        v = reallocarray(m->maps, m->n_maps + 1, sizeof(*v));
        if (!v)
                return NULL;
        m->maps = v;
        v = &v[m->n_maps];
        *v = (struct metric_map){.name = strdup(name)};
        if (!v->name)
                return NULL;
        m->n_maps++;
        return v;
}

static double unix_now(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_cycle(struct metrics *m, const struct config *c, const struct sync_cycle *cy, uint64_t duration_usec) {
        bool ok = cy != NULL;

        m->cycles++;
        m->db_available = cy != NULL;
        m->last_duration = (double)duration_usec / 1e6;
        for (size_t i = 0; i < m->n_maps; i++)
                m->maps[i].present = false;
        for (size_t i = 0; i < c->n_maps; i++) {
                struct metric_map *mm = map_get(m, c->maps[i].name);
                const struct map_result *res = cy ? &cy->results[i] : NULL;

                if (!mm)
                        continue;
                mm->present = true;
                if (!res)
                        continue;
                if (res->status == MAP_DEFERRED)
                        continue; /* replaced within a second, by the next cycle */
                mm->failed = res->status == MAP_FAILED;
                mm->shrink_held = res->shrink_held;
                ok &= !mm->failed;
                if (mm->failed)
                        continue;
                mm->rows = res->rows;
                mm->bytes = res->bytes;
                if (res->status == MAP_CHANGED) {
                        mm->replacements++;
                        mm->last_change = unix_now();
                }
        }
        /* File sets count as maps here: rows are their files. */
        for (size_t i = 0; i < c->n_files; i++) {
                struct metric_map *mm = map_get(m, c->files[i].name);
                const struct map_result *res = cy ? &cy->set_results[i] : NULL;

                if (!mm)
                        continue;
                mm->present = true;
                if (!res)
                        continue;
                mm->failed = res->status == MAP_FAILED;
                ok &= !mm->failed;
                if (mm->failed)
                        continue;
                mm->rows = res->rows;
                if (res->status == MAP_CHANGED) {
                        mm->replacements++;
                        mm->last_change = unix_now();
                }
        }
        if (ok)
                m->last_success = unix_now();
        else
                m->cycle_failures++;
}

void metrics_hook(struct metrics *m, const char *hook, bool succeeded) {
        struct metric_hook *h = NULL, *v;

        for (size_t i = 0; i < m->n_hooks && !h; i++)
                if (streq(m->hooks[i].name, hook))
                        h = &m->hooks[i];
        if (!h) {
                v = reallocarray(m->hooks, m->n_hooks + 1, sizeof(*v));
                if (!v)
                        return;
                m->hooks = v;
                h = &v[m->n_hooks];
                *h = (struct metric_hook){.name = strdup(hook)};
                if (!h->name)
                        return;
                m->n_hooks++;
        }
        h->runs++;
        h->failures += !succeeded;
}

#define HEADER(f, name, type, help) fprintf(f, "# HELP " name " " help "\n# TYPE " name " " type "\n")

static void write_text(struct metrics *m, FILE *f, unsigned hooks_owed) {
        HEADER(f, "mapsyncd_last_success_timestamp_seconds", "gauge",
               "Unix time of the last sync cycle in which every map succeeded.");
        fprintf(f, "mapsyncd_last_success_timestamp_seconds %.3f\n", m->last_success);
        HEADER(f, "mapsyncd_sync_duration_seconds", "gauge", "Duration of the last sync cycle.");
        fprintf(f, "mapsyncd_sync_duration_seconds %.6f\n", m->last_duration);
        HEADER(f, "mapsyncd_syncs_total", "counter", "Sync cycles run.");
        fprintf(f, "mapsyncd_syncs_total %" PRIu64 "\n", m->cycles);
        HEADER(f, "mapsyncd_sync_failures_total", "counter", "Sync cycles in which the database or a map failed.");
        fprintf(f, "mapsyncd_sync_failures_total %" PRIu64 "\n", m->cycle_failures);
        HEADER(f, "mapsyncd_database_available", "gauge", "1 when the last cycle could read the database.");
        fprintf(f, "mapsyncd_database_available %d\n", m->db_available);
        if (m->db_listening >= 0) {
                HEADER(f, "mapsyncd_database_listening", "gauge",
                       "1 while mapsyncd LISTENs for PostgreSQL's change notifications.");
                fprintf(f, "mapsyncd_database_listening %d\n", m->db_listening);
                HEADER(f, "mapsyncd_database_reconnects_total", "counter",
                       "Times the LISTEN connection to PostgreSQL was made again after the first.");
                fprintf(f, "mapsyncd_database_reconnects_total %" PRIu64 "\n", m->db_reconnects);
        }
        HEADER(f, "mapsyncd_hooks_owed", "gauge", "Hooks owed: not yet run, or failed and to be retried.");
        fprintf(f, "mapsyncd_hooks_owed %u\n", hooks_owed);

        HEADER(f, "mapsyncd_map_rows", "gauge", "Lines in the map file.");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_rows{map=\"%s\"} %" PRIu64 "\n", m->maps[i].name, m->maps[i].rows);
        HEADER(f, "mapsyncd_map_bytes", "gauge", "Size of the map file.");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_bytes{map=\"%s\"} %" PRIu64 "\n", m->maps[i].name, m->maps[i].bytes);
        HEADER(f, "mapsyncd_map_replacements_total", "counter", "Times the map file was replaced.");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_replacements_total{map=\"%s\"} %" PRIu64 "\n", m->maps[i].name,
                                m->maps[i].replacements);
        HEADER(f, "mapsyncd_map_last_change_timestamp_seconds", "gauge",
               "Unix time the map file was last replaced (0: not since start).");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_last_change_timestamp_seconds{map=\"%s\"} %.3f\n", m->maps[i].name,
                                m->maps[i].last_change);
        HEADER(f, "mapsyncd_map_failed", "gauge", "1 when the map failed in the last cycle.");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_failed{map=\"%s\"} %d\n", m->maps[i].name, m->maps[i].failed);
        HEADER(f, "mapsyncd_map_shrink_held", "gauge",
               "1 when the shrink guard held the map's new rendering back in the last cycle.");
        for (size_t i = 0; i < m->n_maps; i++)
                if (m->maps[i].present)
                        fprintf(f, "mapsyncd_map_shrink_held{map=\"%s\"} %d\n", m->maps[i].name,
                                m->maps[i].shrink_held);
        HEADER(f, "mapsyncd_hook_runs_total", "counter", "Hook runs.");
        for (size_t i = 0; i < m->n_hooks; i++)
                fprintf(f, "mapsyncd_hook_runs_total{hook=\"%s\"} %" PRIu64 "\n", m->hooks[i].name, m->hooks[i].runs);
        HEADER(f, "mapsyncd_hook_failures_total", "counter", "Hook runs that failed or timed out.");
        for (size_t i = 0; i < m->n_hooks; i++)
                fprintf(f, "mapsyncd_hook_failures_total{hook=\"%s\"} %" PRIu64 "\n", m->hooks[i].name,
                        m->hooks[i].failures);
}

int metrics_write(struct metrics *m, const char *path, unsigned hooks_owed) {
        /* Readable by the collector, which runs as another user. */
        struct replace_meta meta = {.mode = 0644, .uid = (uid_t)-1, .gid = (gid_t)-1};
        _cleanup_free_ char *text = NULL;
        const char *step = NULL;
        size_t len = 0;
        FILE *f;
        int r;

        f = open_memstream(&text, &len);
        if (!f)
                return -ENOMEM;
        write_text(m, f, hooks_owed);
        if (fclose(f) != 0)
                return -ENOMEM;
        r = replace_file(path, text, len, &meta, &step);
        if (r < 0)
                log_error("Could not write metrics_file %s (%s): %s", path, step, strerror(-r));
        return r < 0 ? r : 0;
}
