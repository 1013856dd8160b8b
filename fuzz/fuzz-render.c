/* libFuzzer target: rendering and validation of untrusted rows, both
 * formats, checked against an independent model of README's rules.
 *
 * Input: one flags byte (bit 0: passwd format, bit 1: on_invalid = fail,
 * bit 2: rows left unsorted, bit 3: the writer fails with ENOSPC past 4 *
 * the next byte's value in bytes), then rows, each a key length byte, a value
 * length byte and that many bytes of key and of value (a length of 255
 * means NULL and takes no bytes).
 *
 * Properties: nothing crashes or leaks; every output line is valid for its
 * format (key without white space, control bytes or a leading '#', no ':'
 * in a passwd key, a non-empty value without control bytes); the output
 * ends with a newline; render_check_row() agrees with the model on every
 * row; and, for rows in the canonical order the database delivers, the
 * output is byte for byte the model's (keys lower-cased, strictly
 * increasing; Postfix values joined by ", " without exact repeats; the
 * first row of a passwd key kept). When the writer fails, rendering stops
 * with its error (as sync.c does) and only the absence of crashes and leaks
 * is checked. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "render.h"

#define MAX_ROWS 2048
#define NULL_LEN 255

struct buf {
        unsigned char *data;
        size_t len, cap;
        size_t fail_after; /* the writer fails (ENOSPC) past this many bytes; 0: never */
};

static void buf_add(struct buf *b, const void *p, size_t n) {
        if (b->len + n > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->len + n)
                        cap *= 2;
                b->data = realloc(b->data, cap);
                if (!b->data)
                        abort();
                b->cap = cap;
        }
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

static int writer(void *userdata, const void *data, size_t n) {
        struct buf *b = userdata;

        if (b->fail_after && b->len + n > b->fail_after)
                return -ENOSPC;
        buf_add(b, data, n);
        return 0;
}

/* The rules of README.md, written afresh. */
static bool key_ok(bool passwd, const unsigned char *k, size_t n) {
        if (!k || n == 0 || k[0] == '#')
                return false;
        for (size_t i = 0; i < n; i++)
                if (k[i] <= 0x20 || k[i] == 0x7f || (passwd && k[i] == ':'))
                        return false;
        return true;
}

static bool value_ok(const unsigned char *v, size_t n) {
        bool blank = true;

        if (!v || n == 0)
                return false;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < 0x20 || v[i] == 0x7f)
                        return false;
                blank &= v[i] == ' ';
        }
        return !blank; /* postmap rejects a line whose value is only spaces */
}

static unsigned char lower(unsigned char c) {
        return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int cmp_bytes(const unsigned char *a, size_t an, const unsigned char *b, size_t bn, bool fold) {
        for (size_t i = 0; i < an && i < bn; i++) {
                unsigned char x = fold ? lower(a[i]) : a[i], y = fold ? lower(b[i]) : b[i];
                if (x != y)
                        return x < y ? -1 : 1;
        }
        return (an > bn) - (an < bn);
}

/* SQLite's order for the wrapped query: lower(key), then value; NULL first. */
static int cmp_rows(const void *pa, const void *pb) {
        const struct db_row *a = pa, *b = pb;
        int c;

        if (!a->key || !b->key)
                c = (a->key != NULL) - (b->key != NULL);
        else
                c = cmp_bytes(a->key, a->key_len, b->key, b->key_len, true);
        if (c)
                return c;
        if (!a->value || !b->value)
                return (a->value != NULL) - (b->value != NULL);
        return cmp_bytes(a->value, a->value_len, b->value, b->value_len, false);
}

static void check_line(bool passwd, const unsigned char *line, size_t n) {
        const unsigned char *sep = memchr(line, passwd ? ':' : '\t', n);

        if (!sep || !key_ok(passwd, line, (size_t)(sep - line)) || !value_ok(sep + 1, n - (size_t)(sep - line) - 1)) {
                fprintf(stderr, "invalid %s line: %.*s\n", passwd ? "passwd" : "postfix", (int)n, line);
                abort();
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_init(LOG_EMERG - 1); /* dropped rows are noted, not printed */
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static struct db_row rows[MAX_ROWS];
        struct buf out = {}, model = {};
        struct render r;
        size_t n_rows = 0, pos = 1, n_invalid = 0, n_lines = 0;
        bool passwd, sorted;
        struct map_config m = {.name = (char *)"fuzz"};

        if (size < 1)
                return 0;
        passwd = data[0] & 1;
        sorted = !(data[0] & 4);
        m.format = passwd ? MAP_FORMAT_PASSWD : MAP_FORMAT_POSTFIX;
        m.on_invalid = data[0] & 2 ? ON_INVALID_FAIL : ON_INVALID_SKIP;
        if ((data[0] & 8) && size > 1)
                out.fail_after = 1 + 4 * (size_t)data[pos++];

        while (pos + 2 <= size && n_rows < MAX_ROWS) {
                size_t kl = data[pos], vl = data[pos + 1];
                struct db_row *row = &rows[n_rows++];

                pos += 2;
                *row = (struct db_row){};
                if (kl != NULL_LEN) {
                        kl = kl < size - pos ? kl : size - pos;
                        row->key = data + pos;
                        row->key_len = kl;
                        pos += kl;
                }
                if (vl != NULL_LEN) {
                        vl = vl < size - pos ? vl : size - pos;
                        row->value = data + pos;
                        row->value_len = vl;
                        pos += vl;
                }
        }
        if (sorted)
                qsort(rows, n_rows, sizeof(rows[0]), cmp_rows);

        render_init(&r, &m, writer, &out);
        for (size_t i = 0; i < n_rows; i++) {
                bool ok = key_ok(passwd, rows[i].key, rows[i].key_len) && value_ok(rows[i].value, rows[i].value_len);
                if (ok != (render_check_row(m.format, &rows[i]) == NULL)) {
                        fprintf(stderr, "render_check_row disagrees with the rules on row %zu\n", i);
                        abort();
                }
                n_invalid += !ok;
                if (render_row(&r, &rows[i]) < 0) {
                        if (!out.fail_after)
                                abort();
                        goto done; /* the writer's error, passed on */
                }
        }
        if (render_finish(&r) < 0) {
                if (!out.fail_after)
                        abort();
                goto done;
        }
        render_log(&r, LOG_WARNING);

        /* Every line valid, the whole ends with a newline. */
        if (out.len > 0 && out.data[out.len - 1] != '\n')
                abort();
        for (size_t start = 0; start < out.len;) {
                const unsigned char *nl = memchr(out.data + start, '\n', out.len - start);
                size_t end = (size_t)(nl - out.data);
                check_line(passwd, out.data + start, end - start);
                n_lines++;
                start = end + 1;
        }
        if (n_lines != r.n_lines || out.len != r.n_bytes || r.n_invalid != n_invalid || r.n_rows != n_rows)
                abort();

        /* In canonical order: exactly the model's rendering. */
        if (sorted) {
                const struct db_row *key = NULL, *last = NULL;
                for (size_t i = 0; i < n_rows; i++) {
                        const struct db_row *row = &rows[i];
                        if (!key_ok(passwd, row->key, row->key_len) || !value_ok(row->value, row->value_len))
                                continue;
                        if (key && cmp_bytes(key->key, key->key_len, row->key, row->key_len, true) == 0) {
                                if (cmp_bytes(last->value, last->value_len, row->value, row->value_len, false) == 0 ||
                                    passwd)
                                        continue;
                                buf_add(&model, ", ", 2);
                        } else {
                                if (key)
                                        buf_add(&model, "\n", 1);
                                for (size_t k = 0; k < row->key_len; k++) {
                                        unsigned char c = lower(row->key[k]);
                                        buf_add(&model, &c, 1);
                                }
                                buf_add(&model, passwd ? ":" : "\t", 1);
                                key = row;
                        }
                        buf_add(&model, row->value, row->value_len);
                        last = row;
                }
                if (key)
                        buf_add(&model, "\n", 1);
                if (model.len != out.len || (out.len && memcmp(model.data, out.data, out.len) != 0)) {
                        fprintf(stderr, "rendering differs from the model:\n%.*s\n---\n%.*s\n", (int)out.len, out.data,
                                (int)model.len, model.data);
                        abort();
                }
        }
done:
        render_done(&r);
        free(out.data);
        free(model.data);
        return 0;
}
