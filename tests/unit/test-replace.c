/* Unit tests of replace.h in a temporary directory: content, metadata,
 * the temporary name, suspend/resume with the inode check, failures that
 * leave the old file, a symlinked directory refused, and the sweep that
 * removes only mapsyncd's own leftovers. */
#include "replace.h"

#include <dirent.h>

#include "util.h"

#include "test.h"

static char *tmpdir;

static unsigned count_entries(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        if (!d)
                return 0;
        while ((de = readdir(d)))
                n += de->d_name[0] != '.' || (de->d_name[1] && !(de->d_name[1] == '.' && !de->d_name[2]));
        closedir(d);
        return n;
}

static void test_replace_file(void) {
        char *p = test_path(tmpdir, "a");
        struct timespec mt = {.tv_sec = 1000000000, .tv_nsec = 0};
        struct replace_meta meta = {.mode = 0640, .uid = (uid_t)-1, .gid = (gid_t)-1, .mtime = &mt};
        const char *step = NULL;
        struct stat st, st2;
        size_t len = 0;
        char *text;

        REQUIRE_INT(test_write_file(p, "old\n", 4, 0600), 0);
        REQUIRE_INT(stat(p, &st), 0);
        CHECK_INT(replace_file(p, "new text\n", 9, &meta, &step), 0);
        text = test_read_file(p, &len);
        CHECK_MEM(text, len, "new text\n", (size_t)9);
        free(text);
        REQUIRE_INT(stat(p, &st2), 0);
        CHECK(st2.st_ino != st.st_ino);
        CHECK_UINT(st2.st_mode & 07777, 0640);
        CHECK_INT(st2.st_mtim.tv_sec, 1000000000);
        /* Only the file itself is left. */
        CHECK_UINT(count_entries(tmpdir), 1);
        /* mtime NULL: now. */
        meta.mtime = NULL;
        CHECK_INT(replace_file(p, "x\n", 2, &meta, &step), 0);
        REQUIRE_INT(stat(p, &st2), 0);
        CHECK(st2.st_mtim.tv_sec >= time(NULL) - 5);
        unlink(p);
        free(p);
}

static void test_temp_name(void) {
        _cleanup_close_ int dir_fd = replace_open_dir(tmpdir);
        struct replace r;
        struct stat st;

        REQUIRE(dir_fd >= 0);
        REQUIRE_INT(replace_begin(&r, dir_fd, "vmailbox"), 0);
        CHECK(replace_is_temp_name(r.tmp, "vmailbox"));
        CHECK_PREFIX(r.tmp, ".vmailbox.");
        CHECK_UINT(strlen(r.tmp), strlen(".vmailbox.") + 6);
        REQUIRE_INT(fstatat(dir_fd, r.tmp, &st, 0), 0);
        CHECK_UINT(st.st_mode & 07777, 0600);
        replace_abort(&r);
        CHECK_INT(fstatat(dir_fd, ".vmailbox.XXXXXX", &st, 0), -1);
        CHECK_UINT(count_entries(tmpdir), 0);
        replace_abort(&r); /* twice: harmless */

        CHECK(!replace_is_temp_name(".vmailbox.abc", "vmailbox"));
        CHECK(!replace_is_temp_name(".vmailbox.abcdefg", "vmailbox"));
        CHECK(!replace_is_temp_name(".vmailbox.abc-ef", "vmailbox"));
        CHECK(!replace_is_temp_name("vmailbox.abcdef", "vmailbox"));
        CHECK(!replace_is_temp_name(".vmailbo.abcdef", "vmailbox"));
        CHECK(!replace_is_temp_name(".vmailbox.x.abcdef", "vmailbox"));
        CHECK(replace_is_temp_name(".vmailbox.aZ09xy", "vmailbox"));

        CHECK_INT(replace_begin(&r, dir_fd, "a/b"), -EINVAL);
        CHECK_INT(replace_begin(&r, dir_fd, ".."), -EINVAL);
        char longname[NAME_MAX];
        memset(longname, 'x', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        CHECK_INT(replace_begin(&r, dir_fd, longname), -ENAMETOOLONG);
}

static void test_suspend_resume(void) {
        _cleanup_close_ int dir_fd = replace_open_dir(tmpdir);
        struct replace_meta meta = {.mode = 0644, .uid = (uid_t)-1, .gid = (gid_t)-1};
        char *p = test_path(tmpdir, "m"), *tp;
        struct replace r;
        size_t len = 0;
        char *text;

        REQUIRE(dir_fd >= 0);
        REQUIRE_INT(replace_begin(&r, dir_fd, "m"), 0);
        REQUIRE_INT(replace_write(&r, "abc", 3), 0);
        REQUIRE_INT(replace_suspend(&r), 0);
        CHECK_INT(r.fd, -1);
        REQUIRE_INT(replace_resume(&r, dir_fd), 0);
        REQUIRE_INT(replace_write(&r, "def\n", 4), 0);
        REQUIRE_INT(replace_suspend(&r), 0);
        CHECK_INT(replace_commit(&r, &meta), 0);
        CHECK_INT(r.dir_sync_error, 0);
        text = test_read_file(p, &len);
        CHECK_MEM(text, len, "abcdef\n", (size_t)7);
        free(text);

        /* A file put in the temporary file's place is not ours: not
         * written, not renamed, not removed. */
        REQUIRE_INT(replace_begin(&r, dir_fd, "m"), 0);
        REQUIRE_INT(replace_suspend(&r), 0);
        tp = test_path(tmpdir, r.tmp);
        /* The link keeps the inode, so the intruder's file gets another. */
        char *keep = test_path(tmpdir, "keep");
        REQUIRE_INT(link(tp, keep), 0);
        REQUIRE_INT(unlink(tp), 0);
        REQUIRE_INT(test_write_file(tp, "intruder\n", 9, 0600), 0);
        CHECK_INT(replace_commit(&r, &meta), -ESTALE);
        replace_abort(&r);
        text = test_read_file(tp, &len);
        CHECK_MEM(text, len, "intruder\n", (size_t)9);
        free(text);
        text = test_read_file(p, &len);
        CHECK_MEM(text, len, "abcdef\n", (size_t)7);
        free(text);
        unlink(tp);
        unlink(p);
        unlink(keep);
        free(keep);
        free(tp);
        free(p);
}

static void test_failures(void) {
        char *sub = test_path(tmpdir, "sub"), *link = test_path(tmpdir, "link"), *p;
        struct replace_meta meta = {.mode = 0644, .uid = (uid_t)-1, .gid = (gid_t)-1};
        const char *step = NULL;

        /* A missing directory. */
        p = test_path(sub, "x");
        CHECK_INT(replace_file(p, "a", 1, &meta, &step), -ENOENT);
        CHECK_STR(step, "open the directory of");
        free(p);
        /* A symlinked directory is refused, not followed. */
        REQUIRE_INT(mkdir(sub, 0755), 0);
        REQUIRE_INT(symlink(sub, link), 0);
        int e = replace_open_dir(link);
        CHECK(e == -ELOOP || e == -ENOTDIR);
        p = test_path(link, "x");
        CHECK(replace_file(p, "a", 1, &meta, &step) < 0);
        free(p);
        CHECK_UINT(count_entries(sub), 0);
        /* A directory in the file's place: the rename fails, nothing is
         * left behind. */
        p = test_path(sub, "d");
        REQUIRE_INT(mkdir(p, 0755), 0);
        CHECK(replace_file(p, "a", 1, &meta, &step) < 0);
        CHECK_STR(step, "replace");
        CHECK_UINT(count_entries(sub), 1);
        rmdir(p);
        free(p);
        /* A relative or directory-less path. */
        CHECK_INT(replace_file("x", "a", 1, &meta, &step), -EINVAL);
        CHECK_INT(replace_file("/tmp/", "a", 1, &meta, &step), -EINVAL);
        unlink(link);
        rmdir(sub);
        free(sub);
        free(link);
}

static void test_sweep(void) {
        char *d = test_path(tmpdir, "sweep");
        const char *keep[] = {"vmailbox",      ".vmailbox.abc",   ".vmailbox.abcdefg",
                              ".other.abcdef", "vmailbox.abcdef", ".vmailbox.ab-def"};
        _cleanup_close_ int dir_fd = -1;
        char *p;

        REQUIRE_INT(mkdir(d, 0755), 0);
        for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
                p = test_path(d, keep[i]);
                REQUIRE_INT(test_write_file(p, "k", 1, 0600), 0);
                free(p);
        }
        p = test_path(d, ".vmailbox.Ab3dE9");
        REQUIRE_INT(test_write_file(p, "t", 1, 0600), 0);
        free(p);
        p = test_path(d, ".vmailbox.zzzzzz");
        REQUIRE_INT(test_write_file(p, "t", 1, 0600), 0);
        free(p);
        /* Not regular: a directory and a symlink of the right name stay. */
        p = test_path(d, ".vmailbox.dirdir");
        REQUIRE_INT(mkdir(p, 0700), 0);
        free(p);
        p = test_path(d, ".vmailbox.linkkk");
        REQUIRE_INT(symlink("/etc/passwd", p), 0);
        free(p);
        /* Owned by another user: stays (needs root to create). */
        p = test_path(d, ".vmailbox.nobody");
        REQUIRE_INT(test_write_file(p, "n", 1, 0600), 0);
        bool other = geteuid() == 0 && chown(p, 65534, 65534) == 0;
        free(p);

        dir_fd = replace_open_dir(d);
        REQUIRE(dir_fd >= 0);
        CHECK_INT(replace_sweep(dir_fd, "vmailbox"), other ? 2 : 3);
        for (size_t i = 0; i < ARRAY_SIZE(keep); i++) {
                p = test_path(d, keep[i]);
                CHECK(access(p, F_OK) == 0);
                free(p);
        }
        p = test_path(d, ".vmailbox.Ab3dE9");
        CHECK(access(p, F_OK) < 0);
        free(p);
        p = test_path(d, ".vmailbox.dirdir");
        CHECK(access(p, F_OK) == 0);
        free(p);
        p = test_path(d, ".vmailbox.linkkk");
        struct stat st;
        CHECK(lstat(p, &st) == 0);
        free(p);
        if (other) {
                p = test_path(d, ".vmailbox.nobody");
                CHECK(access(p, F_OK) == 0);
                free(p);
        }
        CHECK_UINT(count_entries(d), ARRAY_SIZE(keep) + 2 + (other ? 1 : 0));
        test_rm_rf(d);
        free(d);
}

int main(void) {
        tmpdir = test_mkdtemp();
        RUN(test_replace_file);
        RUN(test_temp_name);
        RUN(test_suspend_resume);
        RUN(test_failures);
        RUN(test_sweep);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
