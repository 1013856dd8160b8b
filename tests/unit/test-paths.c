/* Unit tests of paths.h: resolution of configured paths (through symlinked
 * directories, with a missing last component, lexically when nothing
 * exists), and the rule that an output is none of mapsyncd's other files,
 * by path and by device and inode (a symlinked directory, a hard link, a
 * bind mount's other name), for maps, the metrics file and file sets. */
#include "paths.h"

#include "util.h"

#include "test.h"

static char *tmpdir; /* resolved: no symlink in it */

/* A configuration parsed as if loaded from tmpdir/test.conf, then checked
 * by paths_check_config(); *errors holds its messages joined by '\n'. */
static struct config *check(const char *body, int *r, char **errors) {
        _cleanup_free_ char *name = test_path(tmpdir, "test.conf");
        struct config_errors e = {0};
        struct config *c = NULL;
        size_t len = 0;

        *errors = strdup("");
        if (config_parse_string(name, body, &c, &e) < 0) {
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "parse: %s\n", e.msgs[i]);
                config_errors_done(&e);
                *r = -EBADMSG;
                return NULL;
        }
        *r = paths_check_config(c, &e);
        free(*errors);
        *errors = NULL;
        for (size_t i = 0; i < e.n_msgs; i++)
                if (str_append(errors, &len, e.msgs[i], strlen(e.msgs[i])) < 0 || str_append(errors, &len, "\n", 1) < 0)
                        abort();
        if (!*errors)
                *errors = strdup("");
        config_errors_done(&e);
        return c;
}

/* "[database] path = tmpdir/db.sqlite", state_dir tmpdir/state, and body. */
static struct config *check_maps(const char *body, int *r, char **errors) {
        _cleanup_free_ char *text = NULL;

        if (asprintf(&text, "[database]\npath = %s/db.sqlite\n[sync]\nstate_dir = %s/state\n%s", tmpdir, tmpdir, body) <
            0)
                abort();
        return check(text, r, errors);
}

static void mkdir_p(const char *rel) {
        _cleanup_free_ char *p = test_path(tmpdir, rel);

        if (mkdir(p, 0755) < 0 && errno != EEXIST)
                abort();
}

static void file(const char *rel) {
        _cleanup_free_ char *p = test_path(tmpdir, rel);

        if (test_write_file(p, "x\n", 2, 0644) < 0)
                abort();
}

static void test_resolve(void) {
        _cleanup_free_ char *real = test_path(tmpdir, "real"), *link = test_path(tmpdir, "link");
        char *r, *want;

        mkdir_p("real");
        file("real/f");
        REQUIRE_INT(symlink(real, link), 0);

        /* Existing: realpath. */
        r = paths_resolve((want = test_path(link, "f")));
        free(want);
        want = test_path(real, "f");
        CHECK_STR(r, want);
        free(r);
        free(want);
        /* A missing last component: its directory's realpath plus the name. */
        r = paths_resolve((want = test_path(link, "new")));
        free(want);
        want = test_path(real, "new");
        CHECK_STR(r, want);
        free(r);
        free(want);
        /* Nothing exists: lexically, ".", ".." and repeated '/' gone. */
        r = paths_resolve("/nonexistent-mapsyncd/a/./b//c/../d");
        CHECK_STR(r, "/nonexistent-mapsyncd/a/b/d");
        free(r);
        r = paths_resolve("/nonexistent-mapsyncd/../../x/");
        CHECK_STR(r, "/x");
        free(r);
        /* A relative path is left as it is (the configuration refuses it). */
        r = paths_resolve("relative/path");
        CHECK_STR(r, "relative/path");
        free(r);
        unlink(link);
}

static void test_outputs_resolved(void) {
        _cleanup_free_ char *real = test_path(tmpdir, "out-real"), *link = test_path(tmpdir, "out-link"), *body = NULL,
                            *errors = NULL, *want = NULL, *leaf = NULL;
        struct config *c;
        int r;

        mkdir_p("out-real");
        REQUIRE_INT(symlink(real, link), 0);
        /* The last component is a symlink: kept, as it is replaced, never
         * followed. */
        leaf = test_path(real, "leaf");
        REQUIRE_INT(symlink("/etc/passwd", leaf), 0);
        if (asprintf(&body,
                     "[map a]\noutput = %s/./a\nquery = SELECT 1, 2\n"
                     "[map b]\noutput = %s/leaf\nquery = SELECT 1, 2\n",
                     link, link) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, 0);
        CHECK_STR(errors, "");
        want = test_path(real, "a");
        CHECK_STR(c->maps[0].output, want);
        CHECK_STR(c->maps[1].output, leaf);
        config_free(c);
        unlink(leaf);
        unlink(link);
}

/* One output per case, each of mapsyncd's own files; the message names the
 * map, the key's line and what the file is. */
static void test_output_is_protected(void) {
        _cleanup_free_ char *state = test_path(tmpdir, "state"), *conf = test_path(tmpdir, "test.conf");
        struct {
                const char *output; /* relative to tmpdir */
                const char *message;
        } cases[] = {
                {"db.sqlite", "is the database "},
                {"db.sqlite-wal", "is the database's write-ahead log "},
                {"db.sqlite-shm", "is the database's shared-memory file "},
                {"db.sqlite-journal", "is the database's rollback journal "},
                {"test.conf", "is the configuration file "},
                {"state/owed-hooks", "is inside state_dir "},
                {"state", "is inside state_dir "},
                {"state/sub/x", "is inside state_dir "},
        };

        mkdir_p("state");
        file("test.conf");
        for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
                _cleanup_free_ char *body = NULL, *errors = NULL, *want = NULL;
                struct config *c;
                int r;

                if (asprintf(&body, "[map m]\noutput = %s/%s\nquery = SELECT 1, 2\n", tmpdir, cases[i].output) < 0 ||
                    asprintf(&want, "%s:6: [map m] output = %s/%s %s", conf, tmpdir, cases[i].output,
                             cases[i].message) < 0)
                        abort();
                c = check_maps(body, &r, &errors);
                if (!CHECK(c))
                        continue;
                CHECK_INT(r, -EINVAL);
                if (!CHECK_CONTAINS(errors, want))
                        fprintf(stderr, "    case %s\n", cases[i].output);
                config_free(c);
        }
        unlink(conf);
}

/* The database under another name: a symlink to its directory, and a hard
 * link to the file itself. */
static void test_output_is_the_database_elsewhere(void) {
        _cleanup_free_ char *db = test_path(tmpdir, "db.sqlite"), *alias = test_path(tmpdir, "dbdir-link"),
                            *hard = test_path(tmpdir, "hard.sqlite"), *body = NULL, *errors = NULL;
        struct config *c;
        int r;

        file("db.sqlite");
        REQUIRE_INT(symlink(tmpdir, alias), 0);
        REQUIRE_INT(link(db, hard), 0);
        if (asprintf(&body,
                     "[map m]\noutput = %s/db.sqlite\nquery = SELECT 1, 2\n[map n]\noutput = %s\nquery = "
                     "SELECT 1, 2\n",
                     alias, hard) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "[map m] output = ");
        CHECK_CONTAINS(errors, "/dbdir-link/db.sqlite is the database ");
        CHECK_CONTAINS(errors, "[map n] output = ");
        CHECK_CONTAINS(errors, "hard.sqlite is the database ");
        CHECK_CONTAINS(errors, "(the same file under another name)");
        config_free(c);
        unlink(hard);
        unlink(alias);
        unlink(db);
}

/* Two maps, one file: spelled differently through a symlinked directory,
 * or hard-linked. */
static void test_two_maps_one_file(void) {
        _cleanup_free_ char *real = test_path(tmpdir, "two"), *lnk = test_path(tmpdir, "two-link"), *body = NULL,
                            *errors = NULL, *a = NULL, *b = NULL;
        struct config *c;
        int r;

        mkdir_p("two");
        REQUIRE_INT(symlink(real, lnk), 0);
        a = test_path(real, "a");
        b = test_path(real, "b");
        file("two/a");
        REQUIRE_INT(link(a, b), 0);
        if (asprintf(&body,
                     "[map first]\noutput = %s\nquery = SELECT 1, 2\n"
                     "[map second]\noutput = %s/a\nquery = SELECT 1, 2\n"
                     "[map third]\noutput = %s\nquery = SELECT 1, 2\n",
                     a, lnk, b) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "[map second] output = ");
        CHECK_CONTAINS(errors, "is the same path as the output of [map first] (line 6)");
        CHECK_CONTAINS(errors, "[map third] output = ");
        CHECK_CONTAINS(errors, "is the same file as the output of [map first] (line 6) (a hard link)");
        config_free(c);
        unlink(b);
        unlink(a);
        unlink(lnk);
}

static void test_metrics_file(void) {
        _cleanup_free_ char *text = NULL, *errors = NULL;
        struct config *c;
        int r;

        file("db.sqlite");
        mkdir_p("state");
        if (asprintf(&text,
                     "[database]\npath = %s/db.sqlite\n[sync]\nstate_dir = %s/state\nmetrics_file = %s/./db.sqlite\n"
                     "[map m]\noutput = %s/m\nquery = SELECT 1, 2\n",
                     tmpdir, tmpdir, tmpdir, tmpdir) < 0)
                abort();
        c = check(text, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "test.conf:5: metrics_file = ");
        CHECK_CONTAINS(errors, "is the database ");
        CHECK_CONTAINS(errors, "refusing to write it");
        config_free(c);
        free(text);
        free(errors);

        if (asprintf(&text,
                     "[database]\npath = %s/db.sqlite\n[sync]\nstate_dir = %s/state\nmetrics_file = %s/state/m.prom\n"
                     "[map m]\noutput = %s/m\nquery = SELECT 1, 2\n",
                     tmpdir, tmpdir, tmpdir, tmpdir) < 0)
                abort();
        c = check(text, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "is inside state_dir");
        config_free(c);
}

/* A file set's directory may hold no output and none of mapsyncd's files,
 * whatever name reaches it, and is no other set's. */
static void test_files_directory(void) {
        _cleanup_free_ char *keys = test_path(tmpdir, "keys"), *alias = test_path(tmpdir, "keys-link"),
                            *alias2 = test_path(tmpdir, "keys-link2"), *body = NULL, *errors = NULL;
        struct config *c;
        int r;

        mkdir_p("keys");
        REQUIRE_INT(symlink(keys, alias), 0);
        REQUIRE_INT(symlink(keys, alias2), 0);
        if (asprintf(&body,
                     "[map m]\noutput = %s/m\nquery = SELECT 1, 2\n"
                     "[files a]\ndirectory = %s\nquery = SELECT 1, 2\n"
                     "[files b]\ndirectory = %s\nquery = SELECT 1, 2\n",
                     keys, alias, alias2) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "[files a] directory = ");
        CHECK_CONTAINS(errors, "holds the output of [map m]: a row may name any file in it");
        CHECK_CONTAINS(errors, "[files b] directory = ");
        CHECK_CONTAINS(errors, "is that of [files a]");
        config_free(c);
        free(body);
        free(errors);

        /* The state directory reached through a symlink. */
        _cleanup_free_ char *state_link = test_path(tmpdir, "state-link");
        _cleanup_free_ char *state = test_path(tmpdir, "state");
        mkdir_p("state");
        REQUIRE_INT(symlink(state, state_link), 0);
        if (asprintf(&body,
                     "[map m]\noutput = %s/m\nquery = SELECT 1, 2\n[files k]\ndirectory = %s\nquery = SELECT 1, 2\n",
                     tmpdir, state_link) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        CHECK_INT(r, -EINVAL);
        CHECK_CONTAINS(errors, "[files k] directory = ");
        CHECK_CONTAINS(errors, "/state-link holds a state file ");
        CHECK_CONTAINS(errors, "/state/owed-hooks: a row may name any file in it");
        CHECK_CONTAINS(errors, "/state/owed-webhooks: a row may name any file in it");
        CHECK_CONTAINS(errors, "/state-link holds the instance lock ");
        CHECK_CONTAINS(errors, "/state/files-k.manifest: a row may name any file in it");
        CHECK_CONTAINS(errors, "/state overlap; state_dir holds mapsyncd's own files");
        config_free(c);
        unlink(state_link);
        unlink(alias2);
        unlink(alias);
}

static void test_protected_by_inode(void) {
        _cleanup_free_ char *db = test_path(tmpdir, "db.sqlite"), *other = test_path(tmpdir, "other"), *body = NULL,
                            *errors = NULL;
        struct config *c;
        struct stat st;
        char what[512];
        int r;

        file("db.sqlite");
        file("other");
        if (asprintf(&body, "[map m]\noutput = %s/m\nquery = SELECT 1, 2\n", tmpdir) < 0)
                abort();
        c = check_maps(body, &r, &errors);
        REQUIRE(c);
        REQUIRE_INT(r, 0);
        REQUIRE_INT(stat(db, &st), 0);
        CHECK(paths_protected(c, &st, what, sizeof(what)));
        _cleanup_free_ char *want = NULL;
        if (asprintf(&want, "the database %s", db) < 0)
                abort();
        CHECK_STR(what, want);
        REQUIRE_INT(stat(other, &st), 0);
        CHECK(!paths_protected(c, &st, what, sizeof(what)));
        /* A database put in place after the check (a rename over it) is
         * found by what is at its name now. */
        REQUIRE_INT(rename(other, db), 0);
        CHECK(paths_protected(c, &st, what, sizeof(what)));
        config_free(c);
        unlink(db);
}

int main(void) {
        char *t = test_mkdtemp();

        tmpdir = realpath(t, NULL);
        if (!tmpdir)
                abort();
        RUN(test_resolve);
        RUN(test_outputs_resolved);
        RUN(test_output_is_protected);
        RUN(test_output_is_the_database_elsewhere);
        RUN(test_two_maps_one_file);
        RUN(test_metrics_file);
        RUN(test_files_directory);
        RUN(test_protected_by_inode);
        test_rm_rf(tmpdir);
        free(tmpdir);
        free(t);
        return test_end();
}
