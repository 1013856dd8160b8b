/* A tiny unit-test harness: checks that print file:line and both values,
 * a failure count, and helpers for temporary directories and files.
 * A test executable exits 0 when every check passed, 1 otherwise (never 77:
 * no unit test is ever skipped). */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned test_n_failures; /* failed checks in all */
static unsigned test_n_checks;   /* checks run in all */
static unsigned test_n_tests;    /* test functions run */
static unsigned test_n_failed_tests;
static const char *test_name = "";

static void test_failf(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void test_failf(const char *file, int line, const char *fmt, ...) {
        va_list ap;

        test_n_failures++;
        fprintf(stderr, "%s:%d: [%s] FAILED: ", file, line, test_name);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

/* Prints bytes readably (for the messages of failed checks). */
static void test_escape(const void *data, size_t n, char *buf, size_t size) {
        const unsigned char *d = data;
        size_t o = 0;

        if (!data) {
                snprintf(buf, size, "(null)");
                return;
        }
        buf[o++] = '"';
        for (size_t i = 0; i < n; i++) {
                if (o + 8 >= size) {
                        memcpy(buf + o, "...", 3);
                        o += 3;
                        break;
                }
                if (d[i] < 0x20 || d[i] >= 0x7f || d[i] == '"' || d[i] == '\\')
                        o += (size_t)snprintf(buf + o, size - o, "\\x%02x", d[i]);
                else
                        buf[o++] = (char)d[i];
        }
        buf[o++] = '"';
        buf[o] = '\0';
}

static inline bool test_check(bool ok, const char *file, int line, const char *expr) {
        test_n_checks++;
        if (!ok)
                test_failf(file, line, "%s", expr);
        return ok;
}

static inline bool test_check_int(long long a, long long b, const char *file, int line, const char *ea,
                                  const char *eb) {
        test_n_checks++;
        if (a != b)
                test_failf(file, line, "%s == %s: got %lld, expected %lld", ea, eb, a, b);
        return a == b;
}

static inline bool test_check_uint(unsigned long long a, unsigned long long b, const char *file, int line,
                                   const char *ea, const char *eb) {
        test_n_checks++;
        if (a != b)
                test_failf(file, line, "%s == %s: got %llu, expected %llu", ea, eb, a, b);
        return a == b;
}

static inline bool test_check_mem(const void *a, size_t na, const void *b, size_t nb, const char *file, int line,
                                  const char *ea, const char *eb) {
        bool ok = (a == NULL) == (b == NULL) && (!a || (na == nb && memcmp(a, b, na) == 0));

        test_n_checks++;
        if (!ok) {
                char xa[600], xb[600];
                size_t d = 0;

                while (a && b && d < na && d < nb && ((const char *)a)[d] == ((const char *)b)[d])
                        d++;
                test_escape(a, na, xa, sizeof(xa));
                test_escape(b, nb, xb, sizeof(xb));
                test_failf(file, line,
                           "%s == %s:\n    got      %s (%zu bytes)\n    expected %s (%zu bytes)\n    first difference "
                           "at byte %zu",
                           ea, eb, xa, na, xb, nb, d);
        }
        return ok;
}

static inline bool test_check_str(const char *a, const char *b, const char *file, int line, const char *ea,
                                  const char *eb) {
        return test_check_mem(a, a ? strlen(a) : 0, b, b ? strlen(b) : 0, file, line, ea, eb);
}

static inline bool test_check_contains(const char *s, const char *sub, const char *file, int line, const char *es) {
        bool ok = s && strstr(s, sub);

        test_n_checks++;
        if (!ok) {
                char x[600];
                test_escape(s, s ? strlen(s) : 0, x, sizeof(x));
                test_failf(file, line, "%s contains \"%s\": got %s", es, sub, x);
        }
        return ok;
}

static inline bool test_check_prefix(const char *s, const char *prefix, const char *file, int line, const char *es) {
        bool ok = s && strncmp(s, prefix, strlen(prefix)) == 0;

        test_n_checks++;
        if (!ok) {
                char x[600];
                test_escape(s, s ? strlen(s) : 0, x, sizeof(x));
                test_failf(file, line, "%s starts with \"%s\": got %s", es, prefix, x);
        }
        return ok;
}

/* CHECK_*: record a failure and go on. REQUIRE_*: record it and return
 * from the (void) test function, for checks later code depends on. */
#define CHECK(c)                test_check(!!(c), __FILE__, __LINE__, #c)
#define CHECK_INT(a, b)         test_check_int((long long)(a), (long long)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_UINT(a, b)        test_check_uint((unsigned long long)(a), (unsigned long long)(b), __FILE__, __LINE__, #a, #b)
#define CHECK_STR(a, b)         test_check_str((a), (b), __FILE__, __LINE__, #a, #b)
#define CHECK_MEM(a, na, b, nb) test_check_mem((a), (na), (b), (nb), __FILE__, __LINE__, #a, #b)
#define CHECK_CONTAINS(s, sub)  test_check_contains((s), (sub), __FILE__, __LINE__, #s)
#define CHECK_PREFIX(s, p)      test_check_prefix((s), (p), __FILE__, __LINE__, #s)

#define REQUIRE(c)                                                                                                     \
        do {                                                                                                           \
                if (!CHECK(c))                                                                                         \
                        return;                                                                                        \
        } while (0)
#define REQUIRE_INT(a, b)                                                                                              \
        do {                                                                                                           \
                if (!CHECK_INT(a, b))                                                                                  \
                        return;                                                                                        \
        } while (0)
#define REQUIRE_UINT(a, b)                                                                                             \
        do {                                                                                                           \
                if (!CHECK_UINT(a, b))                                                                                 \
                        return;                                                                                        \
        } while (0)

static inline void test_run(const char *name, void (*fn)(void)) {
        unsigned before = test_n_failures;

        test_name = name;
        test_n_tests++;
        fn();
        if (test_n_failures != before)
                test_n_failed_tests++;
        printf("%s - %s\n", test_n_failures == before ? "ok" : "FAILED", name);
        fflush(stdout);
}

#define RUN(fn) test_run(#fn, fn)

/* Ends main(): prints a summary and gives the exit status. */
static inline int test_end(void) {
        printf("%u tests, %u checks, %u failed checks in %u tests\n", test_n_tests, test_n_checks, test_n_failures,
               test_n_failed_tests);
        return test_n_failures ? 1 : 0;
}

/* Temporary directories, removed with everything in them. */
static inline char *test_mkdtemp(void) {
        const char *t = getenv("TMPDIR");
        char *p;

        if (asprintf(&p, "%s/mapsyncd-unit.XXXXXX", t && *t ? t : "/tmp") < 0)
                abort();
        if (!mkdtemp(p)) {
                perror("mkdtemp");
                abort();
        }
        return p;
}

static int test_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)ftw;
        if (flag == FTW_DP || flag == FTW_D)
                return rmdir(path) < 0 ? -1 : 0;
        return unlink(path) < 0 ? -1 : 0;
}

static inline void test_rm_rf(const char *path) {
        if (nftw(path, test_rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
                fprintf(stderr, "warning: could not remove %s: %s\n", path, strerror(errno));
}

static inline char *test_path(const char *dir, const char *name) {
        char *p;

        if (asprintf(&p, "%s/%s", dir, name) < 0)
                abort();
        return p;
}

/* Writes n bytes to a new file (truncating), with a mode. */
static inline int test_write_file(const char *path, const void *data, size_t n, mode_t mode) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        const char *p = data;

        if (fd < 0)
                return -errno;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        int r = -errno;
                        close(fd);
                        return r;
                }
                p += k;
                n -= (size_t)k;
        }
        if (fchmod(fd, mode) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        close(fd);
        return 0;
}

/* Reads a whole file into a new buffer (NUL-terminated too); NULL if it
 * cannot be read. */
static inline char *test_read_file(const char *path, size_t *len) {
        FILE *f = fopen(path, "re");
        char *buf = NULL;
        size_t cap = 0, n = 0;

        if (!f)
                return NULL;
        for (;;) {
                if (cap - n < 65536) {
                        char *b = realloc(buf, cap + 65536 + 1);
                        if (!b)
                                abort();
                        buf = b;
                        cap += 65536;
                }
                size_t k = fread(buf + n, 1, cap - n, f);
                n += k;
                if (k == 0)
                        break;
        }
        fclose(f);
        buf[n] = '\0';
        if (len)
                *len = n;
        return buf;
}

/* Names in a directory but "." and "..", sorted and joined with '\n' (each
 * followed by one), e.g. "a\nb\n"; "" for an empty directory. */
static int test_cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static inline char *test_list_dir(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        char **names = NULL, *out;
        size_t n = 0, len = 0;

        if (!d)
                return NULL;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                names = realloc(names, (n + 1) * sizeof(*names));
                if (!names || !(names[n++] = strdup(de->d_name)))
                        abort();
        }
        closedir(d);
        if (n > 0)
                qsort(names, n, sizeof(*names), test_cmp_names);
        for (size_t i = 0; i < n; i++)
                len += strlen(names[i]) + 1;
        out = malloc(len + 1);
        if (!out)
                abort();
        out[0] = '\0';
        for (size_t i = 0, o = 0; i < n; i++) {
                o += (size_t)sprintf(out + o, "%s\n", names[i]);
                free(names[i]);
        }
        free(names);
        return out;
}

/* A growing memory buffer, usable as a render_write_fn target. */
struct test_buf {
        char *data;
        size_t len, cap;
};

static inline int test_buf_write(void *userdata, const void *data, size_t n) {
        struct test_buf *b = userdata;

        if (b->len + n + 1 > b->cap) {
                size_t cap = b->cap ? b->cap : 256;
                while (cap < b->len + n + 1)
                        cap *= 2;
                char *d = realloc(b->data, cap);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->cap = cap;
        }
        memcpy(b->data + b->len, data, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
}

static inline void test_buf_done(struct test_buf *b) {
        free(b->data);
        *b = (struct test_buf){0};
}

/* A deterministic generator (xorshift64*), for shuffles with fixed seeds. */
static inline uint64_t test_rand(uint64_t *state) {
        uint64_t x = *state;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *state = x;
        return x * 0x2545F4914F6CDD1DULL;
}
