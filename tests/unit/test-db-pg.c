/* Unit tests of db-pg.h and the postgresql side of config.h, without a
 * server: conninfo rules (no password in the configuration's text), the
 * query wrapper, the [database] keys, and a connection refused. The
 * PostgreSQL integration tests (tests/integration/test_pg_*.py) drive the
 * rest against a real cluster. */
#include "db-pg.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "db.h"
#include "util.h"

#include "test.h"

static void test_conninfo_rules(void) {
        CHECK(pg_conninfo_problem("host=/run/postgresql dbname=mail user=mapsyncd") == NULL);
        CHECK(pg_conninfo_problem("postgresql://mapsyncd@db.example:5433/mail?sslmode=verify-full") == NULL);
        CHECK(pg_conninfo_problem("host=db passfile=/etc/mapsyncd/pgpass") == NULL);
        CHECK(pg_conninfo_problem("") == NULL);

        CHECK_CONTAINS(pg_conninfo_problem("host=db password=secret"), "holds a password");
        CHECK_CONTAINS(pg_conninfo_problem("host=db password=''"), "holds a password");
        CHECK_CONTAINS(pg_conninfo_problem("postgresql://mapsyncd:secret@db/mail"), "holds a password");
        CHECK_CONTAINS(pg_conninfo_problem("postgresql://db/mail?password=secret"), "holds a password");
        /* The pass phrase of a client key is a password too. */
        CHECK_CONTAINS(pg_conninfo_problem("host=db sslkey=/k sslpassword=secret"), "holds a password");
        /* The message never repeats the password. */
        CHECK(!strstr(pg_conninfo_problem("host=db password=secret"), "secret"));

        CHECK_PREFIX(pg_conninfo_problem("host='unterminated"), "not a libpq connection string: ");
        CHECK_CONTAINS(pg_conninfo_problem("colour=red"), "invalid connection option \"colour\"");
        /* No trailing newline from libpq in a message. */
        const char *m = pg_conninfo_problem("nonsense");
        CHECK(m && m[strlen(m) - 1] != '\n');
}

static void test_wrap_query(void) {
        _cleanup_free_ char *w = pg_wrap_query("SELECT a, b FROM t;  \n;");
        _cleanup_free_ char *w2 = pg_wrap_query("SELECT a, b FROM t");

        CHECK_STR(w, w2);
        CHECK_PREFIX(w, "WITH mapsyncd_q(k, v) AS (\nSELECT a, b FROM t\n)\n");
        /* Byte order, ASCII-only lower-casing of the key, NULLs first. */
        CHECK_CONTAINS(w, "SELECT k::text, v::text FROM mapsyncd_q ORDER BY lower(k::text COLLATE \"C\") "
                          "COLLATE \"C\" NULLS FIRST, v::text COLLATE \"C\" NULLS FIRST");
}

static struct config *parse(const char *text, struct config_errors *e) {
        struct config *c = NULL;

        if (config_parse_string("t.conf", text, &c, e) < 0)
                return NULL;
        return c;
}

#define MAP "[map m]\noutput = /out/m\nquery = SELECT 1, 2\n"

static void test_config_keys(void) {
        struct config_errors e = {0};
        struct config *c;

        c = parse("[database]\ndriver = postgresql\nconninfo = host=/run/postgresql dbname=mail\n" MAP, &e);
        CHECK(c);
        if (c) {
                CHECK_INT(c->db_driver, DB_DRIVER_POSTGRESQL);
                CHECK_STR(c->pg_conninfo, "host=/run/postgresql dbname=mail");
                CHECK_STR(c->pg_channel, "mapsyncd");
                CHECK(c->pg_passfile == NULL);
                CHECK_STR(c->db_path, "postgresql:host=/run/postgresql dbname=mail");
                config_free(c);
        }
        c = parse("[database]\ndriver = postgresql\nconninfo = dbname=mail\npassfile = /etc/pgpass\n"
                  "channel = mail_maps_2\n" MAP,
                  &e);
        CHECK(c);
        if (c) {
                CHECK_STR(c->pg_passfile, "/etc/pgpass");
                CHECK_STR(c->pg_channel, "mail_maps_2");
                config_free(c);
        }
        c = parse("[database]\npath = /db\n" MAP, &e);
        CHECK(c);
        if (c) {
                CHECK_INT(c->db_driver, DB_DRIVER_SQLITE);
                CHECK(c->pg_channel == NULL);
                config_free(c);
        }
        c = parse("[database]\ndriver = sqlite\npath = /db\n" MAP, &e);
        CHECK(c);
        config_free(c);
        CHECK_UINT(e.n_msgs, 0);
        config_errors_done(&e);
}

static void expect_error(int line, const char *text, const char *msg) {
        struct config_errors e = {0};
        struct config *c = parse(text, &e);
        bool found = false;

        test_check(c == NULL, __FILE__, line, "config refused");
        config_free(c);
        for (size_t i = 0; i < e.n_msgs; i++)
                found |= strstr(e.msgs[i], msg) != NULL;
        if (!test_check(found, __FILE__, line, msg))
                for (size_t i = 0; i < e.n_msgs; i++)
                        fprintf(stderr, "    got: %s\n", e.msgs[i]);
        config_errors_done(&e);
}

#define EXPECT_ERROR(text, msg) expect_error(__LINE__, (text), (msg))

static void test_config_errors(void) {
        EXPECT_ERROR("[database]\ndriver = mysql\npath = /db\n" MAP, "t.conf:2: driver = mysql: expected sqlite or");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = host=db password=secret\n" MAP,
                     "t.conf:3: conninfo: holds a password");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = postgresql://u:secret@db/mail\n" MAP,
                     "t.conf:3: conninfo: holds a password");
        EXPECT_ERROR("[database]\ndriver = postgresql\n" MAP,
                     "t.conf:1: [database] driver = postgresql needs conninfo");
        EXPECT_ERROR("[database]\ndriver = postgresql\npath = /db\nconninfo = dbname=x\n" MAP,
                     "[database] path is for driver = sqlite");
        EXPECT_ERROR("[database]\npath = /db\nconninfo = dbname=x\n" MAP,
                     "conninfo, passfile and channel are for driver = postgresql only");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = dbname=x\npassfile = pgpass\n" MAP,
                     "t.conf:4: passfile = pgpass is not an absolute path");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = dbname=x\nchannel = Maps\n" MAP,
                     "t.conf:4: channel = Maps: expected a lower-case SQL identifier");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = dbname=x\nchannel = 1st\n" MAP, "channel = 1st");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = dbname=x\nchannel = a;b\n" MAP, "channel = a");
        EXPECT_ERROR("[database]\ndriver = postgresql\nconninfo = dbname=x\n"
                     "channel = a123456789012345678901234567890123456789012345678901234567890123\n" MAP,
                     "at most 63 bytes");
        EXPECT_ERROR("[database]\nbogus = 1\npath = /db\n" MAP,
                     "expected driver, path, busy_timeout_ms, conninfo, passfile, channel");
}

/* A loopback port nobody listens on (bound, then closed). */
static int free_port(void) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;

        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        port = ntohs(a.sin_port);
        close(fd);
        return port;
}

static void test_connection_refused(void) {
        struct config_errors e = {0};
        struct config *c;
        struct db *db = NULL;
        const char *msg = NULL;
        char text[512];
        int port = free_port(), r;

        CHECK(port > 0);
        snprintf(text, sizeof(text),
                 "[database]\ndriver = postgresql\nconninfo = host=127.0.0.1 port=%d dbname=mail connect_timeout=5\n"
                 "[map m]\noutput = /out/m\nquery = SELECT 1, 2\n",
                 port);
        c = parse(text, &e);
        CHECK(c);
        if (!c)
                return;
        r = db_open_config(c, &db, &msg);
        CHECK_INT(r, -ECONNREFUSED);
        CHECK(db == NULL);
        CHECK_CONTAINS(msg, "127.0.0.1");
        CHECK(msg && !strchr(msg, '\n'));
        config_free(c);
        config_errors_done(&e);
}

int main(void) {
        RUN(test_conninfo_rules);
        RUN(test_wrap_query);
        RUN(test_config_keys);
        RUN(test_config_errors);
        RUN(test_connection_refused);
        return test_end();
}
