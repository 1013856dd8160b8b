/* Unit tests of output.h in a temporary directory: content, SHA-256 against
 * sha256sum, change-only replacement (inode, mtime, no temporary file
 * left), mode/owner, the mtime bump, symlinks, failures, dry runs and
 * renderings larger than the internal buffer. */
#include "output.h"

#include <time.h>

#include "log.h"
#include "util.h"

#include "test.h"

static char *tmpdir;

/* A fresh directory for one test. */
static char *test_dir(const char *name) {
        char *d = test_path(tmpdir, name);

        if (mkdir(d, 0755) < 0) {
                perror(d);
                abort();
        }
        return d;
}

static struct map_config map_at(const char *path, unsigned mode) {
        return (struct map_config){
                .name = (char *)"testmap",
                .output = (char *)path,
                .format = MAP_FORMAT_POSTFIX,
                .mode = mode,
                .uid = (uid_t)-1,
                .gid = (gid_t)-1,
        };
}

/* Streams data in chunks of `chunk` bytes (0: one write; SIZE_MAX: sizes
 * from a fixed pseudo-random sequence) and finishes. *ret is set whenever
 * output_new succeeded. */
static int render_to(const struct map_config *m, const void *data, size_t len, bool dry_run, size_t chunk,
                     struct output **ret) {
        const char *p = data;
        uint64_t state = 0x1234567;
        int r;

        *ret = NULL;
        r = output_new(m, dry_run, ret);
        if (r < 0)
                return r;
        while (len > 0) {
                size_t n = chunk == 0 ? len : chunk == SIZE_MAX ? 1 + (size_t)(test_rand(&state) % 9000) : chunk;
                if (n > len)
                        n = len;
                r = output_write(*ret, p, n);
                if (r < 0)
                        return r;
                p += n;
                len -= n;
        }
        return output_finish(*ret);
}

/* A whole cycle: render, commit, free. Returns the first error; *changed
 * (may be NULL) tells output_changed(). */
static int write_map(const struct map_config *m, const void *data, size_t len, size_t chunk, bool *changed) {
        struct output *o = NULL;
        int r = render_to(m, data, len, false, chunk, &o);

        if (r >= 0 && changed)
                *changed = output_changed(o);
        if (r >= 0)
                r = output_commit(o);
        output_free(o);
        return r;
}

/* sha256sum's hash of a file, or "" when it failed. */
static void sha256sum_of(const char *path, char hex[SHA256_HEX_LEN + 1]) {
        char cmd[4096], line[256] = "";
        FILE *f;

        hex[0] = '\0';
        snprintf(cmd, sizeof(cmd), "sha256sum -- '%s'", path);
        f = popen(cmd, "r");
        if (!f)
                return;
        if (fgets(line, sizeof(line), f) && strlen(line) > SHA256_HEX_LEN && line[SHA256_HEX_LEN] == ' ') {
                memcpy(hex, line, SHA256_HEX_LEN);
                hex[SHA256_HEX_LEN] = '\0';
        }
        if (pclose(f) != 0)
                hex[0] = '\0';
}

static bool file_is(int line, const char *path, const void *data, size_t len) {
        size_t n = 0;
        char *got = test_read_file(path, &n);
        bool ok = test_check_mem(got, n, data, len, __FILE__, line, "file content", "expected");

        free(got);
        return ok;
}
#define CHECK_FILE(path, data, len) file_is(__LINE__, (path), (data), (len))

static void test_first_write(void) {
        _cleanup_free_ char *dir = test_dir("first");
        _cleanup_free_ char *path = test_path(dir, "vmailbox");
        _cleanup_free_ char *list = NULL;
        static const char text[] = "alice@example.com\texample.com/alice/\nbob@example.com\texample.com/bob/\n";
        struct map_config m = map_at(path, 0604);
        struct output *o = NULL;
        char hex[SHA256_HEX_LEN + 1];
        struct stat st;

        REQUIRE_INT(render_to(&m, text, sizeof(text) - 1, false, 5, &o), 0);
        CHECK(output_changed(o));
        CHECK_UINT(output_size(o), sizeof(text) - 1);
        CHECK_INT(access(path, F_OK), -1); /* not there before the commit */
        CHECK_INT(output_commit(o), 0);
        output_free(o);

        CHECK_FILE(path, text, sizeof(text) - 1);
        REQUIRE_INT(lstat(path, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_UINT(st.st_mode & 07777, 0604);
        CHECK_UINT(st.st_uid, geteuid());
        list = test_list_dir(dir);
        CHECK_STR(list, "vmailbox\n");

        /* The hash is sha256sum's. */
        REQUIRE_INT(render_to(&m, text, sizeof(text) - 1, false, 0, &o), 0);
        sha256sum_of(path, hex);
        CHECK_UINT(strlen(hex), SHA256_HEX_LEN);
        CHECK_STR(output_sha256(o), hex);
        output_free(o);
}

static void test_sha256(void) {
        _cleanup_free_ char *dir = test_dir("sha");
        _cleanup_free_ char *path = test_path(dir, "map");
        struct map_config m = map_at(path, 0640);
        unsigned char bytes[256 * 3];
        char hex[SHA256_HEX_LEN + 1];
        struct output *o = NULL;

        for (size_t i = 0; i < sizeof(bytes); i++)
                bytes[i] = (unsigned char)i;

        /* Known values. */
        REQUIRE_INT(render_to(&m, "", 0, true, 0, &o), 0);
        CHECK_STR(output_sha256(o), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        CHECK_UINT(output_size(o), 0);
        o = output_free(o);
        REQUIRE_INT(render_to(&m, "abc", 3, true, 1, &o), 0);
        CHECK_STR(output_sha256(o), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        o = output_free(o);

        /* Against sha256sum, for committed files of several kinds. */
        const struct {
                const void *data;
                size_t len;
        } cases[] = {
                {"", 0},
                {"x", 1},
                {"k\tv\n", 4},
                {bytes, sizeof(bytes)},
        };
        for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
                CHECK_INT(render_to(&m, cases[i].data, cases[i].len, false, 7, &o), 0);
                _cleanup_free_ char *sha = strdup(output_sha256(o));
                CHECK_INT(output_commit(o), 0);
                o = output_free(o);
                sha256sum_of(path, hex);
                CHECK_UINT(strlen(hex), SHA256_HEX_LEN);
                if (!CHECK_STR(sha, hex))
                        fprintf(stderr, "    case %zu\n", i);
        }
}

static void test_unchanged(void) {
        _cleanup_free_ char *dir = test_dir("unchanged");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        static const char text[] = "a\t1\nb\t2\nc\t3\n";
        struct map_config m = map_at(path, 0640);
        struct stat st1, st2;
        struct output *o = NULL;
        bool changed = true;

        REQUIRE_INT(write_map(&m, text, sizeof(text) - 1, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(path, &st1), 0);

        /* Rendered whole, byte by byte, in random chunks: never touched. */
        const size_t chunks[] = {0, 1, 3, SIZE_MAX};
        for (size_t i = 0; i < ARRAY_SIZE(chunks); i++) {
                REQUIRE_INT(render_to(&m, text, sizeof(text) - 1, false, chunks[i], &o), 0);
                CHECK(!output_changed(o));
                CHECK_UINT(output_size(o), sizeof(text) - 1);
                free(list);
                list = test_list_dir(dir);
                CHECK_STR(list, "map\n"); /* no temporary file, even before commit */
                CHECK_INT(output_commit(o), 0);
                o = output_free(o);
                REQUIRE_INT(stat(path, &st2), 0);
                CHECK_UINT(st2.st_ino, st1.st_ino);
                CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
                CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
                CHECK_INT(st2.st_ctim.tv_sec, st1.st_ctim.tv_sec);
                CHECK_INT(st2.st_ctim.tv_nsec, st1.st_ctim.tv_nsec);
                CHECK_UINT(st2.st_mode & 07777, 0640);
        }
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
        CHECK_FILE(path, text, sizeof(text) - 1);
}

/* The clock mtimes come from (time() is the coarse clock, a tick behind). */
static time_t now_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return ts.tv_sec;
}

static void test_changed(void) {
        _cleanup_free_ char *dir = test_dir("changed");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        struct stat st1, st2;
        bool changed = false;

        REQUIRE_INT(write_map(&m, "a\t1\nb\t2\n", 8, 0, &changed), 0);
        REQUIRE_INT(stat(path, &st1), 0);

        /* Same size, one byte different, at once (same second): a
         * passwd-file, which Dovecot judges by mtime seconds and size,
         * gets another second: the commit waits for it. */
        m.mode = 0600;
        m.format = MAP_FORMAT_PASSWD;
        struct timespec t0;
        clock_gettime(CLOCK_REALTIME, &t0);
        REQUIRE_INT(write_map(&m, "a\t1\nb\t3\n", 8, 0, &changed), 0);
        CHECK(changed);
        CHECK_FILE(path, "a\t1\nb\t3\n", 8);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK(st2.st_ino != st1.st_ino);
        CHECK_UINT(st2.st_mode & 07777, 0600);
        CHECK_INT(st2.st_size, st1.st_size);
        if (!CHECK(st2.st_mtim.tv_sec != st1.st_mtim.tv_sec))
                fprintf(stderr, "    old mtime %lld, new %lld\n", (long long)st1.st_mtim.tv_sec,
                        (long long)st2.st_mtim.tv_sec);
        /* ...and never in the future. */
        CHECK(st2.st_mtim.tv_sec <= now_sec());
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");

        /* Pacing is asked for only while the file's mtime is this second. */
        struct output *o = NULL;
        REQUIRE_INT(render_to(&m, "a\t1\nb\t9\n", 8, false, 0, &o), 0);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        CHECK(output_needs_pacing(o) == (now.tv_sec == st2.st_mtim.tv_sec));
        output_free(o);

        /* An old mtime in the future (an older mapsyncd's drift): the new
         * one is now, which differs too. */
        struct timespec future[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = now_sec() + 1000, .tv_nsec = 999999999}};
        REQUIRE_INT(utimensat(AT_FDCWD, path, future, 0), 0);
        REQUIRE_INT(render_to(&m, "a\t1\nb\t4\n", 8, false, 0, &o), 0);
        CHECK(!output_needs_pacing(o));
        output_free(o);
        time_t before = now_sec();
        REQUIRE_INT(write_map(&m, "a\t1\nb\t4\n", 8, 0, &changed), 0);
        time_t after = now_sec();
        CHECK(changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK(st2.st_mtim.tv_sec >= before && st2.st_mtim.tv_sec <= after);

        /* An old mtime in the past: the new one is now. */
        struct timespec past[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = 1000000000, .tv_nsec = 0}};
        REQUIRE_INT(utimensat(AT_FDCWD, path, past, 0), 0);
        before = now_sec();
        REQUIRE_INT(write_map(&m, "a\t1\nb\t5\n", 8, 0, &changed), 0);
        after = now_sec();
        CHECK(changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK(st2.st_mtim.tv_sec >= before && st2.st_mtim.tv_sec <= after);
        CHECK_FILE(path, "a\t1\nb\t5\n", 8);

        /* A Postfix map does not wait: its mtime is simply now. */
        m.format = MAP_FORMAT_POSTFIX;
        REQUIRE_INT(stat(path, &st1), 0);
        before = now_sec();
        REQUIRE_INT(write_map(&m, "a\t1\nb\t6\n", 8, 0, &changed), 0);
        after = now_sec();
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK(st2.st_mtim.tv_sec >= before && st2.st_mtim.tv_sec <= after);
        CHECK(st2.st_mtim.tv_sec - t0.tv_sec <= 2 + (after - before));
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
}

/* Mode and owner: applied to a new file, and corrected on an unchanged one
 * without rewriting it. */
static void test_mode_owner(void) {
        _cleanup_free_ char *dir = test_dir("owner");
        _cleanup_free_ char *path = test_path(dir, "map");
        struct map_config m = map_at(path, 0640);
        struct stat st1, st2;
        bool changed = false;

        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_UINT(st1.st_mode & 07777, 0640);

        /* Unchanged content, another mode. */
        m.mode = 0604;
        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        CHECK_UINT(st2.st_mode & 07777, 0604);

        if (geteuid() != 0)
                return; /* chown needs root; the suite runs as root in CI */

        /* Changed content, an owner and a group. */
        m.uid = 54321;
        m.gid = 54322;
        REQUIRE_INT(write_map(&m, "k\tw\n", 4, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_UINT(st1.st_uid, 54321);
        CHECK_UINT(st1.st_gid, 54322);
        CHECK_UINT(st1.st_mode & 07777, 0604);

        /* Unchanged content, another owner: corrected in place. */
        m.uid = 12345;
        m.gid = (gid_t)-1;
        REQUIRE_INT(write_map(&m, "k\tw\n", 4, 0, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        CHECK_UINT(st2.st_uid, 12345);
        CHECK_UINT(st2.st_gid, 54322); /* (gid_t)-1: kept */
        CHECK_UINT(st2.st_mode & 07777, 0604);

        /* Only a group. */
        m.uid = (uid_t)-1;
        m.gid = 8;
        m.mode = 0640;
        REQUIRE_INT(write_map(&m, "k\tx\n", 4, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_UINT(st1.st_uid, geteuid()); /* a new file, (uid_t)-1: ours */
        CHECK_UINT(st1.st_gid, 8);
        CHECK_UINT(st1.st_mode & 07777, 0640);
        m.gid = 9;
        REQUIRE_INT(write_map(&m, "k\tx\n", 4, 0, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_UINT(st2.st_gid, 9);
        CHECK_UINT(st2.st_mode & 07777, 0640);
}

/* Unchanged content, another mode, and the file has a second name (a hard
 * link): the other name's file must not change, so the map is replaced by
 * a new inode instead of a chmod. */
static void test_hard_link(void) {
        _cleanup_free_ char *dir = test_dir("hardlink");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *other = test_path(dir, "shadow-copy");
        struct map_config m = map_at(path, 0640);
        struct stat st0, st1, st2;
        bool changed = false;

        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        REQUIRE_INT(link(path, other), 0);
        REQUIRE_INT(stat(other, &st0), 0);
        m.mode = 0604;
        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(other, &st1), 0);
        CHECK_UINT(st1.st_mode & 07777, 0640);
        CHECK_UINT(st1.st_ino, st0.st_ino);
        CHECK_UINT(st1.st_nlink, 1);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK(st2.st_ino != st0.st_ino);
        CHECK_UINT(st2.st_mode & 07777, 0604);
        CHECK_FILE(path, "k\tv\n", 4);
        CHECK_FILE(other, "k\tv\n", 4);
        /* Now alone: corrected in place next time. */
        m.mode = 0600;
        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_UINT(st1.st_ino, st2.st_ino);
        CHECK_UINT(st1.st_mode & 07777, 0600);
}

static void test_shorter_longer_empty(void) {
        _cleanup_free_ char *dir = test_dir("sizes");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        struct stat st1, st2;
        bool changed = false;

        REQUIRE_INT(write_map(&m, "line1\nline2\n", 12, 0, &changed), 0);
        CHECK(changed);
        /* A prefix of the old file. */
        REQUIRE_INT(write_map(&m, "line1\n", 6, 0, &changed), 0);
        CHECK(changed);
        CHECK_FILE(path, "line1\n", 6);
        /* The old file as a prefix of the new. */
        REQUIRE_INT(write_map(&m, "line1\nline3\n", 12, 1, &changed), 0);
        CHECK(changed);
        CHECK_FILE(path, "line1\nline3\n", 12);
        /* Empty. */
        REQUIRE_INT(write_map(&m, "", 0, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_INT(st1.st_size, 0);
        CHECK(S_ISREG(st1.st_mode));
        /* Empty again: unchanged. */
        REQUIRE_INT(write_map(&m, "", 0, 0, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        /* And back. */
        REQUIRE_INT(write_map(&m, "x", 1, 0, &changed), 0);
        CHECK(changed);
        CHECK_FILE(path, "x", 1);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");

        /* No file yet and an empty rendering: an empty file. */
        _cleanup_free_ char *path2 = test_path(dir, "empty");
        struct map_config m2 = map_at(path2, 0640);
        REQUIRE_INT(write_map(&m2, "", 0, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(stat(path2, &st1), 0);
        CHECK_INT(st1.st_size, 0);
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "empty\nmap\n");
}

/* A symlink in the output's place is replaced by a regular file; its
 * target is neither read nor written. */
static void test_symlink(void) {
        _cleanup_free_ char *dir = test_dir("symlink");
        _cleanup_free_ char *other = test_dir("symlink-target");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *target = test_path(other, "secret");
        _cleanup_free_ char *dangling = test_path(other, "not-there");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0644);
        struct stat tst1, tst2, st;
        bool changed = false;

        REQUIRE_INT(test_write_file(target, "k\tv\n", 4, 0600), 0);
        REQUIRE_INT(stat(target, &tst1), 0);
        REQUIRE_INT(symlink(target, path), 0);

        /* Even the very content of the target counts as a change. */
        REQUIRE_INT(write_map(&m, "k\tv\n", 4, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(lstat(path, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_UINT(st.st_mode & 07777, 0644);
        CHECK(st.st_ino != tst1.st_ino);
        CHECK_FILE(path, "k\tv\n", 4);
        CHECK_FILE(target, "k\tv\n", 4);
        REQUIRE_INT(stat(target, &tst2), 0);
        CHECK_UINT(tst2.st_ino, tst1.st_ino);
        CHECK_UINT(tst2.st_mode & 07777, 0600);
        CHECK_INT(tst2.st_mtim.tv_sec, tst1.st_mtim.tv_sec);
        CHECK_INT(tst2.st_mtim.tv_nsec, tst1.st_mtim.tv_nsec);

        /* Other content. */
        REQUIRE_INT(unlink(path), 0);
        REQUIRE_INT(symlink(target, path), 0);
        REQUIRE_INT(write_map(&m, "other\tcontent\n", 14, 0, &changed), 0);
        CHECK(changed);
        REQUIRE_INT(lstat(path, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_FILE(path, "other\tcontent\n", 14);
        CHECK_FILE(target, "k\tv\n", 4);
        REQUIRE_INT(stat(target, &tst2), 0);
        CHECK_INT(tst2.st_mtim.tv_nsec, tst1.st_mtim.tv_nsec);

        /* A dangling link: its target is not created. */
        REQUIRE_INT(unlink(path), 0);
        REQUIRE_INT(symlink(dangling, path), 0);
        REQUIRE_INT(write_map(&m, "a\tb\n", 4, 0, &changed), 0);
        REQUIRE_INT(lstat(path, &st), 0);
        CHECK(S_ISREG(st.st_mode));
        CHECK_FILE(path, "a\tb\n", 4);
        CHECK_INT(access(dangling, F_OK), -1);
        list = test_list_dir(other);
        CHECK_STR(list, "secret\n");
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
}

/* Failures: a directory that does not exist (as root, permissions do not
 * stop writes), an output that is a directory. Nothing is left behind. */
static void test_failures(void) {
        _cleanup_free_ char *dir = test_dir("fail");
        _cleanup_free_ char *path = test_path(dir, "no/such/dir/map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        struct output *o = NULL;
        int r;

        r = render_to(&m, "k\tv\n", 4, false, 0, &o);
        CHECK_INT(r, -ENOENT);
        output_free(o);
        list = test_list_dir(dir);
        CHECK_STR(list, "");

        /* The directory is opened at the start: output_new() says so. */
        o = NULL;
        CHECK_INT(output_new(&m, false, &o), -ENOENT);
        CHECK(o == NULL);
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "");

        /* The output is a directory: refused at the start, kept. */
        _cleanup_free_ char *sub = test_path(dir, "sub");
        REQUIRE_INT(mkdir(sub, 0755), 0);
        struct map_config m2 = map_at(sub, 0640);
        CHECK_INT(render_to(&m2, "k\tv\n", 4, false, 0, &o), -EISDIR);
        output_free(o);
        struct stat st;
        REQUIRE_INT(lstat(sub, &st), 0);
        CHECK(S_ISDIR(st.st_mode));
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "sub\n");

        /* A current file that cannot be read (EACCES and the like) is an
         * error, not an absent file: nothing is written. As root
         * permissions do not stop reads, so this runs for other users. */
        if (geteuid() != 0) {
                _cleanup_free_ char *path4 = test_path(dir, "unreadable");
                struct map_config m4 = map_at(path4, 0640);
                REQUIRE_INT(test_write_file(path4, "k\tv\n", 4, 0000), 0);
                CHECK_INT(render_to(&m4, "k\tw\n", 4, false, 0, &o), -EACCES);
                output_free(o);
                REQUIRE_INT(chmod(path4, 0600), 0);
                CHECK_FILE(path4, "k\tv\n", 4);
        }

        /* output_commit() before output_finish(): refused. */
        _cleanup_free_ char *path3 = test_path(dir, "early");
        struct map_config m3 = map_at(path3, 0640);
        REQUIRE_INT(output_new(&m3, false, &o), 0);
        CHECK_INT(output_write(o, "a", 1), 0);
        CHECK_INT(output_commit(o), -EINVAL);
        output_free(o);
        CHECK_INT(access(path3, F_OK), -1);
        CHECK(output_free(NULL) == NULL);
}

/* A rendering never committed (on_invalid = fail, a later error) leaves the
 * old file and no temporary file. */
static void test_free_without_commit(void) {
        _cleanup_free_ char *dir = test_dir("nocommit");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        struct output *o = NULL;
        struct stat st1, st2;

        REQUIRE_INT(write_map(&m, "old\tfile\n", 9, 0, NULL), 0);
        REQUIRE_INT(stat(path, &st1), 0);
        REQUIRE_INT(render_to(&m, "new\tfile\n", 9, false, 0, &o), 0);
        CHECK(output_changed(o));
        list = test_list_dir(dir);
        CHECK(strlen(list) > strlen("map\n")); /* the temporary file exists now */
        output_free(o);
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
        CHECK_FILE(path, "old\tfile\n", 9);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);

        /* Freed in the middle of the rendering. */
        REQUIRE_INT(output_new(&m, false, &o), 0);
        CHECK_INT(output_write(o, "partial", 7), 0);
        output_free(o);
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
        CHECK_FILE(path, "old\tfile\n", 9);
}

static void check_diff(int line, const struct map_config *m, const char *text, bool expect_changed,
                       uint64_t expect_added, uint64_t expect_removed) {
        struct output *o = NULL;
        uint64_t added = 99, removed = 99;
        int r = render_to(m, text, strlen(text), true, 3, &o);

        test_check_int(r, 0, __FILE__, line, "render_to(dry run)", "0");
        if (r == 0) {
                test_check_int(output_changed(o), expect_changed, __FILE__, line, "output_changed()", "expected");
                test_check_int(output_diff(o, &added, &removed), 0, __FILE__, line, "output_diff()", "0");
                test_check_uint(added, expect_added, __FILE__, line, "added", "expected");
                test_check_uint(removed, expect_removed, __FILE__, line, "removed", "expected");
                test_check_int(output_commit(o), -EINVAL, __FILE__, line, "output_commit(dry run)", "-EINVAL");
        }
        output_free(o);
}
#define CHECK_DIFF(m, text, changed, added, removed) check_diff(__LINE__, (m), (text), (changed), (added), (removed))

static void test_dry_run(void) {
        _cleanup_free_ char *dir = test_dir("dry");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        struct stat st1, st2;

        /* No file: every line is added, nothing is created. */
        CHECK_DIFF(&m, "a\n", true, 1, 0);
        CHECK_DIFF(&m, "a\nb\nc\n", true, 3, 0);
        CHECK_DIFF(&m, "", true, 0, 0);
        list = test_list_dir(dir);
        CHECK_STR(list, "");

        REQUIRE_INT(test_write_file(path, "a\nb\nc\n", 6, 0640), 0);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_DIFF(&m, "a\nb\nc\n", false, 0, 0);
        CHECK_DIFF(&m, "a\nc\nd\ne\n", true, 2, 1);
        CHECK_DIFF(&m, "c\nb\na\n", true, 0, 0); /* order only */
        CHECK_DIFF(&m, "", true, 0, 3);
        CHECK_DIFF(&m, "a\nb\n", true, 0, 1);
        CHECK_DIFF(&m, "a\nb\nc\nd\n", true, 1, 0);
        CHECK_DIFF(&m, "x\ny\nz\n", true, 3, 3);
        CHECK_DIFF(&m, "a\nb\nc", true, 0, 0); /* a missing last newline */

        /* Repeated lines count as many times as they appear. */
        REQUIRE_INT(test_write_file(path, "x\nx\ny\n", 6, 0640), 0);
        REQUIRE_INT(stat(path, &st1), 0);
        CHECK_DIFF(&m, "x\ny\ny\n", true, 1, 1);
        CHECK_DIFF(&m, "x\nx\nx\ny\n", true, 1, 0);
        /* Empty lines are lines. */
        CHECK_DIFF(&m, "x\n\nx\ny\n", true, 1, 0);

        /* The file was never touched, nothing else appeared. */
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_sec, st1.st_mtim.tv_sec);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        CHECK_FILE(path, "x\nx\ny\n", 6);
        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");

        /* The hash of a dry run is the one a real run would log. */
        struct output *o = NULL;
        REQUIRE_INT(render_to(&m, "x\nx\ny\n", 6, true, 0, &o), 0);
        char hex[SHA256_HEX_LEN + 1];
        sha256sum_of(path, hex);
        CHECK_STR(output_sha256(o), hex);
        CHECK(!output_changed(o));
        output_free(o);
}

/* A big map: lines of "userNNNNNNN@example.com\t..." over several MB. */
static char *big_text(size_t *len) {
        size_t cap = 3 * 1024 * 1024 + 256 * 1024, n = 0;
        char *t = malloc(cap);

        if (!t)
                abort();
        for (unsigned i = 0; n + 100 < cap - 200 * 1024; i++)
                n += (size_t)snprintf(t + n, cap - n, "user%07u@example.com\texample.com/user%07u/\n", i, i);
        *len = n;
        return t;
}

static void test_large(void) {
        _cleanup_free_ char *dir = test_dir("large");
        _cleanup_free_ char *path = test_path(dir, "map");
        _cleanup_free_ char *list = NULL;
        struct map_config m = map_at(path, 0640);
        char hex[SHA256_HEX_LEN + 1];
        struct output *o = NULL;
        struct stat st1, st2;
        bool changed = false;
        size_t len;
        char *text = big_text(&len);

        CHECK(len > 3 * 1000 * 1000);
        REQUIRE_INT(render_to(&m, text, len, false, SIZE_MAX, &o), 0);
        CHECK(output_changed(o));
        CHECK_UINT(output_size(o), len);
        _cleanup_free_ char *sha = strdup(output_sha256(o));
        CHECK_INT(output_commit(o), 0);
        o = output_free(o);
        CHECK_FILE(path, text, len);
        sha256sum_of(path, hex);
        CHECK_STR(sha, hex);
        REQUIRE_INT(stat(path, &st1), 0);

        /* Identical, in other chunks: untouched. */
        REQUIRE_INT(write_map(&m, text, len, 4096, &changed), 0);
        CHECK(!changed);
        REQUIRE_INT(stat(path, &st2), 0);
        CHECK_UINT(st2.st_ino, st1.st_ino);
        CHECK_INT(st2.st_mtim.tv_nsec, st1.st_mtim.tv_nsec);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");

        /* One byte changed: in the middle, at and around the 128 KiB
         * boundaries, first and last. */
        const size_t offsets[] = {len / 2, 128 * 1024, 128 * 1024 - 1, 256 * 1024, 0, len - 2};
        for (size_t i = 0; i < ARRAY_SIZE(offsets); i++) {
                char saved = text[offsets[i]];
                text[offsets[i]] = saved == 'X' ? 'Y' : 'X';
                REQUIRE_INT(stat(path, &st1), 0);
                REQUIRE_INT(render_to(&m, text, len, false, i % 2 ? 0 : SIZE_MAX, &o), 0);
                if (!CHECK(output_changed(o)))
                        fprintf(stderr, "    byte %zu changed\n", offsets[i]);
                _cleanup_free_ char *sha2 = strdup(output_sha256(o));
                CHECK(strcmp(sha2, sha) != 0);
                CHECK_INT(output_commit(o), 0);
                o = output_free(o);
                if (!CHECK_FILE(path, text, len))
                        fprintf(stderr, "    byte %zu changed\n", offsets[i]);
                sha256sum_of(path, hex);
                CHECK_STR(sha2, hex);
                REQUIRE_INT(stat(path, &st2), 0);
                CHECK(st2.st_ino != st1.st_ino);
                text[offsets[i]] = saved;
        }

        /* Cut exactly at the buffer size, then one byte longer than the
         * original. */
        const size_t lens[] = {128 * 1024, len, len - 1};
        for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
                REQUIRE_INT(write_map(&m, text, lens[i], 0, &changed), 0);
                CHECK(changed);
                CHECK_FILE(path, text, lens[i]);
        }
        text[len] = '\n';
        REQUIRE_INT(write_map(&m, text, len + 1, SIZE_MAX, &changed), 0);
        CHECK(changed);
        CHECK_FILE(path, text, len + 1);

        /* Dry run on the big file: one line changed is +1 -1. */
        char *line = memchr(text + len / 2, '\n', len / 2);
        REQUIRE(line);
        memcpy(line + 1, "zzzz", 4); /* "user..." becomes "zzzz..." */
        REQUIRE_INT(render_to(&m, text, len + 1, true, SIZE_MAX, &o), 0);
        uint64_t added = 0, removed = 0;
        CHECK(output_changed(o));
        CHECK_INT(output_diff(o, &added, &removed), 0);
        CHECK_UINT(added, 1);
        CHECK_UINT(removed, 1);
        output_free(o);

        free(list);
        list = test_list_dir(dir);
        CHECK_STR(list, "map\n");
        free(text);
}

int main(void) {
        log_init(LOG_CRIT); /* failures are checked through return values */
        tmpdir = test_mkdtemp();
        RUN(test_first_write);
        RUN(test_sha256);
        RUN(test_unchanged);
        RUN(test_changed);
        RUN(test_mode_owner);
        RUN(test_hard_link);
        RUN(test_shorter_longer_empty);
        RUN(test_symlink);
        RUN(test_failures);
        RUN(test_free_without_commit);
        RUN(test_dry_run);
        RUN(test_large);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
