/* Unit tests of replace_at.h in a temporary directory: a new file and a
 * replaced one (new inode, content, mode), a symlink at the name replaced
 * and not followed, no temporary file left after success or failure, and a
 * failed replacement (the name is a directory) that leaves the name as it
 * was. */
#include "replace_at.h"

#include "util.h"

#include "test.h"

static char *tmpdir;

static int open_dir(const char *d) {
        int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                abort();
        return fd;
}

static void test_new_and_replaced(void) {
        _cleanup_free_ char *d = test_path(tmpdir, "plain"), *p = NULL, *list = NULL, *c = NULL;
        struct replace_opts o = {.mode = 0640, .uid = (uid_t)-1, .gid = (gid_t)-1, .sync_dir = true};
        struct stat a, b;
        int fd;

        REQUIRE_INT(mkdir(d, 0755), 0);
        p = test_path(d, "f");
        fd = open_dir(d);
        CHECK_INT(replace_file_at(fd, "f", "one\n", 4, &o), 0);
        REQUIRE_INT(stat(p, &a), 0);
        CHECK_UINT(a.st_mode & 07777, 0640);
        CHECK_UINT(a.st_uid, geteuid());
        o.mode = 0600;
        CHECK_INT(replace_file_at(fd, "f", "two, longer\n", 12, &o), 0);
        REQUIRE_INT(stat(p, &b), 0);
        CHECK(a.st_ino != b.st_ino);
        CHECK_UINT(b.st_mode & 07777, 0600);
        c = test_read_file(p, NULL);
        CHECK_STR(c, "two, longer\n");
        CHECK_INT(replace_file_at(fd, "empty", "", 0, &o), 0);
        list = test_list_dir(d);
        CHECK_STR(list, "empty\nf\n");
        close(fd);
}

static void test_owner(void) {
        _cleanup_free_ char *d = test_path(tmpdir, "owner"), *p = NULL;
        struct replace_opts o = {.mode = 0600, .uid = 1, .gid = 1};
        struct stat st;
        int fd;

        REQUIRE_INT(mkdir(d, 0755), 0);
        p = test_path(d, "f");
        fd = open_dir(d);
        if (geteuid() == 0) {
                CHECK_INT(replace_file_at(fd, "f", "x", 1, &o), 0);
                REQUIRE_INT(stat(p, &st), 0);
                CHECK_UINT(st.st_uid, 1);
                CHECK_UINT(st.st_gid, 1);
        } else {
                /* Not root: the chown fails and nothing is left. */
                CHECK_INT(replace_file_at(fd, "f", "x", 1, &o), -EPERM);
                CHECK_INT(access(p, F_OK), -1);
        }
        close(fd);
}

static void test_symlink_replaced(void) {
        _cleanup_free_ char *d = test_path(tmpdir, "link"), *target = test_path(tmpdir, "target");
        _cleanup_free_ char *p = NULL, *t = NULL, *c = NULL;
        struct replace_opts o = {.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1};
        struct stat st;
        int fd;

        REQUIRE_INT(mkdir(d, 0755), 0);
        REQUIRE_INT(test_write_file(target, "precious\n", 9, 0644), 0);
        p = test_path(d, "f");
        REQUIRE_INT(symlink(target, p), 0);
        fd = open_dir(d);
        CHECK_INT(replace_file_at(fd, "f", "new\n", 4, &o), 0);
        REQUIRE_INT(lstat(p, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        t = test_read_file(target, NULL);
        CHECK_STR(t, "precious\n");
        c = test_read_file(p, NULL);
        CHECK_STR(c, "new\n");
        close(fd);
}

static void test_failure_leaves_name(void) {
        _cleanup_free_ char *d = test_path(tmpdir, "fail"), *sub = NULL, *inner = NULL, *list = NULL;
        struct replace_opts o = {.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1};
        int fd;

        REQUIRE_INT(mkdir(d, 0755), 0);
        sub = test_path(d, "dir");
        REQUIRE_INT(mkdir(sub, 0755), 0);
        inner = test_path(sub, "x");
        REQUIRE_INT(test_write_file(inner, "x", 1, 0644), 0);
        fd = open_dir(d);
        CHECK(replace_file_at(fd, "dir", "data", 4, &o) < 0);
        list = test_list_dir(d);
        CHECK_STR(list, "dir\n"); /* no temporary file left */
        CHECK_INT(access(inner, F_OK), 0);
        close(fd);
        /* A descriptor that is no directory. */
        CHECK(replace_file_at(-1, "f", "x", 1, &o) < 0);
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_new_and_replaced);
        RUN(test_owner);
        RUN(test_symlink_replaced);
        RUN(test_failure_leaves_name);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
