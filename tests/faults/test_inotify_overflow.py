#!/usr/bin/env python3
"""Fault 7, inotify queue overflow. /proc/sys/fs/inotify/max_queued_events
is lowered while the daemon starts (an inotify instance keeps the limit it
was created with; the system value is restored as soon as the daemon is up,
and in any case at the end). Then the queue is flooded: the database's own
events are lost, only IN_Q_OVERFLOW tells of them, and a full sync must
follow. Needs root."""

import os
import signal
import sys
import time

import faultlib
from faultlib import harness, read

SYSCTL = "/proc/sys/fs/inotify/max_queued_events"
LIMIT = 32


class InotifyOverflow(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 80}

    def setUp(self):
        if not faultlib.is_root():
            self.skipTest("changing %s needs root" % SYSCTL)
        try:
            self.saved = read(SYSCTL).strip()
        except OSError as e:
            self.skipTest("cannot read %s: %s" % (SYSCTL, e))
        super().setUp()

    def start_with_small_queue(self, **kw):
        try:
            with open(SYSCTL, "w") as f:
                f.write("%d\n" % LIMIT)
        except OSError as e:
            self.skipTest("cannot write %s: %s" % (SYSCTL, e))
        try:
            d = self.start(sync=faultlib.FAST, **kw)
        finally:
            with open(SYSCTL, "w") as f:
                f.write(self.saved + "\n")
        self.assertEqual(read(SYSCTL).strip(), self.saved)
        self.wait_maps_match_db()
        self.wait_quiet(d, 0.5)
        return d

    def tearDown(self):
        try:
            if read(SYSCTL).strip() != self.saved:
                with open(SYSCTL, "w") as f:
                    f.write(self.saved + "\n")
        finally:
            super().tearDown()

    def test_overflow_hides_the_commit(self):
        d = self.start_with_small_queue()
        n_log = len(d.log())
        # The daemon reads nothing while stopped: the queue fills with events
        # of other files in the directory (distinct names, so that the kernel
        # cannot merge them), then overflows; the commit's own events are
        # dropped.
        d.signal(signal.SIGSTOP)
        try:
            for i in range(4 * LIMIT):
                p = os.path.join(self.env.db_dir, "noise-%03d" % i)
                with open(p, "w") as f:
                    f.write("x")
            harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 9191 WHERE id = 1")
            harness.sqlite_cli(self.env.db, "INSERT INTO domains (domain, active) VALUES ('overflow.example', 1)")
        finally:
            d.signal(signal.SIGCONT)
        d.wait_log(r"inotify queue overflowed", timeout=10)
        self.wait_maps_match_db()
        self.wait_quiet(d, 0.5)
        self.assertIn("storage=9191M", read(self.env.output("passwd")))
        self.assertIn("overflow.example\tOK\n", read(self.env.output("virtual_domains")))
        log = d.log()[n_log:]
        # Only noise and the overflow were in the queue: no event of the
        # database itself came before the overflow. (Later ones come from
        # the test's own readers.)
        upto = next(i for i, line in enumerate(log) if "inotify queue overflowed" in line)
        ours = [line for line in log[:upto + 1] if line.startswith("debug: inotify: database.sqlite")]
        self.assertEqual(ours, [], "the database's events were not all lost; the test proves nothing")
        self.assertTrue([line for line in log if line.startswith("sync: ")], "\n".join(log))
        # And it keeps watching.
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 9292 WHERE id = 1")
        self.wait_maps_match_db()
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_flood_of_commits(self):
        d = self.start_with_small_queue()
        n_log = len(d.log())
        w = self.writer()
        t0 = time.monotonic()
        # Commits, each touching -wal; interleaved with file churn.
        for round_ in range(10):
            w.burst("UPDATE email_accounts SET quota = ? WHERE id = ?",
                    [(1000 + round_ * 100 + i, 1 + i % 50) for i in range(100)])
            for i in range(50):
                p = os.path.join(self.env.db_dir, "churn-%d-%d" % (round_, i))
                open(p, "w").close()
                os.unlink(p)
        self.wait_maps_match_db(timeout=30)
        overflows = d.count_log(r"inotify queue overflowed")
        print("flood: 1000 commits in %.1f s, %d overflows, %d sync cycles"
              % (time.monotonic() - t0, overflows, len(self.sync_lines(d, n_log))), file=sys.stderr)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))


if __name__ == "__main__":
    faultlib.main()
