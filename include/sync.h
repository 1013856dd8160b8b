/* One sync cycle: every map rendered from one snapshot of the database
 * (phase 1, sync_render), then the changed ones put in place (phase 2,
 * sync_commit). Between the two the caller records which hooks would
 * become owed (jobs_prepare), so that a crash after a rename cannot lose a
 * hook; after phase 2 it owes those of the maps actually replaced
 * (jobs_commit): see jobs.h. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"
#include "output.h"
#include "wal.h"

enum map_status {
        MAP_UNCHANGED,
        MAP_CHANGED, /* after sync_render: will change; after commit: replaced */
        MAP_FAILED,
        MAP_DEFERRED, /* changed, but replaced in this second already (SYNC_PACE) */
};

/* sync_render_flags(): */
#define SYNC_DRY_RUN 1U /* write nothing; keep renderings for the diff */
#define SYNC_FORCE   2U /* publish renderings the shrink guard would hold */
/* A map that must get another whole-second mtime (format = passwd) and
 * was replaced in this wall-clock second is not written now but left
 * MAP_DEFERRED: the caller syncs again in the next second. Without it the
 * commit waits for the next second itself. */
#define SYNC_PACE 4U
/* Render only the maps whose tables changed since the last committed cycle
 * on this memo (db_memo()), when that can be told exactly (WAL mode, one
 * WAL generation, one schema); a map not rendered has rendered[i] false,
 * MAP_UNCHANGED and the results of its last rendering. Else, and in dry
 * runs, every map. */
#define SYNC_ONLY_CHANGED 8U

struct map_result {
        enum map_status status;
        char sha256[SHA256_HEX_LEN + 1];
        uint64_t rows; /* lines written */
        uint64_t bytes;
        uint64_t invalid;        /* rows dropped */
        uint64_t added, removed; /* dry runs: lines */
        uint64_t duration_ms;
        bool shrink_held;   /* MAP_FAILED by the shrink guard */
        uint64_t old_lines; /* the file's lines, when it changed */
        bool streamed;      /* rendered without SQLite's sort (order.h) */
};

struct render;
struct files_set;
struct sync_memo;

struct sync_cycle {
        const struct config *config;
        bool dry_run;
        unsigned flags; /* SYNC_* */
        bool stream;    /* try DB_QUERY_STREAM first */
        /* Log why rows were dropped from every map, not only from those that
         * changed (whose drops are news). Set it before sync_commit(). */
        bool report_all;
        struct render *renders;
        struct output **outputs;    /* NULL for a map not rendered */
        struct map_result *results; /* one per map, config order */
        /* [files NAME] sets, config order: rows = files, added and removed =
         * files written and removed (dry runs: that would be). Rendered in
         * every cycle. */
        struct files_set **sets;
        struct map_result *set_results;
        bool *rendered; /* false: skipped, its tables did not
                         * change; results are the last ones */
        /* For the next cycle (set by sync_render, kept by sync_commit). */
        struct sync_memo *memo;
        struct wal_pos pos;
        bool pinned;
        int64_t schema_version;
};

/* Phase 1: opens a read transaction on db, renders every map into its
 * struct output, ends the transaction. A map that fails (bad SQL, invalid
 * rows with on_invalid = fail, unwritable directory) is MAP_FAILED and the
 * others go on. Returns 0, or a negative errno when no snapshot could be
 * taken (database busy, corrupt...): then nothing was rendered. */
int sync_render(struct db *db, const struct config *c, bool dry_run, struct sync_cycle **ret);
int sync_render_flags(struct db *db, const struct config *c, unsigned flags, struct sync_cycle **ret);

/* Phase 2: replaces each changed output (dry runs: computes the line
 * diff instead). A map whose replacement fails becomes MAP_FAILED. */
void sync_commit(struct sync_cycle *cycle);

/* Frees; temporary files not committed are removed; NULL-safe. */
struct sync_cycle *sync_cycle_free(struct sync_cycle *cycle);

/* Counts of maps and file sets per status. */
unsigned sync_count(const struct sync_cycle *cycle, enum map_status status);
