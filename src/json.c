/* JSON text, written in one pass into a growing buffer. */
#include "json.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void json_init(struct json *j) {
        memset(j, 0, sizeof(*j));
        j->first[0] = true;
}

void json_done(struct json *j) {
        free(j->buf);
        json_init(j);
}

static void put(struct json *j, const char *s, size_t n) {
        if (j->oom)
                return;
        if (j->len + n + 1 > j->cap) {
                size_t cap = j->cap ? j->cap : 256;
                char *b;

                while (cap < j->len + n + 1)
                        cap *= 2;
                b = realloc(j->buf, cap);
                if (!b) {
                        j->oom = true;
                        return;
                }
                j->buf = b;
                j->cap = cap;
        }
        memcpy(j->buf + j->len, s, n);
        j->len += n;
        j->buf[j->len] = '\0';
}

/* Before any value or key: the comma that separates it from the last. */
static void sep(struct json *j) {
        if (j->after_key) {
                j->after_key = false;
                return;
        }
        if (!j->first[j->depth])
                put(j, ",", 1);
        j->first[j->depth] = false;
}

static void open_(struct json *j, char c) {
        sep(j);
        put(j, &c, 1);
        if (j->depth + 1 < JSON_MAX_DEPTH)
                j->depth++;
        else
                j->oom = true; /* deeper than any answer of ours */
        j->first[j->depth] = true;
}

static void close_(struct json *j, char c) {
        if (j->depth > 0)
                j->depth--;
        put(j, &c, 1);
}

void json_object_begin(struct json *j) {
        open_(j, '{');
}

void json_object_end(struct json *j) {
        close_(j, '}');
}

void json_array_begin(struct json *j) {
        open_(j, '[');
}

void json_array_end(struct json *j) {
        close_(j, ']');
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
        size_t len;
        uint32_t cp;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf) {
                len = 2;
                cp = s[0] & 0x1f;
        } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
                len = 3;
                cp = s[0] & 0x0f;
        } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
                len = 4;
                cp = s[0] & 0x07;
        } else
                return 0;
        if (len > n)
                return 0;
        for (size_t i = 1; i < len; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        /* Overlong forms, surrogates, past U+10FFFF. */
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
                return 0;
        return len;
}

void json_string_n(struct json *j, const char *str, size_t n) {
        const unsigned char *s = (const unsigned char *)str;
        size_t i = 0, run = 0;

        sep(j);
        put(j, "\"", 1);
        while (i < n) {
                unsigned char c = s[i];
                const char *esc = NULL;
                char buf[8];
                size_t len = 1;

                switch (c) {
                case '"':
                        esc = "\\\"";
                        break;
                case '\\':
                        esc = "\\\\";
                        break;
                case '\n':
                        esc = "\\n";
                        break;
                case '\r':
                        esc = "\\r";
                        break;
                case '\t':
                        esc = "\\t";
                        break;
                case '\b':
                        esc = "\\b";
                        break;
                case '\f':
                        esc = "\\f";
                        break;
                default:
                        if (c < 0x20 || c == 0x7f) {
                                snprintf(buf, sizeof(buf), "\\u%04x", c);
                                esc = buf;
                        } else if (c >= 0x80) {
                                len = utf8_len(s + i, n - i);
                                if (len == 0) {
                                        esc = "\\ufffd";
                                        len = 1;
                                }
                        }
                }
                if (esc) {
                        put(j, str + i - run, run);
                        run = 0;
                        put(j, esc, strlen(esc));
                } else
                        run += len;
                i += len;
        }
        put(j, str + i - run, run);
        put(j, "\"", 1);
}

void json_string(struct json *j, const char *s) {
        if (!s) {
                json_null(j);
                return;
        }
        json_string_n(j, s, strlen(s));
}

void json_key(struct json *j, const char *key) {
        json_string(j, key);
        put(j, ":", 1);
        j->after_key = true;
}

void json_uint(struct json *j, uint64_t v) {
        char buf[32];

        sep(j);
        put(j, buf, (size_t)snprintf(buf, sizeof(buf), "%" PRIu64, v));
}

void json_int(struct json *j, int64_t v) {
        char buf[32];

        sep(j);
        put(j, buf, (size_t)snprintf(buf, sizeof(buf), "%" PRId64, v));
}

void json_bool(struct json *j, bool v) {
        sep(j);
        put(j, v ? "true" : "false", v ? 4 : 5);
}

void json_null(struct json *j) {
        sep(j);
        put(j, "null", 4);
}

char *json_take(struct json *j, size_t *len) {
        char *s;

        if (j->oom) {
                json_done(j);
                return NULL;
        }
        if (!j->buf)
                put(j, "", 0);
        if (j->oom) {
                json_done(j);
                return NULL;
        }
        s = j->buf;
        if (len)
                *len = j->len;
        j->buf = NULL;
        json_done(j);
        return s;
}
