/* The configuration file: parsed with inih into a fresh struct config that
 * the caller swaps in only when it is valid. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum map_format {
        MAP_FORMAT_POSTFIX,
        MAP_FORMAT_PASSWD,
};

enum on_invalid {
        ON_INVALID_SKIP,
        ON_INVALID_FAIL,
};

struct reload_config {
        char *name;
        unsigned line; /* line of the [reload NAME] header */
        char *command;
};

struct map_config {
        char *name;
        unsigned line; /* line of the [map NAME] header */
        char *output;  /* resolved by paths_check_config() once loaded */
        unsigned output_line;
        char *query;
        unsigned query_line;
        enum map_format format;
        unsigned mode;
        uid_t uid; /* (uid_t)-1: keep the process's own */
        gid_t gid; /* (gid_t)-1: keep the process's own */
        enum on_invalid on_invalid;
        char *on_change;
        char *reload_names; /* as written; resolved into reloads[] */
        unsigned reload_line;
        size_t *reloads; /* indices into config.reloads */
        size_t n_reloads;
        /* The shrink guard: a rendering with more than max_shrink percent
         * fewer lines than the file is held back (0: off), unless the file
         * has fewer than max_shrink_min_lines lines. */
        unsigned max_shrink;
        uint64_t max_shrink_min_lines;
};

/* [api]: the control API on an AF_UNIX socket. */
struct api_config {
        unsigned line; /* line of the [api] header; 0: no [api] section */
        char *listen;  /* socket path (ignored when systemd passes a socket) */
        unsigned socket_mode;
        gid_t socket_group; /* (gid_t)-1: the process's own */
        uint64_t max_connections;
};

/* [webhook NAME]: POSTs after a cycle that changed one of its maps. */
struct webhook_config {
        char *name;
        unsigned line;
        char *url;
        char *secret_file;
        char *map_names; /* as written; NULL: every map */
        unsigned maps_line;
        uint64_t timeout_s;
};

enum db_driver {
        DB_DRIVER_SQLITE,
        DB_DRIVER_POSTGRESQL,
};

/* What the files of a [files NAME] set must hold. */
enum files_content {
        FILES_CONTENT_ANY,             /* any bytes but NUL */
        FILES_CONTENT_PEM_PRIVATE_KEY, /* exactly one PEM private-key block */
};

/* [files NAME]: a directory of files, one per row of a two-column query
 * (file name, file content). */
struct files_config {
        char *name;
        unsigned line; /* line of the [files NAME] header */
        char *directory;
        char *query;
        enum files_content content;
        unsigned mode;
        uid_t uid; /* (uid_t)-1: keep the process's own */
        gid_t gid; /* (gid_t)-1: keep the process's own */
        enum on_invalid on_invalid;
        char *on_change;
        char *reload_names; /* as written; resolved into reloads[] */
        unsigned reload_line;
        size_t *reloads; /* indices into config.reloads */
        size_t n_reloads;
};

struct config {
        char *path;
        /* sqlite: the database file. postgresql: not a file, only a label
         * for messages, "postgresql:" and the conninfo. */
        char *db_path;
        unsigned db_path_line;
        enum db_driver db_driver;
        char *pg_conninfo; /* libpq connection string, never a password */
        char *pg_passfile; /* libpq passfile, or NULL */
        char *pg_channel;  /* LISTEN channel */
        uint64_t busy_timeout_ms;
        uint64_t debounce_ms;
        uint64_t max_delay_ms;
        uint64_t hook_timeout_s;
        uint64_t hook_log_lines; /* of each hook run's output */
        uint64_t hook_log_bytes;
        uint64_t poll_interval_s;
        char *state_dir;
        unsigned state_dir_line;
        char *metrics_file;
        unsigned metrics_file_line;
        /* Row-size bound: a longer key or value makes the row invalid. */
        uint64_t max_key_bytes;
        uint64_t max_value_bytes;
        /* [sync] defaults of the maps' shrink guard. */
        unsigned max_shrink;
        uint64_t max_shrink_min_lines;
        struct map_config *maps;
        size_t n_maps;
        struct reload_config *reloads;
        size_t n_reloads;
        struct api_config api;
        struct webhook_config *webhooks;
        size_t n_webhooks;
        struct files_config *files;
        size_t n_files;
};

/* Problems found while loading, each "FILE:LINE: message". */
struct config_errors {
        char **msgs;
        size_t n_msgs;
};

void config_errors_done(struct config_errors *e);

/* Parses configuration text; `name` is the file name used in messages.
 * On success *ret owns a new config. On failure returns -EINVAL (with one
 * message per problem appended to *errors) or -ENOMEM. */
int config_parse_string(const char *name, const char *text, struct config **ret, struct config_errors *errors);

/* Reads and parses a file. Besides the errors of config_parse_string it
 * refuses a file that cannot be read (-errno, e.g. -ENOENT), that is not a
 * regular file (-EINVAL) or that anyone but its owner (root or this user)
 * may write (-EPERM): its commands run as this user. A message for each
 * problem is appended to *errors. */
int config_load(const char *path, struct config **ret, struct config_errors *errors);

/* Frees a config; NULL-safe; returns NULL. */
struct config *config_free(struct config *c);

/* Whether webhook w covers map m (its maps key names it, or it has none). */
bool config_webhook_covers(const struct webhook_config *w, const char *map);

/* Finds a map by name, or NULL. */
const struct map_config *config_find_map(const struct config *c, const char *name);

/* Finds a file set by name, or NULL. */
const struct files_config *config_find_files(const struct config *c, const char *name);
