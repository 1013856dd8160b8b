/* The control API on libmicrohttpd, driven from sd-event: MHD's epoll fd
 * is one io source, its timeout one timer; a sync request or long poll is
 * suspended until the daemon's report resumes it with its answer. */
#include "api.h"

#include <fcntl.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "json.h"
#include "log.h"
#include "util.h"

#define API_MEMORY_LIMIT (32 * 1024) /* per connection: headers and buffers */

/* A cycle's results, shared by the sync requests that waited for it; the
 * hooks' results are added as they end. */
struct api_batch {
        unsigned n_ref;
        uint64_t generation;
        size_t n_maps;
        struct {
                char *name;
                enum map_status status;
                uint64_t rows;
                char sha256[SHA256_HEX_LEN + 1];
        } * maps;
        struct {
                char *name;
                struct hook_result res;
        } * hooks;
        size_t n_hooks;
        bool failed;
        struct api_batch *next; /* in api.batches while its hooks run */
};

enum request_state {
        REQ_NEW,
        REQ_WAIT_CYCLE, /* sync: in api.waiting, for `target` */
        REQ_WAIT_HOOKS, /* sync: its cycle ended (batch), its hooks run */
        REQ_LONG_POLL,  /* status: in api.waiting, until generation > target */
        REQ_ANSWERED,
};

struct api_request {
        struct api *api;
        struct MHD_Connection *con;
        enum request_state state;
        struct api_request *prev, *next; /* in *list */
        struct api_request **list;       /* api.waiting or api.hook_waiting */
        uint64_t target;
        uint64_t start_usec;
        uint64_t body_len;
        struct api_batch *batch;
        sd_event_source *timer; /* long poll timeout */
        struct MHD_Response *response;
        unsigned status;
        bool suspended;
};

struct map_state {
        char *name;
        char *output;
        bool rendered;
        uint64_t rows;
        char sha256[SHA256_HEX_LEN + 1];
        time_t last_change;
        uint64_t last_change_generation;
        time_t last_error;
        uint64_t last_error_generation;
};

struct api {
        sd_event *event;
        const struct config *config;
        const struct api_ops *ops;
        void *userdata;
        struct MHD_Daemon *mhd;
        int fd;
        char *socket_path; /* created by us: removed at the end */
        sd_event_source *io, *timer, *kick;
        struct api_request *waiting;      /* REQ_WAIT_CYCLE, REQ_LONG_POLL */
        struct api_request *hook_waiting; /* REQ_WAIT_HOOKS */
        struct api_batch *batches;
        uint64_t generation; /* of the last cycle that ended */
        struct map_state *maps;
        size_t n_maps;
};

/* ---- request parsing ---- */

enum api_route api_route(const char *path, const char **allow) {
        enum api_route r = API_ROUTE_NONE;

        if (streq(path, "/v1/sync"))
                r = API_ROUTE_SYNC;
        else if (streq(path, "/v1/status"))
                r = API_ROUTE_STATUS;
        else if (streq(path, "/metrics"))
                r = API_ROUTE_METRICS;
        if (allow)
                *allow = r == API_ROUTE_SYNC ? "POST" : r == API_ROUTE_NONE ? NULL : "GET, HEAD";
        return r;
}

bool api_method_allowed(enum api_route route, const char *method) {
        switch (route) {
        case API_ROUTE_SYNC:
                return streq(method, "POST");
        case API_ROUTE_STATUS:
        case API_ROUTE_METRICS:
                return streq(method, "GET") || streq(method, "HEAD");
        case API_ROUTE_NONE:
                break;
        }
        return false;
}

bool api_param_known(enum api_route route, const char *key) {
        switch (route) {
        case API_ROUTE_SYNC:
                return streq(key, "wait");
        case API_ROUTE_STATUS:
                return streq(key, "after") || streq(key, "timeout_s");
        default:
                return false;
        }
}

int api_parse_number(const char *s, uint64_t max, uint64_t *ret) {
        uint64_t v = 0;

        if (!s || !*s || strlen(s) > 20)
                return -EINVAL;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                if (v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
                        return -EINVAL;
                v = v * 10 + (uint64_t)(*p - '0');
        }
        if (v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

char *api_error_body(const char *msg, size_t *len) {
        struct json j;

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "error");
        json_string(&j, msg);
        json_object_end(&j);
        return json_take(&j, len);
}

/* ---- answers ---- */

static void request_unlink(struct api_request *rq) {
        if (!rq->list)
                return;
        if (rq->prev)
                rq->prev->next = rq->next;
        else
                *rq->list = rq->next;
        if (rq->next)
                rq->next->prev = rq->prev;
        rq->prev = rq->next = NULL;
        rq->list = NULL;
}

static void request_link(struct api_request *rq, struct api_request **list) {
        request_unlink(rq);
        rq->list = list;
        rq->prev = NULL;
        rq->next = *list;
        if (*list)
                (*list)->prev = rq;
        *list = rq;
}

static void api_kick(struct api *a) {
        if (a->kick)
                sd_event_source_set_enabled(a->kick, SD_EVENT_ONESHOT);
}

static struct MHD_Response *response_json(char *body, size_t len, const char *allow) {
        struct MHD_Response *resp;

        if (!body)
                return NULL;
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(body);
                return NULL;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        if (allow)
                MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
        return resp;
}

static enum MHD_Result queue(struct MHD_Connection *con, unsigned status, struct MHD_Response *resp) {
        enum MHD_Result r;

        if (!resp)
                return MHD_NO; /* out of memory: MHD closes the connection */
        r = MHD_queue_response(con, status, resp);
        MHD_destroy_response(resp);
        return r;
}

static enum MHD_Result queue_error(struct MHD_Connection *con, unsigned status, const char *msg, const char *allow) {
        size_t len = 0;
        char *body = api_error_body(msg, &len);

        return queue(con, status, response_json(body, len, allow));
}

/* Resumes a suspended request with its answer, queued when MHD calls the
 * handler again. */
static void request_answer(struct api_request *rq, unsigned status, char *body, size_t len) {
        struct api *a = rq->api;

        request_unlink(rq);
        rq->timer = sd_event_source_disable_unref(rq->timer);
        rq->state = REQ_ANSWERED;
        rq->status = status;
        rq->response = response_json(body, len, NULL);
        if (rq->suspended) {
                rq->suspended = false;
                MHD_resume_connection(rq->con);
                api_kick(a);
        }
}

static void request_answer_error(struct api_request *rq, unsigned status, const char *msg) {
        size_t len = 0;
        char *body = api_error_body(msg, &len);

        request_answer(rq, status, body, len);
}

static void iso_time(time_t t, char *buf, size_t size) {
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *state_name(enum api_state s) {
        switch (s) {
        case API_STATE_IDLE:
                return "idle";
        case API_STATE_SYNCING:
                return "syncing";
        case API_STATE_RETRYING:
                return "retrying";
        case API_STATE_DB_UNAVAILABLE:
                return "database unavailable";
        }
        return "unknown";
}

static char *status_body(struct api *a, size_t *len) {
        struct json j;
        char when[32];

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "generation");
        json_uint(&j, a->generation);
        json_key(&j, "state");
        json_string(&j, state_name(a->ops->state(a->userdata)));
        json_key(&j, "hooks_owed");
        json_uint(&j, a->ops->hooks_owed(a->userdata));
        json_key(&j, "maps");
        json_array_begin(&j);
        for (size_t i = 0; i < a->n_maps; i++) {
                const struct map_state *m = &a->maps[i];

                json_object_begin(&j);
                json_key(&j, "name");
                json_string(&j, m->name);
                json_key(&j, "output");
                json_string(&j, m->output);
                json_key(&j, "rows");
                if (m->rendered)
                        json_uint(&j, m->rows);
                else
                        json_null(&j);
                json_key(&j, "sha256");
                json_string(&j, m->rendered ? m->sha256 : NULL);
                json_key(&j, "last_change");
                if (m->last_change) {
                        iso_time(m->last_change, when, sizeof(when));
                        json_object_begin(&j);
                        json_key(&j, "time");
                        json_string(&j, when);
                        json_key(&j, "generation");
                        json_uint(&j, m->last_change_generation);
                        json_object_end(&j);
                } else
                        json_null(&j);
                json_key(&j, "last_error");
                if (m->last_error) {
                        iso_time(m->last_error, when, sizeof(when));
                        json_object_begin(&j);
                        json_key(&j, "time");
                        json_string(&j, when);
                        json_key(&j, "generation");
                        json_uint(&j, m->last_error_generation);
                        json_key(&j, "message");
                        json_string(&j, "not rendered or not written; the journal tells why");
                        json_object_end(&j);
                } else
                        json_null(&j);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_object_end(&j);
        return json_take(&j, len);
}

static const char *map_status_name(enum map_status s) {
        return s == MAP_CHANGED ? "changed" : s == MAP_UNCHANGED ? "unchanged" : "failed";
}

static const char *hook_outcome_name(enum hook_outcome o) {
        switch (o) {
        case HOOK_SUCCEEDED:
                return "succeeded";
        case HOOK_FAILED:
                return "failed";
        case HOOK_KILLED:
                return "killed";
        case HOOK_TIMED_OUT:
                return "timed_out";
        }
        return "unknown";
}

static char *sync_body(struct api *a, const struct api_batch *b, uint64_t duration_ms, size_t *len) {
        struct json j;

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "generation");
        json_uint(&j, b->generation);
        json_key(&j, "ok");
        json_bool(&j, !b->failed);
        json_key(&j, "maps");
        json_array_begin(&j);
        for (size_t i = 0; i < b->n_maps; i++) {
                json_object_begin(&j);
                json_key(&j, "name");
                json_string(&j, b->maps[i].name);
                json_key(&j, "status");
                json_string(&j, map_status_name(b->maps[i].status));
                json_key(&j, "rows");
                json_uint(&j, b->maps[i].rows);
                json_key(&j, "sha256");
                json_string(&j, b->maps[i].status == MAP_FAILED ? NULL : b->maps[i].sha256);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_key(&j, "hooks");
        json_array_begin(&j);
        for (size_t i = 0; i < b->n_hooks; i++) {
                const struct hook_result *r = &b->hooks[i].res;

                json_object_begin(&j);
                json_key(&j, "name");
                json_string(&j, b->hooks[i].name);
                json_key(&j, "status");
                json_string(&j, hook_outcome_name(r->outcome));
                json_key(&j, "exit_status");
                if (r->outcome == HOOK_SUCCEEDED || r->outcome == HOOK_FAILED)
                        json_int(&j, r->code);
                else
                        json_null(&j);
                if (r->outcome == HOOK_KILLED) {
                        json_key(&j, "signal");
                        json_int(&j, r->code);
                }
                json_key(&j, "duration_ms");
                json_uint(&j, r->duration_ms);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_key(&j, "hooks_owed");
        json_uint(&j, a->ops->hooks_owed(a->userdata));
        json_key(&j, "duration_ms");
        json_uint(&j, duration_ms);
        json_object_end(&j);
        return json_take(&j, len);
}

static void batch_unref(struct api_batch *b) {
        if (!b || --b->n_ref > 0)
                return;
        for (size_t i = 0; i < b->n_maps; i++)
                free(b->maps[i].name);
        for (size_t i = 0; i < b->n_hooks; i++)
                free(b->hooks[i].name);
        free(b->maps);
        free(b->hooks);
        free(b);
}

/* ---- the daemon's reports ---- */

static void map_state_update(struct api *a, uint64_t generation, const struct sync_cycle *cy) {
        time_t now = time(NULL);

        for (size_t i = 0; i < a->n_maps && i < cy->config->n_maps; i++) {
                const struct map_result *res = &cy->results[i];
                struct map_state *m = &a->maps[i];

                if (!streq(m->name, cy->config->maps[i].name))
                        continue;
                if (res->status == MAP_DEFERRED)
                        continue; /* not live yet: the next cycle has it */
                if (res->status == MAP_FAILED) {
                        m->last_error = now;
                        m->last_error_generation = generation;
                        continue;
                }
                m->rendered = true;
                m->rows = res->rows;
                memcpy(m->sha256, res->sha256, sizeof(m->sha256));
                if (res->status == MAP_CHANGED) {
                        m->last_change = now;
                        m->last_change_generation = generation;
                }
        }
}

static struct api_batch *batch_new(uint64_t generation, const struct sync_cycle *cy) {
        struct api_batch *b = calloc(1, sizeof(*b));

        if (!b)
                return NULL;
        b->n_ref = 1;
        b->generation = generation;
        b->maps = calloc(cy->config->n_maps, sizeof(*b->maps));
        if (!b->maps) {
                free(b);
                return NULL;
        }
        for (size_t i = 0; i < cy->config->n_maps; i++) {
                b->maps[i].name = strdup(cy->config->maps[i].name);
                if (!b->maps[i].name) {
                        batch_unref(b);
                        return NULL;
                }
                b->n_maps++;
                b->maps[i].status = cy->results[i].status;
                b->maps[i].rows = cy->results[i].rows;
                memcpy(b->maps[i].sha256, cy->results[i].sha256, sizeof(b->maps[i].sha256));
                if (cy->results[i].status == MAP_FAILED)
                        b->failed = true;
        }
        return b;
}

void api_cycle_end(struct api *a, uint64_t generation, const struct sync_cycle *cy) {
        struct api_batch *b = NULL;
        struct api_request *rq, *next;

        bool deferred = cy && sync_count(cy, MAP_DEFERRED) > 0;

        if (!a)
                return;
        /* A generation is reported once all of it is live: a cycle that held
         * a map back for the mtime rule is completed by one of the same
         * generation, and only then do status and long polls see it. */
        if (!deferred && generation > a->generation)
                a->generation = generation;
        if (cy) {
                map_state_update(a, generation, cy);
                b = batch_new(generation, cy);
        }
        for (rq = a->waiting; rq; rq = next) {
                next = rq->next;
                if (rq->state == REQ_LONG_POLL && !deferred && generation > rq->target) {
                        size_t len = 0;
                        char *body = status_body(a, &len);
                        request_answer(rq, MHD_HTTP_OK, body, len);
                        continue;
                }
                if (rq->state != REQ_WAIT_CYCLE || rq->target > generation)
                        continue;
                /* A map held back by the mtime rule is replaced within a
                 * second, by a cycle of the same generation: wait for it. */
                if (cy && sync_count(cy, MAP_DEFERRED) > 0)
                        continue;
                if (!cy) {
                        request_answer_error(rq, MHD_HTTP_SERVICE_UNAVAILABLE,
                                             "database unavailable: kept every map as it was; the journal tells why");
                        continue;
                }
                if (!b) {
                        request_answer_error(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
                        continue;
                }
                request_link(rq, &a->hook_waiting);
                rq->state = REQ_WAIT_HOOKS;
                rq->batch = b;
                b->n_ref++;
        }
        if (b && b->n_ref > 1) {
                b->next = a->batches;
                a->batches = b;
                b->n_ref++; /* the list's */
        }
        batch_unref(b);
}

void api_hook_done(struct api *a, const char *name, const struct hook_result *res) {
        if (!a)
                return;
        for (struct api_batch *b = a->batches; b; b = b->next) {
                void *v = realloc(b->hooks, (b->n_hooks + 1) * sizeof(*b->hooks));
                char *n = strdup(name);

                if (!v || !n) {
                        free(n);
                        if (v)
                                b->hooks = v;
                        b->failed = true;
                        continue;
                }
                b->hooks = v;
                b->hooks[b->n_hooks].name = n;
                b->hooks[b->n_hooks].res = *res;
                b->n_hooks++;
                if (res->outcome != HOOK_SUCCEEDED)
                        b->failed = true;
        }
}

void api_hooks_idle(struct api *a) {
        struct api_batch *batches;
        struct api_request *rq, *next;

        if (!a)
                return;
        rq = a->hook_waiting;
        a->hook_waiting = NULL;
        for (; rq; rq = next) {
                struct api_batch *b = rq->batch;
                size_t len = 0;
                char *body;

                next = rq->next;
                rq->prev = rq->next = NULL;
                rq->list = NULL;
                rq->batch = NULL;
                if (!b) {
                        request_answer_error(rq, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
                        continue;
                }
                body = sync_body(a, b, elapsed_ms(rq->start_usec), &len);
                request_answer(rq, b->failed ? MHD_HTTP_INTERNAL_SERVER_ERROR : MHD_HTTP_OK, body, len);
                batch_unref(b);
        }
        batches = a->batches;
        a->batches = NULL;
        while (batches) {
                struct api_batch *nb = batches->next;
                batch_unref(batches);
                batches = nb;
        }
}

/* ---- requests ---- */

struct params {
        enum api_route route;
        const char *bad; /* first unknown or repeated key */
        unsigned seen;
};

static enum MHD_Result check_param(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
        struct params *p = cls;
        unsigned bit = streq(key, "wait") || streq(key, "after") ? 1 : 2;

        if (!api_param_known(p->route, key) || (p->seen & bit)) {
                p->bad = key;
                return MHD_NO;
        }
        p->seen |= bit;
        return MHD_YES;
}

static void log_peer(struct MHD_Connection *con) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct ucred cred = {.pid = 0, .uid = (uid_t)-1};
        socklen_t len = sizeof(cred);

        if (ci && getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
                log_info("api: sync requested by uid %u (pid %d)", (unsigned)cred.uid, (int)cred.pid);
        else
                log_info("api: sync requested (caller's uid unknown: %m)");
}

static int on_long_poll_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct api_request *rq = userdata;
        size_t len = 0;
        char *body = status_body(rq->api, &len);

        request_answer(rq, MHD_HTTP_OK, body, len);
        return 0;
}

static enum MHD_Result handle_sync(struct api *a, struct api_request *rq, struct MHD_Connection *con) {
        const char *w = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "wait");
        uint64_t wait = 1, gen;
        int r;

        if (w && api_parse_number(w, 1, &wait) < 0)
                return queue_error(con, MHD_HTTP_BAD_REQUEST, "wait: expected 0 or 1", NULL);
        log_peer(con);
        r = a->ops->request_sync(a->userdata, &gen);
        if (r < 0)
                return queue_error(con, MHD_HTTP_SERVICE_UNAVAILABLE, "mapsyncd is stopping", NULL);
        if (!wait) {
                struct json j;
                size_t len = 0;
                char *body;

                json_init(&j);
                json_object_begin(&j);
                json_key(&j, "generation");
                json_uint(&j, gen);
                json_object_end(&j);
                body = json_take(&j, &len);
                return queue(con, MHD_HTTP_ACCEPTED, response_json(body, len, NULL));
        }
        rq->target = gen;
        rq->state = REQ_WAIT_CYCLE;
        request_link(rq, &a->waiting);
        rq->suspended = true;
        MHD_suspend_connection(con);
        return MHD_YES;
}

static enum MHD_Result handle_status(struct api *a, struct api_request *rq, struct MHD_Connection *con) {
        const char *after = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "after");
        const char *timeout = MHD_lookup_connection_value(con, MHD_GET_ARGUMENT_KIND, "timeout_s");
        uint64_t n = 0, t = API_DEFAULT_WAIT_S;
        size_t len = 0;
        char *body;

        if (after && api_parse_number(after, UINT64_MAX, &n) < 0)
                return queue_error(con, MHD_HTTP_BAD_REQUEST, "after: expected a generation (a whole number)", NULL);
        if (timeout && api_parse_number(timeout, API_MAX_WAIT_S, &t) < 0)
                return queue_error(con, MHD_HTTP_BAD_REQUEST, "timeout_s: expected a whole number from 0 to 300", NULL);
        if (timeout && !after)
                return queue_error(con, MHD_HTTP_BAD_REQUEST, "timeout_s needs after", NULL);
        if (after && a->generation <= n && t > 0) {
                if (sd_event_add_time_relative(a->event, &rq->timer, CLOCK_MONOTONIC, t * 1000000ULL, 1000,
                                               on_long_poll_timeout, rq) < 0)
                        return queue_error(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL);
                rq->target = n;
                rq->state = REQ_LONG_POLL;
                request_link(rq, &a->waiting);
                rq->suspended = true;
                MHD_suspend_connection(con);
                return MHD_YES;
        }
        body = status_body(a, &len);
        return queue(con, MHD_HTTP_OK, response_json(body, len, NULL));
}

static enum MHD_Result handle_metrics(struct api *a, struct MHD_Connection *con) {
        struct MHD_Response *resp;
        _cleanup_close_ int fd = -1;
        char *buf = NULL;
        size_t len = 0;
        struct stat st;

        if (!a->config->metrics_file)
                return queue_error(con, MHD_HTTP_NOT_FOUND, "no metrics_file in [sync]", NULL);
        fd = open(a->config->metrics_file, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 16 * 1024 * 1024)
                return queue_error(con, MHD_HTTP_SERVICE_UNAVAILABLE, "metrics_file not written yet", NULL);
        buf = malloc((size_t)st.st_size + 1);
        if (!buf)
                return queue_error(con, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory", NULL);
        while (len < (size_t)st.st_size) {
                ssize_t k = read(fd, buf + len, (size_t)st.st_size - len);
                if (k <= 0)
                        break;
                len += (size_t)k;
        }
        resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        if (!resp) {
                free(buf);
                return MHD_NO;
        }
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
        return queue(con, MHD_HTTP_OK, resp);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
        struct api *a = cls;
        struct api_request *rq = *con_cls;
        enum api_route route;
        struct params params = {};
        const char *allow = NULL, *cl;
        uint64_t n;

        if (!rq) {
                rq = calloc(1, sizeof(*rq));
                if (!rq)
                        return MHD_NO;
                rq->api = a;
                rq->con = con;
                rq->start_usec = now_usec(CLOCK_MONOTONIC);
                *con_cls = rq;
                cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl && (api_parse_number(cl, UINT64_MAX, &n) < 0 || n > API_MAX_BODY)) {
                        rq->state = REQ_ANSWERED;
                        return queue_error(con, MHD_HTTP_CONTENT_TOO_LARGE, "request body larger than 65536 bytes",
                                           NULL);
                }
                return MHD_YES;
        }
        if (rq->response) {
                /* Resumed with its answer. */
                struct MHD_Response *resp = rq->response;
                rq->response = NULL;
                return queue(con, rq->status, resp);
        }
        if (rq->state == REQ_ANSWERED)
                return MHD_NO; /* resumed without an answer: out of memory */
        if (*upload_data_size > 0) {
                /* A body without Content-Length (chunked): MHD takes an
                 * answer only once it is in, so what is past the limit is
                 * read and dropped, up to a point where the connection is
                 * closed instead. */
                rq->body_len += *upload_data_size;
                *upload_data_size = 0;
                return rq->body_len > 16 * API_MAX_BODY ? MHD_NO : MHD_YES;
        }
        if (rq->state != REQ_NEW)
                return MHD_YES;
        if (rq->body_len > API_MAX_BODY) {
                rq->state = REQ_ANSWERED;
                return queue_error(con, MHD_HTTP_CONTENT_TOO_LARGE, "request body larger than 65536 bytes", NULL);
        }

        route = api_route(url, &allow);
        if (route == API_ROUTE_NONE)
                return queue_error(con, MHD_HTTP_NOT_FOUND, "no such resource (try /v1/sync, /v1/status, /metrics)",
                                   NULL);
        if (!api_method_allowed(route, method)) {
                char msg[80];
                snprintf(msg, sizeof(msg), "method not allowed (allowed: %s)", allow);
                return queue_error(con, MHD_HTTP_METHOD_NOT_ALLOWED, msg, allow);
        }
        params.route = route;
        MHD_get_connection_values(con, MHD_GET_ARGUMENT_KIND, check_param, &params);
        if (params.bad) {
                char msg[200], esc[120];
                snprintf(msg, sizeof(msg), "unknown or repeated query parameter '%s'",
                         str_escape(params.bad, strlen(params.bad), esc, sizeof(esc)));
                return queue_error(con, MHD_HTTP_BAD_REQUEST, msg, NULL);
        }
        switch (route) {
        case API_ROUTE_SYNC:
                return handle_sync(a, rq, con);
        case API_ROUTE_STATUS:
                return handle_status(a, rq, con);
        case API_ROUTE_METRICS:
                return handle_metrics(a, con);
        case API_ROUTE_NONE:
                break;
        }
        return MHD_NO;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe) {
        struct api_request *rq = *con_cls;

        if (!rq)
                return;
        request_unlink(rq);
        sd_event_source_disable_unref(rq->timer);
        batch_unref(rq->batch);
        if (rq->response)
                MHD_destroy_response(rq->response);
        free(rq);
        *con_cls = NULL;
}

/* MHD's own messages (a printf format of the library's). */
static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
        char buf[512];
        size_t n;

        vsnprintf(buf, sizeof(buf), fmt, ap);
        n = strlen(buf);
        while (n > 0 && buf[n - 1] == '\n')
                buf[--n] = '\0';
        log_debug("api: %s", buf);
}

/* ---- the loop ---- */

static void api_run(struct api *a) {
        MHD_UNSIGNED_LONG_LONG t;

        MHD_run(a->mhd);
        if (MHD_get_timeout(a->mhd, &t) == MHD_YES) {
                sd_event_source_set_time(a->timer, now_usec(CLOCK_MONOTONIC) + t * 1000ULL);
                sd_event_source_set_enabled(a->timer, SD_EVENT_ONESHOT);
        } else
                sd_event_source_set_enabled(a->timer, SD_EVENT_OFF);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        api_run(userdata);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        api_run(userdata);
        return 0;
}

static int on_kick(sd_event_source *s, void *userdata) {
        api_run(userdata);
        return 0;
}

/* ---- the socket ---- */

static int api_bind(struct api *a, const struct api_config *ac) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        _cleanup_close_ int fd = -1;
        struct stat st;
        mode_t old;
        int r;

        if (strlen(ac->listen) >= sizeof(sa.sun_path)) {
                log_error("[api] listen = %s: path too long for a socket", ac->listen);
                return -ENAMETOOLONG;
        }
        strcpy(sa.sun_path, ac->listen);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (lstat(ac->listen, &st) == 0) {
                _cleanup_close_ int probe = -1;

                if (!S_ISSOCK(st.st_mode)) {
                        log_error("[api] listen = %s exists and is not a socket: not touching it", ac->listen);
                        return -EEXIST;
                }
                probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
                        log_error("[api] listen = %s: another process serves this socket", ac->listen);
                        return -EADDRINUSE;
                }
                if (unlink(ac->listen) < 0 && errno != ENOENT) {
                        r = -errno;
                        log_error("[api] Could not remove the stale socket %s: %m", ac->listen);
                        return r;
                }
        }
        /* The socket is born with its mode: no moment in which others may
         * connect. */
        old = umask(0777 & ~ac->socket_mode);
        r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
        umask(old);
        if (r < 0) {
                r = -errno;
                log_error("[api] Could not bind %s: %m", ac->listen);
                return r;
        }
        a->socket_path = strdup(ac->listen);
        if (!a->socket_path)
                return -ENOMEM;
        if ((ac->socket_group != (gid_t)-1 && chown(ac->listen, (uid_t)-1, ac->socket_group) < 0) ||
            chmod(ac->listen, ac->socket_mode) < 0) {
                r = -errno;
                log_error("[api] Could not set the group or mode of %s: %m", ac->listen);
                return r;
        }
        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                log_error("[api] Could not listen on %s: %m", ac->listen);
                return r;
        }
        a->fd = TAKE_FD(fd);
        return 0;
}

static void map_states_free(struct map_state *v, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(v[i].name);
                free(v[i].output);
        }
        free(v);
}

int api_set_config(struct api *a, const struct config *c) {
        struct map_state *v = calloc(c->n_maps + 1, sizeof(*v));

        a->config = c; /* the old one is freed once this returns */
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_maps; i++) {
                v[i].name = strdup(c->maps[i].name);
                v[i].output = strdup(c->maps[i].output);
                if (!v[i].name || !v[i].output) {
                        map_states_free(v, i + 1);
                        map_states_free(a->maps, a->n_maps);
                        a->maps = NULL;
                        a->n_maps = 0;
                        return -ENOMEM;
                }
                for (size_t k = 0; k < a->n_maps; k++)
                        if (streq(a->maps[k].name, v[i].name)) {
                                char *name = v[i].name, *output = v[i].output;
                                v[i] = a->maps[k];
                                v[i].name = name;
                                v[i].output = output;
                                break;
                        }
        }
        map_states_free(a->maps, a->n_maps);
        a->maps = v;
        a->n_maps = c->n_maps;
        return 0;
}

int api_new(sd_event *event, const struct config *c, int listen_fd, const struct api_ops *ops, void *userdata,
            struct api **ret) {
        struct api *a = calloc(1, sizeof(*a));
        const union MHD_DaemonInfo *info;
        int r;

        if (!a)
                return -ENOMEM;
        a->event = sd_event_ref(event);
        a->ops = ops;
        a->userdata = userdata;
        a->fd = -1;
        r = api_set_config(a, c);
        if (r < 0)
                goto fail;
        if (listen_fd >= 0)
                a->fd = listen_fd;
        else {
                r = api_bind(a, &c->api);
                if (r < 0)
                        goto fail;
        }
        a->mhd = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                  on_request, a, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, a, MHD_OPTION_LISTEN_SOCKET,
                                  a->fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned)c->api.max_connections,
                                  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_CONNECTION_TIMEOUT,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_MEMORY_LIMIT,
                                  MHD_OPTION_NOTIFY_COMPLETED, on_completed, a, MHD_OPTION_END);
        if (!a->mhd) {
                log_error("[api] Could not start the HTTP server on %s", c->api.listen);
                r = -EIO;
                goto fail;
        }
        info = MHD_get_daemon_info(a->mhd, MHD_DAEMON_INFO_EPOLL_FD);
        if (!info) {
                r = -EIO;
                goto fail;
        }
        r = sd_event_add_io(event, &a->io, info->epoll_fd, EPOLLIN, on_io, a);
        if (r >= 0)
                r = sd_event_add_time(event, &a->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_timer, a);
        if (r >= 0)
                r = sd_event_add_defer(event, &a->kick, on_kick, a);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(a->timer, SD_EVENT_OFF);
        api_kick(a);
        log_info("api: listening on %s", listen_fd >= 0 ? "the socket passed by systemd" : c->api.listen);
        *ret = a;
        return 0;
fail:
        api_free(a);
        return r;
}

struct api *api_free(struct api *a) {
        if (!a)
                return NULL;
        if (a->mhd) {
                while (a->waiting)
                        request_answer_error(a->waiting, MHD_HTTP_SERVICE_UNAVAILABLE, "mapsyncd is stopping");
                while (a->hook_waiting)
                        request_answer_error(a->hook_waiting, MHD_HTTP_SERVICE_UNAVAILABLE, "mapsyncd is stopping");
                /* Hands the answers over to the connections, then closes;
                 * the listening socket is ours to close. */
                MHD_run(a->mhd);
                MHD_run(a->mhd);
                if (MHD_quiesce_daemon(a->mhd) != a->fd)
                        a->fd = -1;
                MHD_stop_daemon(a->mhd);
        }
        while (a->batches) {
                struct api_batch *next = a->batches->next;
                batch_unref(a->batches);
                a->batches = next;
        }
        sd_event_source_disable_unref(a->io);
        sd_event_source_disable_unref(a->timer);
        sd_event_source_disable_unref(a->kick);
        if (a->fd >= 0)
                close(a->fd);
        if (a->socket_path)
                unlink(a->socket_path);
        free(a->socket_path);
        map_states_free(a->maps, a->n_maps);
        sd_event_unref(a->event);
        free(a);
        return NULL;
}
