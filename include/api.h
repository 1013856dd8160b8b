/* The control API: HTTP/1.1 with JSON bodies on an AF_UNIX socket, served
 * by libmicrohttpd on the daemon's sd-event loop (no threads). POST
 * /v1/sync asks for a cycle that starts after the request arrived and
 * answers when it and its hooks are over; GET /v1/status reports (and
 * long-polls for a new generation); GET /metrics gives metrics_file. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "hook.h"
#include "sync.h"

#define API_MAX_BODY           (64 * 1024) /* bytes of a request body */
#define API_MAX_WAIT_S         300         /* timeout_s of a long poll, at most */
#define API_DEFAULT_WAIT_S     30
#define API_CONNECTION_TIMEOUT 30 /* s a connection may stay idle */

enum api_state {
        API_STATE_IDLE,
        API_STATE_SYNCING,  /* a cycle is due, or hooks run */
        API_STATE_RETRYING, /* a map or hook failed and waits for its retry */
        API_STATE_DB_UNAVAILABLE,
};

/* What the API asks of the daemon. */
struct api_ops {
        /* A cycle that starts after now, without the debounce: its
         * generation in *ret. Returns 0, or a negative errno (stopping). */
        int (*request_sync)(void *userdata, uint64_t *ret);
        enum api_state (*state)(void *userdata);
        unsigned (*hooks_owed)(void *userdata);
};

struct api;

/* Takes the socket systemd passed (listen_fd >= 0) or creates c->api.listen
 * with socket_mode and socket_group, and starts serving on event. */
int api_new(sd_event *event, const struct config *c, int listen_fd, const struct api_ops *ops, void *userdata,
            struct api **ret);
/* Answers waiting requests with 503, closes every connection, removes a
 * socket it created; NULL-safe; returns NULL. */
struct api *api_free(struct api *a);

/* Adopts a reloaded config (the maps reported by status); the socket stays. */
int api_set_config(struct api *a, const struct config *c);

/* The daemon's reports. A cycle has ended (cy NULL: no snapshot, the
 * database is unavailable): requests waiting for it now wait for its hooks
 * (or get 503), long polls waiting for a newer generation are answered. */
void api_cycle_end(struct api *a, uint64_t generation, const struct sync_cycle *cy);
/* A hook has ended. */
void api_hook_done(struct api *a, const char *name, const struct hook_result *res);
/* No hook runs and none is due: requests whose cycle ended are answered. */
void api_hooks_idle(struct api *a);

/* Pieces of request handling, for the unit test. */
enum api_route {
        API_ROUTE_NONE,
        API_ROUTE_SYNC,
        API_ROUTE_STATUS,
        API_ROUTE_METRICS,
};

/* The resource a path names, and the methods it allows ("GET, HEAD"). */
enum api_route api_route(const char *path, const char **allow);
bool api_method_allowed(enum api_route route, const char *method);
/* Whether key is a query parameter of route. */
bool api_param_known(enum api_route route, const char *key);
/* A whole decimal number in [0, max] (no sign, no spaces). 0 or -EINVAL. */
int api_parse_number(const char *s, uint64_t max, uint64_t *ret);
/* JSON for an error answer: {"error": msg}. NULL when out of memory. */
char *api_error_body(const char *msg, size_t *len);
