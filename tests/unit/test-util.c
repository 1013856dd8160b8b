/* Unit tests of util.h: number and mode parsing, str_append, str_escape. */
#include "util.h"

#include "test.h"

static void test_parse_uint_valid(void) {
        uint64_t v = 12345;

        CHECK_INT(parse_uint("0", 0, 10, &v), 0);
        CHECK_UINT(v, 0);
        CHECK_INT(parse_uint("42", 0, 100, &v), 0);
        CHECK_UINT(v, 42);
        CHECK_INT(parse_uint("007", 0, 100, &v), 0);
        CHECK_UINT(v, 7);
        /* The bounds themselves are in range. */
        CHECK_INT(parse_uint("5", 5, 9, &v), 0);
        CHECK_UINT(v, 5);
        CHECK_INT(parse_uint("9", 5, 9, &v), 0);
        CHECK_UINT(v, 9);
        CHECK_INT(parse_uint("18446744073709551615", 0, UINT64_MAX, &v), 0);
        CHECK_UINT(v, UINT64_MAX);
        CHECK_INT(parse_uint("3600000", 0, 3600000, &v), 0);
        CHECK_UINT(v, 3600000);
}

static void test_parse_uint_invalid(void) {
        static const char *const bad[] = {
                "", " 1", "1 ", "-1", "+1", "1a", "a1", "0x10", "1.5", "1e3", "one", "\t7", "12\n",
        };
        uint64_t v = 777;

        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                if (!CHECK_INT(parse_uint(bad[i], 0, UINT64_MAX, &v), -EINVAL))
                        fprintf(stderr, "    input \"%s\"\n", bad[i]);
        }
        CHECK_INT(parse_uint(NULL, 0, 10, &v), -EINVAL);
        CHECK_UINT(v, 777); /* untouched on failure */
}

static void test_parse_uint_range(void) {
        uint64_t v = 777;

        CHECK_INT(parse_uint("11", 0, 10, &v), -ERANGE);
        CHECK_INT(parse_uint("4", 5, 9, &v), -ERANGE);
        CHECK_INT(parse_uint("0", 1, 86400, &v), -ERANGE);
        CHECK_INT(parse_uint("86401", 1, 86400, &v), -ERANGE);
        /* Past 2^64 - 1: strtoull saturates; must not become a valid max. */
        CHECK_INT(parse_uint("18446744073709551616", 0, UINT64_MAX, &v), -ERANGE);
        CHECK_INT(parse_uint("99999999999999999999999999", 0, UINT64_MAX, &v), -ERANGE);
        CHECK_UINT(v, 777);
}

static void test_parse_mode(void) {
        unsigned m = 1;

        CHECK_INT(parse_mode("0640", &m), 0);
        CHECK_UINT(m, 0640);
        CHECK_INT(parse_mode("640", &m), 0);
        CHECK_UINT(m, 0640);
        CHECK_INT(parse_mode("0", &m), 0);
        CHECK_UINT(m, 0);
        CHECK_INT(parse_mode("07777", &m), 0);
        CHECK_UINT(m, 07777);
        CHECK_INT(parse_mode("4755", &m), 0);
        CHECK_UINT(m, 04755);
        CHECK_INT(parse_mode("000644", &m), 0);
        CHECK_UINT(m, 0644);

        m = 1;
        static const char *const bad[] = {
                "",      "8",     "9",     "0648",  "0649",  "0689",  "010000",    "17777",
                "0o640", "0x1a4", "-0640", "+0640", " 0640", "0640 ", "rw-r-----", "99999999999999999999999",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
                if (!CHECK_INT(parse_mode(bad[i], &m), -EINVAL))
                        fprintf(stderr, "    input \"%s\"\n", bad[i]);
        }
        CHECK_INT(parse_mode(NULL, &m), -EINVAL);
        CHECK_UINT(m, 1);
}

static void test_str_append(void) {
        char *s = NULL;
        size_t len = 0;

        CHECK_INT(str_append(&s, &len, "abc", 3), 0);
        CHECK_UINT(len, 3);
        CHECK_STR(s, "abc");
        CHECK_INT(str_append(&s, &len, "", 0), 0);
        CHECK_UINT(len, 3);
        CHECK_STR(s, "abc");
        /* Only n bytes are taken. */
        CHECK_INT(str_append(&s, &len, "defXYZ", 3), 0);
        CHECK_UINT(len, 6);
        CHECK_STR(s, "abcdef");
        /* Bytes after a NUL are kept: the length is what counts. */
        CHECK_INT(str_append(&s, &len, "g\0h", 3), 0);
        CHECK_UINT(len, 9);
        CHECK_MEM(s, len + 1, "abcdefg\0h", 10);
        free(s);

        /* Growing through many appends keeps every byte. */
        s = NULL;
        len = 0;
        for (int i = 0; i < 1000; i++)
                CHECK_INT(str_append(&s, &len, "0123456789", 10), 0);
        CHECK_UINT(len, 10000);
        CHECK_UINT(strlen(s), 10000);
        CHECK_MEM(s + 9990, 10, "0123456789", 10);
        free(s);

        /* Appending nothing to nothing gives an empty string. */
        s = NULL;
        len = 0;
        CHECK_INT(str_append(&s, &len, "", 0), 0);
        CHECK(s != NULL);
        CHECK_STR(s, "");
        free(s);
}

static void test_str_escape_plain(void) {
        char buf[64];

        CHECK_STR(str_escape("hello world", 11, buf, sizeof(buf)), "hello world");
        CHECK(str_escape("x", 1, buf, sizeof(buf)) == buf);
        CHECK_STR(str_escape("", 0, buf, sizeof(buf)), "");
        /* Only n bytes. */
        CHECK_STR(str_escape("abcdef", 3, buf, sizeof(buf)), "abc");
        CHECK_STR(str_escape("~ !\"#:", 6, buf, sizeof(buf)), "~ !\"#:");
}

static void test_str_escape_control(void) {
        char buf[64];

        CHECK_STR(str_escape("a\nb", 3, buf, sizeof(buf)), "a\\x0ab");
        CHECK_STR(str_escape("\r\t", 2, buf, sizeof(buf)), "\\x0d\\x09");
        CHECK_STR(str_escape("a\0b", 3, buf, sizeof(buf)), "a\\x00b");
        CHECK_STR(str_escape("\x1f\x7f", 2, buf, sizeof(buf)), "\\x1f\\x7f");
        /* Non-ASCII bytes too: 'É' in UTF-8. */
        CHECK_STR(str_escape("\xc3\x89", 2, buf, sizeof(buf)), "\\xc3\\x89");
        CHECK_STR(str_escape("\xff", 1, buf, sizeof(buf)), "\\xff");
        /* A backslash is escaped, so "\\x0a" in the output always means a
         * newline byte in the input. */
        CHECK_STR(str_escape("\\x0a", 4, buf, sizeof(buf)), "\\x5cx0a");
        /* A space is printable. */
        CHECK_STR(str_escape(" ", 1, buf, sizeof(buf)), " ");
}

static void test_str_escape_truncation(void) {
        char buf[64];
        char big[200];

        /* Much longer than the buffer: cut with "...", NUL inside the
         * buffer, never past it. */
        memset(big, 'a', sizeof(big));
        memset(buf, 'Z', sizeof(buf));
        str_escape(big, sizeof(big), buf, 16);
        CHECK_STR(buf, "aaaaaaaaaaaa...");
        CHECK_UINT(strlen(buf), 15);
        CHECK_INT(buf[16], 'Z'); /* nothing written past size */

        /* The smallest size the contract allows. */
        memset(buf, 'Z', sizeof(buf));
        str_escape("abcdefghij", 10, buf, 8);
        CHECK_STR(buf, "abcd...");
        CHECK_INT(buf[8], 'Z');

        /* An escape is never cut in half. */
        memset(buf, 'Z', sizeof(buf));
        str_escape("\n\n\n\n", 4, buf, 12);
        CHECK_STR(buf, "\\x0a\\x0a...");
        CHECK_INT(buf[12], 'Z');

        memset(buf, 'Z', sizeof(buf));
        str_escape("ab\n\n\n", 5, buf, 8);
        CHECK_STR(buf, "ab...");
        CHECK_INT(buf[8], 'Z');

        /* Every size from 8 to 40: the result fits, is a prefix of the
         * full escape or that prefix plus "...". */
        const char *in = "key\nwith\tcontrol\x7f bytes and \xc3\xa9 more text";
        char full[256];
        str_escape(in, strlen(in), full, sizeof(full));
        CHECK_STR(full, "key\\x0awith\\x09control\\x7f bytes and \\xc3\\xa9 more text");
        for (size_t size = 8; size <= 40; size++) {
                char small[64];
                size_t n;

                memset(small, 'Z', sizeof(small));
                str_escape(in, strlen(in), small, size);
                n = strlen(small);
                if (!CHECK(n < size))
                        fprintf(stderr, "    size %zu\n", size);
                CHECK_INT(small[size], 'Z');
                if (n >= 3 && strcmp(small + n - 3, "...") == 0)
                        CHECK(strncmp(small, full, n - 3) == 0);
                else
                        CHECK_STR(small, full);
        }
}

/* Output that fits the buffer must not be cut: the contract cuts "past the
 * buffer" only. */
static void test_str_escape_fits_exactly(void) {
        char buf[8];

        /* 7 printable bytes fit a buffer of 8 with their NUL. */
        CHECK_STR(str_escape("abcdefg", 7, buf, sizeof(buf)), "abcdefg");
        /* 5 bytes fit with room to spare. */
        CHECK_STR(str_escape("abcde", 5, buf, sizeof(buf)), "abcde");
        /* One escape (4) + 3 bytes = 7: fits. */
        CHECK_STR(str_escape("\nabc", 4, buf, sizeof(buf)), "\\x0aabc");
}

int main(void) {
        RUN(test_parse_uint_valid);
        RUN(test_parse_uint_invalid);
        RUN(test_parse_uint_range);
        RUN(test_parse_mode);
        RUN(test_str_append);
        RUN(test_str_escape_plain);
        RUN(test_str_escape_control);
        RUN(test_str_escape_truncation);
        RUN(test_str_escape_fits_exactly);
        return test_end();
}
