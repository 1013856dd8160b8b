/* Unit tests of render.h: row validation against hostile bytes in both
 * formats, lower-cased keys, merging of rows that share a key, counters,
 * and errors of the writer. */
#include "render.h"

#include "log.h"
#include "util.h"

#include "test.h"

static struct db_row row_n(const char *key, size_t key_len, const char *value, size_t value_len) {
        return (struct db_row){
                .key = (const unsigned char *)key,
                .key_len = key ? key_len : 0,
                .value = (const unsigned char *)value,
                .value_len = value ? value_len : 0,
        };
}

static struct db_row row_s(const char *key, const char *value) {
        return row_n(key, key ? strlen(key) : 0, value, value ? strlen(value) : 0);
}

struct check_case {
        const char *key;
        size_t key_len; /* 0: strlen(key) */
        const char *value;
        size_t value_len; /* 0: strlen(value) */
        bool postfix_ok, passwd_ok;
        const char *why; /* part of the reason when invalid */
};

#define K(s) (s), sizeof(s) - 1
static const struct check_case check_cases[] = {
        /* Valid rows. */
        {K("alice@example.com"), K("example.com/alice/"), true, true, NULL},
        {K("a"), K("b"), true, true, NULL},
        {K("x"), K("value with spaces"), true, true, NULL},
        {K("x"), K(" leading space in value"), true, true, NULL},
        {K("x"), K("trailing space "), true, true, NULL},
        {K("x"), K("{BLF-CRYPT}$2y$10$abc::::::userdb_quota_rule=*:storage=100M"), true, true, NULL},
        {K("\xc3\xa9"
           "cole@example.com"),
         K("\xc3\xa9t\xc3\xa9"), true, true, NULL},       /* UTF-8 */
        {K("\x80\xff"), K("\x80\xfe"), true, true, NULL}, /* any byte >= 0x80 */
        {K("a#b"), K("v"), true, true, NULL},             /* '#' inside */
        /* '#' first: a comment line, skipped by Postfix and by Dovecot's
         * passwd-file alike. */
        {K("#comment"), K("v"), false, false, "'#'"},
        {K("#"), K("v"), false, false, "'#'"},
        {K("user:name"), K("v"), true, false, "':'"}, /* ':' */
        {K(":"), K("v"), true, false, "':'"},
        {K("x"), K("#value"), true, true, NULL},
        {K("x"), K("~!\"$%&'()*+,-./;<=>?@[\\]^_`{|}"), true, true, NULL},
        /* Keys with white space or control bytes. */
        {K("a\nb"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\rb"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\tb"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a b"), K("v"), false, false, "key holds white space or a control byte"},
        {K(" ab"), K("v"), false, false, "key holds white space or a control byte"},
        {K("ab "), K("v"), false, false, "key holds white space or a control byte"},
        {K("\tab"), K("v"), false, false, "key holds white space or a control byte"},
        {K("ab\n"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\0b"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\x01"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\x1f"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\x7f"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\x0b"), K("v"), false, false, "key holds white space or a control byte"},
        {K("a\x0c"), K("v"), false, false, "key holds white space or a control byte"},
        /* A line that starts with white space continues the previous one. */
        {K("\n bob"), K("v"), false, false, "key holds white space or a control byte"},
        /* Values with control bytes. */
        {K("x"), K("a\nb"), false, false, "control byte"},
        {K("x"), K("a\rb"), false, false, "control byte"},
        {K("x"), K("a\tb"), false, false, "control byte"},
        {K("x"), K("a\0b"), false, false, "control byte"},
        {K("x"), K("\0"), false, false, "control byte"},
        {K("x"), K("ab\n"), false, false, "control byte"},
        {K("x"), K("\nbob@example.com\tevil"), false, false, "control byte"},
        {K("x"), K("a\x7f"), false, false, "control byte"},
        {K("x"), K("a\x1b[31m"), false, false, "control byte"},
        {K("x"), K("\x1f"), false, false, "control byte"},
        /* NULL and empty. */
        {NULL, 0, K("v"), false, false, "key is NULL"},
        {K("x"), NULL, 0, false, false, "value is NULL"},
        {NULL, 0, NULL, 0, false, false, "NULL"},
        {K(""), K("v"), false, false, "key is empty"},
        {K("x"), K(""), false, false, "value is empty"},
        /* Only spaces, short and longer than one word of the fast check. */
        {K("x"), K(" "), false, false, "value is only white space"},
        {K("x"), K("   "), false, false, "value is only white space"},
        {K("x"), K("                    "), false, false, "value is only white space"},
        {K("x"), K(" a"), true, true, NULL},
        {K("x"), K("a "), true, true, NULL},
        {K("x"), K("          a"), true, true, NULL},
};
#undef K

static void test_check_row(void) {
        for (size_t i = 0; i < ARRAY_SIZE(check_cases); i++) {
                const struct check_case *t = &check_cases[i];
                struct db_row row = row_n(t->key, t->key_len, t->value, t->value_len);
                const char *pf = render_check_row(MAP_FORMAT_POSTFIX, &row);
                const char *pw = render_check_row(MAP_FORMAT_PASSWD, &row);
                char k[128], v[128];
                bool ok = true;

                ok &= CHECK_INT(pf == NULL, t->postfix_ok);
                ok &= CHECK_INT(pw == NULL, t->passwd_ok);
                if (t->why) {
                        if (!t->postfix_ok)
                                ok &= CHECK_CONTAINS(pf, t->why);
                        if (!t->passwd_ok)
                                ok &= CHECK_CONTAINS(pw, t->why);
                }
                if (!ok) {
                        test_escape(t->key, t->key_len, k, sizeof(k));
                        test_escape(t->value, t->value_len, v, sizeof(v));
                        fprintf(stderr, "    case %zu: key %s value %s: postfix \"%s\", passwd \"%s\"\n", i, k, v,
                                pf ? pf : "ok", pw ? pw : "ok");
                }
        }
}

/* Each single byte in a key and in a value, in both formats. */
static void test_check_row_every_byte(void) {
        for (unsigned b = 0; b < 256; b++) {
                char key[3] = {'a', (char)b, 'z'}, value[3] = {'a', (char)b, 'z'};
                struct db_row kr = row_n(key, 3, "v", 1), vr = row_n("k", 1, value, 3);
                bool key_ok = b > 0x20 && b != 0x7f, value_ok = b >= 0x20 && b != 0x7f;
                bool ok = true;

                ok &= CHECK_INT(render_check_row(MAP_FORMAT_POSTFIX, &kr) == NULL, key_ok);
                ok &= CHECK_INT(render_check_row(MAP_FORMAT_PASSWD, &kr) == NULL, key_ok && b != ':');
                ok &= CHECK_INT(render_check_row(MAP_FORMAT_POSTFIX, &vr) == NULL, value_ok);
                ok &= CHECK_INT(render_check_row(MAP_FORMAT_PASSWD, &vr) == NULL, value_ok);
                if (!ok)
                        fprintf(stderr, "    byte 0x%02x\n", b);
        }
}

/* The length given counts, not a NUL: a blob value with a NUL inside is
 * caught, and bytes past key_len are not looked at. */
static void test_check_row_lengths(void) {
        static const char blob[] = {'p', 'w', '\0', 'x'};
        struct db_row row = row_n("k", 1, blob, sizeof(blob));

        CHECK_CONTAINS(render_check_row(MAP_FORMAT_PASSWD, &row), "control byte");
        CHECK_CONTAINS(render_check_row(MAP_FORMAT_POSTFIX, &row), "control byte");
        row = row_n("k", 1, blob, 2); /* "pw" only */
        CHECK(render_check_row(MAP_FORMAT_PASSWD, &row) == NULL);
        row = row_n("ab\ncd", 2, "v", 1); /* "ab" only */
        CHECK(render_check_row(MAP_FORMAT_POSTFIX, &row) == NULL);
        row = row_n("ab\ncd", 3, "v", 1);
        CHECK(render_check_row(MAP_FORMAT_POSTFIX, &row) != NULL);
}

static struct map_config map_of(enum map_format format, enum on_invalid on_invalid) {
        return (struct map_config){
                .name = (char *)"testmap",
                .output = (char *)"/nonexistent/testmap",
                .format = format,
                .mode = 0640,
                .uid = (uid_t)-1,
                .gid = (gid_t)-1,
                .on_invalid = on_invalid,
        };
}

/* Renders rows into memory. Returns the first error of render_row or
 * render_finish. */
static int render_rows(struct render *r, const struct db_row *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                int k = render_row(r, &rows[i]);
                if (k < 0)
                        return k;
        }
        return render_finish(r);
}

static void test_render_postfix(void) {
        struct map_config m = map_of(MAP_FORMAT_POSTFIX, ON_INVALID_SKIP);
        /* As SQLite delivers them: sorted by lower(key), then value. */
        const struct db_row rows[] = {
                row_s("Alias@Example.COM", "a1@example.com"),
                row_s("alias@example.com", "a1@example.com"), /* exact duplicate (case aside) */
                row_s("ALIAS@EXAMPLE.COM", "a2@example.com"),
                row_s("alias@example.com", "a3@example.com"),
                row_s("alias@example.com", "a3@example.com"), /* exact duplicate */
                row_s("bad key", "x"),                        /* invalid */
                row_s("bob@example.com", NULL),               /* invalid */
                row_s("bob@example.com", "bob@example.com"),
                row_s("bob@example.com", "bob\n@evil"), /* invalid, after the valid one */
                row_s("#carol@example.com", "c"),       /* invalid: '#' */
                row_s("user:name@example.com", "u"),    /* ':' is fine in postfix */
                row_s("\xc3\x89"
                      "COLE@Example.com",
                      "\xc3\x89t\xc3\xa9 Value"),
        };
        static const char expected[] = "alias@example.com\ta1@example.com, a2@example.com, a3@example.com\n"
                                       "bob@example.com\tbob@example.com\n"
                                       "user:name@example.com\tu\n"
                                       "\xc3\x89"
                                       "cole@example.com\t\xc3\x89t\xc3\xa9 Value\n";
        struct test_buf out = {0};
        struct render r;

        render_init(&r, &m, test_buf_write, &out);
        CHECK_INT(render_rows(&r, rows, ARRAY_SIZE(rows)), 0);
        CHECK_MEM(out.data, out.len, expected, sizeof(expected) - 1);
        CHECK_UINT(r.n_rows, ARRAY_SIZE(rows));
        CHECK_UINT(r.n_lines, 4);
        CHECK_UINT(r.n_invalid, 4);
        CHECK_UINT(r.n_duplicates, 0);
        CHECK_UINT(r.n_bytes, sizeof(expected) - 1);
        render_done(&r);
        test_buf_done(&out);
}

static void test_render_passwd(void) {
        struct map_config m = map_of(MAP_FORMAT_PASSWD, ON_INVALID_SKIP);
        const struct db_row rows[] = {
                row_s("#hash@example.com", "{BLF-CRYPT}$2y$10$h0::::::"), /* invalid: a comment */
                row_s("a:b@example.com", "{BLF-CRYPT}x"),                 /* invalid */
                row_s("User@Example.com", "{BLF-CRYPT}$2y$10$h1::::::userdb_quota_rule=*:storage=100M"),
                row_s("user@example.com", "{BLF-CRYPT}$2y$10$h1::::::userdb_quota_rule=*:storage=100M"),
                row_s("USER@example.com", "{BLF-CRYPT}$2y$10$h2::::::"), /* duplicate: first kept */
                row_s("user@example.com", "{BLF-CRYPT}$2y$10$h3::::::"), /* duplicate: first kept */
                row_s("zed@example.com", "{BLF-CRYPT}pw\nzed2:x"),       /* invalid */
                row_s("zed@example.com", "{BLF-CRYPT}$2y$10$z::::::"),
        };
        static const char expected[] = "user@example.com:{BLF-CRYPT}$2y$10$h1::::::userdb_quota_rule=*:storage=100M\n"
                                       "zed@example.com:{BLF-CRYPT}$2y$10$z::::::\n";
        struct test_buf out = {0};
        struct render r;

        render_init(&r, &m, test_buf_write, &out);
        CHECK_INT(render_rows(&r, rows, ARRAY_SIZE(rows)), 0);
        CHECK_MEM(out.data, out.len, expected, sizeof(expected) - 1);
        CHECK_UINT(r.n_rows, ARRAY_SIZE(rows));
        CHECK_UINT(r.n_lines, 2);
        CHECK_UINT(r.n_invalid, 3);
        CHECK_UINT(r.n_duplicates, 2);
        CHECK_UINT(r.n_bytes, sizeof(expected) - 1);
        render_done(&r);
        test_buf_done(&out);
}

/* Keys are lower-cased byte by byte, ASCII only. */
static void test_lower_case(void) {
        struct map_config m = map_of(MAP_FORMAT_POSTFIX, ON_INVALID_SKIP);
        const struct db_row rows[] = {
                row_s("ABCDEFGHIJKLMNOPQRSTUVWXYZ@[\\]^_`{|}~", "Keep CASE in Values"),
                row_s("\xc3\x89\xc3\x80\xce\xa9Z", "v"), /* ÉÀΩZ: only Z changes */
        };
        static const char expected[] = "abcdefghijklmnopqrstuvwxyz@[\\]^_`{|}~\tKeep CASE in Values\n"
                                       "\xc3\x89\xc3\x80\xce\xa9z\tv\n";
        struct test_buf out = {0};
        struct render r;

        render_init(&r, &m, test_buf_write, &out);
        CHECK_INT(render_rows(&r, rows, ARRAY_SIZE(rows)), 0);
        CHECK_MEM(out.data, out.len, expected, sizeof(expected) - 1);
        CHECK_UINT(r.n_lines, 2);
        render_done(&r);
        test_buf_done(&out);

        /* Passwd too, and keys differing only in non-ASCII case stay
         * apart: 'É' (c3 89) and 'é' (c3 a9). */
        m = map_of(MAP_FORMAT_PASSWD, ON_INVALID_SKIP);
        const struct db_row rows2[] = {
                row_s("\xc3\x89"
                      "A",
                      "1"),
                row_s("\xc3\xa9"
                      "a",
                      "2"),
        };
        static const char expected2[] = "\xc3\x89"
                                        "a:1\n\xc3\xa9"
                                        "a:2\n";
        render_init(&r, &m, test_buf_write, &out);
        CHECK_INT(render_rows(&r, rows2, ARRAY_SIZE(rows2)), 0);
        CHECK_MEM(out.data, out.len, expected2, sizeof(expected2) - 1);
        CHECK_UINT(r.n_lines, 2);
        CHECK_UINT(r.n_duplicates, 0);
        render_done(&r);
        test_buf_done(&out);
}

/* A key that is a prefix of the next one is another key. */
static void test_prefix_keys(void) {
        struct map_config m = map_of(MAP_FORMAT_POSTFIX, ON_INVALID_SKIP);
        const struct db_row rows[] = {
                row_s("a", "1"), row_s("ab", "2"), row_s("abc", "3"), row_s("abc", "4"), row_s("b", "5"),
        };
        static const char expected[] = "a\t1\nab\t2\nabc\t3, 4\nb\t5\n";
        struct test_buf out = {0};
        struct render r;

        render_init(&r, &m, test_buf_write, &out);
        CHECK_INT(render_rows(&r, rows, ARRAY_SIZE(rows)), 0);
        CHECK_MEM(out.data, out.len, expected, sizeof(expected) - 1);
        CHECK_UINT(r.n_lines, 4);
        CHECK_UINT(r.n_rows, 5);
        CHECK_UINT(r.n_bytes, sizeof(expected) - 1);
        render_done(&r);
        test_buf_done(&out);
}

static int count_calls_write(void *userdata, const void *data, size_t n) {
        (*(unsigned *)userdata)++;
        (void)data;
        (void)n;
        return 0;
}

static void test_empty(void) {
        struct map_config m = map_of(MAP_FORMAT_POSTFIX, ON_INVALID_SKIP);
        struct render r;
        unsigned calls = 0;

        render_init(&r, &m, count_calls_write, &calls);
        CHECK_INT(render_finish(&r), 0);
        CHECK_UINT(calls, 0);
        CHECK_UINT(r.n_rows, 0);
        CHECK_UINT(r.n_lines, 0);
        CHECK_UINT(r.n_invalid, 0);
        CHECK_UINT(r.n_bytes, 0);
        render_done(&r);

        /* Only invalid rows: nothing written either. */
        const struct db_row rows[] = {row_s("a b", "x"), row_s("k", "v\n"), row_s(NULL, NULL)};
        for (int f = 0; f < 2; f++) {
                m = map_of(f ? MAP_FORMAT_PASSWD : MAP_FORMAT_POSTFIX, f ? ON_INVALID_FAIL : ON_INVALID_SKIP);
                calls = 0;
                render_init(&r, &m, count_calls_write, &calls);
                CHECK_INT(render_rows(&r, rows, ARRAY_SIZE(rows)), 0);
                CHECK_UINT(calls, 0);
                CHECK_UINT(r.n_rows, 3);
                CHECK_UINT(r.n_lines, 0);
                CHECK_UINT(r.n_invalid, 3);
                CHECK_UINT(r.n_bytes, 0);
                render_done(&r);
        }
        render_done(&r); /* twice is harmless */
}

struct failing_writer {
        unsigned calls;
        unsigned fail_at; /* 1-based call that fails */
        int error;
        struct test_buf buf;
};

static int failing_write(void *userdata, const void *data, size_t n) {
        struct failing_writer *w = userdata;

        if (++w->calls >= w->fail_at)
                return w->error;
        return test_buf_write(&w->buf, data, n);
}

/* Fails the writer's call number fail_at and returns the first error of
 * render_row/render_finish, and the index of the row that got it (n for
 * render_finish). */
static int render_failing(enum map_format format, unsigned fail_at, int error, size_t *at) {
        struct map_config m = map_of(format, ON_INVALID_SKIP);
        const struct db_row rows[] = {row_s("a", "1"), row_s("a", "2"), row_s("b", "3")};
        struct failing_writer w = {.fail_at = fail_at, .error = error};
        struct render r;
        int k = 0;

        render_init(&r, &m, failing_write, &w);
        for (*at = 0; *at < ARRAY_SIZE(rows); (*at)++) {
                k = render_row(&r, &rows[*at]);
                if (k < 0)
                        break;
        }
        if (k == 0)
                k = render_finish(&r);
        render_done(&r);
        test_buf_done(&w.buf);
        return k;
}

static void test_write_errors(void) {
        size_t at;

        /* Postfix writes: row 0: "a" "\t" "1"; row 1: ", " "2";
         * row 2: "\n" "b" "\t" "3"; finish: "\n". */
        static const size_t row_of_call[] = {0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 3};
        for (unsigned call = 1; call <= 10; call++) {
                int k = render_failing(MAP_FORMAT_POSTFIX, call, -ENOSPC, &at);
                if (!CHECK_INT(k, -ENOSPC) || !CHECK_UINT(at, row_of_call[call]))
                        fprintf(stderr, "    writer failing at call %u\n", call);
        }
        CHECK_INT(render_failing(MAP_FORMAT_POSTFIX, 11, -EIO, &at), 0);
        CHECK_UINT(at, 3);
        CHECK_INT(render_failing(MAP_FORMAT_PASSWD, 1, -EIO, &at), -EIO);
        CHECK_UINT(at, 0);
        /* Passwd: row 1 is a dropped duplicate and writes nothing; row 2
         * writes "\n" "b" ":" "3", finish "\n": 8 calls in all. */
        CHECK_INT(render_failing(MAP_FORMAT_PASSWD, 4, -EDQUOT, &at), -EDQUOT);
        CHECK_UINT(at, 2);
        CHECK_INT(render_failing(MAP_FORMAT_PASSWD, 8, -EDQUOT, &at), -EDQUOT);
        CHECK_UINT(at, 3);
        CHECK_INT(render_failing(MAP_FORMAT_PASSWD, 9, -EDQUOT, &at), 0);
}

/* Runs fn with stderr sent to a file and logging at max_priority, and
 * returns what was logged. */
static char *capture_log(int max_priority, void (*fn)(void *), void *userdata) {
        char *dir = test_mkdtemp(), *log_path = test_path(dir, "stderr"), *log;
        int saved = dup(STDERR_FILENO), fd;

        fflush(stderr);
        fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || saved < 0)
                abort();
        dup2(fd, STDERR_FILENO);
        close(fd);
        log_init(max_priority);
        fn(userdata);
        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        log_init(LOG_INFO);
        log = test_read_file(log_path, NULL);
        test_rm_rf(dir);
        free(log_path);
        free(dir);
        return log;
}

static unsigned count_lines(const char *s) {
        unsigned n = 0;

        for (; s && *s; s++)
                n += *s == '\n';
        return n;
}

struct log_case {
        struct render r;
        int priority;
};

static void do_render_log(void *userdata) {
        struct log_case *c = userdata;

        render_log(&c->r, c->priority);
}

/* Why rows were dropped is noted while rendering and logged by
 * render_log(): naming the map and the (escaped) key, at most
 * RENDER_LOG_LIMIT one by one, then one summary. */
static void test_invalid_rows_logged(void) {
        struct map_config m = map_of(MAP_FORMAT_POSTFIX, ON_INVALID_SKIP);
        struct test_buf out = {0};
        struct log_case c = {.priority = LOG_WARNING};
        struct render *r = &c.r;
        char *log;

        render_init(r, &m, test_buf_write, &out);
        struct db_row bad = row_s("evil\nkey", "v");
        CHECK_INT(render_row(r, &bad), 0);
        for (int i = 0; i < 24; i++) {
                char key[32];
                snprintf(key, sizeof(key), "bad key %02d", i);
                struct db_row row = row_s(key, "v");
                CHECK_INT(render_row(r, &row), 0);
        }
        struct db_row good = row_s("good", "v");
        CHECK_INT(render_row(r, &good), 0);
        CHECK_INT(render_finish(r), 0);
        CHECK_UINT(r->n_invalid, 25);
        CHECK_UINT(r->n_lines, 1);
        CHECK_STR(out.data, "good\tv\n");
        test_buf_done(&out);

        log = capture_log(LOG_INFO, do_render_log, &c);
        REQUIRE(log);
        CHECK_UINT(count_lines(log), RENDER_LOG_LIMIT + 1);
        CHECK_CONTAINS(log, "warning: testmap: skipped row with key \"evil\\x0akey\": key holds white space");
        CHECK(!strstr(log, "evil\nkey")); /* no line injected into the log */
        CHECK_CONTAINS(log, "bad key 08");
        CHECK(!strstr(log, "bad key 09")); /* the 11th invalid row is not logged alone */
        CHECK_CONTAINS(log, "warning: testmap: 25 invalid rows in all (15 more not shown)");
        free(log);

        /* Below the priority logged: nothing. */
        c.priority = LOG_DEBUG;
        log = capture_log(LOG_INFO, do_render_log, &c);
        CHECK_STR(log, "");
        free(log);
        render_done(r);
        render_done(r); /* twice is harmless */
}

/* Invalid rows of an on_invalid = fail map are errors, whatever priority
 * is asked for. */
static void test_invalid_rows_fail_logged(void) {
        struct map_config m = map_of(MAP_FORMAT_PASSWD, ON_INVALID_FAIL);
        struct test_buf out = {0};
        struct log_case c = {.priority = LOG_DEBUG};
        char *log;

        render_init(&c.r, &m, test_buf_write, &out);
        struct db_row bad = row_s("a:b", "v");
        CHECK_INT(render_row(&c.r, &bad), 0);
        CHECK_INT(render_finish(&c.r), 0);
        CHECK_UINT(c.r.n_invalid, 1);
        CHECK_UINT(out.len, 0);
        log = capture_log(LOG_ERR, do_render_log, &c);
        CHECK_STR(log,
                  "error: testmap: invalid row with key \"a:b\": key holds ':', the passwd-file field separator\n");
        free(log);
        render_done(&c.r);
        test_buf_done(&out);
}

/* Repeated passwd keys are noted too, with the same limit. */
static void test_duplicates_logged(void) {
        struct map_config m = map_of(MAP_FORMAT_PASSWD, ON_INVALID_SKIP);
        struct test_buf out = {0};
        struct log_case c = {.priority = LOG_WARNING};
        char *log;

        render_init(&c.r, &m, test_buf_write, &out);
        for (int i = 0; i < 13; i++) {
                char value[32];
                snprintf(value, sizeof(value), "hash%02d", i);
                struct db_row row = row_s("User@Example.com", value);
                CHECK_INT(render_row(&c.r, &row), 0);
        }
        CHECK_INT(render_finish(&c.r), 0);
        CHECK_STR(out.data, "user@example.com:hash00\n");
        CHECK_UINT(c.r.n_duplicates, 12);
        CHECK_UINT(c.r.n_invalid, 0);
        CHECK_UINT(c.r.n_lines, 1);
        log = capture_log(LOG_INFO, do_render_log, &c);
        CHECK_UINT(count_lines(log), RENDER_LOG_LIMIT + 1);
        CHECK_CONTAINS(log,
                       "warning: testmap: key \"user@example.com\" appears in more than one row; kept the first\n");
        CHECK_CONTAINS(log, "warning: testmap: 12 repeated keys in all (2 more not shown)\n");
        CHECK(!strstr(log, "hash")); /* never a password hash */
        free(log);
        render_done(&c.r);
        test_buf_done(&out);
}

int main(void) {
        RUN(test_check_row);
        RUN(test_check_row_every_byte);
        RUN(test_check_row_lengths);
        RUN(test_render_postfix);
        RUN(test_render_passwd);
        RUN(test_lower_case);
        RUN(test_prefix_keys);
        RUN(test_empty);
        RUN(test_write_errors);
        RUN(test_invalid_rows_logged);
        RUN(test_invalid_rows_fail_logged);
        RUN(test_duplicates_logged);
        return test_end();
}
