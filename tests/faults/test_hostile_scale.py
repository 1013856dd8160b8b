#!/usr/bin/env python3
"""Fault 11, rows at scale: 100,000 rows of which 1% (1,000) are hostile:
line injection through LF, CR, TAB, NUL and DEL bytes in keys and values,
white space and '#' in keys, ':' in passwd-file keys and passwords, text in
the quota column, empty keys and values, addresses of foreign domains.
Every hostile row is skipped and reported (at most ten records a map and
cycle, then a count), the rest is written. The expected maps come from
clean twins of the database: the same rows without the hostile ones, plus,
for the maps where a row is valid, a clean copy of it."""

import os
import re
import sqlite3
import sys
import time

import faultlib
from faultlib import MAPS, harness, read, wait_for

ACCOUNTS = 60000
ALIASES = 39000
HOSTILE_ACCOUNTS = 600
HOSTILE_ALIASES = 400
H = harness.gendb.TEST_HASHES
D1 = "d0001.example"

# Account rows: (email, password, quota, valid in vmailbox, valid in passwd).
# {n} makes each key unique.
ACCOUNT_PATTERNS = [
    ("lf{n}@%s\nroot@%s" % (D1, D1), H[0], 1024, False, False),
    ("space{n} user@%s" % D1, H[0], 1024, False, False),
    ("#hash{n}@%s" % D1, H[0], 1024, False, False),
    ("tab{n}\tx@%s" % D1, H[0], 1024, False, False),
    ("cr{n}\rx@%s" % D1, H[0], 1024, False, False),
    ("del{n}\x7fx@%s" % D1, H[0], 1024, False, False),
    (b"nul{n}\x00x@" + D1.encode(), H[0], 1024, False, False),
    ("colon{n}:user@%s" % D1, H[1], 1024, True, False),
    ("pwcolon{n}@%s" % D1, "x:1000:1000::/root::nopassword=y", 1024, True, False),
    ("pwempty{n}@%s" % D1, "", 1024, True, False),
    ("pwnul{n}@%s" % D1, H[0] + "\x00::::::nopassword=y", 1024, True, False),
    ("pwlf{n}@%s" % D1, H[2][:50] + "\n" + H[2][51:], 1024, True, False),  # 60 bytes, passes the query
    ("quotatext{n}@%s" % D1, H[3], "1 nopassword=y", True, False),
    ("foreign{n}@elsewhere.example", H[1], 512, False, True),
]
# Alias rows: (source, destination), all invalid in virtual_aliases.
ALIAS_PATTERNS = [
    ("x{n}@%s\nevil@%s" % (D1, D1), "victim@%s" % D1),
    ("inject{n}@%s" % D1, "victim@x\nroot@%s evil" % D1),
    ("cr{n}\rkey@%s" % D1, "victim@%s" % D1),
    ("crv{n}@%s" % D1, "victim@%s\rroot@%s" % (D1, D1)),
    ("tab{n}\tkey@%s" % D1, "victim@%s" % D1),
    ("space{n} key@%s" % D1, "victim@%s" % D1),
    (" lead{n}@%s" % D1, "victim@%s" % D1),
    ("#hash{n}@%s" % D1, "victim@%s" % D1),
    ("nulv{n}@%s" % D1, b"victim@" + D1.encode() + b"\x00root@" + D1.encode()),
    (b"nul{n}\x00key@" + D1.encode(), "victim@%s" % D1),
    ("emptydest{n}@%s" % D1, ""),
    ("", "victim{n}@%s" % D1),
    ("postmaster{n}@foreign.example", "victim@%s" % D1),
    ("delv{n}@%s" % D1, "victim\x7f@%s" % D1),
    ("tabv{n}@%s" % D1, "victim@%s\tx" % D1),
]


def fmt(v, n):
    return v.replace(b"{n}", str(n).encode()) if isinstance(v, bytes) else v.replace("{n}", str(n))


def insert_account(c, email, password, quota):
    username = (email.split(b"@")[0] if isinstance(email, bytes) else email.split("@")[0])
    c.execute("INSERT INTO email_accounts (domain_id, email, username, password, quota, active) "
              "VALUES (1, ?, ?, ?, ?, 1)", (email, username, password, quota))


class HostileScale(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": ACCOUNTS, "aliases": ALIASES}

    def setUp(self):
        super().setUp()
        env = self.env
        clean = os.path.join(env.dir, "clean.sqlite")
        twin_v = os.path.join(env.dir, "twin-vmailbox.sqlite")
        twin_p = os.path.join(env.dir, "twin-passwd.sqlite")
        faultlib.copy_db(env.db, clean)
        for t in (twin_v, twin_p):
            faultlib.copy_db(env.db, t)
        c = sqlite3.connect(env.db, isolation_level=None)
        cv = sqlite3.connect(twin_v, isolation_level=None)
        cp = sqlite3.connect(twin_p, isolation_level=None)
        self.invalid = {m: 0 for m in MAPS}
        for conn in (c, cv, cp):
            conn.execute("BEGIN")
        for n in range(HOSTILE_ACCOUNTS):
            email, password, quota, ok_v, ok_p = ACCOUNT_PATTERNS[n % len(ACCOUNT_PATTERNS)]
            email = fmt(email, n)
            insert_account(c, email, password, quota)
            # The twins get a clean copy of the row where it is valid.
            if ok_v:
                insert_account(cv, email, H[0], 1024)
            if ok_p:
                insert_account(cp, email, password, quota)
            self.invalid["vmailbox"] += not ok_v
            self.invalid["passwd"] += not ok_p
        for n in range(HOSTILE_ALIASES):
            source, dest = ALIAS_PATTERNS[n % len(ALIAS_PATTERNS)]
            c.execute("INSERT INTO aliases (domain_id, source, destination, active) VALUES (1, ?, ?, 1)",
                      (fmt(source, n), fmt(dest, n)))
            self.invalid["virtual_aliases"] += 1
        for conn in (c, cv, cp):
            conn.execute("COMMIT")
            conn.close()
        self.refs = (clean, twin_v, twin_p)

    def expected(self):
        clean, twin_v, twin_p = self.refs
        want = harness.expected_maps(clean)
        want["vmailbox"] = harness.expected_maps(twin_v)["vmailbox"]
        want["passwd"] = harness.expected_maps(twin_p)["passwd"]
        return want

    def check_reports(self, lines, what, quiet=()):
        """Reports of the invalid rows per map: warnings, or (maps in quiet:
        unchanged in a daemon's cycle, reported again only at debug level)
        debug records."""
        for m in MAPS:
            level = "(warning|debug)" if m in quiet else "warning"
            single = [line for line in lines if re.match(r"%s: %s: skipped row with key" % (level, m), line)]
            summary = [line for line in lines if re.match(r"%s: %s: \d+ invalid rows in all" % (level, m), line)]
            n = self.invalid[m]
            if n == 0:
                self.assertEqual(single + summary, [], m)
                continue
            self.assertEqual(len(single), min(n, 10), "%s (%s): %d single reports" % (m, what, len(single)))
            self.assertEqual(len(summary), 1 if n > 10 else 0, m)
            if n > 10:
                self.assertRegex(summary[0], r"%s: %d invalid rows in all \(%d more not shown\)" % (m, n, n - 10))
            # Reports escape what they show: no raw control byte in the log.
            for line in single:
                self.assertIsNone(re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line), repr(line))

    def test_hostile_rows_at_scale(self):
        env = self.env
        c = sqlite3.connect("file:%s?mode=ro" % env.db, uri=True)
        total = sum(c.execute("SELECT count(*) FROM %s" % t).fetchone()[0] for t in ("email_accounts", "aliases"))
        c.close()
        hostile = HOSTILE_ACCOUNTS + HOSTILE_ALIASES
        self.assertEqual(hostile * 100, total, "1% of the rows should be hostile")
        env.write_config(sync=faultlib.FAST)
        t0 = time.monotonic()
        r = env.run("--once", timeout=300)
        t_once = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr[-3000:])
        lines = r.stderr.splitlines()
        self.check_reports(lines, "--once")
        want = self.expected()
        self.assert_maps_equal(want, "the clean twins' rendering")
        self.assert_valid_maps()
        self.assertLess(len(lines), 100, "the log is not rate-limited: %d lines" % len(lines))
        # The daemon: one more cycle after a change reports them again, once.
        d = self.daemon()
        d.wait_ready(timeout=60)
        n = len(d.log())
        harness.sqlite_cli(env.db, "UPDATE email_accounts SET quota = 4242 WHERE id = 1")
        for ref in self.refs:
            harness.sqlite_cli(ref, "UPDATE email_accounts SET quota = 4242 WHERE id = 1")
        want = self.expected()
        wait_for(lambda: read(env.output("passwd")) == want["passwd"], 60,
                 what="the change at scale; log:\n" + self.dump(d))
        d.wait_log(harness.SYNC_LINE, count=2)
        self.check_reports(d.log()[n:], "daemon", quiet=("vmailbox", "virtual_aliases"))
        self.assertEqual(d.stop(), 0)
        print("%d rows, %d hostile (invalid per map: %s): --once in %.1f s, %d log lines"
              % (total, hostile, self.invalid, t_once, len(lines)), file=sys.stderr)
        self.assert_maps_equal(want, "the clean twins' rendering")


if __name__ == "__main__":
    faultlib.main()
