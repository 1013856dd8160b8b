/* Logging: structured journal records when stderr is connected to journald
 * (JOURNAL_STREAM names it), one readable line per event on stderr
 * otherwise. Every log call preserves errno. */
#pragma once

#include <stdint.h>
#include <syslog.h>

/* MESSAGE_ID of each kind of event, for `journalctl MESSAGE_ID=...`. */
#define MSGID_STARTED         "664bd8ea033a49649933ba9c59ffdad0"
#define MSGID_MAP_REPLACED    "285307608ee04fbcab999e454b0c10aa"
#define MSGID_MAP_FAILED      "ed748b7888c346e8817a39a5368b8ec8"
#define MSGID_INVALID_ROW     "601b2277e7084c4ab8f1471ccfa16265"
#define MSGID_HOOK_DONE       "a9acffdf4c69463194c743b86783fe79"
#define MSGID_HOOK_FAILED     "84cc9a3c6b3a4502ba3c6ed66c84c596"
#define MSGID_SYNC_DONE       "03c1400953c241e5b0d46a2262e38e4e"
#define MSGID_SYNC_FAILED     "0273419b8c304cff91bc412633ee5373"
#define MSGID_DB_UNAVAILABLE  "1c190d3f313d4f61b814431947fb400b"
#define MSGID_CONFIG_RELOADED "8c8b7b61fba94fc98a270c51dae60bac"
#define MSGID_CONFIG_IGNORED  "30dbaaa870554c2cafe711a15316cfa5"
#define MSGID_STOPPING        "7b38f2a6b99346b08f471aeb47bb54ad"

#define LOG_FIELD_UNSET INT64_MIN

/* Optional structured fields of one record; zero-initialise with
 * LOG_FIELDS(...) so that unset numbers are LOG_FIELD_UNSET. */
struct log_fields {
        const char *message_id;
        const char *map;     /* MAPSYNCD_MAP */
        const char *hook;    /* MAPSYNCD_HOOK */
        const char *sha256;  /* MAPSYNCD_SHA256 */
        int64_t rows;        /* MAPSYNCD_ROWS */
        int64_t duration_ms; /* MAPSYNCD_DURATION_MS */
        int64_t exit_status; /* MAPSYNCD_EXIT_STATUS */
};

#define LOG_FIELDS(...)                                                                                                \
        (&(const struct log_fields){                                                                                   \
                .rows = LOG_FIELD_UNSET, .duration_ms = LOG_FIELD_UNSET, .exit_status = LOG_FIELD_UNSET, __VA_ARGS__})

/* Chooses the journal or stderr, and the most verbose priority logged. */
void log_init(int max_priority);

/* True when records go to the journal. */
int log_to_journal(void);

/* Emits one record at a syslog priority; f may be NULL. */
void log_submit(int priority, const struct log_fields *f, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define log_error(...)   log_submit(LOG_ERR, NULL, __VA_ARGS__)
#define log_warning(...) log_submit(LOG_WARNING, NULL, __VA_ARGS__)
#define log_notice(...)  log_submit(LOG_NOTICE, NULL, __VA_ARGS__)
#define log_info(...)    log_submit(LOG_INFO, NULL, __VA_ARGS__)
#define log_debug(...)   log_submit(LOG_DEBUG, NULL, __VA_ARGS__)
