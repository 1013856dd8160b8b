/* Unit tests of files.h: the name rules, the PEM private-key check against
 * keys made here with libcrypto (RSA PKCS#8, traditional RSA and EC, and
 * what is not one), and whole cycles on a real SQLite database in a
 * temporary directory: files written with their mode, manifest, unchanged
 * files left alone, removals of what mapsyncd wrote only, a changed name,
 * on_invalid = fail, leftover temporary files, a manifest that lists
 * files that are gone, and the directory guard. */
#include "files.h"

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sqlite3.h>

#include "log.h"
#include "util.h"

#include "test.h"

static char *tmpdir;

/* ---- keys ---------------------------------------------------------------- */

static char *bio_text(BIO *b) {
        char *data = NULL, *out;
        long n = BIO_get_mem_data(b, &data);

        out = malloc((size_t)n + 1);
        if (!out)
                abort();
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        BIO_free(b);
        return out;
}

static EVP_PKEY *rsa_key(void) {
        EVP_PKEY *k = EVP_RSA_gen(1024);
        if (!k)
                abort();
        return k;
}

/* "-----BEGIN PRIVATE KEY-----" (PKCS#8). */
static char *pem_pkcs8(EVP_PKEY *k) {
        BIO *b = BIO_new(BIO_s_mem());
        if (!PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL))
                abort();
        return bio_text(b);
}

/* "-----BEGIN RSA PRIVATE KEY-----" or "EC PRIVATE KEY". */
static char *pem_traditional(EVP_PKEY *k, const EVP_CIPHER *enc) {
        BIO *b = BIO_new(BIO_s_mem());
        if (!PEM_write_bio_PrivateKey_traditional(b, k, enc, enc ? (unsigned char *)"secret" : NULL, enc ? 6 : 0, NULL,
                                                  NULL))
                abort();
        return bio_text(b);
}

static char *pem_public(EVP_PKEY *k) {
        BIO *b = BIO_new(BIO_s_mem());
        if (!PEM_write_bio_PUBKEY(b, k))
                abort();
        return bio_text(b);
}

static char *pem_encrypted_pkcs8(EVP_PKEY *k) {
        BIO *b = BIO_new(BIO_s_mem());
        if (!PEM_write_bio_PKCS8PrivateKey(b, k, EVP_aes_128_cbc(), (char *)"secret", 6, NULL, NULL))
                abort();
        return bio_text(b);
}

static const char *check_pem(const char *s) {
        return files_check_content(FILES_CONTENT_PEM_PRIVATE_KEY, s, strlen(s));
}

/* A line of the key's body: it must never appear in a reason. */
static char *body_line(const char *pem) {
        const char *nl = strchr(pem, '\n');
        const char *end = strchr(nl + 1, '\n');
        return strndup(nl + 1, (size_t)(end - nl - 1));
}

static void test_names(void) {
        char big[300], max[256];

        memset(big, 'a', sizeof(big));
        memset(max, 'a', sizeof(max));
        CHECK(files_check_name("d0001.example.mail.private", 26) == NULL);
        CHECK(files_check_name("A-Z_a.z-09", 10) == NULL);
        CHECK(files_check_name("x..y", 4) == NULL); /* no '/': stays in the directory */
        CHECK(files_check_name(max, 247) == NULL);
        CHECK_PREFIX(files_check_name(max, 248), "file name is longer than 247 bytes");
        CHECK_PREFIX(files_check_name(max, 255), "file name is longer than 247 bytes");
        CHECK_STR(files_check_name(big, 300), "file name is longer than 255 bytes");
        CHECK_STR(files_check_name(big, 256), "file name is longer than 255 bytes");
        CHECK_STR(files_check_name("../x", 4), "file name starts with '.'");
        CHECK_STR(files_check_name("..", 2), "file name starts with '.'");
        CHECK_STR(files_check_name(".", 1), "file name starts with '.'");
        CHECK_STR(files_check_name(".hidden", 7), "file name starts with '.'");
        CHECK_STR(files_check_name("a/b", 3), "file name holds '/'");
        CHECK_STR(files_check_name("x/../../etc/passwd", 18), "file name holds '/'");
        CHECK_STR(files_check_name("a\0b", 3), "file name holds a NUL byte");
        CHECK_STR(files_check_name("", 0), "file name is empty");
        CHECK_STR(files_check_name(NULL, 0), "file name is NULL");
        CHECK(files_check_name("a b", 3) != NULL);
        CHECK(files_check_name("a\nb", 3) != NULL);
        CHECK(files_check_name("caf\xc3\xa9", 5) != NULL);
        CHECK(files_check_name("a*", 2) != NULL);
        CHECK(files_check_name(".x.abc123", 9) != NULL); /* replace.h's temporary name of x */
}

static void test_pem(void) {
        EVP_PKEY *rsa = rsa_key(), *ec = EVP_EC_gen("P-256");
        _cleanup_free_ char *p8 = pem_pkcs8(rsa), *trad = pem_traditional(rsa, NULL);
        _cleanup_free_ char *ec_trad = pem_traditional(ec, NULL), *ec_p8 = pem_pkcs8(ec);
        _cleanup_free_ char *pub = pem_public(rsa), *enc8 = pem_encrypted_pkcs8(rsa);
        _cleanup_free_ char *enc_trad = pem_traditional(rsa, EVP_aes_128_cbc());
        _cleanup_free_ char *two = NULL, *trailing = NULL, *crlf = NULL, *noeol = NULL, *flipped = NULL;
        _cleanup_free_ char *body = body_line(p8), *lead = NULL, *nul = NULL;
        const char *why;

        REQUIRE(ec != NULL);
        CHECK_PREFIX(p8, "-----BEGIN PRIVATE KEY-----\n");
        CHECK_PREFIX(trad, "-----BEGIN RSA PRIVATE KEY-----\n");
        CHECK_PREFIX(ec_trad, "-----BEGIN EC PRIVATE KEY-----\n");
        CHECK(check_pem(p8) == NULL);
        CHECK(check_pem(trad) == NULL);
        CHECK(check_pem(ec_trad) == NULL);
        CHECK(check_pem(ec_p8) == NULL);

        /* CRLF line ends and no final line break are still one block. */
        crlf = calloc(2 * strlen(p8) + 1, 1);
        for (char *s = p8, *o = crlf; *s; s++) {
                if (*s == '\n')
                        *o++ = '\r';
                *o++ = *s;
        }
        CHECK(check_pem(crlf) == NULL);
        noeol = strndup(p8, strlen(p8) - 1);
        CHECK(check_pem(noeol) == NULL);

        CHECK(check_pem(pub) != NULL);
        CHECK(check_pem(enc8) != NULL);
        why = check_pem(enc_trad); /* Proc-Type and DEK-Info headers */
        CHECK(why != NULL);
        REQUIRE(asprintf(&two, "%s%s", p8, trad) > 0);
        CHECK_STR(check_pem(two), "not a PEM private key: text follows the END line (one block only)");
        REQUIRE(asprintf(&trailing, "%sjunk\n", p8) > 0);
        CHECK(check_pem(trailing) != NULL);
        REQUIRE(asprintf(&lead, "x\n%s", p8) > 0);
        CHECK(check_pem(lead) != NULL);
        CHECK(check_pem("") != NULL);
        CHECK(check_pem("-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n") != NULL);
        CHECK(check_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n") != NULL);
        CHECK(check_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n") != NULL);
        CHECK(check_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") != NULL);
        /* Well-formed text, not a key: libcrypto's verdict. */
        CHECK_STR(check_pem("-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n"),
                  "not a PEM private key: libcrypto cannot read it as one");
        flipped = strdup(p8);
        flipped[40] = flipped[40] == 'A' ? 'B' : 'A';
        flipped[41] = flipped[41] == 'A' ? 'B' : 'A';
        flipped[42] = flipped[42] == 'A' ? 'B' : 'A';
        CHECK(check_pem(flipped) != NULL);
        nul = strdup(p8);
        nul[50] = '\0';
        CHECK(files_check_content(FILES_CONTENT_PEM_PRIVATE_KEY, nul, strlen(p8)) != NULL);
        CHECK_STR(files_check_content(FILES_CONTENT_PEM_PRIVATE_KEY, NULL, 0), "content is NULL");
        CHECK_STR(files_check_content(FILES_CONTENT_ANY, p8, FILES_CONTENT_MAX + 1), "content is larger than 1 MiB");
        CHECK(files_check_content(FILES_CONTENT_ANY, "anything\n\001", 10) == NULL);

        /* No reason quotes the key. */
        for (const char *const *t = (const char *const[]){two, trailing, lead, flipped, enc_trad, pub, NULL}; *t; t++) {
                why = check_pem(*t);
                CHECK(why && !strstr(why, body) && !strstr(why, "MII"));
        }
        EVP_PKEY_free(rsa);
        EVP_PKEY_free(ec);
}

/* ---- cycles ------------------------------------------------------------- */

struct env {
        char *dir, *db, *out, *state, *conf_text;
        struct config *config;
};

static void db_exec(const char *db, const char *sql, const char *a, const char *b) {
        sqlite3 *h = NULL;
        sqlite3_stmt *st = NULL;

        if (sqlite3_open(db, &h) != SQLITE_OK || sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
                fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(h));
                abort();
        }
        if (a)
                sqlite3_bind_text(st, 1, a, -1, SQLITE_TRANSIENT);
        if (b)
                sqlite3_bind_text(st, 2, b, -1, SQLITE_TRANSIENT);
        if (sqlite3_step(st) != SQLITE_DONE)
                abort();
        sqlite3_finalize(st);
        sqlite3_close(h);
}

static void env_config(struct env *e, const char *extra) {
        struct config_errors errors = {0};
        _cleanup_free_ char *text = NULL;

        e->config = config_free(e->config);
        if (asprintf(&text,
                     "[database]\npath = %s\n[sync]\nstate_dir = %s\n[files keys]\ndirectory = %s\n"
                     "query = SELECT name, content FROM t\nmode = 0640\n%s",
                     e->db, e->state, e->out, extra ? extra : "") < 0)
                abort();
        if (config_parse_string("test.conf", text, &e->config, &errors) < 0) {
                for (size_t i = 0; i < errors.n_msgs; i++)
                        fprintf(stderr, "%s\n", errors.msgs[i]);
                abort();
        }
        config_errors_done(&errors);
}

static struct env env_new(const char *name, const char *extra) {
        struct env e = {0};

        e.dir = test_path(tmpdir, name);
        if (mkdir(e.dir, 0755) < 0)
                abort();
        e.db = test_path(e.dir, "db.sqlite");
        e.out = test_path(e.dir, "out");
        e.state = test_path(e.dir, "state");
        if (mkdir(e.out, 0755) < 0)
                abort();
        db_exec(e.db, "CREATE TABLE t(name, content)", NULL, NULL);
        env_config(&e, extra);
        return e;
}

static void env_done(struct env *e) {
        config_free(e->config);
        free(e->dir);
        free(e->db);
        free(e->out);
        free(e->state);
}

static void add_row(struct env *e, const char *name, const char *content) {
        db_exec(e->db, "INSERT INTO t(name, content) VALUES (?, ?)", name, content);
}

/* One cycle: render in a snapshot, then commit. Returns files_render's or
 * files_commit's result; *changed gets the changed names (may be NULL). */
static int cycle(struct env *e, char **changed) {
        struct db *db = NULL;
        struct files_set *s = NULL;
        int r;

        if (db_open(e->db, 1000, &db, NULL) < 0)
                abort();
        if (db_begin(db) < 0)
                abort();
        r = files_render(db, e->config, 0, false, &s);
        db_end(db);
        db_close(db);
        if (r < 0)
                return r;
        if (changed)
                *changed = strdup(files_changed_names(s));
        r = files_commit(s);
        files_free(s);
        return r;
}

static char *manifest(struct env *e) {
        _cleanup_free_ char *path = NULL;
        if (files_manifest_path(e->config, &e->config->files[0], &path) < 0)
                abort();
        return test_read_file(path, NULL);
}

static char *out_file(struct env *e, const char *name) {
        _cleanup_free_ char *p = test_path(e->out, name);
        return test_read_file(p, NULL);
}

static ino_t inode(struct env *e, const char *name) {
        _cleanup_free_ char *p = test_path(e->out, name);
        struct stat st;
        return lstat(p, &st) < 0 ? 0 : st.st_ino;
}

static void test_write_and_remove(void) {
        struct env e = env_new("cycle", NULL);
        _cleanup_free_ char *m = NULL, *list = NULL, *ch = NULL, *a = NULL, *foreign = test_path(e.out, "foreign");
        _cleanup_free_ char *pa = test_path(e.out, "a.key");
        struct stat st;
        ino_t ino;

        add_row(&e, "a.key", "alpha\n");
        add_row(&e, "b.key", "multi\nline\n");
        REQUIRE_INT(test_write_file(foreign, "mine\n", 5, 0644), 0);
        REQUIRE_INT(cycle(&e, &ch), 0);
        CHECK_STR(ch, "a.key b.key");
        free(ch), ch = NULL;
        a = out_file(&e, "a.key");
        CHECK_STR(a, "alpha\n");
        REQUIRE_INT(stat(pa, &st), 0);
        CHECK_UINT(st.st_mode & 07777, 0640);
        list = test_list_dir(e.out);
        CHECK_STR(list, "a.key\nb.key\nforeign\n");
        m = manifest(&e);
        CHECK_CONTAINS(m, "\na.key\nb.key\n");
        CHECK(!strstr(m, "foreign"));
        CHECK(!strstr(m, "alpha"));

        /* Unchanged: nothing written; a wrong mode is corrected. */
        ino = inode(&e, "a.key");
        REQUIRE_INT(chmod(pa, 0666), 0);
        REQUIRE_INT(cycle(&e, &ch), 0);
        CHECK_STR(ch, "");
        free(ch), ch = NULL;
        CHECK_UINT(inode(&e, "a.key"), ino);
        REQUIRE_INT(stat(pa, &st), 0);
        CHECK_UINT(st.st_mode & 07777, 0640);

        /* A changed content is a new file; a removed row's file goes, the
         * foreign file stays. */
        db_exec(e.db, "UPDATE t SET content = 'beta\n' WHERE name = 'a.key'", NULL, NULL);
        db_exec(e.db, "DELETE FROM t WHERE name = 'b.key'", NULL, NULL);
        REQUIRE_INT(cycle(&e, &ch), 0);
        CHECK_STR(ch, "a.key b.key");
        free(ch), ch = NULL;
        CHECK(inode(&e, "a.key") != ino);
        free(a);
        a = out_file(&e, "a.key");
        CHECK_STR(a, "beta\n");
        free(list);
        list = test_list_dir(e.out);
        CHECK_STR(list, "a.key\nforeign\n");
        free(m);
        m = manifest(&e);
        CHECK_CONTAINS(m, "\na.key\n");
        CHECK(!strstr(m, "b.key"));

        /* Every row gone: only the foreign file is left. */
        db_exec(e.db, "DELETE FROM t", NULL, NULL);
        REQUIRE_INT(cycle(&e, &ch), 0);
        CHECK_STR(ch, "a.key");
        free(list);
        list = test_list_dir(e.out);
        CHECK_STR(list, "foreign\n");
        env_done(&e);
}

static void test_renamed(void) {
        struct env e = env_new("renamed", NULL);
        _cleanup_free_ char *ch = NULL, *list = NULL, *m = NULL;

        add_row(&e, "d.example.old.private", "k\n");
        REQUIRE_INT(cycle(&e, NULL), 0);
        db_exec(e.db, "UPDATE t SET name = 'd.example.new.private'", NULL, NULL);
        REQUIRE_INT(cycle(&e, &ch), 0);
        CHECK_STR(ch, "d.example.new.private d.example.old.private");
        list = test_list_dir(e.out);
        CHECK_STR(list, "d.example.new.private\n");
        m = manifest(&e);
        CHECK(!strstr(m, "old"));
        CHECK_CONTAINS(m, "d.example.new.private\n");
        env_done(&e);
}

static void test_hostile_rows(void) {
        struct env e = env_new("hostile", NULL);
        _cleanup_free_ char *list = NULL, *outside = test_path(e.dir, "x"), *list_dir = NULL;
        char big[301];

        memset(big, 'n', 300);
        big[300] = '\0';
        add_row(&e, "../x", "escape\n");
        add_row(&e, "a/b", "sub\n");
        add_row(&e, ".hidden", "dot\n");
        add_row(&e, big, "long\n");
        add_row(&e, "", "empty\n");
        db_exec(e.db, "INSERT INTO t VALUES (CAST(X'61006200' AS TEXT), 'nul')", NULL, NULL);
        db_exec(e.db, "INSERT INTO t VALUES (NULL, 'null name')", NULL, NULL);
        db_exec(e.db, "INSERT INTO t VALUES ('nullcontent', NULL)", NULL, NULL);
        add_row(&e, "dup", "one\n");
        add_row(&e, "dup", "two\n");
        add_row(&e, "same", "x\n");
        add_row(&e, "same", "x\n");
        add_row(&e, "ok", "fine\n");
        REQUIRE_INT(cycle(&e, NULL), 0);
        list = test_list_dir(e.out);
        CHECK_STR(list, "ok\nsame\n");
        CHECK_INT(access(outside, F_OK), -1);
        list_dir = test_list_dir(e.dir);
        CHECK_STR(list_dir, "db.sqlite\nout\nstate\n");

        /* on_invalid = fail: nothing changes. */
        env_config(&e, "on_invalid = fail\n");
        db_exec(e.db, "UPDATE t SET content = 'changed\n' WHERE name = 'ok'", NULL, NULL);
        CHECK_INT(cycle(&e, NULL), -EINVAL);
        {
                _cleanup_free_ char *ok = out_file(&e, "ok");
                CHECK_STR(ok, "fine\n");
        }
        env_done(&e);
}

static void test_foreign_file_claimed(void) {
        struct env e = env_new("claimed", NULL);
        _cleanup_free_ char *p = test_path(e.out, "x.key"), *m = NULL, *c = NULL, *list = NULL;

        /* A file mapsyncd did not write, identical to a row: left alone,
         * unlisted, and so not removed when the row goes. */
        REQUIRE_INT(test_write_file(p, "same\n", 5, 0640), 0);
        add_row(&e, "x.key", "same\n");
        REQUIRE_INT(cycle(&e, NULL), 0);
        m = manifest(&e);
        CHECK(!strstr(m, "x.key"));
        db_exec(e.db, "DELETE FROM t", NULL, NULL);
        REQUIRE_INT(cycle(&e, NULL), 0);
        list = test_list_dir(e.out);
        CHECK_STR(list, "x.key\n");

        /* One that differs is replaced by the row's and is mapsyncd's from
         * then on. */
        add_row(&e, "x.key", "row\n");
        REQUIRE_INT(cycle(&e, NULL), 0);
        c = out_file(&e, "x.key");
        CHECK_STR(c, "row\n");
        free(m);
        m = manifest(&e);
        CHECK_CONTAINS(m, "\nx.key\n");
        env_done(&e);
}

static void test_leftovers(void) {
        struct env e = env_new("leftovers", NULL);
        _cleanup_free_ char *tmp = test_path(e.out, ".new.key.Ab12cd"), *tmp2 = test_path(e.out, ".gone.Zz9xY0");
        _cleanup_free_ char *mpath = NULL, *list = NULL, *m = NULL, *other = test_path(e.out, ".other");

        /* A killed run: the temporary file it left, and a manifest that lists
         * a name whose file was never written. */
        REQUIRE_INT(test_write_file(tmp, "half", 4, 0600), 0);
        REQUIRE_INT(test_write_file(tmp2, "half", 4, 0600), 0);
        REQUIRE_INT(test_write_file(other, "not ours\n", 9, 0600), 0);
        REQUIRE_INT(mkdir(e.state, 0700), 0);
        REQUIRE_INT(files_manifest_path(e.config, &e.config->files[0], &mpath), 0);
        {
                _cleanup_free_ char *text = NULL;
                REQUIRE(asprintf(&text, "# x\ndirectory %s\nnever.written\nnew.key\n../evil\n", e.out) > 0);
                REQUIRE_INT(test_write_file(mpath, text, strlen(text), 0600), 0);
        }
        add_row(&e, "new.key", "n\n");
        REQUIRE_INT(cycle(&e, NULL), 0);
        list = test_list_dir(e.out);
        CHECK_STR(list, ".other\nnew.key\n");
        m = manifest(&e);
        CHECK(!strstr(m, "never.written"));
        CHECK(!strstr(m, "evil"));
        CHECK_CONTAINS(m, "\nnew.key\n");

        /* A manifest of another directory is not this one's. */
        {
                _cleanup_free_ char *text = strdup("directory /elsewhere\nnew.key\n");
                REQUIRE_INT(test_write_file(mpath, text, strlen(text), 0600), 0);
        }
        db_exec(e.db, "DELETE FROM t", NULL, NULL);
        REQUIRE_INT(cycle(&e, NULL), 0);
        free(list);
        list = test_list_dir(e.out);
        CHECK_STR(list, ".other\nnew.key\n");
        env_done(&e);
}

static void test_guards(void) {
        struct env e = env_new("guards", NULL);
        _cleanup_free_ char *link = test_path(e.dir, "link"), *via = NULL, *text = NULL, *list = NULL;
        _cleanup_free_ char *direct = test_path(e.dir, "direct");
        struct config_errors errors = {0};
        struct config *c = NULL;

        /* The database's directory, reached through a symlinked parent. */
        REQUIRE_INT(symlink(tmpdir, link), 0);
        REQUIRE(asprintf(&via, "%s/guards", link) > 0);
        free(e.out);
        e.out = strdup(via);
        env_config(&e, NULL);
        add_row(&e, "db.sqlite", "overwritten\n");
        CHECK_INT(cycle(&e, NULL), -EEXIST);
        list = test_list_dir(e.dir);
        CHECK_STR(list, "db.sqlite\nlink\nout\n");

        /* The directory itself a symlink: refused. */
        REQUIRE_INT(symlink(e.dir, direct), 0);
        free(e.out);
        e.out = strdup(direct);
        env_config(&e, NULL);
        CHECK_INT(cycle(&e, NULL), -ELOOP);

        /* The same rule by text, when the configuration is read. */
        REQUIRE(asprintf(&text,
                         "[database]\npath = %s/db.sqlite\n[map m]\noutput = /x/y/m\nquery = SELECT 1, 2\n"
                         "[files a]\ndirectory = %s\nquery = SELECT 1, 2\n[files b]\ndirectory = /x/y/\n"
                         "query = SELECT 1, 2\n[files c]\ndirectory = /x/y\nquery = SELECT 1, 2\n[files d]\n"
                         "query = SELECT 1, 2\n[files e]\ndirectory = relative\n[files m]\ndirectory = /elsewhere\n"
                         "query = SELECT 1, 2\n",
                         e.dir, e.dir) > 0);
        CHECK_INT(config_parse_string("/x/y/test.conf", text, &c, &errors), -EINVAL);
        {
                _cleanup_free_ char *all = NULL;
                size_t len = 0;
                for (size_t i = 0; i < errors.n_msgs; i++) {
                        str_append(&all, &len, errors.msgs[i], strlen(errors.msgs[i]));
                        str_append(&all, &len, "\n", 1);
                }
                CHECK_CONTAINS(all, "[files a] directory");
                CHECK_CONTAINS(all, "holds the database");
                CHECK_CONTAINS(all, "[files b] directory /x/y holds the configuration /x/y/test.conf");
                CHECK_CONTAINS(all, "[files b] directory /x/y holds the output of [map m]");
                CHECK_CONTAINS(all, "[files c] writes into /x/y, as [files b] does already");
                CHECK_CONTAINS(all, "[files d] has no directory");
                CHECK_CONTAINS(all, "directory = relative is not an absolute directory path");
                CHECK_CONTAINS(all, "[files m] has the name of a [map m]");
        }
        config_errors_done(&errors);
        env_done(&e);
}

static void test_config_keys(void) {
        struct config_errors errors = {0};
        struct config *c = NULL;
        const struct files_config *f;
        static const char text[] = "[database]\npath = /db/x.sqlite\n[reload r]\ncommand = true\n"
                                   "[files k]\ndirectory = /keys\nquery =\n  SELECT a,\n  b FROM t\n"
                                   "content = pem-private-key\nowner = 0\ngroup = 0\non_invalid = fail\n"
                                   "on_change = echo\n  more\nreload = r\n[files plain]\ndirectory = /p\n"
                                   "query = SELECT 1, 2\n";

        REQUIRE_INT(config_parse_string("/etc/t.conf", text, &c, &errors), 0);
        REQUIRE_UINT(c->n_files, 2);
        CHECK_UINT(c->n_maps, 0);
        f = config_find_files(c, "k");
        REQUIRE(f != NULL);
        CHECK_STR(f->directory, "/keys");
        CHECK_STR(f->query, "SELECT a, b FROM t");
        CHECK_INT(f->content, FILES_CONTENT_PEM_PRIVATE_KEY);
        CHECK_UINT(f->mode, 0600);
        CHECK_UINT(f->uid, 0);
        CHECK_UINT(f->gid, 0);
        CHECK_INT(f->on_invalid, ON_INVALID_FAIL);
        CHECK_STR(f->on_change, "echo more");
        REQUIRE_UINT(f->n_reloads, 1);
        CHECK_UINT(f->reloads[0], 0);
        f = config_find_files(c, "plain");
        REQUIRE(f != NULL);
        CHECK_INT(f->content, FILES_CONTENT_ANY);
        CHECK(config_find_files(c, "none") == NULL);
        config_free(c);

        c = NULL;
        CHECK_INT(config_parse_string("t.conf",
                                      "[database]\npath = /d\n[files x]\ndirectory = /k\nquery = SELECT 1, 2\n"
                                      "content = text\nmode = 99\nreload = nope\ncolour = red\n",
                                      &c, &errors),
                  -EINVAL);
        CHECK_UINT(errors.n_msgs, 4);
        CHECK_STR(errors.msgs[0], "t.conf:6: content = text: expected any or pem-private-key");
        CHECK_CONTAINS(errors.msgs[1], "mode = 99");
        CHECK_CONTAINS(errors.msgs[2], "unknown key 'colour' in [files x]");
        CHECK_CONTAINS(errors.msgs[3], "reload = nope: there is no [reload nope] section");
        config_errors_done(&errors);
}

/* A hard link to the database under a row's name: neither replaced nor,
 * when listed and its row is gone, removed. */
static void test_hard_link_refused(void) {
        struct env e = env_new("hardlink", NULL);
        _cleanup_free_ char *hl = test_path(e.out, "x.key"), *mpath = NULL, *text = NULL;
        struct stat before, after;

        REQUIRE_INT(link(e.db, hl), 0);
        REQUIRE_INT(stat(e.db, &before), 0);
        add_row(&e, "x.key", "overwrite\n");
        CHECK_INT(cycle(&e, NULL), -EPERM);
        REQUIRE_INT(stat(hl, &after), 0);
        CHECK_UINT(after.st_ino, before.st_ino);

        db_exec(e.db, "DELETE FROM t", NULL, NULL);
        REQUIRE_INT(mkdir(e.state, 0700) == 0 || errno == EEXIST, 1);
        REQUIRE_INT(files_manifest_path(e.config, &e.config->files[0], &mpath), 0);
        REQUIRE(asprintf(&text, "directory %s\nx.key\n", e.out) > 0);
        REQUIRE_INT(test_write_file(mpath, text, strlen(text), 0600), 0);
        CHECK_INT(cycle(&e, NULL), -EPERM);
        CHECK_INT(access(hl, F_OK), 0);
        env_done(&e);
}

static void test_dry_run(void) {
        struct env e = env_new("dry", NULL);
        struct db *db = NULL;
        struct files_set *s = NULL;
        _cleanup_free_ char *list = NULL;

        add_row(&e, "a", "1\n");
        REQUIRE_INT(db_open(e.db, 1000, &db, NULL), 0);
        REQUIRE_INT(db_begin(db), 0);
        REQUIRE_INT(files_render(db, e.config, 0, true, &s), 0);
        db_end(db);
        db_close(db);
        CHECK(files_changed(s));
        CHECK_UINT(files_n_written(s), 1);
        CHECK_INT(files_commit(s), -EINVAL);
        files_free(s);
        list = test_list_dir(e.out);
        CHECK_STR(list, "");
        CHECK_INT(access(e.state, F_OK), -1);
        env_done(&e);
}

int main(void) {
        log_init(LOG_CRIT);
        tmpdir = test_mkdtemp();
        RUN(test_names);
        RUN(test_pem);
        RUN(test_write_and_remove);
        RUN(test_renamed);
        RUN(test_hostile_rows);
        RUN(test_foreign_file_claimed);
        RUN(test_leftovers);
        RUN(test_guards);
        RUN(test_hard_link_refused);
        RUN(test_config_keys);
        RUN(test_dry_run);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
