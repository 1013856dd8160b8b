#!/usr/bin/env python3
"""The watching daemon on PostgreSQL: LISTEN on the channel fed by the
triggers of conf/mapsyncd-notify.sql; commits followed, a commit of no
rendered column writes nothing, a burst debounced; the database restarted
under the daemon (maps kept, STATUS and metrics say so, resync after the
reconnect, no commit lost); a commit made while mapsyncd cannot connect is
in the maps once it can."""

import os
import re
import time
import unittest

import harness
import pgcluster
from apilib import api_section, request
from harness import MAPS, read, wait_for

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 1000}
CLUSTER = None


def setUpModule():
    global CLUSTER
    CLUSTER = pgcluster.Cluster("daemon").start()


def tearDownModule():
    if CLUSTER:
        CLUSTER.cleanup()


class Base(harness.DaemonTestCase):
    ENV_ARGS = {"accounts": 200}

    def setUp(self):
        super().setUp()
        self.pg = CLUSTER
        if not self.pg.running:
            self.pg.restart_same_port()
        self.pg.sql("DROP DATABASE IF EXISTS mail WITH (FORCE)", dbname="postgres")
        self.pg.create_panel_db()
        self.pg.copy_from_sqlite(self.env.db)
        self.passfile = self.pg.write_passfile(os.path.join(self.env.dir, "pgpass"))
        self.metrics = os.path.join(self.env.dir, "metrics.prom")
        sync = dict(FAST, metrics_file=self.metrics)
        self.api = os.path.join(self.env.dir, "api.sock")
        self.env.write_config(pgcluster.pg_config(self.env, self.pg, passfile=self.passfile, sync=sync)
                              + api_section(self.api))

    def want(self):
        return pgcluster.expected_maps(self.pg, self.env.dir)

    def maps(self):
        out = {}
        for m in MAPS:
            try:
                out[m] = read(self.env.output(m))
            except FileNotFoundError:
                out[m] = None
        return out

    def wait_pg_maps(self, timeout=20):
        last = {}

        def ok():
            want = self.want()
            last["have"] = self.maps()
            last["want"] = want
            return last["have"] == want
        try:
            wait_for(ok, timeout, interval=0.05, what="maps equal to PostgreSQL's rows")
        except AssertionError:
            for m in MAPS:
                self.assertEqual(last["have"][m], last["want"][m], m)
            raise

    def start(self):
        d = self.daemon()
        d.wait_ready()
        d.wait_log(r"PostgreSQL: listening on channel mapsyncd")
        self.wait_pg_maps()
        return d

    def metric(self, name):
        m = re.search(r"(?m)^%s (\S+)$" % name, read(self.metrics))
        return m and float(m.group(1))

    def api_state(self):
        a = request(self.api, "GET", "/v1/status")
        self.assertEqual(a.status, 200, a)
        return a.json["state"]


class Follow(Base):

    def test_commits_followed_noop_writes_nothing(self):
        d = self.start()
        self.assertEqual(self.metric("mapsyncd_database_listening"), 1)
        self.assertEqual(self.api_state(), "idle")
        # POST /v1/sync: a cycle on PostgreSQL too, answered with its maps.
        a = request(self.api, "POST", "/v1/sync")
        self.assertEqual(a.status, 200, a)
        self.assertEqual(sorted(m["name"] for m in a.json["maps"]), sorted(MAPS))
        g = harness.gendb
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'new@d0001.example', "
                    "'dest@external.example')")
        hooks = len(self.env.hooks_run())
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'new2@d0001.example', "
                    "'dest@external.example')")
        self.wait_pg_maps(timeout=10)
        self.assertIn("new@d0001.example\tdest@external.example\n", read(self.env.output("virtual_aliases")))
        # The hooks of exactly the map that changed.
        wait_for(lambda: len(self.env.hooks_run()) > hooks, 10, what="virtual_aliases' hook")
        self.wait_quiet(d, 0.3)
        self.assertEqual(sorted(set(h[0] for h in self.env.hooks_run()[hooks:])), ["virtual_aliases"])
        self.pg.sql("UPDATE email_accounts SET active = false WHERE email = %s", (g.ACTIVE_ACCOUNT,))
        self.wait_pg_maps(timeout=10)
        self.assertNotIn(g.ACTIVE_ACCOUNT + ":", read(self.env.output("passwd")))
        self.wait_quiet(d, 0.5)

        # A commit of no rendered column: the notification costs one sync
        # that writes nothing and runs no hook.
        stats = {m: (s.st_ino, s.st_mtime_ns) for m, s in self.env.stat_outputs().items()}
        hooks = len(self.env.hooks_run())
        n = len(self.sync_lines(d))
        self.pg.sql("UPDATE email_accounts SET updated_at = now()")
        wait_for(lambda: len(self.sync_lines(d)) > n, 10, what="a sync after the no-op commit")
        self.wait_quiet(d, 0.5)
        self.assertTrue(all(line.split("sync: ")[1].startswith("0 changed") for line in self.sync_lines(d)[n:]))
        self.assertEqual({m: (s.st_ino, s.st_mtime_ns) for m, s in self.env.stat_outputs().items()}, stats)
        self.assertEqual(len(self.env.hooks_run()), hooks)
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(MAPS))
        # A rolled-back transaction notifies nothing.
        n = len(self.sync_lines(d))
        c = self.pg.connect(autocommit=False)
        c.cursor().execute("DELETE FROM aliases")
        c.rollback()
        c.close()
        time.sleep(0.5)
        self.assertEqual(self.sync_lines(d)[n:], [])
        self.assertEqual(d.stop(), 0)

    def test_burst_is_debounced(self):
        d = self.start()
        n = len(self.sync_lines(d))
        c = self.pg.connect()
        cur = c.cursor()
        for i in range(300):
            cur.execute("INSERT INTO aliases (domain_id, source, destination) VALUES (1, %s, 'b@external.example')",
                        ("burst%03d@d0001.example" % i,))
        c.close()
        self.wait_pg_maps(timeout=15)
        self.wait_quiet(d, 0.5)
        syncs = len(self.sync_lines(d)) - n
        self.assertGreaterEqual(syncs, 1)
        self.assertLess(syncs, 60, "300 commits cost %d syncs: no debounce" % syncs)
        self.assertEqual(d.stop(), 0)


class QueryConnection(Base):

    def test_query_connection_killed_is_made_again(self):
        """The connection that reads the maps ends (pg_terminate_backend,
        an idle-session timeout, a pooler) while LISTEN's stays: the next
        cycle makes it again at once, without a failed cycle."""
        d = self.start()
        self.wait_quiet(d, 0.3)
        killed = self.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mapsyncd' "
                             "AND application_name = 'mapsyncd' AND query NOT ILIKE 'LISTEN%'")
        self.assertEqual(len(killed), 1)
        n = len(d.log())
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'again@d0001.example', "
                    "'a@external.example')")
        self.wait_pg_maps(timeout=10)
        self.assertEqual([line for line in d.log()[n:] if "sync failed" in line or "unreadable" in line], [])
        self.assertEqual(d.stop(), 0)


class Reload(Base):

    def test_sighup_with_another_channel(self):
        d = self.start()
        text = read(self.env.conf).replace("channel = mapsyncd", "channel = other_maps")
        self.env.write_config(text)
        d.signal(__import__("signal").SIGHUP)
        d.wait_log(r"PostgreSQL: listening on channel other_maps")
        self.wait_quiet(d, 0.5)
        # The triggers still say "mapsyncd": nobody listens there now.
        n = len(self.sync_lines(d))
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'quiet@d0001.example', "
                    "'q@external.example')")
        time.sleep(1.0)
        self.assertEqual(self.sync_lines(d)[n:], [])
        self.assertNotIn("quiet@d0001.example", read(self.env.output("virtual_aliases")))
        # A NOTIFY on the new channel is heard.
        self.pg.sql("NOTIFY other_maps, 'aliases'")
        self.wait_pg_maps(timeout=10)
        self.assertEqual(d.stop(), 0)


class Restart(Base):

    def test_database_restarted_maps_kept_resync_no_commit_lost(self):
        d = self.start()
        before = self.maps()
        # A commit, then the server stops at once: its notification may or
        # may not reach mapsyncd; the sync after the reconnect has it.
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'last@d0001.example', "
                    "'before-stop@external.example')")
        self.pg.stop(mode="fast")
        d.wait_log(r"no change notifications: .*; reconnecting", timeout=20)
        wait_for(lambda: any("no change notifications" in s for s in d.notified("STATUS")), 10,
                 what="STATUS saying so")
        wait_for(lambda: self.metric("mapsyncd_database_listening") == 0, 10, what="metrics saying so")
        self.assertEqual(self.api_state(), "database unavailable")
        time.sleep(1.5)  # a few reconnect attempts fail
        self.assertEqual(d.proc.poll(), None)
        for m in MAPS:
            have = read(self.env.output(m))
            if m != "virtual_aliases":
                self.assertEqual(have, before[m], "%s changed while the database was away" % m)
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(MAPS))

        self.pg.restart_same_port()
        d.wait_log(r"PostgreSQL: listening on channel mapsyncd \(reconnected; syncing\)", timeout=30)
        self.wait_pg_maps(timeout=15)
        self.assertIn("last@d0001.example\tbefore-stop@external.example\n", read(self.env.output("virtual_aliases")))
        wait_for(lambda: self.metric("mapsyncd_database_listening") == 1, 10, what="metrics: listening again")
        self.assertGreaterEqual(self.metric("mapsyncd_database_reconnects_total"), 1)
        wait_for(lambda: not d.notified("STATUS")[-1].startswith("database"), 10, what="STATUS clear again")
        wait_for(lambda: self.api_state() == "idle", 10, what="the API's state idle again")
        # And it follows commits again.
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'after@d0001.example', "
                    "'after-restart@external.example')")
        self.wait_pg_maps(timeout=10)
        self.assertEqual(d.stop(), 0)

    def test_commit_while_disconnected_is_in_the_maps_after_reconnect(self):
        d = self.start()
        # mapsyncd's role may not log in: its sessions end, the server
        # stays up for the panel.
        self.pg.sql("ALTER ROLE mapsyncd NOLOGIN")
        self.pg.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'mapsyncd'")
        d.wait_log(r"no change notifications: .*; reconnecting", timeout=20)
        self.pg.sql("INSERT INTO aliases (domain_id, source, destination) VALUES (1, 'while-away@d0001.example', "
                    "'x@external.example')")
        g = harness.gendb
        self.pg.sql("UPDATE email_accounts SET password = %s WHERE email = %s",
                    (g.HASH_OF["rotate-one"], g.ACTIVE_ACCOUNT))
        time.sleep(1.0)
        self.assertNotIn("while-away@", read(self.env.output("virtual_aliases")))
        self.pg.sql("ALTER ROLE mapsyncd LOGIN")
        d.wait_log(r"reconnected; syncing", timeout=40)
        self.wait_pg_maps(timeout=15)
        self.assertIn("while-away@d0001.example\tx@external.example\n", read(self.env.output("virtual_aliases")))
        self.assertIn(g.HASH_OF["rotate-one"], read(self.env.output("passwd")))
        self.assertEqual(d.stop(), 0)

    def test_database_down_at_start_then_up(self):
        self.pg.stop(mode="fast")
        d = self.daemon()
        d.wait_log(r"unavailable: ", timeout=20)
        self.assertEqual(os.listdir(self.env.out), [])
        self.pg.restart_same_port()
        d.wait_log(r"PostgreSQL: listening on channel mapsyncd", timeout=40)
        self.wait_pg_maps(timeout=20)
        d.wait_ready(timeout=20)
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
