/* Unit tests of config.h: parsing, defaults, every error with its FILE:LINE,
 * long and continued lines, and config_load's checks of the file. */
#include "config.h"

#include <ini.h>

#include "util.h"

#include "test.h"

#define NAME "t.conf"

/* Lines 1-5: the smallest valid configuration. */
#define MIN_CONFIG                                                                                                     \
        "[database]\n"          /* 1 */                                                                                \
        "path = /db\n"          /* 2 */                                                                                \
        "[map m]\n"             /* 3 */                                                                                \
        "output = /out/m\n"     /* 4 */                                                                                \
        "query = SELECT 1, 2\n" /* 5 */

/* The longest line inih hands over whole, without its newline. */
#define LONGEST_LINE (INI_MAX_LINE - 2)

/* Parses text expecting failure with exactly the given messages, each a
 * "t.conf:LINE: " prefix and a piece of its text; NULL ends the list. */
static bool expect_errors_at(int line, const char *text, size_t n, ...) {
        struct config_errors e = {0};
        struct config *c = (struct config *)0x1;
        bool ok = true;
        va_list ap;
        int r;

        r = config_parse_string(NAME, text, &c, &e);
        ok &= test_check_int(r, -EINVAL, __FILE__, line, "config_parse_string()", "-EINVAL");
        ok &= test_check(c == (struct config *)0x1, __FILE__, line, "*ret untouched on failure");
        ok &= test_check_uint(e.n_msgs, n, __FILE__, line, "errors.n_msgs", "expected count");
        va_start(ap, n);
        for (size_t i = 0; i < n && i < e.n_msgs; i++) {
                const char *prefix = va_arg(ap, const char *);
                const char *sub = va_arg(ap, const char *);
                ok &= test_check_prefix(e.msgs[i], prefix, __FILE__, line, "error message");
                ok &= test_check_contains(e.msgs[i], sub, __FILE__, line, "error message");
        }
        va_end(ap);
        if (!ok) {
                fprintf(stderr, "    config text:\n%s\n    errors:\n", text);
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "      %s\n", e.msgs[i]);
        }
        if (r == 0 && c != (struct config *)0x1)
                config_free(c);
        config_errors_done(&e);
        return ok;
}

#define EXPECT_ERRORS(text, n, ...)     expect_errors_at(__LINE__, (text), (n), __VA_ARGS__)
#define EXPECT_ERROR(text, prefix, sub) expect_errors_at(__LINE__, (text), 1, (prefix), (sub))

/* Parses text expecting success. */
static struct config *parse_ok_at(int line, const char *text) {
        struct config_errors e = {0};
        struct config *c = NULL;
        int r;

        r = config_parse_string(NAME, text, &c, &e);
        test_check_int(r, 0, __FILE__, line, "config_parse_string()", "0");
        test_check_uint(e.n_msgs, 0, __FILE__, line, "errors.n_msgs", "0");
        for (size_t i = 0; i < e.n_msgs; i++)
                fprintf(stderr, "    unexpected error: %s\n", e.msgs[i]);
        config_errors_done(&e);
        if (r < 0)
                return NULL;
        test_check(c != NULL, __FILE__, line, "config returned");
        return c;
}

#define PARSE_OK(text) parse_ok_at(__LINE__, (text))

static const char full_config[] = "# mapsyncd test configuration\n"                      /* 1 */
                                  "[database]\n"                                         /* 2 */
                                  "path = /var/lib/mailadmin/database.sqlite ; the db\n" /* 3 */
                                  "busy_timeout_ms = 1234\n"                             /* 4 */
                                  "\n"                                                   /* 5 */
                                  "[sync]\n"                                             /* 6 */
                                  "debounce_ms = 150\n"                                  /* 7 */
                                  "max_delay_ms = 3000\n"                                /* 8 */
                                  "hook_timeout_s = 45\n"                                /* 9 */
                                  "state_dir = /run/mapsyncd-state\n"                    /* 10 */
                                  "poll_interval_s = 7\n"                                /* 11 */
                                  "metrics_file = /run/mapsyncd/metrics.prom\n"          /* 12 */
                                  "\n"                                                   /* 13 */
                                  "[map vmailbox]\n"                                     /* 14 */
                                  "output = /etc/postfix/vmailbox\n"                     /* 15 */
                                  "query = SELECT email, maildir FROM mailbox\n"         /* 16 */
                                  "format = postfix\n"                                   /* 17 */
                                  "mode = 0600\n"                                        /* 18 */
                                  "owner = root\n"                                       /* 19 */
                                  "group = 8\n"                                          /* 20 */
                                  "on_invalid = fail\n"                                  /* 21 */
                                  "on_change = postmap lmdb:/etc/postfix/vmailbox\n"     /* 22 */
                                  "reload = postfix, dovecot\n"                          /* 23 */
                                  "\n"                                                   /* 24 */
                                  "[map passwd]\n"                                       /* 25 */
                                  "output = /etc/dovecot/passwd\n"                       /* 26 */
                                  "query = SELECT email, password\n"                     /* 27 */
                                  "  FROM mailbox\n"                                     /* 28 */
                                  "format = passwd\n"                                    /* 29 */
                                  "owner = 0\n"                                          /* 30 */
                                  "group = root\n"                                       /* 31 */
                                  "on_invalid = skip\n"                                  /* 32 */
                                  "reload = dovecot\n"                                   /* 33 */
                                  "\n"                                                   /* 34 */
                                  "[reload dovecot]\n"                                   /* 35 */
                                  "command = doveadm reload\n"                           /* 36 */
                                  "\n"                                                   /* 37 */
                                  "[reload postfix]\n"                                   /* 38 */
                                  "command = postfix reload\n";                          /* 39 */

static void test_full_config(void) {
        struct config *c = PARSE_OK(full_config);
        const struct map_config *m;

        REQUIRE(c);
        CHECK_STR(c->path, NAME);
        CHECK_STR(c->db_path, "/var/lib/mailadmin/database.sqlite");
        CHECK_UINT(c->busy_timeout_ms, 1234);
        CHECK_UINT(c->debounce_ms, 150);
        CHECK_UINT(c->max_delay_ms, 3000);
        CHECK_UINT(c->hook_timeout_s, 45);
        CHECK_STR(c->state_dir, "/run/mapsyncd-state");
        CHECK_UINT(c->poll_interval_s, 7);
        CHECK_STR(c->metrics_file, "/run/mapsyncd/metrics.prom");

        REQUIRE_UINT(c->n_maps, 2);
        m = &c->maps[0];
        CHECK_STR(m->name, "vmailbox");
        CHECK_UINT(m->line, 14);
        CHECK_STR(m->output, "/etc/postfix/vmailbox");
        CHECK_STR(m->query, "SELECT email, maildir FROM mailbox");
        CHECK_INT(m->format, MAP_FORMAT_POSTFIX);
        CHECK_UINT(m->mode, 0600);
        CHECK_UINT(m->uid, 0);
        CHECK_UINT(m->gid, 8);
        CHECK_INT(m->on_invalid, ON_INVALID_FAIL);
        CHECK_STR(m->on_change, "postmap lmdb:/etc/postfix/vmailbox");
        CHECK_STR(m->reload_names, "postfix, dovecot");
        CHECK_UINT(m->reload_line, 23);
        REQUIRE_UINT(m->n_reloads, 2);
        CHECK_UINT(m->reloads[0], 1); /* postfix is the second [reload] */
        CHECK_UINT(m->reloads[1], 0);

        m = &c->maps[1];
        CHECK_STR(m->name, "passwd");
        CHECK_UINT(m->line, 25);
        CHECK_STR(m->output, "/etc/dovecot/passwd");
        CHECK_STR(m->query, "SELECT email, password FROM mailbox");
        CHECK_INT(m->format, MAP_FORMAT_PASSWD);
        CHECK_UINT(m->mode, 0640);
        CHECK_UINT(m->uid, 0);
        CHECK_UINT(m->gid, 0);
        CHECK_INT(m->on_invalid, ON_INVALID_SKIP);
        CHECK(m->on_change == NULL);
        REQUIRE_UINT(m->n_reloads, 1);
        CHECK_UINT(m->reloads[0], 0);

        REQUIRE_UINT(c->n_reloads, 2);
        CHECK_STR(c->reloads[0].name, "dovecot");
        CHECK_UINT(c->reloads[0].line, 35);
        CHECK_STR(c->reloads[0].command, "doveadm reload");
        CHECK_STR(c->reloads[1].name, "postfix");
        CHECK_UINT(c->reloads[1].line, 38);
        CHECK_STR(c->reloads[1].command, "postfix reload");

        CHECK(config_find_map(c, "vmailbox") == &c->maps[0]);
        CHECK(config_find_map(c, "passwd") == &c->maps[1]);
        CHECK(config_find_map(c, "PASSWD") == NULL);
        CHECK(config_find_map(c, "nosuchmap") == NULL);
        CHECK(config_find_map(c, "") == NULL);
        CHECK(config_free(c) == NULL);
}

static void test_defaults(void) {
        struct config *c = PARSE_OK(MIN_CONFIG);
        const struct map_config *m;

        REQUIRE(c);
        CHECK_STR(c->db_path, "/db");
        CHECK_UINT(c->busy_timeout_ms, 5000);
        CHECK_UINT(c->debounce_ms, 200);
        CHECK_UINT(c->max_delay_ms, 2000);
        CHECK_UINT(c->hook_timeout_s, 30);
        CHECK_STR(c->state_dir, "/var/lib/mapsyncd");
        CHECK_UINT(c->poll_interval_s, 0);
        CHECK(c->metrics_file == NULL);
        CHECK_UINT(c->n_reloads, 0);
        REQUIRE_UINT(c->n_maps, 1);
        m = &c->maps[0];
        CHECK_STR(m->name, "m");
        CHECK_UINT(m->line, 3);
        CHECK_STR(m->output, "/out/m");
        CHECK_STR(m->query, "SELECT 1, 2");
        CHECK_UINT(m->mode, 0640);
        CHECK_INT(m->format, MAP_FORMAT_POSTFIX);
        CHECK_INT(m->on_invalid, ON_INVALID_SKIP);
        CHECK_UINT(m->uid, (uid_t)-1);
        CHECK_UINT(m->gid, (gid_t)-1);
        CHECK(m->on_change == NULL);
        CHECK(m->reload_names == NULL);
        CHECK_UINT(m->n_reloads, 0);
        config_free(c);

        CHECK(config_free(NULL) == NULL);
}

/* Valid variants: ':' as separator, numbers at their bounds, comments. */
static void test_valid_variants(void) {
        struct config *c = PARSE_OK("; leading comment\n"
                                    "[database]\n"
                                    "path: /db\n"
                                    "busy_timeout_ms = 0\n"
                                    "[sync]\n"
                                    "debounce_ms = 0\n"
                                    "max_delay_ms = 3600000\n"
                                    "hook_timeout_s = 86400\n"
                                    "poll_interval_s = 86400\n"
                                    "[map a.b-c_d]\n"
                                    "output = /out/m ; inline comment\n"
                                    "query = SELECT 1, 2\n"
                                    "mode = 0775\n");
        REQUIRE(c);
        CHECK_STR(c->db_path, "/db");
        CHECK_UINT(c->busy_timeout_ms, 0);
        CHECK_UINT(c->debounce_ms, 0);
        CHECK_UINT(c->max_delay_ms, 3600000);
        CHECK_UINT(c->hook_timeout_s, 86400);
        CHECK_UINT(c->poll_interval_s, 86400);
        REQUIRE_UINT(c->n_maps, 1);
        CHECK_STR(c->maps[0].name, "a.b-c_d");
        CHECK_STR(c->maps[0].output, "/out/m");
        CHECK_UINT(c->maps[0].mode, 0775);
        config_free(c);

        c = PARSE_OK(MIN_CONFIG "max_shrink = 0\n[map n]\noutput = /out/n\nquery = SELECT 1, 2\n"
                                "[sync]\nmax_key_bytes = 1\nmax_value_bytes = 268435456\nmax_shrink = 100\n"
                                "max_shrink_min_lines = 0\n");
        REQUIRE(c);
        REQUIRE_UINT(c->n_maps, 2);
        CHECK_UINT(c->maps[1].max_shrink, 100);
        CHECK_UINT(c->max_key_bytes, 1);
        CHECK_UINT(c->max_value_bytes, 268435456);
        /* The map's own max_shrink, the [sync] default for the rest, even
         * when [sync] comes after the map. */
        CHECK_UINT(c->maps[0].max_shrink, 0);
        CHECK_UINT(c->maps[0].max_shrink_min_lines, 0);
        CHECK_UINT(c->maps[1].max_shrink_min_lines, 0);
        config_free(c);

        /* The defaults. */
        c = PARSE_OK(MIN_CONFIG);
        REQUIRE(c);
        CHECK_UINT(c->max_key_bytes, 4096);
        CHECK_UINT(c->max_value_bytes, 65536);
        CHECK_UINT(c->maps[0].max_shrink, 50);
        CHECK_UINT(c->maps[0].max_shrink_min_lines, 20);
        config_free(c);

        /* max_delay_ms equal to debounce_ms is fine. */
        c = PARSE_OK(MIN_CONFIG "[sync]\ndebounce_ms = 500\nmax_delay_ms = 500\n");
        REQUIRE(c);
        CHECK_UINT(c->debounce_ms, 500);
        CHECK_UINT(c->max_delay_ms, 500);
        config_free(c);
}

static void test_unknown_section(void) {
        EXPECT_ERROR(MIN_CONFIG "[bogus]\nx = 1\n", NAME ":6: ", "unknown section [bogus]");
        EXPECT_ERROR(MIN_CONFIG "[map]\noutput = /out/x\n", NAME ":6: ", "unknown section [map]");
        EXPECT_ERROR(MIN_CONFIG "[Database]\n", NAME ":6: ", "unknown section [Database]");
        EXPECT_ERROR(MIN_CONFIG "[map bad/name]\noutput = /out/x\nquery = SELECT 1, 2\n",
                     NAME ":6: ", "invalid name 'bad/name'");
        EXPECT_ERROR(MIN_CONFIG "[reload a b]\ncommand = true\n", NAME ":6: ", "invalid name 'a b'");
}

static void test_unknown_keys(void) {
        EXPECT_ERROR("[database]\npath = /db\nbogus = 1\n[map m]\noutput = /out/m\nquery = SELECT 1, 2\n",
                     NAME ":3: ", "unknown key 'bogus' in [database]");
        EXPECT_ERROR(MIN_CONFIG "[sync]\ndebounce_ms = 10\ndelay = 1\n", NAME ":8: ", "unknown key 'delay' in [sync]");
        EXPECT_ERROR(MIN_CONFIG "colour = red\n", NAME ":6: ", "unknown key 'colour' in [map m]");
        EXPECT_ERROR(MIN_CONFIG "[reload r]\ncommand = true\ntimeout = 5\n",
                     NAME ":8: ", "unknown key 'timeout' in [reload r]");
        /* Keys are case-sensitive. */
        EXPECT_ERROR(MIN_CONFIG "Mode = 0600\n", NAME ":6: ", "unknown key 'Mode' in [map m]");
}

static void test_missing_required(void) {
        EXPECT_ERROR("[map m]\noutput = /out/m\nquery = SELECT 1, 2\n", NAME ":3: ", "no [database] section");
        EXPECT_ERROR("[database]\nbusy_timeout_ms = 10\n[map m]\noutput = /out/m\nquery = SELECT 1, 2\n",
                     NAME ":1: ", "[database] has no path");
        EXPECT_ERROR("[database]\npath = /db\n[map m]\nquery = SELECT 1, 2\n", NAME ":3: ", "[map m] has no output");
        EXPECT_ERROR("[database]\npath = /db\n[map m]\noutput = /out/m\n", NAME ":3: ", "[map m] has no query");
        EXPECT_ERROR("[database]\npath = /db\n", NAME ":2: ", "no [map NAME] section");
        EXPECT_ERROR(MIN_CONFIG "[reload r]\n", NAME ":6: ", "[reload r] has no command");
        /* An empty value is no value. */
        EXPECT_ERRORS("[database]\npath =\n[map m]\noutput = /out/m\nquery = SELECT 1, 2\n", 2,
                      NAME ":2: ", "path has an empty value", NAME ":1: ", "[database] has no path");
        /* An empty query with nothing following it. */
        EXPECT_ERROR("[database]\npath = /db\n[map m]\noutput = /out/m\nquery =\n",
                     NAME ":3: ", "[map m] has no query");
}

static void test_relative_output(void) {
        EXPECT_ERRORS("[database]\npath = /db\n[map m]\noutput = out/m\nquery = SELECT 1, 2\n", 2,
                      NAME ":4: ", "output = out/m is not an absolute file path", NAME ":3: ", "[map m] has no output");
        EXPECT_ERRORS("[database]\npath = /db\n[map m]\noutput = /out/\nquery = SELECT 1, 2\n", 2,
                      NAME ":4: ", "output = /out/ is not an absolute file path", NAME ":3: ", "[map m] has no output");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nstate_dir = var/lib\n",
                     NAME ":7: ", "state_dir = var/lib is not an absolute path");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nmetrics_file = m.prom\n",
                     NAME ":7: ", "metrics_file = m.prom is not an absolute path");
}

static void test_bad_numbers(void) {
        EXPECT_ERROR("[database]\npath = /db\nbusy_timeout_ms = soon\n[map m]\noutput = /o\nquery = SELECT 1, 2\n",
                     NAME ":3: ", "busy_timeout_ms = soon is not a whole number");
        EXPECT_ERROR(MIN_CONFIG "[sync]\ndebounce_ms = -5\n", NAME ":7: ", "debounce_ms = -5 is not a whole number");
        EXPECT_ERROR(MIN_CONFIG "[sync]\ndebounce_ms = 1.5\n", NAME ":7: ", "debounce_ms = 1.5 is not a whole number");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nhook_timeout_s = 10s\n",
                     NAME ":7: ", "hook_timeout_s = 10s is not a whole number");
        EXPECT_ERROR("[database]\npath = /db\nbusy_timeout_ms = 3600001\n[map m]\noutput = /o\nquery = SELECT 1, 2\n",
                     NAME ":3: ", "busy_timeout_ms = 3600001 is out of range (0 to 3600000)");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nhook_timeout_s = 0\n",
                     NAME ":7: ", "hook_timeout_s = 0 is out of range (1 to 86400)");
        EXPECT_ERROR(MIN_CONFIG "[sync]\npoll_interval_s = 86401\n",
                     NAME ":7: ", "poll_interval_s = 86401 is out of range (0 to 86400)");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nmax_delay_ms = 99999999999999999999999\n",
                     NAME ":7: ", "max_delay_ms = 99999999999999999999999 is out of range (0 to 3600000)");
}

static void test_hook_log_keys(void) {
        struct config *c = PARSE_OK(MIN_CONFIG);

        REQUIRE(c);
        CHECK_UINT(c->hook_log_lines, 100);
        CHECK_UINT(c->hook_log_bytes, 65536);
        config_free(c);
        c = PARSE_OK(MIN_CONFIG "[sync]\nhook_log_lines = 0\nhook_log_bytes = 16777216\n");
        REQUIRE(c);
        CHECK_UINT(c->hook_log_lines, 0);
        CHECK_UINT(c->hook_log_bytes, 16777216);
        config_free(c);
        EXPECT_ERROR(MIN_CONFIG "[sync]\nhook_log_lines = 1000001\n",
                     NAME ":7: ", "hook_log_lines = 1000001 is out of range (0 to 1000000)");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nhook_log_bytes = 64k\n",
                     NAME ":7: ", "hook_log_bytes = 64k is not a whole number");
}

static void test_bad_mode(void) {
        EXPECT_ERROR(MIN_CONFIG "mode = rw-r-----\n", NAME ":6: ", "mode = rw-r----- is not an octal file mode");
        EXPECT_ERROR(MIN_CONFIG "mode = 0648\n", NAME ":6: ", "mode = 0648 is not an octal file mode");
        EXPECT_ERROR(MIN_CONFIG "mode = 9\n", NAME ":6: ", "mode = 9 is not an octal file mode");
        EXPECT_ERROR(MIN_CONFIG "mode = 0690\n", NAME ":6: ", "mode = 0690 is not an octal file mode");
        EXPECT_ERROR(MIN_CONFIG "mode = 010000\n", NAME ":6: ", "mode = 010000 is not an octal file mode");
        EXPECT_ERROR(MIN_CONFIG "mode = -0640\n", NAME ":6: ", "mode = -0640 is not an octal file mode");
        /* A map is data: no special bits, not writable by everyone. */
        EXPECT_ERROR(MIN_CONFIG "mode = 4777\n",
                     NAME ":6: ", "mode = 4777: setuid, setgid and sticky bits are refused");
        EXPECT_ERROR(MIN_CONFIG "mode = 2640\n",
                     NAME ":6: ", "mode = 2640: setuid, setgid and sticky bits are refused");
        EXPECT_ERROR(MIN_CONFIG "mode = 1640\n",
                     NAME ":6: ", "mode = 1640: setuid, setgid and sticky bits are refused");
        EXPECT_ERROR(MIN_CONFIG "mode = 0642\n", NAME ":6: ", "mode = 0642: a world-writable map is refused");
        EXPECT_ERROR(MIN_CONFIG "mode = 0666\n", NAME ":6: ", "mode = 0666: a world-writable map is refused");
}

static void test_limits(void) {
        EXPECT_ERROR(MIN_CONFIG "max_shrink = 101\n", NAME ":6: ", "max_shrink = 101 is out of range (0 to 100)");
        EXPECT_ERROR(MIN_CONFIG "max_key_bytes = 10\n", NAME ":6: ", "unknown key 'max_key_bytes' in [map m]");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nmax_value_bytes = 0\n", NAME ":7: ", "max_value_bytes = 0 is out of range");
        EXPECT_ERROR(MIN_CONFIG "[sync]\nmax_key_bytes = x\n", NAME ":7: ", "max_key_bytes = x is not a whole number");
        EXPECT_ERROR("[database]\npath = db.sqlite\n[map m]\noutput = /out/m\nquery = SELECT 1, 2\n",
                     NAME ":2: ", "path = db.sqlite is not an absolute path");
}

static void test_bad_enums(void) {
        EXPECT_ERROR(MIN_CONFIG "format = csv\n", NAME ":6: ", "format = csv: expected postfix or passwd");
        EXPECT_ERROR(MIN_CONFIG "format = Postfix\n", NAME ":6: ", "format = Postfix: expected postfix or passwd");
        EXPECT_ERROR(MIN_CONFIG "on_invalid = ignore\n", NAME ":6: ", "on_invalid = ignore: expected skip or fail");
}

static void test_reload_references(void) {
        EXPECT_ERROR(MIN_CONFIG "reload = nginx\n", NAME ":6: ", "reload = nginx: there is no [reload nginx] section");
        /* One name of two is unknown: only that one is reported. */
        EXPECT_ERROR(MIN_CONFIG "reload = postfix nginx\n[reload postfix]\ncommand = postfix reload\n",
                     NAME ":6: ", "reload = nginx: there is no [reload nginx] section");

        /* Names separated by blanks, commas or both; a reload declared
         * after the map that names it. */
        struct config *c = PARSE_OK(MIN_CONFIG "reload = b,a  b\n"
                                               "[reload a]\ncommand = echo a\n"
                                               "[reload b]\ncommand = echo b\n");
        REQUIRE(c);
        REQUIRE_UINT(c->maps[0].n_reloads, 3);
        CHECK_UINT(c->maps[0].reloads[0], 1);
        CHECK_UINT(c->maps[0].reloads[1], 0);
        CHECK_UINT(c->maps[0].reloads[2], 1);
        CHECK_UINT(c->maps[0].reload_line, 6);
        config_free(c);
}

static void test_same_output(void) {
        EXPECT_ERROR(MIN_CONFIG "[map n]\noutput = /out/m\nquery = SELECT 1, 2\n",
                     NAME ":6: ", "[map n] writes /out/m, as [map m] does already");
        /* Different files in one directory are fine. */
        struct config *c = PARSE_OK(MIN_CONFIG "[map n]\noutput = /out/n\nquery = SELECT 1, 2\n");
        REQUIRE(c);
        CHECK_UINT(c->n_maps, 2);
        config_free(c);
}

static void test_same_output_spelled_differently(void) {
        EXPECT_ERROR(MIN_CONFIG "[map n]\noutput = /out//./m\nquery = SELECT 1, 2\n",
                     NAME ":6: ", "[map n] writes /out//./m, as [map m] does already");
}

/* inih cuts a value at " ;": for a query or a command that would change
 * its meaning without a word, so it is an error there. */
static void test_comment_would_cut(void) {
        EXPECT_ERROR(MIN_CONFIG "[map n]\noutput = /out/n\nquery = SELECT a, 'x ;y' FROM t\n",
                     NAME ":8: ", "' ;' starts a comment and would cut this query");
        EXPECT_ERROR(MIN_CONFIG "[map n]\noutput = /out/n\nquery = SELECT a, b\n  FROM t ; where\n",
                     NAME ":9: ", "would cut this query");
        EXPECT_ERROR(MIN_CONFIG "[reload r]\ncommand = postmap a ; systemctl reload postfix\n",
                     NAME ":7: ", "would cut this command");
        /* A comment after another value, and ';' inside a word, are fine. */
        struct config *c = PARSE_OK(MIN_CONFIG "[map n]\noutput = /out/n ; file\nquery = SELECT a,';' FROM t\n");
        REQUIRE(c);
        CHECK_STR(c->maps[1].output, "/out/n");
        CHECK_STR(c->maps[1].query, "SELECT a,';' FROM t");
        config_free(c);
}

static void test_duplicates(void) {
        EXPECT_ERROR(MIN_CONFIG "output = /out/other\n", NAME ":6: ", "duplicate key 'output' in [map m]");
        EXPECT_ERROR(MIN_CONFIG "mode = 0600\nmode = 0600\n", NAME ":7: ", "duplicate key 'mode' in [map m]");
        EXPECT_ERROR(
                "[database]\npath = /db\n[database]\nbusy_timeout_ms = 10\n[map m]\noutput = /o\nquery = SELECT 1, 2\n",
                NAME ":3: ", "duplicate section [database] (first at line 1)");
        EXPECT_ERROR(MIN_CONFIG "[map m]\nmode = 0600\n", NAME ":6: ", "duplicate section [map m] (first at line 3)");
        /* A repeated section still rejects a key set in its first part. */
        EXPECT_ERRORS("[database]\npath = /db\n[map m]\noutput = /o\nquery = SELECT 1, 2\n[database]\npath = /db2\n", 2,
                      NAME ":6: ", "duplicate section [database] (first at line 1)",
                      NAME ":7: ", "duplicate key 'path' in [database]");
}

static void test_key_outside_section(void) {
        EXPECT_ERROR("debounce_ms = 10\n" MIN_CONFIG, NAME ":1: ", "key 'debounce_ms' outside of any section");
        EXPECT_ERROR("# comment\n\npath = /db\n" MIN_CONFIG, NAME ":3: ", "key 'path' outside of any section");
}

static void test_syntax(void) {
        EXPECT_ERROR(MIN_CONFIG "just some words\n", NAME ":6: ", "expected 'key = value' or '[section]'");
        EXPECT_ERROR(MIN_CONFIG "[map n\n", NAME ":6: ", "section header without ']'");
}

/* A line longer than inih's buffer is an error naming its line, never a
 * shortened value. */
static void test_long_line(void) {
        char text[1024], cmd[300];

        /* 250 bytes: "on_change = echo " and x's. */
        memset(cmd, 'x', sizeof(cmd));
        snprintf(text, sizeof(text), MIN_CONFIG "on_change = echo %.*s\nmode = 0600\n", 250 - 17, cmd);
        CHECK_UINT(strchr(text + strlen(MIN_CONFIG), '\n') - (text + strlen(MIN_CONFIG)), 250);
        EXPECT_ERROR(text, NAME ":6: ", "line is 250 bytes long");
        EXPECT_ERROR(text, NAME ":6: ", "continue a long value on indented lines");

        /* The same as the query of a map: the query is not taken. */
        snprintf(text, sizeof(text), "[database]\npath = /db\n[map m]\noutput = /o\nquery = SELECT '%.*s', 'v'\n",
                 250 - 22, cmd);
        EXPECT_ERRORS(text, 2, NAME ":5: ", "line is 250 bytes long", NAME ":3: ", "[map m] has no query");

        /* A long line in the middle of a continued query. */
        snprintf(text, sizeof(text),
                 "[database]\npath = /db\n[map m]\noutput = /o\nquery = SELECT a,\n    '%.*s'\n  FROM t\n", 240, cmd);
        EXPECT_ERROR(text, NAME ":6: ", "line is 246 bytes long");

        /* With CRLF line ends too. */
        snprintf(text, sizeof(text), MIN_CONFIG "on_change = echo %.*s\r\n", 250 - 17, cmd);
        EXPECT_ERROR(text, NAME ":6: ", "line is 251 bytes long");

        /* On the last line, without a newline. */
        snprintf(text, sizeof(text), MIN_CONFIG "on_change = echo %.*s", 250 - 17, cmd);
        EXPECT_ERROR(text, NAME ":6: ", "line is 250 bytes long");

        /* One byte past the longest allowed. */
        snprintf(text, sizeof(text), MIN_CONFIG "on_change = echo %.*s\n", LONGEST_LINE + 1 - 17, cmd);
        EXPECT_ERROR(text, NAME ":6: ", "bytes long");
}

static void test_longest_line(void) {
        char text[1024], fill[300], expected[300];
        struct config *c;
        int n;

        memset(fill, 'y', sizeof(fill));
        /* "query = " is 8 bytes: the value is LONGEST_LINE - 8. */
        n = snprintf(expected, sizeof(expected), "SELECT '%.*s', 'v'", LONGEST_LINE - 8 - 14, fill);
        CHECK_INT(n, LONGEST_LINE - 8);
        snprintf(text, sizeof(text), "[database]\npath = /db\n[map m]\noutput = /o\nquery = %s\nmode = 0600\n",
                 expected);
        c = PARSE_OK(text);
        REQUIRE(c);
        CHECK_STR(c->maps[0].query, expected);
        CHECK_UINT(strlen(c->maps[0].query), LONGEST_LINE - 8);
        CHECK_UINT(c->maps[0].mode, 0600);
        config_free(c);

        /* And as the last line without a newline. */
        snprintf(text, sizeof(text), "[database]\npath = /db\n[map m]\noutput = /o\nquery = %s", expected);
        c = PARSE_OK(text);
        REQUIRE(c);
        CHECK_STR(c->maps[0].query, expected);
        config_free(c);
}

static void test_continuation(void) {
        struct config *c = PARSE_OK("[database]\n"
                                    "path = /db\n"
                                    "[map m]\n"
                                    "output = /out/m\n"
                                    "query = SELECT email,\n"
                                    "        maildir\n"
                                    "  FROM mailbox\n"
                                    "\tWHERE active = 1   AND x = 2  \n"
                                    "on_change = postmap\n"
                                    "    lmdb:/out/m\n"
                                    "[reload r]\n"
                                    "command = systemctl\n"
                                    "   reload postfix\n");
        REQUIRE(c);
        CHECK_STR(c->maps[0].query, "SELECT email, maildir FROM mailbox WHERE active = 1   AND x = 2");
        CHECK_STR(c->maps[0].on_change, "postmap lmdb:/out/m");
        CHECK_STR(c->reloads[0].command, "systemctl reload postfix");
        config_free(c);

        /* An empty "query =" and the query on the indented lines. */
        c = PARSE_OK("[database]\n"
                     "path = /db\n"
                     "[map m]\n"
                     "query =\n"
                     "    SELECT a,\n"
                     "    b FROM t\n"
                     "output = /out/m\n");
        REQUIRE(c);
        CHECK_STR(c->maps[0].query, "SELECT a, b FROM t");
        CHECK_STR(c->maps[0].output, "/out/m");
        config_free(c);

        /* Comments and blank lines between continuation lines. */
        c = PARSE_OK("[database]\n"
                     "path = /db\n"
                     "[map m]\n"
                     "output = /out/m\n"
                     "query = SELECT a,\n"
                     "# a comment\n"
                     "    b\n"
                     "; another comment\n"
                     "    # an indented comment\n"
                     "    FROM t\n"
                     "\n"
                     "    WHERE 1\n");
        REQUIRE(c);
        CHECK_STR(c->maps[0].query, "SELECT a, b FROM t WHERE 1");
        config_free(c);

        /* The first key of a section may be indented: it continues
         * nothing. */
        c = PARSE_OK("[database]\n"
                     "  path = /db\n"
                     "[map m]\n"
                     "  output = /out/m\n"
                     "query = SELECT 1, 2\n");
        REQUIRE(c);
        CHECK_STR(c->db_path, "/db");
        CHECK_STR(c->maps[0].output, "/out/m");
        config_free(c);
}

static void test_continuation_not_allowed(void) {
        EXPECT_ERROR("[database]\npath = /db\n[map m]\nquery = SELECT 1, 2\noutput = /out/m\n  /more\n",
                     NAME ":6: ", "indented line: 'output' does not continue on another line");
        EXPECT_ERROR("[database]\npath = /db\n    /more\n[map m]\nquery = SELECT 1, 2\noutput = /out/m\n",
                     NAME ":3: ", "indented line: 'path' does not continue on another line");
        EXPECT_ERROR(MIN_CONFIG "mode = 04\n  40\n",
                     NAME ":7: ", "indented line: 'mode' does not continue on another line");
        EXPECT_ERROR(MIN_CONFIG "[sync]\ndebounce_ms = 1\n   00\n",
                     NAME ":8: ", "indented line: 'debounce_ms' does not continue on another line");
}

static void test_several_errors(void) {
        static const char text[] = "[database]\n"          /* 1 */
                                   "path = /db\n"          /* 2 */
                                   "bogus = 1\n"           /* 3: unknown key */
                                   "[sync]\n"              /* 4 */
                                   "debounce_ms = soon\n"  /* 5: not a number */
                                   "hook_timeout_s = 0\n"  /* 6: out of range */
                                   "[map m]\n"             /* 7 */
                                   "output = /out/m\n"     /* 8 */
                                   "query = SELECT 1, 2\n" /* 9 */
                                   "format = xml\n"        /* 10: bad format */
                                   "mode = 0999\n"         /* 11: bad mode */
                                   "reload = nope\n"       /* 12: no such reload */
                                   "[weird]\n"             /* 13: unknown section */
                                   "x = 1\n"               /* 14: (in an unknown section) */
                                   "[map n]\n"             /* 15: same output as m */
                                   "output = /out/m\n"     /* 16 */
                                   "query = SELECT 3, 4\n" /* 17 */
                                   "on_invalid = maybe\n"; /* 18: bad on_invalid */

        EXPECT_ERRORS(text, 9, NAME ":3: ", "unknown key 'bogus' in [database]",
                      NAME ":5: ", "debounce_ms = soon is not a whole number",
                      NAME ":6: ", "hook_timeout_s = 0 is out of range", NAME ":10: ", "format = xml",
                      NAME ":11: ", "mode = 0999", NAME ":13: ", "unknown section [weird]",
                      NAME ":18: ", "on_invalid = maybe", NAME ":12: ", "reload = nope",
                      NAME ":15: ", "[map n] writes /out/m, as [map m] does already");
}

static void test_max_delay_shorter(void) {
        EXPECT_ERROR(MIN_CONFIG "[sync]\ndebounce_ms = 500\nmax_delay_ms = 100\n",
                     NAME ":6: ", "max_delay_ms (100) is shorter than debounce_ms (500)");
        /* Against the default debounce_ms (200). */
        EXPECT_ERROR(MIN_CONFIG "[sync]\nmax_delay_ms = 199\n",
                     NAME ":6: ", "max_delay_ms (199) is shorter than debounce_ms (200)");
}

static void test_owner_group(void) {
        struct config *c;

        c = PARSE_OK(MIN_CONFIG "owner = root\ngroup = root\n");
        REQUIRE(c);
        CHECK_UINT(c->maps[0].uid, 0);
        CHECK_UINT(c->maps[0].gid, 0);
        config_free(c);

        c = PARSE_OK(MIN_CONFIG "owner = 0\ngroup = 0\n");
        REQUIRE(c);
        CHECK_UINT(c->maps[0].uid, 0);
        CHECK_UINT(c->maps[0].gid, 0);
        config_free(c);

        /* Numbers need no passwd entry. */
        c = PARSE_OK(MIN_CONFIG "owner = 54321\ngroup = 65432\n");
        REQUIRE(c);
        CHECK_UINT(c->maps[0].uid, 54321);
        CHECK_UINT(c->maps[0].gid, 65432);
        config_free(c);

        /* Only one of them: the other is kept as (id_t)-1. */
        c = PARSE_OK(MIN_CONFIG "group = 8\n");
        REQUIRE(c);
        CHECK_UINT(c->maps[0].uid, (uid_t)-1);
        CHECK_UINT(c->maps[0].gid, 8);
        config_free(c);

        EXPECT_ERROR(MIN_CONFIG "owner = no_such_user_mapsyncd\n",
                     NAME ":6: ", "owner = no_such_user_mapsyncd: no such user");
        EXPECT_ERROR(MIN_CONFIG "group = no_such_group_mapsyncd\n",
                     NAME ":6: ", "group = no_such_group_mapsyncd: no such group");
        /* (uid_t)-1 means "keep": it cannot be asked for by number. */
        EXPECT_ERROR(MIN_CONFIG "owner = 4294967295\n", NAME ":6: ", "owner = 4294967295: no such user");
}

static void test_crlf(void) {
        char text[sizeof(full_config) * 2];
        size_t o = 0;
        struct config *c;

        for (const char *s = full_config; *s; s++) {
                if (*s == '\n')
                        text[o++] = '\r';
                text[o++] = *s;
        }
        text[o] = '\0';
        c = PARSE_OK(text);
        REQUIRE(c);
        CHECK_STR(c->db_path, "/var/lib/mailadmin/database.sqlite");
        CHECK_UINT(c->busy_timeout_ms, 1234);
        CHECK_STR(c->state_dir, "/run/mapsyncd-state");
        REQUIRE_UINT(c->n_maps, 2);
        CHECK_STR(c->maps[0].name, "vmailbox");
        CHECK_STR(c->maps[0].output, "/etc/postfix/vmailbox");
        CHECK_STR(c->maps[0].query, "SELECT email, maildir FROM mailbox");
        CHECK_UINT(c->maps[0].mode, 0600);
        CHECK_STR(c->maps[1].query, "SELECT email, password FROM mailbox");
        CHECK_INT(c->maps[1].format, MAP_FORMAT_PASSWD);
        REQUIRE_UINT(c->n_reloads, 2);
        CHECK_STR(c->reloads[1].command, "postfix reload");
        config_free(c);

        /* Errors keep their line numbers with CRLF. */
        EXPECT_ERROR("[database]\r\npath = /db\r\n[map m]\r\noutput = /o\r\nquery = SELECT 1, 2\r\nmode = 8\r\n",
                     NAME ":6: ", "mode = 8 is not an octal file mode");
}

/* config_parse_string appends to errors that were there before and
 * judges only its own. */
static void test_errors_accumulate(void) {
        struct config_errors e = {0};
        struct config *c = NULL;

        CHECK_INT(config_parse_string("a.conf", "[bogus]\n", &c, &e), -EINVAL);
        CHECK(c == NULL);
        REQUIRE(e.n_msgs >= 1);
        size_t n = e.n_msgs;
        CHECK_PREFIX(e.msgs[0], "a.conf:1: ");
        CHECK_INT(config_parse_string("b.conf", MIN_CONFIG, &c, &e), 0);
        CHECK_UINT(e.n_msgs, n);
        REQUIRE(c);
        CHECK_STR(c->path, "b.conf");
        config_free(c);
        c = NULL;
        CHECK_INT(config_parse_string("c.conf", MIN_CONFIG "mode = x\n", &c, &e), -EINVAL);
        REQUIRE_UINT(e.n_msgs, n + 1);
        CHECK_PREFIX(e.msgs[n], "c.conf:6: ");
        config_errors_done(&e);
        CHECK(e.msgs == NULL);
        CHECK_UINT(e.n_msgs, 0);
        config_errors_done(&e); /* twice is harmless */
}

/* valid_name() accepts names of up to 64 bytes, but inih keeps only 49
 * bytes of a section header: a long but valid name must either work or be
 * refused by one error at its header, never turn into "key outside of any
 * section" errors on every line below. */
static void test_long_section_names(void) {
        char name[65], text[512];
        struct config_errors e = {0};
        struct config *c = NULL;
        int r;

        memset(name, 'n', 64);
        name[64] = '\0';
        snprintf(text, sizeof(text), "[database]\npath = /db\n[map %s]\noutput = /o\nquery = SELECT 1, 2\n", name);
        r = config_parse_string(NAME, text, &c, &e);
        if (r == 0) {
                CHECK_STR(c->maps[0].name, name);
                CHECK_STR(c->maps[0].output, "/o");
                config_free(c);
        } else {
                CHECK_UINT(e.n_msgs, 1);
                for (size_t i = 0; i < e.n_msgs; i++) {
                        fprintf(stderr, "    64-byte map name: %s\n", e.msgs[i]);
                        CHECK_PREFIX(e.msgs[i], NAME ":3: ");
                        CHECK(!strstr(e.msgs[i], "outside of any section"));
                }
        }
        config_errors_done(&e);

        /* The longest name inih keeps whole ("map " + 45 bytes) works. */
        name[45] = '\0';
        snprintf(text, sizeof(text), "[database]\npath = /db\n[map %s]\noutput = /o\nquery = SELECT 1, 2\n", name);
        c = PARSE_OK(text);
        REQUIRE(c);
        CHECK_STR(c->maps[0].name, name);
        config_free(c);
}

/* A UTF-8 byte order mark (as some editors write) starts the file: inih
 * itself skips it (INI_ALLOW_BOM). Accepted, or refused by one clear error
 * at line 1; never a cascade of errors about the lines after it. */
static void test_bom(void) {
        struct config_errors e = {0};
        struct config *c = NULL;
        int r = config_parse_string(NAME, "\xef\xbb\xbf" MIN_CONFIG, &c, &e);

        if (r == 0) {
                CHECK_STR(c->db_path, "/db");
                CHECK_UINT(c->n_maps, 1);
                config_free(c);
        } else {
                CHECK_UINT(e.n_msgs, 1);
                for (size_t i = 0; i < e.n_msgs; i++) {
                        fprintf(stderr, "    with a BOM: %s\n", e.msgs[i]);
                        CHECK_PREFIX(e.msgs[i], NAME ":1: ");
                        CHECK(!strstr(e.msgs[i], "expected 'key = value'"));
                }
        }
        config_errors_done(&e);
}

/* Files for config_load. */
static char *tmpdir;

static char *write_conf(const char *name, const void *data, size_t n, mode_t mode) {
        char *p = test_path(tmpdir, name);

        if (test_write_file(p, data, n, mode) < 0)
                abort();
        return p;
}

static void test_load_ok(void) {
        _cleanup_free_ char *p = write_conf("ok.conf", full_config, strlen(full_config), 0644);
        _cleanup_free_ char *p2 = write_conf("private.conf", MIN_CONFIG, strlen(MIN_CONFIG), 0600);
        struct config_errors e = {0};
        struct config *c = NULL;

        CHECK_INT(config_load(p, &c, &e), 0);
        CHECK_UINT(e.n_msgs, 0);
        REQUIRE(c);
        CHECK_STR(c->path, p);
        CHECK_UINT(c->n_maps, 2);
        CHECK_STR(c->maps[1].query, "SELECT email, password FROM mailbox");
        c = config_free(c);

        CHECK_INT(config_load(p2, &c, &e), 0);
        CHECK_UINT(e.n_msgs, 0);
        REQUIRE(c);
        CHECK_STR(c->maps[0].output, "/out/m");
        config_free(c);
        config_errors_done(&e);
}

/* Errors in a loaded file are named by its path. */
static void test_load_errors_name_file(void) {
        static const char text[] = MIN_CONFIG "mode = 0800\n";
        _cleanup_free_ char *p = write_conf("bad.conf", text, strlen(text), 0644);
        _cleanup_free_ char *prefix = NULL;
        struct config_errors e = {0};
        struct config *c = NULL;

        REQUIRE(asprintf(&prefix, "%s:6: ", p) > 0);
        CHECK_INT(config_load(p, &c, &e), -EINVAL);
        CHECK(c == NULL);
        REQUIRE_UINT(e.n_msgs, 1);
        CHECK_PREFIX(e.msgs[0], prefix);
        CHECK_CONTAINS(e.msgs[0], "mode = 0800 is not an octal file mode");
        config_errors_done(&e);
}

static void check_refused(const char *p, int expected_r, const char *why) {
        struct config_errors e = {0};
        struct config *c = NULL;
        _cleanup_free_ char *prefix = NULL;
        int r;

        REQUIRE(asprintf(&prefix, "%s: ", p) > 0);
        r = config_load(p, &c, &e);
        CHECK(r < 0);
        if (!CHECK_INT(r, expected_r))
                fprintf(stderr, "    config_load(%s): the contract in config.h says %s\n", p, strerror(-expected_r));
        CHECK(c == NULL);
        REQUIRE_UINT(e.n_msgs, 1);
        CHECK_PREFIX(e.msgs[0], prefix);
        CHECK_CONTAINS(e.msgs[0], why);
        config_errors_done(&e);
}

/* A config anyone but its owner may write is refused: its commands run as
 * this user. config.h: -EPERM. */
static void test_load_writable(void) {
        _cleanup_free_ char *g = write_conf("group-writable.conf", MIN_CONFIG, strlen(MIN_CONFIG), 0664);
        _cleanup_free_ char *o = write_conf("other-writable.conf", MIN_CONFIG, strlen(MIN_CONFIG), 0646);
        _cleanup_free_ char *u = write_conf("foreign-owner.conf", MIN_CONFIG, strlen(MIN_CONFIG), 0644);
        struct stat st;

        REQUIRE_INT(stat(g, &st), 0);
        CHECK_UINT(st.st_mode & 07777, 0664);
        REQUIRE_INT(stat(o, &st), 0);
        CHECK_UINT(st.st_mode & 07777, 0646);
        check_refused(g, -EPERM, "writable by others than its owner");
        check_refused(o, -EPERM, "writable by others than its owner");

        /* Owned by someone who is neither root nor this user. */
        if (geteuid() == 0) {
                REQUIRE_INT(chown(u, 54321, 54321), 0);
                check_refused(u, -EPERM, "not owned by root or this user");
        }
}

static void test_load_missing(void) {
        _cleanup_free_ char *p = test_path(tmpdir, "missing.conf");

        check_refused(p, -ENOENT, strerror(ENOENT));
}

static void test_load_directory(void) {
        struct config_errors e = {0};
        struct config *c = NULL;
        _cleanup_free_ char *prefix = NULL;

        REQUIRE(asprintf(&prefix, "%s: ", tmpdir) > 0);
        CHECK(config_load(tmpdir, &c, &e) < 0);
        CHECK(c == NULL);
        REQUIRE_UINT(e.n_msgs, 1);
        CHECK_PREFIX(e.msgs[0], prefix);
        CHECK_CONTAINS(e.msgs[0], "not a regular file");
        config_errors_done(&e);
}

/* A NUL byte is refused (inih would end the line there), and like every
 * other error it names FILE:LINE. */
static void test_load_nul(void) {
        static const char text[] = "[database]\npath = /db\n[map m]\noutput = /o\0/x\nquery = SELECT 1, 2\n";
        _cleanup_free_ char *p = write_conf("nul.conf", text, sizeof(text) - 1, 0644);
        _cleanup_free_ char *prefix = NULL;
        struct config_errors e = {0};
        struct config *c = NULL;

        REQUIRE(asprintf(&prefix, "%s:4: ", p) > 0);
        CHECK_INT(config_load(p, &c, &e), -EINVAL);
        CHECK(c == NULL);
        REQUIRE_UINT(e.n_msgs, 1);
        CHECK_CONTAINS(e.msgs[0], "NUL byte");
        CHECK_PREFIX(e.msgs[0], prefix);
        config_errors_done(&e);
}

int main(void) {
        RUN(test_full_config);
        RUN(test_defaults);
        RUN(test_valid_variants);
        RUN(test_unknown_section);
        RUN(test_unknown_keys);
        RUN(test_missing_required);
        RUN(test_relative_output);
        RUN(test_bad_numbers);
        RUN(test_hook_log_keys);
        RUN(test_bad_mode);
        RUN(test_limits);
        RUN(test_bad_enums);
        RUN(test_reload_references);
        RUN(test_same_output);
        RUN(test_same_output_spelled_differently);
        RUN(test_comment_would_cut);
        RUN(test_duplicates);
        RUN(test_key_outside_section);
        RUN(test_syntax);
        RUN(test_long_line);
        RUN(test_longest_line);
        RUN(test_continuation);
        RUN(test_continuation_not_allowed);
        RUN(test_several_errors);
        RUN(test_max_delay_shorter);
        RUN(test_owner_group);
        RUN(test_crlf);
        RUN(test_errors_accumulate);
        RUN(test_long_section_names);
        RUN(test_bom);

        tmpdir = test_mkdtemp();
        RUN(test_load_ok);
        RUN(test_load_errors_name_file);
        RUN(test_load_writable);
        RUN(test_load_missing);
        RUN(test_load_directory);
        RUN(test_load_nul);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
