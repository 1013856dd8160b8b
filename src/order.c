/* The canonical order of a map's rows without SQLite's sorter (order.h). */
#include "order.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static inline unsigned char lower(unsigned char c) {
        return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static bool is_null(const unsigned char *data, enum db_type type) {
        return !data || type == DB_NULL;
}

int order_cmp_key(const struct db_row *a, const struct db_row *b) {
        bool an = is_null(a->key, a->key_type), bn = is_null(b->key, b->key_type);
        size_t n;

        /* lower() makes text of every class but NULL. */
        if (an || bn)
                return (int)bn - (int)an;
        n = a->key_len < b->key_len ? a->key_len : b->key_len;
        for (size_t i = 0; i < n; i++) {
                unsigned char x = lower(a->key[i]), y = lower(b->key[i]);
                if (x != y)
                        return x < y ? -1 : 1;
        }
        return a->key_len < b->key_len ? -1 : a->key_len > b->key_len ? 1 : 0;
}

/* NULL, numbers, text, blobs: sqlite3MemCompare()'s order of classes. */
static int class_of(const struct db_row *r) {
        if (is_null(r->value, r->value_type))
                return 0;
        switch (r->value_type) {
        case DB_INTEGER:
        case DB_REAL:
                return 1;
        case DB_BLOB:
                return 3;
        default:
                return 2;
        }
}

/* An integer against a double, exactly (sqlite3IntFloatCompare()). */
static int cmp_int_real(int64_t i, double r) {
        int64_t y;
        double s;

        if (r < -9223372036854775808.0)
                return 1;
        if (r >= 9223372036854775808.0)
                return -1;
        y = (int64_t)r;
        if (i < y)
                return -1;
        if (i > y)
                return 1;
        s = (double)i;
        return s < r ? -1 : s > r ? 1 : 0;
}

static int cmp_number(const struct db_row *a, const struct db_row *b) {
        if (a->value_type == DB_INTEGER && b->value_type == DB_INTEGER)
                return a->value_int < b->value_int ? -1 : a->value_int > b->value_int ? 1 : 0;
        if (a->value_type == DB_REAL && b->value_type == DB_REAL)
                return a->value_real < b->value_real ? -1 : a->value_real > b->value_real ? 1 : 0;
        if (a->value_type == DB_INTEGER)
                return cmp_int_real(a->value_int, b->value_real);
        return -cmp_int_real(b->value_int, a->value_real);
}

int order_cmp_value(const struct db_row *a, const struct db_row *b) {
        int ca = class_of(a), cb = class_of(b), c;
        size_t n;

        if (ca != cb)
                return ca < cb ? -1 : 1;
        switch (ca) {
        case 0:
                return 0;
        case 1:
                return cmp_number(a, b);
        default:
                /* BINARY collation and blobs alike: memcmp, then length. */
                n = a->value_len < b->value_len ? a->value_len : b->value_len;
                c = n ? memcmp(a->value, b->value, n) : 0;
                if (c)
                        return c < 0 ? -1 : 1;
                return a->value_len < b->value_len ? -1 : a->value_len > b->value_len ? 1 : 0;
        }
}

void order_stream_init(struct order_stream *s, order_emit_fn emit, void *userdata) {
        *s = (struct order_stream){.emit = emit, .userdata = userdata};
}

void order_stream_done(struct order_stream *s) {
        free(s->rows);
        free(s->arena);
        s->rows = NULL;
        s->arena = NULL;
        s->n_rows = s->rows_cap = s->arena_len = s->arena_cap = 0;
}

static struct db_row row_of(const struct order_stream *s, const struct order_row *o) {
        bool kn = o->key_type == DB_NULL, vn = o->value_type == DB_NULL;

        return (struct db_row){
                .key = kn ? NULL : s->arena + o->key_off,
                .key_len = kn ? 0 : o->key_len,
                .value = vn ? NULL : s->arena + o->value_off,
                .value_len = vn ? 0 : o->value_len,
                .key_type = o->key_type,
                .value_type = o->value_type,
                .value_int = o->value_int,
                .value_real = o->value_real,
                .key_too_long = o->key_too_long,
                .value_too_long = o->value_too_long,
        };
}

static int cmp_rows(const void *x, const void *y, void *userdata) {
        const struct order_stream *s = userdata;
        struct db_row a = row_of(s, x), b = row_of(s, y);

        return order_cmp_value(&a, &b);
}

/* Orders the current key's values, checks that no two of them are equal
 * to SQLite but read differently, and hands them on. */
static int flush(struct order_stream *s) {
        int r = 0;

        if (s->n_rows > 1) {
                /* Insertion sort: most keys have one to three rows. */
                if (s->n_rows <= 16) {
                        for (size_t i = 1; i < s->n_rows; i++) {
                                struct order_row t = s->rows[i];
                                size_t j = i;
                                while (j > 0 && cmp_rows(&s->rows[j - 1], &t, s) > 0) {
                                        s->rows[j] = s->rows[j - 1];
                                        j--;
                                }
                                s->rows[j] = t;
                        }
                } else
                        qsort_r(s->rows, s->n_rows, sizeof(*s->rows), cmp_rows, s);
                for (size_t i = 1; i < s->n_rows; i++) {
                        struct db_row a = row_of(s, &s->rows[i - 1]), b = row_of(s, &s->rows[i]);
                        /* 1 and 1.0 are equal to SQLite: which one its sort
                         * puts first is not ours to know. */
                        if (order_cmp_value(&a, &b) == 0 &&
                            ((a.value == NULL) != (b.value == NULL) || a.value_len != b.value_len ||
                             (a.value_len && memcmp(a.value, b.value, a.value_len) != 0)))
                                return ORDER_BROKEN;
                }
        }
        for (size_t i = 0; i < s->n_rows && r >= 0; i++) {
                struct db_row row = row_of(s, &s->rows[i]);
                r = s->emit(s->userdata, &row);
        }
        s->n_rows = 0;
        s->arena_len = 0;
        return r;
}

static int arena_put(struct order_stream *s, const unsigned char *data, size_t n, size_t *off) {
        if (s->arena_len + n + 1 > s->arena_cap) {
                size_t c = s->arena_cap ? s->arena_cap : 4096;
                unsigned char *a;
                while (c < s->arena_len + n + 1)
                        c *= 2;
                a = realloc(s->arena, c);
                if (!a)
                        return -ENOMEM;
                s->arena = a;
                s->arena_cap = c;
        }
        *off = s->arena_len;
        if (n)
                memcpy(s->arena + s->arena_len, data, n);
        s->arena[s->arena_len + n] = '\0';
        s->arena_len += n + 1;
        return 0;
}

int order_stream_add(struct order_stream *s, const struct db_row *row) {
        struct order_row *o;
        int r;

        s->n_seen++;
        if (s->n_rows > 0) {
                struct db_row first = row_of(s, &s->rows[0]);
                int c = order_cmp_key(row, &first);
                if (c < 0) {
                        s->n_broken_at = s->n_seen;
                        return ORDER_BROKEN;
                }
                if (c > 0) {
                        r = flush(s);
                        if (r < 0) {
                                if (r == ORDER_BROKEN)
                                        s->n_broken_at = s->n_seen - 1;
                                return r;
                        }
                }
        }
        if (s->n_rows >= ORDER_GROUP_MAX_ROWS || s->arena_len + row->key_len + row->value_len > ORDER_GROUP_MAX_BYTES) {
                s->n_broken_at = s->n_seen;
                return ORDER_BROKEN;
        }
        if (s->n_rows == s->rows_cap) {
                size_t c = s->rows_cap ? 2 * s->rows_cap : 16;
                struct order_row *rows = realloc(s->rows, c * sizeof(*rows));
                if (!rows)
                        return -ENOMEM;
                s->rows = rows;
                s->rows_cap = c;
        }
        o = &s->rows[s->n_rows];
        *o = (struct order_row){
                .key_type = is_null(row->key, row->key_type) ? DB_NULL : row->key_type,
                .value_type = is_null(row->value, row->value_type) ? DB_NULL : row->value_type,
                .value_int = row->value_int,
                .value_real = row->value_real,
                .key_len = row->key_len,
                .value_len = row->value_len,
                .key_too_long = row->key_too_long,
                .value_too_long = row->value_too_long,
        };
        if (o->key_type != DB_NULL && (r = arena_put(s, row->key, row->key_len, &o->key_off)) < 0)
                return r;
        if (o->value_type != DB_NULL && (r = arena_put(s, row->value, row->value_len, &o->value_off)) < 0)
                return r;
        s->n_rows++;
        return 0;
}

int order_stream_finish(struct order_stream *s) {
        int r = flush(s);

        if (r == ORDER_BROKEN)
                s->n_broken_at = s->n_seen;
        return r;
}
