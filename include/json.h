/* A JSON writer for the API's answers and the webhooks' bodies: commas and
 * nesting kept track of, strings escaped (control bytes, quotes,
 * backslashes; bytes that are not UTF-8 become U+FFFD). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 16

struct json {
        char *buf;
        size_t len, cap;
        bool oom;
        bool after_key;
        unsigned depth;
        bool first[JSON_MAX_DEPTH];
};

void json_init(struct json *j);
void json_done(struct json *j);

void json_object_begin(struct json *j);
void json_object_end(struct json *j);
void json_array_begin(struct json *j);
void json_array_end(struct json *j);
/* A key inside an object; the next value is its value. */
void json_key(struct json *j, const char *key);
void json_string(struct json *j, const char *s);
void json_string_n(struct json *j, const char *s, size_t n);
void json_uint(struct json *j, uint64_t v);
void json_int(struct json *j, int64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* The text written so far (NUL-terminated), or NULL when memory ran out;
 * ownership passes to the caller and j is empty again. */
char *json_take(struct json *j, size_t *len);
