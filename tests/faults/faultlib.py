"""Shared pieces of the fault suite (issue 5): the integration harness
(tests/integration/harness.py) plus what breaking things on purpose needs:
checks of map lines, descriptor and zombie counts, and a main() that tells
meson "skipped" (77) when every test of a script was skipped.

Every fault test runs the real binary and ends by checking that the maps
equal a fresh rendering of the database (harness.expected_maps, of the
database itself or of clean twins of it)."""

import hashlib
import os
import re
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
import harness  # noqa: E402
from harness import MAPS, read, wait_for  # noqa: E402,F401

gendb = harness.gendb

for _v in ("WATCHDOG_USEC", "WATCHDOG_PID", "NOTIFY_SOCKET", "JOURNAL_STREAM"):
    os.environ.pop(_v, None)

FAST = {"debounce_ms": 50, "max_delay_ms": 500}
FORMAT = {"virtual_domains": "postfix", "vmailbox": "postfix", "virtual_aliases": "postfix",
          "passwd": "passwd"}

# A line of each format as README.md defines a valid row: the key holds no
# byte <= 0x20 or 0x7f, does not start with '#', (passwd) holds no ':'; the
# value is not empty and holds no control byte. Bytes, not text.
_POSTFIX_LINE = re.compile(rb"[^\x00-\x20\x7f#][^\x00-\x20\x7f]*\t[^\x00-\x1f\x7f]+")
_PASSWD_LINE = re.compile(rb"[^\x00-\x20\x7f#:][^\x00-\x20\x7f:]*:[^\x00-\x1f\x7f]+")


def line_problem(fmt, data):
    """Why data (bytes) is not a complete rendering of format fmt, or None."""
    if not data:
        return None  # a map without rows
    if not data.endswith(b"\n"):
        return "does not end with a newline (%d bytes)" % len(data)
    rx = _POSTFIX_LINE if fmt == "postfix" else _PASSWD_LINE
    prev = None
    for n, line in enumerate(data[:-1].split(b"\n"), 1):
        if not rx.fullmatch(line):
            return "line %d is not a valid %s line: %r" % (n, fmt, line[:200])
        key = line.split(b"\t" if fmt == "postfix" else b":", 1)[0]
        if prev is not None and key <= prev:
            return "line %d: key %r not after %r (unsorted or repeated)" % (n, key, prev)
        prev = key
    return None


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def fd_targets(pid):
    out = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            pass
    return out


def zombies_of(pid):
    return {p: c for p, (s, c) in harness.children_of(pid).items() if s == "Z"}


def temp_files(directory):
    """Names left in directory that look like mapsyncd's temporary files."""
    return sorted(n for n in os.listdir(directory) if re.fullmatch(r"\..+\.[A-Za-z0-9]{6}", n))


def copy_db(src, dst):
    """A consistent copy of the database src (SQLite's backup API), in
    rollback-journal mode."""
    s = sqlite3.connect("file:%s?mode=ro" % src, uri=True, timeout=30)
    d = sqlite3.connect(dst)
    try:
        s.backup(d)
        d.execute("PRAGMA journal_mode = DELETE")
    finally:
        d.close()
        s.close()


def is_root():
    return os.geteuid() == 0


class FaultTestCase(harness.DaemonTestCase):
    """DaemonTestCase plus the checks every fault test ends with."""

    def assert_maps_equal(self, want, what="a fresh rendering of the database"):
        for m in MAPS:
            have = read(self.env.output(m))
            if have != want[m]:
                self.fail("map %s differs from %s (%d vs %d bytes)" % (m, what, len(have), len(want[m])))

    def assert_valid_maps(self):
        for m in MAPS:
            problem = line_problem(FORMAT[m], read(self.env.output(m), "rb"))
            self.assertIsNone(problem, "%s: %s" % (m, problem))

    def assert_no_temp_files(self, directory=None):
        left = temp_files(directory or self.env.out)
        self.assertEqual(left, [], "temporary files left behind")

    def dump(self, d, n=60):
        return "\n".join(d.log()[-n:])


def main():
    """unittest.main, but exit 77 (meson: skipped) when every test that ran
    was skipped."""
    prog = unittest.main(verbosity=2, exit=False)
    res = prog.result
    if not res.wasSuccessful():
        sys.exit(1)
    if res.testsRun > 0 and len(res.skipped) == res.testsRun:
        sys.exit(77)
    sys.exit(0)
