/* Webhook deliveries on libcurl's multi interface: curl tells which
 * sockets to watch (CURLMOPT_SOCKETFUNCTION: one sd-event io source each)
 * and when to call it back (CURLMOPT_TIMERFUNCTION: one timer). */
#include "webhook.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include "build-config.h"
#include "json.h"
#include "log.h"
#include "replace.h"
#include "util.h"

/* ---- pure pieces ---- */

int webhook_sign(const void *key, size_t key_len, const void *body, size_t len, char out[65]) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned mac_len = 0;

        if (key_len > INT32_MAX || !HMAC(EVP_sha256(), key, (int)key_len, body, len, mac, &mac_len) || mac_len != 32)
                return -EIO;
        for (unsigned i = 0; i < mac_len; i++)
                snprintf(out + 2 * i, 3, "%02x", mac[i]);
        return 0;
}

int webhook_read_secret(const char *path, char **ret, size_t *ret_len, char *err, size_t err_size) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        ssize_t n;
        size_t len = 0;

        if (fd < 0) {
                int r = -errno;
                snprintf(err, err_size, "%s: %s", path, strerror(errno));
                return r;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                snprintf(err, err_size, "%s: not a regular file", path);
                return -EINVAL;
        }
        if ((st.st_mode & 077) || (st.st_uid != 0 && st.st_uid != geteuid())) {
                snprintf(err, err_size,
                         "%s: others than its owner may read or write it, or its owner is neither root nor this "
                         "user (chmod 0600)",
                         path);
                return -EPERM;
        }
        buf = malloc(WEBHOOK_SECRET_MAX + 2);
        if (!buf)
                return -ENOMEM;
        while ((n = read(fd, buf + len, WEBHOOK_SECRET_MAX + 1 - len)) > 0)
                len += (size_t)n;
        if (n < 0) {
                int r = -errno;
                snprintf(err, err_size, "%s: %s", path, strerror(errno));
                return r;
        }
        if (len > WEBHOOK_SECRET_MAX) {
                snprintf(err, err_size, "%s: longer than %d bytes", path, WEBHOOK_SECRET_MAX);
                return -EFBIG;
        }
        if (len > 0 && buf[len - 1] == '\n')
                len--;
        if (len == 0) {
                snprintf(err, err_size, "%s: empty", path);
                return -EINVAL;
        }
        buf[len] = '\0';
        *ret_len = len;
        *ret = TAKE_PTR(buf);
        return 0;
}

int webhook_new_id(char out[WEBHOOK_ID_LEN + 1]) {
        unsigned char b[16];
        size_t o = 0;

        if (RAND_bytes(b, sizeof(b)) != 1)
                return -EIO;
        b[6] = (b[6] & 0x0f) | 0x40; /* a version 4 UUID */
        b[8] = (b[8] & 0x3f) | 0x80;
        for (size_t i = 0; i < sizeof(b); i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        out[o++] = '-';
                snprintf(out + o, 3, "%02x", b[i]);
                o += 2;
        }
        out[o] = '\0';
        return 0;
}

uint64_t webhook_backoff_usec(unsigned failures) {
        unsigned shift = failures > 0 ? failures - 1 : 0;

        if (shift > 16)
                shift = 16;
        return WEBHOOK_RETRY_MIN_USEC << shift < WEBHOOK_RETRY_MAX_USEC ? WEBHOOK_RETRY_MIN_USEC << shift
                                                                        : WEBHOOK_RETRY_MAX_USEC;
}

int webhook_queue_init(struct webhook_queue *q, size_t n_maps) {
        *q = (struct webhook_queue){.n_maps = n_maps};
        q->pending = calloc(n_maps + 1, sizeof(bool));
        q->in_body = calloc(n_maps + 1, sizeof(bool));
        if (!q->pending || !q->in_body) {
                webhook_queue_done(q);
                return -ENOMEM;
        }
        return 0;
}

void webhook_queue_done(struct webhook_queue *q) {
        free(q->pending);
        free(q->in_body);
        *q = (struct webhook_queue){};
}

void webhook_queue_change(struct webhook_queue *q, size_t i) {
        if (i < q->n_maps)
                q->pending[i] = true;
}

enum webhook_action webhook_queue_next(struct webhook_queue *q) {
        bool any = false;

        if (q->in_flight)
                return WEBHOOK_NOTHING;
        for (size_t i = 0; i < q->n_maps; i++)
                if (q->pending[i]) {
                        any = true;
                        q->in_body[i] = true;
                        q->pending[i] = false;
                }
        if (any) {
                q->have_body = true;
                q->in_flight = true;
                q->failures = 0;
                return WEBHOOK_SEND_NEW;
        }
        if (q->have_body) {
                q->in_flight = true;
                return WEBHOOK_RETRY_SAME;
        }
        return WEBHOOK_NOTHING;
}

void webhook_queue_delivered(struct webhook_queue *q) {
        q->in_flight = false;
        q->have_body = false;
        q->failures = 0;
        memset(q->in_body, 0, q->n_maps * sizeof(bool));
}

void webhook_queue_failed(struct webhook_queue *q) {
        q->in_flight = false;
        q->failures++;
}

/* ---- deliveries ---- */

struct target {
        struct webhooks *owner;
        char *name;
        char *url;
        char *secret;
        size_t secret_len;
        uint64_t timeout_s;
        size_t n_maps;
        char **map_names;
        bool *covers;
        char (*sha256)[SHA256_HEX_LEN + 1];
        uint64_t *rows;
        uint64_t generation; /* of the latest change */
        struct webhook_queue q;
        /* The current body. */
        char *body;
        size_t body_len;
        char id[WEBHOOK_ID_LEN + 1];
        uint64_t body_generation;
        CURL *easy;
        struct curl_slist *headers;
        char errbuf[CURL_ERROR_SIZE];
        uint64_t started;
        sd_event_source *retry;
        bool restored; /* owed by an earlier run: sent after the first cycle */
};

struct webhooks {
        sd_event *event;
        CURLM *multi;
        sd_event_source *timer;
        struct target *targets;
        size_t n_targets;
        char *state_path; /* STATE_DIR/owed-webhooks */
        bool state_warned;
};

static void webhooks_save(struct webhooks *w);
static void webhooks_load(struct webhooks *w);

static void target_send(struct target *t, bool fresh);

static void target_done(struct target *t) {
        if (t->easy) {
                curl_multi_remove_handle(t->owner->multi, t->easy);
                curl_easy_cleanup(t->easy);
        }
        curl_slist_free_all(t->headers);
        sd_event_source_disable_unref(t->retry);
        if (t->secret) {
                OPENSSL_cleanse(t->secret, t->secret_len);
                free(t->secret);
        }
        for (size_t i = 0; i < t->n_maps; i++)
                free(t->map_names ? t->map_names[i] : NULL);
        free(t->map_names);
        free(t->covers);
        free(t->sha256);
        free(t->rows);
        free(t->body);
        free(t->name);
        free(t->url);
        webhook_queue_done(&t->q);
}

static int build_body(struct target *t) {
        struct json j;

        json_init(&j);
        json_object_begin(&j);
        json_key(&j, "event");
        json_string(&j, "maps_changed");
        json_key(&j, "generation");
        json_uint(&j, t->generation);
        json_key(&j, "maps");
        json_array_begin(&j);
        for (size_t i = 0; i < t->n_maps; i++) {
                if (!t->q.in_body[i])
                        continue;
                json_object_begin(&j);
                json_key(&j, "name");
                json_string(&j, t->map_names[i]);
                json_key(&j, "sha256");
                json_string(&j, t->sha256[i]);
                json_key(&j, "rows");
                json_uint(&j, t->rows[i]);
                json_object_end(&j);
        }
        json_array_end(&j);
        json_object_end(&j);
        free(t->body);
        t->body = json_take(&j, &t->body_len);
        t->body_generation = t->generation;
        if (!t->body || webhook_new_id(t->id) < 0)
                return -ENOMEM;
        return 0;
}

static size_t discard(char *ptr, size_t size, size_t n, void *userdata) {
        return size * n;
}

static int target_start(struct target *t) {
        char sig[65], h_sig[100], h_id[80];
        struct curl_slist *h = NULL, *tmp;

        if (webhook_sign(t->secret, t->secret_len, t->body, t->body_len, sig) < 0)
                return -EIO;
        snprintf(h_sig, sizeof(h_sig), "X-Mapsyncd-Signature-256: sha256=%s", sig);
        snprintf(h_id, sizeof(h_id), "X-Mapsyncd-Delivery: %s", t->id);
        const char *lines[] = {"Content-Type: application/json", "X-Mapsyncd-Event: maps_changed", h_sig, h_id,
                               "Expect:"};
        for (size_t i = 0; i < ARRAY_SIZE(lines); i++) {
                tmp = curl_slist_append(h, lines[i]);
                if (!tmp) {
                        curl_slist_free_all(h);
                        return -ENOMEM;
                }
                h = tmp;
        }
        t->easy = curl_easy_init();
        if (!t->easy) {
                curl_slist_free_all(h);
                return -ENOMEM;
        }
        curl_slist_free_all(t->headers);
        t->headers = h;
        t->errbuf[0] = '\0';
        curl_easy_setopt(t->easy, CURLOPT_URL, t->url);
        curl_easy_setopt(t->easy, CURLOPT_POST, 1L);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, t->body);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)t->body_len);
        curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
        curl_easy_setopt(t->easy, CURLOPT_TIMEOUT_MS, (long)(t->timeout_s * 1000));
        curl_easy_setopt(t->easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->easy, CURLOPT_PROTOCOLS_STR, "http,https");
        curl_easy_setopt(t->easy, CURLOPT_FOLLOWLOCATION, 0L);
        curl_easy_setopt(t->easy, CURLOPT_PROXY, ""); /* not from the environment */
        curl_easy_setopt(t->easy, CURLOPT_USERAGENT, "mapsyncd/" MAPSYNCD_VERSION);
        curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(t->easy, CURLOPT_ERRORBUFFER, t->errbuf);
        curl_easy_setopt(t->easy, CURLOPT_PRIVATE, t);
        t->started = now_usec(CLOCK_MONOTONIC);
        if (curl_multi_add_handle(t->owner->multi, t->easy) != CURLM_OK) {
                curl_easy_cleanup(t->easy);
                t->easy = NULL;
                return -EIO;
        }
        return 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct target *t = userdata;
        enum webhook_action a = webhook_queue_next(&t->q);

        if (a != WEBHOOK_NOTHING)
                target_send(t, a == WEBHOOK_SEND_NEW);
        return 0;
}

static void target_failed(struct target *t, const char *why) {
        uint64_t delay;

        webhook_queue_failed(&t->q);
        delay = webhook_backoff_usec(t->q.failures);
        log_warning("webhook %s: delivery %s (generation %llu) to %s failed: %s; retrying in %llu s", t->name, t->id,
                    (unsigned long long)t->body_generation, t->url, why, (unsigned long long)(delay / 1000000));
        if (!t->retry) {
                if (sd_event_add_time_relative(t->owner->event, &t->retry, CLOCK_MONOTONIC, delay, 1000, on_retry, t) <
                    0)
                        log_error("webhook %s: Could not arm the retry timer", t->name);
                return;
        }
        sd_event_source_set_time_relative(t->retry, delay);
        sd_event_source_set_enabled(t->retry, SD_EVENT_ONESHOT);
}

static void target_send(struct target *t, bool fresh) {
        if (t->retry)
                sd_event_source_set_enabled(t->retry, SD_EVENT_OFF);
        if (fresh && build_body(t) < 0) {
                target_failed(t, "out of memory");
                return;
        }
        if (target_start(t) < 0)
                target_failed(t, "could not start the transfer");
}

static void check_done(struct webhooks *w) {
        CURLMsg *m;
        int left;

        while ((m = curl_multi_info_read(w->multi, &left))) {
                struct target *t = NULL;
                long code = 0;
                char why[CURL_ERROR_SIZE + 64];
                CURLcode result;

                if (m->msg != CURLMSG_DONE)
                        continue;
                /* m belongs to the handle: read all of it before the
                 * handle goes. */
                result = m->data.result;
                curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&t);
                curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &code);
                if (result != CURLE_OK)
                        snprintf(why, sizeof(why), "%s", t->errbuf[0] ? t->errbuf : curl_easy_strerror(result));
                else
                        snprintf(why, sizeof(why), "HTTP status %ld", code);
                curl_multi_remove_handle(w->multi, t->easy);
                curl_easy_cleanup(t->easy);
                t->easy = NULL;
                if (result == CURLE_OK && code >= 200 && code < 300) {
                        log_info("webhook %s: delivered %s (generation %llu) in %llu ms: HTTP status %ld", t->name,
                                 t->id, (unsigned long long)t->body_generation,
                                 (unsigned long long)elapsed_ms(t->started), code);
                        webhook_queue_delivered(&t->q);
                        enum webhook_action a = webhook_queue_next(&t->q);
                        if (a != WEBHOOK_NOTHING)
                                target_send(t, a == WEBHOOK_SEND_NEW);
                        webhooks_save(w);
                } else
                        target_failed(t, why);
        }
}

static int on_socket_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct webhooks *w = userdata;
        int flags = 0, running;

        if (revents & EPOLLIN)
                flags |= CURL_CSELECT_IN;
        if (revents & EPOLLOUT)
                flags |= CURL_CSELECT_OUT;
        if (revents & (EPOLLERR | EPOLLHUP))
                flags |= CURL_CSELECT_ERR;
        curl_multi_socket_action(w->multi, fd, flags, &running);
        check_done(w);
        return 0;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp) {
        struct webhooks *w = userp;
        sd_event_source *s = socketp;
        uint32_t events = 0;

        if (what == CURL_POLL_REMOVE) {
                sd_event_source_disable_unref(s);
                curl_multi_assign(w->multi, fd, NULL);
                return 0;
        }
        if (what & CURL_POLL_IN)
                events |= EPOLLIN;
        if (what & CURL_POLL_OUT)
                events |= EPOLLOUT;
        if (s)
                return sd_event_source_set_io_events(s, events) < 0 ? -1 : 0;
        if (sd_event_add_io(w->event, &s, fd, events, on_socket_event, w) < 0)
                return -1;
        curl_multi_assign(w->multi, fd, s);
        return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct webhooks *w = userdata;
        int running;

        curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(w);
        return 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
        struct webhooks *w = userp;

        if (timeout_ms < 0)
                return sd_event_source_set_enabled(w->timer, SD_EVENT_OFF) < 0 ? -1 : 0;
        sd_event_source_set_time(w->timer, now_usec(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000);
        return sd_event_source_set_enabled(w->timer, SD_EVENT_ONESHOT) < 0 ? -1 : 0;
}

/* ---- setup ---- */

static int target_init(struct webhooks *w, struct target *t, const struct config *c, const struct webhook_config *wc) {
        char err[512];
        int r;

        t->owner = w;
        t->timeout_s = wc->timeout_s;
        t->name = strdup(wc->name);
        t->url = strdup(wc->url);
        t->n_maps = c->n_maps;
        t->map_names = calloc(c->n_maps + 1, sizeof(*t->map_names));
        t->covers = calloc(c->n_maps + 1, sizeof(*t->covers));
        t->sha256 = calloc(c->n_maps + 1, sizeof(*t->sha256));
        t->rows = calloc(c->n_maps + 1, sizeof(*t->rows));
        if (!t->name || !t->url || !t->map_names || !t->covers || !t->sha256 || !t->rows)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_maps; i++) {
                t->map_names[i] = strdup(c->maps[i].name);
                if (!t->map_names[i])
                        return -ENOMEM;
                t->covers[i] = config_webhook_covers(wc, c->maps[i].name);
        }
        r = webhook_queue_init(&t->q, c->n_maps);
        if (r < 0)
                return r;
        r = webhook_read_secret(wc->secret_file, &t->secret, &t->secret_len, err, sizeof(err));
        if (r < 0) {
                log_error("%s:%u: [webhook %s] secret_file %s; this webhook is off", c->path, wc->line, wc->name, err);
                return r;
        }
        return 0;
}

static void targets_free(struct webhooks *w) {
        for (size_t i = 0; i < w->n_targets; i++)
                target_done(&w->targets[i]);
        free(w->targets);
        w->targets = NULL;
        w->n_targets = 0;
}

int webhooks_set_config(struct webhooks *w, const struct config *c) {
        struct target *old = w->targets, *v;
        size_t n_old = w->n_targets, n = 0;
        char *path = NULL;

        if (asprintf(&path, "%s/owed-webhooks", c->state_dir) < 0)
                return -ENOMEM;
        free(w->state_path);
        w->state_path = path;

        v = calloc(c->n_webhooks + 1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        for (size_t i = 0; i < c->n_webhooks; i++) {
                struct target *t = &v[n];

                if (target_init(w, t, c, &c->webhooks[i]) < 0) {
                        target_done(t);
                        memset(t, 0, sizeof(*t));
                        continue;
                }
                n++;
                /* Carry undelivered changes over, by name. */
                for (size_t k = 0; k < n_old; k++) {
                        struct target *o = &old[k];
                        if (!streq(o->name, t->name))
                                continue;
                        t->generation = o->generation;
                        for (size_t mi = 0; mi < t->n_maps; mi++)
                                for (size_t mo = 0; mo < o->n_maps; mo++)
                                        if (streq(t->map_names[mi], o->map_names[mo])) {
                                                memcpy(t->sha256[mi], o->sha256[mo], sizeof(t->sha256[mi]));
                                                t->rows[mi] = o->rows[mo];
                                                if ((o->q.pending[mo] || o->q.in_body[mo]) && t->covers[mi])
                                                        webhook_queue_change(&t->q, mi);
                                        }
                }
        }
        w->targets = v;
        w->n_targets = n;
        for (size_t k = 0; k < n_old; k++)
                target_done(&old[k]);
        free(old);
        for (size_t i = 0; i < n; i++) {
                enum webhook_action a = webhook_queue_next(&v[i].q);
                if (a != WEBHOOK_NOTHING)
                        target_send(&v[i], true);
        }
        return 0;
}

int webhooks_new(sd_event *event, const struct config *c, struct webhooks **ret) {
        struct webhooks *w;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->event = sd_event_ref(event);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK || !(w->multi = curl_multi_init())) {
                webhooks_free(w);
                return -ENOMEM;
        }
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
        curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
        r = sd_event_add_time(event, &w->timer, CLOCK_MONOTONIC, UINT64_MAX, 1000, on_timer, w);
        if (r < 0) {
                webhooks_free(w);
                return r;
        }
        sd_event_source_set_enabled(w->timer, SD_EVENT_OFF);
        r = webhooks_set_config(w, c);
        if (r < 0) {
                webhooks_free(w);
                return r;
        }
        webhooks_load(w);
        *ret = w;
        return 0;
}

struct webhooks *webhooks_free(struct webhooks *w) {
        if (!w)
                return NULL;
        targets_free(w);
        free(w->state_path);
        if (w->multi)
                curl_multi_cleanup(w->multi);
        sd_event_source_disable_unref(w->timer);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

void webhooks_cycle(struct webhooks *w, uint64_t generation, const struct sync_cycle *cy) {
        bool save = false;

        if (!w)
                return;
        for (size_t k = 0; k < w->n_targets; k++) {
                struct target *t = &w->targets[k];
                bool any = t->restored;

                for (size_t i = 0; i < cy->config->n_maps && i < t->n_maps; i++) {
                        const struct map_result *res = &cy->results[i];
                        if (res->status == MAP_FAILED || !streq(t->map_names[i], cy->config->maps[i].name))
                                continue;
                        memcpy(t->sha256[i], res->sha256, sizeof(t->sha256[i]));
                        t->rows[i] = res->rows;
                        if (res->status == MAP_CHANGED && t->covers[i]) {
                                webhook_queue_change(&t->q, i);
                                any = true;
                        }
                }
                if (!any)
                        continue;
                t->restored = false;
                save = true;
                t->generation = generation;
                /* Not in flight: send now (a body waiting for its retry is
                 * superseded); in flight: when it ends. */
                enum webhook_action a = webhook_queue_next(&t->q);
                if (a != WEBHOOK_NOTHING)
                        target_send(t, a == WEBHOOK_SEND_NEW);
        }
        if (save)
                webhooks_save(w);
}

/* ---- owed deliveries across restarts: "NAME MAP" lines ---- */

static void webhooks_save(struct webhooks *w) {
        _cleanup_free_ char *text = NULL;
        const char *step = NULL;
        size_t len = 0;
        bool any = false;
        int r;

        if (!w->state_path)
                return;
        static const char header[] = "# mapsyncd: webhook deliveries owed, sent after the next start's first "
                                     "cycle\n";

        if (str_append(&text, &len, header, strlen(header)) < 0)
                return;
        for (size_t k = 0; k < w->n_targets; k++) {
                const struct target *t = &w->targets[k];
                for (size_t i = 0; i < t->n_maps; i++) {
                        if (!t->q.pending[i] && !t->q.in_body[i])
                                continue;
                        any = true;
                        if (str_append(&text, &len, t->name, strlen(t->name)) < 0 ||
                            str_append(&text, &len, " ", 1) < 0 ||
                            str_append(&text, &len, t->map_names[i], strlen(t->map_names[i])) < 0 ||
                            str_append(&text, &len, "\n", 1) < 0)
                                return;
                }
        }
        if (!any) {
                if (unlink(w->state_path) < 0 && errno != ENOENT)
                        log_error("Could not remove %s: %m", w->state_path);
                return;
        }
        r = replace_file(w->state_path, text, len,
                         &(struct replace_meta){.mode = 0600, .uid = (uid_t)-1, .gid = (gid_t)-1}, &step);
        if (r < 0) {
                if (!w->state_warned)
                        log_error("Could not record owed webhook deliveries in %s (%s): %s", w->state_path,
                                  step ? step : "write", strerror(-r));
                w->state_warned = true;
                return;
        }
        w->state_warned = false;
}

static void webhooks_load(struct webhooks *w) {
        _cleanup_fclose_ FILE *f = NULL;
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        unsigned lineno = 0, owed = 0;

        if (!w->state_path)
                return;
        f = fopen(w->state_path, "re");
        if (!f) {
                if (errno != ENOENT)
                        log_error("Could not read owed webhook deliveries from %s: %m", w->state_path);
                return;
        }
        while ((n = getline(&line, &cap, f)) >= 0) {
                char *sp;
                bool found = false;

                lineno++;
                if (n > 0 && line[n - 1] == '\n')
                        line[--n] = '\0';
                if (n == 0 || line[0] == '#')
                        continue;
                sp = strchr(line, ' ');
                if (!sp) {
                        log_warning("%s:%u: not an owed webhook delivery; ignored", w->state_path, lineno);
                        continue;
                }
                *sp = '\0';
                for (size_t k = 0; k < w->n_targets && !found; k++) {
                        struct target *t = &w->targets[k];
                        if (!streq(t->name, line))
                                continue;
                        for (size_t i = 0; i < t->n_maps; i++)
                                if (t->covers[i] && streq(t->map_names[i], sp + 1)) {
                                        webhook_queue_change(&t->q, i);
                                        t->restored = true;
                                        found = true;
                                        owed++;
                                }
                }
                if (!found)
                        log_warning("%s:%u: webhook %s, map %s: no longer configured; ignored", w->state_path, lineno,
                                    line, sp + 1);
        }
        if (owed > 0)
                log_notice("%u webhook map changes owed by an earlier run will be sent after the first sync", owed);
}

unsigned webhooks_pending(const struct webhooks *w) {
        unsigned n = 0;

        for (size_t k = 0; w && k < w->n_targets; k++)
                n += w->targets[k].q.have_body || w->targets[k].q.in_flight;
        return n;
}
