/* The canonical order of a map's rows without SQLite's sorter.
 *
 * The canonical order is the one of
 *     ORDER BY lower(k) COLLATE BINARY, v COLLATE BINARY
 * (db_query_new()). A query run with DB_QUERY_STREAM yields its rows in
 * binary key order, usually straight from an index; order_stream regroups
 * them by lower-cased key, orders each key's values as SQLite would
 * (NULL, then numbers by value, then text, then blobs, both by memcmp and
 * length) and hands them on. When the rows cannot give the canonical
 * output exactly (a lower-cased key that goes backwards, two values that
 * SQLite holds equal but that read differently such as 1 and 1.0, a key
 * with too many rows to hold), it says so with ORDER_BROKEN and the map is
 * rendered again through the sorting query. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db.h"

/* Returned by order_stream_add()/order_stream_finish() when the rows do
 * not allow the canonical output without a sort. */
#define ORDER_BROKEN (-EDOM)

/* The rows of one key held at most (beyond: ORDER_BROKEN). */
#define ORDER_GROUP_MAX_ROWS  65536
#define ORDER_GROUP_MAX_BYTES (4u << 20)

/* Receives the rows in canonical order; returns 0 or a negative errno. */
typedef int (*order_emit_fn)(void *userdata, const struct db_row *row);

struct order_row {
        int key_type, value_type;
        int64_t value_int;
        double value_real;
        size_t key_off, key_len, value_off, value_len; /* in arena */
        uint64_t key_too_long, value_too_long;         /* as in struct db_row */
};

struct order_stream {
        order_emit_fn emit;
        void *userdata;
        struct order_row *rows; /* the current key's rows */
        size_t n_rows, rows_cap;
        unsigned char *arena; /* their bytes */
        size_t arena_len, arena_cap;
        uint64_t n_broken_at; /* row number (1-based) that broke the order */
        uint64_t n_seen;
};

void order_stream_init(struct order_stream *s, order_emit_fn emit, void *userdata);
void order_stream_done(struct order_stream *s);

/* Takes one row (copied). Returns 0, a negative errno of emit, -ENOMEM or
 * ORDER_BROKEN. */
int order_stream_add(struct order_stream *s, const struct db_row *row);

/* Hands on the last key's rows. */
int order_stream_finish(struct order_stream *s);

/* SQLite's comparison of v COLLATE BINARY between two values, as
 * sqlite3MemCompare() does it: <0, 0, >0. */
int order_cmp_value(const struct db_row *a, const struct db_row *b);

/* The comparison of lower(k) COLLATE BINARY (NULL first; ASCII A-Z
 * lower-cased, every other byte as it is). */
int order_cmp_key(const struct db_row *a, const struct db_row *b);
