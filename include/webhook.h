/* Webhooks: after a cycle that replaced one of its maps, each [webhook
 * NAME] gets a POST of {"event": "maps_changed", "generation", "maps"}
 * signed with HMAC-SHA256 (X-Mapsyncd-Signature-256) and named by a
 * unique X-Mapsyncd-Delivery. Deliveries run on libcurl's multi interface
 * on the daemon's sd-event loop; a failed one is retried with a capped
 * exponential backoff until it succeeds or a newer change supersedes it
 * (the newer body then names the maps of both). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "sync.h"

#define WEBHOOK_RETRY_MIN_USEC (1000000ULL)
#define WEBHOOK_RETRY_MAX_USEC (60 * 1000000ULL)
#define WEBHOOK_SECRET_MAX     4096
#define WEBHOOK_ID_LEN         36 /* 8-4-4-4-12 hex digits */

struct webhooks;

/* Sets up every [webhook] of c; one whose secret_file cannot be used is
 * logged (naming the file) and left out. */
int webhooks_new(sd_event *event, const struct config *c, struct webhooks **ret);
/* Aborts deliveries in flight; NULL-safe; returns NULL. */
struct webhooks *webhooks_free(struct webhooks *w);
/* A reloaded config: undelivered changes carry over by webhook and map
 * name and are sent anew. */
int webhooks_set_config(struct webhooks *w, const struct config *c);
/* After a cycle's sync_commit(): the maps it replaced become owed to each
 * webhook that covers them. */
void webhooks_cycle(struct webhooks *w, uint64_t generation, const struct sync_cycle *cy);
/* Webhooks with a change not yet delivered. */
unsigned webhooks_pending(const struct webhooks *w);

/* The pieces, for the unit test. */

/* Lowercase hex HMAC-SHA256 of body under key into out (65 bytes). */
int webhook_sign(const void *key, size_t key_len, const void *body, size_t len, char out[65]);
/* Reads a secret: a regular file no one but its owner (root or this user)
 * may read or write; its content less one trailing newline, not empty.
 * Returns 0, or a negative errno with a message in err. */
int webhook_read_secret(const char *path, char **ret, size_t *ret_len, char *err, size_t err_size);
/* A new random delivery id (WEBHOOK_ID_LEN + 1 bytes). */
int webhook_new_id(char out[WEBHOOK_ID_LEN + 1]);
/* The delay before retry number `failures` (1, 2...). */
uint64_t webhook_backoff_usec(unsigned failures);

/* What a webhook owes, between deliveries. */
struct webhook_queue {
        size_t n_maps;
        bool *pending; /* replaced since the current body was made */
        bool *in_body; /* named by the current, undelivered body */
        bool have_body;
        bool in_flight;
        unsigned failures; /* of the current body, in a row */
};

enum webhook_action {
        WEBHOOK_NOTHING,
        WEBHOOK_SEND_NEW,   /* a new body (new id) for in_body: the old one is superseded */
        WEBHOOK_RETRY_SAME, /* the current body again, same id */
};

int webhook_queue_init(struct webhook_queue *q, size_t n_maps);
void webhook_queue_done(struct webhook_queue *q);
/* Map i was replaced. */
void webhook_queue_change(struct webhook_queue *q, size_t i);
/* What to send now that nothing is in flight: changes since the last body
 * make a new one (naming the undelivered maps too); else a failed body is
 * sent again; marks it in flight unless WEBHOOK_NOTHING. */
enum webhook_action webhook_queue_next(struct webhook_queue *q);
/* The delivery in flight ended. */
void webhook_queue_delivered(struct webhook_queue *q);
void webhook_queue_failed(struct webhook_queue *q);
