/* Unit tests of trust.h: owner and write bits of a path and of each
 * directory above it, the sticky exception, symlinks judged by what they
 * name. Owners other than this user need root (chown); as root every case
 * runs. */
#include "trust.h"

#include <fcntl.h>

#include "util.h"

#include "test.h"

static char *tmpdir;

static void test_trusted(void) {
        struct trust_problem p = {};
        char *f = test_path(tmpdir, "conf");

        REQUIRE_INT(test_write_file(f, "x", 1, 0644), 0);
        CHECK_INT(trust_path(f, 0, &p), 0);
        CHECK_INT(trust_path(tmpdir, 0, &p), 0);
        CHECK_INT(trust_path("/", 0, &p), 0);
        unlink(f);
        free(f);
}

static void test_writable_file(void) {
        struct trust_problem p = {};
        char *f = test_path(tmpdir, "conf");

        REQUIRE_INT(test_write_file(f, "x", 1, 0664), 0);
        CHECK_INT(trust_path(f, 0, &p), -EPERM);
        CHECK_STR(p.why, "writable by its group");
        CHECK_STR(p.path, f);
        REQUIRE_INT(chmod(f, 0646), 0);
        CHECK_INT(trust_path(f, 0, &p), -EPERM);
        CHECK_STR(p.why, "writable by others");
        unlink(f);
        free(f);
}

static void test_writable_parent(void) {
        struct trust_problem p = {};
        char *d = test_path(tmpdir, "open"), *sub, *f;

        REQUIRE_INT(mkdir(d, 0755), 0);
        REQUIRE_INT(chmod(d, 0777), 0);
        sub = test_path(d, "sub");
        REQUIRE_INT(mkdir(sub, 0755), 0);
        f = test_path(sub, "conf");
        REQUIRE_INT(test_write_file(f, "x", 1, 0600), 0);
        /* Anyone could rename sub away and put another in its place. */
        CHECK_INT(trust_path(f, 0, &p), -EPERM);
        CHECK_STR(p.path, d);
        CHECK_STR(p.why, "writable by others");
        CHECK_INT(trust_path(sub, TRUST_LEAF_STICKY_OK, &p), -EPERM);
        /* Sticky: others cannot rename what is not theirs. */
        REQUIRE_INT(chmod(d, 01777), 0);
        CHECK_INT(trust_path(f, 0, &p), 0);
        /* The leaf itself sticky and world-writable: only with the flag. */
        CHECK_INT(trust_path(d, 0, &p), -EPERM);
        CHECK_INT(trust_path(d, TRUST_LEAF_STICKY_OK, &p), 0);
        {
                _cleanup_close_ int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                REQUIRE(fd >= 0);
                CHECK_INT(trust_dir_fd(fd, d, TRUST_LEAF_STICKY_OK, &p), 0);
                CHECK_INT(trust_dir_fd(fd, d, 0, &p), -EPERM);
        }
        test_rm_rf(d);
        free(f);
        free(sub);
        free(d);
}

static void test_symlink_judged_by_target(void) {
        struct trust_problem p = {};
        char *d = test_path(tmpdir, "wd"), *f, *l = test_path(tmpdir, "link");

        REQUIRE_INT(mkdir(d, 0755), 0);
        REQUIRE_INT(chmod(d, 0777), 0);
        f = test_path(d, "conf");
        REQUIRE_INT(test_write_file(f, "x", 1, 0600), 0);
        REQUIRE_INT(symlink(f, l), 0);
        CHECK_INT(trust_path(l, 0, &p), -EPERM);
        CHECK_STR(p.path, d);
        unlink(l);
        test_rm_rf(d);
        free(d);
        free(f);
        free(l);
}

static void test_missing(void) {
        struct trust_problem p = {};
        char *f = test_path(tmpdir, "nope");

        CHECK_INT(trust_path(f, 0, &p), -ENOENT);
        CHECK_STR(p.why, strerror(ENOENT));
        free(f);
}

static void test_other_owner(void) {
        struct trust_problem p = {};
        char *d = test_path(tmpdir, "theirs"), *f;

        if (geteuid() != 0) {
                /* Only root can give a file away; the check is the
                 * same as for a file someone else made. */
                struct stat st = {.st_uid = geteuid() + 1, .st_mode = S_IFREG | 0600};
                CHECK(trust_stat(&st, 0) != NULL);
                free(d);
                return;
        }
        REQUIRE_INT(mkdir(d, 0755), 0);
        f = test_path(d, "conf");
        REQUIRE_INT(test_write_file(f, "x", 1, 0600), 0);
        REQUIRE_INT(chown(d, 65534, 65534), 0);
        CHECK_INT(trust_path(f, 0, &p), -EPERM);
        CHECK_STR(p.path, d);
        CHECK_STR(p.why, "owned by another user than root or this one");
        REQUIRE_INT(chown(d, 0, 0), 0);
        REQUIRE_INT(chown(f, 65534, 65534), 0);
        CHECK_INT(trust_path(f, 0, &p), -EPERM);
        CHECK_STR(p.path, f);
        test_rm_rf(d);
        free(f);
        free(d);
}

static void test_stat_rules(void) {
        struct stat st = {.st_uid = 0, .st_mode = S_IFDIR | 01777};

        CHECK(trust_stat(&st, TRUST_LEAF_STICKY_OK) == NULL);
        CHECK(trust_stat(&st, 0) != NULL);
        st.st_mode = S_IFREG | 01777; /* sticky means nothing on a file */
        CHECK(trust_stat(&st, TRUST_LEAF_STICKY_OK) != NULL);
        st.st_mode = S_IFDIR | 02755;
        CHECK(trust_stat(&st, 0) == NULL);
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_trusted);
        RUN(test_writable_file);
        RUN(test_writable_parent);
        RUN(test_symlink_judged_by_target);
        RUN(test_missing);
        RUN(test_other_owner);
        RUN(test_stat_rules);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
