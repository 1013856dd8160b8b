#!/usr/bin/env python3
"""mapsyncd --once against a real PostgreSQL 15 cluster made by the test:
byte-identical maps from PostgreSQL and SQLite for the same rows (hostile
keys included), invalid rows, one snapshot under a concurrent writer,
hooks, a change of no rendered column, conninfo and passfile rules, and
how it fails."""

import os
import re
import subprocess
import sys
import threading
import time
import unittest

import harness
import pgcluster
from harness import MAPS, read

CLUSTER = None

# Rows where PostgreSQL's locale and mapsyncd's byte order part: upper-case
# non-ASCII (PostgreSQL's lower() would fold it, SQLite's does not), keys
# that ICU's en-US collation sorts otherwise than their bytes (punctuation,
# case, digits), values whose order decides the joined alias line, and
# a passwd key repeated in another case (the first by value order wins).
EXTRA_ALIASES = [
    ("\u00c9mile@d0001.example", "e1@external.example"),
    ("\u00e9mile@d0001.example", "e2@external.example"),
    ("a-b@d0001.example", "z@external.example"),
    ("ab@d0001.example", "y@external.example"),
    ("B@d0001.example", "x@external.example"),
    ("a10@d0001.example", "b@external.example"),
    ("a9@d0001.example", "B@external.example"),
    ("sorted@d0001.example", "b-c@external.example"),
    ("sorted@d0001.example", "bc@external.example"),
    ("sorted@d0001.example", "B@external.example"),
    ("sorted@d0001.example", "\u00c9@external.example"),
    ("catch@D0001.EXAMPLE", "all@external.example"),
    ("@d0001.example", "catchall@external.example"),
    ("\u0130stanbul@d0001.example", "i@external.example"),
]


def setUpModule():
    global CLUSTER
    CLUSTER = pgcluster.Cluster("once").start()


def tearDownModule():
    if CLUSTER:
        CLUSTER.cleanup()


class PgCase(harness.TestCase):
    """A fresh database 'mail' in the shared cluster, filled with the rows
    of the SQLite database the harness generated (the two hold the same
    rows)."""

    ENV_ARGS = {"accounts": 200}
    EXTRA = ()

    def setUp(self):
        super().setUp()
        self.pg = CLUSTER
        self.pg.sql("DROP DATABASE IF EXISTS mail WITH (FORCE)", dbname="postgres")
        if self.EXTRA:
            c = self.env.connect()
            try:
                for src, dst in self.EXTRA:
                    c.execute("INSERT INTO aliases (domain_id, source, destination, active) VALUES (1, ?, ?, 1)",
                              (src, dst))
            finally:
                c.close()
        self.pg.create_panel_db()
        self.dropped = self.pg.copy_from_sqlite(self.env.db)
        self.passfile = self.pg.write_passfile(os.path.join(self.env.dir, "pgpass"))

    def write_pg_config(self, **kw):
        return self.env.write_config(pgcluster.pg_config(self.env, self.pg, passfile=self.passfile, **kw))

    def run_sqlite_into(self, out):
        os.makedirs(out, exist_ok=True)
        conf = os.path.join(self.env.dir, "sqlite.conf")
        with open(conf, "w") as f:
            f.write(pgcluster.sqlite_config(self.env, out))
        os.chmod(conf, 0o644)
        r = subprocess.run(harness.WRAPPER + [harness.MAPSYNCD, "-c", conf, "--once"], capture_output=True,
                           text=True, timeout=60)
        harness.check_wrapper_exit(r.returncode, r.stderr)
        return r


class Canonical(PgCase):
    ENV_ARGS = {"accounts": 300, "hostile": True}
    EXTRA = EXTRA_ALIASES

    def test_same_rows_same_bytes_as_sqlite(self):
        self.write_pg_config(hooks=False)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        lite_out = os.path.join(self.env.dir, "out-sqlite")
        rl = self.run_sqlite_into(lite_out)
        self.assertEqual(rl.returncode, 0, rl.stderr)
        for m in MAPS:
            pg_bytes = read(self.env.output(m), "rb")
            lite_bytes = read(os.path.join(lite_out, m), "rb")
            self.assertGreater(len(pg_bytes), 0, m)
            self.assertEqual(pg_bytes, lite_bytes, "map %s: PostgreSQL and SQLite differ" % m)
        # The rows that matter are there, as mapsyncd's rules make them.
        aliases = read(self.env.output("virtual_aliases"))
        self.assertIn("\u00c9mile@d0001.example\te1@external.example\n", aliases)
        self.assertIn("\u00e9mile@d0001.example\te2@external.example\n", aliases)
        self.assertIn("sorted@d0001.example\tB@external.example, b-c@external.example, bc@external.example, "
                      "\u00c9@external.example\n", aliases)
        self.assertIn("catch@d0001.example\tall@external.example\n", aliases)
        keys = [line.split("\t")[0].encode() for line in aliases.splitlines()]
        self.assertEqual(keys, sorted(keys), "keys not in byte order")
        # The hostile rows PostgreSQL can hold reach it; those it cannot
        # (NUL, BLOB, text quota) were left out of both databases.
        self.assertGreater(self.dropped, 0)
        self.assertLess(self.dropped, 8)
        # The same rows are reported as skipped, by key, by both.
        skipped = lambda err: sorted(re.sub(r"^.*?(\S+: skipped row)", r"\1", line)
                                     for line in err.splitlines() if "skipped row" in line)
        self.assertTrue(skipped(r.stderr))
        self.assertEqual(skipped(r.stderr), skipped(rl.stderr))
        self.assertIn('virtual_aliases: skipped row with key "inject-value@d0001.example": value holds a control',
                      r.stderr)

    def test_on_invalid_fail_keeps_the_old_map(self):
        self.write_pg_config(hooks=False)
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = read(self.env.output("virtual_aliases"), "rb")
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'new@d0001.example', "
                    "'ok@external.example')")
        self.write_pg_config(hooks=False, map_extra={"virtual_aliases": "on_invalid = fail"})
        text = read(self.env.conf).replace("on_invalid = skip\non_invalid = fail", "on_invalid = fail")
        text = re.sub(r"(\[map virtual_aliases\]\non_invalid = fail\n(?:.*\n)*?)on_invalid = skip\n", r"\1", text)
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("on_invalid = fail: kept", r.stderr)
        self.assertIn('virtual_aliases: invalid row with key "tab\\x09key@d0001.example"', r.stderr)
        self.assertEqual(read(self.env.output("virtual_aliases"), "rb"), before)


class Rules(PgCase):

    def test_maps_match_the_schema_rules(self):
        self.write_pg_config()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_maps_match_db()
        self.assertEqual(sorted(h[0] for h in self.env.hooks_run()), sorted(MAPS))

    def test_alias_change_runs_one_hook_and_a_noop_change_none(self):
        self.write_pg_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = self.env.stat_outputs()
        os.unlink(self.env.hook_log)
        # No rendered column changes: nothing is written, no hook runs.
        self.pg.sql("UPDATE email_accounts SET updated_at = now()")
        self.pg.sql("UPDATE aliases SET destination = destination")
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.env.stat_outputs()
        for m in MAPS:
            self.assertEqual((after[m].st_ino, after[m].st_mtime_ns), (before[m].st_ino, before[m].st_mtime_ns), m)
        self.assertEqual(self.env.hooks_run(), [])
        # One alias destination: only virtual_aliases and its hook.
        g = harness.gendb
        self.pg.sql("UPDATE aliases SET destination = 'moved@external.example' WHERE source = %s "
                    "AND destination = %s", (g.MULTI_ALIAS, g.MULTI_ALIAS_DESTINATIONS[0]))
        self.env.sql("UPDATE aliases SET destination = 'moved@external.example' WHERE source = ? "
                     "AND destination = ?", (g.MULTI_ALIAS, g.MULTI_ALIAS_DESTINATIONS[0]))
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        after2 = self.env.stat_outputs()
        for m in MAPS:
            self.assertEqual(after2[m].st_ino != after[m].st_ino, m == "virtual_aliases", m)
        self.assertEqual([h[0] for h in self.env.hooks_run()], ["virtual_aliases"])
        self.assert_maps_match_db()

    def test_bad_query_fails_that_map_only(self):
        self.write_pg_config(hooks=False)
        text = read(self.env.conf).replace("SELECT domain, 'OK' FROM domains WHERE active",
                                           "SELECT domain, 'OK' FROM no_such_table")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"virtual_domains: query failed: .*no_such_table")
        self.assertFalse(os.path.exists(self.env.output("virtual_domains")))
        want = harness.expected_maps(self.env.db)
        for m in ("vmailbox", "virtual_aliases", "passwd"):
            self.assertEqual(read(self.env.output(m)), want[m], m)

    def test_three_columns_refused(self):
        self.write_pg_config(hooks=False)
        text = read(self.env.conf).replace("SELECT domain, 'OK' FROM domains WHERE active",
                                           "SELECT domain, 'OK', id FROM domains WHERE active")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("virtual_domains: query failed: the query must return exactly two columns (key, value)",
                      r.stderr)

    def test_a_query_cannot_write(self):
        self.write_pg_config(hooks=False)
        text = read(self.env.conf).replace(
            "SELECT domain, 'OK' FROM domains WHERE active",
            "WITH x AS (DELETE FROM domains RETURNING domain) SELECT domain, 'OK' FROM x")
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertIn("virtual_domains: query failed", r.stderr)
        self.assertGreater(self.pg.sql("SELECT count(*) FROM domains")[0][0], 0)


class Locks(PgCase):

    def test_migration_lock_fails_the_cycle_after_busy_timeout(self):
        """A migration's ACCESS EXCLUSIVE lock on a table: the map reading it
        fails after busy_timeout_ms (lock_timeout) instead of holding the
        cycle, and the daemon's event loop, until the migration ends."""
        text = pgcluster.pg_config(self.env, self.pg, passfile=self.passfile, hooks=False)
        self.env.write_config(text.replace("busy_timeout_ms = 5000\n", "busy_timeout_ms = 300\n"))
        holder = self.pg.connect(autocommit=False)
        try:
            holder.cursor().execute("LOCK TABLE aliases IN ACCESS EXCLUSIVE MODE")
            t0 = time.monotonic()
            r = self.env.run("--once", timeout=60)
            self.assertLess(time.monotonic() - t0, 30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertRegex(r.stderr, r"virtual_aliases: query failed: .*lock timeout")
            self.assertFalse(os.path.exists(self.env.output("virtual_aliases")))
            for m in ("virtual_domains", "vmailbox", "passwd"):
                self.assertTrue(os.path.exists(self.env.output(m)), m)
        finally:
            holder.rollback()
            holder.close()
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_maps_match_db()


class Snapshot(PgCase):
    """A writer commits as fast as it can; every transaction sets account
    1's quota and the destination of one alias row to one number n. The
    maps of one run show one n: one snapshot for all queries."""

    def test_one_snapshot_under_a_concurrent_writer(self):
        g = harness.gendb
        self.pg.sql("UPDATE aliases SET destination = 'n0@external.example' WHERE source = %s "
                    "AND destination = %s", (g.MULTI_ALIAS, g.MULTI_ALIAS_DESTINATIONS[0]))
        self.pg.sql("UPDATE email_accounts SET quota = 0 WHERE email = %s", (g.ACTIVE_ACCOUNT,))
        self.write_pg_config(hooks=False)
        stop = threading.Event()
        errors = []

        def writer():
            try:
                c = self.pg.connect(autocommit=False)
                cur = c.cursor()
                n = 0
                while not stop.is_set():
                    n += 1
                    cur.execute("UPDATE email_accounts SET quota = %s WHERE email = %s", (n, g.ACTIVE_ACCOUNT))
                    cur.execute("SELECT pg_sleep(0.0005)")
                    cur.execute("UPDATE aliases SET destination = %s WHERE source = %s AND destination LIKE 'n%%'",
                                ("n%d@external.example" % n, g.MULTI_ALIAS))
                    c.commit()
                c.close()
            except Exception as e:  # reported by the test
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        seen = set()
        try:
            for _ in range(25):
                r = self.env.run("--once")
                self.assertEqual(r.returncode, 0, r.stderr)
                quota = re.search(r"(?m)^%s:[^\n]*?(?:storage=(\d+)M)?$" % re.escape(g.ACTIVE_ACCOUNT),
                                  read(self.env.output("passwd"))).group(1) or "0"
                dest = re.search(r"(?m)^%s\t.*\bn(\d+)@external\.example" % re.escape(g.MULTI_ALIAS),
                                 read(self.env.output("virtual_aliases"))).group(1)
                self.assertEqual(quota, dest, "passwd and virtual_aliases come from two snapshots")
                seen.add(quota)
        finally:
            stop.set()
            t.join(10)
        self.assertEqual(errors, [])
        self.assertGreater(len(seen), 5, "the writer did not move between runs")


class Connection(PgCase):

    def test_password_in_conninfo_refused(self):
        for conninfo in ("host=127.0.0.1 dbname=mail user=mapsyncd password=secret",
                         "postgresql://mapsyncd:secret@127.0.0.1/mail"):
            self.env.write_config(pgcluster.pg_config(self.env, self.pg, conninfo=conninfo))
            r = self.env.run("--check")
            self.assertEqual(r.returncode, 1 if r.returncode == 1 else r.returncode)
            self.assertNotEqual(r.returncode, 0)
            self.assertRegex(r.stderr, r"mapsyncd\.conf:\d+: conninfo: holds a password")
            self.assertNotIn("secret", r.stderr)

    def test_check_and_dry_run(self):
        self.write_pg_config(hooks=False)
        r = self.env.run("--check")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK: 4 maps, database postgresql:host=127.0.0.1", r.stdout)
        r = self.env.run("--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("vmailbox: would change", r.stdout)
        self.assertEqual(os.listdir(self.env.out), [])

    def test_without_passfile_authentication_fails(self):
        self.env.write_config(pgcluster.pg_config(self.env, self.pg, hooks=False))
        r = self.env.run("--once", env={"PGPASSFILE": "/nonexistent", "HOME": self.env.dir})
        self.assertEqual(r.returncode, 1)
        self.assertIn("database postgresql:host=127.0.0.1", r.stderr)
        self.assertRegex(r.stderr, r"unavailable: .*(password|authentication)")
        self.assertEqual(os.listdir(self.env.out), [])

    def test_server_down_keeps_the_maps(self):
        self.write_pg_config(hooks=False)
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = {m: read(self.env.output(m), "rb") for m in MAPS}
        text = re.sub(r"port=\d+", "port=%d" % pgcluster.free_port(), read(self.env.conf))
        self.env.write_config(text)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, r"database postgresql:.* unavailable: .*(refused|connect)")
        self.assertEqual({m: read(self.env.output(m), "rb") for m in MAPS}, before)

    def test_config_errors(self):
        cases = {
            "driver = mysql": "driver = mysql: expected sqlite or postgresql",
            "channel = Bad-Name": "channel = Bad-Name: expected a lower-case SQL identifier",
            "passfile = relative/pgpass": "passfile = relative/pgpass is not an absolute path",
            "conninfo = host='unterminated": "conninfo: not a libpq connection string",
        }
        base = pgcluster.pg_config(self.env, self.pg)
        for line, msg in cases.items():
            key = line.split(" = ")[0]
            text = re.sub(r"(?m)^%s = .*\n" % key, "", base).replace("[database]\n", "[database]\n%s\n" % line)
            self.env.write_config(text)
            r = self.env.run("--check")
            self.assertNotEqual(r.returncode, 0, line)
            self.assertIn(msg, r.stderr, line)
        text = base.replace("driver = postgresql\n", "")
        self.env.write_config(text)
        r = self.env.run("--check")
        self.assertIn("conninfo, passfile and channel are for driver = postgresql only", r.stderr)
        text = re.sub(r"(?m)^conninfo = .*\n", "", base)
        self.env.write_config(text)
        self.assertIn("driver = postgresql needs conninfo", self.env.run("--check").stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
