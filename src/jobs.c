/* The queue of owed hooks, their retries and their persistence. */
#include "jobs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>

#include "files.h"
#include "log.h"
#include "metrics.h"
#include "replace.h"
#include "util.h"

#define STATE_FILE     "owed-hooks"
#define RETRY_MIN_USEC (1000000ULL)
#define RETRY_MAX_USEC (300 * 1000000ULL)
/* MAPSYNCD_CHANGED of a file set's hook is cut (at a name) past this
 * size, below the kernel's limit of one environment string (128 KiB). */
#define CHANGED_ENV_MAX 100000

struct job {
        char *name;  /* map or reload name */
        char *label; /* for the log: "vmailbox" or "reload postfix" */
        bool is_reload;
        bool is_files; /* a [files NAME] set's on_change */
        const char *command;
        const char *output; /* maps: the file; file sets: the directory */
        bool owed;
        unsigned gen;         /* bumped each time it becomes owed */
        unsigned started_gen; /* gen when the running hook started */
        bool running;
        unsigned failures; /* in a row */
        uint64_t retry_at; /* CLOCK_MONOTONIC usec; 0: due now */
        char sha256[SHA256_HEX_LEN + 1];
        uint64_t rows;
        char *causes;  /* reloads: the maps that made it owed */
        char *changed; /* file sets: names written or removed while owed */
};

struct jobs {
        sd_event *event;
        struct hooks *hooks;
        const struct config *config;
        bool retry;
        bool hold;
        bool state_ok;
        bool state_warned;
        struct job *jobs;
        size_t n_jobs;
        size_t n_maps; /* jobs[0..n_maps) are the maps, in config order */
        unsigned failures;
        sd_event_source *retry_timer;
        jobs_idle_fn idle;
        void *userdata;
        struct metrics *metrics;
        jobs_hook_fn on_hook;
        void *on_hook_userdata;
};

static void job_done(struct job *jb) {
        free(jb->name);
        free(jb->label);
        free(jb->causes);
        free(jb->changed);
}

static void jobs_clear(struct job *v, size_t n) {
        for (size_t i = 0; i < n; i++)
                job_done(&v[i]);
        free(v);
}

static struct job *jobs_find_kind(struct jobs *j, bool is_reload, bool is_files, const char *name) {
        for (size_t i = 0; i < j->n_jobs; i++)
                if (j->jobs[i].is_reload == is_reload && j->jobs[i].is_files == is_files &&
                    streq(j->jobs[i].name, name))
                        return &j->jobs[i];
        return NULL;
}

static struct job *jobs_find(struct jobs *j, bool is_reload, const char *name) {
        return jobs_find_kind(j, is_reload, false, name);
}

/* The jobs of file sets come after those of the maps and reloads. */
static struct job *files_job(struct jobs *j, size_t index) {
        return &j->jobs[j->n_maps + j->config->n_reloads + index];
}

/* Sets up job jb for file set f, taking over an old one's state. */
static int files_job_init(struct jobs *j, struct job *jb, const struct files_config *f) {
        struct job *old = jobs_find_kind(j, false, true, f->name);

        jb->is_files = true;
        jb->name = strdup(f->name);
        if (!jb->name || asprintf(&jb->label, "files %s", f->name) < 0) {
                jb->label = NULL;
                return -ENOMEM;
        }
        jb->command = f->on_change;
        jb->output = f->directory;
        if (old) {
                jb->owed = old->owed && jb->command;
                jb->gen = old->gen;
                jb->started_gen = old->started_gen;
                jb->running = old->running;
                jb->failures = old->failures;
                jb->retry_at = old->retry_at;
                jb->changed = old->changed;
                old->changed = NULL;
        }
        return 0;
}

int jobs_set_config(struct jobs *j, const struct config *c) {
        size_t n = c->n_maps + c->n_reloads;
        struct job *v = calloc(n + c->n_files + 1, sizeof(*v));

        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                struct job *jb = &v[i], *old;
                bool is_reload = i >= c->n_maps;
                const char *name = is_reload ? c->reloads[i - c->n_maps].name : c->maps[i].name;

                jb->is_reload = is_reload;
                jb->name = strdup(name);
                if (!jb->name || asprintf(&jb->label, "%s%s", is_reload ? "reload " : "", name) < 0) {
                        jb->label = NULL;
                        jobs_clear(v, n);
                        return -ENOMEM;
                }
                if (is_reload)
                        jb->command = c->reloads[i - c->n_maps].command;
                else {
                        jb->command = c->maps[i].on_change;
                        jb->output = c->maps[i].output;
                }
                old = jobs_find(j, is_reload, name);
                if (old) {
                        jb->owed = old->owed && jb->command;
                        jb->gen = old->gen;
                        jb->started_gen = old->started_gen;
                        jb->running = old->running;
                        jb->failures = old->failures;
                        jb->retry_at = old->retry_at;
                        jb->rows = old->rows;
                        memcpy(jb->sha256, old->sha256, sizeof(jb->sha256));
                        jb->causes = old->causes;
                        old->causes = NULL;
                }
        }
        for (size_t k = 0; k < c->n_files; k++)
                if (files_job_init(j, &v[n + k], &c->files[k]) < 0) {
                        jobs_clear(v, n + k + 1);
                        return -ENOMEM;
                }
        n += c->n_files;
        jobs_clear(j->jobs, j->n_jobs);
        j->jobs = v;
        j->n_jobs = n;
        j->n_maps = c->n_maps;
        j->config = c;
        return 0;
}

int jobs_new(sd_event *event, struct hooks *hooks, const struct config *c, bool retry, jobs_idle_fn idle,
             void *userdata, struct jobs **ret) {
        struct jobs *j = calloc(1, sizeof(*j));
        int r;

        if (!j)
                return -ENOMEM;
        j->event = sd_event_ref(event);
        j->hooks = hooks;
        j->retry = retry;
        j->idle = idle;
        j->userdata = userdata;
        r = jobs_set_config(j, c);
        if (r < 0) {
                jobs_free(j);
                return r;
        }
        *ret = j;
        return 0;
}

struct jobs *jobs_free(struct jobs *j) {
        if (!j)
                return NULL;
        jobs_clear(j->jobs, j->n_jobs);
        sd_event_source_disable_unref(j->retry_timer);
        sd_event_unref(j->event);
        free(j);
        return NULL;
}

/* The state directory must exist and be writable by no one else: the
 * owed hooks it names run as this user. */
static bool state_dir_usable(struct jobs *j) {
        const char *dir = j->config->state_dir;
        struct stat st;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                goto fail;
        if (stat(dir, &st) < 0)
                goto fail;
        if (!S_ISDIR(st.st_mode)) {
                errno = ENOTDIR;
                goto fail;
        }
        if ((st.st_uid != 0 && st.st_uid != geteuid()) || (st.st_mode & (S_IWGRP | S_IWOTH))) {
                if (!j->state_warned)
                        log_error("state_dir %s is writable by others than its owner, or not owned by root or this "
                                  "user: refusing to use it; owed hooks will not survive a restart",
                                  dir);
                j->state_warned = true;
                return false;
        }
        return true;
fail:
        if (!j->state_warned)
                log_error("Could not use state_dir %s: %m; owed hooks will not survive a restart", dir);
        j->state_warned = true;
        return false;
}

static int state_path(const struct jobs *j, const char *suffix, char **ret) {
        return asprintf(ret, "%s/" STATE_FILE "%s", j->config->state_dir, suffix) < 0 ? -ENOMEM : 0;
}

static void jobs_save(struct jobs *j) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        struct replace_meta meta = {.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1};
        const char *step = NULL;
        size_t len = 0;
        bool any = false;
        int r;

        if (!state_dir_usable(j) || state_path(j, "", &path) < 0)
                return;

        if (str_append(&text, &len, "# mapsyncd: hooks owed, run at the next start\n", 46) < 0)
                return;
        for (size_t i = 0; i < j->n_jobs; i++) {
                const struct job *jb = &j->jobs[i];
                if (!jb->owed)
                        continue;
                any = true;
                if (jb->is_files) {
                        /* "files NAME CHANGED...": the names are [A-Za-z0-9._-]. */
                        if (str_append(&text, &len, "files ", 6) < 0 ||
                            str_append(&text, &len, jb->name, strlen(jb->name)) < 0 ||
                            (jb->changed && *jb->changed &&
                             (str_append(&text, &len, " ", 1) < 0 ||
                              str_append(&text, &len, jb->changed, strlen(jb->changed)) < 0)) ||
                            str_append(&text, &len, "\n", 1) < 0)
                                return;
                        continue;
                }
                if (str_append(&text, &len, jb->is_reload ? "reload " : "map ", jb->is_reload ? 7 : 4) < 0 ||
                    str_append(&text, &len, jb->name, strlen(jb->name)) < 0 || str_append(&text, &len, "\n", 1) < 0)
                        return;
        }
        if (!any) {
                if (unlink(path) < 0 && errno != ENOENT)
                        log_error("Could not remove %s: %m", path);
                return;
        }
        r = replace_file(path, text, len, &meta, &step);
        if (r < 0)
                log_error("Could not record owed hooks in %s (%s): %s", path, step, strerror(-r));
}

void jobs_load(struct jobs *j) {
        _cleanup_free_ char *path = NULL, *line = NULL;
        _cleanup_fclose_ FILE *f = NULL;
        size_t cap = 0;
        unsigned lineno = 0, n = 0;
        ssize_t len;

        if (!state_dir_usable(j) || state_path(j, "", &path) < 0)
                return;
        f = fopen(path, "re");
        if (!f) {
                if (errno != ENOENT)
                        log_error("Could not read owed hooks from %s: %m", path);
                return;
        }
        while ((len = getline(&line, &cap, f)) >= 0) {
                struct job *jb = NULL;
                char *name = NULL;
                bool is_reload = false;

                lineno++;
                if (len > 0 && line[len - 1] == '\n')
                        line[--len] = '\0';
                if (len == 0 || line[0] == '#')
                        continue;
                if (strncmp(line, "files ", 6) == 0) {
                        char *sp = strchr(line + 6, ' ');

                        if (sp)
                                *sp = '\0';
                        jb = jobs_find_kind(j, false, true, line + 6);
                        if (!jb || !jb->command) {
                                log_warning("%s:%u: owed hook of files %s, which the configuration no longer has; "
                                            "ignored",
                                            path, lineno, line + 6);
                                continue;
                        }
                        free(jb->changed);
                        jb->changed = strdup(sp ? sp + 1 : "");
                        jb->owed = true;
                        jb->gen++;
                        n++;
                        continue;
                }
                if (strncmp(line, "map ", 4) == 0)
                        name = line + 4;
                else if (strncmp(line, "reload ", 7) == 0) {
                        name = line + 7;
                        is_reload = true;
                }
                if (!name || strlen(name) != (size_t)len - (is_reload ? 7 : 4)) {
                        log_warning("%s:%u: not an owed hook; ignored", path, lineno);
                        continue;
                }
                jb = jobs_find(j, is_reload, name);
                if (!jb || !jb->command) {
                        log_warning("%s:%u: owed hook of %s%s, which the configuration no longer has; ignored", path,
                                    lineno, is_reload ? "reload " : "map ", name);
                        continue;
                }
                jb->owed = true;
                jb->gen++;
                n++;
        }
        if (n > 0)
                log_notice("%u hooks owed by an earlier run will run after the first sync", n);
}

static void job_owe(struct job *jb) {
        jb->owed = true;
        jb->gen++;
        jb->failures = 0;
        jb->retry_at = 0;
}

/* Makes reload rj owed because of `cause` (a map or file set). */
static void reload_owe(struct job *rj, const char *cause) {
        size_t len;

        if (!rj->owed || !rj->causes) {
                free(rj->causes);
                rj->causes = NULL;
        }
        job_owe(rj);
        len = rj->causes ? strlen(rj->causes) : 0;
        if (len)
                str_append(&rj->causes, &len, " ", 1);
        str_append(&rj->causes, &len, cause, strlen(cause));
}

static int cmp_name(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

/* *list becomes the union of its names and those of `more`, sorted, each
 * once, separated by one space. */
static void names_merge(char **list, const char *more) {
        _cleanup_free_ char *all = NULL, *out = NULL;
        _cleanup_free_ char **v = NULL;
        size_t len = 0, n = 0, cap = 0, out_len = 0;
        char *save = NULL;

        if ((*list && (str_append(&all, &len, *list, strlen(*list)) < 0 || str_append(&all, &len, " ", 1) < 0)) ||
            str_append(&all, &len, more, strlen(more)) < 0)
                return;
        for (char *t = strtok_r(all, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
                if (n == cap) {
                        char **nv = reallocarray(v, cap ? 2 * cap : 16, sizeof(*v));
                        if (!nv)
                                return;
                        v = nv;
                        cap = cap ? 2 * cap : 16;
                }
                v[n++] = t;
        }
        if (n > 1)
                qsort(v, n, sizeof(*v), cmp_name);
        if (str_append(&out, &out_len, "", 0) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                if (i > 0 && streq(v[i], v[i - 1]))
                        continue;
                if ((out_len && str_append(&out, &out_len, " ", 1) < 0) ||
                    str_append(&out, &out_len, v[i], strlen(v[i])) < 0)
                        return;
        }
        free(*list);
        *list = TAKE_PTR(out);
}

/* File sets: a changed set owes its on_change (with the names) and its
 * reloads. Returns whether any set changed. */
static bool files_prepare(struct jobs *j, const struct sync_cycle *cy) {
        const struct config *c = j->config;
        bool changed = false;

        for (size_t i = 0; i < c->n_files; i++) {
                struct job *jb = files_job(j, i);

                if (cy->set_results[i].status != MAP_CHANGED || !cy->sets[i])
                        continue;
                changed = true;
                if (jb->command) {
                        if (!jb->owed) {
                                free(jb->changed);
                                jb->changed = NULL;
                        }
                        job_owe(jb);
                        names_merge(&jb->changed, files_changed_names(cy->sets[i]));
                }
                for (size_t k = 0; k < c->files[i].n_reloads; k++)
                        reload_owe(&j->jobs[j->n_maps + c->files[i].reloads[k]], c->files[i].name);
        }
        return changed;
}

void jobs_prepare(struct jobs *j, const struct sync_cycle *cy) {
        const struct config *c = j->config;
        bool changed = false;

        for (size_t i = 0; i < c->n_maps; i++) {
                const struct map_result *res = &cy->results[i];
                struct job *jb = &j->jobs[i];

                if (res->status == MAP_FAILED)
                        continue;
                memcpy(jb->sha256, res->sha256, sizeof(jb->sha256));
                jb->rows = res->rows;
                if (res->status != MAP_CHANGED)
                        continue;
                changed = true;
                if (jb->command)
                        job_owe(jb);
                for (size_t k = 0; k < c->maps[i].n_reloads; k++)
                        reload_owe(&j->jobs[j->n_maps + c->maps[i].reloads[k]], c->maps[i].name);
        }
        if (files_prepare(j, cy))
                changed = true;
        if (changed)
                jobs_save(j);
}

static int jobs_on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        jobs_kick(userdata);
        return 0;
}

/* What a running hook's completion needs: the job is found again by name,
 * since a config reload may have rebuilt the array meanwhile. */
struct job_run {
        struct jobs *jobs;
        bool is_reload;
        bool is_files;
        char name[];
};

static void job_on_done(void *userdata, const struct hook_result *res);

/* MAPSYNCD_FILES, MAPSYNCD_DIRECTORY, MAPSYNCD_CHANGED (names only, never
 * contents) and, when the list was cut, MAPSYNCD_CHANGED_TRUNCATED=1. */
static int files_env(const struct job *jb, char **e_changed, char *e_map, size_t n_map, char *e_out, size_t n_out,
                     const char **env, size_t *n_env) {
        const char *names = jb->changed ? jb->changed : "";
        size_t len = strlen(names);
        bool cut = len > CHANGED_ENV_MAX;

        if (cut) {
                len = CHANGED_ENV_MAX;
                while (len > 0 && names[len] != ' ')
                        len--;
        }
        if (asprintf(e_changed, "MAPSYNCD_CHANGED=%.*s", (int)len, names) < 0) {
                *e_changed = NULL;
                return -ENOMEM;
        }
        snprintf(e_map, n_map, "MAPSYNCD_FILES=%s", jb->name);
        snprintf(e_out, n_out, "MAPSYNCD_DIRECTORY=%s", jb->output);
        env[(*n_env)++] = e_map;
        env[(*n_env)++] = e_out;
        env[(*n_env)++] = *e_changed;
        if (cut)
                env[(*n_env)++] = "MAPSYNCD_CHANGED_TRUNCATED=1";
        return 0;
}

static int job_start(struct jobs *j, struct job *jb) {
        char e_map[300], e_out[4200], e_sha[100], e_rows[64], e_cause[1200];
        _cleanup_free_ char *e_changed = NULL;
        const char *env[5];
        size_t n_env = 0;
        int r;

        if (jb->is_files) {
                r = files_env(jb, &e_changed, e_map, sizeof(e_map), e_out, sizeof(e_out), env, &n_env);
                if (r < 0)
                        return r;
        } else if (jb->is_reload) {
                snprintf(e_map, sizeof(e_map), "MAPSYNCD_RELOAD=%s", jb->name);
                snprintf(e_cause, sizeof(e_cause), "MAPSYNCD_MAP=%s", jb->causes ? jb->causes : "");
                env[n_env++] = e_map;
                env[n_env++] = e_cause;
        } else {
                snprintf(e_map, sizeof(e_map), "MAPSYNCD_MAP=%s", jb->name);
                snprintf(e_out, sizeof(e_out), "MAPSYNCD_OUTPUT=%s", jb->output);
                snprintf(e_sha, sizeof(e_sha), "MAPSYNCD_SHA256=%s", jb->sha256);
                snprintf(e_rows, sizeof(e_rows), "MAPSYNCD_ROWS=%llu", (unsigned long long)jb->rows);
                env[n_env++] = e_map;
                env[n_env++] = e_out;
                env[n_env++] = e_sha;
                env[n_env++] = e_rows;
        }
        struct hook_spec spec = {
                .name = jb->label,
                .map = jb->is_reload ? NULL : jb->name,
                .command = jb->command,
                .env = env,
                .n_env = n_env,
                .timeout_usec = j->config->hook_timeout_s * 1000000ULL,
        };
        struct job_run *run = malloc(sizeof(*run) + strlen(jb->name) + 1);

        if (!run)
                return -ENOMEM;
        run->jobs = j;
        run->is_reload = jb->is_reload;
        run->is_files = jb->is_files;
        strcpy(run->name, jb->name);
        jb->running = true;
        jb->started_gen = jb->gen;
        r = hooks_start(j->hooks, &spec, job_on_done, run);
        if (r < 0) {
                jb->running = false;
                free(run);
        }
        return r;
}

static void job_failed(struct jobs *j, struct job *jb) {
        j->failures++;
        jb->failures++;
        if (!j->retry) {
                jb->retry_at = UINT64_MAX;
                return;
        }
        uint64_t delay = RETRY_MIN_USEC << (jb->failures - 1 < 16 ? jb->failures - 1 : 16);
        if (delay > RETRY_MAX_USEC)
                delay = RETRY_MAX_USEC;
        jb->retry_at = now_usec(CLOCK_MONOTONIC) + delay;
        log_notice("%s: hook will be retried in %llu s", jb->label, (unsigned long long)(delay / 1000000));
}

static void job_on_done(void *userdata, const struct hook_result *res) {
        struct job_run *run = userdata;
        struct jobs *j = run->jobs;
        struct job *jb = jobs_find_kind(j, run->is_reload, run->is_files, run->name);

        free(run);
        if (j->metrics)
                metrics_hook(j->metrics, jb ? jb->label : "unknown", res->outcome == HOOK_SUCCEEDED);
        if (j->on_hook)
                j->on_hook(j->on_hook_userdata, jb ? jb->label : "unknown", res);
        if (!jb) {
                /* The config lost this hook while it ran. */
                if (res->outcome != HOOK_SUCCEEDED)
                        j->failures++;
                jobs_kick(j);
                return;
        }
        jb->running = false;
        if (res->outcome == HOOK_SUCCEEDED) {
                jb->failures = 0;
                if (jb->gen == jb->started_gen) {
                        jb->owed = false;
                        free(jb->causes);
                        jb->causes = NULL;
                        free(jb->changed);
                        jb->changed = NULL;
                        jobs_save(j);
                }
        } else
                job_failed(j, jb);
        jobs_kick(j);
}

void jobs_set_hook_observer(struct jobs *j, jobs_hook_fn fn, void *userdata) {
        j->on_hook = fn;
        j->on_hook_userdata = userdata;
}

void jobs_set_metrics(struct jobs *j, struct metrics *m) {
        j->metrics = m;
}

void jobs_hold(struct jobs *j, bool hold) {
        j->hold = hold;
}

void jobs_kick(struct jobs *j) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), next = UINT64_MAX;

        if (hooks_running(j->hooks) > 0)
                return;
        if (!j->hold)
                for (size_t i = 0; i < j->n_jobs; i++) {
                        struct job *jb = &j->jobs[i];
                        if (!jb->owed || !jb->command)
                                continue;
                        /* A map's hook waits for a cycle that rendered the
                         * map: its environment names the file's hash. */
                        if (!jb->is_reload && !jb->is_files && !jb->sha256[0])
                                continue;
                        if (jb->retry_at <= now) {
                                if (job_start(j, jb) >= 0)
                                        return;
                                if (j->metrics)
                                        metrics_hook(j->metrics, jb->label, false);
                                job_failed(j, jb);
                                continue;
                        }
                        if (jb->retry_at < next)
                                next = jb->retry_at;
                }
        if (next != UINT64_MAX) {
                if (!j->retry_timer)
                        sd_event_add_time(j->event, &j->retry_timer, CLOCK_MONOTONIC, next, 0, jobs_on_retry, j);
                else {
                        sd_event_source_set_time(j->retry_timer, next);
                        sd_event_source_set_enabled(j->retry_timer, SD_EVENT_ONESHOT);
                }
        } else if (j->retry_timer)
                sd_event_source_set_enabled(j->retry_timer, SD_EVENT_OFF);
        if (j->idle)
                j->idle(j->userdata);
}

unsigned jobs_owed(const struct jobs *j) {
        unsigned n = 0;

        for (size_t i = 0; i < j->n_jobs; i++)
                n += j->jobs[i].owed && j->jobs[i].command;
        return n;
}

unsigned jobs_running(const struct jobs *j) {
        unsigned n = 0;

        for (size_t i = 0; i < j->n_jobs; i++)
                n += j->jobs[i].running;
        return n;
}

unsigned jobs_failures(const struct jobs *j) {
        return j->failures;
}
