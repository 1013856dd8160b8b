/* The sync cycle: render from one snapshot, replace what changed. */
#include "sync.h"

#include <time.h>

#include "log.h"
#include "notify.h"
#include "render.h"
#include "util.h"

static void map_failed(struct sync_cycle *cy, size_t i) {
        cy->results[i].status = MAP_FAILED;
        cy->outputs[i] = output_free(cy->outputs[i]);
}

/* The shrink guard: a rendering with more than max_shrink percent fewer
 * lines than the file is held back (a table emptied by a bug or a bad
 * migration would bounce every address), unless SYNC_FORCE. A file of
 * fewer than max_shrink_min_lines lines is exempt. */
static bool shrink_guard(struct sync_cycle *cy, const struct map_config *m, struct map_result *res) {
        uint64_t old = res->old_lines, now = res->rows;

        if ((cy->flags & SYNC_FORCE) || m->max_shrink == 0 || old < m->max_shrink_min_lines || now >= old ||
            (old - now) * 100 <= (uint64_t)m->max_shrink * old)
                return false;
        res->shrink_held = true;
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                   "%s: the new rendering has %llu lines, %s has %llu: %llu%% fewer, more than max_shrink = %u%%; "
                   "kept it as it was (publish with mapsyncd --once --force, or SIGUSR2 to the daemon)",
                   m->name, (unsigned long long)now, m->output, (unsigned long long)old,
                   (unsigned long long)((old - now) * 100 / old), m->max_shrink);
        return true;
}

/* Renders map i into a new output. */
static void render_map(struct sync_cycle *cy, struct db *db, size_t i) {
        const struct map_config *m = &cy->config->maps[i];
        struct map_result *res = &cy->results[i];
        struct db_query *q = NULL;
        struct render *rd = &cy->renders[i];
        struct db_row row;
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        int r;

        r = output_new_checked(cy->config, m, cy->dry_run, &cy->outputs[i]);
        if (r < 0) {
                /* output.c said why, naming the file; not out of memory. */
                if (r == -ENOMEM)
                        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                                   "%s: Could not prepare %s: %s", m->name, m->output, strerror(-r));
                map_failed(cy, i);
                return;
        }
        r = db_query_new(db, m->query, &q);
        if (r < 0) {
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                           "%s: query failed: %s; kept %s as it was", m->name, db_errmsg(db), m->output);
                map_failed(cy, i);
                return;
        }

        render_init(rd, m, output_write, cy->outputs[i]);
        for (;;) {
                int k = db_query_next(q, &row);
                if (k < 0) {
                        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                                   "%s: query failed: %s; kept %s as it was", m->name, db_errmsg(db), m->output);
                        r = k;
                        break;
                }
                if (k == 0)
                        break;
                if ((rd->n_rows & 0xfff) == 0)
                        notify_watchdog_kick();
                r = render_row(rd, &row); /* a write error is logged by output */
                if (r < 0)
                        break;
        }
        if (r == 0)
                r = render_finish(rd);
        if (r == 0)
                r = output_finish(cy->outputs[i]);
        db_query_free(q);

        res->rows = rd->n_lines;
        res->invalid = rd->n_invalid;
        res->bytes = rd->n_bytes;
        res->duration_ms = elapsed_ms(start);

        if (r < 0) {
                map_failed(cy, i);
                return;
        }
        if (res->invalid > 0 && m->on_invalid == ON_INVALID_FAIL) {
                render_log(rd, LOG_ERR);
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                           "%s: %llu invalid rows and on_invalid = fail: kept %s as it was", m->name,
                           (unsigned long long)res->invalid, m->output);
                map_failed(cy, i);
                return;
        }
        snprintf(res->sha256, sizeof(res->sha256), "%s", output_sha256(cy->outputs[i]));
        res->status = output_changed(cy->outputs[i]) ? MAP_CHANGED : MAP_UNCHANGED;
        if (res->status != MAP_CHANGED)
                return;
        res->old_lines = output_old_lines(cy->outputs[i]);
        if (shrink_guard(cy, m, res)) {
                map_failed(cy, i);
                return;
        }
        if ((cy->flags & SYNC_PACE) && !cy->dry_run && output_needs_pacing(cy->outputs[i])) {
                log_submit(LOG_DEBUG, LOG_FIELDS(.map = m->name),
                           "%s: %s was replaced in this second already; replacing it in the next one (Dovecot "
                           "compares whole seconds)",
                           m->name, m->output);
                res->status = MAP_DEFERRED;
                res->sha256[0] = '\0';
                cy->outputs[i] = output_free(cy->outputs[i]);
        }
}

int sync_render(struct db *db, const struct config *c, bool dry_run, struct sync_cycle **ret) {
        return sync_render_flags(db, c, dry_run ? SYNC_DRY_RUN : 0, ret);
}

int sync_render_flags(struct db *db, const struct config *c, unsigned flags, struct sync_cycle **ret) {
        struct sync_cycle *cy;
        int r;

        cy = calloc(1, sizeof(*cy));
        if (!cy)
                return -ENOMEM;
        cy->config = c;
        cy->flags = flags;
        cy->dry_run = flags & SYNC_DRY_RUN;
        cy->outputs = calloc(c->n_maps, sizeof(*cy->outputs));
        cy->results = calloc(c->n_maps, sizeof(*cy->results));
        cy->renders = calloc(c->n_maps, sizeof(*cy->renders));
        if (!cy->outputs || !cy->results || !cy->renders) {
                sync_cycle_free(cy);
                return -ENOMEM;
        }

        db_set_limits(db, c->max_key_bytes, c->max_value_bytes);
        r = db_begin(db);
        if (r < 0) {
                sync_cycle_free(cy);
                return r;
        }
        for (size_t i = 0; i < c->n_maps; i++)
                render_map(cy, db, i);
        db_end(db);

        *ret = cy;
        return 0;
}

void sync_commit(struct sync_cycle *cy) {
        for (size_t i = 0; i < cy->config->n_maps; i++) {
                const struct map_config *m = &cy->config->maps[i];
                struct map_result *res = &cy->results[i];
                struct output *o = cy->outputs[i];
                uint64_t start = now_usec(CLOCK_MONOTONIC);

                if (res->status == MAP_FAILED || res->status == MAP_DEFERRED)
                        continue;
                render_log(&cy->renders[i], res->status == MAP_CHANGED || cy->report_all ? LOG_WARNING : LOG_DEBUG);
                if (cy->dry_run) {
                        if (res->status == MAP_CHANGED && output_diff(o, &res->added, &res->removed) < 0) {
                                log_error("%s: Could not compare with %s: out of memory", m->name, m->output);
                                res->status = MAP_FAILED;
                        }
                        continue;
                }
                if (output_commit(o) < 0) {
                        res->status = MAP_FAILED;
                        cy->outputs[i] = output_free(o);
                        continue;
                }
                res->duration_ms += elapsed_ms(start);
                if (res->status == MAP_CHANGED)
                        log_submit(LOG_INFO,
                                   LOG_FIELDS(.message_id = MSGID_MAP_REPLACED, .map = m->name, .sha256 = res->sha256,
                                              .rows = (int64_t)res->rows, .duration_ms = (int64_t)res->duration_ms),
                                   "%s: replaced %s: %llu rows, %llu bytes, sha256 %s", m->name, m->output,
                                   (unsigned long long)res->rows, (unsigned long long)res->bytes, res->sha256);
                else
                        log_submit(LOG_DEBUG, LOG_FIELDS(.map = m->name, .rows = (int64_t)res->rows),
                                   "%s: %s unchanged (%llu rows)", m->name, m->output, (unsigned long long)res->rows);
        }
}

struct sync_cycle *sync_cycle_free(struct sync_cycle *cy) {
        if (!cy)
                return NULL;
        if (cy->outputs)
                for (size_t i = 0; i < cy->config->n_maps; i++)
                        output_free(cy->outputs[i]);
        if (cy->renders)
                for (size_t i = 0; i < cy->config->n_maps; i++)
                        render_done(&cy->renders[i]);
        free(cy->outputs);
        free(cy->results);
        free(cy->renders);
        free(cy);
        return NULL;
}

unsigned sync_count(const struct sync_cycle *cy, enum map_status status) {
        unsigned n = 0;

        for (size_t i = 0; i < cy->config->n_maps; i++)
                n += cy->results[i].status == status;
        return n;
}
