#!/usr/bin/env python3
"""Fault 10, file descriptors: the daemon runs with a low RLIMIT_NOFILE
for 1,000 sync cycles (changes of every map with their hooks, forced syncs
by SIGUSR1, configuration reloads by SIGHUP). No descriptor leaks: the
descriptors in /proc/PID/fd after the cycles are those before, and no
cycle ran out of them."""

import collections
import re
import signal
import sys
import time

import faultlib
from faultlib import harness, wait_for

CYCLES = 1000
NOFILE = 40


def kinds(targets):
    """fd targets with the ids of pipes and anonymous inodes removed."""
    return collections.Counter(re.sub(r"\[\d+\]$", "", t) for t in targets.values())


class FdLeak(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 50}

    def test_thousand_cycles_with_low_nofile(self):
        env = self.env
        d = self.start(sync={"debounce_ms": 0, "max_delay_ms": 100},
                       wrap=("prlimit", "--nofile=%d:%d" % (NOFILE, NOFILE), "--"))
        limits = harness.read("/proc/%d/limits" % d.pid)
        self.assertRegex(limits, r"Max open files\s+%d\s+%d" % (NOFILE, NOFILE))
        w = self.writer()
        rx = re.compile(harness.SYNC_LINE)
        state = {"seen": 0, "count": 0}

        def cycles():
            lines = d.log_lines  # appended by the reader thread
            n = len(lines)
            for line in lines[state["seen"]:n]:
                if rx.search(line):
                    state["count"] += 1
            state["seen"] = n
            return state["count"]

        # Each step really changes a row (a no-op UPDATE commits nothing).
        steps = [
            lambda i: w.execute(("UPDATE email_accounts SET quota = ? WHERE id = 1", (i,))),
            lambda i: w.execute("UPDATE email_accounts SET active = 1 - active WHERE id = 4"),
            lambda i: w.execute(("UPDATE aliases SET destination = ? WHERE id = 1",
                                 ("fd%d@external.example" % i,))),
            lambda i: w.execute("UPDATE domains SET active = 1 - active WHERE id = 3"),
        ]

        def one_cycle(i):
            before = cycles()
            if i % 100 == 99:
                d.signal(signal.SIGHUP)
            elif i % 50 == 49:
                d.signal(signal.SIGUSR1)
            else:
                steps[i % len(steps)](i)
            end = time.monotonic() + 20
            while cycles() <= before:
                if time.monotonic() > end:
                    raise AssertionError("cycle %d never came; log:\n%s" % (i, self.dump(d)))
                time.sleep(0.002)

        t0 = time.monotonic()
        for i in range(20):
            one_cycle(i)
        self.wait_quiet(d, 1.0)
        before = faultlib.fd_targets(d.pid)
        for i in range(20, CYCLES):
            one_cycle(i)
        self.wait_quiet(d, 1.0)
        # Every hook owed has run; nothing is running.
        wait_for(lambda: not harness.children_of(d.pid), 10, what="no child processes")
        after = faultlib.fd_targets(d.pid)
        elapsed = time.monotonic() - t0
        n_cycles = cycles()
        log = d.log()
        print("%d cycles in %.1f s with RLIMIT_NOFILE %d: %d descriptors before, %d after: %s"
              % (n_cycles, elapsed, NOFILE, len(before), len(after), dict(kinds(after))), file=sys.stderr)
        self.assertGreaterEqual(n_cycles, CYCLES)
        self.assertEqual(kinds(after), kinds(before), "descriptors before: %r\nafter: %r" % (before, after))
        self.assertEqual(len(after), len(before))
        problems = [line for line in log if re.search(r"Too many open files|EMFILE|^error: ", line)]
        self.assertEqual(problems, [])
        self.assertEqual(d.count_log(r"configuration .* reloaded"), CYCLES // 100)
        self.wait_maps_match_db()
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(env.db))


if __name__ == "__main__":
    faultlib.main()
