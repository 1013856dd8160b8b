/* Change detection for driver = postgresql: a connection of its own that
 * LISTENs on the channel, its socket on the sd-event loop, non-blocking
 * throughout (PQconnectStart/PQconnectPoll, PQsendQuery, PQconsumeInput,
 * PQnotifies). A notification says "look": the caller syncs. Notifications
 * sent while the connection is down are lost, so the caller syncs after
 * every PGLISTEN_CONNECTED. A lost connection is tried again with a
 * backoff (pglisten_backoff_usec). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

struct pglisten;

enum pglisten_event {
        PGLISTEN_CONNECTED, /* LISTEN is in place: sync now */
        PGLISTEN_NOTIFIED,  /* a NOTIFY on the channel (detail: its payload) */
        PGLISTEN_LOST,      /* connecting failed or the connection broke (detail: why) */
};

typedef void (*pglisten_fn)(void *userdata, enum pglisten_event event, const char *detail);

/* Starts connecting at once. channel must be a lower-case identifier
 * (config.c checks it). passfile may be NULL. */
int pglisten_new(sd_event *event, const char *conninfo, const char *passfile, const char *channel, pglisten_fn fn,
                 void *userdata, struct pglisten **ret);

/* NULL-safe; returns NULL. */
struct pglisten *pglisten_free(struct pglisten *l);

/* Whether LISTEN is in place now. */
bool pglisten_connected(const struct pglisten *l);

/* Why the connection is down ("" when it is up or still connecting the
 * first time). */
const char *pglisten_problem(const struct pglisten *l);

/* Connections made and lost since the start. */
uint64_t pglisten_n_connects(const struct pglisten *l);

/* The wait before attempt n + 1 after n failures in a row (n >= 1):
 * 250 ms, doubled each time, at most 30 s. */
uint64_t pglisten_backoff_usec(unsigned n_failures);

/* How long one connection attempt may take before it counts as failed. */
#define PGLISTEN_CONNECT_TIMEOUT_USEC (10ULL * 1000000ULL)
