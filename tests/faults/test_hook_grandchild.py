#!/usr/bin/env python3
"""Fault 6, a hook that ignores SIGTERM and forks a grandchild that holds
its stdout (the daemon's pipe) open and ignores SIGTERM too. The hook is
killed at the timeout (SIGTERM, then SIGKILL 5 s later), no zombie is left,
the pipe is not waited for (no descriptor stays open in the daemon), and
the daemon keeps working: syncs go on while the hook hangs, the other hooks
run after it, the failed hook is retried."""

import os
import signal
import sys
import time

import faultlib
from faultlib import MAPS, harness, read, wait_for

TIMEOUT_S = 1
GRACE_S = 5  # hook.c: HOOK_KILL_GRACE_USEC


def alive(pid):
    st = harness.proc_stat(pid)
    return st is not None and st[0] != "Z"


class HookGrandchild(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 60}

    def run_case(self, escape):
        env = self.env
        mark = os.path.join(env.dir, "hung-once")
        gc_pid = os.path.join(env.dir, "grandchild.pid")
        hook_pid = os.path.join(env.dir, "hook.pid")
        self.pid_files += [(gc_pid, "sleep"), (hook_pid, "sleep")]
        # The grandchild: a sleep that ignores TERM, stdout and stderr still
        # the daemon's pipe; with escape it leaves the hook's process group
        # (setsid), so that the group's SIGKILL misses it.
        grandchild = "%s sh -c 'trap \"\" TERM; echo grandchild up; exec sleep 600' &" % (
            "setsid" if escape else "")
        hook = harness.write_script(env, "hook.sh", (
            'if [ "$MAPSYNCD_MAP" = vmailbox ] && mkdir %s 2>/dev/null; then\n'
            "  trap '' TERM\n"
            "  %s\n"
            "  echo $! > %s\n"
            "  echo $$ > %s\n"
            "  echo hook hangs\n"
            "  exec sleep 600\n"
            "fi\n%s\n") % (mark, grandchild, gc_pid, hook_pid, harness.recorder_command(env)))
        sync = dict(faultlib.FAST, hook_timeout_s=TIMEOUT_S)
        # exec: the hook process itself (the group leader the daemon waits
        # for) is the script that ignores SIGTERM, not a shell around it.
        d = self.start(harness.config_with_hook(env, "exec " + hook, sync=sync), ready=False)
        wait_for(lambda: os.path.exists(hook_pid) and read(hook_pid).strip(), 15, what="the hook to hang")
        t_hang = time.monotonic()
        hpid = int(read(hook_pid))
        wait_for(lambda: os.path.exists(gc_pid) and read(gc_pid).strip(), 5, what="the grandchild's pid")
        gpid = int(read(gc_pid))
        if escape:
            # setsid forks when it leads its group: follow to the sleep.
            wait_for(lambda: (harness.proc_stat(gpid) or ("", 0, ""))[2] == "sleep" or
                     any(c == "sleep" for c in [s[1] for s in harness.children_of(gpid).values()]), 5,
                     what="the grandchild's sleep")
            kids = harness.children_of(gpid)
            if (harness.proc_stat(gpid) or ("", 0, ""))[2] != "sleep" and kids:
                gpid = next(iter(kids))
                with open(gc_pid, "w") as f:
                    f.write("%d\n" % gpid)
        self.assertTrue(alive(hpid) and alive(gpid))

        # While the hook hangs, a change still syncs.
        harness.sqlite_cli(env.db, "UPDATE email_accounts SET quota = 6543 WHERE id = 1")
        wait_for(lambda: "storage=6543M" in read(env.output("passwd")), 10,
                 what="a sync while the hook hangs; log:\n" + self.dump(d))
        self.assertTrue(alive(hpid), "the hook ended too early")

        # SIGTERM at the timeout, ignored; SIGKILL GRACE_S later.
        d.wait_log(r"^error: vmailbox: .*(timeout|timed out).*SIGTERM", timeout=10)
        d.wait_log(r"^error: vmailbox: .*SIGKILL", timeout=GRACE_S + 5)
        d.wait_log(r"^error: vmailbox: hook timed out", timeout=10)
        t_killed = time.monotonic()
        wait_for(lambda: not alive(hpid), 5, what="the hook to be gone")
        if escape:
            self.assertTrue(alive(gpid), "the escaped grandchild was killed after all")
        else:
            wait_for(lambda: not alive(gpid), 5, what="the grandchild to be killed with its group")
        # READY once the first cycle's hooks are over: the retry, the others.
        d.wait_ready(timeout=30)
        wait_for(lambda: {h[0] for h in env.hooks_run()} >= set(MAPS), 20,
                 what="every map's hook; log:\n" + self.dump(d))
        t_done = time.monotonic()
        self.assertIsNone(d.proc.poll())
        # No zombie, and no pipe of the hook left open in the daemon.
        wait_for(lambda: not faultlib.zombies_of(d.pid), 5, what="no zombie children: %r"
                 % faultlib.zombies_of(d.pid))
        pipes = [t for fd, t in faultlib.fd_targets(d.pid).items() if fd > 2 and t.startswith("pipe:")]
        self.assertEqual(pipes, [], "pipes still open in the daemon: %r" % faultlib.fd_targets(d.pid))
        log = d.log()
        self.assertTrue([line for line in log if "vmailbox: hook: hook hangs" in line], "hook output not logged")
        # The daemon keeps working: another change, its hooks.
        n_runs = len(env.hooks_run())
        harness.sqlite_cli(env.db, "UPDATE email_accounts SET active = 0 WHERE id = 1")
        self.wait_maps_match_db()
        wait_for(lambda: len(env.hooks_run()) >= n_runs + 2, 10, what="the next change's hooks")
        self.assertFalse([t for fd, t in faultlib.fd_targets(d.pid).items() if fd > 2 and t.startswith("pipe:")])
        print("%s grandchild: killed %.1f s after the hang began (timeout %d s + grace %d s); "
              "every hook done %.1f s after that" % ("escaped" if escape else "in-group", t_killed - t_hang,
                                                      TIMEOUT_S, GRACE_S, t_done - t_killed), file=sys.stderr)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(env.db))
        if escape:
            os.kill(gpid, signal.SIGKILL)

    def test_grandchild_in_the_hooks_group(self):
        self.run_case(escape=False)

    def test_grandchild_escaped_with_setsid(self):
        self.run_case(escape=True)


if __name__ == "__main__":
    faultlib.main()
