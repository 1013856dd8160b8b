/* Atomic, change-only replacement of map files. */
#include "output.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "paths.h"
#include "replace.h"
#include "trust.h"
#include "util.h"

#define OUTPUT_BUF_SIZE (128 * 1024)

struct output {
        const struct map_config *map;
        const struct config *config; /* NULL: no check against the protected files */
        bool dry_run;
        char *dir;        /* the output's directory */
        const char *base; /* the output's file name, in map->output */
        int dir_fd;       /* open while rendering and committing only */
        dev_t dir_dev;
        ino_t dir_ino;
        int old_fd; /* current file while rendering; -1 when absent or not a regular file */
        bool have_old;
        struct stat old_st;
        uint64_t old_lines; /* lines of the current file, counted when it changes */
        uint64_t matched;   /* bytes known equal to the current file */
        bool diverged;
        bool relinked; /* same content, new inode: the old one is hard-linked */
        bool fix_meta; /* same content, mode or owner to correct in place */
        bool have_tmp;
        struct replace tmp;
        EVP_MD_CTX *md;
        unsigned char *buf;
        size_t buf_len;
        unsigned char *mem; /* dry run: the whole rendering */
        size_t mem_len, mem_cap;
        uint64_t size;
        bool finished;
        char sha256[SHA256_HEX_LEN + 1];
};

static int fail_msg(const struct output *o, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail_msg(const struct output *o, int r, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = o->map->name), "%s: %s", o->map->name,
                   msg);
        return r;
}

/* Refuses to touch a file that is one of the files mapsyncd must never
 * write (the database and its companions, the configuration, the state
 * and metrics files), by device and inode, whatever path led to it. */
static int check_protected(const struct output *o, const struct stat *st) {
        char what[PATH_MAX + 64];

        if (!o->config || !paths_protected(o->config, st, what, sizeof(what)))
                return 0;
        return fail_msg(o, -EPERM, "%s is %s: refusing to replace it", o->map->output, what);
}

static int open_dir(struct output *o) {
        struct trust_problem tp;
        struct stat st;
        int r;

        o->dir_fd = replace_open_dir(o->dir);
        if (o->dir_fd < 0)
                return fail_msg(o, o->dir_fd, "Could not open the directory %s of %s: %s", o->dir, o->map->output,
                                strerror(-o->dir_fd));
        if (fstat(o->dir_fd, &st) < 0)
                return fail_msg(o, -errno, "Could not examine the directory %s: %m", o->dir);
        if (o->dir_ino && (st.st_dev != o->dir_dev || st.st_ino != o->dir_ino))
                return fail_msg(o, -ESTALE, "the directory %s was replaced while %s was rendered; kept it as it was",
                                o->dir, o->map->output);
        o->dir_dev = st.st_dev;
        o->dir_ino = st.st_ino;
        r = trust_dir_fd(o->dir_fd, o->dir, TRUST_LEAF_STICKY_OK, &tp);
        if (r < 0)
                return fail_msg(
                        o, r,
                        "refusing to write %s: %s is %s (a directory mapsyncd writes into must be owned by root "
                        "or this user and writable by no one else, unless sticky)",
                        o->map->output, tp.path, tp.why);
        return 0;
}

static void close_dir(struct output *o) {
        if (o->dir_fd >= 0)
                close(o->dir_fd);
        o->dir_fd = -1;
}

/* Opens the current file. Absent means ENOENT, or a symlink or another
 * non-regular file in its place (replaced, never followed); any other
 * error (EACCES, EMFILE, EIO...) fails the map. */
static int open_old(struct output *o) {
        o->old_fd = openat(o->dir_fd, o->base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (o->old_fd < 0) {
                if (errno == ENOENT || errno == ELOOP)
                        return 0;
                return fail_msg(o, -errno, "Could not read the current %s: %m; kept it as it was", o->map->output);
        }
        if (fstat(o->old_fd, &o->old_st) < 0)
                return fail_msg(o, -errno, "Could not examine the current %s: %m; kept it as it was", o->map->output);
        if (!S_ISREG(o->old_st.st_mode)) {
                close(o->old_fd);
                o->old_fd = -1;
                if (S_ISDIR(o->old_st.st_mode))
                        return fail_msg(o, -EISDIR, "%s is a directory; kept it as it was", o->map->output);
                return 0;
        }
        o->have_old = true;
        return check_protected(o, &o->old_st);
}

int output_new_checked(const struct config *c, const struct map_config *m, bool dry_run, struct output **ret) {
        struct output *o = calloc(1, sizeof(*o));
        const char *slash = strrchr(m->output, '/');
        int r;

        if (!o)
                return -ENOMEM;
        o->map = m;
        o->config = c;
        o->dry_run = dry_run;
        o->dir_fd = -1;
        o->old_fd = -1;
        o->base = slash ? slash + 1 : m->output;
        o->buf = malloc(OUTPUT_BUF_SIZE);
        o->md = EVP_MD_CTX_new();
        o->dir = !slash               ? strdup(".")
                 : slash == m->output ? strdup("/")
                                      : strndup(m->output, (size_t)(slash - m->output));
        if (!o->dir || !o->buf || !o->md) {
                output_free(o);
                return -ENOMEM;
        }
        if (EVP_DigestInit_ex(o->md, EVP_sha256(), NULL) != 1) {
                output_free(o);
                return -EIO;
        }
        r = open_dir(o);
        if (r >= 0)
                r = open_old(o);
        if (r < 0) {
                output_free(o);
                return r;
        }
        if (!o->have_old)
                o->diverged = true;
        *ret = o;
        return 0;
}

int output_new(const struct map_config *m, bool dry_run, struct output **ret) {
        return output_new_checked(NULL, m, dry_run, ret);
}

struct output *output_free(struct output *o) {
        if (!o)
                return NULL;
        if (o->have_tmp) {
                if (o->dir_fd < 0 && o->tmp.tmp[0])
                        o->dir_fd = replace_open_dir(o->dir);
                if (o->dir_fd >= 0) {
                        o->tmp.dir_fd = o->dir_fd;
                        replace_abort(&o->tmp);
                }
        }
        if (o->old_fd >= 0)
                close(o->old_fd);
        close_dir(o);
        EVP_MD_CTX_free(o->md);
        free(o->dir);
        free(o->buf);
        free(o->mem);
        free(o);
        return NULL;
}

static int tmp_create(struct output *o) {
        int r = replace_begin(&o->tmp, o->dir_fd, o->base);

        if (r < 0)
                return fail_msg(o, r, "Could not create a temporary file for %s in %s: %s", o->map->output, o->dir,
                                strerror(-r));
        o->have_tmp = true;
        return 0;
}

/* Copies the first o->matched bytes of the current file, which equal the
 * start of the rendering, into the temporary file. */
static int tmp_copy_prefix(struct output *o) {
        unsigned char chunk[65536];
        uint64_t off = 0;

        while (off < o->matched) {
                size_t want = o->matched - off < sizeof(chunk) ? (size_t)(o->matched - off) : sizeof(chunk);
                ssize_t k = pread(o->old_fd, chunk, want, (off_t)off);
                int r;

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? -errno : -EIO;
                r = replace_write(&o->tmp, chunk, (size_t)k);
                if (r < 0)
                        return r;
                off += (uint64_t)k;
        }
        return 0;
}

static int mem_append(struct output *o, const void *data, size_t n) {
        if (o->mem_len + n > o->mem_cap) {
                size_t cap = o->mem_cap ? o->mem_cap : 65536;
                unsigned char *m;
                while (cap < o->mem_len + n)
                        cap *= 2;
                m = realloc(o->mem, cap);
                if (!m)
                        return -ENOMEM;
                o->mem = m;
                o->mem_cap = cap;
        }
        memcpy(o->mem + o->mem_len, data, n);
        o->mem_len += n;
        return 0;
}

/* Compares one chunk with the current file at the matched offset. */
static bool matches_old(struct output *o, const unsigned char *data, size_t n) {
        unsigned char chunk[65536];
        size_t done = 0;

        if (o->matched + n > (uint64_t)o->old_st.st_size)
                return false;
        while (done < n) {
                size_t want = n - done < sizeof(chunk) ? n - done : sizeof(chunk);
                ssize_t k = pread(o->old_fd, chunk, want, (off_t)(o->matched + done));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0 || memcmp(chunk, data + done, (size_t)k) != 0)
                        return false;
                done += (size_t)k;
        }
        return true;
}

static int write_failed(struct output *o, int r) {
        return fail_msg(o, r, "Could not write %s (as %s): %s", o->map->output, o->tmp.tmp, strerror(-r));
}

static int flush(struct output *o) {
        int r;

        if (o->buf_len == 0)
                return 0;
        if (EVP_DigestUpdate(o->md, o->buf, o->buf_len) != 1)
                return -EIO;
        o->size += o->buf_len;

        if (o->dry_run) {
                r = mem_append(o, o->buf, o->buf_len);
                if (r < 0)
                        return r;
                if (!o->diverged) {
                        if (matches_old(o, o->buf, o->buf_len))
                                o->matched += o->buf_len;
                        else
                                o->diverged = true;
                }
                o->buf_len = 0;
                return 0;
        }

        if (!o->diverged) {
                if (matches_old(o, o->buf, o->buf_len)) {
                        o->matched += o->buf_len;
                        o->buf_len = 0;
                        return 0;
                }
                o->diverged = true;
        }
        if (!o->have_tmp) {
                r = tmp_create(o);
                if (r < 0)
                        return r;
                r = tmp_copy_prefix(o);
                if (r < 0)
                        return write_failed(o, r);
        }
        r = replace_write(&o->tmp, o->buf, o->buf_len);
        if (r < 0)
                return write_failed(o, r);
        o->buf_len = 0;
        return 0;
}

int output_write(void *userdata, const void *data, size_t n) {
        struct output *o = userdata;
        const unsigned char *p = data;

        while (n > 0) {
                size_t room = OUTPUT_BUF_SIZE - o->buf_len, k = n < room ? n : room;
                memcpy(o->buf + o->buf_len, p, k);
                o->buf_len += k;
                p += k;
                n -= k;
                if (o->buf_len == OUTPUT_BUF_SIZE) {
                        int r = flush(o);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static bool meta_differs(const struct output *o) {
        const struct map_config *m = o->map;

        return (m->uid != (uid_t)-1 && o->old_st.st_uid != m->uid) ||
               (m->gid != (gid_t)-1 && o->old_st.st_gid != m->gid) || (o->old_st.st_mode & 07777) != m->mode;
}

/* Lines of the current file, for the shrink guard. */
static void count_old_lines(struct output *o) {
        unsigned char chunk[65536];
        uint64_t off = 0, n = 0;

        while (off < (uint64_t)o->old_st.st_size) {
                ssize_t k = pread(o->old_fd, chunk, sizeof(chunk), (off_t)off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                for (ssize_t i = 0; i < k; i++)
                        n += chunk[i] == '\n';
                off += (uint64_t)k;
        }
        o->old_lines = n;
}

int output_finish(struct output *o) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        int r;

        r = flush(o);
        if (r < 0)
                return r;
        if (!o->diverged && o->matched != (uint64_t)o->old_st.st_size)
                o->diverged = true;
        if (!o->diverged && meta_differs(o)) {
                /* Another name shares the inode (a hard link): correcting mode
                 * or owner in place would change that file too. */
                if (o->old_st.st_nlink > 1) {
                        o->relinked = true;
                        o->diverged = true;
                } else
                        o->fix_meta = true;
        }
        if (o->diverged && o->have_old)
                count_old_lines(o);
        if (o->diverged && !o->dry_run && !o->have_tmp) {
                /* A shorter rendering, an empty one, or a relink. */
                r = tmp_create(o);
                if (r < 0)
                        return r;
                r = tmp_copy_prefix(o);
                if (r < 0)
                        return write_failed(o, r);
        }
        if (EVP_DigestFinal_ex(o->md, md, &md_len) != 1)
                return -EIO;
        for (unsigned i = 0; i < md_len && i < 32; i++)
                snprintf(o->sha256 + 2 * i, 3, "%02x", md[i]);
        o->finished = true;

        /* Nothing stays open between the rendering and the commit: the
         * number of maps is not bounded by the descriptor limit. */
        if (o->old_fd >= 0)
                close(o->old_fd);
        o->old_fd = -1;
        if (o->have_tmp && (r = replace_suspend(&o->tmp)) < 0)
                return write_failed(o, r);
        close_dir(o);
        return 0;
}

bool output_changed(const struct output *o) {
        return o->diverged;
}

bool output_relinked(const struct output *o) {
        return o->relinked;
}

const char *output_sha256(const struct output *o) {
        return o->sha256;
}

uint64_t output_size(const struct output *o) {
        return o->size;
}

bool output_old_stat(const struct output *o, struct stat *st) {
        if (o->have_old && st)
                *st = o->old_st;
        return o->have_old;
}

uint64_t output_old_lines(const struct output *o) {
        return o->old_lines;
}

/* Unchanged content, another mode or owner: corrected on the file, found
 * again by name and checked by device and inode. */
static int fix_metadata(struct output *o) {
        const struct map_config *m = o->map;
        _cleanup_close_ int fd = -1;
        struct stat st;

        fd = openat(o->dir_fd, o->base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0)
                goto fail;
        if (st.st_dev != o->old_st.st_dev || st.st_ino != o->old_st.st_ino || st.st_nlink > 1) {
                log_info("%s: %s changed while it was compared; looking again at the next sync", m->name, m->output);
                return 0;
        }
        if ((m->uid != (uid_t)-1 || m->gid != (gid_t)-1) && fchown(fd, m->uid, m->gid) < 0)
                goto fail;
        if (fchmod(fd, m->mode) < 0)
                goto fail;
        log_info("%s: corrected mode and owner of %s", m->name, m->output);
        return 0;
fail:
        return fail_msg(o, -errno, "Could not set mode and owner of %s: %m", m->output);
}

/* The mtime a replacement gets: now, never in the future. A map read by
 * Dovecot (format = passwd) must also differ in whole seconds from the
 * old file's (Dovecot compares mtime seconds and size): in the rare case
 * that the old file was replaced in this very second, wait for the next
 * one. The daemon normally holds such a change back itself
 * (output_needs_pacing) so that this wait does not happen. */
static void replacement_mtime(const struct output *o, struct timespec *ts) {
        clock_gettime(CLOCK_REALTIME, ts);
        if (o->map->format == MAP_FORMAT_PASSWD && o->have_old && ts->tv_sec == o->old_st.st_mtim.tv_sec) {
                struct timespec wait = {.tv_sec = 0, .tv_nsec = 1000000000L - ts->tv_nsec};
                while (nanosleep(&wait, &wait) < 0 && errno == EINTR)
                        ;
                clock_gettime(CLOCK_REALTIME, ts);
        }
}

bool output_needs_pacing(const struct output *o) {
        struct timespec ts;

        if (o->map->format != MAP_FORMAT_PASSWD || !o->have_old || !o->diverged)
                return false;
        clock_gettime(CLOCK_REALTIME, &ts);
        return ts.tv_sec == o->old_st.st_mtim.tv_sec;
}

int output_commit(struct output *o) {
        const struct map_config *m = o->map;
        struct replace_meta meta = {.mode = m->mode, .uid = m->uid, .gid = m->gid};
        struct timespec ts;
        struct stat st;
        int r;

        if (!o->finished || o->dry_run)
                return -EINVAL;
        if (!o->diverged && !o->fix_meta)
                return 0;
        r = open_dir(o);
        if (r < 0)
                goto done;
        if (!o->diverged) {
                r = fix_metadata(o);
                goto done;
        }
        /* What is at the name now, whatever it was when rendering began. */
        if (fstatat(o->dir_fd, o->base, &st, AT_SYMLINK_NOFOLLOW) == 0 && (r = check_protected(o, &st)) < 0)
                goto done;
        replacement_mtime(o, &ts);
        meta.mtime = &ts;
        o->tmp.dir_fd = o->dir_fd;
        r = replace_commit(&o->tmp, &meta);
        if (r < 0) {
                fail_msg(o, r, "Could not %s %s: %s", o->tmp.step, m->output, strerror(-r));
                goto done;
        }
        o->have_tmp = false;
        if (o->tmp.dir_sync_error)
                /* Renamed already: readers see the new file; only its
                 * durability across a power loss is in doubt. */
                log_submit(LOG_WARNING, LOG_FIELDS(.map = m->name), "%s: Could not sync directory %s: %s", m->name,
                           o->dir, strerror(o->tmp.dir_sync_error));
done:
        close_dir(o);
        return r;
}

/* Splits text into lines (without their newlines) and sorts them. */
static int split_lines(const unsigned char *text, size_t len, const unsigned char ***lines, size_t **lens, size_t *n) {
        size_t count = 0, i = 0;

        for (size_t k = 0; k < len; k++)
                count += text[k] == '\n';
        count += len > 0 && text[len - 1] != '\n';
        *lines = calloc(count + 1, sizeof(**lines));
        *lens = calloc(count + 1, sizeof(**lens));
        if (!*lines || !*lens)
                return -ENOMEM;
        for (size_t start = 0; start < len;) {
                const unsigned char *nl = memchr(text + start, '\n', len - start);
                size_t end = nl ? (size_t)(nl - text) : len;
                (*lines)[i] = text + start;
                (*lens)[i++] = end - start;
                start = end + 1;
        }
        *n = i;
        return 0;
}

struct line_ref {
        const unsigned char *p;
        size_t n;
};

static int line_cmp(const void *a, const void *b) {
        const struct line_ref *x = a, *y = b;
        int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
        return c ? c : (x->n > y->n) - (x->n < y->n);
}

static int sorted_lines(const unsigned char *text, size_t len, struct line_ref **ret, size_t *n) {
        _cleanup_free_ const unsigned char **lines = NULL;
        _cleanup_free_ size_t *lens = NULL;
        struct line_ref *v;
        int r = split_lines(text, len, &lines, &lens, n);

        if (r < 0)
                return r;
        v = calloc(*n + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < *n; i++)
                v[i] = (struct line_ref){lines[i], lens[i]};
        qsort(v, *n, sizeof(*v), line_cmp);
        *ret = v;
        return 0;
}

int output_diff(struct output *o, uint64_t *added, uint64_t *removed) {
        _cleanup_free_ unsigned char *old = NULL;
        _cleanup_free_ struct line_ref *a = NULL, *b = NULL;
        size_t old_len = 0, na = 0, nb = 0, i = 0, j = 0;
        int r;

        _cleanup_close_ int dir_fd = -1, old_fd = -1;

        if (o->have_old) {
                dir_fd = replace_open_dir(o->dir);
                old_fd = dir_fd < 0 ? -1 : openat(dir_fd, o->base, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        }
        if (old_fd >= 0) {
                old = malloc((size_t)o->old_st.st_size + 1);
                if (!old)
                        return -ENOMEM;
                while (old_len < (size_t)o->old_st.st_size) {
                        ssize_t k = pread(old_fd, old + old_len, (size_t)o->old_st.st_size - old_len, (off_t)old_len);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                break;
                        old_len += (size_t)k;
                }
        }
        r = sorted_lines(old ? old : (const unsigned char *)"", old_len, &a, &na);
        if (r >= 0)
                r = sorted_lines(o->mem ? o->mem : (const unsigned char *)"", o->mem_len, &b, &nb);
        if (r < 0)
                return r;
        *added = *removed = 0;
        while (i < na || j < nb) {
                int c = i == na ? 1 : j == nb ? -1 : line_cmp(&a[i], &b[j]);
                if (c == 0)
                        i++, j++;
                else if (c < 0)
                        i++, (*removed)++;
                else
                        j++, (*added)++;
        }
        return 0;
}
