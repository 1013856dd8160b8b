/* Unit tests of order.h: SQLite's comparison of values emulated, and the
 * differential test of the streamed rendering: on random tables, hostile
 * keys and values included (mixed case, bytes >= 0x80, blobs, integers,
 * reals, NULLs, repeated keys, equal keys with other values), a map
 * rendered through DB_QUERY_STREAM and order_stream is byte for byte the
 * map rendered through the sorting query, or the stream says
 * ORDER_BROKEN. */
#include "order.h"

#include <sqlite3.h>

#include "render.h"
#include "util.h"

#include "test.h"

static char *tmpdir;

static int sign(int x) {
        return x < 0 ? -1 : x > 0;
}

/* Every pair of a list of values against what SQLite itself says. */
static void test_cmp_value_matches_sqlite(void) {
        static const char *lits[] = {
                "NULL",
                "0",
                "1",
                "-1",
                "9",
                "10",
                "9223372036854775807",
                "-9223372036854775808",
                "9007199254740993",
                "9007199254740992.0",
                "9.2233720368547758e18",
                "-9.3e18",
                "1.0",
                "1.5",
                "0.0",
                "-0.0",
                "1e300",
                "'1'",
                "'10'",
                "'9'",
                "''",
                "'a'",
                "'A'",
                "'ab'",
                "'a b'",
                "X''",
                "X'61'",
                "X'00'",
                "X'6162'",
                "CAST(X'c3a9' AS TEXT)",
                "CAST(X'80ff' AS TEXT)",
                "CAST(X'610062' AS TEXT)",
        };
        const size_t n = ARRAY_SIZE(lits);
        sqlite3 *h = NULL;
        struct db_row rows[ARRAY_SIZE(lits)];
        sqlite3_stmt *st[ARRAY_SIZE(lits)] = {0};

        REQUIRE(sqlite3_open(":memory:", &h) == SQLITE_OK);
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *sql = NULL;
                REQUIRE(asprintf(&sql, "SELECT %s", lits[i]) > 0);
                REQUIRE(sqlite3_prepare_v2(h, sql, -1, &st[i], NULL) == SQLITE_OK);
                REQUIRE(sqlite3_step(st[i]) == SQLITE_ROW);
                int t = sqlite3_column_type(st[i], 0);
                rows[i] = (struct db_row){.value_type = t == SQLITE_INTEGER ? DB_INTEGER
                                                        : t == SQLITE_FLOAT ? DB_REAL
                                                        : t == SQLITE_BLOB  ? DB_BLOB
                                                        : t == SQLITE_NULL  ? DB_NULL
                                                                            : DB_TEXT};
                rows[i].value_int = sqlite3_column_int64(st[i], 0);
                rows[i].value_real = sqlite3_column_double(st[i], 0);
                rows[i].value = t == SQLITE_NULL ? NULL : sqlite3_column_text(st[i], 0);
                rows[i].value_len = (size_t)sqlite3_column_bytes(st[i], 0);
        }
        /* SQLite compares an integer with a real through long double where
         * it is wider than double (x86-64: 80 bits). Valgrind computes long
         * double as double, which makes SQLite's own answer for integers
         * past 2^53 against reals wrong: those pairs are not judged there. */
        volatile int64_t big = 9007199254740993LL;
        volatile long double big_ld = (long double)big, pow53 = 9007199254740992.0;
        bool wide_long_double = big_ld != pow53;
        for (size_t i = 0; i < n; i++)
                for (size_t j = 0; j < n; j++) {
                        _cleanup_free_ char *sql = NULL;
                        sqlite3_stmt *q = NULL;
                        bool int_real = (rows[i].value_type == DB_INTEGER && rows[j].value_type == DB_REAL) ||
                                        (rows[i].value_type == DB_REAL && rows[j].value_type == DB_INTEGER);
                        const struct db_row *ir = rows[i].value_type == DB_INTEGER ? &rows[i] : &rows[j];

                        if (!wide_long_double && int_real &&
                            (ir->value_int > (1LL << 53) || ir->value_int < -(1LL << 53)))
                                continue;
                        /* SQLite's own answer, from its sort (a comparison
                         * operator would apply affinities): which of the two
                         * comes first, breaking ties both ways. */
                        REQUIRE(asprintf(&sql,
                                         "WITH u(i, x) AS (SELECT 0, %s UNION ALL SELECT 1, %s) "
                                         "SELECT (SELECT i FROM u ORDER BY x, i LIMIT 1), "
                                         "(SELECT i FROM u ORDER BY x, i DESC LIMIT 1)",
                                         lits[i], lits[j]) > 0);
                        REQUIRE(sqlite3_prepare_v2(h, sql, -1, &q, NULL) == SQLITE_OK);
                        REQUIRE(sqlite3_step(q) == SQLITE_ROW);
                        int f1 = sqlite3_column_int(q, 0), f2 = sqlite3_column_int(q, 1);
                        int want = f1 != f2 ? 0 : f1 == 0 ? -1 : 1;
                        sqlite3_finalize(q);
                        int got = sign(order_cmp_value(&rows[i], &rows[j]));
                        if (got != want)
                                fprintf(stderr, "compare %s with %s: got %d, SQLite says %d\n", lits[i], lits[j], got,
                                        want);
                        CHECK_INT(got, want);
                }
        for (size_t i = 0; i < n; i++)
                sqlite3_finalize(st[i]);
        sqlite3_close(h);
}

static void test_cmp_key(void) {
        struct db_row a = {.key = (const unsigned char *)"ABC", .key_len = 3};
        struct db_row b = {.key = (const unsigned char *)"abc", .key_len = 3};
        struct db_row c = {.key = (const unsigned char *)"abcd", .key_len = 4};
        struct db_row d = {.key = (const unsigned char *)"\xc3\x89", .key_len = 2}; /* É: not lower-cased */
        struct db_row e = {.key = (const unsigned char *)"\xc3\xa9", .key_len = 2};
        struct db_row z = {.key = NULL, .key_type = DB_NULL};

        CHECK_INT(order_cmp_key(&a, &b), 0);
        CHECK(order_cmp_key(&a, &c) < 0);
        CHECK(order_cmp_key(&c, &b) > 0);
        CHECK(order_cmp_key(&d, &e) < 0);
        CHECK(order_cmp_key(&z, &a) < 0);
        CHECK(order_cmp_key(&a, &z) > 0);
        CHECK_INT(order_cmp_key(&z, &z), 0);
        CHECK(order_cmp_key(&b, &d) < 0); /* bytes >= 0x80 after ASCII */
}

struct sink {
        char *buf;
        size_t len, cap;
};

static int sink_write(void *userdata, const void *data, size_t n) {
        struct sink *s = userdata;

        if (s->len + n > s->cap) {
                size_t c = s->cap ? s->cap : 256;
                while (c < s->len + n)
                        c *= 2;
                char *b = realloc(s->buf, c);
                if (!b)
                        return -ENOMEM;
                s->buf = b;
                s->cap = c;
        }
        memcpy(s->buf + s->len, data, n);
        s->len += n;
        return 0;
}

static int emit_render(void *userdata, const struct db_row *row) {
        return render_row(userdata, row);
}

struct rendering {
        struct sink out;
        uint64_t lines, invalid, duplicates;
};

/* Renders sql in the given mode; ORDER_BROKEN when the stream says so. */
static int render_sql(struct db *db, const char *sql, enum map_format format, enum db_query_mode mode,
                      struct rendering *ret) {
        struct map_config m = {.name = (char *)"t", .format = format, .on_invalid = ON_INVALID_SKIP};
        struct db_query *q = NULL;
        struct render rd;
        struct order_stream os;
        struct db_row row;
        int r;

        *ret = (struct rendering){0};
        r = db_query_new_mode(db, sql, mode, &q);
        if (r < 0) {
                fprintf(stderr, "%s: %s\n", sql, db_errmsg(db));
                return r;
        }
        render_init(&rd, &m, sink_write, &ret->out);
        order_stream_init(&os, emit_render, &rd);
        while ((r = db_query_next(q, &row)) > 0) {
                r = mode == DB_QUERY_STREAM ? order_stream_add(&os, &row) : render_row(&rd, &row);
                if (r < 0)
                        break;
        }
        if (r == 0 && mode == DB_QUERY_STREAM)
                r = order_stream_finish(&os);
        if (r == 0)
                r = render_finish(&rd);
        ret->lines = rd.n_lines;
        ret->invalid = rd.n_invalid;
        ret->duplicates = rd.n_duplicates;
        order_stream_done(&os);
        render_done(&rd);
        db_query_free(q);
        return r;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

static const char *pick(const char *const *list, size_t n) {
        return list[rnd() % n];
}

/* Lower-case text keys, as the admin panel stores them. */
static const char *const nice_keys[] = {
        "'a@x'", "'b@x'", "'ab@x'", "'a@y'", "'c@x.example'", "'z@z'", "'a'", "'b'", "'a.b@x'", "'a-b@x'",
};
/* Everything else a key column can hold. */
static const char *const hostile_keys[] = {
        "'A@x'",
        "'B@X'",
        "'Ab@x'",
        "'aB@x'",
        "CAST(X'c3a9' AS TEXT)",
        "CAST(X'c389' AS TEXT)",
        "CAST(X'80ff' AS TEXT)",
        "CAST(X'ff' AS TEXT)",
        "X'61'",
        "X'4140'",
        "X'c3a9'",
        "1",
        "2",
        "10",
        "-5",
        "1.5",
        "2.0",
        "NULL",
        "''",
        "'a b'",
        "'#a'",
        "'a:b'",
        "'A'",
        "'[a'",
        "'_a'",
        "'`a'",
        "'~a'",
};
static const char *const nice_values[] = {
        "'v1'", "'v2'", "'v10'", "'x@y'", "'d/a/'", "'{BLF-CRYPT}$2y$10$h::::::'", "'u@x, w@x'",
};
static const char *const hostile_values[] = {
        "'V1'",
        "'1'",
        "'10'",
        "'9'",
        "1",
        "9",
        "10",
        "-1",
        "1.0",
        "1.5",
        "9.0",
        "0.0",
        "-0.0",
        "X'76'",
        "X'7631'",
        "NULL",
        "''",
        "CAST(X'c3a9' AS TEXT)",
        "CAST(X'80' AS TEXT)",
        "'a b'",
        "'a:b'",
        "'v\nx'",
        "9223372036854775807",
        "9.2233720368547758e18",
        "X''",
};

static void fill(sqlite3 *h, size_t n_rows, unsigned key_hostility, unsigned value_hostility) {
        char *err = NULL;

        for (size_t i = 0; i < n_rows; i++) {
                _cleanup_free_ char *sql = NULL;
                bool hk = rnd() % 100 < key_hostility, hv = rnd() % 100 < value_hostility;
                const char *k =
                        hk ? pick(hostile_keys, ARRAY_SIZE(hostile_keys)) : pick(nice_keys, ARRAY_SIZE(nice_keys));
                const char *v = hv ? pick(hostile_values, ARRAY_SIZE(hostile_values))
                                   : pick(nice_values, ARRAY_SIZE(nice_values));
                REQUIRE(asprintf(&sql, "INSERT INTO t(k, v) VALUES (%s, %s)", k, v) > 0);
                if (sqlite3_exec(h, sql, NULL, NULL, &err) != SQLITE_OK) {
                        fprintf(stderr, "%s: %s\n", sql, err);
                        sqlite3_free(err);
                        REQUIRE(false);
                }
        }
}

/* The differential test. Each round: a new table of random rows (some
 * rounds lower-case keys and text values only, others a share of hostile
 * ones), with or without an index on the key, several queries; each
 * rendered both ways in both formats. */
static void test_stream_equals_sorted(void) {
        static const char *const queries[] = {
                "SELECT k, v FROM t",        "SELECT k, v FROM t WHERE rowid % 3 != 0;",
                "SELECT lower(k), v FROM t", "SELECT k, v FROM t ORDER BY rowid DESC",
                "SELECT v, k FROM t",        "SELECT t.k, u.v FROM t JOIN t AS u ON u.rowid = t.rowid + 1",
        };
        unsigned rounds = 400, streamed = 0, broken = 0, nice_rounds = 0;
        _cleanup_free_ char *path = NULL;

        if (getenv("ORDER_TEST_ROUNDS"))
                rounds = (unsigned)atoi(getenv("ORDER_TEST_ROUNDS"));
        REQUIRE(asprintf(&path, "%s/order.sqlite", tmpdir) > 0);
        for (unsigned round = 0; round < rounds; round++) {
                sqlite3 *h = NULL;
                struct db *db = NULL;
                const char *msg = NULL;
                /* A quarter of the rounds clean, a quarter with hostile
                 * values only, the rest with both. */
                unsigned hostility = round % 4 == 0 ? 0 : (unsigned)(rnd() % 60);
                unsigned key_hostility = round % 4 == 1 ? 0 : hostility;
                size_t n_rows = (size_t)(rnd() % (round % 10 == 0 ? 2000 : 60));
                bool index = rnd() % 4 != 0;

                unlink(path);
                REQUIRE(sqlite3_open(path, &h) == SQLITE_OK);
                REQUIRE(sqlite3_exec(h, "PRAGMA synchronous=OFF; CREATE TABLE t(k, v); BEGIN", NULL, NULL, NULL) ==
                        SQLITE_OK);
                fill(h, n_rows, key_hostility, hostility);
                REQUIRE(sqlite3_exec(h, index ? "CREATE INDEX t_k ON t(k); COMMIT" : "COMMIT", NULL, NULL, NULL) ==
                        SQLITE_OK);
                sqlite3_close(h);
                REQUIRE_INT(db_open(path, 1000, &db, &msg), 0);
                REQUIRE(db_is_utf8(db));
                REQUIRE_INT(db_begin(db), 0);
                for (size_t qi = 0; qi < ARRAY_SIZE(queries); qi++)
                        for (int f = 0; f < 2; f++) {
                                enum map_format format = f ? MAP_FORMAT_PASSWD : MAP_FORMAT_POSTFIX;
                                struct rendering want, got;
                                REQUIRE_INT(render_sql(db, queries[qi], format, DB_QUERY_SORTED, &want), 0);
                                int r = render_sql(db, queries[qi], format, DB_QUERY_STREAM, &got);
                                if (r == ORDER_BROKEN)
                                        broken++;
                                else {
                                        REQUIRE_INT(r, 0);
                                        streamed++;
                                        if (!CHECK_MEM(got.out.buf, got.out.len, want.out.buf, want.out.len))
                                                fprintf(stderr, "round %u, query %s, format %d, %zu rows\n", round,
                                                        queries[qi], f, n_rows);
                                        CHECK_UINT(got.lines, want.lines);
                                        CHECK_UINT(got.invalid, want.invalid);
                                        CHECK_UINT(got.duplicates, want.duplicates);
                                }
                                /* Lower-case text keys with text values
                                 * never need the sort. */
                                if (hostility == 0 && qi < 4)
                                        CHECK_INT(r, 0);
                                free(want.out.buf);
                                free(got.out.buf);
                        }
                nice_rounds += hostility == 0;
                db_end(db);
                db_close(db);
        }
        printf("%u renderings streamed, %u broke the order and were sorted, %u rounds without hostile rows\n", streamed,
               broken, nice_rounds);
        /* Both ways must have been taken, often. */
        CHECK(streamed > rounds);
        CHECK(broken > rounds / 2);
}

/* Unit cases of the stream itself. */
static struct rendering stream_rows(const struct db_row *rows, size_t n, enum map_format format, int *ret) {
        struct map_config m = {.name = (char *)"t", .format = format, .on_invalid = ON_INVALID_SKIP};
        struct rendering out = {0};
        struct render rd;
        struct order_stream os;
        int r = 0;

        render_init(&rd, &m, sink_write, &out.out);
        order_stream_init(&os, emit_render, &rd);
        for (size_t i = 0; i < n && r == 0; i++)
                r = order_stream_add(&os, &rows[i]);
        if (r == 0)
                r = order_stream_finish(&os);
        if (r == 0)
                r = render_finish(&rd);
        out.lines = rd.n_lines;
        order_stream_done(&os);
        render_done(&rd);
        *ret = r;
        return out;
}

#define T(k, v)                                                                                                        \
        {                                                                                                              \
                .key = (const unsigned char *)(k), .key_len = sizeof(k) - 1, .value = (const unsigned char *)(v),      \
                .value_len = sizeof(v) - 1                                                                             \
        }

static void test_stream_cases(void) {
        int r;
        {
                /* One key's values in any order come out sorted; a case
                 * variant of the key joins it. */
                const struct db_row rows[] = {T("a@x", "c"), T("A@x", "a"), T("a@x", "b"), T("b@x", "z")};
                struct rendering o = stream_rows(rows, ARRAY_SIZE(rows), MAP_FORMAT_POSTFIX, &r);
                CHECK_INT(r, 0);
                CHECK_MEM(o.out.buf, o.out.len, "a@x\ta, b, c\nb@x\tz\n", strlen("a@x\ta, b, c\nb@x\tz\n"));
                free(o.out.buf);
        }
        {
                /* passwd keeps the first value in SQLite's order. */
                const struct db_row rows[] = {T("a@x", "p2"), T("a@x", "p1")};
                struct rendering o = stream_rows(rows, ARRAY_SIZE(rows), MAP_FORMAT_PASSWD, &r);
                CHECK_INT(r, 0);
                CHECK_MEM(o.out.buf, o.out.len, "a@x:p1\n", 7);
                free(o.out.buf);
        }
        {
                /* A lower-cased key that goes backwards. */
                const struct db_row rows[] = {T("B@x", "1"), T("a@x", "2")};
                struct rendering o = stream_rows(rows, ARRAY_SIZE(rows), MAP_FORMAT_POSTFIX, &r);
                CHECK_INT(r, ORDER_BROKEN);
                free(o.out.buf);
        }
        {
                /* 1 and 1.0: equal to SQLite, different text. */
                struct db_row rows[] = {T("a", "1"), T("a", "1.0")};
                rows[0].value_type = DB_INTEGER;
                rows[0].value_int = 1;
                rows[1].value_type = DB_REAL;
                rows[1].value_real = 1.0;
                struct rendering o = stream_rows(rows, ARRAY_SIZE(rows), MAP_FORMAT_POSTFIX, &r);
                CHECK_INT(r, ORDER_BROKEN);
                free(o.out.buf);
        }
        {
                /* Numbers before text, by value: 9 before 10, both before
                 * the text "10" (which then repeats the pair and goes). */
                struct db_row rows[] = {T("a", "10"), T("a", "10"), T("a", "9")};
                rows[0].value_type = DB_TEXT;
                rows[1].value_type = DB_INTEGER;
                rows[1].value_int = 10;
                rows[2].value_type = DB_INTEGER;
                rows[2].value_int = 9;
                struct rendering o = stream_rows(rows, ARRAY_SIZE(rows), MAP_FORMAT_POSTFIX, &r);
                CHECK_INT(r, 0);
                CHECK_MEM(o.out.buf, o.out.len, "a\t9, 10\n", 8);
                free(o.out.buf);
        }
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_cmp_key);
        RUN(test_cmp_value_matches_sqlite);
        RUN(test_stream_cases);
        RUN(test_stream_equals_sorted);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
