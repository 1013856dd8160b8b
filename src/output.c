/* Atomic, change-only replacement of map files. */
#include "output.h"

#include <fcntl.h>
#include <libgen.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"
#include "util.h"

#define OUTPUT_BUF_SIZE (128 * 1024)

struct output {
        const struct map_config *map;
        bool dry_run;
        int old_fd; /* current file, -1 when absent or not a regular file */
        struct stat old_st;
        uint64_t matched; /* bytes known equal to the current file */
        bool diverged;
        int tmp_fd;
        char *tmp_path;
        char *dir;
        EVP_MD_CTX *md;
        unsigned char *buf;
        size_t buf_len;
        unsigned char *mem; /* dry run: the whole rendering */
        size_t mem_len, mem_cap;
        uint64_t size;
        bool finished;
        char sha256[SHA256_HEX_LEN + 1];
};

int output_new(const struct map_config *m, bool dry_run, struct output **ret) {
        struct output *o = calloc(1, sizeof(*o));
        _cleanup_free_ char *copy = NULL;

        if (!o)
                return -ENOMEM;
        o->map = m;
        o->dry_run = dry_run;
        o->old_fd = -1;
        o->tmp_fd = -1;
        copy = strdup(m->output);
        o->buf = malloc(OUTPUT_BUF_SIZE);
        o->md = EVP_MD_CTX_new();
        if (!copy || !o->buf || !o->md || !(o->dir = strdup(dirname(copy)))) {
                output_free(o);
                return -ENOMEM;
        }
        if (EVP_DigestInit_ex(o->md, EVP_sha256(), NULL) != 1) {
                output_free(o);
                return -EIO;
        }

        /* O_NOFOLLOW: a symlink put in the output's place is replaced, never
         * read or written through. */
        o->old_fd = open(m->output, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
        if (o->old_fd >= 0 && (fstat(o->old_fd, &o->old_st) < 0 || !S_ISREG(o->old_st.st_mode))) {
                close(o->old_fd);
                o->old_fd = -1;
        }
        if (o->old_fd < 0)
                o->diverged = true;
        *ret = o;
        return 0;
}

struct output *output_free(struct output *o) {
        if (!o)
                return NULL;
        if (o->tmp_fd >= 0)
                close(o->tmp_fd);
        if (o->tmp_path)
                unlink(o->tmp_path);
        if (o->old_fd >= 0)
                close(o->old_fd);
        EVP_MD_CTX_free(o->md);
        free(o->tmp_path);
        free(o->dir);
        free(o->buf);
        free(o->mem);
        free(o);
        return NULL;
}

static int write_all(int fd, const void *data, size_t n) {
        const char *p = data;

        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

static int tmp_create(struct output *o) {
        const char *base = strrchr(o->map->output, '/') + 1;

        if (asprintf(&o->tmp_path, "%s/.%s.XXXXXX", o->dir, base) < 0) {
                o->tmp_path = NULL;
                return -ENOMEM;
        }
        /* mkostemp creates with O_EXCL and mode 0600: an existing name is
         * never reused and the file is private until committed. */
        o->tmp_fd = mkostemp(o->tmp_path, O_CLOEXEC);
        if (o->tmp_fd < 0) {
                int r = -errno;
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = o->map->name),
                           "%s: Could not create a temporary file for %s in %s: %s", o->map->name, o->map->output,
                           o->dir, strerror(-r));
                free(o->tmp_path);
                o->tmp_path = NULL;
                return r;
        }
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
                r = write_all(o->tmp_fd, chunk, (size_t)k);
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
        if (o->tmp_fd < 0) {
                r = tmp_create(o);
                if (r < 0)
                        return r;
                r = tmp_copy_prefix(o);
                if (r < 0)
                        goto fail;
        }
        r = write_all(o->tmp_fd, o->buf, o->buf_len);
        if (r < 0)
                goto fail;
        o->buf_len = 0;
        return 0;
fail:
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = o->map->name),
                   "%s: Could not write %s (as %s): %s", o->map->name, o->map->output, o->tmp_path, strerror(-r));
        return r;
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

int output_finish(struct output *o) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        int r;

        r = flush(o);
        if (r < 0)
                return r;
        if (!o->diverged && o->matched != (uint64_t)o->old_st.st_size)
                o->diverged = true;
        if (o->diverged && !o->dry_run && o->tmp_fd < 0) {
                /* A shorter rendering, or an empty one. */
                r = tmp_create(o);
                if (r < 0)
                        return r;
                r = tmp_copy_prefix(o);
                if (r < 0) {
                        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = o->map->name),
                                   "%s: Could not write %s (as %s): %s", o->map->name, o->map->output, o->tmp_path,
                                   strerror(-r));
                        return r;
                }
        }
        if (EVP_DigestFinal_ex(o->md, md, &md_len) != 1)
                return -EIO;
        for (unsigned i = 0; i < md_len && i < 32; i++)
                snprintf(o->sha256 + 2 * i, 3, "%02x", md[i]);
        o->finished = true;
        return 0;
}

bool output_changed(const struct output *o) {
        return o->diverged;
}

const char *output_sha256(const struct output *o) {
        return o->sha256;
}

uint64_t output_size(const struct output *o) {
        return o->size;
}

static int fix_metadata(struct output *o) {
        const struct map_config *m = o->map;
        bool own = (m->uid != (uid_t)-1 && o->old_st.st_uid != m->uid) ||
                   (m->gid != (gid_t)-1 && o->old_st.st_gid != m->gid);

        if (own && fchown(o->old_fd, m->uid, m->gid) < 0)
                goto fail;
        if ((own || (o->old_st.st_mode & 07777) != m->mode) && fchmod(o->old_fd, m->mode) < 0)
                goto fail;
        if (own || (o->old_st.st_mode & 07777) != m->mode)
                log_info("%s: corrected mode and owner of %s", m->name, m->output);
        return 0;
fail:
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name),
                   "%s: Could not set mode and owner of %s: %m", m->name, m->output);
        return -errno;
}

int output_commit(struct output *o) {
        const struct map_config *m = o->map;
        struct timespec ts[2];
        _cleanup_close_ int dir_fd = -1;
        const char *what;

        if (!o->finished || o->dry_run)
                return -EINVAL;
        if (!o->diverged)
                return fix_metadata(o);

        what = "set the owner of";
        if ((m->uid != (uid_t)-1 || m->gid != (gid_t)-1) && fchown(o->tmp_fd, m->uid, m->gid) < 0)
                goto fail;
        what = "set the mode of";
        if (fchmod(o->tmp_fd, m->mode) < 0)
                goto fail;

        /* Dovecot re-reads a passwd-file only when its mtime in whole seconds
         * or its size changed; bcrypt hashes have one length. */
        clock_gettime(CLOCK_REALTIME, &ts[1]);
        if (o->old_fd >= 0 && ts[1].tv_sec <= o->old_st.st_mtim.tv_sec) {
                ts[1].tv_sec = o->old_st.st_mtim.tv_sec + 1;
                ts[1].tv_nsec = 0;
        }
        ts[0] = (struct timespec){.tv_nsec = UTIME_NOW};
        what = "set the mtime of";
        if (futimens(o->tmp_fd, ts) < 0)
                goto fail;
        what = "write";
        if (fsync(o->tmp_fd) < 0)
                goto fail;
        what = "replace";
        if (rename(o->tmp_path, m->output) < 0)
                goto fail;
        free(o->tmp_path);
        o->tmp_path = NULL;

        dir_fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0 || fsync(dir_fd) < 0) {
                /* Renamed already: readers see the new file; only its
                 * durability across a power loss is in doubt. */
                log_submit(LOG_WARNING, LOG_FIELDS(.map = m->name), "%s: Could not sync directory %s: %m", m->name,
                           o->dir);
        }
        return 0;
fail:;
        int r = -errno;
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = m->name), "%s: Could not %s %s: %s",
                   m->name, what, m->output, strerror(-r));
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

        if (o->old_fd >= 0) {
                old = malloc((size_t)o->old_st.st_size + 1);
                if (!old)
                        return -ENOMEM;
                while (old_len < (size_t)o->old_st.st_size) {
                        ssize_t k =
                                pread(o->old_fd, old + old_len, (size_t)o->old_st.st_size - old_len, (off_t)old_len);
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
