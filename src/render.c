/* Map rendering: one line per key, validated so that no database value can
 * start, end or split a line of a Postfix table or a Dovecot passwd-file. */
#include "render.h"

#include <stdarg.h>
#include <stdio.h>

#include "log.h"
#include "util.h"

void render_init(struct render *r, const struct map_config *m, render_write_fn write, void *userdata) {
        *r = (struct render){
                .format = m->format,
                .map_name = m->name,
                .on_invalid = m->on_invalid,
                .write = write,
                .userdata = userdata,
        };
}

void render_done(struct render *r) {
        for (size_t i = 0; i < r->n_notes; i++)
                free(r->notes[i]);
        r->n_notes = 0;
        free(r->key);
        free(r->value);
        r->key = r->value = NULL;
}

#define ONES  0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Whether any byte of x is below n (n <= 128), or equal to b. */
static inline bool word_has_less(uint64_t x, uint64_t n) {
        return ((x - ONES * n) & ~x & HIGHS) != 0;
}

static inline bool word_has(uint64_t x, uint64_t b) {
        uint64_t y = x ^ (ONES * b);
        return ((y - ONES) & ~y & HIGHS) != 0;
}

/* Whether bytes[0..n) are all >= lo, none 0x7f and none `extra` (0: no
 * extra byte), eight at a time: the common case of a clean row. */
static bool all_clean(const unsigned char *bytes, size_t n, unsigned char lo, unsigned char extra) {
        size_t i = 0;

        for (; i + 8 <= n; i += 8) {
                uint64_t x;
                memcpy(&x, bytes + i, 8);
                if (word_has_less(x, lo) || word_has(x, 0x7f) || (extra && word_has(x, extra)))
                        return false;
        }
        for (; i < n; i++)
                if (bytes[i] < lo || bytes[i] == 0x7f || (extra && bytes[i] == extra))
                        return false;
        return true;
}

const char *render_check_row(enum map_format format, const struct db_row *row) {
        if (row->key_too_long)
                return "key is longer than max_key_bytes";
        if (row->value_too_long)
                return "value is longer than max_value_bytes";
        if (!row->key)
                return "key is NULL";
        if (row->key_len == 0)
                return "key is empty";
        if (!row->value)
                return "value is NULL";
        if (row->value_len == 0)
                return "value is empty";
        /* A value that starts with a space may be nothing but spaces: the
         * byte loop below decides. */
        if (all_clean(row->key, row->key_len, 0x21, format == MAP_FORMAT_PASSWD ? ':' : 0) && row->key[0] != '#' &&
            row->value[0] != ' ' && all_clean(row->value, row->value_len, 0x20, 0))
                return NULL;
        /* Something is wrong: the byte loops name the first problem. */
        for (size_t i = 0; i < row->key_len; i++) {
                unsigned char c = row->key[i];
                if (c <= 0x20 || c == 0x7f)
                        return "key holds white space or a control byte";
                if (c == ':' && format == MAP_FORMAT_PASSWD)
                        return "key holds ':', the passwd-file field separator";
        }
        /* Postfix tables and Dovecot's passwd-file both skip such lines. */
        if (row->key[0] == '#')
                return "key starts with '#', which makes the line a comment";
        bool blank = true;
        for (size_t i = 0; i < row->value_len; i++) {
                unsigned char c = row->value[i];
                if (c < 0x20 || c == 0x7f)
                        return "value holds a control byte (newline, CR, tab, NUL...)";
                blank &= c == ' ';
        }
        /* Postfix's postmap rejects a line without a value. */
        if (blank)
                return "value is only white space";
        return NULL;
}

static int emit(struct render *r, const void *data, size_t n) {
        r->n_bytes += n;
        return r->write(r->userdata, data, n);
}

static inline char lower_byte(unsigned char c) {
        return (char)(c + (((unsigned)c - 'A' < 26u) << 5));
}

static int set_buf(char **buf, size_t *len, size_t *cap, const unsigned char *src, size_t n, bool lower) {
        if (n + 1 > *cap) {
                size_t c = *cap ? *cap : 64;
                char *b;
                while (c < n + 1)
                        c *= 2;
                b = realloc(*buf, c);
                if (!b)
                        return -ENOMEM;
                *buf = b;
                *cap = c;
        }
        if (lower)
                for (size_t i = 0; i < n; i++)
                        (*buf)[i] = lower_byte(src[i]);
        else
                memcpy(*buf, src, n);
        (*buf)[n] = '\0';
        *len = n;
        return 0;
}

static bool same_key(const struct render *r, const struct db_row *row) {
        if (!r->have_key || r->key_len != row->key_len)
                return false;
        for (size_t i = 0; i < row->key_len; i++)
                if (lower_byte(row->key[i]) != r->key[i])
                        return false;
        return true;
}

/* Keeps the first few reasons; they are logged once the caller knows
 * whether they are news (render_log). */
static void note(struct render *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void note(struct render *r, const char *fmt, ...) {
        va_list ap;
        char *s;

        if (r->n_notes >= ARRAY_SIZE(r->notes))
                return;
        va_start(ap, fmt);
        if (vasprintf(&s, fmt, ap) >= 0)
                r->notes[r->n_notes++] = s;
        va_end(ap);
}

static void note_dropped(struct render *r, const struct db_row *row, const char *why) {
        char key[160];

        const char *what = r->on_invalid == ON_INVALID_FAIL ? "invalid" : "skipped";

        if (r->n_invalid > RENDER_LOG_LIMIT)
                return;
        if (row->key_too_long) {
                note(r, "%s: %s row with a key of %llu bytes: %s", r->map_name, what,
                     (unsigned long long)row->key_too_long, why);
                return;
        }
        str_escape(row->key ? row->key : (const unsigned char *)"", row->key_len, key, sizeof(key));
        if (row->value_too_long)
                note(r, "%s: %s row with key \"%s\": value is %llu bytes, longer than max_value_bytes", r->map_name,
                     what, key, (unsigned long long)row->value_too_long);
        else
                note(r, "%s: %s row with key \"%s\": %s", r->map_name, what, key, why);
}

void render_log(const struct render *r, int priority) {
        const struct log_fields *f = LOG_FIELDS(.message_id = MSGID_INVALID_ROW, .map = r->map_name);

        if (r->n_invalid > 0 && r->on_invalid == ON_INVALID_FAIL)
                priority = LOG_ERR;
        for (size_t i = 0; i < r->n_notes; i++)
                log_submit(priority, f, "%s", r->notes[i]);
        if (r->n_invalid > RENDER_LOG_LIMIT)
                log_submit(priority, f, "%s: %llu invalid rows in all (%llu more not shown)", r->map_name,
                           (unsigned long long)r->n_invalid, (unsigned long long)(r->n_invalid - RENDER_LOG_LIMIT));
        if (r->n_duplicates > RENDER_LOG_LIMIT)
                log_submit(priority, f, "%s: %llu repeated keys in all (%llu more not shown)", r->map_name,
                           (unsigned long long)r->n_duplicates,
                           (unsigned long long)(r->n_duplicates - RENDER_LOG_LIMIT));
}

int render_row(struct render *r, const struct db_row *row) {
        const char *why;
        int k;

        r->n_rows++;
        why = render_check_row(r->format, row);
        if (why) {
                r->n_invalid++;
                note_dropped(r, row, why);
                return 0;
        }

        if (same_key(r, row)) {
                if (r->value_len == row->value_len && memcmp(r->value, row->value, row->value_len) == 0)
                        return 0; /* the same pair twice */
                if (r->format == MAP_FORMAT_PASSWD) {
                        char key[160];
                        if (++r->n_duplicates <= RENDER_LOG_LIMIT)
                                note(r, "%s: key \"%s\" appears in more than one row; kept the first", r->map_name,
                                     str_escape(r->key, r->key_len, key, sizeof(key)));
                        return 0;
                }
                k = emit(r, ", ", 2);
        } else {
                if (r->have_key && (k = emit(r, "\n", 1)) < 0)
                        return k;
                k = set_buf(&r->key, &r->key_len, &r->key_cap, row->key, row->key_len, true);
                if (k < 0)
                        return k;
                r->have_key = true;
                r->n_lines++;
                k = emit(r, r->key, r->key_len);
                if (k >= 0)
                        k = emit(r, r->format == MAP_FORMAT_POSTFIX ? "\t" : ":", 1);
        }
        if (k >= 0)
                k = set_buf(&r->value, &r->value_len, &r->value_cap, row->value, row->value_len, false);
        if (k >= 0)
                k = emit(r, row->value, row->value_len);
        return k;
}

int render_finish(struct render *r) {
        int k;

        if (r->have_key && (k = emit(r, "\n", 1)) < 0)
                return k;
        r->have_key = false;
        return 0;
}
