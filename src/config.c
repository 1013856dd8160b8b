/* Configuration parsing. inih does the INI syntax; a line reader of our own
 * feeds it so that every message carries FILE:LINE, continuation lines are
 * told apart from repeated keys, and a line longer than inih's buffer is an
 * error instead of a silently shortened query. */
#include "config.h"

#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/stat.h>

#include "paths.h"
#include "trust.h"
#include "db-pg.h"
#include "util.h"

#define DEFAULT_BUSY_TIMEOUT_MS 5000
#define DEFAULT_DEBOUNCE_MS     200
#define DEFAULT_MAX_DELAY_MS    2000
#define DEFAULT_HOOK_TIMEOUT_S  30
#define DEFAULT_HOOK_LOG_LINES  100
#define DEFAULT_HOOK_LOG_BYTES  65536
#define DEFAULT_STATE_DIR       "/var/lib/mapsyncd"
#define DEFAULT_MODE            0640
#define DEFAULT_MAX_KEY_BYTES   4096
#define DEFAULT_MAX_VALUE_BYTES 65536
#define DEFAULT_MAX_SHRINK      50
#define DEFAULT_SHRINK_MIN      20
/* A map's shrink-guard keys not set: the [sync] value applies. */
#define UNSET_SHRINK       UINT_MAX
#define UNSET_SHRINK_MIN   UINT64_MAX
#define DEFAULT_PG_CHANNEL "mapsyncd"
#define DEFAULT_FILES_MODE 0600
/* inih keeps this many bytes of a [section] header (MAX_SECTION - 1). */
#define INI_SECTION_MAX             49
#define DEFAULT_API_LISTEN          "/run/mapsyncd/api.sock"
#define DEFAULT_API_SOCKET_MODE     0660
#define DEFAULT_API_MAX_CONNECTIONS 64
#define DEFAULT_WEBHOOK_TIMEOUT_S   10

enum section_kind {
        SECTION_NONE,
        SECTION_DATABASE,
        SECTION_SYNC,
        SECTION_MAP,
        SECTION_RELOAD,
        SECTION_FILES,
        SECTION_API,
        SECTION_WEBHOOK,
};

/* What the parser knows of the section a key belongs to. */
struct section {
        char *header; /* text between the brackets, as inih passes it */
        enum section_kind kind;
        size_t index; /* into maps[], reloads[] or files[] */
        unsigned line;
        char **keys; /* keys seen, to reject repeats */
        size_t n_keys;
};

struct parser {
        const char *name;
        const char *text;
        size_t pos;
        unsigned line;   /* line just handed to inih */
        const char *raw; /* that line as written */
        size_t raw_len;
        bool continuation; /* that line continues the previous key */
        bool have_prev;    /* a key was set since the last header */
        struct section *sections;
        size_t n_sections;
        struct section *cur; /* section of the line just read */
        struct config *config;
        struct config_errors *errors;
        unsigned n_errors_at_line; /* errors already reported for `line` */
        unsigned last_error_line;
        bool oom;
        unsigned n_bad_sections; /* headers rejected */
};

void config_errors_done(struct config_errors *e) {
        for (size_t i = 0; i < e->n_msgs; i++)
                free(e->msgs[i]);
        free(e->msgs);
        e->msgs = NULL;
        e->n_msgs = 0;
}

static void error_at(struct parser *p, unsigned line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void error_at(struct parser *p, unsigned line, const char *fmt, ...) {
        char msg[512], **v;
        va_list ap;
        char *s;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        if (asprintf(&s, "%s:%u: %s", p->name, line, msg) < 0) {
                p->oom = true;
                return;
        }
        v = realloc(p->errors->msgs, (p->errors->n_msgs + 1) * sizeof(*v));
        if (!v) {
                free(s);
                p->oom = true;
                return;
        }
        v[p->errors->n_msgs++] = s;
        p->errors->msgs = v;
        p->last_error_line = line;
}

static void *grow(void *array, size_t n, size_t size) {
        return reallocarray(array, n + 1, size);
}

static struct section *section_lookup(struct parser *p, const char *header) {
        for (size_t i = 0; i < p->n_sections; i++)
                if (streq(p->sections[i].header, header))
                        return &p->sections[i];
        return NULL;
}

static bool valid_name(const char *s) {
        if (!*s || strlen(s) > 64)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
                        return false;
        return true;
}

/* A new [files NAME] entry with its defaults; *index is set to it. */
static int files_section_open(struct parser *p, const char *name, size_t *index) {
        struct config *c = p->config;
        struct files_config *f = grow(c->files, c->n_files, sizeof(*f));

        if (!f)
                return -ENOMEM;
        c->files = f;
        f = &f[c->n_files];
        *f = (struct files_config){
                .line = p->line,
                .content = FILES_CONTENT_ANY,
                .mode = DEFAULT_FILES_MODE,
                .uid = (uid_t)-1,
                .gid = (gid_t)-1,
                .on_invalid = ON_INVALID_SKIP,
        };
        f->name = strdup(name);
        if (!f->name)
                return -ENOMEM;
        *index = c->n_files++;
        return 0;
}
static int set_string(char **field, const char *value, struct parser *p);

/* Registers the section of a header line: its kind, and a new map or
 * reload entry. */
static void section_open(struct parser *p, const char *header) {
        struct config *c = p->config;
        struct section *s, *v;
        enum section_kind kind = SECTION_NONE;
        const char *name = NULL;

        bool reported = false;

        if (strlen(header) > INI_SECTION_MAX) {
                error_at(p, p->line, "section name [%s] is longer than %d bytes", header, INI_SECTION_MAX);
                header = "";
                reported = true;
        }
        s = section_lookup(p, header);
        if (s) {
                error_at(p, p->line, "duplicate section [%s] (first at line %u)", header, s->line);
                p->cur = s;
                return;
        }

        if (streq(header, "database"))
                kind = SECTION_DATABASE;
        else if (streq(header, "sync"))
                kind = SECTION_SYNC;
        else if (strncmp(header, "map ", 4) == 0) {
                kind = SECTION_MAP;
                name = header + 4;
        } else if (strncmp(header, "reload ", 7) == 0) {
                kind = SECTION_RELOAD;
                name = header + 7;
        } else if (strncmp(header, "files ", 6) == 0) {
                kind = SECTION_FILES;
                name = header + 6;
        } else if (streq(header, "api"))
                kind = SECTION_API;
        else if (strncmp(header, "webhook ", 8) == 0) {
                kind = SECTION_WEBHOOK;
                name = header + 8;
        }

        if (kind == SECTION_NONE)
                p->n_bad_sections++;
        if (kind == SECTION_NONE && !reported)
                error_at(p, p->line,
                         "unknown section [%s] (expected [database], [sync], [map NAME], [files NAME], [reload "
                         "NAME], [api] or [webhook NAME])",
                         header);
        else if (name && !valid_name(name)) {
                p->n_bad_sections++;
                error_at(p, p->line, "invalid name '%s' in [%s] (letters, digits, '_', '.', '-')", name, header);
                kind = SECTION_NONE;
        }

        v = grow(p->sections, p->n_sections, sizeof(*v));
        if (!v)
                goto oom;
        p->sections = v;
        s = &v[p->n_sections];
        *s = (struct section){.kind = kind, .line = p->line};
        s->header = strdup(header);
        if (!s->header)
                goto oom;
        p->n_sections++;

        if (kind == SECTION_MAP) {
                struct map_config *m = grow(c->maps, c->n_maps, sizeof(*m));
                if (!m)
                        goto oom;
                c->maps = m;
                m = &m[c->n_maps];
                *m = (struct map_config){
                        .line = p->line,
                        .format = MAP_FORMAT_POSTFIX,
                        .mode = DEFAULT_MODE,
                        .uid = (uid_t)-1,
                        .gid = (gid_t)-1,
                        .on_invalid = ON_INVALID_SKIP,
                        .max_shrink = UNSET_SHRINK,
                        .max_shrink_min_lines = UNSET_SHRINK_MIN,
                };
                m->name = strdup(name);
                if (!m->name)
                        goto oom;
                s->index = c->n_maps++;
        } else if (kind == SECTION_RELOAD) {
                struct reload_config *r = grow(c->reloads, c->n_reloads, sizeof(*r));
                if (!r)
                        goto oom;
                c->reloads = r;
                r = &r[c->n_reloads];
                *r = (struct reload_config){.line = p->line};
                r->name = strdup(name);
                if (!r->name)
                        goto oom;
                s->index = c->n_reloads++;
        } else if (kind == SECTION_FILES) {
                if (files_section_open(p, name, &s->index) < 0)
                        goto oom;
        } else if (kind == SECTION_API) {
                c->api.line = p->line;
                if (!c->api.listen && set_string(&c->api.listen, DEFAULT_API_LISTEN, p) < 0)
                        return;
        } else if (kind == SECTION_WEBHOOK) {
                struct webhook_config *w = grow(c->webhooks, c->n_webhooks, sizeof(*w));
                if (!w)
                        goto oom;
                c->webhooks = w;
                w = &w[c->n_webhooks];
                *w = (struct webhook_config){.line = p->line, .timeout_s = DEFAULT_WEBHOOK_TIMEOUT_S};
                w->name = strdup(name);
                if (!w->name)
                        goto oom;
                s->index = c->n_webhooks++;
        }
        p->cur = s;
        return;
oom:
        p->oom = true;
}

/* inih's reader: hands over one line per call (so inih's line count stays
 * ours), classifies it, and reports what inih would silently mangle. */
static char *parser_read_line(char *buf, int size, void *userdata) {
        struct parser *p = userdata;
        const char *start = p->text + p->pos, *nl, *s;
        size_t len;

        if (*start == '\0')
                return NULL;
        nl = strchr(start, '\n');
        len = nl ? (size_t)(nl - start) + 1 : strlen(start);
        p->pos += len;
        p->line++;
        p->continuation = false;

        if (memchr(start, '\0', len)) {
                error_at(p, p->line, "NUL byte in line");
                buf[0] = '\n';
                buf[1] = '\0';
                return buf;
        }
        if (len > (size_t)size - 1) {
                error_at(p, p->line,
                         "line is %zu bytes long, longer than the %d allowed; continue a long value on indented lines",
                         len - (nl ? 1 : 0), size - 2);
                buf[0] = '\n';
                buf[1] = '\0';
                return buf;
        }
        memcpy(buf, start, len);
        buf[len] = '\0';
        p->raw = start;
        p->raw_len = len;

        s = buf;
        if (p->line == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
                s += 3; /* a UTF-8 byte order mark, which inih skips too */
        for (; *s == ' ' || *s == '\t' || *s == '\r' || *s == '\n'; s++)
                ;
        if (*s == '\0' || *s == ';' || *s == '#')
                return buf;
        if (s > buf && p->have_prev) {
                p->continuation = true;
                return buf;
        }
        if (*s == '[') {
                const char *end = strchr(s, ']');
                if (!end) {
                        error_at(p, p->line, "section header without ']'");
                        p->cur = NULL;
                        p->have_prev = false;
                } else {
                        _cleanup_free_ char *header = strndup(s + 1, (size_t)(end - s - 1));
                        if (!header)
                                p->oom = true;
                        else
                                section_open(p, header);
                        p->have_prev = false;
                }
                return buf;
        }
        if (!strpbrk(s, "=:")) {
                error_at(p, p->line, "expected 'key = value' or '[section]'");
                buf[0] = '\n';
                buf[1] = '\0';
                return buf;
        }
        p->have_prev = true;
        return buf;
}

static int set_string(char **field, const char *value, struct parser *p) {
        char *s = strdup(value);

        if (!s) {
                p->oom = true;
                return -ENOMEM;
        }
        free(*field);
        *field = s;
        return 0;
}

static void set_number(struct parser *p, const char *key, const char *value, uint64_t min, uint64_t max,
                       uint64_t *field) {
        int r = parse_uint(value, min, max, field);

        if (r == -ERANGE)
                error_at(p, p->line, "%s = %s is out of range (%llu to %llu)", key, value, (unsigned long long)min,
                         (unsigned long long)max);
        else if (r < 0)
                error_at(p, p->line, "%s = %s is not a whole number", key, value);
}

static void set_owner(struct parser *p, const char *value, uid_t *uid) {
        char buf[4096];
        struct passwd pw, *res = NULL;
        uint64_t n;

        if (parse_uint(value, 0, UINT32_MAX - 1, &n) == 0) {
                *uid = (uid_t)n;
                return;
        }
        if (getpwnam_r(value, &pw, buf, sizeof(buf), &res) != 0 || !res) {
                error_at(p, p->line, "owner = %s: no such user", value);
                return;
        }
        *uid = res->pw_uid;
}

static void set_group(struct parser *p, const char *value, gid_t *gid) {
        char buf[4096];
        struct group gr, *res = NULL;
        uint64_t n;

        if (parse_uint(value, 0, UINT32_MAX - 1, &n) == 0) {
                *gid = (gid_t)n;
                return;
        }
        if (getgrnam_r(value, &gr, buf, sizeof(buf), &res) != 0 || !res) {
                error_at(p, p->line, "group = %s: no such group", value);
                return;
        }
        *gid = res->gr_gid;
}

static bool key_seen(struct parser *p, struct section *s, const char *key) {
        char **v;

        for (size_t i = 0; i < s->n_keys; i++)
                if (streq(s->keys[i], key))
                        return true;
        v = grow(s->keys, s->n_keys, sizeof(*v));
        if (!v || !(v[s->n_keys] = strdup(key))) {
                if (v)
                        s->keys = v;
                p->oom = true;
                return false;
        }
        s->keys = v;
        s->n_keys++;
        return false;
}

/* Appends a continuation line to a value that may span lines. */
static void append_continuation(struct parser *p, char **field, const char *value) {
        size_t len = strlen(*field);

        if ((len > 0 && str_append(field, &len, " ", 1) < 0) || str_append(field, &len, value, strlen(value)) < 0)
                p->oom = true;
}

/* A channel LISTEN and NOTIFY name alike without quoting: PostgreSQL
 * folds an unquoted identifier to lower case. */
static bool valid_channel(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n > 63 || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
                        return false;
        return true;
}

static void handle_database(struct parser *p, const char *key, const char *value) {
        struct config *c = p->config;

        if (streq(key, "path")) {
                if (value[0] != '/')
                        error_at(p, p->line, "path = %s is not an absolute path", value);
                set_string(&c->db_path, value, p);
                c->db_path_line = p->line;
        } else if (streq(key, "busy_timeout_ms"))
                set_number(p, key, value, 0, 3600000, &c->busy_timeout_ms);
        else if (streq(key, "driver")) {
                if (streq(value, "sqlite"))
                        c->db_driver = DB_DRIVER_SQLITE;
                else if (streq(value, "postgresql"))
                        c->db_driver = DB_DRIVER_POSTGRESQL;
                else
                        error_at(p, p->line, "driver = %s: expected sqlite or postgresql", value);
        } else if (streq(key, "conninfo")) {
                const char *why = pg_conninfo_problem(value);
                if (why)
                        error_at(p, p->line, "conninfo: %s", why);
                else
                        set_string(&c->pg_conninfo, value, p);
        } else if (streq(key, "passfile")) {
                if (value[0] != '/')
                        error_at(p, p->line, "passfile = %s is not an absolute path", value);
                else
                        set_string(&c->pg_passfile, value, p);
        } else if (streq(key, "channel")) {
                if (!valid_channel(value))
                        error_at(p, p->line,
                                 "channel = %s: expected a lower-case SQL identifier (a-z, 0-9, '_', at most 63 "
                                 "bytes, not starting with a digit)",
                                 value);
                else
                        set_string(&c->pg_channel, value, p);
        } else
                error_at(p, p->line,
                         "unknown key '%s' in [database] (expected driver, path, busy_timeout_ms, conninfo, passfile, "
                         "channel)",
                         key);
}

/* The row-size bound ([sync] only) and the shrink guard ([sync] defaults,
 * or per map); false when key is none of them. */
static bool handle_limits(struct parser *p, const char *key, const char *value, unsigned *max_shrink,
                          uint64_t *min_lines) {
        uint64_t v = 0;

        if (streq(key, "max_shrink")) {
                set_number(p, key, value, 0, 100, &v);
                *max_shrink = (unsigned)v;
        } else if (streq(key, "max_shrink_min_lines"))
                set_number(p, key, value, 0, UINT32_MAX, min_lines);
        else if (p->cur && p->cur->kind == SECTION_SYNC && streq(key, "max_key_bytes"))
                set_number(p, key, value, 1, 1024 * 1024, &p->config->max_key_bytes);
        else if (p->cur && p->cur->kind == SECTION_SYNC && streq(key, "max_value_bytes"))
                set_number(p, key, value, 1, 256 * 1024 * 1024, &p->config->max_value_bytes);
        else
                return false;
        return true;
}

/* Modes a map may have: no setuid, setgid or sticky bit (a map is data),
 * and not writable by everyone. */
static void set_map_mode(struct parser *p, struct map_config *m, const char *value) {
        if (parse_mode(value, &m->mode) < 0)
                error_at(p, p->line, "mode = %s is not an octal file mode such as 0640", value);
        else if (m->mode & (S_ISUID | S_ISGID | S_ISVTX))
                error_at(p, p->line, "mode = %s: setuid, setgid and sticky bits are refused for a map", value);
        else if (m->mode & S_IWOTH)
                error_at(p, p->line, "mode = %s: a world-writable map is refused", value);
}

static void handle_sync(struct parser *p, const char *key, const char *value) {
        struct config *c = p->config;

        if (streq(key, "debounce_ms"))
                set_number(p, key, value, 0, 3600000, &c->debounce_ms);
        else if (streq(key, "max_delay_ms"))
                set_number(p, key, value, 0, 3600000, &c->max_delay_ms);
        else if (streq(key, "hook_timeout_s"))
                set_number(p, key, value, 1, 86400, &c->hook_timeout_s);
        else if (streq(key, "poll_interval_s"))
                set_number(p, key, value, 0, 86400, &c->poll_interval_s);
        else if (streq(key, "hook_log_lines"))
                set_number(p, key, value, 0, 1000000, &c->hook_log_lines);
        else if (streq(key, "hook_log_bytes"))
                set_number(p, key, value, 0, 16777216, &c->hook_log_bytes);
        else if (streq(key, "state_dir")) {
                if (value[0] != '/')
                        error_at(p, p->line, "state_dir = %s is not an absolute path", value);
                else
                        set_string(&c->state_dir, value, p);
                c->state_dir_line = p->line;
        } else if (streq(key, "metrics_file")) {
                if (value[0] != '/')
                        error_at(p, p->line, "metrics_file = %s is not an absolute path", value);
                else
                        set_string(&c->metrics_file, value, p);
                c->metrics_file_line = p->line;
        } else if (!handle_limits(p, key, value, &c->max_shrink, &c->max_shrink_min_lines))
                error_at(p, p->line,
                         "unknown key '%s' in [sync] (expected debounce_ms, max_delay_ms, hook_timeout_s, "
                         "hook_log_lines, hook_log_bytes, state_dir, poll_interval_s, metrics_file, max_key_bytes, "
                         "max_value_bytes, max_shrink, max_shrink_min_lines)",
                         key);
}

static void handle_map(struct parser *p, struct map_config *m, const char *key, const char *value) {
        if (streq(key, "output")) {
                if (value[0] != '/' || value[strlen(value) - 1] == '/')
                        error_at(p, p->line, "output = %s is not an absolute file path", value);
                else
                        set_string(&m->output, value, p);
                m->output_line = p->line;
        } else if (streq(key, "query")) {
                set_string(&m->query, value, p);
                m->query_line = p->line;
        } else if (streq(key, "format")) {
                if (streq(value, "postfix"))
                        m->format = MAP_FORMAT_POSTFIX;
                else if (streq(value, "passwd"))
                        m->format = MAP_FORMAT_PASSWD;
                else
                        error_at(p, p->line, "format = %s: expected postfix or passwd", value);
        } else if (streq(key, "mode"))
                set_map_mode(p, m, value);
        else if (streq(key, "owner"))
                set_owner(p, value, &m->uid);
        else if (streq(key, "group"))
                set_group(p, value, &m->gid);
        else if (streq(key, "on_invalid")) {
                if (streq(value, "skip"))
                        m->on_invalid = ON_INVALID_SKIP;
                else if (streq(value, "fail"))
                        m->on_invalid = ON_INVALID_FAIL;
                else
                        error_at(p, p->line, "on_invalid = %s: expected skip or fail", value);
        } else if (streq(key, "on_change"))
                set_string(&m->on_change, value, p);
        else if (streq(key, "reload")) {
                set_string(&m->reload_names, value, p);
                m->reload_line = p->line;
        } else if (!handle_limits(p, key, value, &m->max_shrink, &m->max_shrink_min_lines))
                error_at(p, p->line,
                         "unknown key '%s' in [map %s] (expected output, query, format, mode, owner, group, "
                         "on_invalid, on_change, reload, max_shrink, max_shrink_min_lines)",
                         key, m->name);
}

static void handle_files(struct parser *p, struct files_config *f, const char *key, const char *value) {
        if (streq(key, "directory")) {
                if (value[0] != '/' || strspn(value, "/") == strlen(value))
                        error_at(p, p->line, "directory = %s is not an absolute directory path other than /", value);
                else
                        set_string(&f->directory, value, p);
        } else if (streq(key, "query"))
                set_string(&f->query, value, p);
        else if (streq(key, "content")) {
                if (streq(value, "any"))
                        f->content = FILES_CONTENT_ANY;
                else if (streq(value, "pem-private-key"))
                        f->content = FILES_CONTENT_PEM_PRIVATE_KEY;
                else
                        error_at(p, p->line, "content = %s: expected any or pem-private-key", value);
        } else if (streq(key, "mode")) {
                if (parse_mode(value, &f->mode) < 0)
                        error_at(p, p->line, "mode = %s is not an octal file mode such as 0600", value);
        } else if (streq(key, "owner"))
                set_owner(p, value, &f->uid);
        else if (streq(key, "group"))
                set_group(p, value, &f->gid);
        else if (streq(key, "on_invalid")) {
                if (streq(value, "skip"))
                        f->on_invalid = ON_INVALID_SKIP;
                else if (streq(value, "fail"))
                        f->on_invalid = ON_INVALID_FAIL;
                else
                        error_at(p, p->line, "on_invalid = %s: expected skip or fail", value);
        } else if (streq(key, "on_change"))
                set_string(&f->on_change, value, p);
        else if (streq(key, "reload")) {
                set_string(&f->reload_names, value, p);
                f->reload_line = p->line;
        } else
                error_at(p, p->line,
                         "unknown key '%s' in [files %s] (expected directory, query, content, mode, owner, group, "
                         "on_invalid, on_change, reload)",
                         key, f->name);
}

static void handle_api(struct parser *p, const char *key, const char *value) {
        struct api_config *a = &p->config->api;

        if (streq(key, "listen")) {
                if (value[0] != '/' || value[strlen(value) - 1] == '/')
                        error_at(p, p->line, "listen = %s is not an absolute socket path", value);
                else if (strlen(value) >= 108) /* sizeof(sockaddr_un.sun_path) */
                        error_at(p, p->line, "listen = %s is longer than a socket path may be (107 bytes)", value);
                else
                        set_string(&a->listen, value, p);
        } else if (streq(key, "socket_mode")) {
                if (parse_mode(value, &a->socket_mode) < 0 || a->socket_mode > 0777)
                        error_at(p, p->line, "socket_mode = %s is not an octal mode such as 0660", value);
        } else if (streq(key, "socket_group"))
                set_group(p, value, &a->socket_group);
        else if (streq(key, "max_connections"))
                set_number(p, key, value, 1, 1024, &a->max_connections);
        else
                error_at(p, p->line,
                         "unknown key '%s' in [api] (expected listen, socket_mode, socket_group, max_connections)",
                         key);
}

static void handle_webhook(struct parser *p, struct webhook_config *w, const char *key, const char *value) {
        if (streq(key, "url")) {
                if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0)
                        error_at(p, p->line, "url = %s: expected an http:// or https:// URL", value);
                else
                        set_string(&w->url, value, p);
        } else if (streq(key, "secret_file")) {
                if (value[0] != '/')
                        error_at(p, p->line, "secret_file = %s is not an absolute path", value);
                else
                        set_string(&w->secret_file, value, p);
        } else if (streq(key, "maps")) {
                set_string(&w->map_names, value, p);
                w->maps_line = p->line;
        } else if (streq(key, "timeout_s"))
                set_number(p, key, value, 1, 3600, &w->timeout_s);
        else
                error_at(p, p->line, "unknown key '%s' in [webhook %s] (expected url, secret_file, maps, timeout_s)",
                         key, w->name);
}

/* Keys whose value may continue on indented lines, and so may start on
 * the next line after an empty "key =". */
static bool multiline_key(enum section_kind kind, const char *key) {
        return ((kind == SECTION_MAP || kind == SECTION_FILES) && (streq(key, "query") || streq(key, "on_change"))) ||
               (kind == SECTION_RELOAD && streq(key, "command"));
}

/* Whether inih cut an inline comment off the current line: a ';' after
 * white space, past the '=' of a key line. */
static bool cut_by_comment(const struct parser *p) {
        const char *line = p->raw, *end = p->raw + p->raw_len, *c;

        if (!p->continuation) {
                c = memchr(line, '=', p->raw_len);
                if (!c)
                        return false;
                line = c + 1;
        }
        for (c = line; c < end; c++)
                if (*c == ';' && c > line && (c[-1] == ' ' || c[-1] == '\t'))
                        return true;
        return false;
}

static int parser_on_key(void *userdata, const char *section, const char *key, const char *value) {
        struct parser *p = userdata;
        struct section *s = p->cur;
        struct config *c = p->config;

        if (s && s->kind == SECTION_NONE)
                return 1; /* its header was reported already */
        if (!s || !streq(s->header, section)) {
                /* inih saw a key before any section header. */
                error_at(p, p->line, "key '%s' outside of any section", key);
                return 1;
        }
        if (s->kind == SECTION_NONE)
                return 1; /* the header was reported already */

        if (multiline_key(s->kind, key) && cut_by_comment(p)) {
                error_at(p, p->line,
                         "' ;' starts a comment and would cut this %s; drop the white space before ';' or put the "
                         "comment on a line of its own",
                         key);
                /* Go on with the cut value: one message, not a cascade. */
        }

        if (p->continuation) {
                char **field = NULL;

                if (!multiline_key(s->kind, key))
                        field = NULL;
                else if (s->kind == SECTION_RELOAD)
                        field = &c->reloads[s->index].command;
                else if (s->kind == SECTION_FILES)
                        field = streq(key, "query") ? &c->files[s->index].query : &c->files[s->index].on_change;
                else if (streq(key, "query"))
                        field = &c->maps[s->index].query;
                else
                        field = &c->maps[s->index].on_change;
                if (!field)
                        error_at(p, p->line, "indented line: '%s' does not continue on another line", key);
                else if (*field)
                        append_continuation(p, field, value);
                return 1;
        }

        if (key_seen(p, s, key)) {
                error_at(p, p->line, "duplicate key '%s' in [%s]", key, section);
                return 1;
        }
        if (!*value && !multiline_key(s->kind, key)) {
                error_at(p, p->line, "%s has an empty value", key);
                return 1;
        }

        switch (s->kind) {
        case SECTION_DATABASE:
                handle_database(p, key, value);
                break;
        case SECTION_SYNC:
                handle_sync(p, key, value);
                break;
        case SECTION_MAP:
                handle_map(p, &c->maps[s->index], key, value);
                break;
        case SECTION_FILES:
                handle_files(p, &c->files[s->index], key, value);
                break;
        case SECTION_RELOAD:
                if (streq(key, "command"))
                        set_string(&c->reloads[s->index].command, value, p);
                else
                        error_at(p, p->line, "unknown key '%s' in [%s] (expected command)", key, section);
                break;
        case SECTION_API:
                handle_api(p, key, value);
                break;
        case SECTION_WEBHOOK:
                handle_webhook(p, &c->webhooks[s->index], key, value);
                break;
        case SECTION_NONE:
                break;
        }
        return 1;
}

static void resolve_reload_names(struct parser *p, const char *reload_names, unsigned reload_line, size_t **reloads,
                                 size_t *n_reloads) {
        const struct config *c = p->config;
        _cleanup_free_ char *names = NULL;
        char *save = NULL;

        if (!reload_names)
                return;
        names = strdup(reload_names);
        if (!names) {
                p->oom = true;
                return;
        }
        for (char *n = strtok_r(names, " \t,", &save); n; n = strtok_r(NULL, " \t,", &save)) {
                size_t i, *v;

                for (i = 0; i < c->n_reloads; i++)
                        if (streq(c->reloads[i].name, n))
                                break;
                if (i == c->n_reloads) {
                        error_at(p, reload_line, "reload = %s: there is no [reload %s] section", n, n);
                        continue;
                }
                v = grow(*reloads, *n_reloads, sizeof(*v));
                if (!v) {
                        p->oom = true;
                        return;
                }
                *reloads = v;
                (*reloads)[(*n_reloads)++] = i;
        }
}

static void resolve_reloads(struct parser *p, struct map_config *m) {
        resolve_reload_names(p, m->reload_names, m->reload_line, &m->reloads, &m->n_reloads);
}

/* Whether two absolute paths name one file, as far as their text tells:
 * repeated '/' and "/./" do not count. */
static bool same_path(const char *a, const char *b) {
        for (;;) {
                while (a[0] == '/' && (a[1] == '/' || (a[1] == '.' && a[2] == '/')))
                        a += a[1] == '/' ? 1 : 2;
                while (b[0] == '/' && (b[1] == '/' || (b[1] == '.' && b[2] == '/')))
                        b += b[1] == '/' ? 1 : 2;
                if (*a != *b)
                        return false;
                if (!*a)
                        return true;
                a++, b++;
        }
}

/* Whether path (a file) lies directly in directory dir, by their text. */
static bool in_directory(const char *path, const char *dir) {
        _cleanup_free_ char *copy = strdup(path);
        char *slash;

        if (!copy)
                return false;
        slash = strrchr(copy, '/');
        if (!slash)
                return false;
        if (slash == copy)
                slash[1] = '\0';
        else
                *slash = '\0';
        return same_path(copy, dir);
}

/* Whether two directory paths are one by their text; trailing '/' aside. */
static bool same_dir(const char *a, const char *b) {
        _cleanup_free_ char *x = strdup(a), *y = strdup(b);

        if (!x || !y)
                return false;
        for (size_t n = strlen(x); n > 1 && x[n - 1] == '/'; n--)
                x[n - 1] = '\0';
        for (size_t n = strlen(y); n > 1 && y[n - 1] == '/'; n--)
                y[n - 1] = '\0';
        return same_path(x, y);
}

/* [files NAME]: required keys, reloads, and a directory that holds no
 * other output, the database, the configuration or the state: a row may
 * name any file in it. */
static void validate_files(struct parser *p) {
        struct config *c = p->config;

        for (size_t i = 0; i < c->n_files; i++) {
                struct files_config *f = &c->files[i];
                _cleanup_free_ char *dir = NULL;

                if (!f->directory)
                        error_at(p, f->line, "[files %s] has no directory", f->name);
                if (!f->query || !*f->query)
                        error_at(p, f->line, "[files %s] has no query", f->name);
                resolve_reload_names(p, f->reload_names, f->reload_line, &f->reloads, &f->n_reloads);
                if (!f->directory)
                        continue;
                dir = strdup(f->directory);
                if (!dir) {
                        p->oom = true;
                        return;
                }
                for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--)
                        dir[n - 1] = '\0';
                if (c->db_driver == DB_DRIVER_SQLITE && c->db_path && in_directory(c->db_path, dir))
                        error_at(p, f->line, "[files %s] directory %s holds the database %s", f->name, dir, c->db_path);
                if (p->name[0] == '/' && in_directory(p->name, dir))
                        error_at(p, f->line, "[files %s] directory %s holds the configuration %s", f->name, dir,
                                 p->name);
                if (c->state_dir && same_dir(c->state_dir, dir))
                        error_at(p, f->line, "[files %s] directory %s is the state_dir", f->name, dir);
                if (c->metrics_file && in_directory(c->metrics_file, dir))
                        error_at(p, f->line, "[files %s] directory %s holds the metrics_file %s", f->name, dir,
                                 c->metrics_file);
                for (size_t j = 0; j < c->n_maps; j++)
                        if (c->maps[j].output && in_directory(c->maps[j].output, dir))
                                error_at(p, f->line, "[files %s] directory %s holds the output of [map %s]", f->name,
                                         dir, c->maps[j].name);
                if (config_find_map(c, f->name))
                        error_at(p, f->line,
                                 "[files %s] has the name of a [map %s] (names appear in the log and "
                                 "the hooks' environment: one each)",
                                 f->name, f->name);
                for (size_t j = 0; j < i; j++)
                        if (c->files[j].directory && same_dir(c->files[j].directory, dir))
                                error_at(p, f->line, "[files %s] writes into %s, as [files %s] does already", f->name,
                                         dir, c->files[j].name);
        }
}

/* Checks what no single line shows: required keys, references, clashes. */
static void validate(struct parser *p) {
        struct config *c = p->config;
        struct section *db = section_lookup(p, "database");

        if (!db)
                error_at(p, p->line, "no [database] section (path = ... is required)");
        else if (c->db_driver == DB_DRIVER_SQLITE) {
                if (!c->db_path)
                        error_at(p, db->line, "[database] has no path");
                if (c->pg_conninfo || c->pg_passfile || c->pg_channel)
                        error_at(p, db->line,
                                 "[database] conninfo, passfile and channel are for driver = postgresql only");
        } else {
                if (c->db_path)
                        error_at(p, db->line, "[database] path is for driver = sqlite; PostgreSQL takes conninfo");
                if (!c->pg_conninfo)
                        error_at(p, db->line, "[database] driver = postgresql needs conninfo");
                else if (!c->db_path && asprintf(&c->db_path, "postgresql:%s", c->pg_conninfo) < 0) {
                        c->db_path = NULL;
                        p->oom = true;
                }
                if (!c->pg_channel && !(c->pg_channel = strdup(DEFAULT_PG_CHANNEL)))
                        p->oom = true;
        }

        if (c->max_delay_ms < c->debounce_ms)
                error_at(p, section_lookup(p, "sync") ? section_lookup(p, "sync")->line : p->line,
                         "max_delay_ms (%llu) is shorter than debounce_ms (%llu)", (unsigned long long)c->max_delay_ms,
                         (unsigned long long)c->debounce_ms);

        if (c->n_maps == 0 && c->n_files == 0 && p->n_bad_sections == 0)
                error_at(p, p->line, "no [map NAME] section (nor [files NAME]): nothing to write");

        for (size_t i = 0; i < c->n_maps; i++) {
                struct map_config *m = &c->maps[i];

                if (!m->output)
                        error_at(p, m->line, "[map %s] has no output", m->name);
                if (!m->query || !*m->query)
                        error_at(p, m->line, "[map %s] has no query", m->name);
                resolve_reloads(p, m);
                if (m->max_shrink == UNSET_SHRINK)
                        m->max_shrink = c->max_shrink;
                if (m->max_shrink_min_lines == UNSET_SHRINK_MIN)
                        m->max_shrink_min_lines = c->max_shrink_min_lines;
                for (size_t j = 0; m->output && j < i; j++)
                        if (c->maps[j].output && same_path(c->maps[j].output, m->output))
                                error_at(p, m->line, "[map %s] writes %s, as [map %s] does already", m->name, m->output,
                                         c->maps[j].name);
        }
        for (size_t i = 0; i < c->n_reloads; i++)
                if (!c->reloads[i].command || !*c->reloads[i].command)
                        error_at(p, c->reloads[i].line, "[reload %s] has no command", c->reloads[i].name);
        validate_files(p);
        for (size_t i = 0; i < c->n_webhooks; i++) {
                struct webhook_config *w = &c->webhooks[i];
                _cleanup_free_ char *names = NULL;
                char *save = NULL;

                if (!w->url)
                        error_at(p, w->line, "[webhook %s] has no url", w->name);
                if (!w->secret_file)
                        error_at(p, w->line, "[webhook %s] has no secret_file", w->name);
                if (!w->map_names)
                        continue;
                names = strdup(w->map_names);
                if (!names) {
                        p->oom = true;
                        return;
                }
                for (char *n = strtok_r(names, " \t,", &save); n; n = strtok_r(NULL, " \t,", &save))
                        if (!config_find_map(c, n))
                                error_at(p, w->maps_line, "maps = %s: there is no [map %s] section", n, n);
        }
}

static int config_new(const char *name, struct config **ret) {
        struct config *c = calloc(1, sizeof(*c));

        if (!c)
                return -ENOMEM;
        c->busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
        c->debounce_ms = DEFAULT_DEBOUNCE_MS;
        c->max_delay_ms = DEFAULT_MAX_DELAY_MS;
        c->hook_timeout_s = DEFAULT_HOOK_TIMEOUT_S;
        c->hook_log_lines = DEFAULT_HOOK_LOG_LINES;
        c->hook_log_bytes = DEFAULT_HOOK_LOG_BYTES;
        c->max_key_bytes = DEFAULT_MAX_KEY_BYTES;
        c->max_value_bytes = DEFAULT_MAX_VALUE_BYTES;
        c->max_shrink = DEFAULT_MAX_SHRINK;
        c->max_shrink_min_lines = DEFAULT_SHRINK_MIN;
        c->api.socket_mode = DEFAULT_API_SOCKET_MODE;
        c->api.socket_group = (gid_t)-1;
        c->api.max_connections = DEFAULT_API_MAX_CONNECTIONS;
        c->path = strdup(name);
        c->state_dir = strdup(DEFAULT_STATE_DIR);
        if (!c->path || !c->state_dir) {
                config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

int config_parse_string(const char *name, const char *text, struct config **ret, struct config_errors *errors) {
        struct parser p = {.name = name, .text = text, .errors = errors};
        size_t n_before = errors->n_msgs;
        int r;

        r = config_new(name, &p.config);
        if (r < 0)
                return r;

        r = ini_parse_stream(parser_read_line, &p, parser_on_key, &p);
        if (r > 0 && p.last_error_line != (unsigned)r)
                error_at(&p, (unsigned)r, "syntax error");
        if (r < 0)
                p.oom = true;
        if (!p.oom)
                validate(&p);

        for (size_t i = 0; i < p.n_sections; i++) {
                for (size_t k = 0; k < p.sections[i].n_keys; k++)
                        free(p.sections[i].keys[k]);
                free(p.sections[i].keys);
                free(p.sections[i].header);
        }
        free(p.sections);

        if (p.oom) {
                config_free(p.config);
                return -ENOMEM;
        }
        if (errors->n_msgs > n_before) {
                config_free(p.config);
                return -EINVAL;
        }
        *ret = p.config;
        return 0;
}

static int read_file(const char *path, char **ret, size_t *ret_len) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        size_t len = 0, cap = 0;
        struct stat st;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if (st.st_uid != 0 && st.st_uid != geteuid())
                return -EPERM;
        if (st.st_mode & (S_IWGRP | S_IWOTH))
                return -EPERM;
        for (;;) {
                ssize_t n;

                if (cap - len < 4096) {
                        char *b;
                        if (cap > 16 * 1024 * 1024)
                                return -EFBIG;
                        b = realloc(buf, cap + 65536);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        cap += 65536;
                }
                n = read(fd, buf + len, cap - len - 1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        *ret_len = len;
        return 0;
}

static int add_error(struct config_errors *errors, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int add_error(struct config_errors *errors, const char *fmt, ...) {
        char *msg = NULL, **v;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        v = realloc(errors->msgs, (errors->n_msgs + 1) * sizeof(*v));
        if (!v) {
                free(msg);
                return -ENOMEM;
        }
        v[errors->n_msgs++] = msg;
        errors->msgs = v;
        return 0;
}

/* The directories above the configuration file must be as safe as the
 * file itself: whoever may rename them may put another file in its place. */
static int config_check_trust(const char *path, struct config_errors *errors) {
        struct trust_problem tp;
        int r = trust_path(path, 0, &tp);

        if (r >= 0)
                return 0;
        if (add_error(errors, "%s: cannot use configuration: %s is %s; its commands would run as this user", path,
                      tp.path, tp.why) < 0)
                return -ENOMEM;
        return r == -EPERM ? -EPERM : -EINVAL;
}

int config_load(const char *path, struct config **ret, struct config_errors *errors) {
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        int r;

        r = read_file(path, &text, &len);
        if (r == -ENOMEM)
                return r;
        if (r < 0) {
                const char *why = r == -EPERM ? "writable by others than its owner, or not owned by root or this user; "
                                                "its commands would run as this user"
                                  : r == -EINVAL ? "not a regular file"
                                                 : strerror(-r);
                return add_error(errors, "%s: cannot use configuration: %s", path, why) < 0 ? -ENOMEM : r;
        }
        if (strlen(text) != len) {
                unsigned line = 1;
                for (const char *c = text; *c; c++)
                        line += *c == '\n';
                return add_error(errors, "%s:%u: NUL byte in line", path, line) < 0 ? -ENOMEM : -EINVAL;
        }
        r = config_check_trust(path, errors);
        if (r < 0)
                return r;
        r = config_parse_string(path, text, ret, errors);
        if (r < 0)
                return r;
        r = paths_check_config(*ret, errors);
        if (r < 0)
                *ret = config_free(*ret);
        return r;
}

struct config *config_free(struct config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_maps; i++) {
                struct map_config *m = &c->maps[i];
                free(m->name);
                free(m->output);
                free(m->query);
                free(m->on_change);
                free(m->reload_names);
                free(m->reloads);
        }
        for (size_t i = 0; i < c->n_reloads; i++) {
                free(c->reloads[i].name);
                free(c->reloads[i].command);
        }
        for (size_t i = 0; i < c->n_files; i++) {
                struct files_config *f = &c->files[i];
                free(f->name);
                free(f->directory);
                free(f->query);
                free(f->on_change);
                free(f->reload_names);
                free(f->reloads);
        }
        free(c->files);
        for (size_t i = 0; i < c->n_webhooks; i++) {
                free(c->webhooks[i].name);
                free(c->webhooks[i].url);
                free(c->webhooks[i].secret_file);
                free(c->webhooks[i].map_names);
        }
        free(c->webhooks);
        free(c->api.listen);
        free(c->maps);
        free(c->reloads);
        free(c->path);
        free(c->db_path);
        free(c->pg_conninfo);
        free(c->pg_passfile);
        free(c->pg_channel);
        free(c->state_dir);
        free(c->metrics_file);
        free(c);
        return NULL;
}

const struct map_config *config_find_map(const struct config *c, const char *name) {
        for (size_t i = 0; i < c->n_maps; i++)
                if (streq(c->maps[i].name, name))
                        return &c->maps[i];
        return NULL;
}

const struct files_config *config_find_files(const struct config *c, const char *name) {
        for (size_t i = 0; i < c->n_files; i++)
                if (streq(c->files[i].name, name))
                        return &c->files[i];
        return NULL;
}

bool config_webhook_covers(const struct webhook_config *w, const char *map) {
        const char *s = w->map_names;
        size_t len = strlen(map);

        if (!s)
                return true;
        while (*s) {
                size_t n = strcspn(s, " \t,");
                if (n == len && strncmp(s, map, len) == 0)
                        return true;
                s += n;
                s += strspn(s, " \t,");
        }
        return false;
}
