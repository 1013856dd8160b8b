#!/usr/bin/env python3
"""The watching daemon follows the database: commits of real SQLite writers
in other processes (WAL with a connection kept open, rollback journal, the
sqlite3 shell), reads that must cost no sync, a burst of 1,000 commits, and
a database replaced, deleted, created again or missing at the start."""

import math
import os
import subprocess
import sys
import time

import harness
from harness import MAPS, read, sqlite_cli, wait_for

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 1000}

# A reader in another process: for SECONDS, opens a connection, reads every
# table, closes it, and reads through a second connection that stays open.
READER = r'''
import sqlite3, sys, time
db, seconds = sys.argv[1], float(sys.argv[2])
keep = sqlite3.connect(db, timeout=30)
end = time.monotonic() + seconds
n = 0
while time.monotonic() < end:
    c = sqlite3.connect(db, timeout=30)
    for t in ("domains", "email_accounts", "aliases"):
        c.execute("SELECT * FROM %s" % t).fetchall()
    c.close()
    keep.execute("SELECT count(*) FROM email_accounts WHERE active = 1").fetchone()
    n += 1
    time.sleep(0.01)
keep.close()
print(n)
'''


class Base(harness.DaemonTestCase):

    def snapshot(self, d):
        """What must not move when nothing changes."""
        return {
            "log": len(d.log()),
            "stats": {m: (s.st_ino, s.st_mtime_ns, s.st_size) for m, s in self.env.stat_outputs().items()},
            "hooks": len(self.env.hooks_run()),
        }

    def assert_untouched(self, d, snap, allow_empty_sync=False):
        after = {m: (s.st_ino, s.st_mtime_ns, s.st_size) for m, s in self.env.stat_outputs().items()}
        self.assertEqual(after, snap["stats"], "maps were rewritten")
        self.assertEqual(self.env.hooks_run()[snap["hooks"]:], [], "hooks ran")
        new = d.log()[snap["log"]:]
        self.assertEqual([line for line in new if " replaced " in line], [], "a map was replaced")
        syncs = self.sync_lines(d, snap["log"])
        if allow_empty_sync:
            self.assertEqual([s for s in syncs if not s.split("sync: ")[1].startswith("0 changed")], [])
        else:
            self.assertEqual(syncs, [], "a sync cycle ran; log since:\n" + "\n".join(new))
        self.assertEqual(sorted(os.listdir(self.env.out)), sorted(MAPS), "temporary files left behind")

    def run_reader(self, seconds=4.0):
        r = subprocess.run([sys.executable, "-c", READER, self.env.db, str(seconds)], capture_output=True,
                           text=True, timeout=seconds + 60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(int(r.stdout), 10)
        # The CLI reads too, each its own short-lived connection.
        for _ in range(5):
            sqlite_cli(self.env.db, "SELECT count(*) FROM aliases; SELECT * FROM domains;")

    def commit_and_follow(self, write, n=3):
        """n changes through write(i), each followed by the maps."""
        for i in range(n):
            write(i)
            self.wait_maps_match_db()


class WalWriter(Base):

    def test_writer_keeping_its_connection_open(self):
        d = self.start()  # the shipped debounce_ms = 200
        w = self.writer()
        self.assertEqual(w.journal_mode, "wal")
        self.commit_and_follow(lambda i: w.execute(
            ("UPDATE email_accounts SET quota = ? WHERE id = 1", (9000 + i,))))
        # A transaction of several statements, touching several maps.
        w.execute("BEGIN",
                  ("UPDATE aliases SET destination = ? WHERE source = ? AND destination = ?",
                   ("moved@external.example", harness.gendb.MULTI_ALIAS, harness.gendb.MULTI_ALIAS_DESTINATIONS[0])),
                  "UPDATE email_accounts SET active = 0 WHERE id = 1",
                  "COMMIT")
        self.wait_maps_match_db()
        self.assertEqual(d.stop(), 0)

    def test_writer_keeping_its_connection_open_debounce_0(self):
        # No quiet time at all: the check made right after the -wal event
        # may come before the commit is visible; the daemon must look again.
        d = self.start(sync={"debounce_ms": 0, "max_delay_ms": 1000})
        w = self.writer()
        self.commit_and_follow(lambda i: w.execute(
            ("UPDATE email_accounts SET quota = ? WHERE id = 1", (7000 + i,))), n=10)
        self.assertEqual(d.stop(), 0)

    def test_sqlite3_cli_writer(self):
        d = self.start(sync=FAST)
        self.commit_and_follow(lambda i: sqlite_cli(
            self.env.db, "UPDATE email_accounts SET quota = %d WHERE id = 1" % (100 + i)))
        sqlite_cli(self.env.db, "INSERT INTO domains (domain, active) VALUES ('fresh.example', 1)")
        self.wait_maps_match_db()
        self.assertIn("fresh.example\tOK\n", read(self.env.output("virtual_domains")))
        self.assertEqual(d.stop(), 0)

    def test_reader_causes_no_sync(self):
        d = self.start(sync=FAST)
        self.wait_quiet(d, 3.0)
        snap = self.snapshot(d)
        self.run_reader()
        # Past the daemon's last look after the reads (its rechecks).
        time.sleep(3)
        self.assert_untouched(d, snap)
        self.assertEqual(d.stop(), 0)

    def test_update_of_updated_at_writes_nothing(self):
        d = self.start(sync=FAST)
        self.wait_quiet(d, 1.0)
        snap = self.snapshot(d)
        w = self.writer()
        w.execute("UPDATE email_accounts SET updated_at = '2031-02-03 04:05:06'")
        # The daemon did see a new data_version and rendered: a cycle that
        # changed nothing.
        d.wait_log(r"sync: 0 changed", timeout=15)
        time.sleep(0.5)
        self.assert_untouched(d, snap, allow_empty_sync=True)
        self.assertEqual(d.stop(), 0)

    def test_thousand_commits(self):
        max_delay_ms = 250
        d = self.start(sync={"debounce_ms": 50, "max_delay_ms": max_delay_ms})
        self.wait_quiet(d, 1.0)
        n_log = len(d.log())
        w = self.writer()
        t0, t1 = w.burst("UPDATE email_accounts SET quota = ? WHERE id = 1", [(q,) for q in range(1, 1001)])
        self.wait_maps_match_db()
        self.assertIn("storage=1000M", read(self.env.output("passwd")))
        self.wait_quiet(d, 1.5)
        duration_ms = (t1 - t0) * 1000
        cycles = self.sync_lines(d, n_log)
        replaced = [line for line in d.log()[n_log:] if line.startswith("passwd: replaced ")]
        bound = math.ceil(duration_ms / max_delay_ms) + 2
        print("1000 commits in %.0f ms: %d cycles, %d passwd replacements (bound %d)"
              % (duration_ms, len(cycles), len(replaced), bound), file=sys.stderr)
        self.assertGreaterEqual(len(cycles), 1)
        self.assertLessEqual(len(cycles), bound, "\n".join(cycles))
        self.assertLessEqual(len(replaced), bound)
        # A fresh rendering agrees with what the daemon left.
        r = self.env.run("--dry-run")
        self.assertEqual(r.returncode, 0, r.stderr)
        for m in MAPS:
            self.assertRegex(r.stdout, r"(?m)^%s: unchanged" % m)
        self.assertEqual(d.stop(), 0)


class RollbackJournalWriter(Base):
    ENV_ARGS = {"journal": "delete"}

    def test_writer_keeping_its_connection_open(self):
        d = self.start(sync=FAST)
        w = self.writer()
        self.assertEqual(w.journal_mode, "delete")
        self.commit_and_follow(lambda i: w.execute(
            ("UPDATE email_accounts SET quota = ? WHERE id = 1", (8000 + i,))))
        self.assertFalse(os.path.exists(self.env.db + "-wal"))
        self.assertEqual(d.stop(), 0)

    def test_sqlite3_cli_writer(self):
        d = self.start(sync=FAST)
        self.commit_and_follow(lambda i: sqlite_cli(
            self.env.db, "UPDATE aliases SET active = %d WHERE source = '%s'"
            % (i % 2, harness.gendb.MULTI_ALIAS)))
        self.assertEqual(d.stop(), 0)

    def test_reader_causes_no_sync(self):
        d = self.start(sync=FAST)
        self.wait_quiet(d, 3.0)
        snap = self.snapshot(d)
        self.run_reader()
        time.sleep(3)
        self.assert_untouched(d, snap)
        self.assertEqual(d.stop(), 0)


class ReplacedDatabase(Base):

    def test_replaced_by_mv(self):
        d = self.start(sync=FAST)
        incoming = os.path.join(self.env.db_dir, "incoming.sqlite")
        harness.gendb_process(incoming, accounts=80, seed=2)
        # What the maps must become, computed before the change from a copy:
        # waiting reads only map files (reading the database through SQLite
        # would raise the events a missed rename lacks).
        shadow = harness.Shadow(self.env, incoming)
        want = shadow.expected()
        shadow.sql("UPDATE email_accounts SET quota = 2468 WHERE id = 1")
        want2 = shadow.expected()
        old = read(self.env.output("vmailbox"))
        self.assertNotEqual(want["vmailbox"], old)
        subprocess.run(["mv", incoming, self.env.db], check=True, timeout=30)
        harness.wait_maps_equal(self, want, daemon=d)
        # And the new file is the one watched now.
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 2468 WHERE id = 1")
        harness.wait_maps_equal(self, want2, daemon=d)
        self.assertIn("storage=2468M", read(self.env.output("passwd")))
        self.assertEqual(d.stop(), 0)

    def test_deleted_then_created_again(self):
        d = self.start(sync=FAST)
        before = read(self.env.output("vmailbox"))
        subprocess.run(["rm", "-f", self.env.db, self.env.db + "-wal", self.env.db + "-shm"], check=True)
        # Reported, and the last maps kept.
        d.wait_log(r"unavailable|replaced|no such file", timeout=15)
        self.assertEqual(read(self.env.output("vmailbox")), before)
        self.assertIsNone(d.proc.poll())
        harness.gendb_process(self.env.db, accounts=60, seed=3, force=True)
        self.wait_maps_match_db()
        self.assertNotEqual(read(self.env.output("vmailbox")), before)
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 1357 WHERE id = 1")
        self.wait_maps_match_db()
        self.assertIn("storage=1357M", read(self.env.output("passwd")))
        self.assertEqual(d.stop(), 0)

    def test_started_without_database(self):
        spare = os.path.join(self.env.dir, "spare.sqlite")
        os.rename(self.env.db, spare)
        for suffix in ("-wal", "-shm"):
            self.assertFalse(os.path.exists(self.env.db + suffix))
        d = self.start(sync=FAST)  # READY=1 all the same
        self.assertIsNone(d.proc.poll())
        self.assertEqual(os.listdir(self.env.out), [])
        statuses = d.notified("STATUS")
        self.assertTrue(statuses, d.messages)
        self.assertRegex(statuses[-1], r"unavailable|no such file|missing|" + self.env.db)
        subprocess.run(["mv", spare, self.env.db], check=True, timeout=30)
        self.wait_maps_match_db()
        # STATUS no longer names the problem.
        wait_for(lambda: "unavailable" not in d.notified("STATUS")[-1], 10, what="STATUS without the problem")
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    harness.main()
