/* [files NAME]: one file per row, a manifest of what mapsyncd wrote. */
#include "files.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "log.h"
#include "notify.h"
#include "paths.h"
#include "render.h"
#include "replace.h"
#include "trust.h"
#include "util.h"

#define MANIFEST_HEADER "# mapsyncd: files written by [files %s]; names added before writing, removed after unlinking\n"

struct entry {
        char *name;
        unsigned char *content;
        size_t len;
        bool write;     /* missing or different: (re)write it */
        bool fix_meta;  /* unchanged bytes, but mode or owner differ */
        bool listed;    /* in the manifest */
        bool protected; /* one of mapsyncd's own files under this name: never touched */
};

struct files_set {
        const struct config *config;
        const struct files_config *fc;
        bool dry_run;
        int dir_fd;
        struct entry *entries; /* sorted by name */
        size_t n_entries;
        char **listed; /* names in the manifest, sorted */
        size_t n_listed;
        bool manifest_missing;
        char **removed; /* listed, no longer a row, present: unlink */
        size_t n_removed;
        size_t n_gone;      /* listed, no longer a row, absent: drop from the manifest */
        uint64_t n_rows;    /* rows read */
        uint64_t n_invalid; /* rows dropped */
        uint64_t n_written;
        bool refused; /* a name was one of mapsyncd's own files */
        char *notes[RENDER_LOG_LIMIT];
        size_t n_notes;
        char *changed_names;
        char *removed_names;
};

const char *files_check_name(const void *name, size_t len) {
        const unsigned char *s = name;

        if (!name)
                return "file name is NULL";
        if (len == 0)
                return "file name is empty";
        if (len > 255)
                return "file name is longer than 255 bytes";
        if (len > FILES_NAME_MAX)
                return "file name is longer than 247 bytes, too long for its temporary file (.NAME.XXXXXX)";
        if (s[0] == '.')
                return "file name starts with '.'";
        for (size_t i = 0; i < len; i++) {
                unsigned char c = s[i];
                if (c == '/')
                        return "file name holds '/'";
                if (c == '\0')
                        return "file name holds a NUL byte";
                if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-'))
                        return "file name holds a byte other than A-Z, a-z, 0-9, '.', '_', '-'";
        }
        return NULL;
}

static const char *const pem_labels[] = {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"};

/* Length of the line at p (without its "\n" or "\r\n") and where the next
 * one starts. */
static size_t line_at(const char *p, const char *end, const char **next) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

        *next = nl ? nl + 1 : end;
        if (n > 0 && p[n - 1] == '\r')
                n--;
        return n;
}

static int no_password(char *buf, int size, int rwflag, void *u) {
        return -1; /* never ask: an encrypted key is an invalid row */
}

/* The text of one PEM private-key block, without libcrypto. */
static const char *check_pem_text(const char *data, size_t len) {
        const char *p = data, *end = data + len, *next, *label = NULL;
        char begin[64], end_line[64];
        size_t n, n_body = 0;

        if (memchr(data, '\0', len))
                return "not a PEM private key: holds a NUL byte";
        n = line_at(p, end, &next);
        for (size_t i = 0; i < ARRAY_SIZE(pem_labels); i++) {
                snprintf(begin, sizeof(begin), "-----BEGIN %s-----", pem_labels[i]);
                if (n == strlen(begin) && memcmp(p, begin, n) == 0)
                        label = pem_labels[i];
        }
        if (!label)
                return "not a PEM private key: does not start with a BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC "
                       "PRIVATE KEY line";
        snprintf(end_line, sizeof(end_line), "-----END %s-----", label);
        for (p = next;; p = next) {
                if (p == end)
                        return "not a PEM private key: no END line";
                n = line_at(p, end, &next);
                if (n == strlen(end_line) && memcmp(p, end_line, n) == 0)
                        break;
                if (n == 0 || n > 80)
                        return "not a PEM private key: a line of its body is empty or longer than 80 bytes";
                for (size_t i = 0; i < n; i++) {
                        unsigned char c = (unsigned char)p[i];
                        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
                              c == '/' || c == '='))
                                return "not a PEM private key: its body is not base64 (an encrypted key, or "
                                       "headers)";
                }
                n_body++;
        }
        if (n_body == 0)
                return "not a PEM private key: empty body";
        /* After END: nothing, or the line break that ended it. */
        if (next != end)
                return "not a PEM private key: text follows the END line (one block only)";
        return NULL;
}

/* libcrypto's verdict: about a millisecond a key, so it is asked only of
 * a content about to be written. */
static const char *check_pem_parse(const char *data, size_t len) {
        BIO *bio;
        EVP_PKEY *key;

        bio = BIO_new_mem_buf(data, (int)len);
        if (!bio)
                return "not checked: out of memory";
        key = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
        BIO_free(bio);
        ERR_clear_error();
        if (!key)
                return "not a PEM private key: libcrypto cannot read it as one";
        EVP_PKEY_free(key);
        return NULL;
}

const char *files_check_content(enum files_content kind, const void *data, size_t len) {
        if (!data)
                return "content is NULL";
        if (len > FILES_CONTENT_MAX)
                return "content is larger than 1 MiB";
        if (kind == FILES_CONTENT_PEM_PRIVATE_KEY) {
                const char *why = check_pem_text(data, len);
                return why ? why : check_pem_parse(data, len);
        }
        return NULL;
}

/* What can be told without libcrypto (collect_rows); check_pem_parse
 * follows for the contents that will be written (plan). */
static const char *check_content_text(enum files_content kind, const void *data, size_t len) {
        if (!data)
                return "content is NULL";
        if (len > FILES_CONTENT_MAX)
                return "content is larger than 1 MiB";
        return kind == FILES_CONTENT_PEM_PRIVATE_KEY ? check_pem_text(data, len) : NULL;
}

int files_manifest_path(const struct config *c, const struct files_config *f, char **ret) {
        return asprintf(ret, "%s/files-%s.manifest", c->state_dir, f->name) < 0 ? -ENOMEM : 0;
}

static void note_dropped(struct files_set *s, const struct db_row *row, const char *why) {
        char name[160];
        char *msg;

        s->n_invalid++;
        if (s->n_notes >= ARRAY_SIZE(s->notes))
                return;
        str_escape(row->key ? row->key : (const unsigned char *)"", row->key ? row->key_len : 0, name, sizeof(name));
        if (asprintf(&msg, "%s: %s row with file name \"%s\": %s", s->fc->name,
                     s->fc->on_invalid == ON_INVALID_FAIL ? "invalid" : "skipped", name, why) >= 0)
                s->notes[s->n_notes++] = msg;
}

void files_log_invalid(const struct files_set *s, int priority) {
        const struct log_fields *f = LOG_FIELDS(.message_id = MSGID_INVALID_ROW, .map = s->fc->name);

        if (s->n_invalid > 0 && s->fc->on_invalid == ON_INVALID_FAIL)
                priority = LOG_ERR;
        for (size_t i = 0; i < s->n_notes; i++)
                log_submit(priority, f, "%s", s->notes[i]);
        if (s->n_invalid > RENDER_LOG_LIMIT)
                log_submit(priority, f, "%s: %llu invalid rows in all (%llu more not shown)", s->fc->name,
                           (unsigned long long)s->n_invalid, (unsigned long long)(s->n_invalid - RENDER_LOG_LIMIT));
}

static int cmp_entry(const void *a, const void *b) {
        return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static struct entry *find_entry(const struct files_set *s, const char *name) {
        struct entry key = {.name = (char *)name};

        return s->n_entries ? bsearch(&key, s->entries, s->n_entries, sizeof(key), cmp_entry) : NULL;
}

static bool is_listed(const struct files_set *s, const char *name) {
        return s->n_listed && bsearch(&name, s->listed, s->n_listed, sizeof(char *), cmp_str);
}

static void free_names(char **v, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

static int fail(const struct files_set *s, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(const struct files_set *s, int r, const char *fmt, ...) {
        char msg[1024];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = s->fc->name), "%s: %s", s->fc->name, msg);
        return r;
}

/* The state directory must be this user's alone: the manifest says which
 * files mapsyncd may remove. */
static int state_dir_check(const struct files_set *s) {
        const char *dir = s->config->state_dir;
        struct stat st;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return fail(s, -errno, "Could not create state_dir %s for the manifest: %m", dir);
        if (stat(dir, &st) < 0)
                return fail(s, -errno, "Could not use state_dir %s for the manifest: %m", dir);
        if (!S_ISDIR(st.st_mode))
                return fail(s, -ENOTDIR, "state_dir %s is not a directory; no manifest, no files written", dir);
        if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH)))
                return fail(s, -EPERM,
                            "state_dir %s is writable by others than its owner, or not owned by root or this "
                            "user: no manifest can be trusted there; no files written",
                            dir);
        return 0;
}

/* Reads the manifest: the names this set wrote into its directory. */
static int manifest_read(struct files_set *s) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;
        unsigned lineno = 0;
        ssize_t len;
        int r;

        r = files_manifest_path(s->config, s->fc, &path);
        if (r < 0)
                return r;
        f = fopen(path, "re");
        if (!f) {
                if (errno == ENOENT) {
                        s->manifest_missing = true;
                        return 0;
                }
                return fail(s, -errno, "Could not read the manifest %s: %m", path);
        }
        while ((len = getline(&line, &cap, f)) >= 0) {
                char **v;

                lineno++;
                if (len > 0 && line[len - 1] == '\n')
                        line[--len] = '\0';
                if (len == 0 || line[0] == '#')
                        continue;
                if (strncmp(line, "directory ", 10) == 0) {
                        if (!streq(line + 10, s->fc->directory)) {
                                log_notice("%s: the manifest %s is of directory %s, not %s: the files there are left "
                                           "alone",
                                           s->fc->name, path, line + 10, s->fc->directory);
                                free_names(s->listed, s->n_listed);
                                s->listed = NULL;
                                s->n_listed = 0;
                                s->manifest_missing = true;
                                return 0;
                        }
                        continue;
                }
                if (files_check_name(line, (size_t)len)) {
                        log_warning("%s:%u: not a file name; ignored", path, lineno);
                        continue;
                }
                v = reallocarray(s->listed, s->n_listed + 1, sizeof(*v));
                if (!v)
                        return -ENOMEM;
                s->listed = v;
                if (!(v[s->n_listed] = strdup(line)))
                        return -ENOMEM;
                s->n_listed++;
        }
        if (s->n_listed > 1)
                qsort(s->listed, s->n_listed, sizeof(char *), cmp_str);
        return 0;
}

/* Writes the manifest: listed names plus `add` (written or about to be),
 * minus those marked in `drop`. */
static int manifest_write(struct files_set *s, const bool *add, const bool *drop) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        const char *step = NULL;
        size_t len = 0;
        char *head = NULL;
        int r;

        r = files_manifest_path(s->config, s->fc, &path);
        if (r < 0)
                return r;
        if (asprintf(&head, MANIFEST_HEADER "directory %s\n", s->fc->name, s->fc->directory) < 0)
                return -ENOMEM;
        len = strlen(head);
        text = head;
        /* Both lists are sorted; their union, in order, without repeats. */
        for (size_t i = 0, k = 0; i < s->n_listed || k < s->n_entries;) {
                const char *name;
                int c = i == s->n_listed ? 1 : k == s->n_entries ? -1 : strcmp(s->listed[i], s->entries[k].name);
                bool keep;

                if (c <= 0) {
                        name = s->listed[i];
                        keep = !drop || !drop[i];
                        i++;
                        if (c == 0)
                                k++;
                } else {
                        name = s->entries[k].name;
                        keep = add && add[k];
                        k++;
                }
                if (keep && (str_append(&text, &len, name, strlen(name)) < 0 || str_append(&text, &len, "\n", 1) < 0))
                        return -ENOMEM;
        }
        r = replace_file(path, text, len, &(struct replace_meta){.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1},
                         &step);
        if (r < 0)
                return fail(s, r, "Could not write the manifest %s (%s): %s", path, step ? step : "write",
                            strerror(-r));
        return 0;
}

/* Whether the open file holds exactly these bytes. */
static bool same_bytes(int fd, const struct stat *st, const unsigned char *data, size_t len) {
        unsigned char buf[16384];
        size_t off = 0;

        if ((uint64_t)st->st_size != len)
                return false;
        while (off < len) {
                size_t want = len - off < sizeof(buf) ? len - off : sizeof(buf);
                ssize_t k = pread(fd, buf, want, (off_t)off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0 || memcmp(buf, data + off, (size_t)k) != 0)
                        return false;
                off += (size_t)k;
        }
        return true;
}

static void compare_entry(struct files_set *s, struct entry *e) {
        const struct files_config *fc = s->fc;
        _cleanup_close_ int fd = -1;
        char what[PATH_MAX + 64];
        struct stat st;

        e->listed = is_listed(s, e->name);
        fd = openat(s->dir_fd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        /* The directory holds none of them (guard_directory): only a hard
         * link could be one. */
        if (fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink > 1 && paths_protected(s->config, &st, what, sizeof(what))) {
                e->protected = true; /* a hard link to one of mapsyncd's own files */
                log_submit(LOG_ERR, LOG_FIELDS(.message_id = MSGID_MAP_FAILED, .map = fc->name),
                           "%s: %s/%s is %s: refusing to replace it", fc->name, fc->directory, e->name, what);
                return;
        }
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !same_bytes(fd, &st, e->content, e->len)) {
                e->write = true;
                return;
        }
        e->fix_meta = (st.st_mode & 07777) != fc->mode || (fc->uid != (uid_t)-1 && st.st_uid != fc->uid) ||
                      (fc->gid != (gid_t)-1 && st.st_gid != fc->gid);
        /* An unchanged file that a row names, unlisted: mapsyncd did not
         * write it and leaves it out of the manifest. */
}

/* The directory must not be one holding the database, the configuration,
 * the state, or a map's output, whatever symlinks lead there: a row may
 * name any file in it. */
static int guard_directory(struct files_set *s) {
        const struct config *c = s->config;
        struct stat st;

        if (fstat(s->dir_fd, &st) < 0)
                return fail(s, -errno, "Could not stat directory %s: %m", s->fc->directory);
        for (size_t i = 0; i < c->n_maps + 4; i++) {
                _cleanup_free_ char *copy = NULL;
                const char *what, *path;
                struct stat o;
                bool is_dir = false;

                if (i == 0)
                        what = "the database", path = c->db_path;
                else if (i == 1)
                        what = "the configuration", path = c->path;
                else if (i == 2)
                        what = "the state_dir", path = c->state_dir, is_dir = true;
                else if (i == 3)
                        what = "the metrics_file", path = c->metrics_file;
                else
                        what = c->maps[i - 4].name, path = c->maps[i - 4].output;
                if (!path || path[0] != '/')
                        continue;
                copy = strdup(path);
                if (!copy)
                        return -ENOMEM;
                if (stat(is_dir ? copy : dirname(copy), &o) < 0)
                        continue;
                if (o.st_dev == st.st_dev && o.st_ino == st.st_ino)
                        return fail(s, -EEXIST, "directory %s is the directory of %s%s (%s): refusing to write into it",
                                    s->fc->directory, i >= 4 ? "the output of map " : "", what, path);
        }
        return 0;
}

static int collect_rows(struct files_set *s, struct db *db) {
        const struct files_config *fc = s->fc;
        struct db_query *q = NULL;
        struct db_row row;
        size_t cap = 0;
        int r, k;

        r = db_query_new(db, fc->query, &q);
        if (r < 0)
                return fail(s, r, "query failed: %s; kept %s as it was", db_errmsg(db), fc->directory);
        while ((k = db_query_next(q, &row)) > 0) {
                const char *why;
                struct entry *e;

                s->n_rows++;
                if ((s->n_rows & 0xfff) == 0)
                        notify_watchdog_kick();
                why = files_check_name(row.key, row.key ? row.key_len : 0);
                if (!why)
                        why = check_content_text(fc->content, row.value, row.value_len);
                if (why) {
                        note_dropped(s, &row, why);
                        continue;
                }
                if (s->n_entries == cap) {
                        size_t ncap = cap ? 2 * cap : 16;
                        struct entry *v = reallocarray(s->entries, ncap, sizeof(*v));
                        if (!v) {
                                k = -ENOMEM;
                                break;
                        }
                        s->entries = v;
                        cap = ncap;
                }
                e = &s->entries[s->n_entries];
                *e = (struct entry){0};
                e->name = strndup((const char *)row.key, row.key_len);
                e->content = malloc(row.value_len + 1);
                if (!e->name || !e->content) {
                        free(e->name);
                        free(e->content);
                        k = -ENOMEM;
                        break;
                }
                memcpy(e->content, row.value, row.value_len);
                e->len = row.value_len;
                s->n_entries++;
        }
        db_query_free(q);
        if (k < 0)
                return fail(s, k, "query failed: %s; kept %s as it was", k == -ENOMEM ? "out of memory" : db_errmsg(db),
                            fc->directory);
        return 0;
}

/* A name in more than one row: with one content it is one file; with
 * different contents no row can be trusted over another, and every row of
 * the name is dropped. */
static void drop_repeats(struct files_set *s) {
        size_t o = 0;

        if (s->n_entries > 1)
                qsort(s->entries, s->n_entries, sizeof(*s->entries), cmp_entry);
        for (size_t i = 0; i < s->n_entries;) {
                size_t j = i + 1;
                bool conflict = false;

                while (j < s->n_entries && streq(s->entries[j].name, s->entries[i].name)) {
                        if (s->entries[j].len != s->entries[i].len ||
                            memcmp(s->entries[j].content, s->entries[i].content, s->entries[i].len) != 0)
                                conflict = true;
                        j++;
                }
                if (conflict) {
                        struct db_row row = {.key = (const unsigned char *)s->entries[i].name,
                                             .key_len = strlen(s->entries[i].name)};
                        note_dropped(s, &row, "file name in more than one row, with different contents");
                        s->n_invalid += j - i - 1;
                }
                for (size_t k = i; k < j; k++) {
                        if (!conflict && k == i) {
                                s->entries[o++] = s->entries[k];
                                continue;
                        }
                        free(s->entries[k].name);
                        free(s->entries[k].content);
                }
                i = j;
        }
        s->n_entries = o;
}

static int join_names(char **ret, char *const *names, size_t n) {
        size_t len = 0;

        if (str_append(ret, &len, "", 0) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if ((i && str_append(ret, &len, " ", 1) < 0) || str_append(ret, &len, names[i], strlen(names[i])) < 0)
                        return -ENOMEM;
        return 0;
}

static int plan(struct files_set *s) {
        _cleanup_free_ char **changed = NULL;
        size_t n_changed = 0, o = 0;
        int r;

        for (size_t i = 0; i < s->n_entries; i++) {
                struct entry *e = &s->entries[i];
                const char *why = NULL;

                compare_entry(s, e);
                /* An unchanged file passed this check when it was written. */
                if (e->write && s->fc->content == FILES_CONTENT_PEM_PRIVATE_KEY)
                        why = check_pem_parse((const char *)e->content, e->len);
                if (why) {
                        struct db_row row = {.key = (const unsigned char *)e->name, .key_len = strlen(e->name)};
                        note_dropped(s, &row, why);
                        free(e->name);
                        OPENSSL_cleanse(e->content, e->len);
                        free(e->content);
                        continue;
                }
                s->n_written += e->write;
                s->refused |= e->protected;
                s->entries[o++] = *e;
        }
        s->n_entries = o;
        for (size_t i = 0; i < s->n_listed; i++) {
                struct stat st;
                char **v;

                if (find_entry(s, s->listed[i]))
                        continue;
                if (fstatat(s->dir_fd, s->listed[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
                        s->n_gone++;
                        continue;
                }
                v = reallocarray(s->removed, s->n_removed + 1, sizeof(*v));
                if (!v)
                        return -ENOMEM;
                s->removed = v;
                if (!(v[s->n_removed] = strdup(s->listed[i])))
                        return -ENOMEM;
                s->n_removed++;
        }
        changed = calloc(s->n_written + s->n_removed + 1, sizeof(*changed));
        if (!changed)
                return -ENOMEM;
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i].write)
                        changed[n_changed++] = s->entries[i].name;
        for (size_t i = 0; i < s->n_removed; i++)
                changed[n_changed++] = s->removed[i];
        if (n_changed > 1)
                qsort(changed, n_changed, sizeof(*changed), cmp_str);
        r = join_names(&s->changed_names, changed, n_changed);
        if (r >= 0)
                r = join_names(&s->removed_names, s->removed, s->n_removed);
        return r;
}

int files_render(struct db *db, const struct config *c, size_t index, bool dry_run, struct files_set **ret) {
        struct files_set *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->config = c;
        s->fc = &c->files[index];
        s->dry_run = dry_run;
        s->dir_fd = replace_open_dir(s->fc->directory);
        if (s->dir_fd < 0) {
                struct stat st;

                r = s->dir_fd;
                if ((r == -ENOTDIR || r == -ELOOP) && lstat(s->fc->directory, &st) == 0 && S_ISLNK(st.st_mode))
                        r = fail(s, -ELOOP, "directory %s is a symlink: name the directory itself", s->fc->directory);
                else
                        r = fail(s, r, "Could not open directory %s: %s", s->fc->directory, strerror(-r));
                goto fail;
        }
        r = guard_directory(s);
        if (r >= 0) {
                struct trust_problem tp;

                r = trust_dir_fd(s->dir_fd, s->fc->directory, TRUST_LEAF_STICKY_OK, &tp);
                if (r < 0)
                        r = fail(s, r,
                                 "refusing to write into %s: %s is %s (a directory mapsyncd writes into must be "
                                 "owned by root or this user and writable by no one else, unless sticky)",
                                 s->fc->directory, tp.path, tp.why);
        }
        if (r >= 0 && !dry_run)
                r = state_dir_check(s);
        if (r >= 0)
                r = collect_rows(s, db);
        if (r >= 0)
                drop_repeats(s);
        if (r >= 0)
                r = manifest_read(s);
        if (r >= 0)
                r = plan(s);
        if (r >= 0 && s->refused)
                r = fail(s, -EPERM, "kept %s as it was", s->fc->directory);
        if (r >= 0 && s->n_invalid > 0 && s->fc->on_invalid == ON_INVALID_FAIL) {
                files_log_invalid(s, LOG_ERR);
                r = fail(s, -EINVAL, "%llu invalid rows and on_invalid = fail: kept %s as it was",
                         (unsigned long long)s->n_invalid, s->fc->directory);
        }
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        files_free(s);
        return r;
}

struct files_set *files_free(struct files_set *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n_entries; i++) {
                free(s->entries[i].name);
                /* Key material: not left behind in freed memory. */
                if (s->entries[i].content)
                        OPENSSL_cleanse(s->entries[i].content, s->entries[i].len);
                free(s->entries[i].content);
        }
        free(s->entries);
        free_names(s->listed, s->n_listed);
        free_names(s->removed, s->n_removed);
        for (size_t i = 0; i < s->n_notes; i++)
                free(s->notes[i]);
        free(s->changed_names);
        free(s->removed_names);
        if (s->dir_fd >= 0)
                close(s->dir_fd);
        free(s);
        return NULL;
}

bool files_changed(const struct files_set *s) {
        return s->n_written > 0 || s->n_removed > 0;
}

uint64_t files_count(const struct files_set *s) {
        return s->n_entries;
}

uint64_t files_n_written(const struct files_set *s) {
        return s->n_written;
}

uint64_t files_n_removed(const struct files_set *s) {
        return s->n_removed;
}

uint64_t files_n_invalid(const struct files_set *s) {
        return s->n_invalid;
}

const char *files_changed_names(const struct files_set *s) {
        return s->changed_names ? s->changed_names : "";
}

const char *files_removed_names(const struct files_set *s) {
        return s->removed_names ? s->removed_names : "";
}

/* Leftover temporary files of a killed run. */
static void sweep(struct files_set *s) {
        int fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
        struct dirent *de;

        if (!d) {
                if (fd >= 0)
                        close(fd);
                return;
        }
        while ((de = readdir(d))) {
                struct stat st;

                size_t n = strlen(de->d_name);
                char name[NAME_MAX + 1];

                /* ".NAME.XXXXXX" of a NAME a set may have (replace.h). */
                if (de->d_name[0] != '.' || n < 3 + REPLACE_TMP_RANDOM || n - 2 - REPLACE_TMP_RANDOM > NAME_MAX)
                        continue;
                memcpy(name, de->d_name + 1, n - 2 - REPLACE_TMP_RANDOM);
                name[n - 2 - REPLACE_TMP_RANDOM] = '\0';
                if (files_check_name(name, strlen(name)) || !replace_is_temp_name(de->d_name, name))
                        continue;
                if (fstatat(s->dir_fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
                    (st.st_uid != geteuid() && st.st_uid != s->fc->uid))
                        continue;
                if (unlinkat(s->dir_fd, de->d_name, 0) == 0)
                        log_info("%s: removed %s/%s, left by an interrupted run", s->fc->name, s->fc->directory,
                                 de->d_name);
        }
        closedir(d);
}

/* One file through replace.h: temporary file, owner and mode, fsync,
 * rename, fsync of the directory. */
static int write_file(struct files_set *s, const struct entry *e) {
        const struct files_config *fc = s->fc;
        struct replace rp;
        int k;

        k = replace_begin(&rp, s->dir_fd, e->name);
        if (k >= 0)
                k = replace_write(&rp, e->content, e->len);
        if (k >= 0)
                k = replace_commit(&rp, &(struct replace_meta){.mode = fc->mode, .uid = fc->uid, .gid = fc->gid});
        if (k < 0) {
                const char *step = rp.step ? rp.step : "write";
                replace_abort(&rp);
                return fail(s, k, "Could not write %s/%s (%s): %s", fc->directory, e->name, step, strerror(-k));
        }
        return 0;
}

static int fix_metadata(struct files_set *s, const struct entry *e) {
        const struct files_config *fc = s->fc;
        _cleanup_close_ int fd = openat(s->dir_fd, e->name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

        if (fd < 0 || ((fc->uid != (uid_t)-1 || fc->gid != (gid_t)-1) && fchown(fd, fc->uid, fc->gid) < 0) ||
            fchmod(fd, fc->mode) < 0)
                return fail(s, -errno, "Could not set mode and owner of %s/%s: %m", fc->directory, e->name);
        log_info("%s: corrected mode and owner of %s/%s", fc->name, fc->directory, e->name);
        return 0;
}

int files_commit(struct files_set *s) {
        const struct files_config *fc = s->fc;
        _cleanup_free_ bool *add = NULL, *drop = NULL;
        bool any_add = false, any_drop = false, touched = false;
        int r = 0, k;

        if (s->dry_run)
                return -EINVAL;
        add = calloc(s->n_entries + 1, sizeof(*add));
        drop = calloc(s->n_listed + 1, sizeof(*drop));
        if (!add || !drop)
                return -ENOMEM;

        /* 1. Every name about to be written is listed first. */
        for (size_t i = 0; i < s->n_entries; i++) {
                add[i] = s->entries[i].listed || s->entries[i].write;
                any_add |= s->entries[i].write && !s->entries[i].listed;
        }
        if (any_add) {
                k = manifest_write(s, add, NULL);
                if (k < 0)
                        return k; /* nothing written: no file can be unlisted */
        }

        /* 2. The files. */
        if (s->n_written > 0)
                sweep(s);
        for (size_t i = 0; i < s->n_entries; i++) {
                const struct entry *e = &s->entries[i];

                if (e->protected)
                        continue;
                if (e->fix_meta && !e->write && (k = fix_metadata(s, e)) < 0)
                        r = k;
                if (!e->write)
                        continue;
                k = write_file(s, e);
                if (k < 0) {
                        r = k;
                        continue;
                }
                touched = true;
                log_submit(LOG_INFO, LOG_FIELDS(.map = fc->name), "%s: wrote %s/%s (%zu bytes)", fc->name,
                           fc->directory, e->name, e->len);
        }

        /* 3. Removals; each name leaves the manifest after its file. */
        for (size_t i = 0; i < s->n_listed; i++) {
                bool is_removed = false;

                if (find_entry(s, s->listed[i]))
                        continue;
                for (size_t j = 0; j < s->n_removed; j++)
                        is_removed |= streq(s->removed[j], s->listed[i]);
                if (!is_removed) {
                        drop[i] = any_drop = true; /* gone already */
                        continue;
                }
                {
                        struct stat st;
                        char what[PATH_MAX + 64];

                        if (fstatat(s->dir_fd, s->listed[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_nlink > 1 &&
                            paths_protected(s->config, &st, what, sizeof(what))) {
                                r = fail(s, -EPERM, "%s/%s is %s: refusing to remove it", fc->directory, s->listed[i],
                                         what);
                                continue;
                        }
                }
                if (unlinkat(s->dir_fd, s->listed[i], 0) < 0 && errno != ENOENT) {
                        r = fail(s, -errno, "Could not remove %s/%s: %m", fc->directory, s->listed[i]);
                        continue;
                }
                drop[i] = any_drop = touched = true;
                log_submit(LOG_INFO, LOG_FIELDS(.map = fc->name), "%s: removed %s/%s, whose row is gone", fc->name,
                           fc->directory, s->listed[i]);
        }

        /* 4. The directory, then the manifest without the removed names. */
        if (touched && fsync(s->dir_fd) < 0)
                r = fail(s, -errno, "Could not sync directory %s: %m", fc->directory);
        if (any_drop || (s->manifest_missing && !any_add)) {
                /* A missing manifest is written even when empty: the set has
                 * one from its first cycle on. */
                k = manifest_write(s, add, drop);
                if (k < 0)
                        r = k;
        }
        return r;
}
