#!/usr/bin/env python3
"""A WAL commit on a slow disk: its last inotify event (IN_MODIFY on -wal)
comes seconds before the commit is visible, after the WAL's fsync. The
daemon keeps looking until it is."""

import os
import time

import harness


class SlowCommit(harness.DaemonTestCase):

    def check(self, debounce_ms, fsync_ms):
        self.start(sync={"debounce_ms": str(debounce_ms)})
        w = harness.Writer(self.env.db, env=harness.preload_env("SLOW_FSYNC_SHIM", SLOW_FSYNC_MS=fsync_ms))
        self.writers.append(w)
        g = harness.gendb
        t0, t1 = w.execute(("UPDATE email_accounts SET password = ? WHERE email = ?",
                            (g.ROTATE_HASHES[0], g.ACTIVE_ACCOUNT)))
        self.assertGreaterEqual(t1 - t0, fsync_ms / 1000 * 0.9, "the shim did not slow the commit")
        want = "%s:{BLF-CRYPT}%s" % (g.ACTIVE_ACCOUNT, g.ROTATE_HASHES[0])
        harness.wait_for(lambda: want in harness.read(self.env.output("passwd")), timeout=20,
                         what="the slow commit in passwd")

    def test_commit_visible_after_3_s_fsync_debounce_0(self):
        self.check(0, 3000)

    def test_commit_visible_after_3_s_fsync_debounce_200(self):
        self.check(200, 3000)


if __name__ == "__main__":
    harness.main()
