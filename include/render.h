/* Rendering rows into a map's text: validation against line injection,
 * lower-cased keys, and merging of rows that share a key. Rows must come
 * sorted by lower-cased key (db_query_next() delivers them so). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "db.h"

/* Receives rendered bytes; returns 0 or a negative errno. */
typedef int (*render_write_fn)(void *userdata, const void *data, size_t n);

/* Number of invalid or duplicate rows noted one by one per map and
 * cycle; the rest are counted in one summary. */
#define RENDER_LOG_LIMIT 10

struct render {
        enum map_format format;
        const char *map_name;
        enum on_invalid on_invalid;
        render_write_fn write;
        void *userdata;
        char *key; /* current key, lower-cased */
        size_t key_len, key_cap;
        char *value; /* its last value, to drop repeats */
        size_t value_len, value_cap;
        bool have_key;
        uint64_t n_rows;       /* rows read */
        uint64_t n_lines;      /* lines written: distinct keys */
        uint64_t n_invalid;    /* rows dropped as invalid */
        uint64_t n_duplicates; /* passwd rows dropped for a repeated key */
        uint64_t n_bytes;
        char *notes[2 * RENDER_LOG_LIMIT]; /* why rows were dropped */
        size_t n_notes;
};

void render_init(struct render *r, const struct map_config *m, render_write_fn write, void *userdata);
void render_done(struct render *r);

/* Why a row cannot be written to a map of this format, or NULL when it
 * can. */
const char *render_check_row(enum map_format format, const struct db_row *row);

/* Renders one row (or drops it, logging why). Returns 0 or the writer's
 * negative errno. */
int render_row(struct render *r, const struct db_row *row);

/* Ends the last line. */
int render_finish(struct render *r);

/* Logs why rows were dropped (at most RENDER_LOG_LIMIT of each kind, then
 * counts) at the given priority; invalid rows of an on_invalid = fail map
 * always at LOG_ERR. */
void render_log(const struct render *r, int priority);
