/* Unit tests of json.h: structure, commas, escaping of every kind of
 * byte, numbers. */
#include "json.h"

#include "test.h"
#include "util.h"

static char *take(struct json *j) {
        char *s = json_take(j, NULL);
        if (!s)
                abort();
        return s;
}

static void test_structure(void) {
        struct json j;
        char *s;

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "a");
        json_uint(&j, 1);
        json_key(&j, "b");
        json_array_begin(&j);
        json_bool(&j, true);
        json_bool(&j, false);
        json_null(&j);
        json_object_begin(&j);
        json_object_end(&j);
        json_array_begin(&j);
        json_array_end(&j);
        json_array_end(&j);
        json_key(&j, "c");
        json_int(&j, -42);
        json_key(&j, "d");
        json_uint(&j, UINT64_MAX);
        json_object_end(&j);
        s = take(&j);
        CHECK_STR(s, "{\"a\":1,\"b\":[true,false,null,{},[]],\"c\":-42,\"d\":18446744073709551615}");
        free(s);

        json_init(&j);
        json_array_begin(&j);
        json_string(&j, NULL);
        json_string(&j, "");
        json_array_end(&j);
        s = take(&j);
        CHECK_STR(s, "[null,\"\"]");
        free(s);
}

static char *one_string(const char *data, size_t n) {
        struct json j;

        json_init(&j);
        json_string_n(&j, data, n);
        return take(&j);
}

static void test_escaping(void) {
        static const struct {
                const char *in;
                size_t n;
                const char *out;
        } cases[] = {
                {"plain", 5, "\"plain\""},
                {"\"", 1, "\"\\\"\""},
                {"\\", 1, "\"\\\\\""},
                {"a\nb\rc\td", 7, "\"a\\nb\\rc\\td\""},
                {"\b\f", 2, "\"\\b\\f\""},
                {"\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\""},
                {"nul\0byte", 8, "\"nul\\u0000byte\""},
                {"</script>", 9, "\"</script>\""},
                /* Valid UTF-8 passes as it is. */
                {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7", 14, "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7\""},
                /* Not UTF-8: a lone continuation byte, a cut sequence, an
                 * overlong form, a surrogate, past U+10FFFF, 0xff. */
                {"a\x80z", 3, "\"a\\ufffdz\""},
                {"\xe2\x82", 2, "\"\\ufffd\\ufffd\""},
                {"\xc0\xaf", 2, "\"\\ufffd\\ufffd\""},
                {"\xe0\x80\xaf", 3, "\"\\ufffd\\ufffd\\ufffd\""},
                {"\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""},
                {"\xf4\x90\x80\x80", 4, "\"\\ufffd\\ufffd\\ufffd\\ufffd\""},
                {"\xff", 1, "\"\\ufffd\""},
        };

        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                char *s = one_string(cases[i].in, cases[i].n);
                if (!CHECK_STR(s, cases[i].out))
                        fprintf(stderr, "    case %zu\n", i);
                free(s);
        }
}

/* Every byte value, alone: the output is always a valid JSON string with
 * nothing below 0x20 and no lone quote or backslash. */
static void test_every_byte(void) {
        for (unsigned b = 0; b < 256; b++) {
                char in = (char)b, *s = one_string(&in, 1);
                size_t n = strlen(s);

                CHECK(n >= 3 && s[0] == '"' && s[n - 1] == '"');
                for (size_t k = 1; k + 1 < n; k++) {
                        CHECK((unsigned char)s[k] >= 0x20);
                        CHECK(s[k] != '"');
                        if (s[k] == '\\') {
                                k++; /* what follows is escaped */
                                CHECK(k + 1 < n && strchr("\"\\bfnrtu", s[k]));
                        }
                }
                if (b == '\\')
                        CHECK_STR(s, "\"\\\\\"");
                free(s);
        }
}

static void test_keys_escaped(void) {
        struct json j;
        char *s;

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "k\"ey");
        json_string(&j, "v");
        json_object_end(&j);
        s = take(&j);
        CHECK_STR(s, "{\"k\\\"ey\":\"v\"}");
        free(s);
}

static void test_too_deep(void) {
        struct json j;

        json_init(&j);
        for (int i = 0; i < JSON_MAX_DEPTH + 2; i++)
                json_array_begin(&j);
        CHECK(json_take(&j, NULL) == NULL);
}

int main(void) {
        RUN(test_structure);
        RUN(test_escaping);
        RUN(test_every_byte);
        RUN(test_keys_escaped);
        RUN(test_too_deep);
        return test_end();
}
