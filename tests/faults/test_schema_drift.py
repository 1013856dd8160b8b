#!/usr/bin/env python3
"""Fault 5, schema drift: a column a query needs is renamed or dropped.
That map fails with the SQLite error and the map's name and keeps its old
file; the other maps keep syncing; once the column is back the map
recovers."""

import os
import sqlite3
import sys

import faultlib
from faultlib import MAPS, harness, read, wait_for


class SchemaDrift(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 120}

    def expected_with(self, repair):
        """expected_maps of a copy of the database on which the SQL repair
        (putting the schema back) was run."""
        copy = os.path.join(self.env.dir, "expected-%d.sqlite" % len(os.listdir(self.env.dir)))
        faultlib.copy_db(self.env.db, copy)
        c = sqlite3.connect(copy)
        c.executescript(repair)
        c.close()
        want = harness.expected_maps(copy)
        os.unlink(copy)
        return want

    def drift(self, broken_map, break_sql, repair_sql, other_change, error_rx):
        w = self.writer()
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        old = read(self.env.output(broken_map), "rb")
        old_ino = os.stat(self.env.output(broken_map)).st_ino
        n_log = len(d.log())
        w.execute(break_sql)
        d.wait_log(r"^error: %s: " % broken_map, timeout=15)
        # The other maps keep syncing.
        w.execute(other_change)
        want = self.expected_with(repair_sql)
        others = [m for m in MAPS if m != broken_map]

        def others_synced():
            return all(read(self.env.output(m)) == want[m] for m in others)
        wait_for(others_synced, 20, what="the other maps to follow; log:\n" + self.dump(d))
        # The "replaced" record follows the rename.
        wait_for(lambda: [line for line in d.log()[n_log:] if "replaced" in line], 10, what="a replaced record")
        log = d.log()[n_log:]
        errors = [line for line in log if line.startswith("error: %s: " % broken_map)]
        print("%s: %s" % (broken_map, errors[0]), file=sys.stderr)
        self.assertRegex(errors[0], error_rx)
        self.assertEqual(read(self.env.output(broken_map), "rb"), old)
        self.assertEqual(os.stat(self.env.output(broken_map)).st_ino, old_ino)
        self.assertTrue([line for line in log if "replaced" in line], "nothing replaced:\n" + "\n".join(log))
        for m in others:
            self.assertFalse([line for line in log if line.startswith("error: %s:" % m)], m)
        self.assertIsNone(d.proc.poll())
        # Put the column back: the map recovers (by the commit's own cycle
        # or the retry of the failed one).
        w.execute(*[s for s in repair_sql.split(";") if s.strip()])
        self.wait_maps_match_db(timeout=30)
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def test_column_renamed(self):
        self.drift("virtual_aliases",
                   "ALTER TABLE aliases RENAME COLUMN destination TO dest",
                   "ALTER TABLE aliases RENAME COLUMN dest TO destination;",
                   "UPDATE email_accounts SET quota = 3333 WHERE id = 1",
                   r"no such column: al\.destination")

    def test_column_dropped(self):
        # passwd needs quota; vmailbox reads the same table and keeps going.
        self.drift("passwd",
                   "ALTER TABLE email_accounts DROP COLUMN quota",
                   "ALTER TABLE email_accounts ADD COLUMN quota integer not null default '1024';",
                   "UPDATE email_accounts SET email = 'drifted@d0001.example' WHERE id = 1",
                   r"no such column: a\.quota")

    def test_table_renamed(self):
        self.drift("virtual_aliases",
                   "ALTER TABLE aliases RENAME TO aliases_old",
                   "ALTER TABLE aliases_old RENAME TO aliases;",
                   "UPDATE email_accounts SET active = 0 WHERE id = 1",
                   r"no such table: aliases")


if __name__ == "__main__":
    faultlib.main()
