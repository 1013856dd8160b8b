#!/usr/bin/env python3
"""Hooks and owed work at their edges, on the real binary: a hook writing
1 GB as fast as it can (the loop keeps serving commits, signals and the
timeout; the log holds at most the bound), reloads held back by a failing
map hook, a reload's causes as a set, nothing owed for a file that was not
installed, the stop path (timers disarmed, hooks counted from processes, a
second signal), no overlap of one hook across a restart, default signal
dispositions in hooks, and "sync failed" at ERR once."""

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import harness
from harness import read, sqlite_cli, wait_for

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 1000}
DOMAIN = harness.gendb.ACTIVE_DOMAIN


def sha256_of(path):
    return hashlib.sha256(read(path, "rb")).hexdigest()


def rss_kib(pid):
    for line in read("/proc/%d/status" % pid).splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def rename_account(env, n):
    sqlite_cli(env.db, "UPDATE email_accounts SET email = 'renamed%d@%s' WHERE id = 1" % (n, DOMAIN))


class Base(harness.DaemonTestCase):

    def record(self, name):
        return os.path.join(self.env.dir, name)

    def lines(self, name):
        try:
            return read(self.record(name)).splitlines()
        except FileNotFoundError:
            return []

    def config(self, hook_for=None, reload=None, reload_maps=(), sync=None):
        """The shipped config with the recorder as every map's on_change, or
        hook_for {map: command}; reload: a command for [reload postfix],
        named by reload_maps."""
        text = self.env.shipped_config(hooks=True, sync=dict(FAST, **(sync or {})))
        rec = "on_change = " + harness.recorder_command(self.env)
        for m, cmd in (hook_for or {}).items():
            head = "[map %s]\n" % m
            i = text.index(head)
            j = text.index(rec, i)
            text = text[:j] + "on_change = " + cmd + text[j + len(rec):]
        for m in reload_maps:
            text = text.replace("[map %s]\n" % m, "[map %s]\nreload = postfix\n" % m)
        if reload:
            text += "\n[reload postfix]\ncommand = %s\n" % reload
        return text


class ChattyHook(Base):

    def test_hook_writing_a_gigabyte(self):
        marker = self.record("spew-once")
        started = self.record("spew-started")
        # vmailbox's hook, once: 1 GB of lines as fast as it can, then it
        # stays (so that only the timeout can end it).
        spew = harness.write_script(self.env, "spew.sh", (
            'if mkdir %s 2>/dev/null; then date +%%s.%%N > %s; yes spewspewspew | head -c 1000000000; '
            'exec sleep 60; fi\n%s\n') % (marker, started, harness.recorder_command(self.env)))
        os.mkdir(marker)  # not at the first cycle
        d = self.start(self.config(hook_for={"vmailbox": spew}, sync={"hook_timeout_s": 3}))
        rss0 = rss_kib(d.pid)
        os.rmdir(marker)
        rename_account(self.env, 1)
        wait_for(lambda: os.path.exists(started), 10, what="the spewing hook to start")
        t_hook = time.monotonic()
        wait_for(lambda: d.count_log(r"^vmailbox: hook: spew") > 0, 5, what="the hook's output in the log")

        # A commit meanwhile reaches its map.
        w = self.writer()
        _, t1 = w.execute(("INSERT INTO domains (domain, active) VALUES (?, 1)", ("spew-new.example",)))
        wait_for(lambda: "spew-new.example" in read(self.env.output("virtual_domains")), 5,
                 interval=0.005, what="the commit to reach virtual_domains while the hook writes")
        latency_ms = (time.monotonic() - t1) * 1000
        print("commit to map while a hook writes as fast as it can: %.0f ms (debounce 50 ms)" % latency_ms,
              file=sys.stderr)
        # Generous: debounce + 100 ms is the goal (recorded above), on a
        # shared machine.
        self.assertLess(latency_ms, 50 + 1500)

        # A signal is served.
        d.signal(signal.SIGUSR1)
        d.wait_log(r"SIGUSR1: syncing now", timeout=5)

        # The timeout fires on time.
        d.wait_log(r"vmailbox: hook still running after the timeout", timeout=10)
        t_timeout = time.monotonic() - t_hook
        print("timeout fired %.2f s after the hook started (hook_timeout_s = 3)" % t_timeout, file=sys.stderr)
        self.assertGreater(t_timeout, 2.5)
        self.assertLess(t_timeout, 3 + 3)
        d.wait_log(r"^error: vmailbox: hook timed out", timeout=10)
        rss1 = rss_kib(d.pid)
        print("RSS %d KiB before, %d KiB after" % (rss0, rss1), file=sys.stderr)
        self.assertLess(rss1 - rss0, 16 * 1024, "RSS grew from %d to %d KiB" % (rss0, rss1))

        # The log holds at most the bound, then one line with the count.
        out = [ln for ln in d.log() if re.match(r"^vmailbox: hook: spew", ln)]
        self.assertGreater(len(out), 0)
        self.assertLessEqual(len(out), 100)
        self.assertLessEqual(sum(len(ln) for ln in out), 65536 + 100 * 40)
        dropped = [ln for ln in d.log() if re.search(r"vmailbox: hook: \d+ more lines of output not logged", ln)]
        self.assertEqual(len(dropped), 1, "\n".join(d.log()[-20:]))
        # The retry runs the recorder (the marker exists now).
        wait_for(lambda: "vmailbox" in [h[0] for h in self.env.hooks_run()], 20, what="the retry")
        self.assertEqual(d.stop(), 0)

    def test_log_bound_is_configurable(self):
        hook = harness.write_script(self.env, "lines.sh", (
            'if [ "$MAPSYNCD_MAP" = vmailbox ]; then i=0; while [ $i -lt 50 ]; do echo "line $i"; '
            'i=$((i+1)); done; fi\n%s\n') % harness.recorder_command(self.env))
        d = self.start(self.config(hook_for={"vmailbox": hook}, sync={"hook_log_lines": 7}))
        d.wait_log(r"^vmailbox: hook succeeded")
        self.assertEqual(d.count_log(r"^vmailbox: hook: line \d+$"), 7)
        self.assertEqual(d.count_log(r"vmailbox: hook: 43 more lines of output not logged"), 1, d.log())
        self.assertEqual(d.stop(), 0)


class Ordering(Base):

    def test_reload_held_back_while_its_map_hook_fails(self):
        fail = self.record("fail")
        hook = harness.write_script(self.env, "map.sh", (
            'if [ -e %s ]; then echo "fail $MAPSYNCD_MAP" >> %s; exit 1; fi\n'
            'echo "ok $MAPSYNCD_MAP $MAPSYNCD_SHA256" >> %s\n') % (fail, self.record("seq"), self.record("seq")))
        reload = 'echo "reload $MAPSYNCD_MAP" >> %s' % self.record("seq")
        d = self.start(self.config(hook_for={"vmailbox": hook}, reload=reload, reload_maps=["vmailbox"]))
        wait_for(lambda: "reload vmailbox" in self.lines("seq"), 10, what="the first reload")
        open(fail, "w").close()
        rename_account(self.env, 1)
        d.wait_log(r"^error: vmailbox: hook failed")
        # A retry (1 s) fails too; the reload is not run meanwhile.
        wait_for(lambda: self.lines("seq").count("fail vmailbox") >= 2, 10, what="a retry of vmailbox's hook")
        self.assertEqual(self.lines("seq").count("reload vmailbox"), 1, self.lines("seq"))
        wait_for(lambda: any("reload postfix held back" in s for s in d.notified("STATUS")), 5,
                 what="STATUS saying the reload is held back: %r" % d.notified("STATUS"))
        os.unlink(fail)
        wait_for(lambda: self.lines("seq").count("reload vmailbox") >= 2, 15, what="the reload after the fix")
        seq = self.lines("seq")
        last_ok = max(i for i, ln in enumerate(seq) if ln.startswith("ok vmailbox "))
        second_reload = [i for i, ln in enumerate(seq) if ln == "reload vmailbox"][1]
        self.assertLess(last_ok, second_reload, seq)
        self.assertEqual(seq[last_ok].split()[2], sha256_of(self.env.output("vmailbox")))
        self.assertEqual(d.stop(), 0)

    def test_reload_causes_are_a_set(self):
        fail = self.record("fail")
        reload = harness.write_script(self.env, "reload.sh", (
            'echo "$MAPSYNCD_MAP" >> %s\n[ -e %s ] && exit 1\nexit 0\n') % (self.record("causes"), fail))
        d = self.start(self.config(reload=reload, reload_maps=["vmailbox", "virtual_aliases"]))
        wait_for(lambda: self.lines("causes"), 10, what="the first reload")
        open(fail, "w").close()
        for n in range(3):
            k = len(self.lines("causes"))
            rename_account(self.env, n + 1)
            wait_for(lambda: len(self.lines("causes")) > k, 15, what="a run of the failing reload")
        sqlite_cli(self.env.db, "INSERT INTO aliases (domain_id, source, destination, active) VALUES "
                   "((SELECT id FROM domains WHERE domain = '%s'), 'newalias@%s', 'x@%s', 1)"
                   % (DOMAIN, DOMAIN, DOMAIN))
        wait_for(lambda: "vmailbox virtual_aliases" in self.lines("causes"), 20,
                 what="a reload caused by both maps: %r" % self.lines("causes"))
        os.unlink(fail)
        k = len(self.lines("causes"))
        wait_for(lambda: len(self.lines("causes")) > k, 20, what="the reload to succeed")
        causes = self.lines("causes")
        for c in causes[1:]:
            self.assertIn(c, ("vmailbox", "vmailbox virtual_aliases"), causes)
        self.assertEqual(causes[-1], "vmailbox virtual_aliases")
        self.assertEqual(d.stop(), 0)


class OwedAfterInstall(Base):

    def test_failed_replace_owes_nothing(self):
        flag = self.record("fail-rename")
        env = harness.preload_env("FAIL_RENAME_SHIM", FAIL_RENAME="vmailbox", FAIL_RENAME_FLAG=flag)
        self.env.write_config(self.config())
        d = self.daemon(extra_env=env)
        d.wait_ready()
        self.assertEqual(len(self.env.hooks_run()), 4)
        old_sha = sha256_of(self.env.output("vmailbox"))
        open(flag, "w").close()
        # Changes vmailbox (whose rename fails) and passwd.
        rename_account(self.env, 1)
        d.wait_log(r"sync: 1 changed, 2 unchanged, 1 failed")
        wait_for(lambda: len(self.env.hooks_run()) >= 5, 10, what="passwd's hook")
        time.sleep(0.3)
        self.assertEqual(sha256_of(self.env.output("vmailbox")), old_sha)
        runs = self.env.hooks_run()
        self.assertEqual([m for m, _, _ in runs[4:]], ["passwd"], runs)
        state = os.path.join(self.env.state, "owed-hooks")
        # The retries of the failed map write the file before each rename
        # and again after it: between cycles it owes no vmailbox hook (a
        # daemon that owed one keeps it there for good).
        wait_for(lambda: not (os.path.exists(state) and "vmailbox" in read(state)), 5,
                 what="owed-hooks without vmailbox between cycles")
        os.unlink(flag)
        # The cycle's retry installs it; its hook names the file on disk.
        wait_for(lambda: len(self.env.hooks_run()) >= 6, 15, what="the hook after the retry")
        m, sha, _ = self.env.hooks_run()[5]
        self.assertEqual(m, "vmailbox")
        self.assertEqual(sha, sha256_of(self.env.output("vmailbox")))
        self.assertNotEqual(sha, old_sha)
        self.assertEqual(d.stop(), 0)


class Stop(Base):

    def slow_hook(self, seconds, name="slow"):
        """A hook that sleeps while marker exists, records "start"/"end"."""
        marker = self.record(name)
        rec = self.record(name + ".log")
        return marker, harness.write_script(self.env, name + ".sh", (
            'if [ -e %s ] && [ "$MAPSYNCD_MAP" = vmailbox ]; then echo "start $$" >> %s; sleep %s; '
            'echo end >> %s; fi\n%s\n') % (marker, rec, seconds, rec, harness.recorder_command(self.env)))

    def test_sigterm_disarms_the_debounce(self):
        marker, hook = self.slow_hook(3)
        d = self.start(self.config(hook_for={"vmailbox": hook}, sync={"debounce_ms": 1500, "max_delay_ms": 3000}))
        open(marker, "w").close()
        rename_account(self.env, 1)
        wait_for(lambda: self.lines("slow.log"), 10, what="the slow hook")
        before = os.stat(self.env.output("virtual_domains"))
        sqlite_cli(self.env.db, "INSERT INTO domains (domain, active) VALUES ('after-stop.example', 1)")
        time.sleep(0.1)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(20), 0)
        self.assertIn("end", self.lines("slow.log"))
        after = os.stat(self.env.output("virtual_domains"))
        self.assertEqual((before.st_ino, before.st_mtime_ns), (after.st_ino, after.st_mtime_ns),
                         "a map was replaced after SIGTERM:\n" + "\n".join(d.log()))
        self.assertNotIn("after-stop.example", read(self.env.output("virtual_domains")))
        d.stop()

    def test_no_hook_starts_after_sigterm(self):
        """SIGTERM while a map's hook runs: the daemon waits for it, and the
        reload that hook's success would start stays owed for the next start."""
        marker, hook = self.slow_hook(2)
        reloads = self.record("reloads")
        d = self.start(self.config(hook_for={"vmailbox": hook}, reload="echo run >> %s" % reloads,
                                   reload_maps=["vmailbox"]))
        wait_for(lambda: os.path.exists(reloads), 10, what="the first reload")
        d.wait_log(r"reload postfix: hook succeeded")
        first = read(reloads)
        open(marker, "w").close()
        rename_account(self.env, 1)
        wait_for(lambda: self.lines("slow.log"), 10, what="the slow hook")
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping once the running hook has ended")
        self.assertEqual(d.proc.wait(20), 0)
        self.assertIn("end", self.lines("slow.log"))
        self.assertEqual(read(reloads), first, "a reload started after SIGTERM:\n" + "\n".join(d.log()))
        self.assertRegex(read(os.path.join(self.env.state, "owed-hooks")), r"(?m)^reload postfix( |$)")
        d.stop()

    def test_stop_waits_for_a_hook_whose_section_sighup_dropped(self):
        done = self.record("reload-done")
        reload = "sleep 2; touch %s" % done
        text = self.config(reload=reload, reload_maps=["vmailbox"])
        d = self.start(text)
        wait_for(lambda: os.path.exists(done), 10, what="the first reload")
        os.unlink(done)
        rename_account(self.env, 1)
        d.wait_log(r"running hook: sleep 2", count=2)
        # The new config has no [reload postfix].
        self.env.write_config(self.config())
        d.signal(signal.SIGHUP)
        d.wait_log(r"configuration .* reloaded")
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(20), 0)
        self.assertTrue(os.path.exists(done), "the running reload was killed at the stop:\n" + "\n".join(d.log()))
        d.stop()

    def test_second_signal_stops_hooks_and_exits(self):
        marker, hook = self.slow_hook(60)
        d = self.start(self.config(hook_for={"vmailbox": hook}))
        open(marker, "w").close()
        rename_account(self.env, 1)
        wait_for(lambda: self.lines("slow.log"), 10, what="the slow hook")
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping once the running hook has ended")
        time.sleep(0.3)
        self.assertIsNone(d.proc.poll())
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(15), 0)
        self.assertLess(time.monotonic() - t0, 10)
        self.assertNotIn("end", self.lines("slow.log"))
        pid = int(self.lines("slow.log")[0].split()[1])
        wait_for(lambda: harness.proc_stat(pid) is None or harness.proc_stat(pid)[0] == "Z", 5,
                 what="the hook to be gone")
        # Still owed for the next start.
        self.assertRegex(read(os.path.join(self.env.state, "owed-hooks")), r"(?m)^map vmailbox$")
        d.stop()


class Overlap(Base):

    def test_hook_of_a_killed_daemon_does_not_overlap_the_next(self):
        marker = self.record("slow")
        rec = self.record("runs")
        hook = harness.write_script(self.env, "hook.sh", (
            'if [ "$MAPSYNCD_MAP" = vmailbox ]; then\n'
            '  echo "start $(date +%%s.%%N)" >> %s\n'
            '  [ -e %s ] && sleep 3\n'
            '  echo "end $(date +%%s.%%N)" >> %s\n'
            'fi\n%s\n') % (rec, marker, rec, harness.recorder_command(self.env)))
        d = self.start(self.config(hook_for={"vmailbox": hook}))
        open(marker, "w").close()
        rename_account(self.env, 1)
        wait_for(lambda: len(read(rec).splitlines()) >= 3 if os.path.exists(rec) else False, 10,
                 what="the slow hook to start")
        d.kill()  # the hook, in its own process group, keeps running
        d2 = self.daemon()
        d2.wait_ready(timeout=30)
        wait_for(lambda: read(rec).count("end") >= 3, 20, what="both runs to end; log:\n" + "\n".join(d2.log()))
        runs = read(rec).splitlines()
        # start, end (first cycle), then the orphan's and the restart's.
        events = [(ln.split()[0], float(ln.split()[1])) for ln in runs[2:]]
        self.assertEqual([e for e, _ in events], ["start", "end", "start", "end"], runs)
        self.assertLessEqual(events[1][1], events[2][1], runs)
        self.assertEqual(d2.stop(), 0)


class Small(Base):

    def test_hooks_get_default_signal_dispositions(self):
        rec = self.record("sig")
        hook = 'grep -E "^Sig(Ign|Blk):" /proc/self/status >> %s' % rec
        self.env.write_config(self.config(hook_for={"vmailbox": hook}))
        # Started as systemd does: SIGPIPE ignored.
        wrap = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGPIPE, signal.SIG_IGN); "
                "os.execv(sys.argv[1], sys.argv[1:])"]
        d = self.daemon(wrap=wrap)
        d.wait_ready()
        lines = read(rec).splitlines()
        self.assertIn("SigIgn:\t0000000000000000", lines, lines)
        self.assertIn("SigBlk:\t0000000000000000", lines, lines)
        self.assertEqual(d.stop(), 0)

    def test_sync_failed_at_err_once(self):
        d = self.start(self.config())
        os.rename(self.env.db, self.env.db + ".away")
        d.signal(signal.SIGUSR1)
        # Retries at 1 s, 2 s: three failures in 3.5 s.
        d.wait_log(r"sync failed", count=3, timeout=15)
        self.assertEqual(d.count_log(r"^error: sync failed"), 1, "\n".join(d.log()))
        os.rename(self.env.db + ".away", self.env.db)
        d.wait_log(r"is available again", timeout=15)
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    harness.main()
