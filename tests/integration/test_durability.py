#!/usr/bin/env python3
"""Two promises of the README that the file contents alone cannot show,
proven on the real binary:

- each replaced map is fsynced, then renamed over its output, then its
  directory is fsynced (strace -f -y of a --once run, parsed: the file
  fsynced is the one renamed, the directory fsynced is the output's, in
  that order, in one process);
- every map of a cycle comes from one snapshot: a writer commits a change
  that touches two maps (a new domain and an account in it) while the cycle
  is inside a query of the first map that is slow by construction (a
  recursive CTE); both maps show the old state, and the next cycle shows
  the new state in both."""

import os
import re
import shutil
import subprocess
import tempfile
import time

import harness
from harness import MAPS, read, wait_for

SYSCALL = re.compile(r"^(?P<pid>\d+)\s+(?P<call>fsync|fdatasync|rename|renameat|renameat2)\((?P<args>.*)\)\s+=\s+"
                     r"(?P<ret>-?\d+)")
FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def unescape(s):
    return s.encode("latin-1").decode("unicode_escape")


def parse_trace(text):
    """[(pid, call, paths...)] of the successful calls, paths resolved:
    fsync/fdatasync -> (path,); rename* -> (old, new), relative names joined
    with their directory descriptor's path."""
    out = []
    for line in text.splitlines():
        m = SYSCALL.match(line)
        if not m or m.group("ret") != "0":
            continue
        call, args = m.group("call"), m.group("args")
        if call in ("fsync", "fdatasync"):
            fm = FD_PATH.match(args)
            if fm:
                out.append((int(m.group("pid")), call, fm.group("path")))
            continue
        if call == "rename":
            names = [unescape(x) for x in STRING.findall(args)]
            out.append((int(m.group("pid")), call, names[0], names[1]))
            continue
        # renameat(olddirfd<dir>, "old", newdirfd<dir>, "new"[, flags])
        parts = re.findall(r'(AT_FDCWD|\d+<[^>]*>)\s*,\s*"((?:[^"\\]|\\.)*)"', args)
        paths = []
        for fd, name in parts[:2]:
            name = unescape(name)
            if name.startswith("/") or fd == "AT_FDCWD":
                paths.append(name)
            else:
                paths.append(os.path.join(FD_PATH.match(fd).group("path"), name))
        out.append((int(m.group("pid")), call) + tuple(paths))
    return out


class FsyncOrder(harness.TestCase):

    @staticmethod
    def traced_env():
        """The test's environment for a run under strace: LeakSanitizer
        cannot work under ptrace, so a sanitizer build checks all but leaks."""
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        if "ASAN_OPTIONS" in env:
            env["ASAN_OPTIONS"] += ":detect_leaks=0"
        return env

    def test_file_fsync_then_rename_then_directory_fsync(self):
        strace = shutil.which("strace")
        self.assertTrue(strace, "strace is not installed (tools/install-deps test installs it)")
        self.env.write_config(self.env.shipped_config(hooks=False))
        trace = os.path.join(self.env.dir, "trace")
        r = subprocess.run([strace, "-f", "-y", "-qq", "-o", trace, "-e",
                            "trace=fsync,fdatasync,rename,renameat,renameat2", harness.MAPSYNCD, "-c",
                            self.env.conf, "--once"], capture_output=True, text=True, timeout=120,
                           env=self.traced_env())
        harness.check_sanitizer_report(r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        calls = parse_trace(read(trace))
        out_dir = os.path.realpath(self.env.out)
        for m in MAPS:
            target = os.path.join(out_dir, m)
            renames = [i for i, c in enumerate(calls) if c[1].startswith("rename") and
                       os.path.realpath(c[3]) == target]
            self.assertEqual(len(renames), 1, "renames onto %s: %r\ntrace:\n%s" % (target, renames, read(trace)))
            i = renames[0]
            pid, tmp = calls[i][0], os.path.realpath(calls[i][2])
            self.assertEqual(os.path.dirname(tmp), out_dir)
            self.assertTrue(os.path.basename(tmp).startswith("."), tmp)
            # The temporary file itself was fsynced before, in that process.
            before = [c for c in calls[:i] if c[0] == pid and c[1] in ("fsync", "fdatasync") and
                      os.path.realpath(c[2].replace(" (deleted)", "")) == tmp]
            self.assertTrue(before, "%s: no fsync of %s before its rename:\n%s" % (m, tmp, read(trace)))
            # Its directory is fsynced after, before the next map's rename.
            nxt = [j for j in range(i + 1, len(calls)) if calls[j][1].startswith("rename") and calls[j][0] == pid]
            end = nxt[0] if nxt else len(calls)
            after = [c for c in calls[i + 1:end] if c[0] == pid and c[1] in ("fsync", "fdatasync") and
                     os.path.realpath(c[2]) == out_dir]
            self.assertTrue(after, "%s: no fsync of %s after the rename:\n%s" % (m, out_dir, read(trace)))
        self.assert_maps_match_db()


# The first map's query, slow by construction: a recursive CTE counting to
# ROWS before the domains are listed (an uncorrelated scalar subquery, run
# once).
ROWS = 3000000
SLOW_VIRTUAL_DOMAINS = ("query = WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)\n"
                        "  SELECT domain, 'OK' FROM domains\n"
                        "  WHERE active = 1 AND (SELECT max(i) FROM n) > 0\n" % ROWS)


class OneSnapshot(harness.DaemonTestCase):

    def test_all_maps_from_one_snapshot(self):
        text = self.env.shipped_config(hooks=False)
        text = re.sub(r"(\[map virtual_domains\]\n(?:.*\n)*?)query = .*\n", r"\1" + SLOW_VIRTUAL_DOMAINS.replace(
            "\\", "\\\\"), text, count=1)
        self.assertIn("WITH RECURSIVE", text)
        self.env.write_config(text)
        self.assertEqual(self.env.run("--once").returncode, 0)
        # How long the slow query takes here.
        t0 = time.monotonic()
        self.assertEqual(self.env.run("--once").returncode, 0)
        slow = time.monotonic() - t0
        self.assertGreater(slow, 0.3, "the slow query is not slow enough (%.2f s) to catch the cycle in it" % slow)
        w = self.writer()
        g = harness.gendb
        new_domain = "snapshot-new.example"
        proc = subprocess.Popen(harness.WRAPPER + [harness.MAPSYNCD, "-c", self.env.conf, "--once", "-v"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(min(0.15, slow / 4))
        # One commit touching virtual_domains and vmailbox (and passwd).
        w.execute("BEGIN",
                  ("INSERT INTO domains (domain, active) VALUES (?, 1)", (new_domain,)),
                  ("INSERT INTO email_accounts (domain_id, email, username, password, quota, active) "
                   "VALUES ((SELECT id FROM domains WHERE domain = ?), ?, 'snap', ?, 0, 1)",
                   (new_domain, "snap@" + new_domain, g.ROTATE_HASHES[0])),
                  "COMMIT")
        t_commit = time.monotonic()
        _, err = proc.communicate(timeout=120)
        t_end = time.monotonic()
        harness.check_sanitizer_report(err)
        self.assertEqual(proc.returncode, 0, err)
        self.assertGreater(t_end - t_commit, 0.05, "the cycle ended before the commit: not between the maps")
        in_domains = new_domain in read(self.env.output("virtual_domains"))
        in_vmailbox = "snap@" + new_domain in read(self.env.output("vmailbox"))
        in_passwd = "snap@" + new_domain in read(self.env.output("passwd"))
        self.assertEqual((in_domains, in_vmailbox, in_passwd), (False, False, False),
                         "maps of one cycle from different snapshots (or the commit came first):\n" + err)
        # The next cycle: the new state in every map.
        self.assertEqual(self.env.run("--once").returncode, 0)
        self.assertIn(new_domain, read(self.env.output("virtual_domains")))
        self.assertIn("snap@" + new_domain, read(self.env.output("vmailbox")))
        self.assertIn("snap@" + new_domain, read(self.env.output("passwd")))
        self.assert_maps_match_db()


if __name__ == "__main__":
    harness.main()
