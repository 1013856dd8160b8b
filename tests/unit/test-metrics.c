/* Unit tests of metrics.h: counters and gauges after cycles (changed,
 * unchanged, failed maps; an unreadable database), hooks, maps dropped by
 * a new config, the PostgreSQL gauges only when set, the Prometheus text
 * format (HELP and TYPE before each family, one sample a line), and the
 * file itself (mode 0644, replaced atomically, no temporary file left, an
 * error naming it when its directory is missing). */
#include "metrics.h"

#include <dirent.h>
#include <time.h>

#include "log.h"
#include "util.h"

#include "test.h"

static char *tmpdir;

static struct config *make_config(const char *maps) {
        char text[2048];
        size_t n = (size_t)snprintf(text, sizeof(text), "[database]\npath = /db\n");
        struct config_errors e = {0};
        struct config *c = NULL;

        for (const char *p = maps; *p; p++)
                n += (size_t)snprintf(text + n, sizeof(text) - n, "[map %c]\noutput = /out/%c\nquery = SELECT 1, 2\n",
                                      *p, *p);
        if (config_parse_string("t.conf", text, &c, &e) < 0)
                abort();
        config_errors_done(&e);
        return c;
}

struct fake_cycle {
        struct sync_cycle cy;
        struct map_result res[8];
};

static void fake(struct fake_cycle *f, const struct config *c, const char *status) {
        *f = (struct fake_cycle){0};
        f->cy.config = c;
        f->cy.results = f->res;
        for (size_t i = 0; i < c->n_maps; i++) {
                f->res[i].status = status[i] == 'C' ? MAP_CHANGED : status[i] == 'F' ? MAP_FAILED : MAP_UNCHANGED;
                f->res[i].rows = 10 * (i + 1);
                f->res[i].bytes = 100 * (i + 1);
        }
}

/* The value of the sample line starting with `sample ` in text, or -1. */
static double sample(const char *text, const char *name) {
        size_t n = strlen(name);

        for (const char *p = text; p && *p;) {
                if (strncmp(p, name, n) == 0 && p[n] == ' ')
                        return strtod(p + n + 1, NULL);
                p = strchr(p, '\n');
                p = p ? p + 1 : NULL;
        }
        return -1;
}

static char *write_and_read(struct metrics *m, unsigned owed) {
        _cleanup_free_ char *path = test_path(tmpdir, "metrics.prom");

        if (metrics_write(m, path, owed) < 0)
                return NULL;
        return test_read_file(path, NULL);
}

static void test_counters(void) {
        struct config *c = make_config("abc");
        struct metrics *m = NULL;
        struct fake_cycle f;
        char *text;
        double now = (double)time(NULL);

        REQUIRE_INT(metrics_new(&m), 0);
        fake(&f, c, "C..");
        metrics_cycle(m, c, &f.cy, 1500000);
        fake(&f, c, "CF.");
        metrics_cycle(m, c, &f.cy, 250000);
        metrics_cycle(m, c, NULL, 1000);
        metrics_hook(m, "a", true);
        metrics_hook(m, "a", false);
        metrics_hook(m, "reload postfix", true);
        text = write_and_read(m, 3);
        REQUIRE(text);
        CHECK_UINT(sample(text, "mapsyncd_syncs_total"), 3);
        CHECK_UINT(sample(text, "mapsyncd_sync_failures_total"), 2);
        CHECK_UINT(sample(text, "mapsyncd_database_available"), 0);
        CHECK(sample(text, "mapsyncd_sync_duration_seconds") == 0.001);
        CHECK(sample(text, "mapsyncd_last_success_timestamp_seconds") >= now - 5);
        CHECK(sample(text, "mapsyncd_last_success_timestamp_seconds") <= now + 5);
        CHECK_UINT(sample(text, "mapsyncd_hooks_owed"), 3);
        CHECK_UINT(sample(text, "mapsyncd_map_rows{map=\"a\"}"), 10);
        CHECK_UINT(sample(text, "mapsyncd_map_bytes{map=\"c\"}"), 300);
        CHECK_UINT(sample(text, "mapsyncd_map_replacements_total{map=\"a\"}"), 2);
        CHECK_UINT(sample(text, "mapsyncd_map_replacements_total{map=\"b\"}"), 0);
        CHECK_UINT(sample(text, "mapsyncd_map_failed{map=\"b\"}"), 1);
        CHECK_UINT(sample(text, "mapsyncd_map_failed{map=\"a\"}"), 0);
        CHECK(sample(text, "mapsyncd_map_last_change_timestamp_seconds{map=\"a\"}") >= now - 5);
        CHECK(sample(text, "mapsyncd_map_last_change_timestamp_seconds{map=\"c\"}") == 0);
        CHECK_UINT(sample(text, "mapsyncd_hook_runs_total{hook=\"a\"}"), 2);
        CHECK_UINT(sample(text, "mapsyncd_hook_failures_total{hook=\"a\"}"), 1);
        CHECK_UINT(sample(text, "mapsyncd_hook_runs_total{hook=\"reload postfix\"}"), 1);
        CHECK_UINT(sample(text, "mapsyncd_hook_failures_total{hook=\"reload postfix\"}"), 0);
        /* Not PostgreSQL: no listening gauges. */
        CHECK(!strstr(text, "mapsyncd_database_listening"));
        free(text);

        /* A good cycle: available again, last success now. */
        fake(&f, c, "...");
        metrics_cycle(m, c, &f.cy, 1000);
        metrics_listening(m, true, 3);
        text = write_and_read(m, 0);
        REQUIRE(text);
        CHECK_UINT(sample(text, "mapsyncd_database_available"), 1);
        CHECK_UINT(sample(text, "mapsyncd_sync_failures_total"), 2);
        CHECK_UINT(sample(text, "mapsyncd_map_failed{map=\"b\"}"), 0);
        CHECK_UINT(sample(text, "mapsyncd_database_listening"), 1);
        CHECK_UINT(sample(text, "mapsyncd_database_reconnects_total"), 2);
        free(text);
        metrics_free(m);
        config_free(c);
}

static void test_maps_of_the_current_config_only(void) {
        struct config *c = make_config("abc"), *c2 = make_config("ca");
        struct metrics *m = NULL;
        struct fake_cycle f;
        char *text;

        REQUIRE_INT(metrics_new(&m), 0);
        fake(&f, c, "CCC");
        metrics_cycle(m, c, &f.cy, 1000);
        fake(&f, c2, "..");
        metrics_cycle(m, c2, &f.cy, 1000);
        text = write_and_read(m, 0);
        REQUIRE(text);
        CHECK(!strstr(text, "map=\"b\""));
        /* c is now the first map: its rows come from result 0. */
        CHECK_UINT(sample(text, "mapsyncd_map_rows{map=\"c\"}"), 10);
        CHECK_UINT(sample(text, "mapsyncd_map_replacements_total{map=\"c\"}"), 1);
        free(text);
        metrics_free(m);
        config_free(c);
        config_free(c2);
}

/* Every sample's family has # HELP and # TYPE lines before it. */
static void test_format(void) {
        struct config *c = make_config("ab");
        struct metrics *m = NULL;
        struct fake_cycle f;
        char *text, *save = NULL, family[128] = "";

        REQUIRE_INT(metrics_new(&m), 0);
        fake(&f, c, "C.");
        metrics_cycle(m, c, &f.cy, 1000);
        metrics_hook(m, "a", true);
        text = write_and_read(m, 1);
        REQUIRE(text);
        CHECK(text[strlen(text) - 1] == '\n');
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                size_t n;
                if (strncmp(line, "# HELP ", 7) == 0) {
                        n = strcspn(line + 7, " ");
                        snprintf(family, sizeof(family), "%.*s", (int)n, line + 7);
                        continue;
                }
                if (strncmp(line, "# TYPE ", 7) == 0) {
                        CHECK_PREFIX(line + 7, family);
                        CHECK(strstr(line, " gauge") || strstr(line, " counter"));
                        continue;
                }
                n = strcspn(line, "{ ");
                if (!CHECK(family[0] && strlen(family) == n && strncmp(line, family, n) == 0))
                        fprintf(stderr, "    line: %s (family %s)\n", line, family);
                CHECK(strchr(line, ' '));
        }
        free(text);
        metrics_free(m);
        config_free(c);
}

static void test_file(void) {
        _cleanup_free_ char *path = test_path(tmpdir, "m.prom"), *missing = test_path(tmpdir, "nodir/m.prom");
        struct metrics *m = NULL;
        struct stat st;
        DIR *dir;
        unsigned n = 0;

        REQUIRE_INT(metrics_new(&m), 0);
        CHECK_INT(metrics_write(m, path, 0), 0);
        REQUIRE(stat(path, &st) == 0);
        CHECK_UINT(st.st_mode & 07777, 0644);
        /* Replaced, not rewritten. */
        {
                ino_t ino = st.st_ino;
                CHECK_INT(metrics_write(m, path, 0), 0);
                REQUIRE(stat(path, &st) == 0);
                CHECK(st.st_ino != ino);
        }
        CHECK_INT(metrics_write(m, missing, 0), -ENOENT);
        dir = opendir(tmpdir);
        REQUIRE(dir);
        for (struct dirent *e; (e = readdir(dir));)
                n += e->d_name[0] == '.' && strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
        closedir(dir);
        CHECK_UINT(n, 0); /* no temporary file left */
        metrics_free(m);
        CHECK(metrics_free(NULL) == NULL);
}

int main(void) {
        log_init(LOG_CRIT);
        tmpdir = test_mkdtemp();
        RUN(test_counters);
        RUN(test_maps_of_the_current_config_only);
        RUN(test_format);
        RUN(test_file);
        test_rm_rf(tmpdir);
        free(tmpdir);
        return test_end();
}
