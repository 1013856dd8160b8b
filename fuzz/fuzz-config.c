/* libFuzzer target: the configuration parser on arbitrary text.
 *
 * Properties: nothing crashes or leaks; a refused text gets at least one
 * message and every message starts with "NAME:LINE: " with LINE at most
 * one past the text's last line; an accepted text gives a configuration
 * that keeps the promises the rest of mapsyncd relies on (a database path,
 * at least one map, each with an absolute output file path and a query,
 * distinct outputs, reload indices in range, max_delay_ms >= debounce_ms,
 * absolute state_dir, valid names). */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

#define NAME "fuzz.conf"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        log_init(LOG_EMERG - 1);
        return 0;
}

static void fail(const char *what, const char *detail) {
        fprintf(stderr, "config property violated: %s (%s)\n", what, detail ? detail : "");
        abort();
}

static bool name_ok(const char *s) {
        if (!s || !*s)
                return false;
        for (; *s; s++)
                if (!isalnum((unsigned char)*s) && !strchr("_.-", *s))
                        return false;
        return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct config_errors errors = {};
        struct config *c = NULL;
        char *text;
        unsigned n_lines = 1;
        int r;

        if (size > 65536)
                return 0;
        text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';
        for (size_t i = 0; i < size; i++)
                n_lines += text[i] == '\n';

        r = config_parse_string(NAME, text, &c, &errors);
        if (r == 0) {
                if (errors.n_msgs != 0)
                        fail("accepted with messages", errors.msgs[0]);
                if (!c || !c->db_path || !*c->db_path)
                        fail("no database path", NULL);
                if (c->n_maps == 0)
                        fail("no map", NULL);
                if (c->max_delay_ms < c->debounce_ms)
                        fail("max_delay_ms < debounce_ms", NULL);
                if (!c->state_dir || c->state_dir[0] != '/')
                        fail("state_dir not absolute", c->state_dir);
                if (c->hook_timeout_s == 0)
                        fail("hook_timeout_s 0", NULL);
                for (size_t i = 0; i < c->n_maps; i++) {
                        const struct map_config *m = &c->maps[i];
                        size_t n = m->output ? strlen(m->output) : 0;
                        if (!name_ok(m->name))
                                fail("map name", m->name);
                        if (!m->output || m->output[0] != '/' || m->output[n - 1] == '/')
                                fail("output not an absolute file path", m->output);
                        if (!m->query || !*m->query)
                                fail("no query", m->name);
                        if (m->mode > 07777)
                                fail("mode", m->name);
                        for (size_t k = 0; k < m->n_reloads; k++)
                                if (m->reloads[k] >= c->n_reloads)
                                        fail("reload index out of range", m->name);
                        for (size_t j = 0; j < i; j++)
                                if (strcmp(c->maps[j].output, m->output) == 0)
                                        fail("two maps write one file", m->output);
                        if (config_find_map(c, m->name) == NULL)
                                fail("config_find_map", m->name);
                }
                for (size_t i = 0; i < c->n_reloads; i++)
                        if (!name_ok(c->reloads[i].name) || !c->reloads[i].command || !*c->reloads[i].command)
                                fail("reload without a name or command", c->reloads[i].name);
                config_free(c);
        } else {
                if (r != -EINVAL && r != -ENOMEM)
                        fail("unexpected return value", NULL);
                if (c)
                        fail("*ret set on failure", NULL);
                if (r == -EINVAL && errors.n_msgs == 0)
                        fail("refused without a message", NULL);
                for (size_t i = 0; i < errors.n_msgs; i++) {
                        const char *msg = errors.msgs[i], *p = msg + strlen(NAME ":");
                        char *end;
                        unsigned long line;

                        if (strncmp(msg, NAME ":", strlen(NAME ":")) != 0)
                                fail("message without FILE:", msg);
                        line = strtoul(p, &end, 10);
                        if (end == p || end[0] != ':' || end[1] != ' ')
                                fail("message without LINE:", msg);
                        if (line > n_lines + 1)
                                fail("line number past the end of the text", msg);
                        if (strchr(msg, '\n'))
                                fail("newline inside a message", msg);
                }
        }
        config_errors_done(&errors);
        free(text);
        return 0;
}
