#!/usr/bin/env python3
"""Fault 3, database locked: a writer holds an exclusive lock (BEGIN
EXCLUSIVE in rollback-journal mode) longer than busy_timeout_ms. The cycle
is retried later, the problem is logged once (not at every retry) and
shown in STATUS, nothing crashes, and the change arrives after the lock is
released."""

import os
import re
import signal
import sys
import time

import faultlib
from faultlib import MAPS, harness, read, wait_for

BUSY_MS = 300
HOLD_S = 3.0
LOCKED = r"database .* (unreadable|unavailable|locked|busy).*"


class Locked(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 100, "journal": "delete"}

    def config(self):
        text = self.env.shipped_config(sync=faultlib.FAST)
        return re.sub(r"(?m)^busy_timeout_ms = .*$", "busy_timeout_ms = %d" % BUSY_MS, text)

    def lock(self, w, quota):
        """BEGIN EXCLUSIVE and a change, not committed."""
        w.execute("BEGIN EXCLUSIVE", ("UPDATE email_accounts SET quota = ? WHERE id = 1", (quota,)))

    def test_lock_longer_than_busy_timeout(self):
        d = self.start(self.config())
        self.wait_maps_match_db()
        before = {m: read(self.env.output(m)) for m in MAPS}
        w = self.writer()
        self.assertEqual(w.journal_mode, "delete")
        n_log = len(d.log())
        t_lock = time.monotonic()
        self.lock(w, 4321)
        # An uncommitted transaction changes no committed state (the
        # database file is not written yet): a sync is asked for (SIGUSR1).
        # It fails after busy_timeout_ms and is retried.
        d.signal(signal.SIGUSR1)
        d.wait_log(r"sync failed", count=1, timeout=10)
        time.sleep(max(0.0, t_lock + HOLD_S - time.monotonic()))
        self.assertIsNone(d.proc.poll(), "mapsyncd died:\n" + self.dump(d))
        during = d.log()[n_log:]
        self.assertEqual({m: read(self.env.output(m)) for m in MAPS}, before)
        statuses = d.notified("STATUS")
        self.assertTrue(any(re.search(r"locked|busy", s) for s in statuses), statuses)
        t_release = time.monotonic()
        w.execute("COMMIT")
        self.wait_maps_match_db(timeout=20)
        t_synced = time.monotonic()
        self.assertIn("storage=4321M", read(self.env.output("passwd")))
        log = d.log()[n_log:]
        fails = [line for line in log if "sync failed" in line]
        said = [line for line in log if re.search(LOCKED, line) and "sync failed" not in line]
        print("lock held %.1f s: %d failed attempts; synced %.1f s after the release; problem logged as: %r"
              % (t_release - t_lock, len(fails), t_synced - t_release, said), file=sys.stderr)
        self.assertGreaterEqual(len([line for line in during if "sync failed" in line]), 2,
                                "the cycle was not retried during the lock:\n" + "\n".join(during))
        self.assertEqual(len(said), 1, "the problem should be said once, not at every retry:\n" + "\n".join(log))
        self.assertRegex(said[0], "locked")
        # STATUS drops the problem again.
        wait_for(lambda: not re.search(r"locked|busy", d.notified("STATUS")[-1]), 10,
                 what="STATUS without the problem")
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_locked_at_start_with_hooks_owed(self):
        # A first run, then hooks owed by an earlier run, then a start while
        # the database is locked.
        self.env.write_config(self.config())
        self.assertEqual(self.env.run("--once").returncode, 0)
        os.unlink(self.env.hook_log)
        with open(os.path.join(self.env.state, "owed-hooks"), "w") as f:
            f.write("# mapsyncd: hooks owed, run at the next start\nmap vmailbox\n")
        w = self.writer()
        self.lock(w, 5432)
        t_lock = time.monotonic()
        d = self.daemon()
        # READY=1 all the same, with the problem in STATUS.
        d.wait_ready(timeout=20)
        self.assertTrue(any(re.search(r"locked|busy", s) for s in d.notified("STATUS")), d.notified("STATUS"))
        time.sleep(max(0.0, t_lock + HOLD_S - time.monotonic()))
        self.assertIsNone(d.proc.poll())
        w.execute("COMMIT")
        self.wait_maps_match_db(timeout=20)
        wait_for(lambda: {h[0] for h in self.env.hooks_run()} >= {"vmailbox", "passwd"}, 20,
                 what="the owed hook and the changed map's hook; log:\n" + self.dump(d))
        time.sleep(0.5)
        # Each hook saw a real rendering: MAPSYNCD_SHA256 is a hash (the
        # map's, at the time), never empty.
        for m, *rest in self.env.hooks_run():
            self.assertEqual(len(rest), 2, "hook of %s ran without MAPSYNCD_SHA256/ROWS: %r" % (m, rest))
            self.assertRegex(rest[0], r"^[0-9a-f]{64}$", m)
        last = {m: sha for m, sha, _ in self.env.hooks_run()}
        for m in ("vmailbox", "passwd"):
            self.assertEqual(last[m], faultlib.sha256(read(self.env.output(m), "rb")), m)
        self.assertFalse(os.path.exists(os.path.join(self.env.state, "owed-hooks")))
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


if __name__ == "__main__":
    faultlib.main()
