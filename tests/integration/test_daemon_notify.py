#!/usr/bin/env python3
"""The watching daemon and its service manager: sd_notify (READY, STATUS,
RELOADING, STOPPING, WATCHDOG), the signals (SIGHUP, SIGUSR1, SIGTERM,
SIGINT) and an idle daemon that really sleeps."""

import os
import re
import signal
import time

import harness
from harness import MAPS, read, sqlite_cli, wait_for, wait_notified

# Under a service manager with a watchdog, the tests that need none would
# inherit it.
for _v in ("WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 1000}


def messages_index(d, pred, start=0):
    """Index of the first sd_notify datagram from start on for which pred
    holds, or None."""
    with d.lock:
        msgs = list(d.messages)
    for i in range(start, len(msgs)):
        if pred(msgs[i]):
            return i
    return None


def fields(msg):
    return dict(line.split("=", 1) for line in msg.split("\n") if "=" in line)


class Notify(harness.DaemonTestCase):

    def test_ready_after_first_sync_and_status(self):
        d = self.start(sync=FAST)
        # The first cycle was over when READY=1 came: the maps are there.
        self.assert_maps_match_db()
        ready = messages_index(d, lambda m: "READY=1" in m.split("\n"))
        self.assertIsNotNone(ready)
        log = d.log()
        self.assertTrue(any(re.search(harness.SYNC_LINE, line) for line in log), log)
        self.assertEqual(len(self.env.hooks_run()), 4)
        # STATUS: a one-line summary, sent at least once by the time of READY.
        statuses = d.notified("STATUS")
        self.assertTrue(statuses, d.messages)
        for s in statuses:
            self.assertTrue(s.strip(), "empty STATUS")
            self.assertNotIn("\n", s)
        self.assertEqual(len(d.notified("READY")), 1, d.messages)
        self.assertEqual(d.stop(), 0)

    def test_status_follows_a_change(self):
        d = self.start(sync=FAST)
        n = len(d.messages)
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 4242 WHERE id = 1")
        wait_for(lambda: "storage=4242M" in read(self.env.output("passwd")), 15, what="passwd to change")
        # A STATUS after the change still is one non-empty line.
        wait_for(lambda: messages_index(d, lambda m: m.startswith("STATUS="), n) is not None, 10,
                 what="STATUS after a change")
        for s in d.notified("STATUS"):
            self.assertTrue(s.strip())
            self.assertNotIn("\n", s)
        self.assertEqual(d.stop(), 0)

    def test_sighup_sends_reloading_then_ready(self):
        d = self.start(sync=FAST)
        t_before = time.monotonic()
        d.signal(signal.SIGHUP)
        wait_notified(d, "RELOADING", value="1")
        wait_notified(d, "READY", count=2, value="1")
        t_after = time.monotonic()
        rel = messages_index(d, lambda m: "RELOADING=1" in m.split("\n"))
        f = fields(d.messages[rel])
        # MONOTONIC_USEC in the same datagram, on CLOCK_MONOTONIC.
        self.assertIn("MONOTONIC_USEC", f, d.messages[rel])
        usec = int(f["MONOTONIC_USEC"])
        self.assertGreaterEqual(usec, int(t_before * 1e6) - 1000)
        self.assertLessEqual(usec, int(t_after * 1e6) + 1000)
        # READY=1 after RELOADING=1, not only the one of the start.
        self.assertIsNotNone(messages_index(d, lambda m: "READY=1" in m.split("\n"), rel + 1), d.messages)
        self.assertEqual(d.stop(), 0)

    def test_sigterm_sends_stopping_and_exits_0(self):
        d = self.start(sync=FAST)
        d.signal(signal.SIGTERM)
        code = d.proc.wait(20)
        self.assertEqual(code, 0, "\n".join(d.log()))
        wait_notified(d, "STOPPING", value="1", timeout=5)
        d.stop()

    def test_sigint_exits_0(self):
        d = self.start(sync=FAST)
        d.signal(signal.SIGINT)
        self.assertEqual(d.proc.wait(20), 0, "\n".join(d.log()))
        wait_notified(d, "STOPPING", value="1", timeout=5)
        d.stop()

    def test_sigterm_while_a_hook_runs_exits_0(self):
        """SIGTERM lets the running hook end, then exits 0."""
        marker = os.path.join(self.env.dir, "slow")
        hook = harness.write_script(self.env, "hook.sh",
                                    'if [ -e %s ]; then touch %s.started; sleep 1; fi\n%s\n'
                                    % (marker, marker, harness.recorder_command(self.env)))
        d = self.start(harness.config_with_hook(self.env, hook, sync=FAST))
        open(marker, "w").close()
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 77 WHERE id = 1")
        wait_for(lambda: os.path.exists(marker + ".started"), 15, what="the slow hook to start")
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(20), 0, "\n".join(d.log()))
        wait_notified(d, "STOPPING", value="1", timeout=5)
        # The hook was not cut short: it recorded its run.
        self.assertIn("passwd", [h[0] for h in self.env.hooks_run()[4:]])
        d.stop()


class Signals(harness.DaemonTestCase):

    def test_sighup_with_broken_config_keeps_the_old_one(self):
        d = self.start(sync=FAST)
        good = read(self.env.conf)
        extra = os.path.join(self.env.out, "extra")
        broken = good + ("\n[map extra]\noutput = %s\nquery = SELECT domain, 'OK' FROM domains\n"
                         "format = postfix\n\n[sync2]\nbogus = 1\n" % extra)
        broken = broken.replace("debounce_ms = 50", "debounce_ms = soon")
        self.env.write_config(broken)
        n_log = len(d.log())
        d.signal(signal.SIGHUP)
        wait_notified(d, "RELOADING", value="1")
        wait_notified(d, "READY", count=2, value="1")
        d.wait_log(r"(ignored|not reloaded|still running the previous)", timeout=10)
        after = d.log()[n_log:]
        # The errors are named as FILE:LINE: ...
        self.assertTrue(any(re.search(re.escape(self.env.conf) + r":\d+: ", line) for line in after), after)
        # Nothing of the new file was taken: no extra map ...
        time.sleep(0.5)
        self.assertFalse(os.path.exists(extra))
        self.assertIsNone(d.proc.poll(), "mapsyncd exited on a broken config")
        # ... and the old one still syncs.
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 3131 WHERE id = 1")
        self.wait_maps_match_db()
        self.assertFalse(os.path.exists(extra))
        self.assertEqual(d.stop(), 0)

    def test_sighup_with_a_new_map_writes_it(self):
        d = self.start(sync=FAST)
        extra = os.path.join(self.env.out, "inactive_domains")
        text = read(self.env.conf) + ("\n[map inactive_domains]\noutput = %s\n"
                                      "query = SELECT domain, 'inactive' FROM domains WHERE active <> 1\n"
                                      "format = postfix\nmode = 0644\n" % extra)
        self.env.write_config(text)
        d.signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(extra), 15, what="the new map to be written")
        c = harness.sqlite3.connect("file:%s?mode=ro" % self.env.db, uri=True)
        try:
            names = sorted(r[0].lower() for r in c.execute("SELECT domain FROM domains WHERE active <> 1"))
        finally:
            c.close()
        self.assertTrue(names)
        self.assertEqual(read(extra), "".join("%s\tinactive\n" % n for n in sorted(names, key=str.encode)))
        wait_notified(d, "READY", count=2, value="1")
        # The other maps were not touched by the reload.
        self.assert_maps_match_db()
        self.assertEqual(d.stop(), 0)

    def test_sigusr1_syncs_at_once(self):
        # A debounce of an hour: only SIGUSR1 can bring the change in.
        d = self.start(sync={"debounce_ms": 3600000, "max_delay_ms": 3600000})
        before = os.stat(self.env.output("passwd")).st_ino
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 5150 WHERE id = 1")
        time.sleep(1.5)
        self.assertEqual(os.stat(self.env.output("passwd")).st_ino, before,
                         "passwd changed before the debounce of an hour was over")
        d.signal(signal.SIGUSR1)
        wait_for(lambda: "storage=5150M" in read(self.env.output("passwd")), 10,
                 what="passwd to change after SIGUSR1")
        self.assert_maps_match_db()
        self.assertEqual(d.stop(), 0)


class Watchdog(harness.DaemonTestCase):

    def test_watchdog_pings_when_asked(self):
        # WATCHDOG_PID must be mapsyncd's own pid: a shell exports its $$
        # and execs mapsyncd, which keeps that pid.
        d = self.start(sync=FAST, extra_env={"WATCHDOG_USEC": "400000"},
                       wrap=("sh", "-c", 'export WATCHDOG_PID=$$; exec "$@"', "sh"))
        wait_notified(d, "WATCHDOG", count=3, value="1", timeout=15)
        self.assertEqual(d.stop(), 0)

    def test_idle_daemon_has_no_voluntary_context_switches(self):
        d = self.start(sync=FAST)
        # Let the start's own events (the -wal its open creates, the
        # rechecks after them) pass.
        self.wait_quiet(d, 3.0)
        before = harness.voluntary_switches(d.pid)
        time.sleep(5)
        after = harness.voluntary_switches(d.pid)
        self.assertIsNone(d.proc.poll())
        self.assertEqual(after - before, 0,
                         "an idle daemon woke up %d times in 5 s; log:\n%s" % (after - before, "\n".join(d.log()[-20:])))
        self.assertEqual(d.notified("WATCHDOG"), [])
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    harness.main()
