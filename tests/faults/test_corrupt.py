#!/usr/bin/env python3
"""Fault 4, database corrupted: garbage written over the database file in
place, then the file restored from a good copy (in place, as cp does, or by
a rename). A clear error, the old maps kept (same bytes, same inode), the
daemon alive, and the sync resumes after the restore."""

import os
import random
import re
import shutil
import signal
import sqlite3
import sys
import time

import faultlib
from faultlib import MAPS, harness, read, wait_for

CORRUPT = r"database .*(not a database|malformed|corrupt|unreadable|unavailable)"


class Corrupt(faultlib.FaultTestCase):
    ENV_ARGS = {"accounts": 150, "journal": "delete"}

    def snapshot(self):
        return {m: (read(self.env.output(m), "rb"), os.stat(self.env.output(m)).st_ino) for m in MAPS}

    def good_copy(self):
        """A consistent copy of the database with one more change than the
        maps show, so that the restore is visible in the maps."""
        good = os.path.join(self.env.dir, "good.sqlite")
        faultlib.copy_db(self.env.db, good)
        c = sqlite3.connect(good)
        c.execute("UPDATE email_accounts SET quota = 7777 WHERE id = 1")
        c.commit()
        c.close()
        return good

    def garble(self, start_page=0):
        """Random bytes over the file from page start_page on, in place."""
        rng = random.Random(4)
        size = os.path.getsize(self.env.db)
        page = 4096
        with open(self.env.db, "r+b") as f:
            f.seek(start_page * page)
            f.write(bytes(rng.getrandbits(8) for _ in range(size - start_page * page)))
            f.flush()
            os.fsync(f.fileno())

    def corrupt_and_restore(self, start_page, restore):
        d = self.start(sync=faultlib.FAST)
        self.wait_maps_match_db()
        good = self.good_copy()
        before = self.snapshot()
        n_log = len(d.log())
        log_before = d.log()
        self.garble(start_page)
        # With the header's change counter intact (or in WAL mode, where
        # the -shm index says what changed) there is no commit to see: a
        # cycle now, as if something else had changed.
        d.signal(signal.SIGUSR1)
        d.wait_log(r"^error: |sync: ", count=1 + len([x for x in log_before if x.startswith("sync: ")]),
                   timeout=15)
        # Retried with a backoff while it lasts; the maps stay as they were.
        time.sleep(2.5)
        log = d.log()[n_log:]
        self.assertIsNone(d.proc.poll(), "mapsyncd died:\n" + self.dump(d))
        self.assertEqual(self.snapshot(), before, "a map changed while the database was garbage")
        errors = [line for line in log if line.startswith("error:")]
        self.assertNotIn("replaced", "\n".join(log))
        said = any(re.search(r"not a database|malformed|corrupt", line) for line in errors)
        if start_page == 0 and self.ENV_ARGS["journal"] == "delete":
            self.assertTrue(any(re.search(r"not a database|malformed|corrupt", line) for line in errors),
                            "no clear error about the corruption:\n" + "\n".join(log))
        elif not said:
            # The daemon's connection may still hold the intact pages in its
            # cache (no commit told it otherwise) and serve the last maps; a
            # fresh reader reads the garbage and must fail without replacing
            # anything (--dry-run: --once would meet the daemon's instance
            # lock).
            r = self.env.run("--dry-run")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertRegex(r.stderr, r"malformed|corrupt|not a database")
            self.assertEqual(self.snapshot(), before, "--dry-run replaced a map with a garbled table")
            errors += [line for line in r.stderr.splitlines() if line.startswith("error:")]
        print("%s, garbage from page %d on: the daemon %s; errors: %s"
              % (self.ENV_ARGS["journal"], start_page, "reported it" if said else "kept serving from its cache",
                 errors[:3]), file=sys.stderr)
        self.assert_no_temp_files()
        restore(good)
        want = harness.expected_maps(self.env.db)
        self.assertIn("storage=7777M", want["passwd"])
        self.wait_maps_match_db(timeout=30)
        # The restored file is watched: a later change follows.
        harness.sqlite_cli(self.env.db, "UPDATE email_accounts SET quota = 8888 WHERE id = 1")
        self.wait_maps_match_db()
        self.assertIn("storage=8888M", read(self.env.output("passwd")))
        self.assertEqual(d.stop(), 0)
        self.assert_maps_equal(harness.expected_maps(self.env.db))

    def restore_in_place(self, good):
        with open(good, "rb") as src, open(self.env.db, "r+b") as dst:
            shutil.copyfileobj(src, dst)
            dst.truncate()
        for suffix in ("-journal", "-wal", "-shm"):
            if os.path.exists(self.env.db + suffix):
                os.unlink(self.env.db + suffix)

    def restore_by_rename(self, good):
        os.rename(good, self.env.db)

    def test_whole_file_garbage_restored_in_place(self):
        self.corrupt_and_restore(0, self.restore_in_place)

    def test_whole_file_garbage_restored_by_rename(self):
        self.corrupt_and_restore(0, self.restore_by_rename)

    def test_pages_garbled_header_intact(self):
        # Page 1 (header and schema) intact, the tables' pages garbage: the
        # queries fail half way; no map may be replaced by part of a table.
        self.corrupt_and_restore(1, self.restore_in_place)

    def test_once_on_garbage(self):
        self.env.write_config()
        self.assertEqual(self.env.run("--once").returncode, 0)
        before = self.snapshot()
        good = self.good_copy()
        self.garble(0)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertRegex(r.stderr, r"not a database|malformed|corrupt")
        self.assertEqual(self.snapshot(), before)
        self.restore_in_place(good)
        r = self.env.run("--once")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_maps_equal(harness.expected_maps(self.env.db))
        wait_for(lambda: True, 1)


class CorruptWal(Corrupt):
    """The same in WAL mode (-wal and -shm present while the file is
    garbage); restored by a rename only: a restore in place would meet the
    old -wal."""
    ENV_ARGS = {"accounts": 150, "journal": "wal"}

    test_whole_file_garbage_restored_in_place = None
    test_pages_garbled_header_intact = None
    test_once_on_garbage = None


if __name__ == "__main__":
    faultlib.main()
