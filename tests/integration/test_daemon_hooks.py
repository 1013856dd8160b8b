#!/usr/bin/env python3
"""The watching daemon's hooks: a hook that hangs is killed after
hook_timeout_s and retried; a hook owed when the daemon is killed runs at
the next start; as PID 1 of a PID namespace the daemon reaps the orphaned
grandchildren of its hooks."""

import hashlib
import os
import signal
import subprocess
import time

import harness
from harness import read, sqlite_cli, wait_for, wait_notified

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 1000}


def sha256_of(path):
    return hashlib.sha256(read(path, "rb")).hexdigest()


class Hooks(harness.DaemonTestCase):

    def test_hanging_hook_is_killed_after_the_timeout_and_retried(self):
        marker = os.path.join(self.env.dir, "hung")
        pid_file = os.path.join(self.env.dir, "sleep.pid")
        self.pid_files.append((pid_file, "sleep"))
        # vmailbox's hook hangs the first time only.
        hook = harness.write_script(self.env, "hook.sh", (
            'if [ "$MAPSYNCD_MAP" = vmailbox ] && mkdir %s 2>/dev/null; then\n'
            '  sleep 60 & echo $! > %s; wait\n'
            'fi\n%s\n') % (marker, pid_file, harness.recorder_command(self.env)))
        sync = dict(FAST, hook_timeout_s=1)
        t_start = time.monotonic()
        d = self.start(harness.config_with_hook(self.env, hook, sync=sync), ready=False)
        d.wait_ready(timeout=60)
        wait_for(lambda: "vmailbox" in [h[0] for h in self.env.hooks_run()], 30,
                 what="vmailbox's hook to be retried and succeed; log:\n" + "\n".join(d.log()))
        # The hook wrote its record before mapsyncd logged its end.
        d.wait_log(r"^vmailbox: hook succeeded", timeout=10)
        elapsed = time.monotonic() - t_start
        log = d.log()
        timed_out = [i for i, line in enumerate(log)
                     if line.startswith("error: vmailbox: ") and ("timed out" in line or "timeout" in line)]
        retried = [i for i, line in enumerate(log) if line.startswith("vmailbox: ") and "retr" in line]
        succeeded = [i for i, line in enumerate(log) if line.startswith("vmailbox: hook succeeded")]
        self.assertTrue(timed_out, "no timeout of vmailbox's hook logged:\n" + "\n".join(log))
        self.assertTrue(retried, "no retry of vmailbox's hook logged:\n" + "\n".join(log))
        self.assertTrue(succeeded, "\n".join(log))
        self.assertLess(timed_out[0], succeeded[0])
        # Killed, not waited for: far less than the 60 s it would sleep.
        self.assertLess(elapsed, 45)
        pid = int(read(pid_file))
        wait_for(lambda: harness.proc_stat(pid) is None or harness.proc_stat(pid)[2] != "sleep"
                 or harness.proc_stat(pid)[0] == "Z", 10, what="the hung hook's sleep to be killed")
        # The retry ran with the map as it is.
        runs = {m: sha for m, sha, _ in self.env.hooks_run()}
        self.assertEqual(runs["vmailbox"], sha256_of(self.env.output("vmailbox")))
        self.assertEqual(sorted(runs), sorted(harness.MAPS))
        self.assertEqual(d.stop(), 0)

    def test_hook_owed_at_sigkill_runs_at_next_start(self):
        slow = os.path.join(self.env.dir, "slow")
        pid_file = os.path.join(self.env.dir, "hook.pid")
        self.pid_files.append((pid_file, "sleep"))
        hook = harness.write_script(self.env, "hook.sh", (
            'if [ -e %s ] && [ "$MAPSYNCD_MAP" = vmailbox ]; then echo $$ > %s; exec sleep 60; fi\n%s\n')
            % (slow, pid_file, harness.recorder_command(self.env)))
        text = harness.config_with_hook(self.env, hook, sync=FAST)
        d = self.start(text)
        self.assertEqual(len(self.env.hooks_run()), 4)
        open(slow, "w").close()
        passwd_replaced = r"^passwd: replaced "
        n_passwd = d.count_log(passwd_replaced)
        # Changes vmailbox (its hook will hang) and passwd (after it).
        sqlite_cli(self.env.db, "UPDATE email_accounts SET email = 'renamed1@%s' WHERE id = 1"
                   % harness.gendb.ACTIVE_DOMAIN)
        wait_for(lambda: os.path.exists(pid_file) and read(pid_file).strip(), 15, what="the slow hook to start")
        pid = int(read(pid_file))
        wait_for(lambda: (harness.proc_stat(pid) or ("", 0, ""))[2] == "sleep", 10, what="the hook to sleep")
        self.assertIn("renamed1@", read(self.env.output("vmailbox")))
        state = os.path.join(self.env.state, "owed-hooks")
        self.assertTrue(os.path.exists(state), "no owed hooks recorded in " + self.env.state)
        # passwd, replaced at the start in this very second, may follow in
        # the next one (the mtime rule: at most one replacement a second),
        # in a cycle of its own while vmailbox's hook sleeps. That cycle
        # records passwd's hook as owed before it renames the new file, so
        # "map passwd" in the state file does not mean the file is in place:
        # killed in between, the next start must (and does) write passwd
        # again. The kill comes after the replacement is logged, which is
        # after the rename and the directory's fsync.
        d.wait_log(passwd_replaced, count=n_passwd + 1, timeout=10)
        self.assertIn("renamed1@", read(self.env.output("passwd")))
        self.assertRegex(read(state), r"(?m)^map passwd$")
        d.kill()
        # What a service manager does to the rest of the unit: the hook goes too.
        os.killpg(os.getpgid(pid), signal.SIGKILL)
        os.unlink(slow)
        os.unlink(self.env.hook_log)
        owed = read(state)
        self.assertRegex(owed, r"(?m)^map vmailbox$")
        self.assertRegex(owed, r"(?m)^map passwd$")

        d2 = self.daemon()
        d2.wait_ready(timeout=30)
        wait_for(lambda: len(self.env.hooks_run()) >= 2, 15,
                 what="the owed hooks to run; log:\n" + "\n".join(d2.log()))
        time.sleep(0.5)
        runs = self.env.hooks_run()
        self.assertEqual(sorted(h[0] for h in runs), ["passwd", "vmailbox"], runs)
        for m, sha, _ in runs:
            self.assertEqual(sha, sha256_of(self.env.output(m)))
        wait_for(lambda: not os.path.exists(state), 10, what="the owed-hooks file to go")
        # Nothing was rewritten: the maps were replaced before the kill.
        self.assertEqual(self.sync_lines(d2)[0].split("sync: ")[1][:9], "0 changed", d2.log())
        self.assertEqual(d2.stop(), 0)


UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child")


def unshare_works():
    try:
        return subprocess.run(list(UNSHARE) + ["true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Pid1(harness.DaemonTestCase):

    def test_reaps_orphaned_grandchildren_of_hooks(self):
        if not unshare_works():
            self.skipTest("unshare --pid --fork --mount-proc is not allowed here")
        hook = harness.write_script(self.env, "hook.sh",
                                    "sleep 2 &\nsleep 0.1 &\n%s\n" % harness.recorder_command(self.env))
        d = self.start(harness.config_with_hook(self.env, hook, sync=FAST), wrap=UNSHARE, ready=False)
        d.wait_ready(timeout=30)
        # mapsyncd: unshare's child, PID 1 inside.
        kids = wait_for(lambda: harness.children_of(d.pid), 10, what="unshare's child")
        self.assertEqual(len(kids), 1, kids)
        inner = next(iter(kids))
        self.assertEqual(kids[inner][1], "mapsyncd")
        nspid = [line for line in read("/proc/%d/status" % inner).splitlines() if line.startswith("NSpid:")]
        self.assertEqual(nspid[0].split()[-1], "1", nspid)

        def round_of_hooks(n_runs):
            wait_for(lambda: len(self.env.hooks_run()) >= n_runs, 15, what="%d hook runs" % n_runs)
            # The background sleeps were left to PID 1: mapsyncd.
            wait_for(lambda: any(c == "sleep" for _, c in harness.children_of(inner).values()), 5,
                     what="orphaned sleeps to be mapsyncd's children")
            # Once they all ended, none stays a zombie.
            wait_for(lambda: all(s == "Z" for s, _ in harness.children_of(inner).values()), 20,
                     what="the hooks' grandchildren to end")
            try:
                wait_for(lambda: not harness.children_of(inner), 5, what="every child reaped")
            except AssertionError:
                self.fail("zombies left under mapsyncd (pid %d outside): %r"
                          % (inner, harness.children_of(inner)))

        round_of_hooks(4)
        # Again while running, after a change.
        sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 2222 WHERE id = 1")
        round_of_hooks(5)

        os.kill(inner, signal.SIGTERM)
        self.assertEqual(d.proc.wait(20), 0, "\n".join(d.log()))
        wait_notified(d, "STOPPING", value="1", timeout=5)
        d.stop()


if __name__ == "__main__":
    harness.main()
