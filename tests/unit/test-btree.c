/* Unit tests of btree.h against SQLite itself: databases written by SQLite
 * in this process (tables of small and of large rows, so overflow pages,
 * an index, a WITHOUT ROWID table, deletes, so freelist pages; page sizes
 * 512 to 65536, reserved bytes), read page by page from the file, and
 * every page's owner compared with what SQLite's dbstat says: every page
 * of a table b-tree is found in its table, no other page is ever named.
 * Then damaged trees: a child pointer looping back, a pointer past the
 * end, a cell pointer outside the page; none names a wrong owner or loops. */
#include "btree.h"

#include <sqlite3.h>

#include "util.h"

#include "test.h"

static char *tmpdir;

struct file_image {
        uint8_t *bytes;
        size_t len;
        uint32_t page_size;
        unsigned reads;
};

static int image_read(void *userdata, uint32_t pgno, uint8_t *buf) {
        struct file_image *im = userdata;
        uint64_t off = (uint64_t)(pgno - 1) * im->page_size;

        im->reads++;
        if (pgno == 0 || off + im->page_size > im->len)
                return -EIO;
        memcpy(buf, im->bytes + off, im->page_size);
        return 0;
}

static void exec(sqlite3 *db, const char *sql) {
        char *err = NULL;

        if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", sql, err);
                abort();
        }
}

/* The tables' roots (sqlite_schema first, root 1), their names. */
struct tables {
        uint32_t roots[32];
        char *names[32];
        size_t n;
};

static void read_tables(sqlite3 *db, struct tables *t) {
        sqlite3_stmt *st;

        t->roots[0] = 1;
        t->names[0] = strdup("sqlite_schema");
        t->n = 1;
        if (sqlite3_prepare_v2(db, "SELECT name, rootpage FROM sqlite_schema WHERE type = 'table' AND rootpage > 0", -1,
                               &st, NULL) != SQLITE_OK)
                abort();
        while (sqlite3_step(st) == SQLITE_ROW && t->n < 32) {
                t->names[t->n] = strdup((const char *)sqlite3_column_text(st, 0));
                t->roots[t->n++] = (uint32_t)sqlite3_column_int64(st, 1);
        }
        sqlite3_finalize(st);
}

static void free_tables(struct tables *t) {
        for (size_t i = 0; i < t->n; i++)
                free(t->names[i]);
}

/* Builds a database of that page size (with reserved bytes per page),
 * returns its connection (left open, in rollback-journal mode). */
static sqlite3 *build(const char *path, unsigned page_size, unsigned reserved, unsigned rows) {
        sqlite3 *db;
        char sql[512];

        unlink(path);
        if (sqlite3_open(path, &db) != SQLITE_OK)
                abort();
        snprintf(sql, sizeof(sql), "PRAGMA page_size = %u; PRAGMA journal_mode = DELETE", page_size);
        exec(db, sql);
        if (reserved) {
                /* SQLITE_FCNTL_RESERVE_BYTES on an empty database. */
                int n = (int)reserved;
                sqlite3_file_control(db, "main", SQLITE_FCNTL_RESERVE_BYTES, &n);
        }
        exec(db, "CREATE TABLE domains (id INTEGER PRIMARY KEY, domain TEXT UNIQUE, active INTEGER);"
                 "CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT, password TEXT, domain_id INTEGER);"
                 "CREATE INDEX accounts_email ON accounts (email);"
                 "CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB);"
                 "CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT) WITHOUT ROWID;"
                 "CREATE TABLE empty (x);");
        exec(db, "BEGIN");
        snprintf(sql, sizeof(sql),
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %u) "
                 "INSERT INTO accounts SELECT i * 3, 'u' || i || '@d' || (i %% 40) || '.example', "
                 "'$2y$10$' || hex(randomblob(26)), i %% 40 FROM n",
                 rows);
        exec(db, sql);
        exec(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) "
                 "INSERT INTO domains SELECT i, 'd' || i || '.example', 1 FROM n;"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) "
                 "INSERT INTO blobs SELECT i, randomblob(i * 700) FROM n;"
                 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) "
                 "INSERT INTO kv SELECT 'k' || i, hex(randomblob(20)) FROM n;");
        exec(db, "COMMIT");
        /* Free pages. */
        exec(db, "DELETE FROM accounts WHERE id % 7 = 0; DELETE FROM blobs WHERE id % 3 = 0");
        return db;
}

static struct file_image load(const char *path, uint32_t page_size) {
        struct file_image im = {.page_size = page_size};

        im.bytes = (uint8_t *)test_read_file(path, &im.len);
        if (!im.bytes)
                abort();
        return im;
}

/* Every page of the file against dbstat. */
static void check_every_page(sqlite3 *db, struct file_image *im, unsigned usable, const char *label) {
        struct tables t = {};
        struct btree_db b = {.read = image_read, .userdata = im, .page_size = im->page_size, .usable_size = usable};
        uint32_t n_pages = (uint32_t)(im->len / im->page_size), found = 0, table_pages = 0, other = 0;
        char **owner_of = calloc(n_pages + 1, sizeof(char *)), **tree_of = calloc(n_pages + 1, sizeof(char *));
        sqlite3_stmt *st;

        read_tables(db, &t);
        /* owner_of: the pages of rowid tables' b-trees, which must be
         * found; tree_of: every page dbstat places (overflow pages, index
         * pages, WITHOUT ROWID tables), which may only get that name. */
        if (sqlite3_prepare_v2(db,
                               "SELECT s.name, s.pageno, s.pagetype IN ('internal', 'leaf') AND "
                               "(s.name = 'sqlite_schema' OR (m.type = 'table' AND NOT m.sql LIKE '%WITHOUT ROWID%')) "
                               "FROM dbstat AS s LEFT JOIN sqlite_schema AS m ON m.name = s.name",
                               -1, &st, NULL) != SQLITE_OK) {
                fprintf(stderr, "%s\n", sqlite3_errmsg(db));
                abort();
        }
        while (sqlite3_step(st) == SQLITE_ROW) {
                uint32_t pg = (uint32_t)sqlite3_column_int64(st, 1);
                const char *name = (const char *)sqlite3_column_text(st, 0);
                if (pg < 1 || pg > n_pages)
                        continue;
                if (!tree_of[pg])
                        tree_of[pg] = strdup(name);
                if (sqlite3_column_int(st, 2) && !owner_of[pg])
                        owner_of[pg] = strdup(name);
        }
        sqlite3_finalize(st);

        for (uint32_t pg = 1; pg <= n_pages; pg++) {
                long o = -2;
                int r = btree_owner(&b, t.roots, t.n, pg, &o);
                if (!CHECK_INT(r, 0))
                        continue;
                if (owner_of[pg]) {
                        table_pages++;
                        if (o >= 0 && streq(t.names[o], owner_of[pg]))
                                found++;
                        else
                                fprintf(stderr, "    %s: page %u of %s: got %s\n", label, pg, owner_of[pg],
                                        o >= 0 ? t.names[o] : "none");
                } else {
                        other++;
                        if (!CHECK(o == -1 || (tree_of[pg] && streq(t.names[o], tree_of[pg]))))
                                fprintf(stderr, "    %s: page %u (of %s) named %s\n", label, pg,
                                        tree_of[pg] ? tree_of[pg] : "no tree", t.names[o]);
                }
        }
        CHECK_UINT(found, table_pages);
        /* The database really has pages of every kind. */
        CHECK(table_pages > 10);
        CHECK(other > 10);
        for (uint32_t pg = 0; pg <= n_pages; pg++) {
                free(owner_of[pg]);
                free(tree_of[pg]);
        }
        free(owner_of);
        free(tree_of);
        free_tables(&t);
}

static void test_every_page_size(void) {
        static const unsigned sizes[] = {512, 1024, 4096, 16384, 65536};
        _cleanup_free_ char *path = test_path(tmpdir, "b.sqlite");

        for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
                char label[64];
                unsigned rows = sizes[i] >= 16384 ? 20000 : 3000;
                sqlite3 *db = build(path, sizes[i], 0, rows);
                struct file_image im = load(path, sizes[i]);

                snprintf(label, sizeof(label), "page size %u", sizes[i]);
                check_every_page(db, &im, sizes[i], label);
                free(im.bytes);
                sqlite3_close(db);
        }
}

static void test_reserved_bytes(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "r.sqlite");
        sqlite3 *db = build(path, 1024, 32, 3000);
        struct file_image im = load(path, 1024);

        REQUIRE_UINT(im.bytes[20], 32);
        check_every_page(db, &im, 1024 - 32, "reserved 32");
        free(im.bytes);
        sqlite3_close(db);
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t)(v >> 24);
        p[1] = (uint8_t)(v >> 16);
        p[2] = (uint8_t)(v >> 8);
        p[3] = (uint8_t)v;
}

/* Damage the accounts tree's root (an interior page) and look for one of
 * its leaves: not found (never another table), and the reads are bounded. */
static void test_damaged_trees(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "d.sqlite");
        sqlite3 *db = build(path, 1024, 0, 3000);
        struct file_image im = load(path, 1024);
        struct tables t = {};
        struct btree_db b = {.read = image_read, .userdata = &im, .page_size = 1024, .usable_size = 1024};
        uint32_t root = 0, leaf = 0;
        size_t ai = 0;
        uint8_t *rp;
        long o;

        read_tables(db, &t);
        for (size_t i = 0; i < t.n; i++)
                if (streq(t.names[i], "accounts")) {
                        root = t.roots[i];
                        ai = i;
                }
        REQUIRE(root > 1);
        rp = im.bytes + (size_t)(root - 1) * 1024;
        REQUIRE_UINT(rp[0], 0x05);
        /* The leaf the right-most pointer leads to, through interior pages. */
        {
                uint32_t pg = get_be32(rp + 8);
                while (im.bytes[(size_t)(pg - 1) * 1024] == 0x05)
                        pg = get_be32(im.bytes + (size_t)(pg - 1) * 1024 + 8);
                leaf = pg;
        }
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        REQUIRE_INT(o, (long)ai);

        /* A right-most pointer back to the root: a loop. */
        uint32_t saved = get_be32(rp + 8);
        put_be32(rp + 8, root);
        im.reads = 0;
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK_INT(o, -1);
        CHECK(im.reads < 200);
        /* Past the end of the file. */
        put_be32(rp + 8, 0x7fffffff);
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK_INT(o, -1);
        put_be32(rp + 8, 0);
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK_INT(o, -1);
        put_be32(rp + 8, saved);
        /* A cell count beyond the page: the root is no b-tree page then. */
        uint8_t c0 = rp[3], c1 = rp[4];
        rp[3] = 0xff;
        rp[4] = 0xff;
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK_INT(o, -1);
        rp[3] = c0;
        rp[4] = c1;
        /* A cell pointer into the header. */
        uint8_t p0 = rp[12], p1 = rp[13];
        rp[12] = 0;
        rp[13] = 2;
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK(o == -1 || o == (long)ai);
        rp[12] = p0;
        rp[13] = p1;
        REQUIRE_INT(btree_owner(&b, t.roots, t.n, leaf, &o), 0);
        CHECK_INT(o, (long)ai);
        /* The target page itself unreadable: its read error is returned. */
        CHECK_INT(btree_owner(&b, t.roots, t.n, (uint32_t)(im.len / 1024) + 5, &o), -EIO);
        CHECK_INT(o, -1);
        free_tables(&t);
        free(im.bytes);
        sqlite3_close(db);
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_every_page_size);
        RUN(test_reserved_bytes);
        RUN(test_damaged_trees);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
