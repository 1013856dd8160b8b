/* Unit tests of wal.h: the wal-index header parsed as SQLite lays it out,
 * and frame headers of a WAL image turned into page lists, refusing
 * anything of another WAL generation. Checked against a real WAL too:
 * a database written by SQLite in this process, read through db.h. */
#include "wal.h"

#include <sqlite3.h>

#include "db.h"
#include "util.h"

#include "test.h"

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

struct image {
        uint8_t *bytes;
        size_t len;
        int reads;
};

static int image_read(void *userdata, void *buf, size_t n, uint64_t off) {
        struct image *im = userdata;

        im->reads++;
        if (off + n > im->len)
                return -EIO;
        memcpy(buf, im->bytes + off, n);
        return 0;
}

#define PAGE 512

/* A WAL image: header with salt, then one frame per page number. */
static struct image make_wal(const uint8_t salt[8], const uint32_t *pgnos, size_t n) {
        struct image im = {.len = 32 + n * (24 + PAGE)};

        im.bytes = calloc(1, im.len);
        put_be32(im.bytes, 0x377f0682);
        put_be32(im.bytes + 4, 3007000);
        put_be32(im.bytes + 8, PAGE);
        memcpy(im.bytes + 16, salt, 8);
        for (size_t i = 0; i < n; i++) {
                uint8_t *f = im.bytes + 32 + i * (24 + PAGE);
                put_be32(f, pgnos[i]);
                put_be32(f + 4, i + 1 == n ? 10 : 0);
                memcpy(f + 8, salt, 8);
        }
        return im;
}

static void test_pages_between(void) {
        const uint8_t salt[8] = {1, 2, 3, 4, 5, 6, 7, 8}, other[8] = {1, 2, 3, 5, 5, 6, 7, 8};
        const uint32_t pgnos[] = {7, 3, 7, 9, 3, 12};
        struct image im = make_wal(salt, pgnos, ARRAY_SIZE(pgnos));
        struct wal_pos from = {.mx_frame = 1, .page_size = PAGE}, to = {.mx_frame = 5, .page_size = PAGE};
        uint32_t *pages = NULL;
        size_t n = 0;

        memcpy(from.salt, salt, 8);
        memcpy(to.salt, salt, 8);
        /* Frames 2..5: pages 3, 7, 9, 3: sorted, once each. */
        REQUIRE_INT(wal_pages_between(image_read, &im, &from, &to, 100, &pages, &n), 0);
        REQUIRE_UINT(n, 3);
        CHECK_UINT(pages[0], 3);
        CHECK_UINT(pages[1], 7);
        CHECK_UINT(pages[2], 9);
        free(pages);
        pages = NULL;

        /* Nothing new. */
        REQUIRE_INT(wal_pages_between(image_read, &im, &to, &to, 100, &pages, &n), 0);
        CHECK_UINT(n, 0);
        free(pages);
        pages = NULL;

        /* Too many. */
        CHECK_INT(wal_pages_between(image_read, &im, &from, &to, 3, &pages, &n), -E2BIG);

        /* Another generation: the points, the header, a frame. */
        struct wal_pos to2 = to;
        memcpy(to2.salt, other, 8);
        CHECK_INT(wal_pages_between(image_read, &im, &from, &to2, 100, &pages, &n), -ESTALE);
        struct wal_pos from2 = from;
        memcpy(from2.salt, other, 8);
        CHECK_INT(wal_pages_between(image_read, &im, &from2, &to2, 100, &pages, &n), -ESTALE);
        memcpy(im.bytes + 32 + 3 * (24 + PAGE) + 8, other, 8); /* frame 4 */
        CHECK_INT(wal_pages_between(image_read, &im, &from, &to, 100, &pages, &n), -ESTALE);
        /* Backwards, or another page size. */
        CHECK_INT(wal_pages_between(image_read, &im, &to, &from, 100, &pages, &n), -ESTALE);
        struct wal_pos to3 = to;
        to3.page_size = 1024;
        CHECK_INT(wal_pages_between(image_read, &im, &from, &to3, 100, &pages, &n), -ESTALE);
        /* Frames beyond the file. */
        struct wal_pos far = to;
        far.mx_frame = 50;
        CHECK_INT(wal_pages_between(image_read, &im, &to, &far, 100, &pages, &n), -EIO);
        free(im.bytes);
}

static void test_parse_index(void) {
        uint8_t h[2][WAL_INDEX_HDR_SIZE] = {0};
        struct wal_pos pos;
        uint16_t sz = 4096;
        uint32_t mx = 77, change = 5;

        h[0][12] = 1; /* isInit */
        memcpy(h[0] + 14, &sz, 2);
        memcpy(h[0] + 16, &mx, 4);
        memcpy(h[0] + 8, &change, 4);
        memcpy(h[0] + 32, "saltsalt", 8);
        memcpy(h[1], h[0], sizeof(h[0]));
        REQUIRE_INT(wal_parse_index(h[0], h[1], &pos), 0);
        CHECK_UINT(pos.mx_frame, 77);
        CHECK_UINT(pos.page_size, 4096);
        CHECK_UINT(pos.change, 5);
        CHECK(memcmp(pos.salt, "saltsalt", 8) == 0);
        /* 65536 is stored as 1. */
        sz = 1;
        memcpy(h[0] + 14, &sz, 2);
        memcpy(h[1] + 14, &sz, 2);
        REQUIRE_INT(wal_parse_index(h[0], h[1], &pos), 0);
        CHECK_UINT(pos.page_size, 65536);
        /* The copies differ: a writer is at work. */
        h[1][16]++;
        CHECK_INT(wal_parse_index(h[0], h[1], &pos), -EAGAIN);
        h[1][16]--;
        h[0][12] = h[1][12] = 0;
        CHECK_INT(wal_parse_index(h[0], h[1], &pos), -EAGAIN);
}

/* A database SQLite writes here, read back through db.h: the position
 * moves by the frames of each commit and names the pages written. */
static void test_real_wal(void) {
        _cleanup_free_ char *dir = test_mkdtemp(), *path = NULL;
        sqlite3 *w = NULL;
        struct db *db = NULL;
        struct wal_pos a, b;
        uint32_t *pages = NULL;
        size_t n = 0;
        const char *msg;

        REQUIRE(asprintf(&path, "%s/wal.sqlite", dir) > 0);
        REQUIRE(sqlite3_open(path, &w) == SQLITE_OK);
        REQUIRE(sqlite3_exec(w, "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1)", NULL, NULL,
                             NULL) == SQLITE_OK);
        REQUIRE_INT(db_open(path, 1000, &db, &msg), 0);
        REQUIRE_INT(db_begin(db), 0);
        db_end(db);
        REQUIRE_INT(db_wal_pos(db, &a), 0);
        CHECK_UINT(a.page_size, 4096);
        REQUIRE(sqlite3_exec(w, "INSERT INTO t VALUES (2)", NULL, NULL, NULL) == SQLITE_OK);
        REQUIRE_INT(db_wal_pos(db, &b), 0);
        CHECK_UINT(b.mx_frame, a.mx_frame + 1); /* one page: t's root */
        REQUIRE_INT(db_wal_pages_between(db, &a, &b, 100, &pages, &n), 0);
        REQUIRE_UINT(n, 1);
        CHECK_UINT(pages[0], 2);
        free(pages);
        pages = NULL;
        /* A checkpoint that restarts the WAL: the next commit is of
         * another generation. */
        REQUIRE(sqlite3_exec(w, "PRAGMA wal_checkpoint(RESTART); INSERT INTO t VALUES (3)", NULL, NULL, NULL) ==
                SQLITE_OK);
        REQUIRE_INT(db_wal_pos(db, &a), 0);
        CHECK(memcmp(a.salt, b.salt, 8) != 0);
        CHECK_INT(db_wal_pages_between(db, &b, &a, 100, &pages, &n), -ESTALE);
        db_close(db);
        sqlite3_close(w);
        test_rm_rf(dir);
}

/* The frame index: the last frame of each page, grown by the frames a
 * position adds, started again at another generation or header. */
static void test_frames(void) {
        const uint8_t salt[8] = {1, 2, 3, 4, 5, 6, 7, 8}, other[8] = {9, 2, 3, 4, 5, 6, 7, 8};
        uint32_t pgnos[600];
        struct image im;
        struct wal_frames f = {};
        struct wal_pos pos = {.page_size = PAGE};

        for (uint32_t i = 0; i < 600; i++)
                pgnos[i] = 1 + (i * 7) % 250; /* repeats: the last frame wins */
        im = make_wal(salt, pgnos, 600);
        memcpy(pos.salt, salt, 8);
        pos.mx_frame = 300;
        REQUIRE_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), 0);
        CHECK_UINT(f.mx_frame, 300);
        for (uint32_t page = 1; page <= 260; page++) {
                uint32_t want = 0;
                for (uint32_t i = 0; i < 300; i++)
                        if (pgnos[i] == page)
                                want = i + 1;
                if (!CHECK_UINT(wal_frames_find(&f, page), want))
                        fprintf(stderr, "    page %u\n", page);
        }
        CHECK_UINT(wal_frames_find(&f, 0), 0);
        /* Grown: only the new frames are read. */
        pos.mx_frame = 600;
        im.reads = 0;
        REQUIRE_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), 0);
        CHECK_INT(im.reads, 300 + 2);
        for (uint32_t page = 1; page <= 250; page++) {
                uint32_t want = 0;
                for (uint32_t i = 0; i < 600; i++)
                        if (pgnos[i] == page)
                                want = i + 1;
                CHECK_UINT(wal_frames_find(&f, page), want);
        }
        CHECK_INT(wal_frames_check(&f, image_read, &im), 0);
        CHECK_UINT(wal_frame_data_offset(PAGE, 1), 32 + 24);
        CHECK_UINT(wal_frame_data_offset(PAGE, 3), 32 + 2 * (24 + PAGE) + 24);
        /* Too many frames: nothing kept. */
        CHECK_INT(wal_frames_update(&f, image_read, &im, &pos, 599), -E2BIG);
        CHECK_UINT(f.n, 0);
        CHECK_UINT(wal_frames_find(&f, pgnos[0]), 0);
        /* The WAL reset under the index: its header has other salts. */
        REQUIRE_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), 0);
        memcpy(im.bytes + 16, other, 8);
        CHECK_INT(wal_frames_check(&f, image_read, &im), -ESTALE);
        CHECK_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), -ESTALE);
        /* A position of the new generation: read from the start. */
        memcpy(pos.salt, other, 8);
        pos.mx_frame = 10;
        CHECK_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), -ESTALE); /* frames still carry the old salt */
        CHECK_UINT(f.n, 0);
        for (uint32_t i = 0; i < 10; i++)
                memcpy(im.bytes + 32 + i * (24 + PAGE) + 8, other, 8);
        REQUIRE_INT(wal_frames_update(&f, image_read, &im, &pos, 1000), 0);
        CHECK_UINT(f.mx_frame, 10);
        CHECK_UINT(wal_frames_find(&f, pgnos[3]), 4);
        CHECK_UINT(wal_frames_find(&f, pgnos[20]), 0);
        wal_frames_done(&f);
        free(im.bytes);
}

/* db_page_owners on a WAL database SQLite writes here, against dbstat in
 * the same state: pages in the -wal and in the file, every page of a
 * table's b-tree named, none other. */
static void test_real_owners(void) {
        _cleanup_free_ char *dir = test_mkdtemp(), *path = NULL;
        sqlite3 *w = NULL;
        sqlite3_stmt *st;
        struct db *db = NULL;
        struct wal_pos pos;
        struct wal_frames f = {};
        const char *msg;
        uint32_t n_pages = 0, *pages, named = 0, table_pages = 0;
        char **owner, **want;

        REQUIRE(asprintf(&path, "%s/owners.sqlite", dir) > 0);
        REQUIRE(sqlite3_open(path, &w) == SQLITE_OK);
        REQUIRE(sqlite3_exec(w,
                             "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;"
                             "CREATE TABLE a (id INTEGER PRIMARY KEY, s TEXT); CREATE INDEX a_s ON a (s);"
                             "CREATE TABLE b (id INTEGER PRIMARY KEY, big BLOB);"
                             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) "
                             "INSERT INTO a SELECT i, hex(randomblob(12)) FROM n;"
                             "INSERT INTO b VALUES (1, randomblob(5000));"
                             "PRAGMA wal_checkpoint(TRUNCATE);"
                             "UPDATE a SET s = 'changed' WHERE id % 50 = 0; INSERT INTO b VALUES (2, randomblob(3000));"
                             "DELETE FROM a WHERE id BETWEEN 700 AND 900",
                             NULL, NULL, NULL) == SQLITE_OK);
        REQUIRE(sqlite3_prepare_v2(w, "PRAGMA page_count", -1, &st, NULL) == SQLITE_OK);
        REQUIRE(sqlite3_step(st) == SQLITE_ROW);
        n_pages = (uint32_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        want = calloc(n_pages + 1, sizeof(char *));
        REQUIRE(sqlite3_prepare_v2(w,
                                   "SELECT name, pageno FROM dbstat WHERE pagetype IN ('internal', 'leaf') AND name IN "
                                   "('a', 'b', 'sqlite_schema')",
                                   -1, &st, NULL) == SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
                uint32_t pg = (uint32_t)sqlite3_column_int64(st, 1);
                if (pg <= n_pages)
                        want[pg] = strdup((const char *)sqlite3_column_text(st, 0));
        }
        sqlite3_finalize(st);

        REQUIRE_INT(db_open(path, 1000, &db, &msg), 0);
        REQUIRE_INT(db_begin(db), 0);
        db_end(db);
        REQUIRE_INT(db_begin(db), 0);
        REQUIRE_INT(db_wal_pos(db, &pos), 0);
        CHECK(pos.mx_frame > 0);
        pages = calloc(n_pages, sizeof(*pages));
        owner = calloc(n_pages, sizeof(*owner));
        for (uint32_t i = 0; i < n_pages; i++)
                pages[i] = i + 1;
        REQUIRE_INT(db_page_owners(db, &f, &pos, 100000, pages, n_pages, owner), 0);
        CHECK(f.n > 10); /* pages read from the -wal too */
        for (uint32_t i = 0; i < n_pages; i++) {
                const char *w_name = want[i + 1];
                table_pages += w_name != NULL;
                if (w_name && owner[i] && streq(owner[i], w_name))
                        named++;
                else if (w_name || owner[i])
                        fprintf(stderr, "    page %u: dbstat %s, descent %s\n", i + 1, w_name ? w_name : "-",
                                owner[i] ? owner[i] : "-");
                free(owner[i]);
        }
        CHECK(table_pages > 20);
        CHECK_UINT(named, table_pages);
        db_end(db);
        /* Pages past max_frames are not traced. */
        CHECK_INT(db_page_owners(db, &f, &pos, 1, pages, 1, owner), -E2BIG);
        CHECK(owner[0] == NULL);
        for (uint32_t i = 0; i <= n_pages; i++)
                free(want[i]);
        free(want);
        free(owner);
        free(pages);
        wal_frames_done(&f);
        db_close(db);
        sqlite3_close(w);
        test_rm_rf(dir);
}

int main(void) {
        RUN(test_parse_index);
        RUN(test_pages_between);
        RUN(test_real_wal);
        RUN(test_frames);
        RUN(test_real_owners);
        return test_end();
}
