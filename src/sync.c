/* The sync cycle: render from one snapshot, replace what changed. */
#include "sync.h"

#include <time.h>

#include "files.h"
#include "log.h"
#include "notify.h"
#include "order.h"
#include "render.h"
#include "util.h"
#include "wal.h"

/* Beyond this many pages written since the last cycle, every map is
 * rendered (the page list goes into one dbstat query). */
#define SYNC_MAX_CHANGED_PAGES 4096

/* Beyond this many frames in the WAL, written pages are not traced to
 * their tables by descent (the frame index would hold them all), only by
 * dbstat. */
#define SYNC_MAX_WAL_FRAMES 65536

/* What the cycles on one connection learnt about each map. */
struct sync_memo_map {
        char *name, *query, *output;
        enum map_format format;
        enum on_invalid on_invalid;
        unsigned stream_fails; /* cycles in a row whose rows broke the order */
        unsigned stream_skip;  /* cycles still to sort before streaming again */
        /* The file holds the rendering of the snapshot of memo->pos (the
         * map was rendered and committed then, or skipped since). */
        bool fresh;
        struct map_result last; /* of that rendering */
        bool tables_known;      /* the tables its query reads, exactly */
        char **tables;
        size_t n_tables;
};

struct sync_memo {
        bool utf8;
        /* The snapshot of the last committed cycle: its WAL position and
         * schema; have_pos only when the cycle's snapshot was pinned to a
         * WAL position (wal.h). */
        bool have_pos;
        struct wal_pos pos;
        struct wal_frames frames; /* where pages are in the -wal, kept across cycles */
        int64_t schema_version;
        size_t n_maps;
        struct sync_memo_map *maps;
};

static void memo_map_forget_tables(struct sync_memo_map *mm) {
        for (size_t i = 0; i < mm->n_tables; i++)
                free(mm->tables[i]);
        free(mm->tables);
        mm->tables = NULL;
        mm->n_tables = 0;
        mm->tables_known = false;
}

static void memo_free(void *p) {
        struct sync_memo *memo = p;

        if (!memo)
                return;
        for (size_t i = 0; i < memo->n_maps; i++) {
                free(memo->maps[i].name);
                free(memo->maps[i].query);
                free(memo->maps[i].output);
                memo_map_forget_tables(&memo->maps[i]);
        }
        free(memo->maps);
        wal_frames_done(&memo->frames);
        free(memo);
}

static bool memo_fits(const struct sync_memo *memo, const struct config *c) {
        if (!memo || memo->n_maps != c->n_maps)
                return false;
        for (size_t i = 0; i < c->n_maps; i++)
                if (strcmp(memo->maps[i].name, c->maps[i].name) != 0 ||
                    strcmp(memo->maps[i].query, c->maps[i].query) != 0 ||
                    strcmp(memo->maps[i].output, c->maps[i].output) != 0 || memo->maps[i].format != c->maps[i].format ||
                    memo->maps[i].on_invalid != c->maps[i].on_invalid)
                        return false;
        return true;
}

/* The memory for this connection and configuration (a new one when the
 * maps changed). */
static struct sync_memo *memo_get(struct db *db, const struct config *c) {
        struct sync_memo *memo = db_memo(db);

        if (memo_fits(memo, c))
                return memo;
        memo = calloc(1, sizeof(*memo));
        if (!memo)
                return NULL;
        memo->maps = calloc(c->n_maps, sizeof(*memo->maps));
        memo->n_maps = c->n_maps;
        for (size_t i = 0; memo->maps && i < c->n_maps; i++) {
                memo->maps[i].format = c->maps[i].format;
                memo->maps[i].on_invalid = c->maps[i].on_invalid;
                if (!(memo->maps[i].name = strdup(c->maps[i].name)) ||
                    !(memo->maps[i].query = strdup(c->maps[i].query)) ||
                    !(memo->maps[i].output = strdup(c->maps[i].output))) {
                        memo->n_maps = i + 1;
                        memo_free(memo);
                        return NULL;
                }
        }
        if (!memo->maps) {
                free(memo);
                return NULL;
        }
        memo->utf8 = db_is_utf8(db);
        db_set_memo(db, memo, memo_free);
        return memo;
}

static void map_failed(struct sync_cycle *cy, size_t i) {
        cy->results[i].status = MAP_FAILED;
        cy->outputs[i] = output_free(cy->outputs[i]);
}

static void log_query_failed(struct db *db, const struct map_config *m) {
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                   "%s: query failed: %s; kept %s as it was", m->name, db_errmsg(db), m->output);
}

static int emit_row(void *userdata, const struct db_row *row) {
        struct render *rd = userdata;

        if ((rd->n_rows & 0xfff) == 0)
                notify_watchdog_kick();
        return render_row(rd, row); /* a write error is logged by output */
}

/* Keeps what the query reads, for the next cycles' choice. */
static void learn_tables(struct sync_memo_map *mm, const struct db_query *q) {
        const char *const *tables;
        size_t n;

        memo_map_forget_tables(mm);
        if (!db_query_reads(q, &tables, &n))
                return;
        mm->tables = calloc(n ? n : 1, sizeof(*mm->tables));
        if (!mm->tables)
                return;
        for (size_t k = 0; k < n; k++)
                if (!(mm->tables[mm->n_tables++] = strdup(tables[k]))) {
                        memo_map_forget_tables(mm);
                        return;
                }
        mm->tables_known = true;
}

/* One rendering of map i into a new output, its rows in the given order.
 * Returns 0, ORDER_BROKEN (DB_QUERY_STREAM only: nothing logged, the
 * caller renders again), or a negative errno, logged. */
static int render_pass(struct sync_cycle *cy, struct db *db, struct sync_memo_map *mm, size_t i,
                       enum db_query_mode mode, uint64_t *broken_at) {
        const struct map_config *m = &cy->config->maps[i];
        struct db_query *q = NULL;
        struct render *rd = &cy->renders[i];
        struct order_stream os;
        struct db_row row = {0};
        int r;

        r = output_new_checked(cy->config, m, cy->dry_run, &cy->outputs[i]);
        if (r < 0) {
                /* output.c said why, naming the file; not out of memory. */
                if (r == -ENOMEM)
                        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                                   "%s: Could not prepare %s: %s", m->name, m->output, strerror(-r));
                return r;
        }
        r = db_query_new_mode(db, m->query, mode, &q);
        if (r < 0) {
                log_query_failed(db, m);
                return r;
        }
        learn_tables(mm, q);

        render_init(rd, m, output_write, cy->outputs[i]);
        order_stream_init(&os, emit_row, rd);
        for (;;) {
                int k = db_query_next(q, &row);
                if (k < 0) {
                        log_query_failed(db, m);
                        r = k;
                        break;
                }
                if (k == 0)
                        break;
                r = mode == DB_QUERY_STREAM ? order_stream_add(&os, &row) : emit_row(rd, &row);
                if (r < 0)
                        break;
        }
        if (r == 0 && mode == DB_QUERY_STREAM)
                r = order_stream_finish(&os);
        if (r == ORDER_BROKEN)
                *broken_at = os.n_broken_at;
        order_stream_done(&os);
        if (r == 0)
                r = render_finish(rd);
        if (r == 0)
                r = output_finish(cy->outputs[i]);
        db_query_free(q);
        return r;
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

/* Renders map i into a new output: streamed in index order when the map's
 * rows allowed it last time, else (or when they no longer do) through
 * SQLite's sort. Both give the same bytes (order.h). */
static void render_map(struct sync_cycle *cy, struct db *db, struct sync_memo_map *mm, size_t i) {
        const struct map_config *m = &cy->config->maps[i];
        struct map_result *res = &cy->results[i];
        struct render *rd = &cy->renders[i];
        uint64_t start = now_usec(CLOCK_MONOTONIC), broken_at = 0;
        int r = ORDER_BROKEN;

        if (mm->stream_skip > 0)
                mm->stream_skip--;
        else if (cy->stream) {
                r = render_pass(cy, db, mm, i, DB_QUERY_STREAM, &broken_at);
                res->streamed = r == 0;
                if (r == ORDER_BROKEN) {
                        /* Try again after 1, 2, 4... 64 cycles. */
                        mm->stream_fails += mm->stream_fails < 6;
                        mm->stream_skip = 1u << (mm->stream_fails - 1);
                        log_debug("%s: row %llu is out of the canonical order: sorting the map", m->name,
                                  (unsigned long long)broken_at);
                        cy->outputs[i] = output_free(cy->outputs[i]);
                        render_done(rd);
                } else
                        mm->stream_fails = 0;
        }
        if (r == ORDER_BROKEN)
                r = render_pass(cy, db, mm, i, DB_QUERY_SORTED, &broken_at);

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

/* Renders file set i: its rows are read and compared now, in the snapshot. */
static void render_set(struct sync_cycle *cy, struct db *db, size_t i) {
        struct map_result *res = &cy->set_results[i];
        uint64_t start = now_usec(CLOCK_MONOTONIC);

        if (files_render(db, cy->config, i, cy->dry_run, &cy->sets[i]) < 0) {
                res->status = MAP_FAILED;
                res->duration_ms = elapsed_ms(start);
                return;
        }
        res->rows = files_count(cy->sets[i]);
        res->invalid = files_n_invalid(cy->sets[i]);
        res->added = files_n_written(cy->sets[i]);
        res->removed = files_n_removed(cy->sets[i]);
        res->duration_ms = elapsed_ms(start);
        res->status = files_changed(cy->sets[i]) ? MAP_CHANGED : MAP_UNCHANGED;
}

static void commit_set(struct sync_cycle *cy, size_t i) {
        const struct files_config *f = &cy->config->files[i];
        struct map_result *res = &cy->set_results[i];
        uint64_t start = now_usec(CLOCK_MONOTONIC);

        if (res->status == MAP_FAILED)
                return;
        files_log_invalid(cy->sets[i], res->status == MAP_CHANGED || cy->report_all ? LOG_WARNING : LOG_DEBUG);
        if (cy->dry_run)
                return;
        if (files_commit(cy->sets[i]) < 0) {
                res->status = MAP_FAILED;
                return;
        }
        res->duration_ms += elapsed_ms(start);
        if (res->status == MAP_CHANGED)
                log_submit(LOG_INFO,
                           LOG_FIELDS(.message_id = MSGID_MAP_REPLACED, .map = f->name, .rows = (int64_t)res->rows,
                                      .duration_ms = (int64_t)res->duration_ms),
                           "%s: %s: %llu files, %llu written, %llu removed", f->name, f->directory,
                           (unsigned long long)res->rows, (unsigned long long)res->added,
                           (unsigned long long)res->removed);
        else
                log_submit(LOG_DEBUG, LOG_FIELDS(.map = f->name, .rows = (int64_t)res->rows),
                           "%s: %s unchanged (%llu files)", f->name, f->directory, (unsigned long long)res->rows);
}

/* Takes the snapshot and pins it to a WAL position: the wal-index header
 * read before and after the read transaction began is the same, so the
 * snapshot holds exactly the frames up to pos->mx_frame. *pinned false
 * when that cannot be told (no -shm, a writer in between thrice). */
static int begin_pinned(struct db *db, struct wal_pos *pos, bool *pinned) {
        bool wal;
        int r;

        *pinned = false;
        /* A new connection learns the journal mode, and maps -shm, at its
         * first read transaction; asking SQLite for the mapping of a
         * database not in WAL mode would create a -shm. */
        r = db_begin(db);
        if (r < 0)
                return r;
        wal = db_in_wal_mode(db);
        if (!wal)
                return 0; /* in the snapshot, not pinned */
        db_end(db);
        for (int attempt = 0; attempt < 3; attempt++) {
                struct wal_pos before, after;
                bool have = db_wal_pos(db, &before) == 0;

                r = db_begin(db);
                if (r < 0)
                        return r;
                if (!have)
                        return 0;
                if (db_wal_pos(db, &after) == 0 && wal_pos_equal(&before, &after)) {
                        *pos = after;
                        *pinned = db_in_wal_mode(db);
                        return 0;
                }
                if (attempt < 2)
                        db_end(db);
        }
        return 0;
}

/* Which maps this cycle renders: plan[i]. Every map, unless the last
 * committed cycle's snapshot and this one are both pinned in one WAL
 * generation with one schema: then those maps whose tables own a page
 * that a frame between the two wrote, those whose tables are not known,
 * and those not fresh (failed, or never rendered on this connection). */
static void plan_maps(struct sync_cycle *cy, struct db *db, struct sync_memo *memo, bool pinned,
                      const struct wal_pos *pos, bool *plan, char *why, size_t why_size) {
        const struct config *c = cy->config;
        _cleanup_free_ uint32_t *pages = NULL;
        _cleanup_free_ const char **tables = NULL;
        _cleanup_free_ bool *hit = NULL, *hit_dbstat = NULL;
        _cleanup_free_ char **owner = NULL;
        _cleanup_free_ uint32_t *unresolved = NULL;
        size_t n_pages = 0, n_tables = 0, n_unresolved = 0;
        int64_t schema;
        int r;

        for (size_t i = 0; i < c->n_maps; i++)
                plan[i] = true;
        snprintf(why, why_size, "every map");
        if (!(cy->flags & SYNC_ONLY_CHANGED) || cy->dry_run) {
                snprintf(why, why_size, "every map (full cycle)");
                return;
        }
        if (!pinned || !memo->have_pos) {
                snprintf(why, why_size, "every map (%s)", !pinned ? "no WAL position" : "no earlier cycle");
                return;
        }
        if (db_schema_version(db, &schema) < 0 || schema != memo->schema_version) {
                snprintf(why, why_size, "every map (schema changed)");
                return;
        }
        r = db_wal_pages_between(db, &memo->pos, pos, SYNC_MAX_CHANGED_PAGES, &pages, &n_pages);
        if (r < 0) {
                snprintf(why, why_size, "every map (%s)",
                         r == -ESTALE  ? "WAL reset since the last cycle"
                         : r == -E2BIG ? "too many pages written"
                                       : "WAL unreadable");
                return;
        }
        /* The tables of the maps that may be skipped, once each. */
        tables = calloc(1, sizeof(*tables));
        for (size_t i = 0; tables && i < c->n_maps; i++) {
                const struct sync_memo_map *mm = &memo->maps[i];
                if (!mm->fresh || !mm->tables_known)
                        continue;
                for (size_t k = 0; k < mm->n_tables; k++) {
                        bool seen = false;
                        for (size_t t = 0; t < n_tables && !seen; t++)
                                seen = strcmp(tables[t], mm->tables[k]) == 0;
                        if (seen)
                                continue;
                        const char **nt = realloc(tables, (n_tables + 1) * sizeof(*nt));
                        if (!nt)
                                return;
                        tables = nt;
                        tables[n_tables++] = mm->tables[k];
                }
        }
        hit = calloc(n_tables ? n_tables : 1, sizeof(*hit));
        hit_dbstat = calloc(n_tables ? n_tables : 1, sizeof(*hit_dbstat));
        owner = calloc(n_pages ? n_pages : 1, sizeof(*owner));
        unresolved = calloc(n_pages ? n_pages : 1, sizeof(*unresolved));
        if (!tables || !hit || !hit_dbstat || !owner || !unresolved)
                return;
        /* Each page's table by descent from the roots; those not found
         * so (index, overflow, freelist pages) by dbstat, which walks the
         * b-trees of the tables the skippable maps read. */
        if (db_page_owners(db, &memo->frames, pos, SYNC_MAX_WAL_FRAMES, pages, n_pages, owner) < 0)
                for (size_t p = 0; p < n_pages; p++)
                        owner[p] = NULL;
        for (size_t p = 0; p < n_pages; p++) {
                if (!owner[p]) {
                        unresolved[n_unresolved++] = pages[p];
                        continue;
                }
                for (size_t t = 0; t < n_tables; t++)
                        if (strcmp(tables[t], owner[p]) == 0)
                                hit[t] = true;
                free(owner[p]);
        }
        if (n_unresolved > 0) {
                if (db_tables_with_pages(db, tables, n_tables, unresolved, n_unresolved, hit_dbstat) < 0)
                        return;
                for (size_t t = 0; t < n_tables; t++)
                        hit[t] |= hit_dbstat[t];
        }
        for (size_t i = 0; i < c->n_maps; i++) {
                const struct sync_memo_map *mm = &memo->maps[i];
                bool changed = !mm->fresh || !mm->tables_known;
                for (size_t k = 0; k < mm->n_tables && !changed; k++)
                        for (size_t t = 0; t < n_tables && !changed; t++)
                                changed = hit[t] && strcmp(tables[t], mm->tables[k]) == 0;
                plan[i] = changed;
        }
        {
                size_t n = (size_t)snprintf(why, why_size,
                                            "%zu pages written (%zu traced to a table, %zu by dbstat); "
                                            "tables changed:",
                                            n_pages, n_pages - n_unresolved, n_unresolved);
                bool any = false;
                for (size_t t = 0; t < n_tables && n < why_size; t++)
                        if (hit[t]) {
                                n += (size_t)snprintf(why + n, why_size - n, " %s", tables[t]);
                                any = true;
                        }
                if (!any && n < why_size)
                        snprintf(why + n, why_size - n, " none");
        }
}

int sync_render_flags(struct db *db, const struct config *c, unsigned flags, struct sync_cycle **ret) {
        _cleanup_free_ bool *plan = NULL;
        struct sync_cycle *cy;
        struct sync_memo *memo;
        struct wal_pos pos = {0};
        bool pinned = false;
        char why[256];
        uint64_t start = now_usec(CLOCK_MONOTONIC);
        size_t n_planned = 0;
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
        cy->rendered = calloc(c->n_maps, sizeof(*cy->rendered));
        plan = calloc(c->n_maps ? c->n_maps : 1, sizeof(*plan));
        cy->sets = calloc(c->n_files + 1, sizeof(*cy->sets));
        cy->set_results = calloc(c->n_files + 1, sizeof(*cy->set_results));
        if (!cy->outputs || !cy->results || !cy->renders || !cy->rendered || !plan || !cy->sets || !cy->set_results) {
                sync_cycle_free(cy);
                return -ENOMEM;
        }

        memo = memo_get(db, c);
        if (!memo) {
                sync_cycle_free(cy);
                return -ENOMEM;
        }
        db_set_limits(db, c->max_key_bytes, c->max_value_bytes);
        r = begin_pinned(db, &pos, &pinned);
        if (r < 0) {
                sync_cycle_free(cy);
                return r;
        }
        plan_maps(cy, db, memo, pinned, &pos, plan, why, sizeof(why));
        for (size_t i = 0; i < c->n_maps; i++)
                n_planned += plan[i];
        log_debug("rendering %zu of %zu maps: %s (%llu ms)", n_planned, c->n_maps, why,
                  (unsigned long long)elapsed_ms(start));

        /* The stream's byte comparisons are UTF-8's. */
        cy->stream = memo->utf8;
        for (size_t i = 0; i < c->n_maps; i++) {
                if (plan[i]) {
                        render_map(cy, db, &memo->maps[i], i);
                        cy->rendered[i] = true;
                } else {
                        /* Its file is the rendering of this snapshot. */
                        cy->results[i] = memo->maps[i].last;
                        cy->results[i].status = MAP_UNCHANGED;
                        cy->results[i].duration_ms = 0;
                }
        }
        /* File sets are rendered in every cycle. */
        for (size_t i = 0; i < c->n_files; i++)
                render_set(cy, db, i);
        if (!cy->dry_run) {
                cy->memo = memo;
                cy->pos = pos;
                cy->pinned = pinned && db_schema_version(db, &cy->schema_version) == 0;
        }
        db_end(db);

        *ret = cy;
        return 0;
}

int sync_render(struct db *db, const struct config *c, bool dry_run, struct sync_cycle **ret) {
        return sync_render_flags(db, c, dry_run ? SYNC_DRY_RUN : 0, ret);
}

/* After a commit: what the next cycle may rely on. */
static void memo_commit(struct sync_cycle *cy) {
        struct sync_memo *memo = cy->memo;

        if (!memo)
                return;
        for (size_t i = 0; i < cy->config->n_maps; i++) {
                struct sync_memo_map *mm = &memo->maps[i];
                if (!cy->rendered[i])
                        continue;
                /* Not a map held back (MAP_DEFERRED) or failed. */
                mm->fresh = cy->results[i].status == MAP_UNCHANGED || cy->results[i].status == MAP_CHANGED;
                if (mm->fresh)
                        mm->last = cy->results[i];
        }
        memo->have_pos = cy->pinned;
        memo->pos = cy->pos;
        memo->schema_version = cy->schema_version;
}

void sync_commit(struct sync_cycle *cy) {
        for (size_t i = 0; i < cy->config->n_maps; i++) {
                const struct map_config *m = &cy->config->maps[i];
                struct map_result *res = &cy->results[i];
                struct output *o = cy->outputs[i];
                uint64_t start = now_usec(CLOCK_MONOTONIC);

                if (res->status == MAP_FAILED || res->status == MAP_DEFERRED)
                        continue;
                if (!cy->rendered[i]) {
                        log_debug("%s: %s unchanged (not rendered: its tables did not change)", m->name, m->output);
                        continue;
                }
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
        for (size_t i = 0; i < cy->config->n_files; i++)
                commit_set(cy, i);
        memo_commit(cy);
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
        if (cy->sets)
                for (size_t i = 0; i < cy->config->n_files; i++)
                        files_free(cy->sets[i]);
        free(cy->sets);
        free(cy->set_results);
        free(cy->outputs);
        free(cy->rendered);
        free(cy->results);
        free(cy->renders);
        free(cy);
        return NULL;
}

unsigned sync_count(const struct sync_cycle *cy, enum map_status status) {
        unsigned n = 0;

        for (size_t i = 0; i < cy->config->n_maps; i++)
                n += cy->results[i].status == status;
        for (size_t i = 0; i < cy->config->n_files; i++)
                n += cy->set_results[i].status == status;
        return n;
}
